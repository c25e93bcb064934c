package dev.topa.harness;

import static dev.topa.harness.Check.GEMM;

import dev.topa.backend.BlockSparseWeight;
import dev.topa.backend.DenseWeight;
import dev.topa.backend.Dropout;
import dev.topa.backend.LinearWeight.Gradients;
import dev.topa.backend.LinearWeight.LowRank;
import dev.topa.backend.Op;
import dev.topa.tensor.StepArena;
import dev.topa.tensor.Tensor;
import java.util.ArrayList;
import java.util.List;
import java.util.SplittableRandom;

/**
 * 32 x 32 block-sparse weights: the product over the kept blocks (forward and input gradient), the
 * adapter's term masked alike (per-block factor, its gradients), and the weight format as a layer
 * runs it, block-sparse or dense with the structure kept for the masked term.
 */
final class BlockSparseOps implements OpFamily {
    @Override
    public String name() {
        return "blocksparse";
    }

    @Override
    public List<OpCase> cases() {
        List<OpCase> all = new ArrayList<>();
        for (double[] c : new double[][] {{37, 64, 96, 0.5}, {100, 96, 64, 0.3}, {13, 32, 32, 1.0}, {200, 128, 160, 0.2}, {5, 64, 64, 0.0}})
            all.add(product((int) c[0], (int) c[1], (int) c[2], c[3]));
        for (double[] c : new double[][] {{37, 64, 96, 0.5, 3}, {100, 96, 64, 0.3, 5}, {13, 32, 32, 1.0, 1}, {70, 128, 160, 0.2, 24}})
            all.add(maskedLowRank((int) c[0], (int) c[1], (int) c[2], c[3], (int) c[4]));
        for (boolean dense : new boolean[] {false, true}) all.add(format(41, 96, 128, 0.4, 4, dense));
        return all;
    }

    static boolean[][] mask(SplittableRandom rnd, int out, int in, double density) {
        boolean[][] m = new boolean[out / 32][in / 32];
        for (boolean[] row : m) for (int j = 0; j < row.length; j++) row[j] = rnd.nextDouble() < density;
        return m;
    }

    /** Values with everything outside the kept blocks zero: the dense "masked zeros" reference. */
    static double[] masked(double[] w, int in, boolean[][] mask) {
        double[] v = w.clone();
        for (int i = 0; i < v.length; i++) if (!mask[i / in / 32][i % in / 32]) v[i] = 0;
        return v;
    }

    /** y = x Wm^T + 0.5 y0 + bias + 1.5 u B^T; dx = dy Wm. W carries noise outside the mask: it must not matter. */
    private OpCase product(int m, int out, int in, double density) {
        String name = "M=" + m + " " + out + "x" + in + " density " + density;
        return new OpCase(name(), name, Op.BLOCK_SPARSE, ws -> {
            int r = 3;
            boolean[][] mask = mask(ws.rnd(), out, in, density);
            Tensor w = ws.f32(ws.random(out * in), out, in), x = ws.f32(ws.random(m * in), m, in), bias = ws.f32(ws.random(out), out);
            Tensor u = ws.f32(ws.random(m * r), m, r), bt = ws.f32(ws.random(r * out), r, out), y = ws.f32(ws.random(m * out), m, out);
            double[] y0 = ws.values(y), wm = masked(ws.values(w), in, mask);
            var fwd = BlockSparseWeight.pack(ws.backend(), w, mask, false, ws.scratch(), false);
            BlockSparseWeight.linear(ws.backend(), y, x, fwd, bias, 0.5f, u, bt, 1.5f, false);
            double[] ref = Reference.add(Reference.gemm(false, true, m, out, in, 1, ws.values(x), wm, 0.5, y0, ws.values(bias)),
                    Reference.gemm(false, false, m, out, r, 1.5, ws.values(u), ws.values(bt), 0, null, null));
            ws.close(name + " forward", ref, y, ws.productBound(GEMM));
            Tensor dy = ws.f32(ws.random(m * out), m, out), dx = ws.poisoned(m, in);
            var bwd = BlockSparseWeight.pack(ws.backend(), w, mask, true, ws.scratch(), false);
            BlockSparseWeight.linear(ws.backend(), dx, dy, bwd, null, 0f, null, null, 0f, false);
            ws.close(name + " input gradient", Reference.gemm(false, false, m, in, out, 1, ws.values(dy), wm, 0, null, null), dx,
                    ws.productBound(GEMM));
        });
    }

    /** W + s B A inside the mask, both ways, and the factor gradients dB = s (M o G) A^T, dA^T = s (M o G)^T B with G = dy^T x. */
    private OpCase maskedLowRank(int m, int out, int in, double density, int r) {
        String name = "masked lora M=" + m + " " + out + "x" + in + " r " + r + " density " + density;
        return new OpCase(name(), name, Op.BLOCK_SPARSE, ws -> {
            boolean[][] mask = mask(ws.rnd(), out, in, density);
            Tensor w = ws.f32(ws.random(out * in), out, in), a = ws.f32(ws.random(r * in), r, in), b = ws.f32(ws.random(out * r), out, r);
            Tensor bt = ws.f32(transpose(ws.values(b), out, r), r, out);
            float sc = 1.5f;
            double[] eff = masked(Reference.add(ws.values(w), Reference.gemm(false, false, out, in, r, sc, ws.values(b), ws.values(a), 0, null, null)),
                    in, mask);
            var fwd = BlockSparseWeight.pack(ws.backend(), w, mask, false, ws.scratch(), false);
            var bwd = BlockSparseWeight.pack(ws.backend(), w, mask, true, ws.scratch(), false);
            Tensor x = ws.f32(ws.random(m * in), m, in), u = ws.poisoned(m, in / 32 * r), y = ws.poisoned(m, out);
            BlockSparseWeight.lowRank(ws.backend(), u, x, a);
            BlockSparseWeight.linear(ws.backend(), y, x, fwd, null, 0f, u, bt, sc, true);
            ws.close(name + " forward", Reference.gemm(false, true, m, out, in, 1, ws.values(x), eff, 0, null, null), y, ws.productBound(GEMM));
            Tensor dy = ws.f32(ws.random(m * out), m, out), g = ws.poisoned(m, out / 32 * r), dx = ws.poisoned(m, in);
            BlockSparseWeight.lowRank(ws.backend(), g, dy, bt);
            BlockSparseWeight.linear(ws.backend(), dx, dy, bwd, null, 0f, g, a, sc, true);
            ws.close(name + " input gradient", Reference.gemm(false, false, m, in, out, 1, ws.values(dy), eff, 0, null, null), dx,
                    ws.productBound(GEMM));
            double[] grad = masked(Reference.gemm(true, false, out, in, m, 1, ws.values(dy), ws.values(x), 0, null, null), in, mask);
            double[] d0 = ws.random(out * r);
            Tensor dB = ws.f32(d0, out, r);
            BlockSparseWeight.lowRankGradient(ws.backend(), dB, dy, fwd, u, sc);
            ws.close(name + " dB", Reference.add(ws.values(ws.f32(d0, out, r)), Reference.gemm(false, true, out, r, in, sc, grad, ws.values(a), 0,
                    null, null)), dB, GEMM);
            Tensor dAt = ws.f32(new double[in * r], in, r);
            BlockSparseWeight.lowRankGradient(ws.backend(), dAt, x, bwd, g, sc);
            ws.close(name + " dA^T", Reference.gemm(true, false, in, r, out, sc, grad, ws.values(b), 0, null, null), dAt, GEMM);
        });
    }

    /** The format as a layer multiplies it: y = x (M o (W + s B A))^T + bias, dx, dA, dB, dbias; kept blocks or dense with the structure. */
    private OpCase format(int m, int out, int in, double density, int r, boolean dense) {
        String name = "format M=" + m + " " + out + "x" + in + " r " + r + (dense ? " dense form" : " block-sparse");
        return new OpCase(name(), name, Op.BLOCK_SPARSE, ws -> {
            boolean[][] mask = mask(ws.rnd(), out, in, density);
            double[] wm = masked(ws.random(out * in), in, mask); // a block-pruned weight holds zeros outside its mask
            Tensor w = ws.f32(wm, out, in), a = ws.f32(ws.random(r * in), r, in), b = ws.f32(ws.random(out * r), out, r);
            Tensor x = ws.f32(ws.random(m * in), m, in), bias = ws.f32(ws.random(out), out), y = ws.poisoned(m, out);
            float sc = 0.5f;
            BlockSparseWeight form = BlockSparseWeight.pack(ws.backend(), w, mask, ws.scratch(), dense ? new DenseWeight(w) : null);
            LowRank lr = new LowRank(a, b, sc);
            form.forward(ws.backend(), ws.scratch(), ws.scratch(), y, x, bias, lr, Dropout.NONE);
            double[] eff = masked(Reference.add(wm, Reference.gemm(false, false, out, in, r, sc, ws.values(b), ws.values(a), 0, null, null)), in, mask);
            ws.close(name + " forward", Reference.gemm(false, true, m, out, in, 1, ws.values(x), eff, 0, null, ws.values(bias)), y,
                    ws.productBound(GEMM));
            Tensor dy = ws.f32(ws.random(m * out), m, out), dx = ws.poisoned(m, in);
            Tensor dA = ws.f32(new double[r * in], r, in), dB = ws.f32(new double[out * r], out, r), db = ws.f32(new double[out], out);
            form.backward(ws.backend(), ws.scratch(), dx, false, dy, x, null, lr, Dropout.NONE, new Gradients(null, db, dA, dB));
            ws.close(name + " dx", Reference.gemm(false, false, m, in, out, 1, ws.values(dy), eff, 0, null, null), dx, ws.productBound(GEMM));
            double[] grad = masked(Reference.gemm(true, false, out, in, m, 1, ws.values(dy), ws.values(x), 0, null, null), in, mask);
            ws.close(name + " dB", Reference.gemm(false, true, out, r, in, sc, grad, ws.values(a), 0, null, null), dB, GEMM);
            ws.close(name + " dA", Reference.gemm(true, false, r, in, out, sc, ws.values(b), grad, 0, null, null), dA, GEMM);
            double[] colSums = new double[out], dyd = ws.values(dy);
            for (int i = 0; i < m; i++) for (int j = 0; j < out; j++) colSums[j] += dyd[i * out + j];
            ws.close(name + " dbias", colSums, db, Check.ROW);
        });
    }

    static double[] transpose(double[] v, int rows, int cols) {
        double[] t = new double[v.length];
        for (int i = 0; i < rows; i++) for (int j = 0; j < cols; j++) t[j * rows + i] = v[i * cols + j];
        return t;
    }

    @Override
    public List<OpTiming> timings(int tokens) {
        int h = 768, r = 8;
        List<OpTiming> all = new ArrayList<>();
        for (double density : new double[] {0.5, 0.2}) {
            String d = Integer.toString((int) Math.round(100 * (1 - density)));
            all.add(new OpTiming(name(), d + "% " + h, Op.BLOCK_SPARSE, ws -> {
                Tensor x = ws.f32(ws.random(tokens * h), tokens, h), y = ws.poisoned(tokens, h);
                var p = BlockSparseWeight.pack(ws.backend(), ws.f32(ws.random(h * h), h, h), mask(ws.rnd(), h, h, density), false, ws.scratch(), false);
                return OpTiming.Work.flops(2.0 * tokens * 32 * 32 * p.keptBlocks(),
                        () -> BlockSparseWeight.linear(ws.backend(), y, x, p, null, 0f, null, null, 0f, false));
            }));
        }
        all.add(new OpTiming(name(), "50% masked lora r8 " + h, Op.BLOCK_SPARSE, ws -> {
            Tensor x = ws.f32(ws.random(tokens * h), tokens, h), y = ws.poisoned(tokens, h), a = ws.f32(ws.random(r * h), r, h);
            Tensor b = ws.f32(ws.random(h * r), h, r);
            BlockSparseWeight form = BlockSparseWeight.pack(ws.backend(), ws.f32(ws.random(h * h), h, h), mask(ws.rnd(), h, h, 0.5), ws.scratch(), null);
            StepArena temp = ws.arena();
            LowRank lr = new LowRank(a, b, 2f);
            return OpTiming.Work.flops(2.0 * tokens * h * h * form.density(), () -> {
                temp.reset();
                form.forward(ws.backend(), temp, temp, y, x, null, lr, Dropout.NONE);
            });
        }));
        all.add(new OpTiming(name(), "block lowrank r8 " + h, Op.BLOCK_SPARSE, ws -> {
            Tensor x = ws.f32(ws.random(tokens * h), tokens, h), a = ws.f32(ws.random(r * h), r, h), u = ws.poisoned(tokens, h / 32 * r);
            return OpTiming.Work.flops(2.0 * tokens * h * r, () -> BlockSparseWeight.lowRank(ws.backend(), u, x, a));
        }));
        all.add(new OpTiming(name(), "block lowrank gradient r8 " + h, Op.BLOCK_SPARSE, ws -> {
            Tensor dy = ws.f32(ws.random(tokens * h), tokens, h), u = ws.f32(ws.random(tokens * (h / 32 * r)), tokens, h / 32 * r);
            Tensor d = ws.f32(new double[h * r], h, r);
            var p = BlockSparseWeight.pack(ws.backend(), ws.f32(ws.random(h * h), h, h), mask(ws.rnd(), h, h, 0.5), false, ws.scratch(), false);
            return OpTiming.Work.flops(2.0 * tokens * h * r, () -> BlockSparseWeight.lowRankGradient(ws.backend(), d, dy, p, u, 1f));
        }));
        return all;
    }
}
