package dev.topa.app;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import dev.topa.backend.Backend;
import dev.topa.backend.cpu.CpuBackend;
import dev.topa.backend.opencl.OpenCl;
import dev.topa.backend.opencl.OpenClBackend;
import dev.topa.harness.Check;
import dev.topa.io.BertTokenizer;
import dev.topa.io.Safetensors;
import dev.topa.testing.TestData;
import dev.topa.train.FineTunedModel;
import dev.topa.train.Predictor;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * The commands on the first OpenCL device (PoCL in CI) against the same commands on the CPU: the
 * default model's states, one epoch of training, layer-wise distillation, and a block-pruned model
 * run block-sparse. Skipped, with the reason, where there is no OpenCL platform.
 */
class OpenClCliTest {
    /** Skips without an OpenCL platform, except in CI, which installs PoCL (.ci/run): there its absence fails. */
    private static void needsOpenCl() {
        String why = OpenCl.unavailableReason();
        if (why != null && "true".equals(System.getenv("CI"))) fail("no OpenCL in CI (.ci/run installs pocl-opencl-icd): " + why);
        assumeTrue(why == null, () -> "opencl skipped: " + why);
    }

    private static CliRun ok(List<String> args) {
        CliRun r = CliRun.of(args.toArray(String[]::new));
        assertEquals(0, r.code(), String.join(" ", args) + "\n" + r.printed());
        return r;
    }

    private static List<String> with(List<String> args, String... more) {
        List<String> a = new ArrayList<>(args);
        a.addAll(List.of(more));
        return a;
    }

    @Test
    void theDefaultModelsStatesEqualTheCpusWithin1e4(@TempDir Path dir) throws Exception {
        needsOpenCl();
        Path in = Files.writeString(dir.resolve("in.txt"), "a gripping film with a thin plot\nok\nthe cat sat on the mat and looked at the dog\n");
        for (String device : new String[] {"cpu", "opencl"})
            ok(List.of("encode", "--device", device, "--input", in.toString(), "--output", dir.resolve(device + ".safetensors").toString(),
                    "--pooled", "--batch-size", "2"));
        try (Safetensors c = Safetensors.read(dir.resolve("cpu.safetensors")); Safetensors o = Safetensors.read(dir.resolve("opencl.safetensors"))) {
            assertEquals(c.entries().keySet(), o.entries().keySet());
            double worst = 0;
            for (String k : c.entries().keySet()) {
                float[] a = c.entries().get(k).floats(c.file()), b = o.entries().get(k).floats(o.file());
                assertEquals(a.length, b.length, k);
                for (int i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i] - b[i]));
            }
            assertTrue(worst <= 1e-4, "largest difference of a hidden state or pooled mean: " + worst);
        }
    }

    @Test
    void oneEpochOfLoraTrainingGivesTheCpusLossWithin1e3(@TempDir Path dir) throws Exception {
        needsOpenCl();
        List<String> args = List.of("finetune", "--task", "rte", "--data-dir", TestData.glue().toString(), "--train-limit", "64", "--epochs", "1",
                "--batch-size", "16", "--max-seq-len", "64", "--base-precision", "fp32", "--seed", "5");
        JsonNode[] reports = new JsonNode[2];
        String[] devices = {"cpu", "opencl"};
        for (int i = 0; i < 2; i++) {
            Path out = dir.resolve(devices[i]);
            ok(with(args, "--device", devices[i], "--out", out.toString()));
            reports[i] = new ObjectMapper().readTree(out.resolve("report.json").toFile());
        }
        JsonNode c = reports[0].get("epochs").get(0), o = reports[1].get("epochs").get(0);
        assertEquals(4, c.get("step").asInt(), "64 examples in batches of 16");
        assertEquals(c.get("train_loss").asDouble(), o.get("train_loss").asDouble(), 1e-3, "mean training loss of the epoch");
        assertEquals(c.get("dev").get("accuracy").asDouble(), o.get("dev").get("accuracy").asDouble(), 2.0 / 277, "dev accuracy");
        assertTrue(reports[1].has("memory_opencl:0"), "the device's memory is reported: " + reports[1]);
        // what predict computes, on the fine-tuned default model: the head's outputs on both backends for a few dev pairs
        try (FineTunedModel.Loaded ft = FineTunedModel.load(dir.resolve("cpu")); BertTokenizer tok = new BertTokenizer(ft.tokenizer(), ft.maxSeqLen());
                Backend cpu = CpuBackend.create(); Backend ocl = OpenClBackend.open(0); Predictor pc = new Predictor(cpu, ft.model(), ft.head());
                Predictor po = new Predictor(ocl, ft.model(), ft.head())) {
            List<BertTokenizer.Encoded> pairs = List.of(tok.encode("A cat sat on the mat.", "A cat was sitting."),
                    tok.encode("The film was long and the plot was thin.", "The film was short."), tok.encode("ok", "fine"));
            float[][] a = pc.outputs(pairs, 2), b = po.outputs(pairs, 2);
            for (int i = 0; i < a.length; i++)
                for (int j = 0; j < a[i].length; j++) assertEquals(a[i][j], b[i][j], 1e-4, "logit " + j + " of pair " + i);
        }
    }

    @Test
    void aBlockPrunedModelRunsBlockSparseOnOpenClWithTheCpusAnswers(@TempDir Path dir) throws Exception {
        needsOpenCl();
        Path out = dir.resolve("blocks");
        ok(List.of("prune-adapt", "--task", "rte", "--data-dir", TestData.glue().toString(), "--structure", "blocks", "--scorer", "taylor",
                "--epochs", "1", "--train-limit", "32", "--batch-size", "16", "--max-seq-len", "48", "--score-examples", "16", "--sparsity", "0.5",
                "--inference-iterations", "0", "--dev-limit", "32", "--out", out.toString()));
        assertTrue(Files.readString(out.resolve("config.json")).contains("topa_block_size"), "saved with its block masks");
        String[] devices = {"cpu", "opencl"};
        double[][] figures = new double[2][];
        for (int i = 0; i < 2; i++) {
            CliRun e = ok(List.of("eval", "--model", out.toString(), "--data-dir", TestData.glue().toString(), "--device", devices[i]));
            CliRun p = ok(List.of("predict", "--model", out.toString(), "--device", devices[i], "A cat sat on the mat.", "A cat was sitting."));
            figures[i] = new double[] {number(e.out(), "accuracy: "), number(p.out(), "p(entailment): "), number(p.out(), "p(not_entailment): ")};
        }
        assertEquals(figures[0][0], figures[1][0], 1.0 / 277, "dev accuracy (at most one of 277 examples may flip)");
        for (int j = 1; j < 3; j++) assertEquals(figures[0][j], figures[1][j], 2e-4, "a probability (printed to 4 digits)");
    }

    /**
     * Layer-wise distillation on the device: the teacher copied there, its hidden states in the
     * device's step arena, the matching gradient (a kernel) added in the student's backward. The
     * trained adapters must be the CPU's within float noise, and that noise far below what the
     * layer-wise term itself changes (the same run without it), so the term really ran there.
     */
    @Test
    void layerWiseDistillationTrainsTheCpusStudent(@TempDir Path dir) throws Exception {
        needsOpenCl();
        Path teacher = dir.resolve("teacher");
        ok(List.of("finetune", "--task", "rte", "--method", "full", "--data-dir", TestData.glue().toString(), "--train-limit", "32", "--epochs", "1",
                "--batch-size", "16", "--max-seq-len", "48", "--dev-limit", "32", "--out", teacher.toString()));
        List<String> args = List.of("prune-adapt", "--task", "rte", "--data-dir", TestData.glue().toString(), "--epochs", "1", "--train-limit", "32",
                "--batch-size", "16", "--max-seq-len", "48", "--score-examples", "16", "--sparsity", "0.5", "--inference-iterations", "0", "--seed", "3",
                "--distill", "0.5", "--teacher", teacher.toString(), "--dev-limit", "32"); // the adapters are compared, not the dev metric
        ok(with(args, "--distill-hidden", "1", "--device", "cpu", "--out", dir.resolve("cpu").toString()));
        ok(with(args, "--distill-hidden", "1", "--device", "opencl", "--out", dir.resolve("opencl").toString()));
        ok(with(args, "--device", "cpu", "--out", dir.resolve("outputs-only").toString()));
        for (String d : new String[] {"opencl", "outputs-only"})
            assertEquals(Files.readString(dir.resolve("cpu/config.json")), Files.readString(dir.resolve(d + "/config.json")), "the same pruned shapes");
        // norms, not the largest element: AdamW's first steps move a weight by about lr whatever its gradient's size, so
        // where a gradient is near zero float noise may flip a step's sign; the term moves them all
        double device = Check.distance(dir.resolve("cpu/adapter.safetensors"), dir.resolve("opencl/adapter.safetensors"));
        double term = Check.distance(dir.resolve("cpu/adapter.safetensors"), dir.resolve("outputs-only/adapter.safetensors"));
        assertTrue(device < term / 10, "adapters on OpenCL vs the CPU: distance " + device + "; with vs without the term: " + term);
    }

    /**
     * The gradual schedule on the device: the dense model's copy trains there while the masks zero
     * its rows there (MaskedPruningTest: the same rows to the bit as on the host), each step's masks
     * before the next step (ReadBackWindowTest: the hook's timing), and at each epoch's end of the ramp
     * the host model is compacted from the values copied back and its copy trains on there from the
     * former one's state. Killed in the middle of its ramp and resumed, the masks are restored by
     * zeroing rows of the device copy again, and the run ends with the unbroken device run's model, to
     * the bit (the replayed scoring on the device arrives at the same starting point).
     * Which units go is decided by scores that float noise can tip where two units nearly tie (on
     * RTE's 32 examples a head at the first step), so the units may differ from the CPU's: the
     * unbroken run must end at the CPU's size with a dev accuracy near the CPU's.
     */
    @Test
    void theGradualScheduleRunsOnTheDeviceAndAKilledRunResumesToTheUnbrokenRunsModel(@TempDir Path dir) throws Exception {
        needsOpenCl();
        // 48 examples in batches of 16: 9 steps, the ramp 5 of them (the masks final in epoch 2), so the checkpoint after epoch 1 is
        // mid-ramp; after epochs 1 and 2 the model is compacted (on the host) and trains on on the device, in the unbroken run and the resumed one
        // the first 96 dev examples: an evaluation on PoCL costs seconds, and this test evaluates seven times
        List<String> gradual = List.of("--schedule", "gradual", "--ramp", "0.5", "--base-precision", "fp32", "--dev-limit", "96");
        ReliabilityTest.killedAndResumed(dir, 48, 32, with(gradual, "--device", "opencl"));
        try (Safetensors st = Safetensors.read(dir.resolve("straight/checkpoint.safetensors"))) {
            assertEquals(st.metadata().get("gradual.masks"), st.metadata().get("gradual.shape"), "the last epoch trained the compacted model");
        }
        ok(with(ReliabilityTest.killableRun(48, 32, gradual), "--device", "cpu", "--out", dir.resolve("cpu").toString()));
        JsonNode cpu = new ObjectMapper().readTree(dir.resolve("cpu/pruning.json").toFile());
        JsonNode device = new ObjectMapper().readTree(dir.resolve("straight/pruning.json").toFile());
        assertEquals("gradual", device.get("schedule").asText(), device.toString());
        JsonNode report = new ObjectMapper().readTree(dir.resolve("straight/report.json").toFile());
        assertEquals(48, report.get("train_examples").asInt(), report.toString());
        assertEquals(96, report.get("dev_examples").asInt(), "the dev metrics are over the first 96: " + report);
        assertEquals(cpu.get("encoder_parameters_pruned").asLong(), device.get("encoder_parameters_pruned").asLong(), device.toString());
        assertTrue(Math.abs(cpu.get("best_dev").asDouble() - device.get("best_dev").asDouble()) < 0.05, cpu + "\n" + device);
    }

    /** The number after label in printed text. */
    private static double number(String printed, String label) {
        return printed.lines().filter(l -> l.startsWith(label)).mapToDouble(l -> Double.parseDouble(l.substring(label.length()).trim()))
                .findFirst().orElseThrow(() -> new AssertionError("no '" + label + "' in:\n" + printed));
    }

    @Test
    void aBadDeviceIndexIsRefusedBeforeAnyWork(@TempDir Path dir) throws Exception {
        needsOpenCl();
        Path in = Files.writeString(dir.resolve("in.txt"), "ok\n"), out = dir.resolve("o.safetensors");
        int n = OpenClBackend.devices().size();
        CliRun r = CliRun.of("encode", "--device", "opencl:" + n, "--input", in.toString(), "--output", out.toString());
        assertEquals(1, r.code(), r.printed());
        assertTrue(r.err().contains("no OpenCL device " + n + ": this machine has " + n), r.printed());
        assertFalse(Files.exists(out), "nothing written");
        CliRun bad = CliRun.of("encode", "--device", "opencl:x", "--input", in.toString(), "--output", out.toString());
        assertEquals(2, bad.code(), bad.printed());
        assertTrue(bad.err().contains("the device index is a whole number"), bad.printed());
    }

    /** In a process whose ICD loader finds no platform (an empty vendors folder), --device opencl fails before any work, saying why. */
    @Test
    void aMachineWithoutAnOpenClPlatformIsToldSoBeforeAnyWork(@TempDir Path dir) throws Exception {
        Path in = Files.writeString(dir.resolve("in.txt"), "ok\n"), out = dir.resolve("o.safetensors"), log = dir.resolve("log.txt");
        Path vendors = Files.createDirectories(dir.resolve("no-vendors"));
        ProcessBuilder pb = new ProcessBuilder(Path.of(System.getProperty("java.home"), "bin", "java").toString(), "--enable-native-access=ALL-UNNAMED",
                "-cp", System.getProperty("java.class.path"), "dev.topa.app.Main", "encode", "--device", "opencl", "--input", in.toString(), "--output",
                out.toString()).redirectErrorStream(true).redirectOutput(log.toFile());
        pb.environment().put("OCL_ICD_VENDORS", vendors.toString());
        pb.environment().remove("OCL_ICD_FILENAMES");
        Process p = pb.start();
        assertTrue(p.waitFor(120, TimeUnit.SECONDS), "encode did not end");
        String printed = Files.readString(log);
        assertEquals(1, p.exitValue(), printed);
        assertTrue(printed.contains("no OpenCL device: ") && (printed.contains("finds no platform") || printed.contains("no OpenCL ICD loader")), printed);
        assertFalse(Files.exists(out), "nothing written");
    }
}
