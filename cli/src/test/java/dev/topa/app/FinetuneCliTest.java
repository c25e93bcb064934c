package dev.topa.app;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.ObjectMapper;
import dev.topa.testing.TestData;
import dev.topa.train.TrainingPlot;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Locale;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** finetune -> eval -> predict through the CLI: the saved model (LoRA merged) scores what training saw. */
class FinetuneCliTest {
    private static String[] run(String... args) {
        CliRun r = CliRun.of(args);
        return new String[] {String.valueOf(r.code()), r.out(), r.err()};
    }

    @Test
    void loraRunSavesAMergedModelThatEvalAndPredictUse(@TempDir Path dir) throws Exception {
        Path glue = TestData.glue();
        Path out = dir.resolve("rte");
        String[] ft = run("finetune", "--task", "rte", "--data-dir", glue.toString(), "--method", "lora", "--epochs", "1",
                "--train-limit", "48", "--batch-size", "16", "--max-seq-len", "64", "--eval-every", "2", "--lora-dropout", "0.1",
                "--out", out.toString());
        assertEquals("0", ft[0], ft[2]);
        for (String f : new String[] {"config.json", "model.safetensors", "head.safetensors", "tokenizer.json", "task.json", "report.json",
                "report.md", "report.png"})
            assertTrue(Files.isRegularFile(out.resolve(f)), f + " missing; finetune printed:\n" + ft[1]);
        var png = javax.imageio.ImageIO.read(out.resolve("report.png").toFile());
        assertEquals(TrainingPlot.WIDTH, png.getWidth(), "report.png is a readable image of the plot's size");
        var report = new ObjectMapper().readTree(out.resolve("report.json").toFile());
        double trained = report.get("best").get("accuracy").asDouble();
        // 48 examples in batches of 16: evaluations after step 2 (--eval-every) and at the epoch's end (step 3)
        assertEquals(2, report.get("epochs").size(), report.toString());
        assertEquals(2, report.get("epochs").get(0).get("step").asInt());
        assertEquals(3, report.get("epochs").get(1).get("step").asInt());
        assertEquals(0.1, report.get("recipe").get("lora_dropout").asDouble());
        assertTrue(report.get("trainable_parameters").asLong() < report.get("total_parameters").asLong() / 20);
        String[] ev = run("eval", "--model", out.toString(), "--data-dir", glue.toString());
        assertEquals("0", ev[0], ev[2]);
        assertTrue(ev[1].contains(String.format(Locale.ROOT, "accuracy: %.4f", trained)),
                "the merged model must score what the adapted one did (" + trained + "):\n" + ev[1]);
        String[] pr = run("predict", "--model", out.toString(), "The cat sat on the mat.", "A cat was sitting.");
        assertEquals("0", pr[0], pr[2]);
        assertTrue(pr[1].contains("label: ") && pr[1].contains("p(entailment)"), pr[1]);
        String[] bad = run("predict", "--model", out.toString(), "only one text");
        assertEquals("1", bad[0]);
        assertTrue(bad[2].contains("RTE needs two texts"), bad[2]);
    }

    @Test
    void pruneAdaptRemovesHalfTheUnitsAndTheReloadedModelScoresTheSame(@TempDir Path dir) throws Exception {
        Path glue = TestData.glue();
        Path out = dir.resolve("pa");
        String[] pa = run("prune-adapt", "--task", "rte", "--data-dir", glue.toString(), "--epochs", "1", "--train-limit", "48",
                "--batch-size", "16", "--max-seq-len", "64", "--score-examples", "32", "--sparsity", "0.5", "--inference-iterations", "2",
                "--out", out.toString());
        assertEquals("0", pa[0], pa[2]);
        var p = new ObjectMapper().readTree(out.resolve("pruning.json").toFile());
        int heads = 0, neurons = 0;
        for (var h : p.get("heads_per_layer")) heads += h.asInt();
        for (var f : p.get("ffn_per_layer")) neurons += f.asInt();
        assertEquals(36, heads, "half of MiniLM's 72 heads stay");
        assertEquals(4608, neurons, "half of its 9216 FFN neurons stay");
        assertTrue(p.get("encoder_parameters_pruned").asLong() < 0.55 * p.get("encoder_parameters_dense").asLong());
        assertTrue(p.get("inference_b32_s128_seq_per_s").asDouble() > 0 && p.get("inference_b1_s128_latency_ms").asDouble() > 0);
        String[] ev = run("eval", "--model", out.toString(), "--data-dir", glue.toString());
        assertEquals("0", ev[0], ev[2]);
        assertTrue(ev[1].contains(String.format(Locale.ROOT, "accuracy: %.4f", p.get("best_dev").asDouble())),
                "the exported pruned model must score what training saw:\n" + ev[1]);
    }

    @Test
    void paperPresetPrunesHeadsOnlyAndGivesImportantLayersTheHigherRank(@TempDir Path dir) throws Exception {
        Path out = dir.resolve("paper");
        String[] pa = run("prune-adapt", "--recipe", "paper", "--task", "rte", "--data-dir", TestData.glue().toString(), "--epochs", "1",
                "--train-limit", "48", "--batch-size", "16", "--max-seq-len", "64", "--score-examples", "32", "--inference-iterations", "0",
                "--out", out.toString());
        assertEquals("0", pa[0], pa[2]);
        var p = new ObjectMapper().readTree(out.resolve("pruning.json").toFile());
        int heads = 0;
        for (var h : p.get("heads_per_layer")) heads += h.asInt();
        assertEquals(72 - Math.round(72 * 43.0 / 144), heads, "the paper removes 43 of 144 heads: the same fraction of MiniLM's 72");
        for (var f : p.get("ffn_per_layer")) assertEquals(1536, f.asInt(), "the paper prunes heads only");
        int high = 0;
        for (var r : p.get("lora_rank_per_layer")) high += r.asInt() == 8 ? 1 : 0;
        assertEquals(2, high, "a third of the layers (4 of 12 in the paper, 2 of 6 here) get rank 8");
        var report = new ObjectMapper().readTree(out.resolve("report.json").toFile());
        assertEquals(2e-5, report.get("recipe").get("lr").asDouble());
    }

    @Test
    void pruneMethodIsThePruningOnlyBaseline(@TempDir Path dir) throws Exception {
        Path out = dir.resolve("prune");
        String[] r = run("finetune", "--method", "prune", "--task", "rte", "--data-dir", TestData.glue().toString(), "--epochs", "1",
                "--train-limit", "32", "--batch-size", "16", "--max-seq-len", "48", "--sparsity", "0.5", "--out", out.toString());
        assertEquals("0", r[0], r[2]);
        var p = new ObjectMapper().readTree(out.resolve("pruning.json").toFile());
        assertEquals("prune-only", p.get("recipe").asText());
        var report = new ObjectMapper().readTree(out.resolve("report.json").toFile());
        assertEquals(report.get("total_parameters").asLong() + 384 * 2 + 2, report.get("trainable_parameters").asLong(),
                "every weight of the pruned model trains (plus the head)");
        assertEquals("prune", report.get("recipe").get("method").asText());
    }

    @Test
    void gradualScheduleEndsAtTheTargetAndTheSavedCompactModelScoresTheSame(@TempDir Path dir) throws Exception {
        Path out = dir.resolve("gradual");
        String[] pa = run("prune-adapt", "--schedule", "gradual", "--ramp", "0.5", "--task", "rte", "--data-dir", TestData.glue().toString(),
                "--epochs", "2", "--train-limit", "64", "--batch-size", "16", "--max-seq-len", "48", "--score-examples", "16",
                "--sparsity", "0.5", "--eval-every", "1", "--out", out.toString());
        assertEquals("0", pa[0], pa[2]);
        var p = new ObjectMapper().readTree(out.resolve("pruning.json").toFile());
        // evaluations during the ramp are of a model not yet at the target, never saved: the report's best is the saved one
        var report = new ObjectMapper().readTree(out.resolve("report.json").toFile());
        assertEquals(p.get("best_dev").asDouble(), report.get("best").get("accuracy").asDouble(), report.toString());
        assertTrue(report.get("best").get("step").asLong() >= p.get("ramp_steps").asLong(), report.get("best").toString());
        int heads = 0;
        for (var h : p.get("heads_per_layer")) heads += h.asInt();
        assertEquals(36, heads, "the cubic ramp reaches the target: half of the 72 heads");
        String[] ev = run("eval", "--model", out.toString(), "--data-dir", TestData.glue().toString());
        assertEquals("0", ev[0], ev[2]);
        assertTrue(ev[1].contains(String.format(Locale.ROOT, "accuracy: %.4f", p.get("best_dev").asDouble())),
                "the masked model trained and the compacted one saved must agree:\n" + ev[1] + "\nbest " + p.get("best_dev"));
    }

    @Test
    void compareTrainsTheFiveMethodsAndTabulatesTheirMeasuredFigures(@TempDir Path dir) throws Exception {
        Path out = dir.resolve("cmp");
        String[] c = run("compare", "--task", "rte", "--data-dir", TestData.glue().toString(), "--epochs", "1", "--train-limit", "32",
                "--max-seq-len", "32", "--sweep", "0.3,0.5", "--inference-iterations", "1", "--out", out.toString());
        assertEquals("0", c[0], c[1] + c[2]);
        var r = new ObjectMapper().readTree(out.resolve("compare.json").toFile());
        assertEquals(5, r.get("methods").size());
        long fullTrainable = r.get("methods").get(0).get("trainable_parameters").asLong();
        for (var m : r.get("methods")) {
            assertTrue(m.get("dev").asDouble() > 0 && m.get("training_peak_bytes").asLong() > 0 && m.get("disk_bytes").asLong() > 0, m.toString());
            assertTrue(m.get("inference_b32_s128_seq_per_s").asDouble() > 0, m.toString());
        }
        assertTrue(r.get("methods").get(1).get("trainable_parameters").asLong() < fullTrainable / 10, "LoRA trains a small fraction");
        assertTrue(r.get("methods").get(4).get("disk_bytes").asLong() < r.get("methods").get(0).get("disk_bytes").asLong(),
                "the pruned model is smaller on disk than the dense one");
        assertEquals(2, r.get("sparsity_curve").size());
        assertEquals(r.get("methods").get(4).get("dev").asDouble(), r.get("sparsity_curve").get(1).get("dev").asDouble(),
                "the 50% point is the topa row's run, not a second one");
        assertTrue(java.nio.file.Files.size(out.resolve("sparsity.png")) > 1000);
        assertTrue(java.nio.file.Files.readString(out.resolve("compare.md")).contains("| LoRA |"));
    }

    @Test
    void blockPruningKeepsHalfTheBlocksExportsThemSparseAndTheReloadScoresTheSame(@TempDir Path dir) throws Exception {
        for (String scorer : new String[] {"taylor", "lora-taylor"}) {
            Path out = dir.resolve(scorer);
            String[] pa = run("prune-adapt", "--task", "rte", "--data-dir", TestData.glue().toString(), "--structure", "blocks", "--scorer",
                    scorer, "--epochs", "1", "--train-limit", "48", "--batch-size", "16", "--max-seq-len", "48", "--score-examples", "32",
                    "--sparsity", "0.5", "--inference-iterations", "1", "--out", out.toString());
            assertEquals("0", pa[0], pa[2]);
            var p = new ObjectMapper().readTree(out.resolve("pruning.json").toFile());
            assertEquals("blocks", p.get("structure").asText());
            assertEquals(0.5, p.get("block_density").asDouble(), 0.02, "half of the encoder's parameters go, as 32 x 32 blocks");
            assertTrue(p.get("encoder_parameters_pruned").asLong() < 0.52 * p.get("encoder_parameters_dense").asLong());
            assertTrue(java.nio.file.Files.readString(out.resolve("config.json")).contains("topa_block_size"));
            assertEquals(24, p.get("block_formats").size(), "each of MiniLM's 6 x 4 masked weights measured in both forms");
            for (var f : p.get("block_formats"))
                assertEquals(f.get("dense_ms").asDouble() < f.get("block_sparse_ms").asDouble() ? "dense" : "block-sparse", f.get("chosen").asText());
            assertTrue(pa[1].contains("block-masked weights computed dense"), pa[1]);
            String[] ev = run("eval", "--model", out.toString(), "--data-dir", TestData.glue().toString());
            assertEquals("0", ev[0], ev[2]);
            assertTrue(ev[1].contains(String.format(Locale.ROOT, "accuracy: %.4f", p.get("best_dev").asDouble())),
                    scorer + ": the block-sparse export must score what training saw:\n" + ev[1]);
        }
        String[] bad = run("prune-adapt", "--task", "rte", "--data-dir", TestData.glue().toString(), "--structure", "heads", "--scorer",
                "lora-taylor", "--out", dir.resolve("bad").toString());
        assertEquals("1", bad[0]);
        assertTrue(bad[2].contains("lora-taylor"), bad[2]);
    }

    @Test
    void gradualPruningWithABf16BaseIsRefusedBeforeAnyWork(@TempDir Path dir) {
        String[] b = run("prune-adapt", "--task", "rte", "--data-dir", TestData.glue().toString(), "--schedule", "gradual", "--base-precision",
                "bf16", "--out", dir.resolve("o").toString());
        assertEquals("1", b[0]);
        assertTrue(b[2].contains("use --base-precision fp32"), b[2]);
    }

    @Test
    void sparsityOutsideZeroToOneIsRejectedBeforeAnyWork(@TempDir Path dir) {
        for (String bad : new String[] {"1", "1.5", "-0.1", "NaN"}) {
            Path out = dir.resolve("s" + bad);
            String[] r = run("prune-adapt", "--task", "rte", "--data-dir", TestData.glue().toString(), "--sparsity", bad, "--out", out.toString());
            assertEquals("1", r[0], bad);
            assertTrue(r[2].contains("--sparsity must be in [0, 1)"), bad + ": " + r[2]);
            assertTrue(!java.nio.file.Files.exists(out), "nothing written for " + bad);
            String[] c = run("compare", "--task", "rte", "--data-dir", TestData.glue().toString(), "--sweep", "0," + bad, "--out", out.toString());
            assertEquals("1", c[0], bad);
            assertTrue(c[2].contains("--sweep"), bad + ": " + c[2]);
        }
        Path out = dir.resolve("words");
        String[] w = run("compare", "--task", "rte", "--data-dir", TestData.glue().toString(), "--sweep", "0,half", "--out", out.toString());
        assertEquals("1", w[0], w[2]);
        assertTrue(w[2].contains("--sweep: sparsities separated by commas, got 'half'"), w[2]);
        assertTrue(!java.nio.file.Files.exists(out), "nothing written");
    }

    @Test
    void badDistillationSettingsAreRejectedBeforeAnyWork(@TempDir Path dir) {
        String[][] cases = {{"--distill", "1.5"}, {"--distill", "-0.1"}, {"--distill", "NaN"}, {"--distill", "0.5", "--distill-temperature", "0"},
                {"--distill", "0.5", "--distill-temperature", "-2"}, {"--distill", "0.5", "--schedule", "gradual"},
                {"--distill", "0.5", "--distill-hidden", "1"}, {"--distill-hidden", "-1"}};
        String[] says = {"--distill: a weight in [0, 1]", "--distill: a weight in [0, 1]", "--distill: a weight in [0, 1]",
                "--distill-temperature: positive", "--distill-temperature: positive", "--schedule gradual needs --teacher DIR",
                "needs --distill ALPHA > 0 and --teacher DIR", "--distill-hidden: a weight >= 0"};
        for (int i = 0; i < cases.length; i++) {
            Path out = dir.resolve("d" + i);
            java.util.List<String> args = new java.util.ArrayList<>(java.util.List.of("prune-adapt", "--task", "rte", "--data-dir",
                    TestData.glue().toString(), "--base-precision", "fp32", "--out", out.toString()));
            args.addAll(java.util.List.of(cases[i]));
            String[] r = run(args.toArray(String[]::new));
            assertEquals("1", r[0], String.join(" ", cases[i]));
            assertTrue(r[2].contains(says[i]), String.join(" ", cases[i]) + ": " + r[2]);
            assertTrue(!java.nio.file.Files.exists(out), "nothing written for " + String.join(" ", cases[i]));
        }
    }

    @Test
    void aFineTunedTeacherTeachesInsteadOfTheWarmUpAndAMismatchedOneIsRefused(@TempDir Path dir) throws Exception {
        String glue = TestData.glue().toString();
        Path teacher = dir.resolve("teacher");
        String[] ft = run("finetune", "--task", "rte", "--data-dir", glue, "--method", "full", "--epochs", "1", "--train-limit", "32",
                "--batch-size", "16", "--max-seq-len", "48", "--out", teacher.toString());
        assertEquals("0", ft[0], ft[2]);
        java.util.function.BiFunction<String, String[], String[]> pa = (out, more) -> {
            java.util.List<String> a = new java.util.ArrayList<>(java.util.List.of("prune-adapt", "--task", "rte", "--data-dir", glue,
                    "--epochs", "1", "--train-limit", "32", "--batch-size", "16", "--max-seq-len", "48", "--score-examples", "16",
                    "--sparsity", "0.5", "--inference-iterations", "0", "--base-precision", "fp32", "--out", dir.resolve(out).toString()));
            a.addAll(java.util.List.of(more));
            return run(a.toArray(String[]::new));
        };
        String[] warm = pa.apply("warm", new String[] {"--distill", "0.5"});
        assertEquals("0", warm[0], warm[2]);
        // a teacher alone turns distillation on at its default weight
        String[] taught = pa.apply("taught", new String[] {"--teacher", teacher.toString()});
        assertEquals("0", taught[0], taught[2]);
        assertTrue(taught[1].contains("distillation: " + teacher + " taught 32 examples"), taught[1]);
        var w = new ObjectMapper().readTree(dir.resolve("warm/pruning.json").toFile());
        var f = new ObjectMapper().readTree(dir.resolve("taught/pruning.json").toFile());
        assertEquals("warm-up", w.get("teacher").asText());
        assertEquals(teacher.toString(), f.get("teacher").asText());
        assertEquals(PruneAdaptCommand.DEFAULT_DISTILL, f.get("distill_alpha").asDouble(), f.toString());
        assertEquals(0.5, w.get("distill_alpha").asDouble(), w.toString());
        long teacherBytes = Files.size(teacher.resolve("model.safetensors"));
        // read compacted for the training set, never whole beside the student: its linear weights (bf16 packs where they are faster
        // here, else fp32: 40.5 MiB of the file's 106) and the word embeddings of 32 examples' tokens (the whole table is 44.7 MiB)
        long taughtBytes = f.get("teacher_weight_bytes").asLong();
        assertTrue(taughtBytes > teacherBytes / 6 && taughtBytes < teacherBytes * 6 / 10, "the teacher's compacted weights: " + f);
        assertTrue(w.get("teacher_weight_bytes").asLong() < teacherBytes / 2, "the warm-up teacher is the student's weights (bf16 packs at most): " + w);
        // the same seed and data: only the teacher differs, so the trained students must too
        assertTrue(Files.mismatch(dir.resolve("warm/model.safetensors"), dir.resolve("taught/model.safetensors")) != -1, "the teacher made no difference");
        // layer-wise too: the teacher's encoder stays beside the student (its weights counted) and changes what the student learns
        String[] layered = pa.apply("layered", new String[] {"--distill", "0.5", "--teacher", teacher.toString(), "--distill-hidden", "1"});
        assertEquals("0", layered[0], layered[2]);
        assertTrue(layered[1].contains("hidden states of every layer matched too (weight 1.00)"), layered[1]);
        var h = new ObjectMapper().readTree(dir.resolve("layered/pruning.json").toFile());
        assertEquals(1.0, h.get("distill_hidden_weight").asDouble(), h.toString());
        // the compacted teacher that taught the outputs stays
        long held = h.get("teacher_hidden_weight_bytes").asLong();
        assertEquals(h.get("teacher_weight_bytes").asLong(), held, h.toString());
        boolean bf16 = layered[1].contains("(bf16 linear weights");
        assertTrue(bf16 || layered[1].contains("(fp32 linear weights"), layered[1]);
        assertTrue(held > teacherBytes / 6 && held < teacherBytes / (bf16 ? 3 : 2) + teacherBytes / 10, "the teacher's compacted weights: " + h);
        assertTrue(layered[1].contains("the word embeddings of the "), layered[1]);
        assertTrue(h.get("teacher_hidden_forward_seconds").asDouble() > 0, h.toString());
        // the report says which part of the run set the peak (the tracker is the process's: names only, no figures between runs)
        var phases = new ObjectMapper().readTree(dir.resolve("layered/report.json").toFile()).get("memory_cpu").get("phase_peaks");
        for (String p : new String[] {"scoring", "pruning", "teacher", "training", "evaluation", "saving"})
            assertTrue(phases.has(p) && phases.get(p).asLong() > 0, p + " in " + phases);
        assertTrue(f.get("distill_hidden_weight") == null, "outputs only: no layer-wise fields " + f);
        assertTrue(Files.mismatch(dir.resolve("taught/model.safetensors"), dir.resolve("layered/model.safetensors")) != -1,
                "matching hidden states made no difference");
        // the gradual schedule learns from a fine-tuned teacher too (there the warmed-up model is the student the masks prune)
        String[] gradual = pa.apply("gradual-taught", new String[] {"--teacher", teacher.toString(), "--schedule", "gradual"});
        assertEquals("0", gradual[0], gradual[2]);
        assertTrue(gradual[1].contains("distillation: " + teacher + " taught 32 examples"), gradual[1]);
        var g = new ObjectMapper().readTree(dir.resolve("gradual-taught/pruning.json").toFile());
        assertEquals("gradual", g.get("schedule").asText(), g.toString());
        assertEquals(teacher.toString(), g.get("teacher").asText(), g.toString());
        assertEquals(PruneAdaptCommand.DEFAULT_DISTILL, g.get("distill_alpha").asDouble(), g.toString());
        String[] untaught = pa.apply("gradual", new String[] {"--schedule", "gradual"});
        assertEquals("0", untaught[0], untaught[2]);
        assertTrue(Files.mismatch(dir.resolve("gradual/model.safetensors"), dir.resolve("gradual-taught/model.safetensors")) != -1,
                "the teacher made no difference to the gradual schedule");
        // a teacher retrained into the same directory is another teacher: the student's run does not resume with it
        String[] again = run("finetune", "--task", "rte", "--data-dir", glue, "--method", "full", "--epochs", "1", "--train-limit", "32",
                "--batch-size", "16", "--max-seq-len", "48", "--seed", "2", "--overwrite", "--out", teacher.toString());
        assertEquals("0", again[0], again[2]);
        String[] resumed = pa.apply("taught", new String[] {"--distill", "0.5", "--teacher", teacher.toString(), "--resume"});
        assertEquals("1", resumed[0], resumed[1] + resumed[2]);
        assertTrue(resumed[2].contains("another run") && resumed[2].contains("prune.teacher"), resumed[2]);
        // refused before any work, nothing written: distillation turned off, no such directory, another task, another tokenizer
        Path otherTask = dir.resolve("mrpc-teacher"), otherTokens = dir.resolve("other-tokens");
        for (Path copy : new Path[] {otherTask, otherTokens}) {
            Files.createDirectories(copy);
            for (String name : new String[] {"config.json", "model.safetensors", "head.safetensors", "tokenizer.json", "task.json"})
                Files.copy(teacher.resolve(name), copy.resolve(name));
        }
        Files.writeString(otherTask.resolve("task.json"), Files.readString(teacher.resolve("task.json")).replace("\"RTE\"", "\"MRPC\""));
        Files.writeString(otherTokens.resolve("tokenizer.json"), Files.readString(teacher.resolve("tokenizer.json")).replace("[UNK]", "[UNKNOWN]"));
        String[][] cases = {{"--distill", "0", "--teacher", teacher.toString()}, {"--distill", "0.5", "--teacher", dir.resolve("none").toString()},
                {"--distill", "0.5", "--teacher", otherTask.toString()}, {"--distill", "0.5", "--teacher", otherTokens.toString()}};
        String[] says = {"only with --distill ALPHA > 0", "not a directory", "a model of MRPC, not of RTE", "one that differs from the model's"};
        for (int i = 0; i < cases.length; i++) {
            String[] r = pa.apply("refused" + i, cases[i]);
            assertEquals("1", r[0], String.join(" ", cases[i]));
            assertTrue(r[2].contains("--teacher") && r[2].contains(says[i]), String.join(" ", cases[i]) + ": " + r[2]);
            assertTrue(!Files.exists(dir.resolve("refused" + i)), "nothing written for " + String.join(" ", cases[i]));
        }
    }

    @Test
    void bothPrunesUnitsThenBlocksOfWhatIsLeftToTheOverallTarget(@TempDir Path dir) throws Exception {
        Path out = dir.resolve("both");
        String[] pa = run("prune-adapt", "--task", "rte", "--data-dir", TestData.glue().toString(), "--structure", "both", "--epochs", "1",
                "--train-limit", "48", "--batch-size", "16", "--max-seq-len", "48", "--score-examples", "32", "--sparsity", "0.6",
                "--inference-iterations", "0", "--out", out.toString());
        assertEquals("0", pa[0], pa[2]);
        var p = new ObjectMapper().readTree(out.resolve("pruning.json").toFile());
        assertEquals("both", p.get("structure").asText());
        int heads = 0;
        for (var h : p.get("heads_per_layer")) heads += h.asInt();
        assertTrue(heads < 72 && heads >= 36, "about 30% of the heads go first: " + heads);
        for (var f : p.get("ffn_per_layer")) assertEquals(0, f.asInt() % 32, "FFN widths in whole blocks: " + f);
        assertTrue(p.get("block_density").asDouble() < 0.9, "then blocks: " + p.get("block_density"));
        double kept = p.get("encoder_parameters_pruned").asDouble() / p.get("encoder_parameters_dense").asDouble();
        assertEquals(0.4, kept, 0.02, "60% of the dense encoder's parameters removed overall");
        String[] ev = run("eval", "--model", out.toString(), "--data-dir", TestData.glue().toString());
        assertEquals("0", ev[0], ev[2]);
        assertTrue(ev[1].contains(String.format(Locale.ROOT, "accuracy: %.4f", p.get("best_dev").asDouble())),
                "per-layer shapes and kept blocks reload to what training saw:\n" + ev[1]);
    }

    @Test
    void blockPruningOptionClashesAreRejectedBeforeAnyLoading(@TempDir Path dir) {
        String[][] clashes = {{"--structure", "blocks", "--recipe", "paper"}, {"--structure", "blocks", "--schedule", "gradual"},
                {"--structure", "both", "--schedule", "gradual"}, {"--structure", "blocks", "--scorer", "fisher"},
                {"--recipe", "paper", "--schedule", "gradual"}};
        String[] expect = {"topa recipe", "one-shot", "one-shot", "not fisher", "topa recipe"};
        for (int i = 0; i < clashes.length; i++) {
            java.util.List<String> args = new java.util.ArrayList<>(java.util.List.of("prune-adapt", "--task", "rte", "--data-dir",
                    dir.resolve("no-such-data").toString(), "--out", dir.resolve("o" + i).toString()));
            args.addAll(java.util.List.of(clashes[i]));
            String[] r = run(args.toArray(String[]::new));
            assertEquals("1", r[0], String.join(" ", clashes[i]));
            // the data folder does not exist: the clash must be named before anything is read
            assertTrue(r[2].contains(expect[i]), String.join(" ", clashes[i]) + ": " + r[2]);
        }
    }
}
