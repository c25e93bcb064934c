package dev.topa.kit;

import dev.topa.harness.Check;
import dev.topa.backend.PackedWeight;
import dev.topa.backend.Sparse24Weight;
import dev.topa.backend.cuda.CudaBackend;
import dev.topa.backend.cpu.CpuBackend;
import dev.topa.tensor.DType;
import dev.topa.tensor.MemoryCategory;
import dev.topa.tensor.Tensor;
import dev.topa.tensor.TensorAllocator;
import dev.topa.tensor.TensorScope;
import java.util.Locale;
import java.util.SplittableRandom;

/**
 * 2:4 semi-structured products on the sparse tensor cores (the GPU kit): first which reading
 * of mma.sp's metadata lanes the hardware takes -- each layout's product against the CPU's fp32
 * product with the same pruned weight (bound 1e-2: bf16 operands) -- then, with the one that matches,
 * time against the dense product of the same (pruned) weight through cuBLASLt (bf16, x converted,
 * bias fused) at BERT-large and BERT-base FFN shapes, 4096 tokens. 2:4 halves the FLOPs: 2x at most.
 * Prints `name: value` lines; sparse24_speedup_vs_dense_worst last.
 */
public final class Sparse24Check {
    public static void main(String[] args) {
        Gpu.requireOrExit();
        try (CudaBackend gpu = CudaBackend.open(0)) {
            int layout = new Sparse24Check().run(gpu);
            System.exit(layout >= 0 ? 0 : 1);
        }
    }

    private final SplittableRandom rnd = new SplittableRandom(13);

    /** The metadata layout that matched (or -1). */
    int run(CudaBackend gpu) {
        CpuBackend cpu = CpuBackend.create();
        int matched = -1;
        try (TensorScope h = new TensorScope("2:4 host", MemoryCategory.WORKSPACE); TensorAllocator d = gpu.scope("2:4", MemoryCategory.WEIGHTS)) {
            int m = 200, n = 128, k = 96; // m not a multiple of the tile: the edge too
            float[] w = random(n * k);
            Sparse24Weight.Compressed c = Sparse24Weight.compress(w, n, k);
            Tensor x = h.allocate(DType.F32, m, k).copyFrom(random(m * k)), bias = h.allocate(DType.F32, n).copyFrom(random(n));
            Tensor ref = h.allocate(DType.F32, m, n);
            cpu.gemm(false, true, 1f, x, h.allocate(DType.F32, n, k).copyFrom(c.pruned()), 0f, ref, bias);
            Sparse24Weight packed = Sparse24Weight.upload(gpu, c, h, d);
            Tensor dx = gpu.copyOf(x, d), db = gpu.copyOf(bias, d);
            for (int layout = 0; layout < 2; layout++) {
                Tensor y = gpu.copyOf(h.allocate(DType.F32, m, n).fill(Float.NaN), d);
                gpu.tuning().sparse24Layout(layout);
                packed.forward(gpu, y, dx, db);
                double err = Check.relativeError(ref.toFloatArray(), gpu.copyOf(y, h).toFloatArray());
                boolean ok = err <= 1e-2;
                System.out.printf(Locale.ROOT, "sparse24_layout%d_rel_error: %.3e (bound 1e-02, %s)%n", layout, err, ok ? "ok" : "MISMATCH");
                if (ok && matched < 0) matched = layout;
            }
            System.out.println("sparse24_metadata_layout: " + (matched < 0 ? "none matches" : matched));
            if (matched < 0) return -1;
            gpu.tuning().sparse24Layout(matched);
            double worst = Double.MAX_VALUE;
            long tokens = 4096;
            int[][] shapes = {{4096, 1024}, {1024, 4096}, {3072, 768}, {768, 3072}};
            String[] names = {"large_ffn_in", "large_ffn_out", "base_ffn_in", "base_ffn_out"};
            for (int s = 0; s < shapes.length; s++) {
                int out = shapes[s][0], in = shapes[s][1];
                Sparse24Weight.Compressed cs = Sparse24Weight.compress(random(out * in), out, in);
                Sparse24Weight sp = Sparse24Weight.upload(gpu, cs, h, d);
                Tensor wd = gpu.copyOf(h.allocate(DType.F32, out, in).copyFrom(cs.pruned()), d);
                PackedWeight dense = PackedWeight.pack(gpu, wd, d);
                Tensor xx = gpu.copyOf(h.allocate(DType.F32, tokens, in).copyFrom(random((int) tokens * in)), d);
                Tensor yy = gpu.copyOf(h.allocate(DType.F32, tokens, out).fill(0f), d), bb = gpu.copyOf(h.allocate(DType.F32, out).fill(0.5f), d);
                double sparseUs = LoraForwardBench.time(gpu, () -> sp.forward(gpu, yy, xx, bb));
                double denseUs = LoraForwardBench.time(gpu, () -> dense.forward(gpu, yy, xx, bb));
                double speedup = denseUs / sparseUs;
                worst = Math.min(worst, speedup);
                System.out.printf(Locale.ROOT, "sparse24_%s_%dx%dx%d_us: %.1f; dense_us: %.1f; speedup: %.2fx (the FLOPs allow 2x)%n", names[s],
                        tokens, out, in, sparseUs, denseUs, speedup);
            }
            System.out.printf(Locale.ROOT, "sparse24_speedup_vs_dense_worst: %.2f%n", worst);
        }
        return matched;
    }

    private float[] random(int count) {
        float[] v = new float[count];
        for (int i = 0; i < v.length; i++) v[i] = (float) (2 * rnd.nextDouble() - 1);
        return v;
    }
}
