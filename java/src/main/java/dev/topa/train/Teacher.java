package dev.topa.train;

import java.util.IdentityHashMap;
import java.util.List;
import java.util.Map;

/**
 * What a task model teaches a student (knowledge distillation): its outputs on every training
 * example, computed once by forward passes before the student trains, so the teacher's weights are
 * gone before the student's first step (no memory of it during training, no forward per step and
 * epoch: its outputs do not change, the teacher runs without dropout). The student's loss becomes
 * (1 - alpha) x its task loss + alpha x {@link dev.topa.backend.Backend#distillationForward}
 * against these outputs at the given temperature.
 */
public final class Teacher {
    private final Map<Trainer.Item, float[]> outputs = new IdentityHashMap<>();
    private final double alpha, temperature, seconds;
    private final long weightBytes;

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
