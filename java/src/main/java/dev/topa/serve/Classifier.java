package dev.topa.serve;

import dev.topa.backend.Backend;
import dev.topa.backend.Op;
import dev.topa.backend.PrecisionChoice;
import dev.topa.backend.cpu.CpuBackend;
import dev.topa.glue.GlueTask;
import dev.topa.io.BertTokenizer;
import dev.topa.io.HfBertDirectory;
import dev.topa.model.BertModel;
import dev.topa.model.TaskHead;
import dev.topa.prune.BlockFormats;
import dev.topa.train.FineTunedModel;
import dev.topa.train.Predictor;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ArrayBlockingQueue;
import java.util.concurrent.BlockingQueue;

/**
 * A model written by {@code topa finetune} or {@code topa prune-adapt}, loaded once and then asked for
 * predictions by any number of threads. The weights are shared (packed once for inference); each of
 * a fixed set of workers owns a thread, a tokenizer and its activation arenas, all reused from call
 * to call, so the hot path allocates no tensor memory and the kernels' per-thread scratch stays
 * bounded by the number of workers whatever the number of callers. A call hands its inputs to a
 * free worker, waiting when all are busy.
 *
 * <pre>{@code
 * try (Classifier mrpc = Classifier.load(Path.of("out/mrpc"))) {
 *     Classifier.Prediction p = mrpc.predict("The cat sat on the mat.", "A cat was sitting on a mat.");
 *     System.out.println(p.label() + " " + p.probabilities());       // 1 {0=0.08, 1=0.92}
 *     List<Classifier.Prediction> many = mrpc.predictBatch(List.of(
 *             new Classifier.Input("He left early.", "He went home before the end."),
 *             new Classifier.Input("Prices rose.", "The weather was cold.")));
 *     for (Classifier.Prediction q : many) System.out.println(q.label());
 * }
 * // on a GPU: Classifier.load(dir, CudaBackend.open(0), 2); a regression task (STS-B) fills value()
 * }</pre>
 */
public final class Classifier implements TextModel, AutoCloseable {
    /** One input: a text, or a text pair for pair tasks (pair null otherwise). */
    public record Input(String text, String pair) {
        public Input(String text) {
            this(text, null);
        }
    }

    /**
     * A prediction: for classification the label and each label's probability (softmax of the
     * logits, in label order); for regression the value (label null, probabilities empty).
     */
    public record Prediction(String label, Map<String, Float> probabilities, Float value) {}

    private record Worker(BertTokenizer tokenizer, Predictor predictor, java.util.concurrent.ExecutorService thread) {}

    private final GlueTask task;
    private final BlockingQueue<Worker> workers;
    private final List<Worker> all = new ArrayList<>();
    /** Inputs per forward pass inside one call (a call's inputs are batched by length). */
    private static final int MAX_BATCH = 64;
    private final Runnable release;
    private volatile boolean closed;

    /** Workers over a model already on the backend's device and packed; release frees what this classifier owns. */
    private Classifier(BertModel model, TaskHead head, BertModel.AdapterSet adapters, GlueTask task, Path tokenizer, int maxSeqLen,
            Backend backend, int workerCount, Runnable release) {
        this.task = task;
        this.release = release;
        workers = new ArrayBlockingQueue<>(workerCount);
        try {
            for (int i = 0; i < workerCount; i++) {
                int n = i;
                Worker w = new Worker(new BertTokenizer(tokenizer, maxSeqLen), new Predictor(backend, model, head, adapters),
                        java.util.concurrent.Executors.newSingleThreadExecutor(r -> Thread.ofPlatform().name("classifier-worker-" + n).daemon()
                                .unstarted(r)));
                all.add(w);
                workers.add(w);
            }
        } catch (RuntimeException | Error e) {
            closeParts();
            throw e;
        }
    }

    /** How the linear layers of inference multiply (CPU; on a GPU the backend's own mode decides). */
    public enum Precision {
        /** fp32 weights and products: the model's own outputs. */
        FP32,
        /** bf16 weights and inputs, fp32 sums (outputs within ~1e-2 of fp32's), on the CPU. */
        BF16,
        /** bf16 where it is measured faster than fp32 on this model's shapes on this machine, else fp32 ({@link PrecisionChoice}). */
        AUTO
    }

    /** The model on the backend's device (a copy unless the backend is the CPU), packed for inference. */
    private static final int PROBE_ROWS = 8 * 128; // a micro-batch of 8 requests of 128 tokens

    private static BertModel onDevice(BertModel host, Backend backend, Precision precision) {
        BertModel m = backend.device().isHostAccessible() ? host : host.copyTo(backend);
        boolean onCpu = backend.device().isHostAccessible() && backend.supports(Op.BF16_WEIGHTS);
        boolean bf16 = onCpu && switch (precision) {
            case FP32 -> false;
            case BF16 -> true;
            case AUTO -> PrecisionChoice.choose(backend, PrecisionChoice.Use.INFERENCE, BertModel.linearShapes(m.config(), PROBE_ROWS)).bf16();
        };
        // a block-pruned model: each masked weight block-sparse or dense, whichever this device runs faster
        if (m.blockSparse()) BlockFormats.choose(backend, m, PROBE_ROWS, bf16);
        m.packForInference(backend, bf16);
        return m;
    }

    /** The model in dir on the CPU, two workers. */
    public static Classifier load(Path dir) {
        return load(dir, CpuBackend.create(), 2);
    }

    /** The model in dir on the backend's device with the given number of concurrent workers (>= 1), fp32 products. */
    public static Classifier load(Path dir, Backend backend, int workers) {
        return load(dir, backend, workers, Precision.FP32);
    }

    /** As above with the precision of the linear layers. */
    public static Classifier load(Path dir, Backend backend, int workers, Precision precision) {
        if (workers < 1) throw new IllegalArgumentException("workers must be >= 1, got " + workers);
        FineTunedModel.Loaded loaded = FineTunedModel.load(dir);
        BertModel model = null;
        try {
            BertModel m = model = onDevice(loaded.model(), backend, precision);
            return new Classifier(m, loaded.head(), null, loaded.task(), loaded.tokenizer(), loaded.maxSeqLen(), backend, workers, () -> {
                if (m != loaded.model()) m.close();
                loaded.close();
            });
        } catch (RuntimeException | Error e) {
            if (model != null && model != loaded.model()) model.close();
            loaded.close();
            throw e;
        }
    }

    /**
     * Several tasks on one backbone, their adapters kept apart (not merged) and chosen per call: the
     * backbone (a model directory) is loaded and packed once; each adapter directory (written by a
     * LoRA fine-tuning of that backbone) brings its adapter set, head and task. Closing the result
     * closes every classifier, then the backbone.
     */
    public static MultiTask loadMultiTask(Path backboneDir, List<Path> adapterDirs, Backend backend, int workers) {
        return loadMultiTask(backboneDir, adapterDirs, backend, workers, Precision.FP32);
    }

    /** As above with the precision of the backbone's linear layers (adapters' rank-r terms included). */
    public static MultiTask loadMultiTask(Path backboneDir, List<Path> adapterDirs, Backend backend, int workers, Precision precision) {
        if (workers < 1) throw new IllegalArgumentException("workers must be >= 1, got " + workers);
        BertModel host = HfBertDirectory.load(backboneDir);
        MultiTask mt = new MultiTask(host);
        try {
            String fingerprint = host.fingerprint();
            mt.device = onDevice(host, backend, precision);
            for (Path dir : adapterDirs) {
                FineTunedModel.Adapter ad = FineTunedModel.loadAdapter(dir, mt.device, fingerprint, backend);
                String name = ad.task().name().toLowerCase(java.util.Locale.ROOT);
                Classifier c = new Classifier(mt.device, ad.head(), ad.set(), ad.task(), ad.tokenizer(), ad.maxSeqLen(), backend, workers, ad::close);
                if (mt.tasks.putIfAbsent(name, c) != null) {
                    c.close();
                    throw new IllegalArgumentException(dir + ": a second adapter for task " + name);
                }
            }
            return mt;
        } catch (RuntimeException | Error e) {
            mt.close();
            throw e;
        }
    }

    /** The classifiers of {@link #loadMultiTask}, by task name (lower case), sharing one backbone. */
    public static final class MultiTask implements AutoCloseable {
        private final BertModel host;
        private BertModel device;
        private final Map<String, Classifier> tasks = new LinkedHashMap<>();

        private MultiTask(BertModel host) {
            this.host = host;
        }

        public Map<String, Classifier> tasks() {
            return Collections.unmodifiableMap(tasks);
        }

        @Override
        public void close() {
            tasks.values().forEach(Classifier::close);
            if (device != null && device != host) device.close();
            host.close();
        }
    }

    @Override
    public GlueTask task() {
        return task;
    }

    /** The labels in output order (empty for regression). */
    public List<String> labels() {
        return task().isRegression() ? List.of() : task().labels();
    }

    public Prediction predict(String text) {
        return predictBatch(List.of(new Input(text))).get(0);
    }

    public Prediction predict(String text, String pair) {
        return predictBatch(List.of(new Input(text, pair))).get(0);
    }

    /** Predictions in input order; inputs are batched by length internally. Throws IllegalArgumentException on a bad input. */
    @Override
    public List<Prediction> predictBatch(List<Input> inputs) {
        if (closed) throw new IllegalStateException("classifier is closed");
        checkInputs(task(), inputs);
        if (inputs.isEmpty()) return List.of();
        Worker w;
        try {
            w = workers.take();
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new IllegalStateException("interrupted while waiting for a worker", e);
        }
        float[][] out;
        try {
            out = w.thread().submit(() -> {
                List<BertTokenizer.Encoded> enc = new ArrayList<>(inputs.size());
                for (Input in : inputs) enc.add(w.tokenizer().encode(in.text(), in.pair()));
                return w.predictor().outputs(enc, MAX_BATCH);
            }).get();
        } catch (java.util.concurrent.ExecutionException e) {
            if (e.getCause() instanceof RuntimeException r) throw r;
            if (e.getCause() instanceof Error err) throw err;
            throw new IllegalStateException(e.getCause());
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new IllegalStateException("interrupted while predicting", e);
        } finally {
            workers.add(w);
        }
        List<Prediction> result = new ArrayList<>(out.length);
        for (float[] o : out) result.add(toPrediction(o));
        return result;
    }

    /** Throws IllegalArgumentException naming the first input that is empty or of the wrong kind (single text / pair) for the task. */
    public static void checkInputs(GlueTask task, List<Input> inputs) {
        for (int i = 0; i < inputs.size(); i++) {
            Input in = inputs.get(i);
            String where = "input " + i + ": ";
            if (in == null || in.text() == null || in.text().isBlank()) throw new IllegalArgumentException(where + "the text is empty");
            if (task.isPair() && (in.pair() == null || in.pair().isBlank()))
                throw new IllegalArgumentException(where + task.folder() + " takes text pairs; the second text is missing");
            if (!task.isPair() && in.pair() != null) throw new IllegalArgumentException(where + task.folder() + " takes single texts, not pairs");
        }
    }

    private Prediction toPrediction(float[] o) {
        return prediction(task(), o);
    }

    /** A prediction from a head's outputs: softmax over the labels, or the regression value. */
    public static Prediction prediction(GlueTask task, float[] o) {
        if (task.isRegression()) return new Prediction(null, Map.of(), o[0]);
        double max = Double.NEGATIVE_INFINITY, sum = 0;
        for (float v : o) max = Math.max(max, v);
        double[] e = new double[o.length];
        for (int i = 0; i < o.length; i++) sum += e[i] = Math.exp(o[i] - max);
        Map<String, Float> p = new LinkedHashMap<>();
        List<String> labels = task.labels();
        for (int i = 0; i < o.length; i++) p.put(labels.get(i), (float) (e[i] / sum));
        return new Prediction(labels.get(Predictor.argmax(o)), Collections.unmodifiableMap(p), null);
    }

    /** Waits for calls in progress, then releases the workers and the weights. */
    @Override
    public synchronized void close() {
        if (closed) return;
        closed = true;
        for (int i = 0; i < all.size(); i++) {
            try {
                workers.take();
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                break;
            }
        }
        closeParts();
    }

    private void closeParts() {
        for (Worker w : all) {
            w.thread().shutdown();
            w.predictor().close();
            w.tokenizer().close();
        }
        release.run();
    }
}
