package dev.topa.model;

import dev.topa.backend.Backend;
import dev.topa.backend.DenseWeight;
import dev.topa.backend.Dropout;
import dev.topa.backend.LinearWeight;
import dev.topa.tensor.DType;
import dev.topa.tensor.Device;
import dev.topa.tensor.MemoryCategory;
import dev.topa.tensor.StepArena;
import dev.topa.tensor.Tensor;
import dev.topa.tensor.TensorAllocator;
import dev.topa.tensor.TensorScope;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.SplittableRandom;

/**
 * A task head on the encoder: mask-aware mean pooling of last_hidden_state (the representation
 * sentence-embedding models such as the default one are trained for), then a linear layer to
 * {@code outputs} values: class logits, or one regression value. New heads start from N(0, 0.02)
 * weights and zero bias, as Hugging Face initialises classifiers.
 */
public final class TaskHead implements AutoCloseable {
    public static final String WEIGHT = "head.weight", BIAS = "head.bias";

    private final int outputs;
    private final TensorAllocator scope, gradScope;
    private final Backend device; // null: host memory
    private final Tensor weight, bias, dWeight, dBias;
    private final DenseWeight linear;
    private Tensor pooled, mask;
    private Dropout dropout = Dropout.NONE;
    /** The dropout site of the pooled representation (outside the encoder's site numbering). */
    public static final int DROPOUT_SITE = 0x7fffffff;

    public TaskHead(int hidden, int outputs, long seed) {
        this.outputs = outputs;
        this.device = null;
        scope = new TensorScope("task head", MemoryCategory.WEIGHTS);
        gradScope = new TensorScope("task head gradients", MemoryCategory.GRADIENTS);
        weight = scope.allocate(DType.F32, outputs, hidden);
        bias = scope.allocate(DType.F32, outputs).fill(0f);
        SplittableRandom rnd = new SplittableRandom(seed);
        float[] w = new float[outputs * hidden];
        for (int i = 0; i < w.length; i++) w[i] = (float) (0.02 * gaussian(rnd));
        weight.copyFrom(w);
        dWeight = gradScope.zeros(outputs, hidden);
        dBias = gradScope.zeros(outputs);
        linear = new DenseWeight(weight);
    }

    private TaskHead(TaskHead host, Backend be) {
        this.outputs = host.outputs;
        this.device = be;
        scope = be.scope("task head", MemoryCategory.WEIGHTS);
        gradScope = be.scope("task head gradients", MemoryCategory.GRADIENTS);
        weight = be.copyOf(host.weight, scope);
        bias = be.copyOf(host.bias, scope);
        dWeight = gradScope.allocate(DType.F32, weight.shape());
        dBias = gradScope.allocate(DType.F32, bias.shape());
        linear = new DenseWeight(weight);
        zeroGradients();
    }

    /** This head (weights; gradients zero) on the backend's device; close it separately. */
    public TaskHead copyTo(Backend be) {
        return new TaskHead(this, be);
    }

    public Device device() {
        return scope.device();
    }

    private static double gaussian(SplittableRandom rnd) {
        return Math.sqrt(-2 * Math.log(1 - rnd.nextDouble())) * Math.cos(2 * Math.PI * rnd.nextDouble());
    }

    public int outputs() {
        return outputs;
    }

    public Map<String, Tensor> parameters() {
        Map<String, Tensor> m = new LinkedHashMap<>();
        m.put(WEIGHT, weight);
        m.put(BIAS, bias);
        return m;
    }

    public Map<String, Tensor> gradients() {
        Map<String, Tensor> m = new LinkedHashMap<>();
        m.put(WEIGHT, dWeight);
        m.put(BIAS, dBias);
        return m;
    }

    public void zeroGradients() {
        if (device == null) {
            dWeight.fill(0f);
            dBias.fill(0f);
        } else {
            device.zero(dWeight);
            device.zero(dBias);
        }
    }

    /** Logits (or regression values) [B, outputs] from hidden [B, S, C]; keeps what backward needs. */
    public Tensor forward(Backend be, StepArena arena, Tensor hidden, Tensor mask) {
        return forward(be, arena, hidden, mask, Dropout.NONE);
    }

    /** As above with dropout on the pooled representation (training). */
    public Tensor forward(Backend be, StepArena arena, Tensor hidden, Tensor mask, Dropout dropout) {
        long b = hidden.dim(0), c = hidden.dim(2);
        pooled = arena.allocate(DType.F32, b, c);
        this.mask = mask;
        this.dropout = dropout;
        be.meanPoolForward(pooled, hidden, mask);
        if (dropout.active()) be.dropout(pooled, pooled, dropout, false);
        Tensor out = arena.allocate(DType.F32, b, outputs);
        linear.forward(be, out, pooled, bias);
        return out;
    }

    /**
     * Logits (or regression values) [B, outputs] for inference: keeps nothing, so any number of
     * threads may call it at once with their own arenas.
     */
    public Tensor infer(Backend be, StepArena arena, Tensor hidden, Tensor mask) {
        Tensor pooled = arena.allocate(DType.F32, hidden.dim(0), hidden.dim(2)), out = arena.allocate(DType.F32, hidden.dim(0), outputs);
        be.meanPoolForward(pooled, hidden, mask);
        linear.forward(be, out, pooled, bias);
        return out;
    }

    /** dHidden [B, S, C] from dOut [B, outputs]; accumulates the head's gradients. */
    public Tensor backward(Backend be, StepArena arena, Tensor dOut, long seq) {
        long b = pooled.dim(0), c = pooled.dim(1);
        Tensor dPooled = arena.allocate(DType.F32, b, c);
        linear.backward(be, arena, dPooled, false, dOut, pooled, null, null, Dropout.NONE, new LinearWeight.Gradients(dWeight, dBias, null, null));
        if (dropout.active()) be.dropout(dPooled, dPooled, dropout, false);
        Tensor dHidden = arena.allocate(DType.F32, b, seq, c);
        be.meanPoolBackward(dHidden, dPooled, mask);
        return dHidden;
    }

    @Override
    public void close() {
        gradScope.close();
        scope.close();
    }
}
