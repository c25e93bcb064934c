package dev.topa.harness;

import static dev.topa.harness.Check.ROW;

import dev.topa.backend.Dropout;
import dev.topa.tensor.Tensor;
import java.util.ArrayList;
import java.util.List;
import java.util.stream.IntStream;

/** Counter-based dropout: the mask a pure function of (key, index); accumulate and in place give the same draw. */
final class DropoutOps implements OpFamily {
    @Override
    public String name() {
        return "dropout";
    }

    @Override
    public List<OpCase> cases() {
        List<OpCase> all = new ArrayList<>();
        for (int n : new int[] {1, 17, 100_003}) {
            String name = "n=" + n;
            all.add(new OpCase(name(), name, ws -> {
                Dropout d = new Dropout(0.3, ws.rnd().nextInt());
                double[] xd = ws.values(ws.f32(ws.random(n), n));
                Tensor x = ws.f32(xd, n), out = ws.poisoned(n);
                ws.backend().dropout(out, x, d, false);
                double[] ref = Reference.dropout(xd, d);
                ws.close(name, ref, out, ROW);
                Tensor acc = ws.f32(xd, n); // accumulate: out += dropout(x), here onto a copy of x
                ws.backend().dropout(acc, x, d, true);
                ws.close(name + " accumulate", Reference.add(xd, ref), acc, ROW);
                ws.backend().dropout(x, x, d, false); // in place: the same draw
                ws.close(name + " in place", ref, x, ROW);
                if (n > 100_000) {
                    long kept = IntStream.range(0, n).filter(d::keep).count();
                    Check.isTrue(Math.abs(kept / (double) n - 0.7) < 0.01, "kept fraction at p = 0.3: " + kept / (double) n);
                    Dropout other = new Dropout(0.3, d.key() + 1);
                    long same = IntStream.range(0, n).filter(i -> d.keep(i) == other.keep(i)).count();
                    Check.isTrue(Math.abs(same / (double) n - 0.58) < 0.01,
                            "masks of neighbouring keys agree only by chance (0.7^2 + 0.3^2): " + same / (double) n);
                }
            }));
        }
        return all;
    }

    @Override
    public List<OpTiming> timings(int tokens) {
        int n = tokens * 768;
        return List.of(new OpTiming(name(), tokens + "x768", ws -> {
            Tensor x = ws.f32(ws.random(n), n), out = ws.poisoned(n);
            Dropout d = new Dropout(0.1, 12345);
            return OpTiming.Work.bytes(2.0 * n * 4, () -> ws.backend().dropout(out, x, d, false));
        }));
    }
}
