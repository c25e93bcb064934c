package dev.topa.harness;

import dev.topa.backend.Op;
import dev.topa.tensor.Tensor;
import java.util.ArrayList;
import java.util.List;

/** The importance scores' dot products: per example and feature group (heads, neurons), and per 32 x 32 block. */
final class ImportanceOps implements OpFamily {
    @Override
    public String name() {
        return "importance";
    }

    @Override
    public List<OpCase> cases() {
        List<OpCase> all = new ArrayList<>();
        for (int[] s : new int[][] {{1, 1, 1, 1}, {3, 7, 4, 8}, {2, 33, 12, 64}, {5, 9, 37, 1}}) {
            int b = s[0], seq = s[1], g = s[2], d = s[3];
            String name = "groupDot B=" + b + " S=" + seq + " G=" + g + " D=" + d;
            all.add(new OpCase(name(), name, Op.IMPORTANCE, ws -> {
                Tensor x = ws.f32(ws.random(b * seq * g * d), b, seq, (long) g * d), dx = ws.f32(ws.random(b * seq * g * d), b, seq, (long) g * d);
                Tensor out = ws.poisoned(b, g);
                ws.backend().groupDot(out, x, dx, g);
                double[] xv = ws.values(x), dv = ws.values(dx), ref = new double[b * g];
                for (int i = 0; i < b; i++)
                    for (int t = 0; t < seq; t++)
                        for (int j = 0; j < g * d; j++) ref[i * g + j / d] += xv[(i * seq + t) * g * d + j] * dv[(i * seq + t) * g * d + j];
                ws.close(name, ref, out, Check.ROW);
            }));
        }
        for (int[] s : new int[][] {{32, 32}, {64, 96}, {128, 32}}) {
            int n = s[0], k = s[1];
            String name = "blockDot " + n + "x" + k;
            all.add(new OpCase(name(), name, Op.IMPORTANCE, ws -> {
                Tensor w = ws.f32(ws.random(n * k), n, k), g = ws.f32(ws.random(n * k), n, k), sums = ws.poisoned(n / 32, k / 32);
                double[] wd = ws.values(w), gd = ws.values(g), ref = new double[(n / 32) * (k / 32)];
                for (int i = 0; i < n; i++) for (int j = 0; j < k; j++) ref[(i / 32) * (k / 32) + j / 32] += wd[i * k + j] * gd[i * k + j];
                ws.backend().blockDot(sums, w, g);
                ws.close(name, ref, sums, Check.ROW);
            }));
        }
        return all;
    }

    @Override
    public List<OpTiming> timings(int tokens) {
        int seq = Math.min(128, tokens), batch = Math.max(1, tokens / seq), c = 768;
        return List.of(new OpTiming(name(), "groupDot heads " + batch + "x" + seq + "x" + c, Op.IMPORTANCE, ws -> {
            Tensor x = ws.f32(ws.random(batch * seq * c), batch, seq, c), dx = ws.f32(ws.random(batch * seq * c), batch, seq, c);
            Tensor out = ws.poisoned(batch, 12);
            return OpTiming.Work.bytes(2.0 * batch * seq * c * 4, () -> ws.backend().groupDot(out, x, dx, 12));
        }), new OpTiming(name(), "blockDot 3072x768", Op.IMPORTANCE, ws -> {
            Tensor w = ws.f32(ws.random(3072 * 768), 3072, 768), g = ws.f32(ws.random(3072 * 768), 3072, 768), sums = ws.poisoned(96, 24);
            return OpTiming.Work.bytes(2.0 * 3072 * 768 * 4, () -> ws.backend().blockDot(sums, w, g));
        }));
    }
}
