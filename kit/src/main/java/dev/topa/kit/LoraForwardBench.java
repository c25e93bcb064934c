package dev.topa.kit;

import dev.topa.backend.Bf16Weight;
import dev.topa.backend.Dropout;
import dev.topa.backend.LinearWeight;
import dev.topa.backend.cuda.CublasLt;
import dev.topa.backend.cuda.CudaBackend;
import dev.topa.backend.cuda.CudaDriver;
import dev.topa.tensor.StepArena;
import dev.topa.tensor.DType;
import dev.topa.tensor.MemoryCategory;
import dev.topa.tensor.Tensor;
import dev.topa.tensor.TensorAllocator;
import dev.topa.tensor.TensorScope;
import java.util.Locale;
import java.util.SplittableRandom;

/**
 * What a LoRA update costs on top of the frozen bf16 base GEMM (the GPU kit): at BERT-base
 * shapes (4096 tokens = batch 32 x seq 128; the QKV, attention-output, FFN-in and FFN-out weights)
 * and ranks 8 and 16, the time of y = x W^T + bias alone, of the same with the rank-r term folded
 * into the GEMM with its factor product u = x A^T formed in the conversion pass (the whole LoRA
 * forward, as training runs it), of the same from two calls (factor GEMM, then the product), and of
 * the bare cuBLASLt GEMM on operands already in bf16 (the floor). CUDA events around 20 back-to-back
 * calls, median of 5 windows. Prints `name: value` lines, the overheads in %, the worst last.
 */
public final class LoraForwardBench {
    public static void main(String[] args) {
        Gpu.requireOrExit();
        try (CudaBackend gpu = CudaBackend.open(0)) {
            new LoraForwardBench().run(gpu);
        }
    }

    private final SplittableRandom rnd = new SplittableRandom(3);

    void run(CudaBackend gpu) {
        long m = 4096;
        long[][] shapes = {{2304, 768}, {768, 768}, {3072, 768}, {768, 3072}}; // {out, in}
        String[] names = {"qkv", "attn_out", "ffn_in", "ffn_out"};
        double worst = 0;
        try (TensorScope h = new TensorScope("bench host", MemoryCategory.WORKSPACE); TensorAllocator d = gpu.scope("bench", MemoryCategory.WEIGHTS); StepArena temp = gpu.stepArena("bench")) {
            for (int s = 0; s < shapes.length; s++) {
                long out = shapes[s][0], in = shapes[s][1];
                Tensor w = up(gpu, h, d, out, in), x = up(gpu, h, d, m, in), bias = up(gpu, h, d, out), y = up(gpu, h, d, m, out);
                Bf16Weight weight = Bf16Weight.pack(gpu, w, d, false);
                Bf16Weight.Pack packed = weight.forwardPack();
                double base = time(gpu, () -> weight.forward(gpu, y, x, bias));
                long xb = gpu.deviceMemory().allocate(2 * m * in), yb = gpu.deviceMemory().allocate(2 * m * out);
                double bare = time(gpu, () -> lt(gpu).matmul(false, false, m, out, in, 1f, xb, in, packed.data().data().address(), out, 0f, yb, out, 0,
                        CublasLt.Types.BF16, CublasLt.Epilogue.NONE, gpu.stream()));
                gpu.deviceMemory().free(xb, 2 * m * in);
                gpu.deviceMemory().free(yb, 2 * m * out);
                double tflops = 2.0 * m * out * in / (base * 1e6);
                System.out.printf(Locale.ROOT, "base_gemm_%s_%dx%dx%d_us: %.1f (%.0f TFLOP/s incl. the bf16 conversion of x); bare_bf16_gemm_us: %.1f%n",
                        names[s], m, out, in, base, tflops, bare);
                for (int r : new int[] {8, 16}) {
                    Tensor u = up(gpu, h, d, m, r), a = up(gpu, h, d, r, in), b = up(gpu, h, d, out, r);
                    // the whole LoRA forward: u = x A^T formed in the pass that rounds x to bf16, then one GEMM over K + r
                    LinearWeight.LowRank lora = new LinearWeight.LowRank(a, b, 0.5f);
                    double whole = time(gpu, () -> {
                        temp.reset();
                        weight.forward(gpu, temp, temp, y, x, bias, lora, Dropout.NONE);
                    });
                    // the same from two calls: the factor GEMM (reads x once more), then the product with u folded in
                    double twoCalls = time(gpu, () -> {
                        gpu.gemm(false, true, 1f, x, a, 0f, u, null);
                        Bf16Weight.gemm(gpu, 1f, x, packed, 0f, y, bias, u, 0.5f, true, b);
                    });
                    double termOnly = time(gpu, () -> Bf16Weight.gemm(gpu, 1f, x, packed, 0f, y, bias, u, 0.5f, true, b));
                    double pct = 100 * (whole / base - 1);
                    worst = Math.max(worst, pct);
                    System.out.printf(Locale.ROOT, "lora_forward_%s_r%d_us: %.1f%nlora_forward_overhead_%s_r%d_pct: %.1f (vs the bare GEMM: %.1f)%n"
                            + "lora_forward_two_calls_%s_r%d_us: %.1f; u given, the term alone: %.1f%n",
                            names[s], r, whole, names[s], r, pct, 100 * (whole / bare - 1), names[s], r, twoCalls, termOnly);
                }
            }
        }
        System.out.printf(Locale.ROOT, "lora_forward_overhead_worst_pct: %.1f%n", worst);
    }

    private static CublasLt lt(CudaBackend gpu) {
        return gpu.cublasLt();
    }

    private Tensor up(CudaBackend gpu, TensorScope h, TensorAllocator d, long... shape) {
        Tensor t = h.allocate(DType.F32, shape);
        float[] v = new float[(int) t.numel()];
        for (int i = 0; i < v.length; i++) v[i] = (float) (2 * rnd.nextDouble() - 1);
        return gpu.copyOf(t.copyFrom(v), d);
    }

    /** Microseconds per call: 20 back-to-back calls between CUDA events, median of 5 windows, after 5 warm-ups. */
    static double time(CudaBackend gpu, Runnable call) {
        for (int i = 0; i < 5; i++) call.run();
        CudaDriver cu = gpu.driver();
        long e0 = cu.eventCreate(), e1 = cu.eventCreate();
        double[] t = new double[5];
        for (int i = 0; i < t.length; i++) {
            cu.eventRecord(e0, gpu.stream());
            for (int j = 0; j < 20; j++) call.run();
            cu.eventRecord(e1, gpu.stream());
            t[i] = cu.elapsedMs(e0, e1) * 1e3 / 20;
        }
        cu.eventDestroy(e0);
        cu.eventDestroy(e1);
        java.util.Arrays.sort(t);
        return t[t.length / 2];
    }
}
