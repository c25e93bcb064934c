package dev.topa.train;

import dev.topa.backend.Backend;
import dev.topa.model.BertModel;
import dev.topa.tensor.DType;
import dev.topa.tensor.StepArena;
import dev.topa.tensor.Tensor;
import dev.topa.tensor.TensorAllocator;
import java.util.IdentityHashMap;
import java.util.List;
import java.util.Map;
import java.util.stream.IntStream;

/**
 * What a task model teaches a student (knowledge distillation): its outputs on every training
 * example, computed once by forward passes before the student trains, so the teacher's weights are
 * gone before the student's first step (no memory of it during training, no forward per step and
 * epoch: its outputs do not change, the teacher runs without dropout). The student's loss becomes
 * (1 - alpha) x its task loss + alpha x {@link dev.topa.backend.Backend#distillationForward}
 * against these outputs at the given temperature.
 *
 * <p>Optionally also layer-wise ({@link #matchingHiddenStates}): the teacher's encoder then stays and
 * runs forward on every training batch (its hidden states per token are too many to keep for a
 * whole training set), and the student matches each layer's output to the teacher's. That costs the
 * teacher's weights (on the host compacted: bf16 packs and the training set's word embeddings) and
 * one inference forward per step for as long as the student trains.
 */
public final class Teacher implements AutoCloseable {
    private final Map<Trainer.Item, float[]> outputs = new IdentityHashMap<>();
    private final double alpha, temperature, seconds;
    private final long weightBytes;
    private BertModel encoder; // layer-wise: the teacher's encoder, on the student's device (null: outputs only)
    private double hiddenWeight, hiddenSeconds;
    private long hiddenBytes;
    private AutoCloseable owner; // what holds the encoder's memory, closed with this teacher
    private StepArena hiddenArena;

    /**
     * Runs model (with its head) over items once: predictor's outputs, kept per item.
     * seconds and weightBytes are reported as the teacher's cost.
     */
    public Teacher(Predictor predictor, long weightBytes, List<Trainer.Item> items, double alpha, double temperature) {
        if (!(alpha > 0 && alpha <= 1)) throw new IllegalArgumentException("distillation weight must be in (0, 1], got " + alpha);
        if (!(temperature > 0)) throw new IllegalArgumentException("distillation temperature must be positive, got " + temperature);
        long t0 = System.nanoTime();
        // batches of 16: the pass is once per run, and at 64 its activations (about 0.1 GiB on RTE) set the peak of a run with a fine-tuned teacher
        float[][] out = predictor.outputs(items.stream().map(Trainer.Item::tokens).toList(), 16);
        for (int i = 0; i < out.length; i++) outputs.put(items.get(i), out[i]);
        this.seconds = (System.nanoTime() - t0) * 1e-9;
        this.weightBytes = weightBytes;
        this.alpha = alpha;
        this.temperature = temperature;
    }

    /**
     * Every token id items use, and the padding id 0, ascending: the vocabulary of a teacher's encoder
     * compacted for them ({@link BertModel#compactForInference}).
     */
    public static int[] tokensOf(List<Trainer.Item> items) {
        return IntStream.concat(IntStream.of(0), items.stream().flatMapToInt(it -> IntStream.of(it.tokens().ids()))).distinct().sorted().toArray();
    }

    /**
     * The student also matches every layer's output to this encoder's (the same number of layers as
     * the student's; its own widths), weight x the mean squared error per element of a real token,
     * summed over layers (see {@link dev.topa.model.BertTraining#matchHidden}). On the host the encoder
     * may be one compacted for the training items ({@link BertModel#compactForInference}, {@link #tokensOf}).
     * The teacher takes owner (what holds the encoder: closed with the teacher) and reports weightBytes
     * as the memory it holds while the student trains.
     */
    public Teacher matchingHiddenStates(Backend be, BertModel encoder, double weight, long weightBytes, AutoCloseable owner) {
        if (!(weight > 0)) throw new IllegalArgumentException("hidden-state matching weight must be positive, got " + weight);
        if (!encoder.device().equals(be.device()) && !(encoder.device().isHostAccessible() && be.device().isHostAccessible()))
            throw new IllegalArgumentException("the teacher's encoder is on " + encoder.device() + ", the student trains on " + be.device());
        StepArena arena = be.stepArena("teacher hidden states"); // first: nothing is taken over when it fails
        this.encoder = encoder;
        this.hiddenWeight = weight;
        this.hiddenBytes = weightBytes;
        this.owner = owner;
        this.hiddenArena = arena;
        return this;
    }

    /** Whether the student matches hidden states too. */
    public boolean matchesHiddenStates() {
        return encoder != null;
    }

    /**
     * The teacher's layer outputs for a batch on the student's device, allocated from keep (the
     * student's step arena: they live until the student's backward has read them); the teacher's
     * own activations are gone when this returns. type: what they are kept in (the student's kept
     * activations', F32 or BF16).
     */
    Tensor[] hiddenStates(Backend be, TensorAllocator keep, DType type, Tensor ids, Tensor types, Tensor mask) {
        if (encoder.config().layers() == 0) throw new IllegalStateException("the teacher has no layers");
        long t0 = System.nanoTime();
        try {
            return encoder.layerOutputs(be, hiddenArena, keep, type, ids, types, mask);
        } finally {
            hiddenArena.reset();
            hiddenSeconds += (System.nanoTime() - t0) * 1e-9;
        }
    }

    public double hiddenWeight() {
        return hiddenWeight;
    }

    /** Seconds of the teacher's per-step forwards (layer-wise matching; on a device, until its work was queued). */
    public double hiddenSeconds() {
        return hiddenSeconds;
    }

    /** Bytes the teacher holds while the student trains (layer-wise matching; 0 without it). */
    public long hiddenBytes() {
        return hiddenBytes;
    }

    @Override
    public void close() {
        if (hiddenArena != null) hiddenArena.close();
        hiddenArena = null;
        encoder = null;
        if (owner != null) {
            try {
                owner.close();
            } catch (Exception e) {
                throw new IllegalStateException("closing the teacher's encoder: " + e.getMessage(), e);
            }
            owner = null;
        }
    }

    public double alpha() {
        return alpha;
    }

    public double temperature() {
        return temperature;
    }

    /** The teacher's outputs for a batch, [B x C] row by row (an item it has not seen is an error). */
    float[] outputs(List<Trainer.Item> batch) {
        float[] first = forItem(batch.get(0));
        float[] all = new float[batch.size() * first.length];
        for (int i = 0; i < batch.size(); i++) System.arraycopy(forItem(batch.get(i)), 0, all, i * first.length, first.length);
        return all;
    }

    private float[] forItem(Trainer.Item item) {
        float[] v = outputs.get(item);
        if (v == null) throw new IllegalArgumentException("the teacher has no outputs for a training item it was not given");
        return v;
    }

    /** Seconds of the teacher's forward passes. */
    public double seconds() {
        return seconds;
    }

    /** Bytes of the teacher's weights while it ran (freed before the student trains). */
    public long weightBytes() {
        return weightBytes;
    }
}
