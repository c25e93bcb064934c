package dev.topa.harness;

import static dev.topa.harness.Check.GEMM;

import dev.topa.backend.Backend;
import dev.topa.tensor.Tensor;
import java.util.ArrayList;
import java.util.List;

/** gemm (every transpose, alpha, beta, bias) and gemmLowRank (a rank-r term appended along K). */
final class GemmOps implements OpFamily {
    @Override
    public String name() {
        return "gemm";
    }

    /** The linear layers' shapes (in, out) of MiniLM and BERT-base. */
    static final int[][] BERT_SHAPES = {{384, 384}, {384, 1536}, {1536, 384}, {768, 768}, {768, 3072}, {3072, 768}};

    @Override
    public List<OpCase> cases() {
        List<OpCase> all = new ArrayList<>();
        int[][] small = {{1, 1, 1}, {7, 33, 129}, {33, 7, 1}, {129, 129, 33}, {1, 768, 384}, {15, 65, 17},
                // LoRA's rank-r shapes (the skinny kernels): [M, r] outputs and sums over 300+ tokens
                {300, 8, 96}, {8, 300, 96}, {300, 24, 65}, {24, 130, 300}, {130, 8, 300}, {513, 32, 77}};
        for (int[] s : small)
            for (int t = 0; t < 4; t++) all.add(gemm(s[0], s[1], s[2], (t & 1) != 0, (t & 2) != 0));
        for (int[] s : new int[][] {{128, 768, 768}, {128, 3072, 768}, {128, 768, 3072}}) {
            all.add(gemm(s[0], s[1], s[2], false, true));  // linear forward
            all.add(gemm(s[0], s[1], s[2], false, false)); // backward dX = dY W
            all.add(gemm(s[0], s[1], s[2], true, false));  // backward dW = dY^T X
        }
        for (int[] s : new int[][] {{1, 1, 1, 1}, {7, 33, 19, 4}, {130, 200, 600, 16}, {33, 65, 513, 3}})
            for (boolean tb : new boolean[] {true, false}) all.add(lowRank(s[0], s[1], s[2], s[3], tb));
        return all;
    }

    private OpCase gemm(int m, int n, int k, boolean tA, boolean tB) {
        String name = "M=" + m + " N=" + n + " K=" + k + (tA ? " A^T" : "") + (tB ? " B^T" : "");
        return new OpCase(name(), name, ws -> {
            Backend be = ws.backend();
            Tensor ta = ws.f32(ws.random(m * k), tA ? new long[] {k, m} : new long[] {m, k});
            Tensor tb = ws.f32(ws.random(k * n), tB ? new long[] {n, k} : new long[] {k, n});
            Tensor bias = ws.f32(ws.random(n), n);
            double[] a = ws.values(ta), b = ws.values(tb), bd = ws.values(bias);
            Tensor c = ws.poisoned(m, n); // beta = 0 with bias: C is poisoned and must not be read
            be.gemm(tA, tB, 1f, ta, tb, 0f, c, bias);
            ws.close(name + " beta=0 +bias", Reference.gemm(tA, tB, m, n, k, 1, a, b, 0, null, bd), c, GEMM);
            Tensor c2 = ws.f32(ws.random(m * n), m, n); // alpha, beta != 0: C is an input
            double[] c0 = ws.values(c2);
            be.gemm(tA, tB, 1.3f, ta, tb, 0.7f, c2, null);
            ws.close(name + " alpha=1.3 beta=0.7", Reference.gemm(tA, tB, m, n, k, 1.3, a, b, 0.7, c0, null), c2, GEMM);
            Tensor c3 = ws.poisoned(m, n); // beta = 0 without bias (the skinny kernels' path): C never read
            be.gemm(tA, tB, 0.5f, ta, tb, 0f, c3, null);
            ws.close(name + " beta=0", Reference.gemm(tA, tB, m, n, k, 0.5, a, b, 0, null, null), c3, GEMM);
        });
    }

    /** C = A op(B) + s A2 op(B2) + beta C + bias: the LoRA product's one pass over C. */
    private OpCase lowRank(int m, int n, int k, int r, boolean tB) {
        String name = "lowRank M=" + m + " N=" + n + " K=" + k + " r=" + r + (tB ? " B^T" : "");
        return new OpCase(name(), name, ws -> {
            Tensor a = ws.f32(ws.random(m * k), m, k), b = tB ? ws.f32(ws.random(n * k), n, k) : ws.f32(ws.random(k * n), k, n);
            Tensor a2 = ws.f32(ws.random(m * r), m, r), b2 = tB ? ws.f32(ws.random(n * r), n, r) : ws.f32(ws.random(r * n), r, n);
            Tensor bias = ws.f32(ws.random(n), n), c = ws.f32(ws.random(m * n), m, n);
            double[] c0 = ws.values(c);
            ws.backend().gemmLowRank(tB, a, b, a2, 0.75f, tB, b2, 0.5f, c, bias);
            double[] ref = Reference.add(Reference.gemm(false, tB, m, n, k, 1, ws.values(a), ws.values(b), 0.5, c0, ws.values(bias)),
                    Reference.gemm(false, tB, m, n, r, 0.75, ws.values(a2), ws.values(b2), 0, null, null));
            ws.close(name, ref, c, GEMM);
        });
    }

    @Override
    public List<OpTiming> timings(int tokens) {
        List<OpTiming> all = new ArrayList<>();
        for (int[] kn : BERT_SHAPES) {
            int k = kn[0], n = kn[1];
            all.add(new OpTiming(name(), tokens + "x" + k + "x" + n, ws -> {
                Tensor x = ws.f32(ws.random(tokens * k), tokens, k), w = ws.f32(ws.random(n * k), n, k), y = ws.poisoned(tokens, n);
                return OpTiming.Work.flops(2.0 * tokens * k * n, () -> ws.backend().gemm(false, true, 1f, x, w, 0f, y, null));
            }));
        }
        return all;
    }
}
