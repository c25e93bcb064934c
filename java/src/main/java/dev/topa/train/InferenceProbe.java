package dev.topa.train;

import dev.topa.backend.Backend;
import dev.topa.model.BertModel;
import dev.topa.tensor.DType;
import dev.topa.tensor.MemoryCategory;
import dev.topa.tensor.MemoryTracker;
import dev.topa.tensor.StepArena;
import dev.topa.tensor.Tensor;
import java.util.Arrays;
import java.util.SplittableRandom;

/**
 * The serving figures a report states for a model: batch-1 latency and batch-32 throughput at
 * sequence length 128 (medians after warm-up, pre-packed weights) and the peak activation memory of
 * a batch-32 forward.
 */
public final class InferenceProbe {
    public record Figures(double latencyB1Ms, double throughputB32, long activationPeakBytes) {}

    private InferenceProbe() {}

    public static Figures measure(Backend be, BertModel model, int iterations) {
        model.packForInference(be, false);
        MemoryTracker mem = MemoryTracker.of(be.device());
        try (StepArena arena = new StepArena("inference probe")) {
            double b1 = median(be, model, arena, 1, iterations * 3);
            long before = mem.live(MemoryCategory.ACTIVATIONS);
            mem.resetPeaks();
            double b32 = median(be, model, arena, 32, iterations);
            long peak = mem.peak(MemoryCategory.ACTIVATIONS) - before;
            return new Figures(b1 * 1e3, 32 / b32, peak);
        }
    }

    private static double median(Backend be, BertModel model, StepArena arena, int batch, int n) {
        int seq = 128;
        int[] ids = new int[batch * seq];
        SplittableRandom rnd = new SplittableRandom(1);
        for (int i = 0; i < ids.length; i++) ids[i] = i % seq == 0 ? 101 : rnd.nextInt(1000, 20000);
        double[] t = new double[n];
        for (int i = -2; i < n; i++) {
            arena.reset();
            Tensor x = arena.allocate(DType.I32, batch, seq).copyFrom(ids);
            long t0 = System.nanoTime();
            model.forward(be, arena, x, null, null);
            if (i >= 0) t[i] = (System.nanoTime() - t0) * 1e-9;
        }
        Arrays.sort(t);
        return t[n / 2];
    }
}
