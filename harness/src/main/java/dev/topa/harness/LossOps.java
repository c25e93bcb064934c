package dev.topa.harness;

import static dev.topa.harness.Check.GRAD;
import static dev.topa.harness.Check.ROW;
import static dev.topa.harness.Check.gradient;

import dev.topa.tensor.Tensor;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;

/** Softmax cross-entropy (ignored labels), mean squared error, distillation from a teacher's outputs and hidden states, and their gradients. */
final class LossOps implements OpFamily {
    @Override
    public String name() {
        return "loss";
    }

    @Override
    public List<OpCase> cases() {
        List<OpCase> all = new ArrayList<>();
        for (int[] sh : new int[][] {{1, 2}, {7, 3}, {33, 5}, {129, 2}}) {
            int n = sh[0], classes = sh[1];
            String name = "crossEntropy N=" + n + " C=" + classes;
            all.add(new OpCase(name(), name, ws -> {
                Tensor logits = ws.f32(ws.uniform(n * classes, -4, 4), n, classes);
                int[] labels = ws.rnd().ints(n, 0, classes).toArray();
                if (n > 3) labels[2] = -1; // ignored row
                double[] ld = ws.values(logits);
                Tensor losses = ws.poisoned(n), tl = ws.i32(labels, n);
                float mean = ws.backend().crossEntropyForward(losses, logits, tl);
                double[] ref = Reference.crossEntropy(ld, labels, n, classes);
                ws.close(name + " losses", Arrays.copyOf(ref, n), losses, ROW);
                Check.close(name + " mean", new double[] {ref[n]}, new float[] {mean}, ROW);
                Tensor dl = ws.poisoned(n, classes);
                ws.backend().crossEntropyBackward(dl, logits, tl, 0.7f);
                gradient(name + " dlogits", v -> 0.7 * Reference.crossEntropy(v, labels, n, classes)[n], ld, ws.floats(dl), ws.rnd(), 64, GRAD);
            }));
        }
        all.add(new OpCase(name(), "crossEntropy N=0 (an empty batch)", ws -> {
            Tensor losses = ws.poisoned(0), logits = ws.f32(new double[0], 0, 3), labels = ws.i32(new int[0], 0);
            float mean = ws.backend().crossEntropyForward(losses, logits, labels);
            Check.isTrue(mean == 0f, "crossEntropy N=0: mean " + mean + ", want 0");
            ws.backend().crossEntropyBackward(ws.poisoned(0, 3), logits, labels, 1f);
        }));
        for (int n : new int[] {1, 7, 33, 1000}) {
            String name = "mse N=" + n;
            all.add(new OpCase(name(), name, ws -> {
                Tensor p = ws.f32(ws.random(n), n), t = ws.f32(ws.random(n), n);
                double[] pd = ws.values(p), td = ws.values(t);
                float loss = ws.backend().mseForward(p, t);
                Check.close(name, new double[] {Reference.mse(pd, td)}, new float[] {loss}, ROW);
                Tensor dp = ws.poisoned(n);
                ws.backend().mseBackward(dp, p, t, 1.5f);
                gradient(name + " dpred", v -> 1.5 * Reference.mse(v, td), pd, ws.floats(dp), ws.rnd(), 64, GRAD);
            }));
        }
        for (int[] sh : new int[][] {{1, 2}, {7, 3}, {33, 1}, {65, 2}})
            for (double temperature : new double[] {1, 2.5}) {
                int n = sh[0], classes = sh[1];
                String name = "distillation N=" + n + " C=" + classes + " T=" + temperature;
                all.add(new OpCase(name(), name, ws -> {
                    Tensor s = ws.f32(ws.uniform(n * classes, -4, 4), n, classes), t = ws.f32(ws.uniform(n * classes, -4, 4), n, classes);
                    double[] sd = ws.values(s), td = ws.values(t);
                    float loss = ws.backend().distillationForward(s, t, (float) temperature);
                    Check.close(name, new double[] {Reference.distillation(sd, td, n, classes, temperature)}, new float[] {loss}, ROW);
                    double[] base = ws.uniform(n * classes, -1, 1); // the gradient adds to what is there (the label loss's)
                    Tensor d = ws.f32(base, n, classes);
                    ws.backend().distillationBackward(d, s, t, (float) temperature, 0.6f);
                    float[] got = ws.floats(d);
                    double[] before = ws.values(ws.f32(base, n, classes)); // base as stored (f32)
                    for (int i = 0; i < got.length; i++) got[i] -= (float) before[i];
                    gradient(name + " dstudent", v -> 0.6 * Reference.distillation(v, td, n, classes, temperature), sd, got, ws.rnd(), 64, GRAD);
                }));
            }
        for (int[] sh : new int[][] {{1, 1, 3}, {2, 7, 5}, {3, 33, 17}}) {
            int bsz = sh[0], seq = sh[1], c = sh[2], n = bsz * seq * c;
            for (boolean masked : new boolean[] {false, true}) {
                String name = "hiddenMatch B=" + bsz + " S=" + seq + " C=" + c + (masked ? " padded" : "");
                all.add(new OpCase(name(), name, ws -> {
                    Tensor s = ws.f32(ws.uniform(n, -2, 2), bsz, seq, c), t = ws.f32(ws.uniform(n, -2, 2), bsz, seq, c);
                    int[] m = new int[bsz * seq];
                    for (int i = 0; i < m.length; i++) m[i] = !masked || i % seq < Math.max(1, seq - 2 * (i / seq) - 1) ? 1 : 0;
                    Tensor tm = masked ? ws.i32(m, bsz, seq) : null;
                    int[] mr = masked ? m : null;
                    double[] sd = ws.values(s), td = ws.values(t);
                    float loss = ws.backend().hiddenMatchForward(s, t, tm);
                    Check.close(name, new double[] {Reference.hiddenMatch(sd, td, mr, c)}, new float[] {loss}, ROW);
                    double[] base = ws.uniform(n, -1, 1); // the gradient adds to what is there (the layer's own)
                    Tensor d = ws.f32(base, bsz, seq, c);
                    ws.backend().hiddenMatchBackward(d, s, t, tm, 0.7f);
                    float[] got = ws.floats(d);
                    double[] before = ws.values(ws.f32(base, bsz, seq, c));
                    for (int i = 0; i < got.length; i++) got[i] -= (float) before[i];
                    if (masked) // padding gets nothing
                        for (int i = 0; i < got.length; i++) if (m[i / c] == 0 && got[i] != 0) throw new AssertionError(name + ": padding row " + i / c + " got " + got[i]);
                    gradient(name + " dstudent", v -> 0.7 * Reference.hiddenMatch(v, td, mr, c), sd, got, ws.rnd(), 64, GRAD);
                }));
            }
        }
        return all;
    }

    @Override
    public List<OpTiming> timings(int tokens) {
        return List.of(new OpTiming(name(), "crossEntropy 32x2", ws -> {
            Tensor logits = ws.f32(ws.random(64), 32, 2), losses = ws.poisoned(32), labels = ws.i32(ws.rnd().ints(32, 0, 2).toArray(), 32);
            return OpTiming.Work.bytes(32 * 3 * 4, () -> ws.backend().crossEntropyForward(losses, logits, labels));
        }));
    }
}
