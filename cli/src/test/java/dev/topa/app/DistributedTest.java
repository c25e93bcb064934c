package dev.topa.app;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import com.fasterxml.jackson.databind.ObjectMapper;
import dev.topa.io.Safetensors;
import dev.topa.testing.TestData;
import dev.topa.train.FineTunedModel;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * Training across processes with mpirun (Open MPI), against the same run in one process: the same
 * per-epoch "train loss" lines, printed once; the same final weights within float summation order
 * (every element within 1e-6 + 1e-5 of the tensor's largest magnitude: the sums of gradients over
 * two ranks add in another order than over one batch); prune-adapt removing exactly the same heads
 * and neurons; a killed rank or a failing one stopping every rank within seconds, leaving the
 * previous complete model or none. Dropout is off in the comparisons: each rank draws its own
 * masks, as data-parallel training does. Skipped where mpirun is absent (CI installs Open MPI).
 */
class DistributedTest {
    private static final List<String> NO_DROPOUT = List.of("--dropout", "0", "--attention-dropout", "0", "--lora-dropout", "0");

    @BeforeAll
    static void mpirun() {
        boolean present = Files.isExecutable(Path.of("/usr/bin/mpirun"));
        if (!present && "true".equals(System.getenv("CI"))) fail("mpirun not found: CI installs openmpi-bin (.ci/run)");
        assumeTrue(present, "no mpirun here (apt-get install openmpi-bin libopenmpi-dev)");
    }

    private record Run(int code, String out) {}

    /** topa with args in ranks processes (mpirun when more than one), its output; killAfter: kill -9 one rank once this text appears. */
    private static Run topa(int ranks, Path log, String killAfter, List<String> args) throws Exception {
        List<String> cmd = new ArrayList<>();
        if (ranks > 1) {
            cmd.addAll(List.of("/usr/bin/mpirun", "--oversubscribe", "-np", Integer.toString(ranks)));
            if ("root".equals(System.getProperty("user.name"))) cmd.add(2, "--allow-run-as-root");
        }
        cmd.addAll(List.of(Path.of(System.getProperty("java.home"), "bin", "java").toString(), "--enable-native-access=ALL-UNNAMED", "-Xmx2g", "-cp",
                System.getProperty("java.class.path"), "dev.topa.app.Main"));
        cmd.addAll(args);
        ProcessBuilder pb = new ProcessBuilder(cmd).redirectErrorStream(true).redirectOutput(log.toFile());
        pb.environment().keySet().removeIf(k -> k.startsWith("OMPI_") || k.startsWith("PMIX_")); // one process is one process
        Process p = pb.start();
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(240);
        if (killAfter != null) {
            while (!Files.readString(log).contains(killAfter) && p.isAlive() && System.nanoTime() < deadline) Thread.sleep(100);
            List<ProcessHandle> rankProcesses = p.toHandle().descendants().filter(h -> h.info().command().orElse("").endsWith("/java")).toList();
            assertEquals(ranks, rankProcesses.size(), "rank processes under mpirun:\n" + Files.readString(log));
            rankProcesses.get(ranks - 1).destroyForcibly();
            long killed = System.nanoTime();
            assertTrue(p.waitFor(30, TimeUnit.SECONDS), "the other ranks still run 30 s after one was killed");
            System.out.printf("distributed: mpirun ended %.1f s after a rank was killed%n", (System.nanoTime() - killed) * 1e-9);
        }
        if (!p.waitFor(Math.max(1, deadline - System.nanoTime()), TimeUnit.NANOSECONDS)) {
            p.descendants().forEach(ProcessHandle::destroyForcibly);
            p.destroyForcibly();
            fail("topa " + args + " did not end in 240 s:\n" + Files.readString(log));
        }
        return new Run(p.exitValue(), Files.readString(log));
    }

    private static List<String> args(Path glue, Path out, List<String> extra, String... command) {
        List<String> a = new ArrayList<>(List.of(command));
        // the first 64 dev examples: each rank evaluates on one core, and the runs are compared by their losses and weights
        a.addAll(List.of("--task", "rte", "--data-dir", glue.toString(), "--train-limit", "48", "--dev-limit", "64", "--batch-size", "16",
                "--max-seq-len", "48", "--threads", "1", "--out", out.toString()));
        if (!a.contains("--epochs")) a.addAll(List.of("--epochs", "1"));
        a.addAll(extra);
        return a;
    }

    private static List<String> trainLossLines(String out) {
        return out.lines().filter(l -> l.contains("train loss")).map(l -> l.replaceAll(", [0-9.]+ s$", "")).toList();
    }

    private static Map<String, float[]> tensors(Path file) throws IOException {
        Map<String, float[]> m = new TreeMap<>();
        try (Safetensors st = Safetensors.read(file)) {
            st.entries().forEach((n, e) -> m.put(n, e.floats(file)));
        }
        return m;
    }

    private static void sameWeights(Path a, Path b) throws IOException {
        for (String f : new String[] {"model.safetensors", "head.safetensors"}) {
            Map<String, float[]> x = tensors(a.resolve(f)), y = tensors(b.resolve(f));
            assertEquals(x.keySet(), y.keySet(), f);
            x.forEach((n, v) -> {
                float[] w = y.get(n);
                assertEquals(v.length, w.length, n);
                double scale = 0, worst = 0;
                for (float z : v) scale = Math.max(scale, Math.abs(z));
                for (int i = 0; i < v.length; i++) worst = Math.max(worst, Math.abs(v[i] - w[i]));
                assertTrue(worst <= 1e-6 + 1e-5 * scale, f + " " + n + ": differs by " + worst + " (largest magnitude " + scale + ")");
            });
        }
    }

    private static void sameRun(Path dir, List<String> command, List<String> extra) throws Exception {
        Path glue = TestData.glue(), one = dir.resolve("one"), two = dir.resolve("two");
        Run a = topa(1, dir.resolve("one.log"), null, args(glue, one, extra, command.toArray(String[]::new)));
        Run b = topa(2, dir.resolve("two.log"), null, args(glue, two, extra, command.toArray(String[]::new)));
        assertEquals(0, a.code(), a.out());
        assertEquals(0, b.code(), b.out());
        List<String> la = trainLossLines(a.out()), lb = trainLossLines(b.out());
        assertFalse(la.isEmpty(), a.out());
        assertEquals(la, lb, "the per-epoch lines of 2 ranks (printed once, by rank 0) are those of 1 process");
        sameWeights(one, two);
    }

    /** The ranks sum gradients in host memory: a device is refused by every command that trains, before any model loads or output. */
    @Test
    void trainingAcrossProcessesOnADeviceIsRefusedBeforeAnyWork(@TempDir Path dir) throws Exception {
        for (String command : new String[] {"finetune", "prune-adapt"}) {
            Path out = dir.resolve(command);
            Run r = topa(2, dir.resolve(command + ".log"), null, args(TestData.glue(), out, List.of("--device", "cuda"), command));
            assertEquals(1, r.code(), r.out());
            assertTrue(r.out().contains("--device cuda:0: training across 2 processes runs on the CPU"), r.out());
            assertFalse(Files.exists(out), command + " wrote " + out);
        }
    }

    @Test
    void loraOnTwoRanksIsTheOneProcessRun(@TempDir Path dir) throws Exception {
        sameRun(dir, List.of("finetune", "--base-precision", "fp32"), NO_DROPOUT);
    }

    @Test
    void fullFineTuningOnTwoRanksIsTheOneProcessRun(@TempDir Path dir) throws Exception {
        sameRun(dir, List.of("finetune", "--method", "full"), List.of("--dropout", "0", "--attention-dropout", "0"));
    }

    /**
     * Layer-wise distillation's term is a mean over the batch's real tokens: each rank's share must
     * weigh its tokens, not its examples, for the sum over ranks to be the one-process gradient
     * (RTE's examples differ in length, so the two differ).
     */
    @Test
    void layerWiseDistillationOnTwoRanksIsTheOneProcessRun(@TempDir Path dir) throws Exception {
        Path teacher = dir.resolve("teacher");
        Run t = topa(1, dir.resolve("teacher.log"), null, args(TestData.glue(), teacher, NO_DROPOUT, "finetune", "--method", "full"));
        assertEquals(0, t.code(), t.out());
        sameRun(dir, List.of("prune-adapt", "--sparsity", "0.5", "--score-examples", "32", "--inference-iterations", "0", "--distill", "0.5",
                "--teacher", teacher.toString(), "--distill-hidden", "4"), NO_DROPOUT);
    }

    /**
     * The gradual schedule across ranks: masks from scores summed over the ranks, the masked units'
     * gradients zeroed after the sum, the model compacted to the masks so far after epoch 1 (the ramp
     * is 5 of the 6 steps) and to the final ones after epoch 2, on every rank alike: the one-process run.
     */
    @Test
    void gradualPruningOnTwoRanksIsTheOneProcessRun(@TempDir Path dir) throws Exception {
        sameRun(dir, List.of("prune-adapt", "--sparsity", "0.5", "--score-examples", "32", "--inference-iterations", "0", "--schedule", "gradual",
                "--epochs", "2", "--ramp", "0.9"), NO_DROPOUT);
        assertTrue(Files.readString(dir.resolve("two.log")).contains("after epoch 1 the adapters train on in the model compacted to the masks so far"),
                Files.readString(dir.resolve("two.log")));
    }

    @Test
    void pruneAdaptOnTwoRanksRemovesTheSameUnits(@TempDir Path dir) throws Exception {
        sameRun(dir, List.of("prune-adapt", "--sparsity", "0.5", "--score-examples", "33", "--inference-iterations", "1"), NO_DROPOUT);
        ObjectMapper json = new ObjectMapper();
        var p1 = json.readTree(dir.resolve("one/pruning.json").toFile()); // 33 scoring examples: a last batch of 1, fewer than ranks
        var p2 = json.readTree(dir.resolve("two/pruning.json").toFile());
        assertEquals(p1.get("heads_per_layer"), p2.get("heads_per_layer"));
        assertEquals(p1.get("ffn_per_layer"), p2.get("ffn_per_layer"));
    }

    @Test
    void aKilledRankStopsTheRunAndLeavesTheLastCompleteModel(@TempDir Path dir) throws Exception {
        Path out = dir.resolve("out");
        List<String> a = args(TestData.glue(), out, NO_DROPOUT, "finetune");
        a.set(a.indexOf("--epochs") + 1, "20");
        a.addAll(List.of("--eval-every", "1"));
        Run r = topa(2, dir.resolve("kill.log"), "best so far: saved", a);
        assertNotEquals(0, r.code(), r.out());
        assertTrue(r.out().matches("(?s).*process rank \\d with PID \\d+ on node .* exited on signal 9.*"), "mpirun names the rank and the cause:\n" + r.out());
        if (Files.exists(out.resolve("model.safetensors"))) try (FineTunedModel.Loaded m = FineTunedModel.load(out)) { // complete, checked
            assertTrue(m.model().parameterBytes() > 0);
        }
    }

    @Test
    void aFailingRankStopsEveryRankNamingItself(@TempDir Path dir) throws Exception {
        Path out = Files.createDirectories(dir.resolve("used"));
        Files.writeString(out.resolve("something.txt"), "not topa's");
        long t0 = System.nanoTime();
        Run r = topa(2, dir.resolve("fail.log"), null, args(TestData.glue(), out, NO_DROPOUT, "finetune"));
        assertNotEquals(0, r.code(), r.out());
        assertTrue(r.out().contains("topa: rank 0 of 2: "), r.out());
        assertTrue((System.nanoTime() - t0) * 1e-9 < 120, "every rank stopped");
    }
}
