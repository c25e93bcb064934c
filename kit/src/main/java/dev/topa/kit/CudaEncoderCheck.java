package dev.topa.kit;

import dev.topa.io.RandomTokens;
import dev.topa.harness.Check;
import dev.topa.io.BertTokenizer;
import dev.topa.model.TaskHead;
import dev.topa.train.Predictor;
import dev.topa.backend.Backend;
import dev.topa.backend.cpu.CpuBackend;
import dev.topa.backend.cuda.CudaBackend;
import dev.topa.backend.cuda.CudaDriver;
import dev.topa.model.BertConfig;
import dev.topa.model.BertModel;
import dev.topa.tensor.DType;
import dev.topa.tensor.MemoryCategory;
import dev.topa.tensor.MemoryTracker;
import dev.topa.tensor.StepArena;
import dev.topa.tensor.Tensor;
import dev.topa.tensor.TensorScope;
import java.util.Arrays;
import java.util.Locale;
import java.util.SplittableRandom;

/**
 * The GPU kit's encoder check (bench/gpu/run.sh): random-weight BERT encoders (MiniLM-L6 and
 * BERT-base shapes, and a pruned MiniLM with uneven heads and FFN widths) run forward on the CUDA
 * backend and on the CPU backend from the same weights and inputs (padding in all but the first
 * sequence); relative error of last_hidden_state against 1e-4 in the backend's fp32 mode and
 * 2e-2 in its mixed mode (bf16 tensor-core linears and attention, weights packed for inference). Then inference time at batch 32,
 * seq 128, full sequences (as PyTorch is timed beside it): median wall time of 30 forwards after
 * 10 warm-ups, uploads of the inputs included, each ending with the stream drained. Prints `name: value` lines; exit 1 on a
 * mismatch, 2 without a GPU.
 */
public final class CudaEncoderCheck {
    private final SplittableRandom rnd = new SplittableRandom(20261127);
    private boolean failed;

    public static void main(String[] args) {
        if (CudaDriver.get().isEmpty()) {
            System.out.println("cuda_available: false (" + CudaDriver.unavailableReason() + ")");
            System.exit(2);
        }
        CudaEncoderCheck c = new CudaEncoderCheck();
        try (CudaBackend gpu = CudaBackend.open(0); CudaBackend exact = CudaBackend.open(0, CudaBackend.Precision.FP32)) {
            System.exit(c.run(gpu, exact) ? 0 : 1);
        }
    }

    /** Parity for three shapes, then timings; false when an output disagrees. */
    public boolean run(Backend gpu, Backend exact) {
        CpuBackend cpu = CpuBackend.create();
        BertConfig minilm = BertConfig.uniform(30522, 384, 6, 12, 1536, 512, 2, 1e-12f);
        BertConfig base = BertConfig.uniform(30522, 768, 12, 12, 3072, 512, 2, 1e-12f);
        BertConfig pruned = new BertConfig(30522, 384, 512, 2, 32, new int[] {12, 5, 0, 7, 12, 1}, new int[] {1536, 701, 3, 0, 1000, 1537},
                1e-12f);
        parity("minilm", minilm, cpu, exact, gpu, 8, 128);
        parity("pruned_minilm", pruned, cpu, exact, gpu, 5, 77);
        parity("bertbase", base, cpu, exact, gpu, 4, 128);
        predictor(minilm, cpu, gpu);
        timing("minilm", minilm, gpu, 32, 128);
        timing("bertbase", base, gpu, 32, 128);
        System.out.println("cuda_encoder_all_match: " + !failed);
        return !failed;
    }

    /**
     * Forward on the CPU and on the device from the same weights and inputs: the device's fp32 mode
     * unpacked (bound 1e-4), its mixed mode with weights packed for inference (bound 2e-2); false
     * when either misses.
     */
    boolean parity(String tag, BertConfig config, Backend cpu, Backend exact, Backend gpu, int batch, int seq) {
        boolean before = failed;
        failed = false;
        try (BertModel host = randomModel(config); BertModel devExact = host.copyTo(exact); BertModel dev = host.copyTo(gpu);
                TensorScope inputs = hostScope()) {
            Tensor[] in = inputs(inputs, config, batch, seq, true);
            float[] ref = forward(cpu, host, in);
            float[] f32 = forward(exact, devExact, in);
            host.packForInference(cpu, false);
            dev.packForInference(gpu, false);
            float[] packedRef = forward(cpu, host, in);
            float[] bf16 = forward(gpu, dev, in);
            report("encoder_" + tag + "_f32_b" + batch + "_s" + seq, ref, f32, 1e-4);
            report("encoder_" + tag + "_mixed_bf16_b" + batch + "_s" + seq, packedRef, bf16, 2e-2);
        }
        boolean ok = !failed;
        failed |= before;
        return ok;
    }

    /** The predict/eval path: Predictor on the device (encoder there, head on the CPU) against Predictor on the CPU. */
    boolean predictor(BertConfig config, Backend cpu, Backend gpu) {
        java.util.List<BertTokenizer.Encoded> toks = new java.util.ArrayList<>();
        for (int i = 0; i < 37; i++)
            toks.add(RandomTokens.sequence(rnd, config.vocabSize(), 3 + rnd.nextInt(Math.min(126, config.maxPositions() - 3))));
        try (BertModel m = randomModel(config); TaskHead head = new TaskHead(config.hidden(), 3, 7);
                Predictor onCpu = new Predictor(cpu, m, head);
                Predictor onGpu = new Predictor(gpu, m, head)) {
            float[][] ref = onCpu.outputs(toks, 8), got = onGpu.outputs(toks, 8);
            float[] r = new float[ref.length * 3], g = new float[r.length];
            for (int i = 0; i < ref.length; i++) {
                System.arraycopy(ref[i], 0, r, 3 * i, 3);
                System.arraycopy(got[i], 0, g, 3 * i, 3);
            }
            boolean before = failed;
            failed = false;
            report("predictor_head_outputs_37_inputs", r, g, 2e-2);
            boolean ok = !failed;
            failed |= before;
            return ok;
        }
    }

    private void timing(String tag, BertConfig config, Backend gpu, int batch, int seq) {
        MemoryTracker tracker = MemoryTracker.of(gpu.device());
        try (BertModel host = randomModel(config); BertModel dev = host.copyTo(gpu); TensorScope inputs = hostScope();
                StepArena arena = gpu.stepArena("timing")) {
            host.close();
            dev.packForInference(gpu, false);
            Tensor[] in = inputs(inputs, config, batch, seq, false);
            tracker.resetPeaks();
            double[] ms = new double[30], gpuMs = new double[ms.length];
            CudaBackend cuda = gpu instanceof CudaBackend c ? c : null;
            long e0 = cuda == null ? 0 : cuda.driver().eventCreate(), e1 = cuda == null ? 0 : cuda.driver().eventCreate();
            for (int i = -10; i < ms.length; i++) {
                long t0 = System.nanoTime();
                Tensor ids = gpu.copyOf(in[0], arena), types = gpu.copyOf(in[1], arena), mask = gpu.copyOf(in[2], arena);
                if (cuda != null) cuda.driver().eventRecord(e0, cuda.stream());
                dev.forward(gpu, arena, ids, types, mask);
                if (cuda != null) cuda.driver().eventRecord(e1, cuda.stream());
                gpu.synchronize();
                if (i >= 0) {
                    ms[i] = (System.nanoTime() - t0) * 1e-6;
                    gpuMs[i] = cuda == null ? ms[i] : cuda.driver().elapsedMs(e0, e1);
                }
                arena.reset();
            }
            if (cuda != null) {
                cuda.driver().eventDestroy(e0);
                cuda.driver().eventDestroy(e1);
            }
            Arrays.sort(ms);
            Arrays.sort(gpuMs);
            double med = ms[ms.length / 2];
            String name = "topa_cuda_" + tag + "_b" + batch + "_s" + seq;
            // the stream's time from the first op to the last (includes gaps where the GPU waited for the host)
            System.out.printf(Locale.ROOT, "%s_stream_ms: %.3f%n", name, gpuMs[gpuMs.length / 2]);
            System.out.printf(Locale.ROOT, "%s_ms: %.3f%n%s_seq_per_s: %.1f%n", name, med, name, batch * 1000 / med);
            System.out.printf(Locale.ROOT, "%s_device_peak_mib: %.1f%n", name, tracker.totalPeak() / 1048576.0);
        }
    }

    /** last_hidden_state on the backend, read back to the host. */
    private static float[] forward(Backend be, BertModel m, Tensor[] in) {
        try (StepArena arena = be.stepArena("check"); TensorScope out = hostScope()) {
            Tensor ids = be.copyOf(in[0], arena), types = be.copyOf(in[1], arena), mask = be.copyOf(in[2], arena);
            Tensor h = m.forward(be, arena, ids, types, mask);
            return be.copyOf(h, out).toFloatArray();
        }
    }

    private void report(String name, float[] ref, float[] got, double bound) {
        double err = Check.relativeError(ref, got);
        boolean ok = err <= bound;
        failed |= !ok;
        System.out.printf(Locale.ROOT, "%s_rel_error: %.3e (bound %.0e, %s)%n", name, err, bound, ok ? "ok" : "MISMATCH");
    }

    private static TensorScope hostScope() {
        return new TensorScope("encoder check", MemoryCategory.WORKSPACE);
    }

    private Tensor[] inputs(TensorScope s, BertConfig config, int batch, int seq, boolean padding) {
        return RandomTokens.batch(rnd, s, config.vocabSize(), batch, seq, padding);
    }

    /** Weights of a trained encoder's scale: matrices uniform with std 0.05, layer norms near 1 and 0. */
    private BertModel randomModel(BertConfig config) {
        BertModel m = new BertModel(config);
        for (var e : m.parameters().entrySet()) {
            Tensor t = e.getValue();
            String n = e.getKey();
            float[] v = new float[(int) t.numel()];
            boolean gamma = n.endsWith("LayerNorm.weight");
            double spread = n.contains("embeddings") ? 0.1 : n.endsWith("bias") || n.endsWith("LayerNorm.bias") ? 0.02 : 0.05 * Math.sqrt(3);
            for (int i = 0; i < v.length; i++) v[i] = (float) ((gamma ? 1 : 0) + spread * (2 * rnd.nextDouble() - 1));
            t.copyFrom(v);
        }
        return m;
    }
}
