package dev.topa.harness;

import static dev.topa.harness.Check.GRAD;
import static dev.topa.harness.Check.ROW;
import static dev.topa.harness.Check.dot;
import static dev.topa.harness.Check.gradient;

import dev.topa.tensor.Tensor;
import java.util.ArrayList;
import java.util.List;

/** Masked mean pooling over tokens (a sequence with no real token pools to zero) and its backward. */
final class PoolOps implements OpFamily {
    @Override
    public String name() {
        return "pool";
    }

    @Override
    public List<OpCase> cases() {
        List<OpCase> all = new ArrayList<>();
        for (int[] cs : new int[][] {{1, 1, 1, 0}, {3, 7, 33, 1}, {32, 128, 384, 1}, {2, 5, 9, 0}}) {
            int bsz = cs[0], seq = cs[1], c = cs[2];
            boolean masked = cs[3] == 1;
            String name = "mean B=" + bsz + " S=" + seq + " C=" + c + (masked ? " +padding" : "");
            all.add(new OpCase(name(), name, ws -> {
                int[] mask = null;
                if (masked) {
                    mask = new int[bsz * seq];
                    for (int b = 0; b < bsz; b++)
                        for (int t = 0; t < seq; t++) mask[b * seq + t] = t < Math.max(b == 1 ? 0 : 1, seq - 2 * b) ? 1 : 0;
                }
                int[] m = mask;
                Tensor tmask = m == null ? null : ws.i32(m, bsz, seq), x = ws.f32(ws.random(bsz * seq * c), bsz, seq, c), out = ws.poisoned(bsz, c);
                double[] xd = ws.values(x);
                ws.backend().meanPoolForward(out, x, tmask);
                ws.close(name, Reference.meanPool(xd, m, bsz, seq, c), out, ROW);
                Tensor dout = ws.f32(ws.random(bsz * c), bsz, c), dx = ws.poisoned(bsz, seq, c);
                double[] wy = ws.values(dout);
                ws.backend().meanPoolBackward(dx, dout, tmask);
                gradient(name + " dx", v -> dot(wy, Reference.meanPool(v, m, bsz, seq, c)), xd, ws.floats(dx), ws.rnd(), 64, GRAD);
            }));
        }
        return all;
    }

    @Override
    public List<OpTiming> timings(int tokens) {
        int seq = Math.min(128, tokens), batch = Math.max(1, tokens / seq), c = 768;
        return List.of(new OpTiming(name(), "mean " + batch + "x" + seq + "x" + c, ws -> {
            Tensor x = ws.f32(ws.random(batch * seq * c), batch, seq, c), out = ws.poisoned(batch, c);
            return OpTiming.Work.bytes(4.0 * batch * seq * c, () -> ws.backend().meanPoolForward(out, x, null));
        }));
    }
}
