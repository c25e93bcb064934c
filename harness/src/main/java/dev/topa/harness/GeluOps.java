package dev.topa.harness;

import static dev.topa.harness.Check.GRAD;
import static dev.topa.harness.Check.ROW;
import static dev.topa.harness.Check.dot;
import static dev.topa.harness.Check.gradient;

import dev.topa.tensor.Tensor;
import java.util.ArrayList;
import java.util.List;

/** GELU (exact erf form) with the bias fused, and its backward with the bias gradient. */
final class GeluOps implements OpFamily {
    @Override
    public String name() {
        return "gelu";
    }

    @Override
    public List<OpCase> cases() {
        List<OpCase> all = new ArrayList<>();
        for (int[] s : new int[][] {{1, 1}, {7, 33}, {129, 1536}})
            for (boolean withBias : new boolean[] {false, true}) all.add(gelu(s[0], s[1], withBias));
        return all;
    }

    private OpCase gelu(int rows, int cols, boolean withBias) {
        String name = rows + "x" + cols + (withBias ? " +bias" : "");
        return new OpCase(name(), name, ws -> {
            // [-6, 6] reaches both tails, where a tanh approximation or a poor erf would show
            Tensor x = ws.f32(ws.uniform(rows * cols, -6, 6), rows, cols), b = withBias ? ws.f32(ws.random(cols), cols) : null;
            double[] xd = ws.values(x), bd = b == null ? null : ws.values(b);
            Tensor out = ws.poisoned(rows, cols);
            ws.backend().biasGeluForward(out, x, b);
            ws.close(name, Reference.biasGelu(xd, bd, rows, cols), out, ROW);
            Tensor dy = ws.f32(ws.random(rows * cols), rows, cols), dx = ws.poisoned(rows, cols);
            double[] wy = ws.values(dy);
            // dbias from zero (an increment on top of O(1) values would drown gradients of the tails, ~1e-6, in float rounding)
            Tensor db = b == null ? null : ws.f32(new double[cols], cols);
            ws.backend().biasGeluBackward(dx, db, dy, x, b);
            gradient(name + " dx", v -> dot(wy, Reference.biasGelu(v, bd, rows, cols)), xd, ws.floats(dx), ws.rnd(), 64, GRAD);
            if (b == null) return;
            float[] once = ws.floats(db);
            gradient(name + " dbias", v -> dot(wy, Reference.biasGelu(xd, v, rows, cols)), bd, once, ws.rnd(), 64, GRAD);
            ws.backend().biasGeluBackward(dx, db, dy, x, b); // accumulates: twice the increment (overwriting would be half of it)
            double[] twice = new double[cols];
            for (int i = 0; i < cols; i++) twice[i] = 2.0 * once[i];
            ws.close(name + " dbias (+=)", twice, db, ROW);
        });
    }

    @Override
    public List<OpTiming> timings(int tokens) {
        int f = 3072;
        return List.of(new OpTiming(name(), "forward " + tokens + "x" + f, ws -> {
            Tensor x = ws.f32(ws.random(tokens * f), tokens, f), b = ws.f32(ws.random(f), f), out = ws.poisoned(tokens, f);
            return OpTiming.Work.bytes(2.0 * tokens * f * 4, () -> ws.backend().biasGeluForward(out, x, b));
        }), new OpTiming(name(), "backward " + tokens + "x" + f, ws -> {
            Tensor x = ws.f32(ws.random(tokens * f), tokens, f), b = ws.f32(ws.random(f), f), dx = ws.poisoned(tokens, f);
            return OpTiming.Work.bytes(3.0 * tokens * f * 4, () -> ws.backend().biasGeluBackward(dx, null, x, x, b));
        }));
    }
}
