package dev.topa.harness;

import static dev.topa.harness.Check.ROW;

import dev.topa.backend.AdamWConfig;
import dev.topa.backend.Backend;
import dev.topa.tensor.Tensor;
import java.util.ArrayList;
import java.util.List;

/** AdamW (PyTorch semantics, the clipping scale applied inside), one tensor or many in one call, and the sum of squares in double. */
final class OptimizerOps implements OpFamily {
    @Override
    public String name() {
        return "optimizer";
    }

    @Override
    public List<OpCase> cases() {
        List<OpCase> all = new ArrayList<>();
        for (int n : new int[] {1, 7, 1000, 100_003}) all.add(adamw(n));
        for (int n : new int[] {1, 15, 100_003}) {
            String name = "sumOfSquares n=" + n;
            all.add(new OpCase(name(), name, ws -> {
                Tensor t = ws.f32(ws.random(n), n);
                double ref = 0;
                for (double v : ws.values(t)) ref += v * v;
                double got = ws.backend().sumOfSquares(t);
                Check.isTrue(Math.abs(got - ref) <= 1e-12 * ref, name + ": " + got + ", want " + ref);
            }));
        }
        all.add(many());
        all.add(clipOnTheDevice());
        return all;
    }

    /**
     * clipScale decides the clip factor where the gradients are and adamwStep reads it there: a
     * clipped step (one gradient element past the square root of fp32's largest value), an
     * unclipped one, then a step with a NaN gradient, which must be recorded (step, loss, norm) and
     * leave the parameters as they were, as must every step after it.
     */
    private OpCase clipOnTheDevice() {
        String name = "clipScale, then adamw reading the scale on the device";
        return new OpCase(name(), name, ws -> {
            int[] sizes = {5, 1003};
            double lr = 1e-2, b1 = 0.9, b2 = 0.999, eps = 1e-8, wd = 0.01;
            AdamWConfig cfg = new AdamWConfig(lr, b1, b2, eps, wd);
            List<Tensor[]> group = new ArrayList<>();
            List<double[][]> ref = new ArrayList<>();
            for (int n : sizes) {
                Tensor p = ws.f32(ws.random(n), n), m = ws.f32(new double[n], n), v = ws.f32(new double[n], n);
                group.add(new Tensor[] {p, null, m, v});
                ref.add(new double[][] {ws.values(p), null, new double[n], new double[n]});
            }
            Tensor state = ws.f32(new double[Backend.CLIP_STATE], Backend.CLIP_STATE), loss = ws.f32(new double[] {0.75}, 1);
            float[] maxNorms = {1f, 1e6f, 1f, 1f};
            for (int step = 1; step <= 4; step++) {
                double sq = 0;
                List<double[]> gds = new ArrayList<>();
                for (int i = 0; i < sizes.length; i++) {
                    double[] gd = ws.random(sizes[i]);
                    // step 1: an element whose square overflows fp32 (the norm must still be finite, the step clipped, not refused),
                    // where the backend sums in double (one that sums in float would refuse the step)
                    if (step == 1 && i == 1 && ws.backend().sumsInDouble()) gd[5] = 3e20;
                    if (step == 3 && i == 1) gd[17] = Double.NaN;
                    Tensor g = ws.f32(gd, sizes[i]);
                    gds.add(ws.values(g));
                    for (double x : ws.values(g)) sq += x * x;
                    group.get(i)[1] = g;
                }
                ws.backend().clipScale(group.stream().map(t -> t[1]).toList(), maxNorms[step - 1], loss, step, state);
                double norm = Math.sqrt(sq), want = step >= 3 ? 0 : norm > maxNorms[step - 1] ? maxNorms[step - 1] / norm : 1;
                double[] s = ws.values(state);
                Check.isTrue(Math.abs(s[Backend.CLIP_SCALE] - want) <= 1e-6 * want, name + " step " + step + ": scale "
                        + s[Backend.CLIP_SCALE] + ", want " + want);
                Check.isTrue(s[Backend.CLIP_FIRST_BAD_STEP] == (step >= 3 ? 3 : 0) && (step < 3 || (Double.isNaN(s[Backend.CLIP_BAD_NORM])
                        && s[Backend.CLIP_BAD_LOSS] == 0.75)), name + " step " + step + ": state " + java.util.Arrays.toString(s));
                ws.backend().adamwStep(group, cfg, step, state.rows(Backend.CLIP_SCALE, Backend.CLIP_SCALE + 1));
                for (int i = 0; i < sizes.length && want != 0; i++) {
                    double[][] r = ref.get(i);
                    double[] gd = gds.get(i);
                    for (int k = 0; k < gd.length; k++) gd[k] = (float) (gd[k] * (float) want);
                    Reference.adamw(r[0], gd, r[2], r[3], lr, b1, b2, eps, wd, step);
                }
                for (int i = 0; i < sizes.length; i++) ws.close(name + " step " + step + " param " + i, ref.get(i)[0], group.get(i)[0], ROW);
            }
        });
    }

    private OpCase adamw(int n) {
        String name = "adamw n=" + n;
        return new OpCase(name(), name, ws -> {
            double lr = 1e-2, b1 = 0.9, b2 = 0.999, eps = 1e-8, wd = 0.01;
            Tensor p = ws.f32(ws.random(n), n), m = ws.f32(new double[n], n), v = ws.f32(new double[n], n);
            double[] pd = ws.values(p), md = new double[n], vd = new double[n];
            AdamWConfig cfg = new AdamWConfig(lr, b1, b2, eps, wd);
            for (int step = 1; step <= 3; step++) {
                Tensor g = ws.f32(ws.random(n), n);
                float clip = step == 2 ? 0.37f : 1f; // step 2: a clipped gradient, scaled inside the kernel
                double[] gd = ws.values(g);
                for (int i = 0; i < n; i++) gd[i] = (float) (gd[i] * clip);
                Reference.adamw(pd, gd, md, vd, lr, b1, b2, eps, wd, step);
                ws.backend().adamwStep(p, g, m, v, cfg, step, clip);
                ws.close(name + " step " + step + " param", pd, p, ROW);
                ws.close(name + " step " + step + " m", md, m, ROW);
                ws.close(name + " step " + step + " v", vd, v, ROW);
            }
        });
    }

    /** Many tensors in one call (one launch on a device): each follows the reference of its own. */
    private OpCase many() {
        String name = "adamw and sumOfSquares over tensors of 1, 7 and 1003";
        return new OpCase(name(), name, ws -> {
            int[] sizes = {1, 7, 1003};
            double lr = 1e-2, b1 = 0.9, b2 = 0.999, eps = 1e-8, wd = 0.01;
            List<Tensor[]> group = new ArrayList<>();
            List<double[][]> ref = new ArrayList<>();
            double sq = 0;
            for (int n : sizes) {
                Tensor p = ws.f32(ws.random(n), n), g = ws.f32(ws.random(n), n), m = ws.f32(new double[n], n), v = ws.f32(new double[n], n);
                group.add(new Tensor[] {p, g, m, v});
                double[] gd = ws.values(g);
                for (double x : gd) sq += x * x;
                for (int i = 0; i < n; i++) gd[i] = (float) (gd[i] * 0.5f);
                ref.add(new double[][] {ws.values(p), gd, new double[n], new double[n]});
            }
            double got = ws.backend().sumOfSquares(group.stream().map(t -> t[1]).toList());
            Check.isTrue(Math.abs(got - sq) <= 1e-12 * sq, name + ": sum of squares " + got + ", want " + sq);
            ws.backend().adamwStep(group, new AdamWConfig(lr, b1, b2, eps, wd), 1, 0.5f);
            for (int i = 0; i < sizes.length; i++) {
                double[][] r = ref.get(i);
                Reference.adamw(r[0], r[1], r[2], r[3], lr, b1, b2, eps, wd, 1);
                ws.close(name + " param " + i, r[0], group.get(i)[0], ROW);
                ws.close(name + " v " + i, r[3], group.get(i)[3], ROW);
            }
        });
    }

    @Override
    public List<OpTiming> timings(int tokens) {
        int n = 22_000_000; // MiniLM's parameters: a full fine-tuning step's optimizer
        return List.of(new OpTiming(name(), "adamw 22M", ws -> {
            Tensor p = ws.f32(ws.random(n), n), g = ws.f32(ws.random(n), n), m = ws.f32(new double[n], n), v = ws.f32(new double[n], n);
            AdamWConfig cfg = new AdamWConfig(1e-3, 0.9, 0.999, 1e-8, 0.01);
            return OpTiming.Work.bytes(7.0 * n * 4, () -> ws.backend().adamwStep(p, g, m, v, cfg, 1, 1f));
        }), new OpTiming(name(), "sumOfSquares 22M", ws -> {
            Tensor g = ws.f32(ws.random(n), n);
            return OpTiming.Work.bytes(4.0 * n, () -> ws.backend().sumOfSquares(g));
        }));
    }
}
