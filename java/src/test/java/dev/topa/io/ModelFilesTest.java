package dev.topa.io;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.topa.backend.cpu.CpuBackend;
import dev.topa.model.BertConfig;
import dev.topa.model.BertModel;
import dev.topa.tensor.DType;
import dev.topa.tensor.StepArena;
import dev.topa.tensor.Tensor;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.SplittableRandom;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** Safetensors and Hugging Face directories: round trips, and one test per kind of bad file. */
public class ModelFilesTest {
    @TempDir
    Path tmp;

    public static BertModel tinyRandomModel() {
        BertModel m = new BertModel(new BertConfig(50, 16, 20, 2, 4, new int[] {4, 3}, new int[] {32, 24}, 1e-12f));
        SplittableRandom rnd = new SplittableRandom(3);
        for (Tensor t : m.parameters().values()) {
            float[] v = new float[(int) t.numel()];
            for (int i = 0; i < v.length; i++) v[i] = (float) (rnd.nextDouble() - 0.5);
            t.copyFrom(v);
        }
        return m;
    }

    static float[] encode(BertModel m, StepArena arena) {
        int b = 2, s = 7;
        int[] ids = new int[b * s], mask = new int[b * s];
        for (int i = 0; i < ids.length; i++) {
            ids[i] = 1 + (i * 7) % (m.config().vocabSize() - 1);
            mask[i] = i % s < s - 2 * (i / s) ? 1 : 0;
        }
        Tensor tid = arena.allocate(DType.I32, b, s).copyFrom(ids), tm = arena.allocate(DType.I32, b, s).copyFrom(mask);
        return m.forward(CpuBackend.create(), arena, tid, null, tm).toFloatArray();
    }

    @Test
    void prunedShapesRoundTripThroughAHuggingFaceDirectory() throws IOException {
        try (BertModel m = tinyRandomModel(); StepArena arena = new StepArena("rt")) {
            float[] before = encode(m, arena);
            HfBertDirectory.save(m, tmp);
            assertTrue(HfBertDirectory.isOne(tmp));
            try (BertModel back = HfBertDirectory.load(tmp)) {
                assertEquals(m.config(), back.config());
                assertArrayEquals(before, encode(back, arena), "reloaded weights must give identical outputs");
            }
            try (var files = Files.list(tmp)) {
                assertTrue(files.noneMatch(p -> p.toString().endsWith(".tmp")), "no temp files left behind");
            }
        }
    }

    @Test
    void defaultModelSavedAsSafetensorsReloadsToIdenticalOutputs() {
        try (BertModel m = OnnxBertReader.load(DefaultModel.directory().resolve("model.onnx"));
                StepArena arena = new StepArena("default rt")) {
            float[] before = encode(m, arena);
            HfBertDirectory.save(m, tmp);
            try (BertModel back = HfBertDirectory.load(tmp)) {
                assertArrayEquals(before, encode(back, arena));
            }
        }
    }

    @Test
    void shardedBf16DirectoryLoadsWithBertPrefixedNames() throws IOException {
        try (BertModel m = tinyRandomModel(); StepArena arena = new StepArena("shards");
                dev.topa.tensor.TensorScope bf = new dev.topa.tensor.TensorScope("bf16", dev.topa.tensor.MemoryCategory.WEIGHTS)) {
            HfBertDirectory.save(m, tmp); // for config.json
            Files.delete(tmp.resolve("model.safetensors"));
            var shard1 = new java.util.LinkedHashMap<String, Tensor>();
            var shard2 = new java.util.LinkedHashMap<String, Tensor>();
            StringBuilder index = new StringBuilder("{\"metadata\": {}, \"weight_map\": {");
            int i = 0;
            for (var e : m.parameters().entrySet()) {
                Tensor b = bf.allocate(DType.BF16, e.getValue().shape()).copyFrom(e.getValue());
                String name = "bert." + e.getKey();
                String file = i++ % 2 == 0 ? "model-00001-of-00002.safetensors" : "model-00002-of-00002.safetensors";
                (file.contains("00001") ? shard1 : shard2).put(name, b);
                index.append(i > 1 ? "," : "").append('"').append(name).append("\": \"").append(file).append('"');
            }
            Safetensors.write(tmp.resolve("model-00001-of-00002.safetensors"), shard1, null);
            Safetensors.write(tmp.resolve("model-00002-of-00002.safetensors"), shard2, null);
            Files.writeString(tmp.resolve("model.safetensors.index.json"), index.append("}}").toString());
            assertTrue(HfBertDirectory.isOne(tmp));
            try (BertModel back = HfBertDirectory.load(tmp)) {
                for (var e : m.parameters().entrySet()) {
                    float[] want = e.getValue().toFloatArray(), got = back.parameter(e.getKey()).toFloatArray();
                    for (int k = 0; k < want.length; k++)
                        assertEquals(dev.topa.tensor.Bf16.toFloat(dev.topa.tensor.Bf16.fromFloat(want[k])), got[k], e.getKey());
                }
            }
            Files.delete(tmp.resolve("model-00002-of-00002.safetensors"));
            assertModelError(tmp, "shard model-00002-of-00002.safetensors is missing");
        }
    }

    @Test
    void f16TensorsConvertToFloat() throws IOException {
        float[] values = {1.5f, -2.25f, 65504f, 6.1035156e-5f, 0f};
        byte[] header = "{\"x\":{\"dtype\":\"F16\",\"shape\":[5],\"data_offsets\":[0,10]}}".getBytes(StandardCharsets.UTF_8);
        ByteBuffer b = ByteBuffer.allocate(8 + header.length + 10).order(ByteOrder.LITTLE_ENDIAN);
        b.putLong(header.length).put(header);
        for (float v : values) b.putShort(Float.floatToFloat16(v));
        Path f = tmp.resolve("f16.safetensors");
        Files.write(f, b.array());
        try (Safetensors st = Safetensors.read(f)) {
            assertArrayEquals(values, st.entries().get("x").floats(f));
        }
    }

    private Path savedTiny() {
        try (BertModel m = tinyRandomModel()) {
            HfBertDirectory.save(m, tmp);
        }
        return tmp.resolve("model.safetensors");
    }

    private static void assertModelError(Path dir, String... fragments) {
        var e = assertThrows(ModelFormatException.class, () -> HfBertDirectory.load(dir).close());
        for (String f : fragments) assertTrue(e.getMessage().contains(f), "'" + f + "' not in: " + e.getMessage());
    }

    @Test
    void missingConfigNamesTheFile() throws IOException {
        savedTiny();
        Files.delete(tmp.resolve("config.json"));
        assertModelError(tmp, "config.json");
    }

    @Test
    void truncatedDataIsReportedWithTheTensor() throws IOException {
        Path st = savedTiny();
        byte[] all = Files.readAllBytes(st);
        Files.write(st, Arrays.copyOf(all, all.length - 100));
        assertModelError(tmp, "model.safetensors", "truncated", "encoder.layer.1.output.LayerNorm");
    }

    @Test
    void truncatedHeaderIsReported() throws IOException {
        Path st = savedTiny();
        Files.write(st, Arrays.copyOf(Files.readAllBytes(st), 50));
        assertModelError(tmp, "model.safetensors", "header length");
    }

    @Test
    void corruptHeaderIsReported() throws IOException {
        Path st = savedTiny();
        byte[] all = Files.readAllBytes(st);
        all[8] = '#'; // the header's opening brace
        Files.write(st, all);
        assertModelError(tmp, "model.safetensors", "corrupt safetensors header");
    }

    private void rewriteHeader(Path st, String from, String to) throws IOException {
        byte[] all = Files.readAllBytes(st);
        long n = ByteBuffer.wrap(all, 0, 8).order(ByteOrder.LITTLE_ENDIAN).getLong();
        String header = new String(all, 8, (int) n, StandardCharsets.UTF_8);
        assertTrue(header.contains(from), header);
        byte[] h = header.replaceFirst(java.util.regex.Pattern.quote(from), to).getBytes(StandardCharsets.UTF_8);
        ByteBuffer out = ByteBuffer.allocate(8 + h.length + all.length - 8 - (int) n).order(ByteOrder.LITTLE_ENDIAN);
        out.putLong(h.length).put(h).put(all, 8 + (int) n, all.length - 8 - (int) n);
        Files.write(st, out.array());
    }

    @Test
    void unknownDtypeNamesTheTensor() throws IOException {
        Path st = savedTiny();
        rewriteHeader(st, "\"embeddings.LayerNorm.weight\":{\"dtype\":\"F32\"", "\"embeddings.LayerNorm.weight\":{\"dtype\":\"Q4\"");
        assertModelError(tmp, "embeddings.LayerNorm.weight", "unknown dtype Q4");
    }

    @Test
    void missingTensorIsNamed() throws IOException {
        Path st = savedTiny();
        rewriteHeader(st, "\"encoder.layer.0.output.dense.bias\"", "\"encoder.layer.0.output.dense.bias_renamed\"");
        assertModelError(tmp, "no tensor encoder.layer.0.output.dense.bias");
    }

    @Test
    void shapeThatDisagreesWithConfigIsNamed() throws IOException {
        savedTiny();
        Path cfg = tmp.resolve("config.json");
        Files.writeString(cfg, Files.readString(cfg).replace("\"intermediate_size\" : 32", "\"intermediate_size\" : 40")
                .replaceAll("\"topa_ffn_per_layer\" : \\[[^]]*]", "\"topa_ffn_per_layer\" : [ 40, 24 ]"));
        assertModelError(tmp, "encoder.layer.0.intermediate.dense", "config.json implies");
    }

    @Test
    void corruptOnnxIsReportedWithTheFile() throws IOException {
        Path onnx = DefaultModel.directory().resolve("model.onnx");
        Path cut = tmp.resolve("cut.onnx");
        try (var in = Files.newInputStream(onnx)) {
            Files.write(cut, in.readNBytes(5_000_000));
        }
        var e = assertThrows(ModelFormatException.class, () -> OnnxBertReader.load(cut).close());
        assertTrue(e.getMessage().contains("cut.onnx") && e.getMessage().contains("corrupt protobuf"), e.getMessage());
        Path garbage = tmp.resolve("garbage.onnx");
        Files.writeString(garbage, "this is not a model");
        var e2 = assertThrows(ModelFormatException.class, () -> OnnxBertReader.load(garbage).close());
        assertTrue(e2.getMessage().contains("garbage.onnx"), e2.getMessage());
    }
}
