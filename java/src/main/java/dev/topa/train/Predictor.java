package dev.topa.train;

import dev.topa.backend.Backend;
import dev.topa.glue.Example;
import dev.topa.glue.GlueTask;
import dev.topa.glue.Metric;
import dev.topa.io.BertTokenizer;
import dev.topa.model.BertModel;
import dev.topa.model.TaskHead;
import dev.topa.tensor.StepArena;
import dev.topa.tensor.Tensor;
import java.util.ArrayList;
import java.util.EnumMap;
import java.util.List;
import java.util.Map;

/**
 * Inference with a task head: head outputs per example (batched by length), and GLUE metrics. On a
 * device backend the encoder runs there (a copy of the model, weights packed for inference) and
 * the small head on the CPU after the [B, S, C] states are read back.
 */
public final class Predictor implements AutoCloseable {
    private final Backend be, headBackend;
    private final BertModel model, deviceCopy;
    private final TaskHead head;
    private final StepArena arena = new StepArena("predict"), deviceArena;

    public Predictor(Backend be, BertModel model, TaskHead head) {
        this.be = be;
        this.head = head;
        if (be.device().isHostAccessible()) {
            this.model = model;
            this.deviceCopy = null;
            this.deviceArena = null;
            this.headBackend = be;
        } else {
            this.deviceCopy = model.copyTo(be);
            this.model = deviceCopy;
            this.deviceArena = be.stepArena("predict on " + be.device());
            this.headBackend = dev.topa.backend.cpu.CpuBackend.create();
            deviceCopy.packForInference(be);
        }
    }

    /** Head outputs [examples][outputs]: class logits or the regression value. */
    public float[][] outputs(List<BertTokenizer.Encoded> toks, int batchSize) {
        float[][] out = new float[toks.size()][];
        for (int[] idx : BertTokenizer.batchesByLength(toks, batchSize)) {
            arena.reset();
            List<BertTokenizer.Encoded> part = new ArrayList<>();
            for (int i : idx) part.add(toks.get(i));
            BertTokenizer.Batch b = BertTokenizer.pad(part, arena);
            Tensor o = head.forward(headBackend, arena, encode(b), b.mask());
            float[] v = o.toFloatArray();
            int k = head.outputs();
            for (int j = 0; j < idx.length; j++) out[idx[j]] = java.util.Arrays.copyOfRange(v, j * k, (j + 1) * k);
        }
        arena.reset();
        return out;
    }

    /** last_hidden_state on the host. */
    private Tensor encode(BertTokenizer.Batch b) {
        if (deviceArena == null) return model.forward(be, arena, b.ids(), b.types(), b.mask());
        deviceArena.reset();
        Tensor h = model.forward(be, deviceArena, be.copyOf(b.ids(), deviceArena), be.copyOf(b.types(), deviceArena),
                be.copyOf(b.mask(), deviceArena));
        return be.copyOf(h, arena);
    }

    public static int argmax(float[] v) {
        int best = 0;
        for (int c = 1; c < v.length; c++) if (v[c] > v[best]) best = c;
        return best;
    }

    /** The task's official metrics for head outputs against labelled examples. */
    public static Map<Metric, Double> metrics(GlueTask task, float[][] outputs, List<Example> gold) {
        int n = gold.size();
        int[] pred = new int[n], labels = new int[n];
        double[] val = new double[n], target = new double[n];
        for (int i = 0; i < n; i++) {
            if (task.isRegression()) {
                val[i] = outputs[i][0];
                target[i] = gold.get(i).score();
            } else {
                pred[i] = argmax(outputs[i]);
                labels[i] = gold.get(i).label();
            }
        }
        Map<Metric, Double> m = new EnumMap<>(Metric.class);
        for (Metric metric : task.metrics())
            m.put(metric, task.isRegression() ? metric.regression(val, target) : metric.classification(pred, labels));
        return m;
    }

    @Override
    public void close() {
        arena.close();
        if (deviceArena != null) deviceArena.close();
        if (deviceCopy != null) deviceCopy.close();
    }
}
