package dev.topa.harness;

import static dev.topa.harness.Check.EXACT;
import static dev.topa.harness.Check.GRAD;
import static dev.topa.harness.Check.ROW;
import static dev.topa.harness.Check.dot;
import static dev.topa.harness.Check.gradient;
import static dev.topa.harness.Check.minus;

import dev.topa.backend.Backend;
import dev.topa.tensor.Tensor;
import java.util.ArrayList;
import java.util.List;

/** LayerNorm with the residual add fused (and its sum kept for backward), and its backward (dx accumulating or overwritten). */
final class LayernormOps implements OpFamily {
    @Override
    public String name() {
        return "layernorm";
    }

    @Override
    public List<OpCase> cases() {
        List<OpCase> all = new ArrayList<>();
        for (int[] s : new int[][] {{1, 1}, {1, 7}, {7, 33}, {129, 129}, {256, 768}})
            for (int mode = 0; mode < 3; mode++) all.add(layernorm(s[0], s[1], mode));
        return all;
    }

    /** mode 0: LN(x); 1: LN(x + residual); 2: the same keeping the sum. */
    private OpCase layernorm(int rows, int cols, int mode) {
        String name = rows + "x" + cols + (mode == 0 ? "" : mode == 1 ? " +residual" : " +residual+sum");
        return new OpCase(name(), name, ws -> {
            Backend be = ws.backend();
            float eps = 1e-5f;
            Tensor x = ws.f32(ws.random(rows * cols), rows, cols), r = mode == 0 ? null : ws.f32(ws.random(rows * cols), rows, cols);
            Tensor g = ws.f32(ws.uniform(cols, 0.5, 1.5), cols), bt = ws.f32(ws.random(cols), cols);
            Tensor out = ws.poisoned(rows, cols), mean = ws.poisoned(rows), rstd = ws.poisoned(rows);
            Tensor sum = mode == 2 ? ws.poisoned(rows, cols) : null;
            be.layernormForward(out, mean, rstd, sum, x, r, g, bt, eps);
            double[] h = Reference.add(ws.values(x), r == null ? null : ws.values(r)), gd = ws.values(g), bd = ws.values(bt);
            ws.close(name + " out", Reference.layernorm(h, gd, bd, rows, cols, eps), out, ROW);
            if (sum != null) ws.close(name + " sum", h, sum, EXACT);
            // backward on the smaller shapes; over one column LN is constant (= beta) and its dx is
            // float rounding amplified by 1/sqrt(eps), nothing a bound could hold
            if (rows * cols > 100_000 || cols == 1) return;
            Tensor lnIn = sum != null ? sum : r != null ? ws.f32(h, rows, cols) : x;
            Tensor dy = ws.f32(ws.random(rows * cols), rows, cols);
            double[] wy = ws.values(dy);
            Tensor dx = ws.f32(ws.random(rows * cols), rows, cols), dg = ws.f32(ws.random(cols), cols), db = ws.f32(ws.random(cols), cols);
            double[] dx0 = ws.values(dx), dg0 = ws.values(dg), db0 = ws.values(db);
            be.layernormBackward(dx, dg, db, dy, lnIn, mean, rstd, g, true); // dx accumulates (the residual branch's gradient)
            gradient(name + " dx (+=)", v -> dot(wy, Reference.layernorm(v, gd, bd, rows, cols, eps)), h.clone(), minus(ws.floats(dx), dx0),
                    ws.rnd(), 64, GRAD);
            gradient(name + " dgamma (+=)", v -> dot(wy, Reference.layernorm(h, v, bd, rows, cols, eps)), gd, minus(ws.floats(dg), dg0), ws.rnd(),
                    64, GRAD);
            gradient(name + " dbeta (+=)", v -> dot(wy, Reference.layernorm(h, gd, v, rows, cols, eps)), bd, minus(ws.floats(db), db0), ws.rnd(),
                    64, GRAD);
            Tensor dx2 = ws.poisoned(rows, cols);
            be.layernormBackward(dx2, null, null, dy, lnIn, mean, rstd, g, false);
            double[] inc = ws.values(dx);
            for (int i = 0; i < inc.length; i++) inc[i] -= dx0[i];
            ws.close(name + " dx (overwrite)", inc, dx2, 10 * ROW);
        });
    }

    @Override
    public List<OpTiming> timings(int tokens) {
        int c = 768;
        return List.of(new OpTiming(name(), "residual " + tokens + "x" + c, ws -> {
            Tensor x = ws.f32(ws.random(tokens * c), tokens, c), r = ws.f32(ws.random(tokens * c), tokens, c), out = ws.poisoned(tokens, c);
            Tensor g = ws.f32(ws.random(c), c), b = ws.f32(ws.random(c), c), mean = ws.poisoned(tokens), rstd = ws.poisoned(tokens);
            return OpTiming.Work.bytes(3.0 * tokens * c * 4, () -> ws.backend().layernormForward(out, mean, rstd, null, x, r, g, b, 1e-12f));
        }), new OpTiming(name(), "backward " + tokens + "x" + c, ws -> {
            Tensor x = ws.f32(ws.random(tokens * c), tokens, c), dy = ws.f32(ws.random(tokens * c), tokens, c), dx = ws.poisoned(tokens, c);
            Tensor g = ws.f32(ws.random(c), c), b = ws.f32(ws.random(c), c), mean = ws.poisoned(tokens), rstd = ws.poisoned(tokens);
            ws.backend().layernormForward(dx, mean, rstd, null, x, null, g, b, 1e-12f);
            Tensor dg = ws.f32(new double[c], c), db = ws.f32(new double[c], c);
            return OpTiming.Work.bytes(3.0 * tokens * c * 4, () -> ws.backend().layernormBackward(dx, dg, db, dy, x, mean, rstd, g, false));
        }));
    }
}
