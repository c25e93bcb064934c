package dev.topa.train;

import dev.topa.backend.AdamWConfig;
import dev.topa.backend.Backend;
import dev.topa.backend.Dropout;
import dev.topa.dist.Communicator;
import dev.topa.glue.Example;
import dev.topa.glue.GlueTask;
import dev.topa.glue.Metric;
import dev.topa.io.BertTokenizer;
import dev.topa.io.ModelFormatException;
import dev.topa.io.Safetensors;
import dev.topa.model.BertModel;
import dev.topa.model.BertNames;
import dev.topa.model.BertTraining;
import dev.topa.model.TaskHead;
import dev.topa.tensor.DType;
import dev.topa.tensor.MemoryCategory;
import dev.topa.tensor.StepArena;
import dev.topa.tensor.MemoryTracker;
import dev.topa.tensor.Tensor;
import dev.topa.tensor.TensorAllocator;
import dev.topa.tensor.TensorScope;
import java.util.ArrayList;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.SplittableRandom;
import java.util.function.Consumer;

/**
 * The fine-tuning loop: AdamW (no weight decay on biases and LayerNorm parameters), linear warmup
 * then linear decay, global-norm gradient clipping, seeded shuffling, a non-finite loss stopped
 * with its step, dev evaluation after each epoch. The optimizer step is the one place an
 * all-reduce would go for data-parallel training.
 *
 * <p>A step reads nothing back from a device: the inputs go up (labels checked on the host first),
 * the loss lands in a slot of a small device tensor, the clip factor is decided there
 * ({@link Backend#clipScale}) and AdamW reads it there. The losses of up to {@value #DEVICE_WINDOW}
 * steps are read back at once (every step on the host, where reading is free), and at every
 * evaluation; a step whose loss or gradient norm was not finite makes that and every later update a
 * no-op on the device, and the read-back stops training naming it.
 *
 * <p>Data parallel ({@link #distributed}): every rank walks the same seeded order; each global batch
 * is split into contiguous shares, one per rank; a rank's loss gradient is weighted by its share
 * of the batch, so the gradients summed over ranks are the one-process gradients of the global
 * batch. The sums run per bucket (a layer's gradients, then the rest) as soon as backward has
 * finished the layer, non-blocking, and all are awaited before clipping, which then sees the same
 * gradients on every rank: every rank takes the same step. Losses, evaluation outputs (each rank
 * predicts its share of the dev set) and the finite check are reduced the same way.
 */
public final class Trainer implements AutoCloseable {
    /** headDropout: on the pooled representation (the encoder's dropout is the BertTraining's). */
    /** evalEvery: optimizer steps between dev evaluations (0: after each epoch only; epochs always end with one). */
    public record Config(int epochs, int batchSize, double lr, double weightDecay, double warmupRatio, double maxGradNorm,
            long seed, double headDropout, int evalEvery) {
        public Config(int epochs, int batchSize, double lr, double weightDecay, double warmupRatio, double maxGradNorm, long seed) {
            this(epochs, batchSize, lr, weightDecay, warmupRatio, maxGradNorm, seed, 0, 0);
        }
    }

    /**
     * One dev evaluation: after optimizer step {@code step} in epoch {@code epoch}; trainLoss is the
     * mean since the previous evaluation, seconds the time since then; endOfEpoch marks the last of
     * an epoch (where checkpoints are written).
     */
    public record EpochResult(int epoch, long step, boolean endOfEpoch, double trainLoss, Map<Metric, Double> dev, double seconds) {}

    /** Progress after each optimizer step: epoch (from 1), batch (from 1) of batches, the batch's loss. */
    public record StepInfo(int epoch, int batch, int batches, double loss, int examples) {}

    /** A tokenized example with its target. */
    public record Item(BertTokenizer.Encoded tokens, Example example) {}

    /** Tokenizes examples (pairs as [CLS] A [SEP] B [SEP]). */
    public static List<Item> items(List<Example> examples, BertTokenizer tok) {
        List<Item> out = new ArrayList<>(examples.size());
        for (Example e : examples) out.add(new Item(tok.encode(e.textA(), e.textB()), e));
        return out;
    }

    private final Backend be;
    private final BertModel model;
    private final BertTraining training;
    private final TaskHead head;
    private final GlueTask task;
    private final Config cfg;
    private final Map<String, Tensor> params = new LinkedHashMap<>(), grads = new LinkedHashMap<>(), gradsView = Collections.unmodifiableMap(grads);
    private final Map<String, Tensor[]> moments = new LinkedHashMap<>();
    private final TensorAllocator optimizerScope;
    /** Activations on the backend's device; the batch is padded on the host first. */
    private final StepArena arena, hostArena = new StepArena("train step inputs");
    private final Predictor predictor;
    private long step;
    private int epochsDone;
    private Communicator comm = Communicator.SINGLE;
    /** Gradient sums across ranks: one bucket per encoder layer, then everything else (embeddings, head). */
    private List<GradientBucket> layerBuckets = List.of();
    private GradientBucket restBucket;

    /** Steps whose losses a device keeps before one read-back. */
    public static final int DEVICE_WINDOW = 16;
    private int window;
    /** On the backend's device: clipScale's state, then one loss slot per step of the window. */
    private final Tensor stats;
    /** A step done since the last read-back: what onStep will report of it, and this rank's share of its global batch (its loss weight). */
    private record Pending(StepInfo info, double weight) {}

    private final List<Pending> pending = new ArrayList<>();

    /** On a device backend, model and head must already be there (BertModel/TaskHead copyTo) and training built for it. */
    public Trainer(Backend be, BertModel model, BertTraining training, TaskHead head, GlueTask task, Config cfg) {
        if (!model.device().equals(be.device()) || !head.device().equals(be.device()))
            throw new IllegalArgumentException("model (" + model.device() + ") and head (" + head.device() + ") must be on the backend's "
                    + be.device());
        be.require(training.requiredOps(), "training on " + be.device());
        this.be = be;
        this.optimizerScope = be.scope("adamw state", MemoryCategory.OPTIMIZER);
        this.arena = be.stepArena("train step");
        this.model = model;
        this.training = training;
        this.head = head;
        this.task = task;
        this.cfg = cfg;
        training.gradients().forEach((n, g) -> {
            params.put(n, model.parameter(n));
            grads.put(n, g);
        });
        head.parameters().forEach(params::put);
        head.gradients().forEach(grads::put);
        predictor = new Predictor(be, model, head);
        for (String n : params.keySet())
            moments.put(n, new Tensor[] {zeros(params.get(n).shape()), zeros(params.get(n).shape())});
        window = be.device().isHostAccessible() ? 1 : DEVICE_WINDOW;
        stats = zeros(Backend.CLIP_STATE + DEVICE_WINDOW, 1);
    }

    /**
     * Trains as one of comm's ranks (data parallel, see the class comment); every rank must call the
     * same methods with the same data. Before the first step.
     */
    public Trainer distributed(Communicator comm) {
        if (step != 0 || !pending.isEmpty()) throw new IllegalStateException("distributed() goes before the first step");
        this.comm = comm;
        if (comm.size() == 1) return this;
        if (!be.device().isHostAccessible())
            throw new UnsupportedOperationException("training across processes on " + be.device() + " is not supported: the ranks sum their"
                    + " gradients with MPI in host memory; run them on the CPU (--device cpu)");
        int layers = model.config().layers();
        List<List<Tensor>> perLayer = new ArrayList<>();
        for (int l = 0; l < layers; l++) perLayer.add(new ArrayList<>());
        List<Tensor> rest = new ArrayList<>();
        grads.forEach((n, g) -> {
            int l = BertNames.layerOf(n);
            (l >= 0 ? perLayer.get(l) : rest).add(g);
        });
        List<GradientBucket> buckets = new ArrayList<>();
        for (List<Tensor> ts : perLayer) buckets.add(new GradientBucket(ts, optimizerScope));
        layerBuckets = buckets;
        restBucket = new GradientBucket(rest, optimizerScope);
        training.onLayerGradients(l -> layerBuckets.get(l).start(comm));
        return this;
    }

    public Communicator communicator() {
        return comm;
    }

    private Teacher teacher;

    /** Every later step also learns the teacher's outputs (knowledge distillation; see {@link Teacher}); null stops that. */
    public Trainer distillFrom(Teacher teacher) {
        this.teacher = teacher;
        return this;
    }

    private Consumer<Map<String, Tensor>> beforeOptimizerStep = g -> {};

    /**
     * hook sees each step's gradients by parameter name (complete: summed across ranks) before clipping
     * and the optimizer step read them (the gradual schedule zeroes its masked units' rows there).
     */
    public Trainer beforeOptimizerStep(Consumer<Map<String, Tensor>> hook) {
        beforeOptimizerStep = hook;
        return this;
    }

    /** The names of the parameters this trainer trains (the adapters or the model's, then the head's). */
    public Set<String> parameterNames() {
        return Collections.unmodifiableSet(params.keySet());
    }

    private int stopAfter = Integer.MAX_VALUE;

    /**
     * fit stops after this epoch (from 1), its learning-rate schedule still the whole run's (the
     * gradual schedule goes on in another trainer, see {@link #restore}).
     */
    public Trainer stopAfter(int epoch) {
        if (epoch < 1) throw new IllegalArgumentException("stop after epoch " + epoch + ": epochs count from 1");
        stopAfter = epoch;
        return this;
    }

    /** This rank's contiguous share of a global batch (possibly empty when the batch has fewer examples than ranks). */
    private <T> List<T> share(List<T> batch) {
        return batch.subList(shareStart(batch.size()), (int) ((long) batch.size() * (comm.rank() + 1) / comm.size()));
    }

    private int shareStart(int n) {
        return (int) ((long) n * comm.rank() / comm.size());
    }

    /**
     * Steps between read-backs in {@link #fit} (1 to {@value #DEVICE_WINDOW}; default 1 on the host,
     * where reading is free, {@value #DEVICE_WINDOW} on a device): the same losses and weights either
     * way, fewer waits for the device with more.
     */
    public Trainer readBackEvery(int steps) {
        if (steps < 1 || steps > DEVICE_WINDOW) throw new IllegalArgumentException("read back every 1 to " + DEVICE_WINDOW + " steps, got " + steps);
        if (!pending.isEmpty()) throw new IllegalStateException("steps are waiting to be read back");
        window = steps;
        return this;
    }

    public GlueTask task() {
        return task;
    }

    /** The memory tracker of the device this trainer runs on (where its phases are named). */
    public MemoryTracker memory() {
        return MemoryTracker.of(be.device());
    }

    private Tensor zeros(long... shape) {
        Tensor t = optimizerScope.allocate(DType.F32, shape);
        be.zero(t);
        return t;
    }

    /**
     * Writes what resuming needs, atomically, into one safetensors file: every trainable parameter
     * (frozen weights come from the model files), both AdamW moments, and the step and epoch
     * reached (metadata).
     */
    public void saveCheckpoint(java.nio.file.Path file) throws java.io.IOException {
        saveCheckpoint(file, Map.of());
    }

    /** As above, with the caller's own metadata (e.g. the best dev metric so far) kept beside. */
    public void saveCheckpoint(java.nio.file.Path file, Map<String, String> extra) throws java.io.IOException {
        try (TensorScope host = new TensorScope("checkpoint", MemoryCategory.WORKSPACE)) {
            Map<String, Tensor> t = new LinkedHashMap<>();
            params.forEach((n, p) -> {
                t.put(n, onHost(p, host));
                t.put("adamw.m." + n, onHost(moments.get(n)[0], host));
                t.put("adamw.v." + n, onHost(moments.get(n)[1], host));
            });
            Map<String, String> meta = new LinkedHashMap<>(extra);
            meta.put("step", Long.toString(step));
            meta.put("epoch", Integer.toString(epochsDone));
            meta.put("format", "topa-checkpoint");
            Safetensors.write(file, t, meta);
        }
    }

    /** What a trainer carries from step to step: per trainable parameter its values and both AdamW moments; the step and epochs done. */
    public record State(Map<String, Tensor[]> tensors, long step, int epochsDone) {
        /** This state but for the parameters of names (the others dropped). */
        public State only(Set<String> names) {
            Map<String, Tensor[]> t = new LinkedHashMap<>(tensors);
            t.keySet().retainAll(names);
            return new State(t, step, epochsDone);
        }
    }

    /** A copy of this trainer's state in host, which outlives the trainer. */
    public State state(TensorScope host) {
        Map<String, Tensor[]> t = new LinkedHashMap<>();
        params.forEach((n, p) -> t.put(n, new Tensor[] {hostCopy(p, host), hostCopy(moments.get(n)[0], host), hostCopy(moments.get(n)[1], host)}));
        return new State(t, step, epochsDone);
    }

    private Tensor hostCopy(Tensor t, TensorScope host) {
        return t.device().isHostAccessible() ? host.allocate(DType.F32, t.shape()).copyFrom(t) : be.copyOf(t, host);
    }

    /** Fills to (a host tensor of this trainer's parameter name, or of a moment of it) from from (the same of the state's trainer). */
    public interface Reshape {
        void copy(String name, Tensor from, Tensor to);
    }

    /**
     * Takes over another trainer's state, each tensor through reshape into this trainer's shapes (the
     * gradual schedule goes on with its model compacted): the same parameters, the same step and
     * epochs, so fit goes on after them on the same learning-rate schedule.
     */
    public Trainer restore(State from, Reshape reshape) {
        if (!from.tensors().keySet().equals(params.keySet()))
            throw new IllegalArgumentException("a state of other parameters: " + from.tensors().keySet() + ", this trainer's " + params.keySet());
        try (TensorScope host = new TensorScope("restored state", MemoryCategory.WORKSPACE)) {
            params.forEach((n, p) -> {
                Tensor[] into = {p, moments.get(n)[0], moments.get(n)[1]};
                for (int i = 0; i < 3; i++) {
                    if (into[i].device().isHostAccessible()) {
                        reshape.copy(n, from.tensors().get(n)[i], into[i]);
                    } else {
                        Tensor t = host.allocate(DType.F32, into[i].shape());
                        reshape.copy(n, from.tensors().get(n)[i], t);
                        be.copy(into[i], t);
                    }
                }
            });
        }
        step = from.step();
        epochsDone = from.epochsDone();
        return this;
    }

    /** t itself when the host can read it, else a copy read back into host. */
    private Tensor onHost(Tensor t, TensorScope host) {
        return t.device().isHostAccessible() ? t : be.copyOf(t, host);
    }

    /**
     * Restores a {@link #saveCheckpoint} of the same model and method; fit then continues after its
     * epoch. Returns the checkpoint's metadata.
     */
    public Map<String, String> loadCheckpoint(java.nio.file.Path file) {
        try (Safetensors st = Safetensors.read(file)) {
            for (String n : params.keySet()) {
                Tensor[] mv = moments.get(n);
                String[] names = {n, "adamw.m." + n, "adamw.v." + n};
                Tensor[] into = {params.get(n), mv[0], mv[1]};
                for (int i = 0; i < 3; i++) {
                    Safetensors.Entry e = st.entries().get(names[i]);
                    if (e == null || e.numel() != into[i].numel())
                        throw new ModelFormatException(file + ": checkpoint lacks " + names[i]
                                + " (or it has another size): not a checkpoint of this model and method");
                    if (into[i].device().isHostAccessible()) into[i].copyFrom(e.floats(file));
                    else try (TensorScope host = new TensorScope("checkpoint", MemoryCategory.WORKSPACE)) {
                        be.copy(into[i], host.allocate(DType.F32, into[i].shape()).copyFrom(e.floats(file)));
                    }
                }
            }
            step = Long.parseLong(st.metadata().getOrDefault("step", "0"));
            epochsDone = Integer.parseInt(st.metadata().getOrDefault("epoch", "0"));
            return Map.copyOf(st.metadata());
        }
    }

    public int epochsDone() {
        return epochsDone;
    }

    public long trainableParameters() {
        return params.entrySet().stream().mapToLong(e -> BertModel.parameterCount(e.getKey(), e.getValue())).sum();
    }

    public List<EpochResult> fit(List<Item> train, List<Item> dev) {
        return fit(train, dev, r -> {}, s -> {});
    }

    /**
     * As above; afterEpoch sees each epoch's result (to keep the best checkpoint), onStep each
     * optimizer step (for a progress display).
     */
    public List<EpochResult> fit(List<Item> train, List<Item> dev, Consumer<EpochResult> afterEpoch,
            Consumer<StepInfo> onStep) {
        if (train.isEmpty()) throw new IllegalArgumentException("no training examples");
        if (dev.isEmpty()) throw new IllegalArgumentException("no dev examples");
        long stepsPerEpoch = (train.size() + cfg.batchSize() - 1) / cfg.batchSize();
        long total = stepsPerEpoch * cfg.epochs(), warmup = Math.round(total * cfg.warmupRatio());
        List<EpochResult> out = new ArrayList<>();
        for (int epoch = epochsDone + 1; epoch <= Math.min(cfg.epochs(), stopAfter); epoch++) {
            long t0 = System.nanoTime();
            List<Item> order = new ArrayList<>(train.size());
            for (int i : epochOrder(train.size(), cfg.seed(), epoch)) order.add(train.get(i));
            double[] lossSum = {0};
            int batches = 0, sinceEval = 0;
            Consumer<StepInfo> counted = st -> {
                lossSum[0] += st.loss();
                onStep.accept(st);
            };
            for (int i = 0; i < order.size(); i += cfg.batchSize()) {
                List<Item> batch = order.subList(i, Math.min(order.size(), i + cfg.batchSize()));
                double lr = cfg.lr() * (step < warmup ? (step + 1.0) / warmup : Math.max(0, (double) (total - step) / Math.max(1, total - warmup)));
                batches++;
                sinceEval++;
                stepKeepingLoss(batch, lr, new StepInfo(epoch, batches, (int) stepsPerEpoch, Double.NaN, batch.size()));
                boolean last = i + cfg.batchSize() >= order.size();
                boolean evaluate = last || (cfg.evalEvery() > 0 && step % cfg.evalEvery() == 0);
                if (evaluate || pending.size() == window) readBack(counted);
                if (last) epochsDone = epoch;
                if (evaluate) {
                    EpochResult r = new EpochResult(epoch, step, last, lossSum[0] / sinceEval, evaluateAfterStep(dev), (System.nanoTime() - t0) * 1e-9);
                    out.add(r);
                    afterEpoch.accept(r);
                    lossSum[0] = 0;
                    sinceEval = 0;
                    t0 = System.nanoTime();
                }
            }
        }
        return out;
    }

    /** The order in which epoch (from 1) visits n training examples: a seeded shuffle. */
    public static int[] epochOrder(int n, long seed, int epoch) {
        List<Integer> idx = new ArrayList<>(n);
        for (int i = 0; i < n; i++) idx.add(i);
        java.util.Collections.shuffle(idx, new java.util.Random(new SplittableRandom(seed + epoch).nextLong()));
        return idx.stream().mapToInt(Integer::intValue).toArray();
    }

    /** One optimizer step on a batch; returns its loss (read back: a loop of steps uses {@link #fit}, which reads in windows). */
    public double trainStep(List<Item> batch, double lr) {
        stepKeepingLoss(batch, lr, new StepInfo(0, 0, 0, Double.NaN, batch.size()));
        double[] loss = {Double.NaN};
        readBack(st -> loss[0] = st.loss());
        return loss[0];
    }

    /** Forward and backward on a batch: returns the loss (read back), adds to the gradients (no update). Its loss
     * takes the first slot of the read-back window, so steps whose losses are not yet read back are refused. */
    public double lossAndGradients(List<Item> batch) {
        if (!pending.isEmpty()) throw new IllegalStateException("lossAndGradients with " + pending.size() + " steps' losses not yet read back");
        Tensor loss = stats.rows(Backend.CLIP_STATE, Backend.CLIP_STATE + 1);
        accumulate(batch, loss, 1f, 1f);
        float l = onHost(loss);
        checkFinite(l);
        return l;
    }

    /**
     * A step on a global batch (this rank's share of it) with the loss left in the next slot of the
     * window; info: what onStep gets once the loss is read back.
     */
    private void stepKeepingLoss(List<Item> batch, double lr, StepInfo info) {
        Tensor loss = stats.rows(Backend.CLIP_STATE + pending.size(), Backend.CLIP_STATE + pending.size() + 1);
        List<Item> mine = share(batch);
        double weight = (double) mine.size() / batch.size();
        // a per-token mean (layer-wise distillation) summed over ranks is the whole batch's when each share weighs its tokens
        double tokenWeight = mine.isEmpty() ? 0 : (double) realTokens(mine) / realTokens(batch);
        if (mine.isEmpty()) // fewer examples than ranks: this rank runs the last one with weight 0, so every rank makes the same collective calls
            mine = batch.subList(batch.size() - 1, batch.size());
        accumulate(mine, loss, (float) weight, (float) tokenWeight);
        if (comm.size() > 1) reduceGradients();
        beforeOptimizerStep.accept(gradsView);
        optimizerStep(lr, comm.size() > 1 ? null : loss); // across ranks only the (summed) gradients decide: the same on every rank
        if (CHECK_REPLICAS && comm.size() > 1) checkReplicas();
        pending.add(new Pending(info, weight));
    }

    /** -Dtopa.dist.check=true: after every step, every rank's parameters are compared with rank 0's (a checksum of their bits). */
    private static final boolean CHECK_REPLICAS = Boolean.getBoolean("topa.dist.check");

    private void checkReplicas() {
        long sum = 0;
        for (Map.Entry<String, Tensor> e : params.entrySet()) {
            float[] v = be.device().isHostAccessible() ? e.getValue().toFloatArray() : copyToHost(e.getValue());
            for (float x : v) sum = sum * 31 + Float.floatToRawIntBits(x);
        }
        byte[] root = java.nio.ByteBuffer.allocate(8).putLong(sum).array();
        comm.broadcast(root, 0);
        if (java.nio.ByteBuffer.wrap(root).getLong() != sum)
            throw new IllegalStateException("step " + step + ": the parameters of rank " + comm.rank() + " differ from rank 0's (replicas drifted apart)");
    }

    /** Every bucket summed across ranks: the layers' were started during backward, the rest starts now. */
    private void reduceGradients() {
        long t0 = System.nanoTime();
        for (GradientBucket b : layerBuckets) b.start(comm); // a no-op where backward started it
        restBucket.start(comm);
        for (GradientBucket b : layerBuckets) b.finish();
        restBucket.finish();
        communicationNanos += System.nanoTime() - t0;
    }

    private long communicationNanos;

    /** Seconds spent after backward waiting for the gradient sums (what overlap with backward did not hide), since the start. */
    public double communicationSeconds() {
        return communicationNanos * 1e-9;
    }

    /** Bytes of gradients each rank sends into the sums per step (0 in one process). */
    public long bytesReducedPerStep() {
        return comm.size() == 1 ? 0 : 4L * grads.values().stream().mapToLong(Tensor::numel).sum();
    }

    /**
     * One read-back of the window: the first step that was not finite stops training (its update and
     * every later one were skipped on the device); otherwise each pending step with its loss to onStep.
     */
    private void readBack(Consumer<StepInfo> onStep) {
        if (pending.isEmpty()) return;
        float[] s = be.device().isHostAccessible() ? stats.toFloatArray() : copyToHost(stats);
        long bad = (long) s[Backend.CLIP_FIRST_BAD_STEP], first = step - pending.size() + 1; // the window's steps: first .. step
        double[] losses = new double[pending.size()]; // the global batches' losses: each rank's mean weighted by its share, summed
        for (int i = 0; i < losses.length; i++) losses[i] = s[Backend.CLIP_STATE + i] * pending.get(i).weight();
        comm.allReduceSum(losses);
        for (int i = 0; i < losses.length && bad == 0; i++)
            if (!Double.isFinite(losses[i])) {
                bad = first + i;
                s[Backend.CLIP_BAD_LOSS] = (float) losses[i];
            }
        for (int i = 0; i < pending.size() && (bad == 0 || first + i < bad); i++) {
            StepInfo p = pending.get(i).info();
            onStep.accept(new StepInfo(p.epoch(), p.batch(), p.batches(), losses[i], p.examples()));
        }
        pending.clear();
        if (bad != 0) {
            float loss = s[Backend.CLIP_BAD_LOSS], norm = s[Backend.CLIP_BAD_NORM];
            throw diverged(bad, Float.isFinite(loss) ? "the gradient norm is " + norm : "the loss is " + loss);
        }
    }

    private float[] copyToHost(Tensor t) {
        try (TensorScope host = new TensorScope("read-back", MemoryCategory.WORKSPACE)) {
            return be.copyOf(t, host).toFloatArray();
        }
    }

    private float onHost(Tensor scalar) {
        return be.device().isHostAccessible() ? scalar.getFloat(0) : copyToHost(scalar)[0];
    }

    private static long realTokens(List<Item> items) {
        long n = 0;
        for (Item it : items) n += it.tokens().length();
        return Math.max(1, n);
    }

    /**
     * Forward and backward on a batch into the gradients, the loss's gradient weighted by dloss (the
     * per-token layer-wise distillation term's by dtokens); the batch's mean loss into loss [1] on the
     * device, nothing read back.
     */
    private void accumulate(List<Item> batch, Tensor loss, float dloss, float dtokens) {
        arena.reset();
        hostArena.reset();
        List<BertTokenizer.Encoded> toks = batch.stream().map(Item::tokens).toList();
        BertTokenizer.Batch hb = BertTokenizer.pad(toks, hostArena);
        if (!be.device().isHostAccessible()) model.checkTokens(hb.ids(), hb.types()); // the device does not read them back
        BertTokenizer.Batch b = new BertTokenizer.Batch(be.copyOf(hb.ids(), arena), be.copyOf(hb.types(), arena), be.copyOf(hb.mask(), arena),
                hb.lengths());
        // dropout masks are drawn from (seed, step): a resumed run redraws the same ones
        training.setDropoutStep(cfg.seed(), step + 1);
        boolean layerWise = teacher != null && teacher.matchesHiddenStates();
        if (layerWise) // the teacher's states in this step's arena: backward reads them
            training.matchHidden(teacher.hiddenStates(be, arena, training.keptType(), b.ids(), b.types(), b.mask()), (float) (teacher.hiddenWeight() * dtokens));
        Tensor hidden = training.forward(be, arena, b.ids(), b.types(), b.mask());
        Dropout headDrop = cfg.headDropout() > 0
                ? new Dropout(cfg.headDropout(), Dropout.key(cfg.seed(), step + 1, TaskHead.DROPOUT_SITE)) : Dropout.NONE;
        Tensor out = head.forward(be, arena, hidden, b.mask(), headDrop);
        Tensor dOut = arena.allocate(DType.F32, out.shape());
        float taskWeight = teacher == null ? dloss : (float) ((1 - teacher.alpha()) * dloss);
        if (task.isRegression()) {
            float[] t = new float[batch.size()];
            for (int i = 0; i < t.length; i++) t[i] = batch.get(i).example().score();
            Tensor target = be.copyOf(hostArena.allocate(DType.F32, out.shape()).copyFrom(t), arena);
            be.mseForward(out, target, loss);
            be.mseBackward(dOut, out, target, taskWeight);
        } else {
            int[] l = new int[batch.size()];
            for (int i = 0; i < l.length; i++) {
                l[i] = batch.get(i).example().label();
                if (l[i] >= task.numLabels())
                    throw new IllegalArgumentException("label " + l[i] + " is not a class of " + task + " (" + task.numLabels()
                            + " classes): example '" + batch.get(i).example().textA() + "'");
            }
            Tensor labels = be.copyOf(hostArena.allocate(DType.I32, l.length).copyFrom(l), arena);
            be.crossEntropyForward(arena.allocate(DType.F32, l.length), out, labels, loss);
            be.crossEntropyBackward(dOut, out, labels, taskWeight);
        }
        if (teacher != null) { // the loss slot keeps the task loss (comparable with runs without a teacher); the gradient takes both
            Tensor taught = be.copyOf(hostArena.allocate(DType.F32, out.shape()).copyFrom(teacher.outputs(batch)), arena);
            be.distillationBackward(dOut, out, taught, (float) teacher.temperature(), (float) (teacher.alpha() * dloss));
        }
        Tensor dHidden = head.backward(be, arena, dOut, b.ids().dim(1));
        training.backward(be, arena, dHidden);
    }

    public void zeroGradients() {
        training.zeroGradients();
        head.zeroGradients();
    }

    private void checkFinite(double loss) {
        if (!Double.isFinite(loss)) throw diverged(step + 1, "the loss is " + loss);
    }

    /**
     * Training that has left finite numbers: stopped before the step's update (or, for the dev
     * outputs, before anything of that evaluation is kept), with what to try.
     */
    private ArithmeticException diverged(long atStep, String what) {
        return new ArithmeticException("step " + atStep + ": " + what + "; training stopped, nothing of this step was applied or saved"
                + " (the best model saved before it stays); try a lower learning rate (now " + cfg.lr() + ")"
                + (cfg.maxGradNorm() > 0 ? "" : " or gradient clipping (max grad norm, now off)") + ", or check the data");
    }

    /** The dev metrics after a step; non-finite dev outputs mean the step's weights diverged. */
    private Map<Metric, Double> evaluateAfterStep(List<Item> dev) {
        try (MemoryTracker.Phase p = memory().during("evaluation")) {
            return evaluate(dev);
        } catch (NonFiniteOutputException e) {
            ArithmeticException d = diverged(step, "on dev example " + e.index() + " the model's output is not finite");
            d.initCause(e);
            throw d;
        }
    }

    /** Clipping decided and AdamW applied on the device, reading the clip factor there; loss: the step's, for the finite check. */
    private void optimizerStep(double lr, Tensor loss) {
        step++;
        Tensor state = stats.rows(0, Backend.CLIP_STATE), clip = stats.rows(Backend.CLIP_SCALE, Backend.CLIP_SCALE + 1);
        be.clipScale(grads.values(), (float) cfg.maxGradNorm(), loss, step, state);
        java.util.List<Tensor[]> decayed = new java.util.ArrayList<>(), plain = new java.util.ArrayList<>();
        for (Map.Entry<String, Tensor> e : params.entrySet()) {
            String n = e.getKey();
            Tensor[] mv = moments.get(n);
            (n.endsWith("bias") || n.contains("LayerNorm") ? plain : decayed).add(new Tensor[] {e.getValue(), grads.get(n), mv[0], mv[1]});
        }
        be.adamwStep(decayed, new AdamWConfig(lr, 0.9, 0.999, 1e-8, cfg.weightDecay()), step, clip);
        be.adamwStep(plain, new AdamWConfig(lr, 0.9, 0.999, 1e-8, 0), step, clip);
        zeroGradients();
    }

    /**
     * The task's official metrics on labelled items (inference path, batches by length). Batches of
     * a process's share of a training batch, no larger: in bigger ones the longest dev sentences set
     * the run's peak memory above its training steps' (at twice the batch they did where a teacher
     * stays beside the student), for little time saved.
     */
    public Map<Metric, Double> evaluate(List<Item> items) {
        List<Example> gold = items.stream().map(Item::example).toList();
        int batch = (cfg.batchSize() + comm.size() - 1) / comm.size();
        if (comm.size() == 1) return Predictor.metrics(task, predictor.outputs(items.stream().map(Item::tokens).toList(), batch), gold);
        // each rank predicts its share; the outputs summed over ranks (zeros elsewhere) are every output, on every rank
        List<Item> mine = share(items);
        int from = shareStart(items.size()), k = head.outputs();
        float[][] part = mine.isEmpty() ? new float[0][] : predictor.outputs(mine.stream().map(Item::tokens).toList(), batch);
        double[] all = new double[items.size() * k];
        for (int i = 0; i < part.length; i++)
            for (int j = 0; j < k; j++) all[(from + i) * k + j] = part[i][j];
        comm.allReduceSum(all);
        float[][] outputs = new float[items.size()][k];
        for (int i = 0; i < outputs.length; i++)
            for (int j = 0; j < k; j++) outputs[i][j] = (float) all[i * k + j];
        return Predictor.metrics(task, outputs, gold);
    }

    @Override
    public void close() {
        predictor.close();
        arena.close();
        hostArena.close();
        optimizerScope.close();
    }
}
