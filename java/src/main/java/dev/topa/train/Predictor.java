package dev.topa.train;

import dev.topa.backend.Backend;
import dev.topa.backend.Op;
import dev.topa.backend.cpu.CpuBackend;
import dev.topa.glue.Example;
import dev.topa.glue.GlueTask;
import dev.topa.glue.Metric;
import dev.topa.io.BertTokenizer;
import dev.topa.model.BertModel;
import dev.topa.model.TaskHead;
import dev.topa.tensor.DType;
import dev.topa.tensor.StepArena;
import dev.topa.tensor.Tensor;
import java.util.ArrayList;
import java.util.EnumMap;
import java.util.List;
import java.util.Map;

/**
 * Inference with a task head: head outputs per example (batched by length), and GLUE metrics. On a
 * device backend the encoder runs there: on the model itself when it is on that device (a model in
 * training), else on a copy with its weights packed for inference; the head runs there too when it
 * is on the device, else on the CPU after the [B, S, C] states are read back.
 */
public final class Predictor implements AutoCloseable {
    private final Backend be, headBackend;
    private final BertModel model, deviceCopy;
    private final TaskHead head;
    private final StepArena arena = new StepArena("predict"), deviceArena;
    private final BertModel.AdapterSet adapters;
    /** Whether the host runs the encoder over the tokens packed without padding (the backend takes packed attention and positions). */
    private final boolean unpadded;

    public Predictor(Backend be, BertModel model, TaskHead head) {
        this(be, model, head, null);
    }

    /** As above running the model with a task's adapter set (on the model's device; null: the model as it is). */
    public Predictor(Backend be, BertModel model, TaskHead head, BertModel.AdapterSet adapters) {
        this.be = be;
        this.head = head;
        this.adapters = adapters;
        this.unpadded = be.device().isHostAccessible() && be.supports(Op.ATTENTION_PACKED) && be.supports(Op.POSITION_IDS);
        if (be.device().isHostAccessible()) {
            this.model = model;
            this.deviceCopy = null;
            this.deviceArena = null;
            this.headBackend = be;
            return;
        }
        boolean there = model.device().equals(be.device());
        this.deviceCopy = there ? null : model.copyTo(be);
        this.model = there ? model : deviceCopy;
        this.deviceArena = be.stepArena("predict on " + be.device());
        this.headBackend = head.device().equals(be.device()) ? be : CpuBackend.create();
        if (deviceCopy != null) deviceCopy.packForInference(be, false);
    }

    /**
     * Head outputs [examples][outputs]: class logits or the regression value. Throws
     * {@link NonFiniteOutputException} naming the first input whose output is NaN or infinite.
     */
    public float[][] outputs(List<BertTokenizer.Encoded> toks, int batchSize) {
        float[][] out = new float[toks.size()][];
        for (int[] idx : BertTokenizer.batchesByLength(toks, batchSize)) {
            arena.reset();
            List<BertTokenizer.Encoded> part = new ArrayList<>();
            for (int i : idx) part.add(toks.get(i));
            BertTokenizer.Batch padded = BertTokenizer.pad(part, arena);
            float[] v = unpadded ? headOutputsPacked(part, padded) : headOutputs(padded);
            int k = head.outputs();
            for (int j = 0; j < idx.length; j++) out[idx[j]] = java.util.Arrays.copyOfRange(v, j * k, (j + 1) * k);
        }
        for (int i = 0; i < out.length; i++)
            for (float x : out[i]) if (!Float.isFinite(x)) throw new NonFiniteOutputException(i, x);
        arena.reset();
        if (deviceArena != null) deviceArena.reset();
        return out;
    }

    /**
     * On the host: the encoder over the batch's tokens packed without padding (a batch of mixed
     * lengths costs its tokens, not batch x longest), the states put back into padded rows for the head.
     */
    private float[] headOutputsPacked(List<BertTokenizer.Encoded> part, BertTokenizer.Batch b) {
        int n = 0;
        for (BertTokenizer.Encoded e : part) n += e.length();
        int[] ids = new int[n], types = new int[n], pos = new int[n];
        for (int i = 0, off = 0; i < part.size(); off += part.get(i).length(), i++) {
            BertTokenizer.Encoded e = part.get(i);
            System.arraycopy(e.ids(), 0, ids, off, e.length());
            System.arraycopy(e.types(), 0, types, off, e.length());
            for (int t = 0; t < e.length(); t++) pos[off + t] = t;
        }
        Tensor packed = model.forwardPacked(be, arena, arena.allocate(DType.I32, 1, n).copyFrom(ids), arena.allocate(DType.I32, 1, n).copyFrom(types),
                arena.allocate(DType.I32, 1, n).copyFrom(pos), b.lengths(), adapters);
        long s = b.ids().dim(1), c = packed.dim(2);
        Tensor hidden = arena.allocate(DType.F32, part.size(), s, c).fill(0f);
        for (int i = 0, off = 0; i < part.size(); off += part.get(i).length(), i++)
            java.lang.foreign.MemorySegment.copy(packed.data(), 4L * off * c, hidden.data(), 4L * i * s * c, 4L * part.get(i).length() * c);
        return head.infer(be, arena, hidden, b.mask()).toFloatArray();
    }

    /** The head's outputs for one padded batch (inputs on the host), read back when computed on a device. */
    private float[] headOutputs(BertTokenizer.Batch b) {
        if (deviceArena == null) return head.infer(be, arena, model.forward(be, arena, b.ids(), b.types(), b.mask(), adapters), b.mask()).toFloatArray();
        deviceArena.reset();
        model.checkTokens(b.ids(), b.types());
        Tensor mask = be.copyOf(b.mask(), deviceArena);
        Tensor h = model.forward(be, deviceArena, be.copyOf(b.ids(), deviceArena), be.copyOf(b.types(), deviceArena), mask, adapters);
        if (headBackend == be) return be.copyOf(head.infer(be, deviceArena, h, mask), arena).toFloatArray();
        return head.infer(headBackend, arena, be.copyOf(h, arena), b.mask()).toFloatArray();
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
