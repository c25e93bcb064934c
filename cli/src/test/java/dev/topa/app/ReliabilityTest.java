package dev.topa.app;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import dev.topa.glue.GlueTask;
import dev.topa.io.ModelFormatException;
import dev.topa.io.OutputDirectory;
import dev.topa.io.Safetensors;
import dev.topa.serve.Classifier;
import dev.topa.serve.PredictServer;
import dev.topa.serve.TinyModels;
import dev.topa.tensor.DType;
import dev.topa.tensor.Device;
import dev.topa.tensor.MemoryCategory;
import dev.topa.tensor.Tensor;
import dev.topa.tensor.TensorScope;
import dev.topa.testing.TestData;
import dev.topa.train.FineTunedModel;
import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStreamReader;
import java.io.OutputStream;
import java.net.Socket;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.TreeMap;
import java.util.stream.Stream;
import org.junit.jupiter.api.Nested;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import picocli.CommandLine;

/**
 * What a new user or a hostile client meets on day one, one nested class per fault class: every
 * refusal names what is wrong (file, line, field, flag, input), and nothing is written or replaced
 * by a run that is refused or fails.
 */
class ReliabilityTest {
    private static final ObjectMapper JSON = new ObjectMapper();

    /** Every file below dir with its bytes: a listing to compare before and after. */
    static Map<String, String> snapshot(Path dir) throws IOException {
        Map<String, String> m = new TreeMap<>();
        if (!Files.exists(dir)) return m;
        try (Stream<Path> s = Files.walk(dir)) {
            for (Path p : s.filter(Files::isRegularFile).toList())
                m.put(dir.relativize(p).toString(), Long.toHexString(java.util.Arrays.hashCode(Files.readAllBytes(p))));
        }
        return m;
    }

    /** A short LoRA run on RTE with the default model. */
    static List<String> shortRun(Path data, Path out, String... more) {
        List<String> a = new ArrayList<>(List.of("finetune", "--task", "rte", "--data-dir", data.toString(), "--method", "lora", "--epochs", "1",
                "--train-limit", "32", "--batch-size", "16", "--max-seq-len", "32", "--out", out.toString()));
        a.addAll(List.of(more));
        return a;
    }

    /** The epoch a checkpoint holds (0: none yet; written by rename, so never half-read). */
    private static int checkpointEpoch(Path ckpt) {
        if (!Files.exists(ckpt)) return 0;
        try (Safetensors st = Safetensors.read(ckpt)) {
            return Integer.parseInt(st.metadata().get("epoch"));
        }
    }

    /** The run killedAndResumed kills, without its --out. */
    static List<String> killableRun(int examples, int tokens, List<String> more) {
        List<String> cmd = new ArrayList<>(List.of("prune-adapt", "--task", "rte", "--data-dir", TestData.glue().toString(), "--epochs", "3",
                "--train-limit", Integer.toString(examples), "--batch-size", "16", "--max-seq-len", Integer.toString(tokens), "--score-examples", "32",
                "--sparsity", "0.5", "--inference-iterations", "0"));
        cmd.addAll(more);
        return cmd;
    }

    static CliRun run(List<String> args) {
        return CliRun.of(args.toArray(String[]::new));
    }

    /**
     * prune-adapt on RTE (96 examples of 64 tokens at most, 3 epochs, more options added) run straight, and run in a child process killed (SIGKILL)
     * after its first checkpoint then resumed: the same model to the bit and the same epochs. Returns the resume command.
     */
    static List<String> killedAndResumed(Path dir, List<String> more) throws Exception {
        return killedAndResumed(dir, 96, 64, more);
    }

    /** As above with examples training examples of at most tokens tokens (the device's run smaller: PoCL is slow); the unbroken run's folder is dir/straight. */
    static List<String> killedAndResumed(Path dir, int examples, int tokens, List<String> more) throws Exception {
        return killedAndResumed(dir, examples, tokens, more, 1);
    }

    /** As above, killed once the checkpoint of epoch killAfter (1 or 2) is written, before the next one. */
    static List<String> killedAndResumed(Path dir, int examples, int tokens, List<String> more, int killAfter) throws Exception {
        return killedAndResumed(dir, dir.resolve("straight"), examples, tokens, more, killAfter);
    }

    /** As above with the unbroken run in straight: one that an earlier call (of the same command) finished there is reused. */
    static List<String> killedAndResumed(Path dir, Path straight, int examples, int tokens, List<String> more, int killAfter) throws Exception {
        List<String> cmd = killableRun(examples, tokens, more);
        Files.createDirectories(dir);
        Path broken = dir.resolve("broken");
        if (!Files.exists(straight.resolve("report.json"))) {
            List<String> a = new ArrayList<>(cmd);
            a.addAll(List.of("--out", straight.toString()));
            CliRun s = run(a);
            assertEquals(0, s.code(), s.printed());
        }
        List<String> child = new ArrayList<>(List.of(Path.of(System.getProperty("java.home"), "bin", "java").toString(),
                "--enable-native-access=ALL-UNNAMED", "-cp", System.getProperty("java.class.path"), "dev.topa.app.Main"));
        child.addAll(cmd);
        child.addAll(List.of("--out", broken.toString()));
        Process p = new ProcessBuilder(child).redirectErrorStream(true).redirectOutput(dir.resolve("killed.log").toFile()).start();
        Path ckpt = broken.resolve("checkpoint.safetensors");
        long until = System.nanoTime() + 300_000_000_000L;
        while (checkpointEpoch(ckpt) < killAfter && p.isAlive() && System.nanoTime() < until) Thread.sleep(10);
        p.destroyForcibly().waitFor();
        // the epoch asked for, not a later one: the resumed run takes the path that checkpoint asks for (an epoch takes seconds, the kill milliseconds)
        assertEquals(killAfter, checkpointEpoch(ckpt), "the checkpoint the run was killed after: " + Files.readString(dir.resolve("killed.log")));
        assertFalse(Files.exists(broken.resolve("report.json")), "killed before its end");
        List<String> r = new ArrayList<>(cmd);
        r.addAll(List.of("--out", broken.toString(), "--resume"));
        CliRun resumed = run(r);
        assertEquals(0, resumed.code(), resumed.printed());
        assertTrue(resumed.out().contains("resumed after epoch " + killAfter), resumed.printed());
        Files.writeString(dir.resolve("resumed.log"), resumed.out());
        assertEquals(-1, Files.mismatch(straight.resolve("model.safetensors"), broken.resolve("model.safetensors")),
                "the resumed run's best model is the unbroken run's, to the bit");
        var x = new ObjectMapper().readTree(straight.resolve("report.json").toFile()).get("epochs");
        var y = new ObjectMapper().readTree(broken.resolve("report.json").toFile()).get("epochs");
        assertEquals(3, y.size(), "the report has the epochs before the kill too: " + y);
        for (int i = 0; i < 3; i++) {
            assertEquals(x.get(i).get("train_loss").asDouble(), y.get(i).get("train_loss").asDouble(), 0, "epoch " + (i + 1));
            assertEquals(x.get(i).get("dev").toString(), y.get(i).get("dev").toString(), "epoch " + (i + 1));
        }
        return r;
    }

    @Nested
    class Help {
        @Test
        void everySubcommandPrintsItsHelpAndExitsZeroWithoutWarnings() {
            List<List<String>> paths = new ArrayList<>();
            collect(Main.commandLine(), new ArrayList<>(), paths);
            assertTrue(paths.size() >= 12, "subcommands found: " + paths);
            for (List<String> path : paths) {
                List<String> args = new ArrayList<>(path);
                args.add("--help");
                CliRun r = run(args);
                assertEquals(0, r.code(), String.join(" ", args) + ": " + r.printed());
                assertTrue(r.out().contains("Usage:"), String.join(" ", args) + ": " + r.printed());
                assertFalse(r.err().contains("WARN") || r.out().contains("WARN"), String.join(" ", args) + ": " + r.printed());
            }
            CliRun h = CliRun.of("help", "prune-adapt");
            assertEquals(0, h.code());
            assertFalse(h.err().contains("WARN"), h.printed());
            assertTrue(h.out().contains("~30% of heads removed"), "a literal % in a description is printed as such: " + h.out());
        }

        private void collect(CommandLine cl, List<String> prefix, List<List<String>> out) {
            for (var e : cl.getSubcommands().entrySet()) {
                if (!e.getKey().equals(e.getValue().getCommandName())) continue; // an alias
                List<String> p = new ArrayList<>(prefix);
                p.add(e.getKey());
                out.add(p);
                collect(e.getValue(), p, out);
            }
        }

        @Test
        void progressOffATerminalIsOnePlainLinePerInterval() {
            var buf = new java.io.ByteArrayOutputStream();
            var stdout = System.out;
            System.setOut(new java.io.PrintStream(buf, true));
            try (TrainingProgress p = new TrainingProgress(Path.of("out"), false, 0)) {
                for (int i = 1; i <= 5; i++) p.step(new dev.topa.train.Trainer.StepInfo(1, i, 5, 0.5, 16));
            } finally {
                System.setOut(stdout);
            }
            String printed = buf.toString();
            assertFalse(printed.contains("\r"), "no carriage returns off a terminal: " + printed);
            assertEquals(4, printed.lines().count(), "a line per step after the first at interval 0:\n" + printed);
            assertTrue(printed.lines().allMatch(l -> l.matches("epoch 1: batch \\d/5, loss 0\\.5000, [0-9.]+ ex/s, ~\\d+ s left in the epoch")),
                    printed);
        }
    }

    @Nested
    class Outputs {
        @Test
        void aNonEmptyOutIsRefusedUnlessOverwriteAndNothingIsTouched(@TempDir Path dir) throws Exception {
            Path out = Files.createDirectories(dir.resolve("out"));
            Files.writeString(out.resolve("notes.txt"), "mine");
            Map<String, String> before = snapshot(out);
            CliRun r = run(shortRun(TestData.glue(), out));
            assertEquals(1, r.code(), r.printed());
            assertTrue(r.err().contains("--out") && r.err().contains(out.toString()) && r.err().contains("notes.txt")
                    && r.err().contains("--resume") && r.err().contains("--overwrite"), r.printed());
            assertFalse(r.out().contains("epoch 1:"), "refused before any training: " + r.printed());
            assertEquals(before, snapshot(out), "nothing written or replaced");
            CliRun o = run(shortRun(TestData.glue(), out, "--overwrite"));
            assertEquals(0, o.code(), o.printed());
            assertFalse(Files.exists(out.resolve("notes.txt")), "the earlier content goes once the new model is in place");
            for (String f : new String[] {"model.safetensors", "head.safetensors", "task.json", OutputDirectory.MANIFEST, "checkpoint.safetensors",
                    "report.json"})
                assertTrue(Files.isRegularFile(out.resolve(f)), f + ": " + o.printed());
            try (Stream<Path> s = Files.list(dir)) {
                assertEquals(List.of(out), s.toList(), "no temp directories left beside --out");
            }
        }

        @Test
        void anUnwritableOutFailsBeforeAnyWorkWithTheOsReason(@TempDir Path dir) throws Exception {
            Path file = Files.writeString(dir.resolve("a-file"), "x");
            Path out = file.resolve("out");
            CliRun r = run(shortRun(TestData.glue(), out));
            assertEquals(1, r.code(), r.printed());
            assertTrue(r.err().contains(out.toString()) && r.err().contains("Not a directory"), r.printed());
            assertFalse(r.out().contains("epoch 1:"), r.printed());
        }

        @Test
        void tooLittleFreeSpaceIsRefusedWithTheFigures(@TempDir Path dir) {
            Path out = dir.resolve("out");
            IOException e = assertThrows(IOException.class, () -> OutputDirectory.open(out, OutputDirectory.Mode.NEW, Long.MAX_VALUE / 4));
            assertTrue(e.getMessage().contains("free") && e.getMessage().contains("needs about"), e.getMessage());
            assertFalse(Files.exists(out), "nothing created");
        }

        @Test
        void aFailedSaveKeepsThePreviousModelAndSaysWhy(@TempDir Path dir) throws Exception {
            Path out = dir.resolve("out");
            OutputDirectory od = OutputDirectory.open(out, OutputDirectory.Mode.NEW, 0);
            od.replaceModel(tmp -> TinyModels.write(tmp, GlueTask.SST2, 1));
            Files.writeString(od.file("report.md"), "this run's report");
            Map<String, String> before = snapshot(out);
            IOException e = assertThrows(IOException.class, () -> od.replaceModel(tmp -> {
                TinyModels.write(tmp, GlueTask.SST2, 2);
                throw new java.nio.file.FileSystemException(tmp.resolve("model.safetensors").toString(), null, "No space left on device");
            }));
            assertTrue(e.getMessage().contains("cannot save the model into " + out) && e.getMessage().contains("No space left on device"),
                    e.getMessage());
            assertEquals(before, snapshot(out), "the previous model, untouched");
            try (Stream<Path> s = Files.list(dir)) {
                assertEquals(List.of(out), s.toList(), "the temp directory is gone");
            }
            od.replaceModel(tmp -> TinyModels.write(tmp, GlueTask.SST2, 3));
            assertEquals("this run's report", Files.readString(out.resolve("report.md")), "the run's other files move with the model");
            try (FineTunedModel.Loaded m = FineTunedModel.load(out)) {
                assertEquals(GlueTask.SST2, m.task());
            }
        }

        @Test
        void theLeftoversOfAKilledSaveAreUndoneAtTheNextOpen(@TempDir Path dir) throws Exception {
            Path out = dir.resolve("out");
            OutputDirectory.open(out, OutputDirectory.Mode.NEW, 0).replaceModel(tmp -> TinyModels.write(tmp, GlueTask.SST2, 1));
            Map<String, String> complete = snapshot(out);
            // killed while writing the new model: a partial temp directory beside
            Path partial = Files.createDirectories(dir.resolve(".topa-tmp-out-99-1"));
            Files.writeString(partial.resolve("model.safetensors"), "half");
            // killed between the two renames of the fallback: the model moved aside, its place empty
            Files.move(out, dir.resolve(".topa-old-out-99-2"));
            OutputDirectory.open(out, OutputDirectory.Mode.RESUME, 0);
            assertEquals(complete, snapshot(out), "the previous complete model is back");
            try (Stream<Path> s = Files.list(dir)) {
                assertEquals(List.of(out), s.toList());
            }
        }

        @Test
        void filesOfTwoSavesMixedByHandAreRefusedAtLoad(@TempDir Path dir) throws Exception {
            Path a = dir.resolve("a"), b = dir.resolve("b");
            OutputDirectory.open(a, OutputDirectory.Mode.NEW, 0).replaceModel(tmp -> TinyModels.write(tmp, GlueTask.SST2, 1));
            OutputDirectory.open(b, OutputDirectory.Mode.NEW, 0).replaceModel(tmp -> TinyModels.write(tmp, GlueTask.SST2, 2));
            Files.copy(a.resolve("model.safetensors"), b.resolve("model.safetensors"), java.nio.file.StandardCopyOption.REPLACE_EXISTING);
            ModelFormatException e = assertThrows(ModelFormatException.class, () -> FineTunedModel.load(b));
            assertTrue(e.getMessage().contains("model.safetensors does not match " + OutputDirectory.MANIFEST), e.getMessage());
        }
    }

    @Nested
    class FiniteNumbers {
        @Test
        void aWeightFileWithNaNIsRefusedNamingTheTensorAndIndex(@TempDir Path dir) throws Exception {
            Path m = TinyModels.write(dir.resolve("m"), GlueTask.SST2, 1);
            poison(m.resolve("model.safetensors"), "encoder.layer.0.output.dense.weight", 5, Float.NaN);
            ModelFormatException e = assertThrows(ModelFormatException.class, () -> FineTunedModel.load(m));
            assertTrue(e.getMessage().contains("model.safetensors") && e.getMessage().contains("encoder.layer.0.output.dense.weight")
                    && e.getMessage().contains("NaN") && e.getMessage().contains("index 5"), e.getMessage());
        }

        @Test
        void aDivergingRunStopsAtTheStepSaysWhatToTryAndSavesNothing(@TempDir Path dir) throws Exception {
            Path out = dir.resolve("out");
            CliRun r = run(shortRun(TestData.glue(), out, "--lr", "1e30", "--warmup-ratio", "0"));
            assertEquals(1, r.code(), r.printed());
            assertTrue(r.err().matches("(?s).*step \\d+: .*(NaN|Infinity|not finite).*training stopped.*try a lower learning rate \\(now 1\\.0E30\\).*"),
                    r.printed());
            assertFalse(Files.exists(out.resolve("model.safetensors")), "no model from a diverged run");
        }

        @Test
        void inferenceNamesTheInputInsteadOfAnsweringNaN(@TempDir Path dir) throws Exception {
            Path m = TinyModels.write(dir.resolve("m"), GlueTask.SST2, 1);
            poison(m.resolve("head.safetensors"), dev.topa.model.TaskHead.WEIGHT, -1, 3e38f); // finite weights whose logits overflow
            CliRun p = CliRun.of("predict", "--model", m.toString(), "a fine film");
            assertEquals(1, p.code(), p.printed());
            assertTrue(p.err().contains("the text \"a fine film\": the model's output is"), p.printed());
            try (Classifier c = Classifier.load(m);
                    PredictServer s = new PredictServer(Map.of("sst2", c), PredictServer.Options.defaults(), "127.0.0.1", 0, List.of(Device.CPU));
                    Socket socket = new Socket("127.0.0.1", s.port())) {
                Response res = Response.exchange(socket, "POST", "/v1/predict", "{\"texts\": [\"a fine film\"]}", Map.of());
                assertEquals(500, res.code(), res.body());
                assertTrue(res.body().contains("texts[0]") && res.body().contains("the model's output is"), res.body());
            }
        }

        /** Sets one value (index -1: every value) of a float tensor in a safetensors file, in place. */
        static void poison(Path file, String tensor, int index, float value) throws IOException {
            byte[] bytes = Files.readAllBytes(file);
            long headerLen = ByteBuffer.wrap(bytes, 0, 8).order(ByteOrder.LITTLE_ENDIAN).getLong();
            var header = JSON.readTree(new String(bytes, 8, (int) headerLen, StandardCharsets.UTF_8));
            var offsets = header.get(tensor).get("data_offsets");
            int start = 8 + (int) headerLen + offsets.get(0).asInt(), end = 8 + (int) headerLen + offsets.get(1).asInt();
            ByteBuffer data = ByteBuffer.wrap(bytes).order(ByteOrder.LITTLE_ENDIAN);
            for (int at = start; at < end; at += 4) if (index < 0 || at == start + 4 * index) data.putFloat(at, value);
            Files.write(file, bytes);
        }
    }

    @Nested
    class DataErrors {
        /** A copy of RTE whose files the test may spoil. */
        private Path rte(Path dir) throws IOException {
            Path data = Files.createDirectories(dir.resolve("glue/RTE"));
            for (String f : new String[] {"train.tsv", "dev.tsv"})
                Files.write(data.resolve(f), Files.readAllLines(TestData.glue().resolve("RTE").resolve(f)).subList(0, 40));
            return dir.resolve("glue");
        }

        @Test
        void bytesThatAreNotUtf8AreReportedAtTheirLineAndColumn(@TempDir Path dir) throws Exception {
            Path glue = rte(dir);
            Path train = glue.resolve("RTE/train.tsv");
            List<String> lines = Files.readAllLines(train);
            java.io.ByteArrayOutputStream b = new java.io.ByteArrayOutputStream();
            for (int i = 0; i < lines.size(); i++) {
                byte[] l = lines.get(i).getBytes(StandardCharsets.UTF_8);
                if (i == 2) {
                    b.write(l, 0, 4);
                    b.write(0xE9); // Latin-1 é
                    b.write(l, 4, l.length - 4);
                } else {
                    b.write(l);
                }
                b.write('\n');
            }
            Files.write(train, b.toByteArray());
            CliRun r = run(shortRun(glue, dir.resolve("out")));
            assertEquals(1, r.code(), r.printed());
            assertTrue(r.err().contains(train + ":3: byte column 5: not UTF-8 (byte 0xE9)"), r.printed());
            assertFalse(Files.exists(dir.resolve("out")), "nothing written");
        }

        @Test
        void anEmptyDevSetIsRefusedBeforeTraining(@TempDir Path dir) throws Exception {
            Path glue = rte(dir);
            Path dev = glue.resolve("RTE/dev.tsv");
            Files.writeString(dev, "index\tsentence1\tsentence2\tlabel\n");
            CliRun r = run(shortRun(glue, dir.resolve("out")));
            assertEquals(1, r.code(), r.printed());
            assertTrue(r.err().contains(dev + ": no examples"), r.printed());
            assertFalse(r.out().contains("epoch"), r.printed());
            assertFalse(Files.exists(dir.resolve("out")));
        }

        @Test
        void aNegativeLimitIsRefusedByName(@TempDir Path dir) {
            CliRun r = CliRun.of("finetune", "--task", "rte", "--data-dir", TestData.glue().toString(), "--train-limit", "-3", "--out",
                    dir.resolve("out").toString());
            assertEquals(1, r.code(), r.printed());
            assertTrue(r.err().contains("--train-limit must be >= 1, got -3"), r.printed());
            CliRun d = CliRun.of("finetune", "--task", "rte", "--data-dir", TestData.glue().toString(), "--dev-limit", "0", "--out",
                    dir.resolve("out").toString());
            assertEquals(1, d.code(), d.printed());
            assertTrue(d.err().contains("--dev-limit must be >= 1, got 0"), d.printed());
            assertFalse(Files.exists(dir.resolve("out")));
        }
    }

    @Nested
    class ResumeIdentity {
        @Test
        void aCheckpointOfAnotherRunIsRefusedSayingWhatDiffers(@TempDir Path dir) throws Exception {
            Path out = dir.resolve("out");
            CliRun first = run(shortRun(TestData.glue(), out));
            assertEquals(0, first.code(), first.printed());
            Map<String, String> before = snapshot(out);
            var firstReport = new ObjectMapper().readTree(out.resolve("report.json").toFile());
            CliRun lr = run(shortRun(TestData.glue(), out, "--resume", "--lr", "0.002"));
            assertEquals(1, lr.code(), lr.printed());
            assertTrue(lr.err().contains("checkpoint of another run") && lr.err().contains("recipe.lr: checkpoint 0.001, this run 0.002"),
                    lr.printed());
            List<String> fewer = shortRun(TestData.glue(), out, "--resume");
            fewer.set(fewer.indexOf("--train-limit") + 1, "16");
            CliRun data = run(fewer);
            assertEquals(1, data.code(), data.printed());
            assertTrue(data.err().contains("train_examples: checkpoint 32, this run 16"), data.printed());
            // the best model is chosen on the dev examples: a part of the split is another run
            CliRun dev = run(shortRun(TestData.glue(), out, "--resume", "--dev-limit", "50"));
            assertEquals(1, dev.code(), dev.printed());
            assertTrue(dev.err().contains("dev_examples: checkpoint 277, this run 50"), dev.printed());
            CliRun task = CliRun.of(shortRun(TestData.glue(), out, "--resume").stream().map(a -> a.equals("rte") ? "mrpc" : a).toArray(String[]::new));
            assertEquals(1, task.code(), task.printed());
            assertTrue(task.err().contains("task: checkpoint RTE, this run MRPC"), task.printed());
            assertEquals(before, snapshot(out), "refused resumes change nothing");
            CliRun same = run(shortRun(TestData.glue(), out, "--resume"));
            assertEquals(0, same.code(), same.printed());
            assertTrue(same.out().contains("resumed after epoch 1"), same.printed());
            // nothing left to train: the reports come again from the checkpoint's history, the same evaluations
            var again = new ObjectMapper().readTree(out.resolve("report.json").toFile());
            assertEquals(firstReport.get("epochs"), again.get("epochs"));
            assertEquals(firstReport.get("best"), again.get("best"));
        }

        /**
         * prune-adapt killed (a real process, SIGKILL) once its first checkpoint is on disk, then resumed:
         * it replays scoring and pruning, arrives at the checkpoint's starting point, and ends with the
         * model and evaluations of a run that was never interrupted.
         */
        @Test
        void aKilledPruneAdaptResumesToTheModelOfAnUnbrokenRun(@TempDir Path dir) throws Exception {
            List<String> r = killedAndResumed(dir, List.of());
            // the checkpoint's run is this one: another sparsity replays to another starting point and is refused, changing nothing
            Path broken = dir.resolve("broken");
            Map<String, String> done = snapshot(broken);
            List<String> other = new ArrayList<>(r);
            other.set(other.indexOf("--sparsity") + 1, "0.4");
            CliRun refused = run(other);
            assertEquals(1, refused.code(), refused.printed());
            assertTrue(refused.err().contains("checkpoint of another run") && refused.err().contains("prune.config"), refused.printed());
            List<String> gradual = new ArrayList<>(r);
            gradual.addAll(List.of("--schedule", "gradual"));
            CliRun g = run(gradual);
            assertEquals(1, g.code(), g.printed());
            assertTrue(g.err().contains("checkpoint of another run"), "a one-shot run's checkpoint is not a gradual run's: " + g.printed());
            assertEquals(done, snapshot(broken), "a refused resume changes nothing");
        }

        /**
         * The gradual schedule killed in the middle of its ramp (the masks still tightening: the ramp is
         * 16 of the 18 steps), after epoch 2: its checkpoint is of the model compacted to epoch 1's masks,
         * with epoch 2's masking more. The resumed run compacts the dense model it replayed to those
         * units, restores the step, the masks and the importance scores, hands over to the model
         * compacted to epoch 2's masks as the unbroken run did, and ends with its model, to the bit.
         */
        @Test
        void aKilledGradualRunResumesToTheModelOfAnUnbrokenRun(@TempDir Path dir) throws Exception {
            killedAndResumed(dir, 96, 64, List.of("--schedule", "gradual", "--ramp", "0.9"), 2);
            // the checkpoint it resumed from was of a compacted model (after epoch 1) whose masks had gone further (in epoch 2):
            // the resumed run's first act is the hand-over, before any epoch of its own
            String resumed = Files.readString(dir.resolve("resumed.log"));
            int from = resumed.indexOf("resumed after epoch 2"), handOver = resumed.indexOf("after epoch 2 the adapters train on in the model compacted");
            assertTrue(from >= 0 && handOver > from && !resumed.substring(from, handOver).contains("epoch 3:"), resumed);
            assertTrue(Files.readString(dir.resolve("killed.log")).contains("after epoch 1 the adapters train on in the model compacted"),
                    "compacted after epoch 1 too, before the kill");
        }

        /**
         * Killed around the end of its ramp (5 of the 18 steps): the masks final after epoch 1, the model
         * compacted there and trained on. Killed after epoch 1 the resumed run hands over from the masked
         * model's checkpoint, after epoch 2 it resumes the compacted model's: either way the unbroken run's
         * model, to the bit.
         */
        @Test
        void aGradualRunKilledAfterItsRampResumesToTheModelOfAnUnbrokenRun(@TempDir Path dir) throws Exception {
            for (int killAfter = 1; killAfter <= 2; killAfter++) // one unbroken run for both
                killedAndResumed(dir.resolve("after" + killAfter), dir.resolve("straight"), 96, 64, List.of("--schedule", "gradual", "--ramp", "0.3"),
                        killAfter);
            for (String run : List.of("straight", "after1/broken", "after2/broken"))
                try (Safetensors st = Safetensors.read(dir.resolve(run + "/checkpoint.safetensors"))) {
                    assertEquals(st.metadata().get("gradual.masks"), st.metadata().get("gradual.shape"),
                            run + ": the last checkpoint is of the model compacted to the final masks");
                }
        }
    }

    @Nested
    class Server {
        @TempDir
        Path dir;

        private PredictServer start(Classifier c, PredictServer.Options o) throws IOException {
            return new PredictServer(Map.of("sst2", c), o, "127.0.0.1", 0, List.of(Device.CPU));
        }

        @Test
        void aSlowHeaderClientIsCutWithinTheHeaderTimeout() throws Exception {
            try (Classifier c = Classifier.load(TinyModels.write(dir.resolve("m"), GlueTask.SST2, 1));
                    PredictServer s = start(c, PredictServer.Options.defaults().withTimeouts(30_000, 500, 10_000, 30_000));
                    Socket slow = new Socket("127.0.0.1", s.port())) {
                slow.setSoTimeout(5_000);
                OutputStream o = slow.getOutputStream();
                long t0 = System.nanoTime();
                o.write("POST /v1/predict HTTP/1.1\r\nHost: x\r\n".getBytes(StandardCharsets.US_ASCII));
                // one header byte every 100 ms: never a complete request, always some traffic
                Thread drip = Thread.ofVirtual().start(() -> {
                    try {
                        for (int i = 0; i < 60; i++) {
                            o.write('a');
                            o.flush();
                            Thread.sleep(100);
                        }
                    } catch (IOException | InterruptedException e) {
                        // cut off: what the test waits for
                    }
                });
                String status = new BufferedReader(new InputStreamReader(slow.getInputStream(), StandardCharsets.US_ASCII)).readLine();
                double waited = (System.nanoTime() - t0) * 1e-6;
                drip.interrupt();
                assertTrue(status == null || status.startsWith("HTTP/1.1 408"), "status: " + status);
                assertTrue(waited >= 400 && waited < 2_500, "cut after " + waited + " ms (header timeout 500 ms)");
                try (Socket ok = new Socket("127.0.0.1", s.port())) {
                    assertEquals(200, Response.exchange(ok, "POST", "/v1/predict", "{\"texts\": [\"fine\"]}", Map.of()).code());
                }
            }
        }

        @Test
        void pastTheConnectionCapNewClientsGet503AndHeldOnesAreStillServed() throws Exception {
            try (Classifier c = Classifier.load(TinyModels.write(dir.resolve("m"), GlueTask.SST2, 1));
                    PredictServer s = start(c, PredictServer.Options.defaults().withConnections(4, 16 << 10, 100))) {
                String body = "{\"texts\": [\"fine\"]}";
                try (Socket held = new Socket("127.0.0.1", s.port())) {
                    assertEquals(200, Response.exchange(held, "POST", "/v1/predict", body, Map.of()).code());
                    List<Socket> idle = new ArrayList<>();
                    for (int i = 0; i < 3; i++) idle.add(new Socket("127.0.0.1", s.port()));
                    waitFor(() -> s.openConnections() == 4);
                    for (int i = 0; i < 5; i++) {
                        try (Socket extra = new Socket("127.0.0.1", s.port())) {
                            Response r = Response.exchange(extra, "POST", "/v1/predict", body, Map.of());
                            assertEquals(503, r.code(), r.body());
                            assertTrue(r.body().contains("limit of 4 connections"), r.body());
                        }
                    }
                    assertEquals(200, Response.exchange(held, "POST", "/v1/predict", body, Map.of()).code(), "the held client is still served");
                    for (Socket i : idle) i.close();
                    waitFor(() -> s.openConnections() == 1);
                    try (Socket fresh = new Socket("127.0.0.1", s.port())) {
                        assertEquals(200, Response.exchange(fresh, "POST", "/v1/predict", body, Map.of()).code());
                    }
                }
            }
        }

        @Test
        void headerCountAndSizeAreCapped() throws Exception {
            try (Classifier c = Classifier.load(TinyModels.write(dir.resolve("m"), GlueTask.SST2, 1));
                    PredictServer s = start(c, PredictServer.Options.defaults().withConnections(64, 2048, 20))) {
                Map<String, String> many = new LinkedHashMap<>();
                for (int i = 0; i < 25; i++) many.put("X-H" + i, "v");
                try (Socket a = new Socket("127.0.0.1", s.port())) {
                    Response r = Response.exchange(a, "GET", "/health", null, many);
                    assertEquals(431, r.code(), r.body());
                    assertTrue(r.body().contains("over the limit of 20"), r.body());
                }
                try (Socket b = new Socket("127.0.0.1", s.port())) {
                    Response r = Response.exchange(b, "GET", "/health", null, Map.of("X-Big", "y".repeat(4000)));
                    assertEquals(431, r.code(), r.body());
                    assertTrue(r.body().contains("2048 bytes"), r.body());
                }
            }
        }

        @Test
        void anApiKeyIsRequiredWhenGiven() throws Exception {
            String key = "k".repeat(20);
            try (Classifier c = Classifier.load(TinyModels.write(dir.resolve("m"), GlueTask.SST2, 1));
                    PredictServer s = start(c, PredictServer.Options.defaults().withApiKey(key)); Socket a = new Socket("127.0.0.1", s.port())) {
                Response no = Response.exchange(a, "POST", "/v1/predict", "{\"texts\": [\"fine\"]}", Map.of());
                assertEquals(401, no.code(), no.body());
                Response wrong = Response.exchange(a, "POST", "/v1/predict", "{\"texts\": [\"fine\"]}", Map.of("Authorization", "Bearer nope"));
                assertEquals(401, wrong.code());
                Response yes = Response.exchange(a, "POST", "/v1/predict", "{\"texts\": [\"fine\"]}", Map.of("Authorization", "Bearer " + key));
                assertEquals(200, yes.code(), yes.body());
            }
        }

        @Test
        void timeoutsMustBePositiveAndOpenInterfacesAreWarnedAbout() {
            CliRun zero = CliRun.of("serve", "--model", "/nonexistent", "--body-timeout-ms", "0");
            assertEquals(1, zero.code(), zero.printed());
            assertTrue(zero.err().contains("--body-timeout-ms must be >= 1, got 0"), zero.printed());
            CliRun open = CliRun.of("serve", "--model", "/nonexistent/model", "--host", "0.0.0.0", "--port", "0");
            assertEquals(1, open.code(), open.printed());
            assertTrue(open.err().contains("warning: listening on 0.0.0.0 with no authentication"), open.printed());
        }
    }

    @Nested
    class UntrustedConfigs {
        @TempDir
        Path dir;

        private Path withConfig(String field, Object value) throws IOException {
            Path m = TinyModels.write(dir.resolve("m-" + field), GlueTask.SST2, 1);
            ObjectNode cfg = (ObjectNode) JSON.readTree(m.resolve("config.json").toFile());
            cfg.set(field, JSON.valueToTree(value));
            Files.writeString(m.resolve("config.json"), cfg.toString());
            return m;
        }

        @Test
        void sizesOverTheLimitsAreRefusedBeforeAnyAllocation() throws Exception {
            ModelFormatException e = assertThrows(ModelFormatException.class, () -> FineTunedModel.load(withConfig("vocab_size", 1_000_000_000)));
            assertTrue(e.getMessage().contains("config.json: field vocab_size is 1000000000, over the limit of 4194304"), e.getMessage());
            ModelFormatException h = assertThrows(ModelFormatException.class, () -> FineTunedModel.load(withConfig("hidden_size", 1 << 20)));
            assertTrue(h.getMessage().contains("hidden_size") && h.getMessage().contains("limit"), h.getMessage());
        }

        @Test
        void everyDisagreementWithTheWeightsIsRefused() throws Exception {
            ModelFormatException more = assertThrows(ModelFormatException.class, () -> FineTunedModel.load(withConfig("num_hidden_layers", 2)));
            assertTrue(more.getMessage().contains("no tensor encoder.layer.1.") && more.getMessage().contains("config.json implies it"),
                    more.getMessage());
            ModelFormatException wider = assertThrows(ModelFormatException.class, () -> FineTunedModel.load(withConfig("intermediate_size", 96)));
            assertTrue(wider.getMessage().contains("is [64, 32], config.json implies [96, 32]"), wider.getMessage());
            // a file holding a layer the config does not describe
            Path m = TinyModels.write(dir.resolve("extra"), GlueTask.SST2, 1);
            Path weights = m.resolve("model.safetensors");
            try (Safetensors st = Safetensors.read(weights); TensorScope scope = new TensorScope("t", MemoryCategory.WORKSPACE)) {
                Map<String, Tensor> all = new LinkedHashMap<>();
                for (var e : st.entries().entrySet())
                    all.put(e.getKey(), scope.allocate(DType.F32, e.getValue().shape()).copyFrom(e.getValue().floats(weights)));
                all.put("encoder.layer.1.output.dense.weight", scope.allocate(DType.F32, 32, 64).fill(0f));
                Safetensors.write(dir.resolve("extra.safetensors"), all, Map.of());
            }
            Files.move(dir.resolve("extra.safetensors"), weights, java.nio.file.StandardCopyOption.REPLACE_EXISTING);
            ModelFormatException extra = assertThrows(ModelFormatException.class, () -> FineTunedModel.load(m));
            assertTrue(extra.getMessage().contains("encoder.layer.1.output.dense.weight is not part of the encoder config.json describes"),
                    extra.getMessage());
        }

        @Test
        void threadsAreBoundedByTheMachine() {
            CliRun r = CliRun.of("encode", "--input", dir.resolve("in.txt").toString(), "--output", dir.resolve("o.safetensors").toString(),
                    "--threads", "100000");
            assertEquals(1, r.code(), r.printed());
            assertTrue(r.err().contains("--threads: threads must be between 1 and this machine's " + Runtime.getRuntime().availableProcessors()),
                    r.printed());
        }
    }

    /** A minimal HTTP/1.1 exchange on a raw socket (keep-alive), for what clients libraries hide. */
    record Response(int code, String body) {
        static Response exchange(Socket s, String method, String path, String body, Map<String, String> headers) throws IOException {
            s.setSoTimeout(10_000);
            byte[] b = body == null ? new byte[0] : body.getBytes(StandardCharsets.UTF_8);
            StringBuilder req = new StringBuilder(method + " " + path + " HTTP/1.1\r\nHost: localhost\r\n");
            headers.forEach((k, v) -> req.append(k).append(": ").append(v).append("\r\n"));
            if (body != null) req.append("Content-Type: application/json\r\nContent-Length: ").append(b.length).append("\r\n");
            req.append("\r\n");
            OutputStream o = s.getOutputStream();
            o.write(req.toString().getBytes(StandardCharsets.UTF_8));
            o.write(b);
            o.flush();
            var in = new java.io.DataInputStream(new java.io.BufferedInputStream(s.getInputStream()));
            String status = line(in);
            assertNotNull(status, "the server closed the connection without an answer");
            int length = 0;
            for (String h; !(h = line(in)).isEmpty(); )
                if (h.toLowerCase(Locale.ROOT).startsWith("content-length:")) length = Integer.parseInt(h.substring(15).trim());
            byte[] answer = new byte[length];
            in.readFully(answer);
            return new Response(Integer.parseInt(status.split(" ")[1]), new String(answer, StandardCharsets.UTF_8));
        }

        private static String line(java.io.DataInputStream in) throws IOException {
            StringBuilder sb = new StringBuilder();
            for (int c; (c = in.read()) != -1; ) {
                if (c == '\n') return sb.toString().stripTrailing();
                sb.append((char) c);
            }
            return sb.isEmpty() ? null : sb.toString();
        }
    }

    static void waitFor(java.util.function.BooleanSupplier condition) throws InterruptedException {
        for (int i = 0; i < 200 && !condition.getAsBoolean(); i++) Thread.sleep(10);
        assertTrue(condition.getAsBoolean(), "condition not reached within 2 s");
    }
}
