package dev.topa.app;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import org.junit.jupiter.api.Test;

class MainTest {
    private static String[] run(String... args) {
        CliRun r = CliRun.of(args);
        return new String[] {String.valueOf(r.code()), r.out(), r.err()};
    }

    @Test
    void helpListsTheCommands() {
        String[] r = run("--help");
        assertEquals("0", r[0]);
        assertTrue(r[1].contains("bench") && r[1].contains("info"), r[1]);
    }

    @Test
    void deviceCudaWithoutAGpuFailsWithTheReason(@org.junit.jupiter.api.io.TempDir java.nio.file.Path dir) throws Exception {
        org.junit.jupiter.api.Assumptions.assumeTrue(dev.topa.backend.cuda.CudaDriver.get().isEmpty(), "a GPU is here: the kit checks --device cuda");
        var in = dir.resolve("in.txt");
        java.nio.file.Files.writeString(in, "a gripping film\n");
        var out = dir.resolve("out.safetensors");
        String[] r = run("encode", "--device", "cuda", "--input", in.toString(), "--output", out.toString());
        assertEquals("1", r[0], r[2]);
        assertTrue(r[2].contains("no CUDA device") && r[2].contains(dev.topa.backend.cuda.CudaDriver.unavailableReason()), r[2]);
        assertTrue(!java.nio.file.Files.exists(out), "nothing written");
    }

    @Test
    void serveNeedsModelsOrABackboneWithAdapters() {
        for (String[] args : new String[][] {{"serve"}, {"serve", "--model", "a", "--backbone", "b"}, {"serve", "--backbone", "b"},
                {"serve", "--adapters", "x"}}) {
            String[] r = run(args);
            assertEquals("1", r[0], String.join(" ", args) + ": " + r[2]);
            assertTrue(r[2].contains("give --model DIR[,DIR...], or --backbone DIR with --adapters DIR[,DIR...]"), r[2]);
        }
        String[] r = run("serve", "--model", "/nonexistent/model");
        assertEquals("1", r[0]);
        assertTrue(r[2].contains("/nonexistent/model"), r[2]);
    }

    @Test
    void encodeWritesHiddenStatesAndPooledMeans(@org.junit.jupiter.api.io.TempDir java.nio.file.Path dir) throws Exception {
        var in = dir.resolve("in.txt");
        java.nio.file.Files.writeString(in, "a gripping film\nthe plot is thin\nok\n");
        var out = dir.resolve("out.safetensors");
        String[] r = run("encode", "--input", in.toString(), "--output", out.toString(), "--pooled", "--batch-size", "2");
        assertEquals("0", r[0], r[2]);
        try (var st = dev.topa.io.Safetensors.read(out)) {
            assertEquals(6, st.entries().size());
            var h = st.entries().get("hidden.0");
            assertEquals(5, h.shape()[0], "[CLS] a gripping film [SEP]");
            assertEquals(384, h.shape()[1]);
            float[] hv = h.floats(out), pv = st.entries().get("pooled.0").floats(out);
            for (int e = 0; e < 384; e += 97) {
                double mean = 0;
                for (int t = 0; t < 5; t++) mean += hv[t * 384 + e] / 5.0;
                assertEquals(mean, pv[e], 1e-5);
            }
            assertEquals(3, st.entries().get("hidden.2").shape()[0]);
        }
    }

    @Test
    void encodeGivesTheSameStatesFromAnOnnxDirectoryAndASafetensorsDirectory(@org.junit.jupiter.api.io.TempDir java.nio.file.Path dir)
            throws Exception {
        var src = dev.topa.io.DefaultModel.directory();
        var onnxDir = java.nio.file.Files.createDirectories(dir.resolve("onnx"));
        java.nio.file.Files.copy(src.resolve("model.onnx"), onnxDir.resolve("minilm.onnx"));
        java.nio.file.Files.copy(src.resolve("tokenizer.json"), onnxDir.resolve("tokenizer.json"));
        var hfDir = dir.resolve("hf");
        try (var m = dev.topa.io.OnnxBertReader.load(src.resolve("model.onnx"))) {
            dev.topa.io.HfBertDirectory.save(m, hfDir);
        }
        java.nio.file.Files.copy(src.resolve("tokenizer.json"), hfDir.resolve("tokenizer.json"));
        var in = dir.resolve("in.txt");
        var pairs = dir.resolve("pairs.txt");
        java.nio.file.Files.writeString(in, "the cat sat\nwhere is it\n");
        java.nio.file.Files.writeString(pairs, "a cat was sitting\nhere\n");
        float[][] outs = new float[2][];
        String[] models = {onnxDir.toString(), hfDir.toString()};
        for (int i = 0; i < 2; i++) {
            var out = dir.resolve("out" + i + ".safetensors");
            String[] r = run("encode", "--model", models[i], "--input", in.toString(), "--pair-file", pairs.toString(), "--output",
                    out.toString());
            assertEquals("0", r[0], r[2]);
            try (var st = dev.topa.io.Safetensors.read(out)) {
                outs[i] = st.entries().get("hidden.1").floats(out);
            }
        }
        org.junit.jupiter.api.Assertions.assertArrayEquals(outs[0], outs[1]);
        assertEquals(7 * 384, outs[0].length, "[CLS] where is it [SEP] here [SEP]");
    }

    @Test
    void encodeRejectsAPairFileOfAnotherLength(@org.junit.jupiter.api.io.TempDir java.nio.file.Path dir) throws Exception {
        var in = dir.resolve("a.txt");
        var pair = dir.resolve("b.txt");
        java.nio.file.Files.writeString(in, "one\ntwo\n");
        java.nio.file.Files.writeString(pair, "one\n");
        String[] r = run("encode", "--input", in.toString(), "--pair-file", pair.toString(), "--output",
                dir.resolve("o.safetensors").toString());
        assertEquals("1", r[0]);
        assertTrue(r[2].contains("b.txt has 1 lines") && r[2].contains("a.txt has 2"), r[2]);
        assertTrue(!java.nio.file.Files.exists(dir.resolve("o.safetensors")), "nothing half-written");
    }

    @Test
    void benchTrainTimesStepsAndReportsMemory() {
        String[] r = run("bench", "train", "--steps", "2", "--warmup", "1", "--batch-size", "2", "--max-seq-len", "16", "--activation-precision",
                "bf16", "--threads", "2");
        assertEquals("0", r[0], r[2]);
        String out = r[1];
        assertTrue(out.contains("recipe: lora, batch 2 x seq 16") && out.contains("activations kept in bf16"), out);
        assertTrue(out.contains("trainable_parameters: ") && out.contains("peak_mib: ") && out.contains("activations"), out);
        String[] lines = out.strip().split("\n");
        assertTrue(lines[lines.length - 1].startsWith("step_seconds: "), "the figure comes last: " + out);
        double seconds = Double.parseDouble(lines[lines.length - 1].substring("step_seconds: ".length()));
        assertTrue(seconds > 0 && seconds < 60, out);
        String[] bad = run("bench", "train", "--steps", "0");
        assertEquals("1", bad[0]);
        assertTrue(bad[2].contains("--steps"), bad[2]);
    }

    @Test
    void unknownIsaIsAClearError() {
        String[] r = run("bench", "kernels", "--isa", "avx9000", "--m", "8", "--iterations", "1");
        assertEquals("2", r[0]);
        assertTrue(r[2].contains("--isa") && r[2].contains("avx9000") && r[2].contains("AVX512"), r[2]);
    }
}
