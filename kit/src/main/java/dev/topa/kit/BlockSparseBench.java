package dev.topa.kit;

import dev.topa.backend.BlockSparseWeight;
import dev.topa.backend.PackedWeight;
import dev.topa.backend.cuda.CublasLt;
import dev.topa.backend.cuda.CudaBackend;
import dev.topa.model.BertConfig;
import dev.topa.model.BertModel;
import dev.topa.model.BertNames;
import dev.topa.prune.BlockFormats;
import dev.topa.tensor.DType;
import dev.topa.tensor.MemoryCategory;
import dev.topa.tensor.Tensor;
import dev.topa.tensor.TensorAllocator;
import dev.topa.tensor.TensorScope;
import java.util.Locale;
import java.util.SplittableRandom;

/**
 * Block-sparse products on the tensor cores against dense cuBLASLt (the GPU kit): BERT-large
 * FFN shapes (4096 tokens = batch 32 x seq 128; 1024 -> 4096 and 4096 -> 1024) and BERT-base's, at
 * 50% and 80% block sparsity (random 32 x 32 masks), forward (P = W) and backward-data (P = W^T).
 * Both layers take the same fp32 activations and convert them to bf16 (the dense side through
 * {@link PackedWeight}, bias fused); the conversion is also timed alone, and the dense
 * cuBLASLt GEMM on bf16 x alone, so each line gives the layer speedup and the kernel's (block-sparse
 * layer minus the conversion, over the GEMM). 80% sparsity is worth at most 5x. Both block-sparse
 * kernels (CudaBackend.BlockSparseKernel: 1, 4 or 8 block-rows per CTA sharing X tiles, and 8 with the work
 * spread over all warps and cp.async three columns ahead), forward and backward-data. Napkin math next
 * to each: the kept-FLOP rate as a share of the dense GEMM's, same call. First, the per-weight format
 * choice of a 50% block-masked BERT-base on this GPU. Every timed output is also checked: forward and
 * backward-data against fp32 GEMMs with the masked dense weight, normwise within the bf16 products'
 * bound ({@link OpsCheck#BF16_PRODUCTS}); a mismatch prints `blocksparse_check_failed: ...` and the
 * program exits 1. Prints `name: value` lines, the kernel figure last.
 */
public final class BlockSparseBench {
    public static void main(String[] args) {
        Gpu.requireOrExit();
        int failures;
        try (CudaBackend gpu = CudaBackend.open(0)) {
            formats(gpu);
            BlockSparseBench bench = new BlockSparseBench();
            bench.run(gpu); // the asked figure last
            failures = bench.failures;
        }
        System.exit(failures == 0 ? 0 : 1);
    }

    private int failures;

    /** got against want (both on the GPU), normwise; a failure is printed and counted. */
    private void check(CudaBackend gpu, TensorScope h, String what, Tensor got, Tensor want) {
        float[] g = gpu.copyOf(got, h).toFloatArray(), w = gpu.copyOf(want, h).toFloatArray();
        double diff = 0, norm = 0;
        for (int i = 0; i < g.length; i++) {
            diff += (g[i] - (double) w[i]) * (g[i] - (double) w[i]);
            norm += w[i] * (double) w[i];
        }
        double rel = Math.sqrt(diff / Math.max(norm, 1e-30));
        if (!(rel <= OpsCheck.BF16_PRODUCTS)) {
            failures++;
            System.out.printf(Locale.ROOT, "blocksparse_check_failed: %s rel error %.3g > %.0e%n", what, rel, OpsCheck.BF16_PRODUCTS);
        }
    }

    private final SplittableRandom rnd = new SplittableRandom(5);

    void run(CudaBackend gpu) {
        long m = 4096;
        long[][] shapes = {{4096, 1024}, {1024, 4096}, {3072, 768}, {768, 3072}}; // {out, in}
        String[] names = {"large_ffn_in", "large_ffn_out", "base_ffn_in", "base_ffn_out"};
        CudaBackend.BlockSparseKernel[] groups = CudaBackend.BlockSparseKernel.values(), defaultKernel = {gpu.tuning().blockSparseKernel()};
        double[] worstKernel = new double[groups.length], worstLayer = new double[groups.length];
        java.util.Arrays.fill(worstKernel, Double.MAX_VALUE);
        java.util.Arrays.fill(worstLayer, Double.MAX_VALUE);
        try (TensorScope h = new TensorScope("bench host", MemoryCategory.WORKSPACE); TensorAllocator d = gpu.scope("bench", MemoryCategory.WEIGHTS)) {
            for (int s = 0; s < shapes.length; s++) {
                int out = (int) shapes[s][0], in = (int) shapes[s][1];
                Tensor w = up(gpu, h, d, out, in), x = up(gpu, h, d, m, in), bias = up(gpu, h, d, out), y = up(gpu, h, d, m, out);
                Tensor dx = up(gpu, h, d, m, in);
                PackedWeight dense = PackedWeight.pack(gpu, w, d);
                double denseUs = LoraForwardBench.time(gpu, () -> dense.forward(gpu, y, x, bias));
                // every layer starts from fp32 activations and converts them first: the conversions alone, and the dense
                // cuBLASLt GEMMs on bf16 operands alone (forward x W^T; backward-data dy W), for the kernels' own speedups
                Tensor xb = d.allocate(DType.BF16, m, in), yb = d.allocate(DType.BF16, m, out);
                double convertX = LoraForwardBench.time(gpu, () -> gpu.convert(xb, x)), convertY = LoraForwardBench.time(gpu, () -> gpu.convert(yb, y));
                long wp = dense.data().data().address();
                double gemmF = LoraForwardBench.time(gpu, () -> gpu.cublasLt().matmul(false, true, m, out, in, 1f, xb.data().address(), in, wp, in, 0f,
                        y.data().address(), out, bias.data().address(), CublasLt.Types.BF16_IN_F32_OUT, CublasLt.Epilogue.BIAS, gpu.stream()));
                double gemmB = LoraForwardBench.time(gpu, () -> gpu.cublasLt().matmul(false, false, m, in, out, 1f, yb.data().address(), out, wp, in,
                        0f, dx.data().address(), in, 0, CublasLt.Types.BF16_IN_F32_OUT, CublasLt.Epilogue.NONE, gpu.stream()));
                double denseTflops = 2.0 * m * out * in / (gemmF * 1e6);
                System.out.printf(Locale.ROOT, "dense_%s_%dx%dx%d_us: %.1f (conversion of x %.1f + cuBLASLt bf16 GEMM %.1f at %.0f TFLOP/s;"
                        + " backward-data GEMM %.1f, conversion of dy %.1f)%n", names[s], m, out, in, denseUs, convertX, gemmF, denseTflops, gemmB, convertY);
                for (double sparsity : new double[] {0.5, 0.8}) {
                    boolean[][] mask = new boolean[out / BlockSparseWeight.BLOCK][in / BlockSparseWeight.BLOCK];
                    for (boolean[] row : mask) for (int j = 0; j < row.length; j++) row[j] = rnd.nextDouble() >= sparsity;
                    BlockSparseWeight.Pack fwd = BlockSparseWeight.pack(gpu, w, mask, false, d, false);
                    BlockSparseWeight.Pack bwd = BlockSparseWeight.pack(gpu, w, mask, true, d, false);
                    String tag = names[s] + "_sparsity" + Math.round(100 * sparsity);
                    // the references: fp32 GEMMs with the weight's unkept blocks zeroed
                    float[] wm = gpu.copyOf(w, h).toFloatArray();
                    int b = BlockSparseWeight.BLOCK;
                    for (int r = 0; r < out; r++)
                        for (int c = 0; c < in; c++)
                            if (!mask[r / b][c / b]) wm[r * in + c] = 0f;
                    Tensor masked = gpu.copyOf(h.allocate(DType.F32, out, in).copyFrom(wm), d);
                    Tensor yRef = d.allocate(DType.F32, m, out), dxRef = d.allocate(DType.F32, m, in);
                    gpu.gemm(false, true, 1f, x, masked, 0f, yRef, bias);
                    for (int gi = 0; gi < groups.length; gi++) {
                        gpu.tuning().blockSparseKernel(groups[gi]);
                        double f = LoraForwardBench.time(gpu, () -> BlockSparseWeight.linear(gpu, y, x, fwd, bias, 0f, null, null, 0f, false));
                        double bw = LoraForwardBench.time(gpu, () -> BlockSparseWeight.linear(gpu, dx, y, bwd, null, 0f, null, null, 0f, false));
                        check(gpu, h, tag + " " + groups[gi] + " forward", y, yRef);
                        gpu.gemm(false, false, 1f, y, masked, 0f, dxRef, null); // backward-data read this forward's y
                        check(gpu, h, tag + " " + groups[gi] + " backward-data", dx, dxRef);
                        double fk = Math.max(f - convertX, 1e-3), bk = Math.max(bw - convertY, 1e-3);
                        double keptTflops = 2.0 * m * out * in * fwd.density() / (fk * 1e6);
                        String k = groups[gi].name().toLowerCase(Locale.ROOT);
                        System.out.printf(Locale.ROOT, "blocksparse_%s_%s_forward_us: %.1f (layer speedup vs dense %.2fx; kernel %.1f vs GEMM %.1f: %.2fx;"
                                + " kept-FLOP rate %.0f TFLOP/s = %.0f%% of dense)%n", tag, k, f, denseUs / f, fk, gemmF, gemmF / fk, keptTflops,
                                100 * keptTflops / denseTflops);
                        System.out.printf(Locale.ROOT, "blocksparse_%s_%s_backward_data_us: %.1f (kernel %.1f vs GEMM %.1f: %.2fx)%n", tag, k, bw, bk,
                                gemmB, gemmB / bk);
                        if (sparsity == 0.8 && s < 2) {
                            worstLayer[gi] = Math.min(worstLayer[gi], Math.min(denseUs / f, (convertY + gemmB) / bw));
                            worstKernel[gi] = Math.min(worstKernel[gi], Math.min(gemmF / fk, gemmB / bk));
                        }
                    }
                    gpu.tuning().blockSparseKernel(defaultKernel[0]);
                }
            }
        }
        // per kernel, the worst of BERT-large FFN-in and FFN-out, forward and backward-data, at 80%; the asked figure is the best
        // kernel's: the products on bf16 operands against cuBLASLt's (the layer figure adds the conversion of fp32 activations that
        // both layers pay today and sparsity does not shrink)
        double bestKernel = 0, bestLayer = 0;
        for (int gi = 0; gi < groups.length; gi++) {
            System.out.printf(Locale.ROOT, "blocksparse_80pct_bert_large_ffn_%s_kernel_speedup_worst: %.2f (layer %.2f)%n",
                    groups[gi].name().toLowerCase(Locale.ROOT), worstKernel[gi], worstLayer[gi]);
            bestKernel = Math.max(bestKernel, worstKernel[gi]);
            bestLayer = Math.max(bestLayer, worstLayer[gi]);
        }
        System.out.printf(Locale.ROOT, "blocksparse_80pct_bert_large_ffn_layer_speedup_worst: %.2f%n", bestLayer);
        System.out.printf(Locale.ROOT, "blocksparse_80pct_bert_large_ffn_speedup_worst: %.2f%n", bestKernel);
    }

    /**
     * The pipeline's choice on this GPU (BlockFormats, as prune-adapt and Classifier make it): a BERT-base-shaped
     * encoder with half the blocks of every linear weight masked at random, each weight timed both ways at 4096 tokens.
     */
    static void formats(CudaBackend gpu) {
        var config = BertConfig.uniform(30522, 768, 12, 12, 3072, 512, 2, 1e-12f);
        SplittableRandom rnd = new SplittableRandom(9);
        try (BertModel host = new BertModel(config)) {
            for (Tensor t : host.parameters().values()) {
                float[] v = new float[(int) t.numel()];
                for (int i = 0; i < v.length; i++) v[i] = (float) (0.05 * (2 * rnd.nextDouble() - 1));
                t.copyFrom(v);
            }
            boolean[][][][] masks = new boolean[config.layers()][BertNames.Slot.values().length][][];
            for (int l = 0; l < masks.length; l++)
                for (BertNames.Slot slot : BertNames.Slot.values()) {
                    Tensor w = host.slotWeight(l, slot);
                    boolean[][] m = masks[l][slot.ordinal()] = new boolean[(int) (w.dim(0) / BlockSparseWeight.BLOCK)][(int) (w.dim(1) / BlockSparseWeight.BLOCK)];
                    for (boolean[] row : m) for (int j = 0; j < row.length; j++) row[j] = rnd.nextBoolean();
                }
            host.setBlockMasks(masks);
            try (BertModel m = host.copyTo(gpu)) {
                var slots = BlockFormats.choose(gpu, m, 4096);
                for (var sl : slots)
                    if (sl.layer() == 0)
                        System.out.printf(Locale.ROOT, "format_layer0_%s: block-sparse %.3f ms, dense %.3f ms -> %s%n",
                                BertNames.slot(0, sl.slot()), sl.sparseMs(), sl.denseMs(), sl.dense() ? "dense" : "block-sparse");
                System.out.println("formats_bertbase_50pct_blocks: " + BlockFormats.summary(slots));
            }
        }
    }

    private Tensor up(CudaBackend gpu, TensorScope h, TensorAllocator d, long... shape) {
        Tensor t = h.allocate(DType.F32, shape);
        float[] v = new float[(int) t.numel()];
        for (int i = 0; i < v.length; i++) v[i] = (float) (2 * rnd.nextDouble() - 1);
        return gpu.copyOf(t.copyFrom(v), d);
    }
}
