package dev.topa.backend;

import static dev.topa.backend.Harness.asDouble;
import static dev.topa.backend.Harness.assertClose;
import static dev.topa.backend.Harness.assertGradient;
import static dev.topa.backend.Harness.dot;
import static dev.topa.backend.Harness.f32;
import static dev.topa.backend.Harness.i32;
import static dev.topa.backend.Harness.minus;
import static dev.topa.backend.Harness.onEveryBackend;
import static dev.topa.backend.Harness.poisoned;
import static dev.topa.backend.Harness.random;
import static dev.topa.backend.Harness.uniform;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.topa.tensor.DType;
import dev.topa.tensor.Tensor;
import java.util.ArrayList;
import java.util.List;
import java.util.stream.Stream;
import org.junit.jupiter.api.DynamicTest;
import org.junit.jupiter.api.TestFactory;

/**
 * Every backend op against the float64 reference, every backward against finite differences.
 * Bounds (normwise relative error): float32 accumulation over K terms gives ~sqrt(K) * 6e-8, so
 * 2e-5 covers GEMMs and attention up to K = 3072; elementwise/row ops 1e-5; exact sums 1e-6;
 * gradients 1e-4 (float32 backward vs float64 central differences).
 */
class BackendOpsTest {
    static final double GEMM_BOUND = 2e-5, ROW_BOUND = 1e-5, EXACT_BOUND = 1e-6, GRAD_BOUND = 1e-4;

    // ------------------------------------------------------------------ GEMM

    @TestFactory
    Stream<DynamicTest> gemmForward() {
        List<Stream<DynamicTest>> all = new ArrayList<>();
        int[][] small = {{1, 1, 1}, {7, 33, 129}, {33, 7, 1}, {129, 129, 33}, {1, 768, 384}, {15, 65, 17},
                // LoRA's rank-r shapes (the skinny kernels): [M, r] outputs and sums over 300+ tokens
                {300, 8, 96}, {8, 300, 96}, {300, 24, 65}, {24, 130, 300}, {130, 8, 300}, {513, 32, 77}};
        int[][] bert = {{128, 768, 768}, {128, 3072, 768}, {128, 768, 3072}};
        for (int[] s : small)
            for (int t = 0; t < 4; t++) all.add(gemmCase(s[0], s[1], s[2], (t & 1) != 0, (t & 2) != 0));
        for (int[] s : bert) {
            all.add(gemmCase(s[0], s[1], s[2], false, true));   // linear forward
            all.add(gemmCase(s[0], s[1], s[2], false, false));  // backward dX = dY W
            all.add(gemmCase(s[0], s[1], s[2], true, false));   // backward dW = dY^T X
        }
        return all.stream().flatMap(x -> x);
    }

    private Stream<DynamicTest> gemmCase(int m, int n, int k, boolean tA, boolean tB) {
        String name = "gemm M=" + m + " N=" + n + " K=" + k + (tA ? " A^T" : "") + (tB ? " B^T" : "");
        return onEveryBackend(name, (be, s, rnd) -> {
            double[] a = random(rnd, m * k), b = random(rnd, k * n), bias = random(rnd, n), c0 = random(rnd, m * n);
            Tensor ta = f32(s, a, tA ? new long[] {k, m} : new long[] {m, k});
            Tensor tb = f32(s, b, tB ? new long[] {n, k} : new long[] {k, n});
            Tensor tbias = f32(s, bias, n);
            // beta = 0 with bias: C is poisoned and must not be read
            Tensor c = poisoned(s, m, n);
            be.gemm(tA, tB, 1f, ta, tb, 0f, c, tbias);
            assertClose(name + " beta=0 +bias", Reference.gemm(tA, tB, m, n, k, 1, asDouble(ta), asDouble(tb), 0, null,
                    asDouble(tbias)), c, GEMM_BOUND);
            // alpha, beta != 0: C is an input
            Tensor c2 = f32(s, c0, m, n);
            double[] c0f = asDouble(c2);
            be.gemm(tA, tB, 1.3f, ta, tb, 0.7f, c2, null);
            assertClose(name + " alpha=1.3 beta=0.7", Reference.gemm(tA, tB, m, n, k, 1.3, asDouble(ta), asDouble(tb),
                    0.7, c0f, null), c2, GEMM_BOUND);
            Tensor c3 = poisoned(s, m, n); // beta = 0 without bias (the skinny kernels' path): C never read
            be.gemm(tA, tB, 0.5f, ta, tb, 0f, c3, null);
            assertClose(name + " beta=0", Reference.gemm(tA, tB, m, n, k, 0.5, asDouble(ta), asDouble(tb), 0, null, null), c3,
                    GEMM_BOUND);
        });
    }

    @TestFactory
    Stream<DynamicTest> linearForwardPackedWeight() {
        int[][] shapes = {{1, 1, 1}, {7, 33, 129}, {129, 65, 7}, {128, 1152, 384}, {33, 384, 1536}, {5, 100, 1100}};
        return Stream.of(shapes).flatMap(sh -> {
            int m = sh[0], n = sh[1], k = sh[2];
            String name = "linearForward packed M=" + m + " N=" + n + " K=" + k;
            return onEveryBackend(name, (be, s, rnd) -> {
                Tensor x = f32(s, random(rnd, m * k), m, k), w = f32(s, random(rnd, n * k), n, k), b = f32(s, random(rnd, n), n);
                PackedWeight pw = PackedWeight.pack(be, w, s);
                Tensor y = poisoned(s, m, n);
                pw.forward(be, y, x, b);
                assertClose(name, Reference.gemm(false, true, m, n, k, 1, asDouble(x), asDouble(w), 0, null, asDouble(b)), y,
                        GEMM_BOUND);
            });
        });
    }

    @TestFactory
    Stream<DynamicTest> linearBackward() {
        int[][] shapes = {{1, 1, 1}, {7, 33, 19}, {40, 200, 130}};
        return Stream.of(shapes).flatMap(sh -> {
            int m = sh[0], n = sh[1], k = sh[2];
            return onEveryBackend("linearBackward M=" + m + " N=" + n + " K=" + k, (be, s, rnd) -> {
                Tensor x = f32(s, random(rnd, m * k), m, k), w = f32(s, random(rnd, n * k), n, k);
                Tensor b = f32(s, random(rnd, n), n), dy = f32(s, random(rnd, m * n), m, n);
                double[] wy = asDouble(dy), xd = asDouble(x), wd = asDouble(w), bd = asDouble(b);
                double[] dw0 = random(rnd, n * k), db0 = random(rnd, n);
                Tensor dx = poisoned(s, m, k), dw = f32(s, dw0, n, k), db = f32(s, db0, n);
                dw0 = asDouble(dw);
                db0 = asDouble(db);
                new DenseWeight(w).backward(be, s, dx, false, dy, x, null, null, Dropout.NONE, new LinearWeight.Gradients(dw, db, null, null));
                // loss = sum(dy * (x W^T + b)); each input's gradient against central differences
                assertGradient("dx", v -> dot(wy, Reference.gemm(false, true, m, n, k, 1, v, wd, 0, null, bd)), xd,
                        dx.toFloatArray(), rnd, 48, GRAD_BOUND);
                assertGradient("dW (+=)", v -> dot(wy, Reference.gemm(false, true, m, n, k, 1, xd, v, 0, null, bd)), wd,
                        minus(dw.toFloatArray(), dw0), rnd, 48, GRAD_BOUND);
                assertGradient("dbias (+=)", v -> dot(wy, Reference.gemm(false, true, m, n, k, 1, xd, wd, 0, null, v)), bd,
                        minus(db.toFloatArray(), db0), rnd, 48, GRAD_BOUND);
            });
        });
    }

    // ------------------------------------------------------------------ LoRA

    /** float64 y = x W^T + bias + scale (x A^T) B^T. */
    static double[] loraRef(double[] x, double[] w, double[] bias, double[] a, double[] b, double scale, int m, int n, int k, int r) {
        double[] u = Reference.gemm(false, true, m, r, k, 1, x, a, 0, null, null);
        double[] y = Reference.gemm(false, true, m, n, k, 1, x, w, 0, null, bias);
        double[] d = Reference.gemm(false, true, m, n, r, scale, u, b, 0, null, null);
        for (int i = 0; i < y.length; i++) y[i] += d[i];
        return y;
    }

    @TestFactory
    Stream<DynamicTest> lora() {
        // {M, N(out), K(in), r}: K = 600 makes the weight's columns end inside the second K slice
        int[][] shapes = {{1, 1, 1, 1}, {7, 33, 19, 4}, {130, 200, 600, 16}, {128, 768, 768, 8}, {33, 65, 513, 3}};
        return Stream.of(shapes).flatMap(sh -> {
            int m = sh[0], n = sh[1], k = sh[2], r = sh[3];
            String name = "lora M=" + m + " out=" + n + " in=" + k + " r=" + r;
            return onEveryBackend(name, (be, s, rnd) -> {
                float scale = 2f / r;
                Tensor x = f32(s, random(rnd, m * k), m, k), w = f32(s, random(rnd, n * k), n, k), bias = f32(s, random(rnd, n), n);
                Tensor a = f32(s, random(rnd, r * k), r, k), b = f32(s, random(rnd, n * r), n, r);
                double[] xd = asDouble(x), wd = asDouble(w), bd = asDouble(bias), ad = asDouble(a), bbd = asDouble(b);
                Tensor y = poisoned(s, m, n), u = poisoned(s, m, r);
                new DenseWeight(w).productWithFactor(be, y, u, x, bias, new LinearWeight.LowRank(a, b, scale));
                assertClose(name + " y", loraRef(xd, wd, bd, ad, bbd, scale, m, n, k, r), y, GEMM_BOUND);
                assertClose(name + " u", Reference.gemm(false, true, m, r, k, 1, xd, ad, 0, null, null), u, GEMM_BOUND);
                if ((long) m * n * k > 2_000_000) return; // backward on the smaller shapes (FD cost)
                Tensor dy = f32(s, random(rnd, m * n), m, n);
                double[] wy = asDouble(dy), a0 = random(rnd, r * k), b0 = random(rnd, n * r), bias0 = random(rnd, n);
                Tensor dx = poisoned(s, m, k), dA = f32(s, a0, r, k), dB = f32(s, b0, n, r), dbias = f32(s, bias0, n);
                a0 = asDouble(dA);
                b0 = asDouble(dB);
                bias0 = asDouble(dbias);
                Tensor uKept = u;
                new DenseWeight(w).backward(be, s, dx, false, dy, x, uKept, new LinearWeight.LowRank(a, b, scale), Dropout.NONE,
                        new LinearWeight.Gradients(null, dbias, dA, dB));
                assertGradient(name + " dx", v -> dot(wy, loraRef(v, wd, bd, ad, bbd, scale, m, n, k, r)), xd, dx.toFloatArray(),
                        rnd, 48, GRAD_BOUND);
                assertGradient(name + " dA (+=)", v -> dot(wy, loraRef(xd, wd, bd, v, bbd, scale, m, n, k, r)), ad,
                        minus(dA.toFloatArray(), a0), rnd, 48, GRAD_BOUND);
                assertGradient(name + " dB (+=)", v -> dot(wy, loraRef(xd, wd, bd, ad, v, scale, m, n, k, r)), bbd,
                        minus(dB.toFloatArray(), b0), rnd, 48, GRAD_BOUND);
                assertGradient(name + " dbias (+=)", v -> dot(wy, loraRef(xd, wd, v, ad, bbd, scale, m, n, k, r)), bd,
                        minus(dbias.toFloatArray(), bias0), rnd, 48, GRAD_BOUND);
            });
        });
    }

    // ------------------------------------------------------------------ layernorm

    @TestFactory
    Stream<DynamicTest> layernorm() {
        int[][] shapes = {{1, 1}, {1, 7}, {7, 33}, {129, 129}, {256, 768}};
        return Stream.of(shapes).flatMap(sh -> Stream.of(0, 1, 2).flatMap(mode -> {
            int rows = sh[0], cols = sh[1];
            String name = "layernorm " + rows + "x" + cols + (mode == 0 ? "" : mode == 1 ? " +residual" : " +residual+sum");
            return onEveryBackend(name, (be, s, rnd) -> {
                float eps = 1e-5f;
                Tensor x = f32(s, random(rnd, rows * cols), rows, cols);
                Tensor r = mode == 0 ? null : f32(s, random(rnd, rows * cols), rows, cols);
                Tensor g = f32(s, uniform(rnd, cols, 0.5, 1.5), cols), bt = f32(s, random(rnd, cols), cols);
                Tensor out = poisoned(s, rows, cols), mean = poisoned(s, rows), rstd = poisoned(s, rows);
                Tensor sum = mode == 2 ? poisoned(s, rows, cols) : null;
                be.layernormForward(out, mean, rstd, sum, x, r, g, bt, eps);
                double[] h = Reference.add(asDouble(x), r == null ? null : asDouble(r));
                double[] gd = asDouble(g), bd = asDouble(bt);
                assertClose(name + " out", Reference.layernorm(h, gd, bd, rows, cols, eps), out, ROW_BOUND);
                if (sum != null) assertClose(name + " sum", h, sum, EXACT_BOUND);
                // backward on the smaller shapes; over one column LN is constant (= beta) and its dx is
                // float rounding amplified by 1/sqrt(eps), nothing a bound could hold
                if (rows * cols > 100_000 || cols == 1) return;
                // backward, with dx accumulating into an existing gradient (the residual branch)
                Tensor lnIn = sum != null ? sum : r != null ? f32(s, h, rows, cols) : x;
                Tensor dy = f32(s, random(rnd, rows * cols), rows, cols);
                double[] wy = asDouble(dy);
                double[] dx0 = random(rnd, rows * cols), dg0 = random(rnd, cols), db0 = random(rnd, cols);
                Tensor dx = f32(s, dx0, rows, cols), dg = f32(s, dg0, cols), db = f32(s, db0, cols);
                dx0 = asDouble(dx);
                dg0 = asDouble(dg);
                db0 = asDouble(db);
                be.layernormBackward(dx, dg, db, dy, lnIn, mean, rstd, g, true);
                assertGradient(name + " dx (+=)", v -> dot(wy, Reference.layernorm(v, gd, bd, rows, cols, eps)), h.clone(),
                        minus(dx.toFloatArray(), dx0), rnd, 64, GRAD_BOUND);
                assertGradient(name + " dgamma (+=)", v -> dot(wy, Reference.layernorm(h, v, bd, rows, cols, eps)), gd,
                        minus(dg.toFloatArray(), dg0), rnd, 64, GRAD_BOUND);
                assertGradient(name + " dbeta (+=)", v -> dot(wy, Reference.layernorm(h, gd, v, rows, cols, eps)), bd,
                        minus(db.toFloatArray(), db0), rnd, 64, GRAD_BOUND);
                // overwrite mode
                Tensor dx2 = poisoned(s, rows, cols);
                be.layernormBackward(dx2, null, null, dy, lnIn, mean, rstd, g, false);
                assertClose(name + " dx (overwrite)", minus(asDouble(dx), dx0), dx2, 10 * ROW_BOUND);
            });
        }));
    }

    // ------------------------------------------------------------------ GELU

    @TestFactory
    Stream<DynamicTest> biasGelu() {
        int[][] shapes = {{1, 1}, {7, 33}, {129, 1536}};
        return Stream.of(shapes).flatMap(sh -> Stream.of(false, true).flatMap(withBias -> {
            int rows = sh[0], cols = sh[1];
            String name = "biasGelu " + rows + "x" + cols + (withBias ? " +bias" : "");
            return onEveryBackend(name, (be, s, rnd) -> {
                // [-6, 6] reaches both tails, where a tanh approximation or a poor erf would show
                Tensor x = f32(s, uniform(rnd, rows * cols, -6, 6), rows, cols);
                Tensor b = withBias ? f32(s, random(rnd, cols), cols) : null;
                double[] xd = asDouble(x), bd = b == null ? null : asDouble(b);
                Tensor out = poisoned(s, rows, cols);
                be.biasGeluForward(out, x, b);
                assertClose(name, Reference.biasGelu(xd, bd, rows, cols), out, ROW_BOUND);
                Tensor dy = f32(s, random(rnd, rows * cols), rows, cols);
                double[] wy = asDouble(dy), db0 = random(rnd, cols);
                Tensor dx = poisoned(s, rows, cols), db = b == null ? null : f32(s, db0, cols);
                if (db != null) db0 = asDouble(db);
                be.biasGeluBackward(dx, db, dy, x, b);
                assertGradient(name + " dx", v -> dot(wy, Reference.biasGelu(v, bd, rows, cols)), xd, dx.toFloatArray(),
                        rnd, 64, GRAD_BOUND);
                if (b != null)
                    assertGradient(name + " dbias (+=)", v -> dot(wy, Reference.biasGelu(xd, v, rows, cols)), bd,
                            minus(db.toFloatArray(), db0), rnd, 64, GRAD_BOUND);
            });
        }));
    }

    // ------------------------------------------------------------------ softmax

    @TestFactory
    Stream<DynamicTest> softmax() {
        int[][] shapes = {{1, 1}, {7, 33}, {129, 129}, {33, 512}};
        return Stream.of(shapes).flatMap(sh -> {
            int rows = sh[0], cols = sh[1];
            String name = "softmax " + rows + "x" + cols;
            return onEveryBackend(name, (be, s, rnd) -> {
                Tensor x = f32(s, uniform(rnd, rows * cols, -8, 8), rows, cols);
                double[] xd = asDouble(x);
                Tensor y = poisoned(s, rows, cols);
                be.softmaxForward(y, x);
                assertClose(name, Reference.softmax(xd, rows, cols), y, ROW_BOUND);
                Tensor dy = f32(s, random(rnd, rows * cols), rows, cols), dx = poisoned(s, rows, cols);
                double[] wy = asDouble(dy);
                be.softmaxBackward(dx, dy, y);
                assertGradient(name + " dx", v -> dot(wy, Reference.softmax(v, rows, cols)), xd, dx.toFloatArray(), rnd,
                        64, GRAD_BOUND);
            });
        });
    }

    // ------------------------------------------------------------------ attention

    @TestFactory
    Stream<DynamicTest> attention() {
        int[][] cases = {{1, 1, 1, 1, 0}, {2, 7, 3, 4, 1}, {3, 33, 2, 8, 1}, {1, 129, 1, 7, 0}, {2, 128, 12, 64, 1}};
        return Stream.of(cases).flatMap(cs -> {
            int bsz = cs[0], seq = cs[1], heads = cs[2], hd = cs[3];
            boolean masked = cs[4] == 1;
            String name = "attention B=" + bsz + " S=" + seq + " H=" + heads + " D=" + hd + (masked ? " +padding" : "");
            return onEveryBackend(name, (be, s, rnd) -> {
                int c = heads * hd;
                float scale = (float) (1 / Math.sqrt(hd));
                Tensor qkv = f32(s, Harness.uniform(rnd, bsz * seq * 3 * c, -2, 2), bsz, seq, 3 * c);
                int[] mask = null;
                if (masked) { // sequence b has length seq - b (at least 1): real tokens first, then padding
                    mask = new int[bsz * seq];
                    for (int b = 0; b < bsz; b++)
                        for (int t = 0; t < seq; t++) mask[b * seq + t] = t < Math.max(1, seq - 3 * b - 1) ? 1 : 0;
                }
                final int[] maskF = mask;
                Tensor tmask = mask == null ? null : i32(s, mask, bsz, seq);
                double[] qd = asDouble(qkv);
                double[] refProbs = new double[bsz * heads * seq * seq];
                double[] ref = Reference.attention(qd, mask, bsz, seq, heads, hd, scale, refProbs);
                Tensor out = poisoned(s, bsz, seq, c), probs = poisoned(s, bsz, heads, seq, seq);
                be.attentionForward(out, probs, qkv, tmask, heads, scale);
                assertClose(name + " out", ref, out, GEMM_BOUND);
                assertClose(name + " probs", refProbs, probs, ROW_BOUND);
                Tensor out2 = poisoned(s, bsz, seq, c);
                be.attentionForward(out2, null, qkv, tmask, heads, scale); // inference: no probs kept
                assertClose(name + " out without probs", ref, out2, GEMM_BOUND);
                Tensor dout = f32(s, random(rnd, bsz * seq * c), bsz, seq, c), dqkv = poisoned(s, bsz, seq, 3 * c);
                double[] wy = asDouble(dout);
                be.attentionBackward(dqkv, dout, probs, qkv, null, heads, scale, Dropout.NONE);
                int samples = bsz * seq * c > 100_000 ? 12 : 64;
                assertGradient(name + " dqkv", v -> dot(wy, Reference.attention(v, maskF, bsz, seq, heads, hd, scale, null)),
                        qd, dqkv.toFloatArray(), rnd, samples, GRAD_BOUND);
                // training path: probabilities recomputed in backward, with and without dropout on them
                for (Dropout drop : new Dropout[] {Dropout.NONE, new Dropout(0.25, rnd.nextInt())}) {
                    String dn = name + (drop.active() ? " dropout 0.25" : "") + " recomputed probs";
                    Tensor out3 = poisoned(s, bsz, seq, c);
                    be.attentionForward(out3, null, qkv, tmask, heads, scale, drop);
                    assertClose(dn + " out", Reference.attention(qd, mask, bsz, seq, heads, hd, scale, null, drop), out3, GEMM_BOUND);
                    Tensor dqkv2 = poisoned(s, bsz, seq, 3 * c);
                    be.attentionBackward(dqkv2, dout, null, qkv, tmask, heads, scale, drop);
                    assertGradient(dn + " dqkv", v -> dot(wy, Reference.attention(v, maskF, bsz, seq, heads, hd, scale, null, drop)),
                            qd, dqkv2.toFloatArray(), rnd, samples, GRAD_BOUND);
                }
            });
        });
    }

    // ------------------------------------------------------------------ bf16 GEMM (frozen weights)

    @TestFactory
    Stream<DynamicTest> gemmBf16() {
        int[][] cases = {{1, 1, 1}, {13, 37, 29}, {100, 70, 801}, {97, 33, 384}, {25, 64, 1}};
        return Stream.of(cases).flatMap(cs -> Stream.of(true, false).flatMap(tr -> {
            int m = cs[0], n = cs[1], k = cs[2];
            String name = "gemmBf16 " + m + "x" + n + "x" + k + (tr ? " W^T" : " W");
            return onEveryBackend(name, (be, s, rnd) -> {
                // W [out, in]: op(B) = W^T needs W [n, k]; op(B) = W needs W [k, n]
                Tensor w = tr ? f32(s, random(rnd, n * k), n, k) : f32(s, random(rnd, k * n), k, n);
                Tensor a = f32(s, random(rnd, m * k), m, k), bias = f32(s, random(rnd, n), n);
                double[] c0 = random(rnd, m * n);
                Tensor c = f32(s, c0, m, n);
                var packed = Bf16Weight.pack(be, w, tr, s);
                Bf16Weight.gemm(be, 0.7f, a, packed, 0.3f, c, bias, null, 0f, false, null);
                double[] ad = rounded(a), wd = rounded(w);
                double[] ref = Reference.gemm(false, tr, m, n, k, 0.7, ad, wd, 0.3, c0, asDouble(bias));
                assertClose(name, ref, c, GEMM_BOUND);
                Tensor c2 = poisoned(s, m, n);
                Bf16Weight.gemm(be, 1f, a, packed, 0f, c2, null, null, 0f, false, null); // beta 0 never reads C
                assertClose(name + " beta 0", Reference.gemm(false, tr, m, n, k, 1, ad, wd, 0, null, null), c2, GEMM_BOUND);
                // a rank-3 fp32 term in the same pass (LoRA): B2 [n, 3] (transB2) or [3, n]
                Tensor a2 = f32(s, random(rnd, m * 3), m, 3), b2 = tr ? f32(s, random(rnd, n * 3), n, 3) : f32(s, random(rnd, 3 * n), 3, n);
                Tensor c3 = f32(s, c0, m, n);
                Bf16Weight.gemm(be, 0.7f, a, packed, 0.3f, c3, bias, a2, 1.5f, tr, b2);
                double[] low = Reference.gemm(false, tr, m, n, 3, 0.7 * 1.5, asDouble(a2), asDouble(b2), 0, null, null);
                assertClose(name + " + low rank", Reference.add(ref, low), c3, GEMM_BOUND);
            });
        }));
    }

    @TestFactory
    Stream<DynamicTest> loraOnABf16BaseWithItsFactor() {
        int[][] cases = {{13, 37, 29, 3}, {97, 64, 384, 8}, {40, 48, 96, 20}};
        return Stream.of(cases).flatMap(cs -> {
            int m = cs[0], out = cs[1], in = cs[2], r = cs[3];
            String name = "loraForwardBf16 / loraInputGradientBf16 " + m + "x" + out + "x" + in + " r" + r;
            return onEveryBackend(name, (be, s, rnd) -> {
                Tensor w = f32(s, random(rnd, out * in), out, in), a = f32(s, random(rnd, r * in), r, in), b = f32(s, random(rnd, out * r), out, r);
                Tensor x = f32(s, random(rnd, m * in), m, in), bias = f32(s, random(rnd, out), out);
                Tensor y = poisoned(s, m, out), u = poisoned(s, m, r);
                Bf16Weight half = Bf16Weight.pack(be, w, s, true), forwardOnly = Bf16Weight.pack(be, w, s, false);
                LinearWeight.LowRank lora = new LinearWeight.LowRank(a, b, 0.75f);
                half.productWithFactor(be, y, u, x, bias, lora);
                double[] uRef = Reference.gemm(false, true, m, r, in, 1, asDouble(x), asDouble(a), 0, null, null);
                assertClose(name + " u", uRef, u, GEMM_BOUND);
                double[] yRef = Reference.add(Reference.gemm(false, true, m, out, in, 1, rounded(x), rounded(w), 0, null, asDouble(bias)),
                        Reference.gemm(false, true, m, out, r, 0.75, uRef, asDouble(b), 0, null, null));
                assertClose(name + " y", yRef, y, GEMM_BOUND);
                // input gradient: g = dy B, dx = dy W + s g A, overwritten and accumulated
                Tensor dy = f32(s, random(rnd, m * out), m, out), g = poisoned(s, m, r), dx = poisoned(s, m, in);
                half.inputProductWithFactor(be, dx, false, g, dy, lora);
                double[] gRef = Reference.gemm(false, false, m, r, out, 1, asDouble(dy), asDouble(b), 0, null, null);
                assertClose(name + " g", gRef, g, GEMM_BOUND);
                double[] dxRef = Reference.add(Reference.gemm(false, false, m, in, out, 1, rounded(dy), rounded(w), 0, null, null),
                        Reference.gemm(false, false, m, in, r, 0.75, gRef, asDouble(a), 0, null, null));
                assertClose(name + " dx", dxRef, dx, GEMM_BOUND);
                double[] dx0 = random(rnd, m * in);
                Tensor dxAcc = f32(s, dx0, m, in);
                half.inputProductWithFactor(be, dxAcc, true, g, dy, lora);
                assertClose(name + " dx accumulated", Reference.add(dxRef, asDouble(f32(s, dx0, m, in))), dxAcc, GEMM_BOUND);
                var e = assertThrows(IllegalArgumentException.class,
                        () -> half.productWithFactor(be, y, poisoned(s, m, r + 1), x, bias, lora));
                assertTrue(e.getMessage().startsWith("loraForwardBf16:"), e.getMessage());
                var e2 = assertThrows(IllegalArgumentException.class, // B [in, r] where [out, r] belongs
                        () -> half.inputProductWithFactor(be, dx, false, g, dy, new LinearWeight.LowRank(a, f32(s, random(rnd, in * r), in, r), 0.75f)));
                assertTrue(e2.getMessage().startsWith("loraInputGradientBf16: B"), e2.getMessage());
                var e3 = assertThrows(UnsupportedOperationException.class, // a weight packed for inference has no input gradient
                        () -> forwardOnly.inputProductWithFactor(be, dx, false, g, dy, lora));
                assertTrue(e3.getMessage().contains("no input gradient"), e3.getMessage());
            });
        });
    }

    // ------------------------------------------------------------------ block-sparse linear

    @TestFactory
    Stream<DynamicTest> blockSparseLinear() {
        double[][] cases = {{37, 64, 96, 0.5}, {100, 96, 64, 0.3}, {13, 32, 32, 1.0}, {200, 128, 160, 0.2}, {5, 64, 64, 0.0}};
        return Stream.of(cases).flatMap(cs -> {
            int m = (int) cs[0], out = (int) cs[1], in = (int) cs[2];
            double density = cs[3];
            String name = "blockSparse M=" + m + " " + out + "x" + in + " density " + density;
            return onEveryBackend(name, (be, s, rnd) -> {
                int ob = out / 32, ib = in / 32, r = 3;
                boolean[][] mask = new boolean[ob][ib];
                for (int i = 0; i < ob; i++) for (int j = 0; j < ib; j++) mask[i][j] = rnd.nextDouble() < density;
                double[] wd = random(rnd, out * in);
                for (int o = 0; o < out; o++) for (int i = 0; i < in; i++) if (!mask[o / 32][i / 32]) wd[o * in + i] = 0;
                Tensor w = f32(s, random(rnd, out * in), out, in); // masked-out values must not matter: fill them with noise
                float[] wv = w.toFloatArray();
                for (int o = 0; o < out; o++) for (int i = 0; i < in; i++) if (mask[o / 32][i / 32]) wv[o * in + i] = (float) wd[o * in + i];
                w.copyFrom(wv);
                // forward: y = x Wm^T + 0.5 y0 + bias + 1.5 u B^T
                Tensor x = f32(s, random(rnd, m * in), m, in), bias = f32(s, random(rnd, out), out);
                Tensor u = f32(s, random(rnd, m * r), m, r), bt = f32(s, random(rnd, r * out), r, out);
                double[] y0 = random(rnd, m * out);
                Tensor y = f32(s, y0, m, out);
                var fwd = BlockSparseWeight.pack(be, w, mask, false, s, false);
                BlockSparseWeight.linear(be, y, x, fwd, bias, 0.5f, u, bt, 1.5f, false);
                double[] ref = Reference.gemm(false, true, m, out, in, 1, asDouble(x), masked(w, mask), 0.5, asDouble(f32(s, y0, m, out)),
                        asDouble(bias));
                ref = Reference.add(ref, Reference.gemm(false, false, m, out, r, 1.5, asDouble(u), asDouble(bt), 0, null, null));
                assertClose(name + " forward", ref, y, GEMM_BOUND);
                // input gradient: dx = dy Wm (beta 0: dx poisoned, never read)
                Tensor dy = f32(s, random(rnd, m * out), m, out), dx = poisoned(s, m, in);
                var bwd = BlockSparseWeight.pack(be, w, mask, true, s, false);
                BlockSparseWeight.linear(be, dx, dy, bwd, null, 0f, null, null, 0f, false);
                assertClose(name + " input gradient", Reference.gemm(false, false, m, in, out, 1, asDouble(dy), masked(w, mask), 0,
                        null, null), dx, GEMM_BOUND);
            });
        });
    }

    /**
     * The adapter masked like the weight: y = x (M o (W + s B A))^T (forward, per-block u) and
     * dx = dy (M o (W + s B A)) (per-block g), and the factor gradients dB = s (M o G) A^T,
     * dA^T = s ((M o G)^T B) with G = dy^T x, all against float64 over the dense masked product.
     */
    @TestFactory
    Stream<DynamicTest> blockSparseMaskedLowRank() {
        double[][] cases = {{37, 64, 96, 0.5, 3}, {100, 96, 64, 0.3, 5}, {13, 32, 32, 1.0, 1}, {70, 128, 160, 0.2, 24}};
        return Stream.of(cases).flatMap(cs -> {
            int m = (int) cs[0], out = (int) cs[1], in = (int) cs[2], r = (int) cs[4];
            double density = cs[3];
            String name = "blockSparse masked LoRA M=" + m + " " + out + "x" + in + " r " + r + " density " + density;
            return onEveryBackend(name, (be, s, rnd) -> {
                boolean[][] mask = new boolean[out / 32][in / 32];
                for (int i = 0; i < mask.length; i++) for (int j = 0; j < mask[i].length; j++) mask[i][j] = rnd.nextDouble() < density;
                Tensor w = f32(s, random(rnd, out * in), out, in), a = f32(s, random(rnd, r * in), r, in);
                Tensor b = f32(s, random(rnd, out * r), out, r), bt = f32(s, transpose(asDouble(b), out, r), r, out);
                float sc = 1.5f;
                double[] delta = Reference.gemm(false, false, out, in, r, sc, asDouble(b), asDouble(a), 0, null, null);
                double[] eff = Reference.add(asDouble(w), delta);
                for (int i = 0; i < eff.length; i++) if (!mask[i / in / 32][i % in / 32]) eff[i] = 0;
                var fwd = BlockSparseWeight.pack(be, w, mask, false, s, false);
                var bwd = BlockSparseWeight.pack(be, w, mask, true, s, false);
                Tensor x = f32(s, random(rnd, m * in), m, in), u = poisoned(s, m, in / 32 * r), y = poisoned(s, m, out);
                BlockSparseWeight.lowRank(be, u, x, a);
                BlockSparseWeight.linear(be, y, x, fwd, null, 0f, u, bt, sc, true);
                assertClose(name + " forward", Reference.gemm(false, true, m, out, in, 1, asDouble(x), eff, 0, null, null), y, GEMM_BOUND);
                Tensor dy = f32(s, random(rnd, m * out), m, out), g = poisoned(s, m, out / 32 * r), dx = poisoned(s, m, in);
                BlockSparseWeight.lowRank(be, g, dy, bt);
                BlockSparseWeight.linear(be, dx, dy, bwd, null, 0f, g, a, sc, true);
                assertClose(name + " input gradient", Reference.gemm(false, false, m, in, out, 1, asDouble(dy), eff, 0, null, null), dx,
                        GEMM_BOUND);
                double[] grad = Reference.gemm(true, false, out, in, m, 1, asDouble(dy), asDouble(x), 0, null, null); // G = dy^T x
                for (int i = 0; i < grad.length; i++) if (!mask[i / in / 32][i % in / 32]) grad[i] = 0;
                double[] d0 = random(rnd, out * r);
                Tensor dB = f32(s, d0, out, r);
                BlockSparseWeight.lowRankGradient(be, dB, dy, fwd, u, sc);
                assertClose(name + " dB", Reference.add(d0, Reference.gemm(false, true, out, r, in, sc, grad, asDouble(a), 0, null, null)), dB,
                        GEMM_BOUND);
                Tensor dAt = f32(s, new double[in * r], in, r);
                BlockSparseWeight.lowRankGradient(be, dAt, x, bwd, g, sc);
                assertClose(name + " dA^T", Reference.gemm(true, false, in, r, out, sc, grad, asDouble(b), 0, null, null), dAt, GEMM_BOUND);
            });
        });
    }

    private static double[] transpose(double[] v, int rows, int cols) {
        double[] t = new double[v.length];
        for (int i = 0; i < rows; i++) for (int j = 0; j < cols; j++) t[j * rows + i] = v[i * cols + j];
        return t;
    }

    /** W's values with everything outside the kept blocks zero: the dense "masked zeros" reference. */
    private static double[] masked(Tensor w, boolean[][] mask) {
        double[] v = asDouble(w);
        long in = w.dim(1);
        for (int i = 0; i < v.length; i++) if (!mask[(int) (i / in / 32)][(int) (i % in / 32)]) v[i] = 0;
        return v;
    }

    /** Values as bf16 holds them (round to nearest even). */
    private static double[] rounded(Tensor t) {
        float[] v = t.toFloatArray();
        double[] out = new double[v.length];
        for (int i = 0; i < v.length; i++) out[i] = dev.topa.tensor.Bf16.toFloat(dev.topa.tensor.Bf16.fromFloat(v[i]));
        return out;
    }

    // ------------------------------------------------------------------ dropout

    @TestFactory
    Stream<DynamicTest> dropout() {
        return Stream.of(1, 17, 100_003).flatMap(n -> onEveryBackend("dropout n=" + n, (be, s, rnd) -> {
            Dropout d = new Dropout(0.3, rnd.nextInt());
            double[] xd = random(rnd, n);
            Tensor x = f32(s, xd, n), out = poisoned(s, n);
            be.dropout(out, x, d, false);
            double[] ref = Reference.dropout(xd, d);
            assertClose("dropout n=" + n, ref, out, ROW_BOUND);
            // accumulate: out += dropout(x), here onto a copy of x
            Tensor acc = f32(s, xd, n);
            be.dropout(acc, x, d, true);
            assertClose("dropout accumulate n=" + n, Reference.add(xd, ref), acc, ROW_BOUND);
            // in place gives the same draw
            be.dropout(x, x, d, false);
            assertClose("dropout in place n=" + n, ref, x, ROW_BOUND);
            if (n > 100_000) {
                long kept = java.util.stream.IntStream.range(0, n).filter(i -> d.keep(i)).count();
                assertEquals(0.7, kept / (double) n, 0.01, "kept fraction at p = 0.3");
                Dropout other = new Dropout(0.3, d.key() + 1);
                long same = java.util.stream.IntStream.range(0, n).filter(i -> d.keep(i) == other.keep(i)).count();
                assertEquals(0.58, same / (double) n, 0.01, "masks of neighbouring keys agree only by chance (0.7^2 + 0.3^2)");
            }
        }));
    }

    // ------------------------------------------------------------------ embeddings

    @TestFactory
    Stream<DynamicTest> embedding() {
        // {B, S, C, vocab, positions, types, explicit position ids?}
        int[][] cases = {{1, 1, 1, 3, 1, 1, 0}, {2, 7, 33, 11, 9, 2, 1}, {4, 128, 384, 1000, 512, 2, 0}, {3, 5, 8, 4, 6, 0, 0}};
        return Stream.of(cases).flatMap(cs -> {
            int bsz = cs[0], seq = cs[1], c = cs[2], vocab = cs[3], npos = cs[4], ntypes = cs[5];
            boolean explicitPos = cs[6] == 1;
            String name = "embedding B=" + bsz + " S=" + seq + " C=" + c + " vocab=" + vocab + (ntypes == 0 ? " no types" : "")
                    + (explicitPos ? " +position ids" : "");
            return onEveryBackend(name, (be, s, rnd) -> {
                int n = bsz * seq;
                int[] ids = rnd.ints(n, 0, vocab).toArray(); // n > vocab or birthday repeats test the scatter-add
                int[] pos = explicitPos ? rnd.ints(n, 0, npos).toArray() : null;
                int[] types = ntypes == 0 ? null : rnd.ints(n, 0, ntypes).toArray();
                Tensor tids = i32(s, ids, bsz, seq), tpos = pos == null ? null : i32(s, pos, bsz, seq);
                Tensor ttypes = types == null ? null : i32(s, types, bsz, seq);
                Tensor wte = f32(s, random(rnd, vocab * c), vocab, c), wpe = f32(s, random(rnd, npos * c), npos, c);
                Tensor wtt = ntypes == 0 ? null : f32(s, random(rnd, ntypes * c), ntypes, c);
                double[] te = asDouble(wte), pe = asDouble(wpe), tt = wtt == null ? null : asDouble(wtt);
                Tensor out = poisoned(s, bsz, seq, c);
                be.embeddingForward(out, tids, tpos, ttypes, wte, wpe, wtt);
                assertClose(name, Reference.embedding(ids, pos, types, te, pe, tt, seq, c), out, EXACT_BOUND);
                Tensor dout = f32(s, random(rnd, n * c), bsz, seq, c);
                double[] wy = asDouble(dout);
                double[] g0 = random(rnd, vocab * c), p0 = random(rnd, npos * c), y0 = ntypes == 0 ? null : random(rnd, ntypes * c);
                Tensor dwte = f32(s, g0, vocab, c), dwpe = f32(s, p0, npos, c), dwtt = y0 == null ? null : f32(s, y0, ntypes, c);
                be.embeddingBackward(dwte, dwpe, dwtt, dout, tids, tpos, ttypes, wte, wpe, wtt);
                assertGradient(name + " dwte (+=)", v -> dot(wy, Reference.embedding(ids, pos, types, v, pe, tt, seq, c)), te,
                        minus(dwte.toFloatArray(), asDouble(f32(s, g0, vocab, c))), rnd, 64, GRAD_BOUND);
                assertGradient(name + " dwpe (+=)", v -> dot(wy, Reference.embedding(ids, pos, types, te, v, tt, seq, c)), pe,
                        minus(dwpe.toFloatArray(), asDouble(f32(s, p0, npos, c))), rnd, 64, GRAD_BOUND);
                if (dwtt != null)
                    assertGradient(name + " dwtt (+=)", v -> dot(wy, Reference.embedding(ids, pos, types, te, pe, v, seq, c)),
                            tt, minus(dwtt.toFloatArray(), asDouble(f32(s, y0, ntypes, c))), rnd, 64, GRAD_BOUND);
            });
        });
    }

    @TestFactory
    Stream<DynamicTest> embeddingRejectsBadIds() {
        return onEveryBackend("embedding id out of vocab", (be, s, rnd) -> {
            int[] ids = {1, 2, 3, 4, 5, 6, 7, 8};
            ids[6] = 50; // sequence 1, token 2 (S = 4)
            Tensor out = poisoned(s, 2, 4, 8);
            var e = assertThrows(IllegalArgumentException.class, () -> be.embeddingForward(out, i32(s, ids, 2, 4), null,
                    null, f32(s, random(rnd, 10 * 8), 10, 8), f32(s, random(rnd, 4 * 8), 4, 8), null));
            assertTrue(e.getMessage().contains("token 2 of sequence 1") && e.getMessage().contains("id 50"), e.getMessage());
        });
    }

    // ------------------------------------------------------------------ pooling

    @TestFactory
    Stream<DynamicTest> meanPool() {
        int[][] cases = {{1, 1, 1, 0}, {3, 7, 33, 1}, {32, 128, 384, 1}, {2, 5, 9, 0}};
        return Stream.of(cases).flatMap(cs -> {
            int bsz = cs[0], seq = cs[1], c = cs[2];
            boolean masked = cs[3] == 1;
            String name = "meanPool B=" + bsz + " S=" + seq + " C=" + c + (masked ? " +padding" : "");
            return onEveryBackend(name, (be, s, rnd) -> {
                int[] mask = null;
                if (masked) {
                    mask = new int[bsz * seq];
                    for (int b = 0; b < bsz; b++)
                        for (int t = 0; t < seq; t++) mask[b * seq + t] = t < Math.max(b == 1 ? 0 : 1, seq - 2 * b) ? 1 : 0;
                }
                final int[] m = mask;
                Tensor tmask = mask == null ? null : i32(s, mask, bsz, seq);
                Tensor x = f32(s, random(rnd, bsz * seq * c), bsz, seq, c);
                double[] xd = asDouble(x);
                Tensor out = poisoned(s, bsz, c);
                be.meanPoolForward(out, x, tmask);
                assertClose(name, Reference.meanPool(xd, m, bsz, seq, c), out, ROW_BOUND);
                Tensor dout = f32(s, random(rnd, bsz * c), bsz, c), dx = poisoned(s, bsz, seq, c);
                double[] wy = asDouble(dout);
                be.meanPoolBackward(dx, dout, tmask);
                assertGradient(name + " dx", v -> dot(wy, Reference.meanPool(v, m, bsz, seq, c)), xd, dx.toFloatArray(), rnd, 64,
                        GRAD_BOUND);
            });
        });
    }

    // ------------------------------------------------------------------ losses

    @TestFactory
    Stream<DynamicTest> crossEntropy() {
        int[][] shapes = {{1, 2}, {7, 3}, {33, 5}, {129, 2}};
        return Stream.of(shapes).flatMap(sh -> {
            int n = sh[0], classes = sh[1];
            String name = "crossEntropy N=" + n + " C=" + classes;
            return onEveryBackend(name, (be, s, rnd) -> {
                Tensor logits = f32(s, uniform(rnd, n * classes, -4, 4), n, classes);
                int[] labels = rnd.ints(n, 0, classes).toArray();
                if (n > 3) labels[2] = -1; // ignored row
                double[] ld = asDouble(logits);
                Tensor losses = poisoned(s, n), tl = i32(s, labels, n);
                float mean = be.crossEntropyForward(losses, logits, tl);
                double[] ref = Reference.crossEntropy(ld, labels, n, classes);
                assertClose(name + " losses", java.util.Arrays.copyOf(ref, n), losses, ROW_BOUND);
                assertClose(name + " mean", new double[] {ref[n]}, new float[] {mean}, ROW_BOUND);
                Tensor dl = poisoned(s, n, classes);
                be.crossEntropyBackward(dl, logits, tl, 0.7f);
                assertGradient(name + " dlogits", v -> 0.7 * Reference.crossEntropy(v, labels, n, classes)[n], ld,
                        dl.toFloatArray(), rnd, 64, GRAD_BOUND);
            });
        });
    }

    @TestFactory
    Stream<DynamicTest> crossEntropyRejectsBadLabel() {
        return onEveryBackend("crossEntropy label out of range", (be, s, rnd) -> {
            Tensor logits = f32(s, random(rnd, 12), 4, 3);
            var e = assertThrows(IllegalArgumentException.class,
                    () -> be.crossEntropyForward(poisoned(s, 4), logits, i32(s, new int[] {0, 2, 3, 1}, 4)));
            assertTrue(e.getMessage().contains("label 3 of row 2"), e.getMessage());
        });
    }

    @TestFactory
    Stream<DynamicTest> mse() {
        return Stream.of(1, 7, 33, 1000).flatMap(n -> onEveryBackend("mse N=" + n, (be, s, rnd) -> {
            Tensor p = f32(s, random(rnd, n), n), t = f32(s, random(rnd, n), n);
            double[] pd = asDouble(p), td = asDouble(t);
            float loss = be.mseForward(p, t);
            assertClose("mse", new double[] {Reference.mse(pd, td)}, new float[] {loss}, ROW_BOUND);
            Tensor dp = poisoned(s, n);
            be.mseBackward(dp, p, t, 1.5f);
            assertGradient("mse dpred", v -> 1.5 * Reference.mse(v, td), pd, dp.toFloatArray(), rnd, 64, GRAD_BOUND);
        }));
    }

    // ------------------------------------------------------------------ optimizer

    @TestFactory
    Stream<DynamicTest> adamw() {
        return Stream.of(1, 7, 1000, 100_003).flatMap(n -> onEveryBackend("adamw n=" + n, (be, s, rnd) -> {
            double lr = 1e-2, b1 = 0.9, b2 = 0.999, eps = 1e-8, wd = 0.01;
            Tensor p = f32(s, random(rnd, n), n), m = f32(s, new double[n], n), v = f32(s, new double[n], n);
            double[] pd = asDouble(p), md = new double[n], vd = new double[n];
            AdamWConfig cfg = new AdamWConfig(lr, b1, b2, eps, wd);
            for (int step = 1; step <= 3; step++) {
                Tensor g = f32(s, random(rnd, n), n);
                float clip = step == 2 ? 0.37f : 1f; // step 2: a clipped gradient, scaled inside the kernel
                double[] gd = asDouble(g);
                for (int i = 0; i < n; i++) gd[i] = (float) (gd[i] * clip);
                Reference.adamw(pd, gd, md, vd, lr, b1, b2, eps, wd, step);
                be.adamwStep(p, g, m, v, cfg, step, clip);
                assertClose("adamw step " + step + " param", pd, p, ROW_BOUND);
                assertClose("adamw step " + step + " m", md, m, ROW_BOUND);
                assertClose("adamw step " + step + " v", vd, v, ROW_BOUND);
            }
        }));
    }

    @TestFactory
    Stream<DynamicTest> sumOfSquares() {
        return Stream.of(1, 15, 100_003).flatMap(n -> onEveryBackend("sumOfSquares n=" + n, (be, s, rnd) -> {
            double[] x = random(rnd, n);
            Tensor t = f32(s, x, n);
            double ref = 0;
            for (double v : asDouble(t)) ref += v * v;
            assertEquals(ref, be.sumOfSquares(t), 1e-12 * ref);
        }));
    }

    /** Many tensors in one call (one launch on a device): each follows the reference of its own. */
    @TestFactory
    Stream<DynamicTest> adamwManyAndSumOfSquaresMany() {
        return onEveryBackend("adamw and sumOfSquares over tensors of 1, 7 and 1003", (be, s, rnd) -> {
            int[] sizes = {1, 7, 1003};
            double lr = 1e-2, b1 = 0.9, b2 = 0.999, eps = 1e-8, wd = 0.01;
            List<Tensor[]> group = new ArrayList<>();
            List<double[][]> ref = new ArrayList<>();
            double sq = 0;
            for (int n : sizes) {
                Tensor p = f32(s, random(rnd, n), n), g = f32(s, random(rnd, n), n), m = f32(s, new double[n], n), v = f32(s, new double[n], n);
                group.add(new Tensor[] {p, g, m, v});
                double[] gd = asDouble(g);
                for (double x : gd) sq += x * x;
                for (int i = 0; i < n; i++) gd[i] = (float) (gd[i] * 0.5f);
                ref.add(new double[][] {asDouble(p), gd, new double[n], new double[n]});
            }
            assertEquals(sq, be.sumOfSquares(group.stream().map(t -> t[1]).toList()), 1e-12 * sq);
            be.adamwStep(group, new AdamWConfig(lr, b1, b2, eps, wd), 1, 0.5f);
            for (int i = 0; i < sizes.length; i++) {
                double[][] r = ref.get(i);
                Reference.adamw(r[0], r[1], r[2], r[3], lr, b1, b2, eps, wd, 1);
                assertClose("adamw (many) param " + i, r[0], group.get(i)[0], ROW_BOUND);
                assertClose("adamw (many) v " + i, r[3], group.get(i)[3], ROW_BOUND);
            }
        });
    }

    @TestFactory
    Stream<DynamicTest> zeroOffDiagonalBroadcastRowsCopyZero() {
        return onEveryBackend("zeroOffDiagonal, broadcastRows, copy, zero", (be, s, rnd) -> {
            int rows = 9, cols = 15, blocks = 3;
            Tensor t = f32(s, random(rnd, rows * cols), rows, cols);
            double[] x = asDouble(t), ref = x.clone(); // the values as stored (f32)
            for (int i = 0; i < rows; i++)
                for (int j = 0; j < cols; j++)
                    if (i / (rows / blocks) != j / (cols / blocks)) ref[i * cols + j] = 0;
            be.zeroOffDiagonal(t, blocks);
            assertClose("zeroOffDiagonal", ref, t, 0);
            Tensor row = f32(s, random(rnd, cols), cols);
            double[] bc = new double[7 * cols];
            for (int r = 0; r < 7; r++) System.arraycopy(asDouble(row), 0, bc, r * cols, cols);
            Tensor y = poisoned(s, 7, cols);
            be.broadcastRows(y, row);
            assertClose("broadcastRows", bc, y, 0);
            Tensor c = poisoned(s, rows, cols);
            be.copy(c, f32(s, x, rows, cols));
            assertClose("copy", x, c, 0);
            be.zero(c);
            assertClose("zero", new double[rows * cols], c, 0);
            var e = assertThrows(IllegalArgumentException.class, () -> be.zeroOffDiagonal(f32(s, random(rnd, 10), 2, 5), 3));
            assertTrue(e.getMessage().startsWith("zeroOffDiagonal:") && e.getMessage().contains("3 x 3 blocks"), e.getMessage());
            var e2 = assertThrows(IllegalArgumentException.class, () -> be.copy(poisoned(s, 4), f32(s, random(rnd, 5), 5)));
            assertTrue(e2.getMessage().startsWith("copy: element counts differ"), e2.getMessage());
            var e3 = assertThrows(IllegalArgumentException.class, () -> be.copy(poisoned(s, 2), i32(s, new int[] {1, 2}, 2)));
            assertTrue(e3.getMessage().startsWith("copy: dtypes differ"), e3.getMessage());
            var e4 = assertThrows(IllegalArgumentException.class,
                    () -> be.adamwStep(List.<Tensor[]>of(new Tensor[] {c, c}), new AdamWConfig(1e-3, 0.9, 0.999, 1e-8, 0), 1, 1f));
            assertTrue(e4.getMessage().contains("{param, grad, m, v}"), e4.getMessage());
        });
    }

    @TestFactory
    Stream<DynamicTest> convertRoundsToNearestEvenBf16AndWidensExactly() {
        return onEveryBackend("convert", (be, s, rnd) -> {
            int n = 1037; // odd: the tails of vector loops
            float[] x = new float[n];
            for (int i = 0; i < n; i++) {
                float v = (float) ((rnd.nextDouble() - 0.5) * Math.pow(10, rnd.nextInt(-6, 7)));
                int bits = Float.floatToRawIntBits(v);
                // every fifth an exact tie between two bf16 values
                x[i] = i % 5 == 0 ? Float.intBitsToFloat((bits & 0xffff0000) | 0x8000) : v;
            }
            x[1] = Float.NaN;
            x[2] = Float.MAX_VALUE; // rounds up past the largest bf16: infinity
            x[3] = Float.NEGATIVE_INFINITY;
            x[4] = -0f;
            Tensor in = s.allocate(DType.F32, n).copyFrom(x), half = s.allocate(DType.BF16, n).fill(Float.NaN);
            be.convert(half, in);
            Tensor back = poisoned(s, n);
            be.convert(back, half);
            float[] got = back.toFloatArray();
            for (int i = 0; i < n; i++) {
                float want = nearestEvenBf16(x[i]);
                assertTrue(Float.isNaN(want) ? Float.isNaN(got[i]) : Float.floatToRawIntBits(want) == Float.floatToRawIntBits(got[i]),
                        "element " + i + ": " + x[i] + " -> " + got[i] + ", want " + want);
            }
            var e = assertThrows(IllegalArgumentException.class, () -> be.convert(poisoned(s, n), in));
            assertTrue(e.getMessage().startsWith("convert: converts f32 <-> bf16"), e.getMessage());
            var e2 = assertThrows(IllegalArgumentException.class, () -> be.convert(s.allocate(DType.BF16, n - 1), in));
            assertTrue(e2.getMessage().startsWith("convert: element counts differ"), e2.getMessage());
        });
    }

    /** The bf16 value nearest to x (ties to an even last mantissa bit), found by comparing the two neighbours in float64. */
    private static float nearestEvenBf16(float x) {
        if (Float.isNaN(x) || Float.isInfinite(x)) return x;
        int bits = Float.floatToRawIntBits(x);
        float down = Float.intBitsToFloat(bits & 0xffff0000), up = Float.intBitsToFloat((bits & 0xffff0000) + 0x10000);
        double dDown = Math.abs((double) x - down), dUp = Math.abs((double) up - x);
        if (Float.isInfinite(up)) dUp = Math.abs(Math.scalb(1.0, 128) * Math.signum(x) - x); // past the largest finite value
        if (dDown != dUp) return dDown < dUp ? down : up;
        return (bits & 0x10000) == 0 ? down : up;
    }

    @TestFactory
    Stream<DynamicTest> transposeAndBlockDot() {
        return onEveryBackend("transpose, blockDot", (be, s, rnd) -> {
            int rows = 7, cols = 19;
            Tensor in = f32(s, random(rnd, rows * cols), rows, cols), out = f32(s, random(rnd, rows * cols), cols, rows);
            double[] x = asDouble(in), o = asDouble(out), ref = new double[rows * cols];
            for (int i = 0; i < rows; i++) for (int j = 0; j < cols; j++) ref[j * rows + i] = x[i * cols + j] + 0.5 * o[j * rows + i];
            be.transpose(out, in, 0.5f);
            assertClose("transpose accumulated", ref, out, 1e-6);
            Tensor over = poisoned(s, cols, rows);
            be.transpose(over, in, 0f);
            for (int i = 0; i < rows; i++) for (int j = 0; j < cols; j++) ref[j * rows + i] = x[i * cols + j];
            assertClose("transpose", ref, over, 0);
            int n = 64, k = 96;
            Tensor w = f32(s, random(rnd, n * k), n, k), g = f32(s, random(rnd, n * k), n, k), sums = poisoned(s, n / 32, k / 32);
            double[] wd = asDouble(w), gd = asDouble(g), bref = new double[(n / 32) * (k / 32)];
            for (int i = 0; i < n; i++) for (int j = 0; j < k; j++) bref[(i / 32) * (k / 32) + j / 32] += wd[i * k + j] * gd[i * k + j];
            be.blockDot(sums, w, g);
            assertClose("blockDot", bref, sums, 1e-5);
            var e = assertThrows(IllegalArgumentException.class, () -> be.transpose(poisoned(s, rows, cols), in, 0f));
            assertTrue(e.getMessage().startsWith("transpose: out"), e.getMessage());
            var e2 = assertThrows(IllegalArgumentException.class, () -> be.blockDot(poisoned(s, 1), f32(s, random(rnd, 40 * 32), 40, 32),
                    f32(s, random(rnd, 40 * 32), 40, 32)));
            assertTrue(e2.getMessage().startsWith("blockDot: w must be"), e2.getMessage());
        });
    }

    @TestFactory
    Stream<DynamicTest> packedAttentionIsEachSequenceAlone() {
        return onEveryBackend("attentionForwardPacked", (be, s, rnd) -> {
            int heads = 3, d = 8, c = heads * d;
            int[] lengths = {5, 1, 12, 7};
            int n = java.util.Arrays.stream(lengths).sum();
            Tensor qkv = f32(s, random(rnd, n * 3 * c), n, 3 * c), out = poisoned(s, n, c);
            be.attentionForwardPacked(out, qkv, lengths, heads, 0.3f);
            double[] q = asDouble(qkv), ref = new double[n * c];
            int off = 0;
            for (int len : lengths) { // float64: each sequence attends to itself only
                for (int h = 0; h < heads; h++)
                    for (int i = 0; i < len; i++) {
                        double[] p = new double[len];
                        double mx = Double.NEGATIVE_INFINITY, sum = 0;
                        for (int j = 0; j < len; j++) {
                            double dot = 0;
                            for (int e = 0; e < d; e++) dot += q[(off + i) * 3 * c + h * d + e] * q[(off + j) * 3 * c + c + h * d + e];
                            p[j] = 0.3 * dot;
                            mx = Math.max(mx, p[j]);
                        }
                        for (int j = 0; j < len; j++) sum += p[j] = Math.exp(p[j] - mx);
                        for (int e = 0; e < d; e++) {
                            double acc = 0;
                            for (int j = 0; j < len; j++) acc += p[j] / sum * q[(off + j) * 3 * c + 2 * c + h * d + e];
                            ref[(off + i) * c + h * d + e] = acc;
                        }
                    }
                off += len;
            }
            assertClose("attentionForwardPacked", ref, out, 1e-5);
            var e = assertThrows(IllegalArgumentException.class, () -> be.attentionForwardPacked(poisoned(s, n, c), qkv, new int[] {5, 1}, heads, 1f));
            assertTrue(e.getMessage().startsWith("attentionForwardPacked: qkv"), e.getMessage());
        });
    }

    // ------------------------------------------------------------------ bad input

    @TestFactory
    Stream<DynamicTest> shapeErrorsNameOpAndTensor() {
        return onEveryBackend("shape errors", (be, s, rnd) -> {
            Tensor a = f32(s, random(rnd, 6), 2, 3), b = f32(s, random(rnd, 8), 4, 2), c = poisoned(s, 2, 2);
            var e = assertThrows(IllegalArgumentException.class, () -> be.gemm(false, false, 1, a, b, 0, c, null));
            assertTrue(e.getMessage().startsWith("gemm: inner dimensions differ"), e.getMessage());
            var e2 = assertThrows(IllegalArgumentException.class,
                    () -> be.layernormForward(c, poisoned(s, 2), poisoned(s, 2), null, a, null, f32(s, random(rnd, 3), 3),
                            f32(s, random(rnd, 3), 3), 1e-5f));
            assertTrue(e2.getMessage().startsWith("layernormForward: out"), e2.getMessage());
            Tensor ids = i32(s, new int[] {1, 2}, 1, 2);
            var e3 = assertThrows(IllegalArgumentException.class, () -> be.softmaxForward(c, ids.reshape(2)));
            assertTrue(e3.getMessage().contains("must be f32"), e3.getMessage());
            assertEquals(2, a.dim(0));
        });
    }
}
