package dev.topa.backend;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.topa.backend.cpu.CpuBackend;
import dev.topa.tensor.DType;
import dev.topa.tensor.MemoryCategory;
import dev.topa.tensor.Tensor;
import dev.topa.tensor.TensorScope;
import java.util.EnumSet;
import java.util.List;
import java.util.SplittableRandom;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;

/**
 * The argument checks every op makes before its kernel: each bad call is refused with an
 * {@link IllegalArgumentException} that names the op and the tensor, and the capabilities a backend
 * lacks are refused up front, naming them. (The ops' numbers are the op harness's: harness/.)
 */
class BackendChecksTest {
    private final Backend be = CpuBackend.create();
    private final TensorScope s = new TensorScope("checks", MemoryCategory.ACTIVATIONS);
    private final SplittableRandom rnd = new SplittableRandom(7);

    @AfterEach
    void close() {
        s.close();
    }

    private Tensor f32(long... shape) {
        Tensor t = s.allocate(DType.F32, shape);
        float[] v = new float[(int) t.numel()];
        for (int i = 0; i < v.length; i++) v[i] = (float) (rnd.nextDouble() - 0.5);
        return t.copyFrom(v);
    }

    private Tensor i32(int[] v, long... shape) {
        return s.allocate(DType.I32, shape).copyFrom(v);
    }

    private static void refused(String prefix, Runnable call) {
        var e = assertThrows(IllegalArgumentException.class, call::run);
        assertTrue(e.getMessage().startsWith(prefix), e.getMessage());
    }

    @Test
    void shapeErrorsNameTheOpAndTheTensor() {
        Tensor a = f32(2, 3), b = f32(4, 2), c = f32(2, 2);
        refused("gemm: inner dimensions differ", () -> be.gemm(false, false, 1, a, b, 0, c, null));
        refused("layernormForward: out", () -> be.layernormForward(c, f32(2), f32(2), null, a, null, f32(3), f32(3), 1e-5f));
        var e = assertThrows(IllegalArgumentException.class, () -> be.softmaxForward(c, i32(new int[] {1, 2}, 1, 2).reshape(2)));
        assertTrue(e.getMessage().contains("must be f32"), e.getMessage());
        refused("zeroOffDiagonal:", () -> be.zeroOffDiagonal(f32(2, 5), 3));
        refused("copy: element counts differ", () -> be.copy(f32(4), f32(5)));
        refused("copy: dtypes differ", () -> be.copy(f32(2), i32(new int[] {1, 2}, 2)));
        refused("adamwStep", () -> be.adamwStep(List.<Tensor[]>of(new Tensor[] {c, c}), new AdamWConfig(1e-3, 0.9, 0.999, 1e-8, 0), 1, 1f));
        refused("convert: converts f32 <-> bf16", () -> be.convert(f32(5), f32(5)));
        refused("convert: element counts differ", () -> be.convert(s.allocate(DType.BF16, 4), f32(5)));
        refused("transpose: out", () -> be.transpose(f32(7, 19), f32(7, 19), 0f));
        refused("blockDot: w must be", () -> be.blockDot(f32(1), f32(40, 32), f32(40, 32)));
        refused("attentionForwardPacked: qkv", () -> be.attentionForwardPacked(f32(25, 24), f32(25, 72), new int[] {5, 1}, 3, 1f));
    }

    @Test
    void badIdsAndLabelsSayWhere() {
        int[] ids = {1, 2, 3, 4, 5, 6, 50, 8}; // sequence 1, token 2 (S = 4)
        var e = assertThrows(IllegalArgumentException.class, () -> be.embeddingForward(f32(2, 4, 8), i32(ids, 2, 4), null, null, f32(10, 8),
                f32(4, 8), null));
        assertTrue(e.getMessage().contains("token 2 of sequence 1") && e.getMessage().contains("id 50"), e.getMessage());
        // longer sequences than position rows: refused by both directions before any kernel indexes a row past the table
        int[] fine = {1, 2, 3, 4, 5, 6, 7, 8};
        refused("embeddingForward: sequences of 4 tokens, but wpe has 3 positions", () -> be.embeddingForward(f32(2, 4, 8), i32(fine, 2, 4), null, null,
                f32(10, 8), f32(3, 8), null));
        refused("embeddingBackward: sequences of 4 tokens, but wpe has 3 positions", () -> be.embeddingBackward(null, f32(3, 8), null, f32(2, 4, 8),
                i32(fine, 2, 4), null, null, f32(10, 8), f32(3, 8), null));
        var e2 = assertThrows(IllegalArgumentException.class, () -> be.crossEntropyForward(f32(4), f32(4, 3), i32(new int[] {0, 2, 3, 1}, 4)));
        assertTrue(e2.getMessage().contains("label 3 of row 2"), e2.getMessage());
    }

    @Test
    void weightFormatsCheckTheirOperands() {
        int m = 13, out = 37, in = 29, r = 3;
        Tensor w = f32(out, in), a = f32(r, in), b = f32(out, r), x = f32(m, in), bias = f32(out), y = f32(m, out), dy = f32(m, out), dx = f32(m, in);
        Bf16Weight half = Bf16Weight.pack(be, w, s, true), forwardOnly = Bf16Weight.pack(be, w, s, false);
        LinearWeight.LowRank lora = new LinearWeight.LowRank(a, b, 0.75f);
        refused("loraForwardBf16:", () -> half.productWithFactor(be, y, f32(m, r + 1), x, bias, lora));
        refused("loraInputGradientBf16: B", () -> half.inputProductWithFactor(be, dx, false, f32(m, r), dy, new LinearWeight.LowRank(a, f32(in, r), 0.75f)));
        var e = assertThrows(UnsupportedOperationException.class, () -> forwardOnly.inputProductWithFactor(be, dx, false, f32(m, r), dy, lora));
        assertTrue(e.getMessage().contains("no input gradient"), e.getMessage());
        assertFalse(forwardOnly.hasInputGradient());
        var e2 = assertThrows(UnsupportedOperationException.class, () -> PackedWeight.pack(be, w, s).backward(be, s, dx, false, dy, x, null, null,
                Dropout.NONE, LinearWeight.Gradients.NONE));
        assertTrue(e2.getMessage().contains("inference"), e2.getMessage());
        var e3 = assertThrows(UnsupportedOperationException.class, () -> half.backward(be, s, dx, false, dy, x, null, null, Dropout.NONE,
                new LinearWeight.Gradients(f32(out, in), null, null, null)));
        assertTrue(e3.getMessage().contains("frozen"), e3.getMessage());
        refused("packBlockSparse: W must be", () -> BlockSparseWeight.pack(be, f32(40, 32), new boolean[1][1], false, s, false));
        Backend other = CpuBackend.create(dev.topa.backend.cpu.Isa.SCALAR);
        if (!other.name().equals(be.name()))
            refused("linearForward: weight was packed by", () -> PackedWeight.pack(be, w, s).forward(other, y, x, bias));
    }

    @Test
    void unsupportedOpsAreRefusedBeforeARunNamingEveryOne() {
        Backend partial = CpuBackend.create().without(EnumSet.of(Op.ATTENTION_DROPOUT, Op.BF16_WEIGHTS));
        assertTrue(partial.supports(Op.GEMM) && !partial.supports(Op.ATTENTION_DROPOUT));
        partial.require(List.of(Op.GEMM, Op.LAYERNORM), "inference");
        var e = assertThrows(UnsupportedOperationException.class, () -> partial.require(List.of(Op.GEMM, Op.ATTENTION_DROPOUT, Op.BF16_WEIGHTS),
                "training"));
        assertTrue(e.getMessage().startsWith("training needs what") && e.getMessage().contains("attention-dropout")
                && e.getMessage().contains("bf16-weights"), e.getMessage());
        for (Op op : Op.values()) if (op.required()) assertTrue(be.supports(op), op + " is required");
        assertEquals(Op.values().length - 1, EnumSet.allOf(Op.class).stream().filter(be::supports).count(), "the CPU runs every op but 2:4");
    }
}
