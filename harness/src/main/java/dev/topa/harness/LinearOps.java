package dev.topa.harness;

import static dev.topa.harness.Check.GEMM;
import static dev.topa.harness.Check.GRAD;
import static dev.topa.harness.Check.dot;
import static dev.topa.harness.Check.gradient;
import static dev.topa.harness.Check.minus;

import dev.topa.backend.Bf16Weight;
import dev.topa.backend.DenseWeight;
import dev.topa.backend.Dropout;
import dev.topa.backend.LinearWeight;
import dev.topa.backend.LinearWeight.Gradients;
import dev.topa.backend.LinearWeight.LowRank;
import dev.topa.backend.Op;
import dev.topa.backend.PackedWeight;
import dev.topa.tensor.StepArena;
import dev.topa.tensor.Tensor;
import java.util.ArrayList;
import java.util.List;

/**
 * The linear layer in its weight formats ({@link LinearWeight}): fp32 W with its backward, the
 * pre-packed fp32 form, bf16 packs, each with a LoRA term fused in (with and without the adapter's
 * input dropout). Block-sparse weights have their own family.
 */
final class LinearOps implements OpFamily {
    @Override
    public String name() {
        return "linear";
    }

    @Override
    public List<OpCase> cases() {
        List<OpCase> all = new ArrayList<>();
        for (int[] s : new int[][] {{1, 1, 1}, {7, 33, 129}, {129, 65, 7}, {128, 1152, 384}, {33, 384, 1536}, {5, 100, 1100}})
            all.add(packed(s[0], s[1], s[2]));
        for (int[] s : new int[][] {{1, 1, 1}, {7, 33, 19}, {40, 200, 130}}) all.add(backward(s[0], s[1], s[2]));
        // K = 600 makes the weight's columns end inside the second K slice
        for (int[] s : new int[][] {{1, 1, 1, 1}, {7, 33, 19, 4}, {130, 200, 600, 16}, {128, 768, 768, 8}, {33, 65, 513, 3}})
            all.add(lora(s[0], s[1], s[2], s[3], 0));
        all.add(lora(7, 33, 19, 4, 0.25));
        all.add(lora(40, 96, 65, 8, 0.5));
        for (int[] s : new int[][] {{1, 1, 1}, {13, 37, 29}, {97, 64, 384}, {128, 768, 768}, {33, 96, 1100}})
            for (boolean tr : new boolean[] {true, false}) all.add(bf16(s[0], s[1], s[2], tr));
        for (int[] s : new int[][] {{13, 37, 29, 3}, {97, 64, 384, 8}, {40, 48, 96, 20}}) all.add(bf16Lora(s[0], s[1], s[2], s[3]));
        return all;
    }

    private OpCase packed(int m, int n, int k) {
        String name = "packed M=" + m + " N=" + n + " K=" + k;
        return new OpCase(name(), name, Op.PACKED_WEIGHTS, ws -> {
            Tensor x = ws.f32(ws.random(m * k), m, k), w = ws.f32(ws.random(n * k), n, k), b = ws.f32(ws.random(n), n), y = ws.poisoned(m, n);
            PackedWeight.pack(ws.backend(), w, ws.scratch()).forward(ws.backend(), y, x, b);
            ws.close(name, Reference.gemm(false, true, m, n, k, 1, ws.values(x), ws.values(w), 0, null, ws.values(b)), y,
                    ws.productBound(GEMM));
        });
    }

    /** dx = dy W, dW += dy^T x, dbias += column sums, each against finite differences of loss = sum(dy * (x W^T + b)). */
    private OpCase backward(int m, int n, int k) {
        String name = "backward M=" + m + " N=" + n + " K=" + k;
        return new OpCase(name(), name, ws -> {
            Tensor x = ws.f32(ws.random(m * k), m, k), w = ws.f32(ws.random(n * k), n, k), dy = ws.f32(ws.random(m * n), m, n);
            double[] wy = ws.values(dy), xd = ws.values(x), wd = ws.values(w), bd = ws.random(n);
            Tensor dx = ws.poisoned(m, k), dw = ws.f32(ws.random(n * k), n, k), db = ws.f32(ws.random(n), n);
            double[] dw0 = ws.values(dw), db0 = ws.values(db);
            new DenseWeight(w).backward(ws.backend(), ws.scratch(), dx, false, dy, x, null, null, Dropout.NONE, new Gradients(dw, db, null, null));
            gradient(name + " dx", v -> dot(wy, Reference.gemm(false, true, m, n, k, 1, v, wd, 0, null, bd)), xd, ws.floats(dx), ws.rnd(), 48, GRAD);
            gradient(name + " dW (+=)", v -> dot(wy, Reference.gemm(false, true, m, n, k, 1, xd, v, 0, null, bd)), wd,
                    minus(ws.floats(dw), dw0), ws.rnd(), 48, GRAD);
            gradient(name + " dbias (+=)", v -> dot(wy, Reference.gemm(false, true, m, n, k, 1, xd, wd, 0, null, v)), bd,
                    minus(ws.floats(db), db0), ws.rnd(), 48, GRAD);
        });
    }

    /** float64 y = x W^T + bias + scale (d(x) A^T) B^T. */
    static double[] loraRef(double[] x, double[] w, double[] bias, double[] a, double[] b, double scale, int m, int n, int k, int r, Dropout d) {
        double[] u = Reference.gemm(false, true, m, r, k, 1, Reference.dropout(x, d), a, 0, null, null);
        return Reference.add(Reference.gemm(false, true, m, n, k, 1, x, w, 0, null, bias), Reference.gemm(false, true, m, n, r, scale, u, b, 0, null, null));
    }

    /** The fp32 weight with a LoRA term: y and u forward, then dx, dA, dB and dbias against finite differences. */
    private OpCase lora(int m, int n, int k, int r, double dropout) {
        String name = "lora M=" + m + " out=" + n + " in=" + k + " r=" + r + (dropout > 0 ? " dropout " + dropout : "");
        return new OpCase(name(), name, ws -> {
            float scale = 2f / r;
            Dropout d = dropout > 0 ? new Dropout(dropout, ws.rnd().nextInt()) : Dropout.NONE;
            Tensor x = ws.f32(ws.random(m * k), m, k), w = ws.f32(ws.random(n * k), n, k), bias = ws.f32(ws.random(n), n);
            Tensor a = ws.f32(ws.random(r * k), r, k), b = ws.f32(ws.random(n * r), n, r);
            double[] xd = ws.values(x), wd = ws.values(w), bd = ws.values(bias), ad = ws.values(a), bbd = ws.values(b);
            LowRank lr = new LowRank(a, b, scale);
            LinearWeight form = new DenseWeight(w);
            Tensor y = ws.poisoned(m, n);
            Tensor u = form.forward(ws.backend(), ws.scratch(), ws.scratch(), y, x, bias, lr, d);
            ws.close(name + " y", loraRef(xd, wd, bd, ad, bbd, scale, m, n, k, r, d), y, GEMM);
            ws.close(name + " u", Reference.gemm(false, true, m, r, k, 1, Reference.dropout(xd, d), ad, 0, null, null), u, GEMM);
            if ((long) m * n * k > 2_000_000) return; // backward on the smaller shapes (finite differences cost)
            Tensor dy = ws.f32(ws.random(m * n), m, n);
            double[] wy = ws.values(dy);
            Tensor dx = ws.poisoned(m, k), dA = ws.f32(ws.random(r * k), r, k), dB = ws.f32(ws.random(n * r), n, r), dbias = ws.f32(ws.random(n), n);
            double[] a0 = ws.values(dA), b0 = ws.values(dB), bias0 = ws.values(dbias);
            form.backward(ws.backend(), ws.scratch(), dx, false, dy, x, u, lr, d, new Gradients(null, dbias, dA, dB));
            gradient(name + " dx", v -> dot(wy, loraRef(v, wd, bd, ad, bbd, scale, m, n, k, r, d)), xd, ws.floats(dx), ws.rnd(), 48, GRAD);
            gradient(name + " dA (+=)", v -> dot(wy, loraRef(xd, wd, bd, v, bbd, scale, m, n, k, r, d)), ad, minus(ws.floats(dA), a0), ws.rnd(), 48,
                    GRAD);
            gradient(name + " dB (+=)", v -> dot(wy, loraRef(xd, wd, bd, ad, v, scale, m, n, k, r, d)), bbd, minus(ws.floats(dB), b0), ws.rnd(),
                    48, GRAD);
            gradient(name + " dbias (+=)", v -> dot(wy, loraRef(xd, wd, v, ad, bbd, scale, m, n, k, r, d)), bd, minus(ws.floats(dbias), bias0),
                    ws.rnd(), 48, GRAD);
        });
    }

    /** C = alpha A op(B) + beta C + bias with op(B) packed in bf16 (W^T or W), A rounded as it is read; with a rank-3 fp32 term. */
    private OpCase bf16(int m, int n, int k, boolean tr) {
        String name = "bf16 " + m + "x" + n + "x" + k + (tr ? " W^T" : " W");
        return new OpCase(name(), name, Op.BF16_WEIGHTS, ws -> {
            // W [out, in]: op(B) = W^T needs W [n, k]; op(B) = W needs W [k, n]
            Tensor w = tr ? ws.f32(ws.random(n * k), n, k) : ws.f32(ws.random(k * n), k, n);
            Tensor a = ws.f32(ws.random(m * k), m, k), bias = ws.f32(ws.random(n), n), c = ws.f32(ws.random(m * n), m, n);
            double[] c0 = ws.values(c), ad = ws.rounded(a), wd = ws.rounded(w);
            var packed = Bf16Weight.pack(ws.backend(), w, tr, ws.scratch());
            Bf16Weight.gemm(ws.backend(), 0.7f, a, packed, 0.3f, c, bias, null, 0f, false, null);
            double[] ref = Reference.gemm(false, tr, m, n, k, 0.7, ad, wd, 0.3, c0, ws.values(bias));
            ws.close(name, ref, c, ws.productBound(GEMM));
            Tensor c2 = ws.poisoned(m, n);
            Bf16Weight.gemm(ws.backend(), 1f, a, packed, 0f, c2, null, null, 0f, false, null); // beta 0 never reads C
            ws.close(name + " beta 0", Reference.gemm(false, tr, m, n, k, 1, ad, wd, 0, null, null), c2, ws.productBound(GEMM));
            // a rank-3 fp32 term in the same pass (LoRA): B2 [n, 3] (transB2) or [3, n]
            Tensor a2 = ws.f32(ws.random(m * 3), m, 3), b2 = tr ? ws.f32(ws.random(n * 3), n, 3) : ws.f32(ws.random(3 * n), 3, n);
            Tensor c3 = ws.f32(c0, m, n);
            Bf16Weight.gemm(ws.backend(), 0.7f, a, packed, 0.3f, c3, bias, a2, 1.5f, tr, b2);
            double[] low = Reference.gemm(false, tr, m, n, 3, 0.7 * 1.5, ws.values(a2), ws.values(b2), 0, null, null);
            ws.close(name + " + low rank", Reference.add(ref, low), c3, ws.productBound(GEMM));
        });
    }

    /** A LoRA term on a bf16 frozen W with its factor formed in the product's pass: y and u, then dx (overwritten, accumulated), dA, dB. */
    private OpCase bf16Lora(int m, int out, int in, int r) {
        String name = "bf16 lora " + m + "x" + out + "x" + in + " r" + r;
        return new OpCase(name(), name, Op.BF16_WEIGHTS, ws -> {
            Tensor w = ws.f32(ws.random(out * in), out, in), a = ws.f32(ws.random(r * in), r, in), b = ws.f32(ws.random(out * r), out, r);
            Tensor x = ws.f32(ws.random(m * in), m, in), bias = ws.f32(ws.random(out), out), y = ws.poisoned(m, out);
            LowRank lr = new LowRank(a, b, 0.75f);
            Bf16Weight half = Bf16Weight.pack(ws.backend(), w, ws.scratch(), true);
            Tensor u = half.forward(ws.backend(), ws.scratch(), ws.scratch(), y, x, bias, lr, Dropout.NONE);
            double[] uRef = Reference.gemm(false, true, m, r, in, 1, ws.values(x), ws.values(a), 0, null, null);
            ws.close(name + " u", uRef, u, GEMM);
            double[] yRef = Reference.add(Reference.gemm(false, true, m, out, in, 1, ws.rounded(x), ws.rounded(w), 0, null, ws.values(bias)),
                    Reference.gemm(false, true, m, out, r, 0.75, uRef, ws.values(b), 0, null, null));
            ws.close(name + " y", yRef, y, ws.productBound(GEMM));
            // input gradient: g = dy B, dx = dy W + s g A; dA += s g^T x, dB += s dy^T u
            Tensor dy = ws.f32(ws.random(m * out), m, out), dx = ws.poisoned(m, in);
            Tensor dA = ws.f32(new double[r * in], r, in), dB = ws.f32(new double[out * r], out, r);
            half.backward(ws.backend(), ws.scratch(), dx, false, dy, x, u, lr, Dropout.NONE, new Gradients(null, null, dA, dB));
            double[] gRef = Reference.gemm(false, false, m, r, out, 1, ws.values(dy), ws.values(b), 0, null, null);
            double[] dxRef = Reference.add(Reference.gemm(false, false, m, in, out, 1, ws.rounded(dy), ws.rounded(w), 0, null, null),
                    Reference.gemm(false, false, m, in, r, 0.75, gRef, ws.values(a), 0, null, null));
            ws.close(name + " dx", dxRef, dx, ws.productBound(GEMM));
            ws.close(name + " dA", Reference.gemm(true, false, r, in, m, 0.75, gRef, ws.values(x), 0, null, null), dA, GEMM);
            ws.close(name + " dB", Reference.gemm(true, false, out, r, m, 0.75, ws.values(dy), ws.values(u), 0, null, null), dB, GEMM);
            double[] dx0 = ws.random(m * in);
            Tensor dxAcc = ws.f32(dx0, m, in);
            half.backward(ws.backend(), ws.scratch(), dxAcc, true, dy, x, u, lr, Dropout.NONE, Gradients.NONE);
            ws.close(name + " dx accumulated", Reference.add(dxRef, ws.values(ws.f32(dx0, m, in))), dxAcc, ws.productBound(GEMM));
        });
    }

    @Override
    public List<OpTiming> timings(int tokens) {
        List<OpTiming> all = new ArrayList<>();
        for (int[] kn : GemmOps.BERT_SHAPES) { // the frozen base's product at each linear shape
            int k = kn[0], n = kn[1];
            all.add(new OpTiming(name(), "bf16 " + tokens + "x" + k + "x" + n, Op.BF16_WEIGHTS, ws -> {
                Tensor x = ws.f32(ws.random(tokens * k), tokens, k), w = ws.f32(ws.random(n * k), n, k), y = ws.poisoned(tokens, n);
                Bf16Weight half = Bf16Weight.pack(ws.backend(), w, ws.scratch(), false);
                return OpTiming.Work.flops(2.0 * tokens * k * n, () -> half.forward(ws.backend(), y, x, null));
            }));
        }
        int h = 768, r = 8;
        double flops = 2.0 * tokens * h * h, loraFlops = flops + 2.0 * tokens * r * 2 * h;
        all.add(new OpTiming(name(), "fp32 " + h, ws -> {
            Layer l = new Layer(ws, tokens, h, r);
            return OpTiming.Work.flops(flops, () -> new DenseWeight(l.w).forward(ws.backend(), l.y, l.x, l.bias));
        }));
        all.add(new OpTiming(name(), "packed " + h, Op.PACKED_WEIGHTS, ws -> {
            Layer l = new Layer(ws, tokens, h, r);
            PackedWeight p = PackedWeight.pack(ws.backend(), l.w, ws.scratch());
            return OpTiming.Work.flops(flops, () -> p.forward(ws.backend(), l.y, l.x, l.bias));
        }));
        all.add(new OpTiming(name(), "lora r8 forward " + h, ws -> {
            Layer l = new Layer(ws, tokens, h, r);
            LinearWeight form = new DenseWeight(l.w);
            return OpTiming.Work.flops(loraFlops, l.step(() -> form.forward(ws.backend(), l.temp, l.temp, l.y, l.x, l.bias, l.lora, Dropout.NONE)));
        }));
        all.add(new OpTiming(name(), "lora r8 backward " + h, ws -> {
            Layer l = new Layer(ws, tokens, h, r);
            LinearWeight form = new DenseWeight(l.w);
            Tensor u = form.forward(ws.backend(), ws.scratch(), ws.scratch(), l.y, l.x, l.bias, l.lora, Dropout.NONE);
            Gradients g = new Gradients(null, null, ws.f32(new double[r * h], r, h), ws.f32(new double[h * r], h, r));
            return OpTiming.Work.flops(2 * loraFlops, l.step(() -> form.backward(ws.backend(), l.temp, l.dx, false, l.y, l.x, u, l.lora,
                    Dropout.NONE, g)));
        }));
        all.add(new OpTiming(name(), "bf16 lora r8 forward " + h, Op.BF16_WEIGHTS, ws -> {
            Layer l = new Layer(ws, tokens, h, r);
            Bf16Weight half = Bf16Weight.pack(ws.backend(), l.w, ws.scratch(), true);
            return OpTiming.Work.flops(loraFlops, l.step(() -> half.forward(ws.backend(), l.temp, l.temp, l.y, l.x, l.bias, l.lora, Dropout.NONE)));
        }));
        all.add(new OpTiming(name(), "bf16 lora r8 input gradient " + h, Op.BF16_WEIGHTS, ws -> {
            Layer l = new Layer(ws, tokens, h, r);
            Bf16Weight half = Bf16Weight.pack(ws.backend(), l.w, ws.scratch(), true);
            return OpTiming.Work.flops(loraFlops, l.step(() -> half.backward(ws.backend(), l.temp, l.dx, false, l.y, l.x, null, l.lora,
                    Dropout.NONE, Gradients.NONE)));
        }));
        return all;
    }

    /** A [tokens, h] x [h, h] layer with a rank-r adapter; its temporaries come from an arena reset before each timed call. */
    private static final class Layer {
        final Tensor x, w, bias, y, dx;
        final LowRank lora;
        final StepArena temp;

        Layer(Workspace ws, int tokens, int h, int r) {
            x = ws.f32(ws.random(tokens * h), tokens, h);
            w = ws.f32(ws.random(h * h), h, h);
            bias = ws.f32(ws.random(h), h);
            y = ws.poisoned(tokens, h);
            dx = ws.poisoned(tokens, h);
            lora = new LowRank(ws.f32(ws.random(r * h), r, h), ws.f32(ws.random(h * r), h, r), 2f);
            temp = ws.arena();
        }

        Runnable step(Runnable call) {
            return () -> {
                temp.reset();
                call.run();
            };
        }
    }
}
