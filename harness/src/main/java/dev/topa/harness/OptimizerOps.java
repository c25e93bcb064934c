package dev.topa.harness;

import static dev.topa.harness.Check.ROW;

import dev.topa.backend.AdamWConfig;
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
        return all;
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
