package dev.topa.io;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.ObjectMapper;
import dev.topa.backend.cpu.CpuBackend;
import dev.topa.model.BertConfig;
import dev.topa.model.BertModel;
import dev.topa.model.BertNames;
import dev.topa.model.BertNames.Slot;
import dev.topa.tensor.DType;
import dev.topa.tensor.Device;
import dev.topa.tensor.MemoryCategory;
import dev.topa.tensor.MemoryTracker;
import dev.topa.tensor.StepArena;
import dev.topa.tensor.Tensor;
import dev.topa.tensor.TensorScope;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Map;
import java.util.SplittableRandom;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * A Hugging Face directory read compacted for inference (a teacher beside its student) is the
 * model compacted in memory, bit for bit, in fp32 and in bf16, and the read never holds the whole
 * model: what it allocates at its peak is the copy and one linear weight being packed.
 */
class CompactedLoadTest {
    // a pruned shape: a layer without heads, one without FFN neurons, odd widths
    private static final BertConfig CONFIG = new BertConfig(211, 64, 40, 2, 16, new int[] {4, 0, 3}, new int[] {96, 37, 0}, 1e-12f);
    private static final int[] TOKENS = {0, 3, 7, 8, 19, 50, 51, 52, 120, 199, 210};

    @TempDir
    Path tmp;

    private static BertModel randomModel() {
        BertModel m = new BertModel(CONFIG);
        SplittableRandom rnd = new SplittableRandom(8);
        for (Tensor t : m.parameters().values()) {
            float[] v = new float[(int) t.numel()];
            for (int i = 0; i < v.length; i++) v[i] = (float) (0.2 * (2 * rnd.nextDouble() - 1));
            t.copyFrom(v);
        }
        return m;
    }

    @Test
    void readCompactedIsTheModelCompactedBitForBitWithoutEverHoldingItWhole() {
        CpuBackend be = CpuBackend.create();
        MemoryTracker mem = MemoryTracker.of(Device.CPU);
        try (BertModel whole = randomModel(); StepArena arena = new StepArena("compact read"); StepArena work = new StepArena("work")) {
            HfBertDirectory.save(whole, tmp);
            int b = 2, s = 8;
            int[] ids = new int[b * s], mask = new int[b * s];
            SplittableRandom rnd = new SplittableRandom(2);
            for (int i = 0; i < ids.length; i++) {
                boolean real = i % s < s - 3 * (i / s); // ragged: 8 and 5 real tokens
                ids[i] = real ? TOKENS[rnd.nextInt(TOKENS.length)] : 0;
                mask[i] = real ? 1 : 0;
            }
            Tensor ti = arena.allocate(DType.I32, b, s).copyFrom(ids), tm = arena.allocate(DType.I32, b, s).copyFrom(mask);
            long largestSlot = 0;
            for (int l = 0; l < CONFIG.layers(); l++) for (Slot slot : Slot.values()) largestSlot = Math.max(largestSlot, 4 * whole.slotWeight(l, slot).numel());
            for (boolean bf16 : new boolean[] {true, false}) {
                try (BertModel inMemory = whole.compactForInference(be, bf16, TOKENS)) {
                    long before = mem.totalLive();
                    mem.resetPeaks();
                    try (BertModel read = HfBertDirectory.loadCompactedForInference(tmp, be, bf16, TOKENS)) {
                        long allocated = mem.totalPeak() - before;
                        assertEquals(inMemory.parameterBytes(), read.parameterBytes(), "bf16 " + bf16);
                        assertTrue(allocated <= read.parameterBytes() + largestSlot && allocated < whole.parameterBytes(),
                                "bf16 " + bf16 + ": the read allocated " + allocated + " bytes at its peak; the copy is " + read.parameterBytes()
                                        + ", the largest linear weight " + largestSlot + ", the whole model " + whole.parameterBytes());
                        Tensor[] want = inMemory.layerOutputs(be, work, arena, DType.F32, ti, null, tm);
                        Tensor[] got = read.layerOutputs(be, work, arena, DType.F32, ti, null, tm);
                        for (int l = 0; l < want.length; l++)
                            assertArrayEquals(want[l].toFloatArray(), got[l].toFloatArray(), 0f, "layer " + l + " bf16 " + bf16);
                    }
                }
            }
        }
    }

    @Test
    void aBlockSparseDirectoryIsRefusedNamingTheTensor() {
        try (BertModel m = randomModel(); TensorScope scratch = new TensorScope("blocks", MemoryCategory.WORKSPACE)) {
            String w = BertNames.slot(0, Slot.FFN_IN) + "." + BertNames.WEIGHT; // [96, 64]: 3 x 2 blocks
            m.setBlockMasksByName(Map.of(w, new boolean[][] {{true, false}, {false, true}, {true, true}}));
            HfBertDirectory.save(m.config(), m.parameters(), m.blockMasksByName(), tmp, scratch);
            var e = assertThrows(ModelFormatException.class, () -> HfBertDirectory.loadCompactedForInference(tmp, CpuBackend.create(), false, TOKENS));
            assertTrue(e.getMessage().contains(w + HfBertDirectory.BSR_VALUES) && e.getMessage().contains("block-sparse"), e.getMessage());
        }
    }

    @Test
    void aNonFiniteWeightInAKeptRowIsRefusedNamingTheRow() throws Exception {
        try (BertModel m = randomModel()) {
            HfBertDirectory.save(m, tmp); // then a NaN put into the file where token 7's (kept) element 5 is: writing refuses one
            Path file = tmp.resolve("model.safetensors");
            byte[] bytes = Files.readAllBytes(file);
            ByteBuffer b = ByteBuffer.wrap(bytes).order(ByteOrder.LITTLE_ENDIAN);
            int header = Math.toIntExact(b.getLong(0));
            long begin = new ObjectMapper().readTree(new String(bytes, 8, header, StandardCharsets.UTF_8)).get(BertNames.WORD_EMBEDDINGS)
                    .get("data_offsets").get(0).asLong();
            b.putFloat(Math.toIntExact(8 + header + begin + 4L * (7 * CONFIG.hidden() + 5)), Float.NaN);
            Files.write(file, bytes);
            var e = assertThrows(ModelFormatException.class, () -> HfBertDirectory.loadCompactedForInference(tmp, CpuBackend.create(), false, TOKENS));
            assertTrue(e.getMessage().contains(BertNames.WORD_EMBEDDINGS + "[7:8] holds a non-finite value (NaN) at flat index 5"), e.getMessage());
            int[] without7 = {0, 3, 8, 19};
            try (BertModel read = HfBertDirectory.loadCompactedForInference(tmp, CpuBackend.create(), false, without7)) {
                assertEquals(without7.length, read.config().vocabSize(), "a row not kept is not read");
            }
        }
    }
}
