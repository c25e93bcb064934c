package dev.topa.harness;

import dev.topa.tensor.DType;
import dev.topa.tensor.Tensor;
import java.util.ArrayList;
import java.util.List;

/** Data movement: f32 <-> bf16 conversion, transpose, rows broadcast, the block-diagonal mask, copy and zero. */
final class LayoutOps implements OpFamily {
    @Override
    public String name() {
        return "layout";
    }

    @Override
    public List<OpCase> cases() {
        List<OpCase> all = new ArrayList<>();
        all.add(new OpCase(name(), "convert f32 -> bf16 -> f32, n=1037", LayoutOps::convert));
        for (int[] s : new int[][] {{7, 19}, {1, 1}, {64, 8}, {8, 3072}}) {
            int rows = s[0], cols = s[1];
            all.add(new OpCase(name(), "transpose " + rows + "x" + cols, ws -> {
                Tensor in = ws.f32(ws.random(rows * cols), rows, cols), out = ws.f32(ws.random(rows * cols), cols, rows);
                double[] x = ws.values(in), o = ws.values(out), ref = new double[rows * cols];
                for (int i = 0; i < rows; i++) for (int j = 0; j < cols; j++) ref[j * rows + i] = x[i * cols + j] + 0.5 * o[j * rows + i];
                ws.backend().transpose(out, in, 0.5f);
                ws.close("transpose accumulated", ref, out, 1e-6);
                Tensor over = ws.poisoned(cols, rows);
                ws.backend().transpose(over, in, 0f);
                for (int i = 0; i < rows; i++) for (int j = 0; j < cols; j++) ref[j * rows + i] = x[i * cols + j];
                ws.close("transpose", ref, over, 0);
            }));
        }
        all.add(new OpCase(name(), "zeroOffDiagonal, broadcastRows, copy, zero", ws -> {
            int rows = 9, cols = 15, blocks = 3;
            Tensor t = ws.f32(ws.random(rows * cols), rows, cols);
            double[] x = ws.values(t), ref = x.clone();
            for (int i = 0; i < rows; i++)
                for (int j = 0; j < cols; j++)
                    if (i / (rows / blocks) != j / (cols / blocks)) ref[i * cols + j] = 0;
            ws.backend().zeroOffDiagonal(t, blocks);
            ws.close("zeroOffDiagonal", ref, t, 0);
            Tensor row = ws.f32(ws.random(cols), cols);
            double[] bc = new double[7 * cols];
            for (int r = 0; r < 7; r++) System.arraycopy(ws.values(row), 0, bc, r * cols, cols);
            Tensor y = ws.poisoned(7, cols);
            ws.backend().broadcastRows(y, row);
            ws.close("broadcastRows", bc, y, 0);
            Tensor c = ws.poisoned(rows, cols);
            ws.backend().copy(c, ws.f32(x, rows, cols));
            ws.close("copy", x, c, 0);
            ws.backend().zero(c);
            ws.close("zero", new double[rows * cols], c, 0);
        }));
        return all;
    }

    /** Round to nearest even on the way to bf16 (ties, NaN, overflow to infinity, -0), widening back exact. */
    private static void convert(Workspace ws) {
        int n = 1037; // odd: the tails of vector loops
        double[] x = new double[n];
        float[] xf = new float[n];
        for (int i = 0; i < n; i++) {
            float v = (float) ((ws.rnd().nextDouble() - 0.5) * Math.pow(10, ws.rnd().nextInt(-6, 7)));
            int bits = Float.floatToRawIntBits(v);
            xf[i] = i % 5 == 0 ? Float.intBitsToFloat((bits & 0xffff0000) | 0x8000) : v; // every fifth an exact tie
        }
        xf[1] = Float.NaN;
        xf[2] = Float.MAX_VALUE; // rounds up past the largest bf16: infinity
        xf[3] = Float.NEGATIVE_INFINITY;
        xf[4] = -0f;
        for (int i = 0; i < n; i++) x[i] = xf[i];
        Tensor in = ws.f32(x, n), half = ws.allocate(DType.BF16, n), back = ws.poisoned(n);
        ws.backend().convert(half, in);
        ws.backend().convert(back, half);
        float[] got = ws.floats(back);
        for (int i = 0; i < n; i++) {
            float want = nearestEvenBf16(xf[i]);
            Check.isTrue(Float.isNaN(want) ? Float.isNaN(got[i]) : Float.floatToRawIntBits(want) == Float.floatToRawIntBits(got[i]),
                    "element " + i + ": " + xf[i] + " -> " + got[i] + ", want " + want);
        }
    }

    /** The bf16 value nearest to x (ties to an even last mantissa bit), found by comparing the two neighbours in float64. */
    static float nearestEvenBf16(float x) {
        if (Float.isNaN(x) || Float.isInfinite(x)) return x;
        int bits = Float.floatToRawIntBits(x);
        float down = Float.intBitsToFloat(bits & 0xffff0000), up = Float.intBitsToFloat((bits & 0xffff0000) + 0x10000);
        double dDown = Math.abs((double) x - down), dUp = Math.abs((double) up - x);
        if (Float.isInfinite(up)) dUp = Math.abs(Math.scalb(1.0, 128) * Math.signum(x) - x); // past the largest finite value
        if (dDown != dUp) return dDown < dUp ? down : up;
        return (bits & 0x10000) == 0 ? down : up;
    }

    @Override
    public List<OpTiming> timings(int tokens) {
        int n = tokens * 768;
        return List.of(new OpTiming(name(), "convert f32 to bf16 " + tokens + "x768", ws -> {
            Tensor x = ws.f32(ws.random(n), n), half = ws.allocate(DType.BF16, n);
            return OpTiming.Work.bytes(6.0 * n, () -> ws.backend().convert(half, x));
        }), new OpTiming(name(), "convert bf16 to f32 " + tokens + "x768", ws -> {
            Tensor x = ws.poisoned(n), half = ws.allocate(DType.BF16, n);
            ws.backend().convert(half, ws.f32(ws.random(n), n));
            return OpTiming.Work.bytes(6.0 * n, () -> ws.backend().convert(x, half));
        }), new OpTiming(name(), "transpose 3072x8", ws -> {
            Tensor in = ws.f32(ws.random(3072 * 8), 3072, 8), out = ws.poisoned(8, 3072);
            return OpTiming.Work.bytes(2.0 * 3072 * 8 * 4, () -> ws.backend().transpose(out, in, 0f));
        }));
    }
}
