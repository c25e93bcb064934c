package dev.topa.harness;

import static dev.topa.harness.Check.GRAD;
import static dev.topa.harness.Check.ROW;
import static dev.topa.harness.Check.dot;
import static dev.topa.harness.Check.gradient;

import dev.topa.backend.Op;
import dev.topa.tensor.Tensor;
import java.util.ArrayList;
import java.util.List;

/** Row softmax and its backward (attention has its own inside its kernels). */
final class SoftmaxOps implements OpFamily {
    @Override
    public String name() {
        return "softmax";
    }

    @Override
    public List<OpCase> cases() {
        List<OpCase> all = new ArrayList<>();
        for (int[] s : new int[][] {{1, 1}, {7, 33}, {129, 129}, {33, 512}}) {
            int rows = s[0], cols = s[1];
            String name = rows + "x" + cols;
            all.add(new OpCase(name(), name, Op.SOFTMAX, ws -> {
                Tensor x = ws.f32(ws.uniform(rows * cols, -8, 8), rows, cols), y = ws.poisoned(rows, cols);
                double[] xd = ws.values(x);
                ws.backend().softmaxForward(y, x);
                ws.close(name, Reference.softmax(xd, rows, cols), y, ROW);
                Tensor dy = ws.f32(ws.random(rows * cols), rows, cols), dx = ws.poisoned(rows, cols);
                double[] wy = ws.values(dy);
                ws.backend().softmaxBackward(dx, dy, y);
                gradient(name + " dx", v -> dot(wy, Reference.softmax(v, rows, cols)), xd, ws.floats(dx), ws.rnd(), 64, GRAD);
            }));
        }
        return all;
    }

    @Override
    public List<OpTiming> timings(int tokens) {
        int cols = 128;
        return List.of(new OpTiming(name(), "forward " + tokens * 12 + "x" + cols, Op.SOFTMAX, ws -> {
            Tensor x = ws.f32(ws.random(tokens * 12 * cols), tokens * 12, cols), y = ws.poisoned(tokens * 12, cols);
            return OpTiming.Work.bytes(2.0 * tokens * 12 * cols * 4, () -> ws.backend().softmaxForward(y, x));
        }));
    }
}
