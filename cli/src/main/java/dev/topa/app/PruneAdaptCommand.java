package dev.topa.app;

import dev.topa.model.Adapter;
import dev.topa.model.BertNames;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import dev.topa.backend.Backend;
import dev.topa.backend.BlockSparseWeight;
import dev.topa.backend.cpu.CpuBackend;
import dev.topa.glue.Example;
import dev.topa.glue.GlueDownload;
import dev.topa.glue.GlueTask;
import dev.topa.io.BertTokenizer;
import dev.topa.io.ModelLoader;
import dev.topa.model.BertModel;
import dev.topa.model.BertTraining;
import dev.topa.model.DropoutConfig;
import dev.topa.model.TaskHead;
import dev.topa.prune.BlockFormats;
import dev.topa.prune.BlockScores;
import dev.topa.prune.ImportanceScores;
import dev.topa.prune.MaskedPruning;
import dev.topa.prune.StructuredPruning;
import dev.topa.tensor.MemoryTracker;
import dev.topa.train.FineTunedModel;
import dev.topa.train.Recipe;
import dev.topa.train.Trainer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Comparator;
import java.util.List;
import java.util.Locale;
import java.util.concurrent.Callable;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Option;

@Command(name = "prune-adapt", description = {"The Pruning-Adapter: a short LoRA warm-up on the task scores every attention head and",
        "FFN neuron (mask gradients) or every 32 x 32 weight block (Taylor), the lowest-scored are physically removed (one-shot or",
        "on a cubic schedule), and LoRA training continues on the smaller frozen backbone; the best model is saved merged, with",
        "per-layer shapes or kept blocks only."})
final class PruneAdaptCommand implements Callable<Integer> {
    enum Structure { HEADS, HEADS_FFN, BLOCKS, BOTH }

    enum Preset { TOPA, PAPER }

    @Option(names = "--recipe", defaultValue = "topa", description = {"topa: scores gathered during a LoRA warm-up, heads and",
            "FFN neurons, LoRA on all six linears; paper: the paper's preset (head scores on the pretrained model with a",
            "training head, ~30% of heads removed, LoRA on q/k/v with per-layer rank 8/4 by importance, scaling 1/r,",
            "lr 2e-5, up to 30 epochs) (default: ${DEFAULT-VALUE})"})
    Preset preset;

    @Option(names = "--task", required = true, description = "cola, sst2, mrpc, stsb, qqp, mnli, qnli, rte, wnli")
    String task;

    @Option(names = "--model", defaultValue = "default", description = "as for encode (default: ${DEFAULT-VALUE})")
    String model;

    @Option(names = "--data-dir", description = "GLUE data (default: downloaded into the cache, as for finetune)")
    Path dataDir;

    @Option(names = "--out", required = true, description = "where the pruned, merged model and the report go")
    Path out;

    @Option(names = "--sparsity", description = {"fraction of the heads (and, with heads+ffn, of the FFN neurons) removed,",
            "in [0, 1) (default: 0.3; paper: 43/144)"})
    Double sparsity;

    @Option(names = "--structure", converter = StructureConverter.class,
            description = {"heads, heads+ffn, blocks (32 x 32 blocks of every encoder linear weight, stored and multiplied",
                    "block-sparse), or both (half of the target from heads and FFN neurons, kept FFN widths rounded up to",
                    "multiples of 32, then blocks of what is left, scored again on the smaller model) (default: heads+ffn; paper: heads)"})
    Structure structure;

    enum Schedule { ONESHOT, GRADUAL }

    @Option(names = "--schedule", defaultValue = "oneshot", description = {"oneshot: remove everything after the scoring warm-up;",
            "gradual: mask more units as adapters train, on a cubic schedule over the first --ramp of the steps, scores still",
            "accumulating, then remove them (topa recipe only) (default: ${DEFAULT-VALUE})"})
    Schedule schedule;

    @Option(names = "--ramp", defaultValue = "0.6", description = "gradual: share of the training steps over which the target ramps up (default: ${DEFAULT-VALUE})")
    double ramp;

    @Option(names = "--min-heads", defaultValue = "0", description = "per-layer floor: heads every layer keeps (default: ${DEFAULT-VALUE})")
    int minHeads;

    @Option(names = "--min-ffn", defaultValue = "0", description = "per-layer floor: FFN neurons every layer keeps (default: ${DEFAULT-VALUE})")
    int minFfn;

    @Option(names = "--scorer", defaultValue = "taylor", converter = ScorerConverter.class, description = {"taylor or fisher for",
            "heads and neurons (mask gradients); for blocks taylor (exact |W dL/dW|, one layer at a time) or lora-taylor",
            "(dL/dW estimated from the adapters' gradients) (default: ${DEFAULT-VALUE})"})
    ImportanceScores.Scorer scorer;

    static final class ScorerConverter implements picocli.CommandLine.ITypeConverter<ImportanceScores.Scorer> {
        @Override
        public ImportanceScores.Scorer convert(String v) {
            return switch (v.toLowerCase(Locale.ROOT)) {
                case "taylor" -> ImportanceScores.Scorer.TAYLOR;
                case "fisher" -> ImportanceScores.Scorer.FISHER;
                case "lora-taylor", "lora_taylor" -> ImportanceScores.Scorer.LORA_TAYLOR;
                default -> throw new IllegalArgumentException("--scorer: taylor, fisher or lora-taylor, got '" + v + "'");
            };
        }
    }

    @Option(names = "--score-examples", defaultValue = "512",
            description = "training examples of the scoring warm-up (default: ${DEFAULT-VALUE})")
    int scoreExamples;

    @Option(names = "--inference-iterations", defaultValue = "10",
            description = "timed forwards per figure when measuring the saved model's serving speed (0: skip; default: ${DEFAULT-VALUE})")
    int inferenceIterations;

    @Option(names = "--train-limit", description = "use only the first N training examples")
    Integer trainLimit;

    @Option(names = "--eval-every", defaultValue = "0", description = "also evaluate every N steps (default: per epoch)")
    int evalEvery;

    @Mixin
    RecipeOptions recipeOptions;

    /** Set by `topa finetune --method prune`: the pruning-only baseline (no adapters; full fine-tuning of what remains). */
    boolean pruneOnly;

    @Mixin
    ThreadsOption threads;

    @Mixin
    DeviceOption device;

    static final class StructureConverter implements picocli.CommandLine.ITypeConverter<Structure> {
        @Override
        public Structure convert(String v) {
            return switch (v.toLowerCase(Locale.ROOT)) {
                case "heads" -> Structure.HEADS;
                case "heads+ffn", "heads_ffn" -> Structure.HEADS_FFN;
                case "blocks" -> Structure.BLOCKS;
                case "both" -> Structure.BOTH;
                default -> throw new IllegalArgumentException("--structure: heads, heads+ffn, blocks or both, got '" + v + "'");
            };
        }
    }

    @Override
    public Integer call() throws Exception {
        threads.apply();
        boolean paper = preset == Preset.PAPER;
        // the pruning-only baseline scores as the paper does (pretrained weights, a training head), then trains every weight
        boolean headScoring = paper || pruneOnly;
        double fraction = sparsity != null ? sparsity : paper ? 43.0 / 144 : 0.3;
        if (!(fraction >= 0 && fraction < 1)) throw new IllegalArgumentException("--sparsity must be in [0, 1), got " + fraction);
        Structure shape = structure != null ? structure : paper ? Structure.HEADS : Structure.HEADS_FFN;
        boolean blocks = shape == Structure.BLOCKS, both = shape == Structure.BOTH;
        // option combinations are checked before any loading
        if ((blocks || both) && headScoring) throw new IllegalArgumentException("--structure " + label(shape) + " goes with the topa recipe");
        if ((blocks || both) && schedule == Schedule.GRADUAL)
            throw new IllegalArgumentException("--structure " + label(shape) + " is one-shot for now (--schedule oneshot)");
        boolean gpu = device.device == DeviceOption.Kind.cuda;
        if (gpu && schedule == Schedule.GRADUAL)
            throw new IllegalArgumentException("--schedule gradual runs on the CPU only (its masks edit the weights in host memory): use --device cpu");
        if (schedule == Schedule.GRADUAL && recipeOptions.basePrecision == Recipe.Precision.BF16) // found in review: stale packs
            throw new IllegalArgumentException("--schedule gradual masks the fp32 weights as it goes; bf16 packs of them would not see the masks:"
                    + " use --base-precision fp32");
        if (headScoring && schedule == Schedule.GRADUAL)
            throw new IllegalArgumentException("--schedule gradual goes with the topa recipe (adapters score as they train)");
        if (blocks && scorer == ImportanceScores.Scorer.FISHER)
            throw new IllegalArgumentException("--structure blocks scores with taylor or lora-taylor, not fisher");
        if (!blocks && !both && scorer == ImportanceScores.Scorer.LORA_TAYLOR)
            throw new IllegalArgumentException("--scorer lora-taylor scores weight blocks: use it with --structure blocks or both");
        GlueTask t = GlueTask.parse(task);
        Recipe rc = pruneOnly ? recipeOptions.recipe(t, Recipe.Method.PRUNE)
                : paper ? recipeOptions.applyTo(Recipe.paper(t)) : recipeOptions.recipe(t, Recipe.Method.LORA);
        // on the CPU memory first: bf16 packs would hold a second copy of the frozen weights (bf16 only when asked
        // for); on a GPU the bf16 base is the tensor cores' operand
        if (recipeOptions.basePrecision == null) rc = rc.withBasePrecision(gpu && !pruneOnly ? Recipe.Precision.BF16 : Recipe.Precision.FP32);
        if (recipeOptions.activationPrecision == null && gpu) rc = rc.withActivationPrecision(Recipe.Precision.BF16);
        Path data = dataDir != null ? dataDir : GlueDownload.dataDir(t);
        List<Example> trainEx = t.train(data), devEx = t.dev(data, t.devSplits().get(0));
        if (trainLimit != null) trainEx = trainEx.subList(0, Math.min(trainLimit, trainEx.size()));
        CpuBackend cpu = CpuBackend.create(); // saves, measures the saved model, and trains with --device cpu
        ModelLoader.Loaded loaded = ModelLoader.load(model);
        try (Backend be = device.backend(); BertTokenizer tok = new BertTokenizer(loaded.tokenizer(), Math.min(rc.maxSeqLen(), loaded.model().config().maxPositions()));
                TaskHead head = new TaskHead(loaded.model().config().hidden(), t.numLabels(), rc.seed())) {
            MemoryTracker mem = MemoryTracker.of(be.device());
            List<Trainer.Item> train = Trainer.items(trainEx, tok), dev = Trainer.items(devEx, tok);
            BertModel dense = loaded.model();
            long denseParams = encoderParameters(dense);
            // 1. scoring: topa scores during a LoRA warm-up; the paper on the pretrained model, only the new head training
            // with both, heads and neurons take taylor (or fisher), blocks exact taylor (or lora-taylor)
            ImportanceScores.Scorer unitScorer = scorer == ImportanceScores.Scorer.LORA_TAYLOR ? ImportanceScores.Scorer.TAYLOR : scorer;
            if (!headScoring) dense.addLora(rc.loraConfig(), rc.seed());
            ImportanceScores scores = new ImportanceScores(dense.config());
            BlockScores blockScores = blocks ? new BlockScores(dense.config(), blockMethod()) : null;
            long t0 = System.nanoTime();
            Recipe scoring = headScoring ? withLr(rc, 1e-3) : rc; // a fresh head needs a head's learning rate to say anything
            try (TrainingCopy copy = new TrainingCopy(be, dense, head)) {
                BertTraining warm = copy.training(headScoring ? n -> false : rc.trainable(), headScoring ? DropoutConfig.NONE : rc.dropout(),
                        rc.recomputeProjections(), rc.activationPrecision().dtype());
                if (!headScoring && !blocks && rc.basePrecision() == Recipe.Precision.BF16) copy.model.packForTraining(be);
                warm.setMaskGradientListener(scores);
                if (blocks) warm.setWeightGradientListener(blockScores);
                try (Trainer trainer = new Trainer(be, copy.model, warm, copy.head, t, scoring.trainerConfig(0))) {
                    scoringSteps(trainer, train, rc, 0, scoring.lr());
                }
                copy.copyBack(); // the warmed-up adapters and head go on with the pruned model
            }
            double scoreSeconds = (System.nanoTime() - t0) * 1e-9;
            long scorePeak = mem.totalPeak();
            if (schedule == Schedule.GRADUAL) {
                gradual(cpu, mem, t, rc, dense, head, scores, fraction, shape, train, dev, loaded, tok, denseParams, scoreSeconds, scorePeak);
                return 0;
            }
            if (blocks) {
                blockPruned(be, cpu, mem, t, rc, dense, head, blockScores, fraction, train, dev, loaded, tok, denseParams, scoreSeconds, scorePeak,
                        Structure.BLOCKS);
                return 0;
            }
            // 2. choose and remove
            double unitFraction = both ? fraction / 2 : fraction;
            double[][] headScores = ImportanceScores.normalized(scores.heads(unitScorer));
            boolean[][] keepHeads = keep(headScores, unitFraction, minHeads);
            double[][] neuronScores = ImportanceScores.normalized(scores.neurons(unitScorer));
            boolean[][] keepNeurons = keep(neuronScores, shape == Structure.HEADS ? 0 : unitFraction, minFfn);
            if (both) roundUpKept(keepNeurons, neuronScores, BlockSparseWeight.BLOCK); // block pruning needs widths in whole blocks
            BertModel pruned = StructuredPruning.compact(dense, keepHeads, keepNeurons);
            dense.close();
            if (both) {
                System.out.printf(Locale.ROOT, "structured part: heads per layer %s, FFN widths %s; encoder parameters %,d -> %,d%n",
                        Arrays.toString(pruned.config().heads()), Arrays.toString(pruned.config().ffn()), denseParams, encoderParameters(pruned));
                BlockScores second = new BlockScores(pruned.config(), blockMethod());
                long t1 = System.nanoTime();
                try (TrainingCopy copy = new TrainingCopy(be, pruned, head)) {
                    BertTraining warm = copy.training(rc);
                    warm.setWeightGradientListener(second); // blocks scored on the smaller model, its adapters training on
                    try (Trainer trainer = new Trainer(be, copy.model, warm, copy.head, t, rc.trainerConfig(0))) {
                        scoringSteps(trainer, train, rc, 1, rc.lr());
                    }
                    copy.copyBack();
                }
                blockPruned(be, cpu, mem, t, rc, pruned, head, second, fraction, train, dev, loaded, tok, denseParams,
                        scoreSeconds + (System.nanoTime() - t1) * 1e-9, Math.max(scorePeak, mem.totalPeak()), Structure.BOTH);
                return 0;
            }
            List<Integer> layerRanks = List.of();
            if (paper) { // the paper's per-layer ranks: rank 8 for the layers whose heads matter most, 4 elsewhere
                layerRanks = layerRanks(headScores, rc.loraRank(), Math.max(1, rc.loraRank() / 2));
                pruned.addLora(new dev.topa.model.LoraConfig(rc.loraRank(), rc.loraAlpha(), rc.loraTargets(), rc.loraDropout(), layerRanks),
                        rc.seed());
            }
            long prunedParams = encoderParameters(pruned);
            System.out.printf(Locale.ROOT, "scored %d batches (%s, %s) in %.1f s, peak %s; heads per layer %s, FFN widths %s%s%n",
                    scores.batches(), scorer.name().toLowerCase(Locale.ROOT), paper ? "paper" : "topa", scoreSeconds,
                    MemoryTracker.human(scorePeak), Arrays.toString(pruned.config().heads()), Arrays.toString(pruned.config().ffn()),
                    layerRanks.isEmpty() ? "" : ", LoRA ranks " + layerRanks);
            System.out.printf(Locale.ROOT, "encoder parameters: %,d -> %,d (%.1f%% removed)%n", denseParams, prunedParams,
                    100.0 * (denseParams - prunedParams) / denseParams);
            // 3. adapters train on
            Files.createDirectories(out);
            try (pruned; TrainingCopy copy = new TrainingCopy(be, pruned, head);
                    Trainer trainer = new Trainer(be, copy.model, copy.training(rc), copy.head,
                            t, rc.trainerConfig(evalEvery))) {
                if (rc.basePrecision() == Recipe.Precision.BF16) copy.model.packForTraining(be);
                TrainingLoop.Outcome run = TrainingLoop.run(cpu, trainer, train, dev, t, pruned, head, loaded.tokenizer(), tok.maxLength(), out,
                        null, Double.NEGATIVE_INFINITY, st -> {}, copy.export());
                final List<Integer> ranks = layerRanks;
                writeReports(cpu, mem, t, rc, loaded.description() + ", pruned", "prune-adapt", trainer, pruned, run, fraction, shape,
                        denseParams, scoreSeconds, scorePeak, p -> {
                            p.put("recipe", pruneOnly ? "prune-only" : paper ? "paper" : "topa");
                            p.put("schedule", "oneshot");
                            p.put("score_batches", scores.batches());
                            if (!ranks.isEmpty()) p.set("lora_rank_per_layer", new ObjectMapper().valueToTree(ranks));
                        });
            }
        }
        return 0;
    }

    /**
     * Block pruning: the globally lowest-scored 32 x 32 blocks of the encoder's linear weights go
     * until the fraction of the dense encoder's parameters is removed (counting what structured
     * pruning already removed, with both); the weights become block-sparse (stored and multiplied as
     * kept blocks only), the adapters train on, and the best model is saved merged inside the mask,
     * in the block-sparse layout.
     */
    private void blockPruned(Backend be, CpuBackend cpu, MemoryTracker mem, GlueTask t, Recipe rc, BertModel dense, TaskHead head,
            BlockScores blockScores, double fraction, List<Trainer.Item> train, List<Trainer.Item> dev,
            ModelLoader.Loaded loaded, BertTokenizer tok, long denseParams, double scoreSeconds, long scorePeak, Structure shape)
            throws Exception {
        double[][][][] s = blockScores.scores();
        long all = BlockScores.blockCount(s), block = (long) BlockSparseWeight.BLOCK * BlockSparseWeight.BLOCK;
        long already = denseParams - encoderParameters(dense);
        long remove = Math.min(all, Math.max(0, Math.round((fraction * denseParams - already) / block)));
        dense.setBlockMasks(BlockScores.keep(s, remove));
        blockScores.close();
        System.out.printf(Locale.ROOT, "scored %d batches (block %s) in %.1f s, peak %s; %d of %d blocks removed (density %.3f)%n",
                blockScores.batches(), scorer == ImportanceScores.Scorer.LORA_TAYLOR ? "lora-taylor" : "taylor, exact", scoreSeconds,
                MemoryTracker.human(scorePeak), remove, all, dense.blockDensity());
        System.out.printf(Locale.ROOT, "encoder parameters: %,d -> %,d (%.1f%% removed)%n", denseParams, encoderParameters(dense),
                100.0 * (denseParams - encoderParameters(dense)) / denseParams);
        Files.createDirectories(out);
        try (dense; TrainingCopy copy = new TrainingCopy(be, dense, head);
                Trainer trainer = new Trainer(be, copy.model, copy.training(rc), copy.head, t,
                        rc.trainerConfig(evalEvery))) {
            // each masked weight trains block-sparse or dense, whichever this device runs faster at the training batch
            long rows = Math.min((long) rc.batchSize() * rc.maxSeqLen(), be.device().isHostAccessible() ? 1024 : 4096);
            List<BlockFormats.Slot> formats = BlockFormats.choose(be, copy.model, rows, rc.basePrecision() == Recipe.Precision.BF16);
            System.out.println("formats on " + be.name() + ": " + BlockFormats.summary(formats));
            copy.model.packBlockSparse(be);
            if (rc.basePrecision() == Recipe.Precision.BF16) copy.model.packForTraining(be); // the dense-form weights' products
            TrainingLoop.Outcome run = TrainingLoop.run(cpu, trainer, train, dev, t, dense, head, loaded.tokenizer(), tok.maxLength(), out,
                    null, Double.NEGATIVE_INFINITY, st -> {}, copy.export());
            writeReports(cpu, mem, t, rc, loaded.description() + ", block-pruned", "prune-adapt (" + label(shape) + ")", trainer, dense, run,
                    fraction, shape, denseParams, scoreSeconds, scorePeak, p -> {
                        p.put("recipe", "topa");
                        p.put("schedule", "oneshot");
                        p.put("score_batches", blockScores.batches());
                        p.put("block_size", BlockSparseWeight.BLOCK);
                        p.put("blocks_removed", remove);
                        p.put("blocks_total", all);
                        p.put("block_density", dense.blockDensity());
                        p.put("block_format_device", be.name());
                        var f = p.putArray("block_formats");
                        for (BlockFormats.Slot sl : formats)
                            f.addObject().put("weight", BertNames.slot(sl.layer(), sl.slot())).put("density", sl.density())
                                    .put("block_sparse_ms", sl.sparseMs()).put("dense_ms", sl.denseMs())
                                    .put("chosen", sl.dense() ? "dense" : "block-sparse");
                    });
        }
    }

    /** Gradual pruning: masks grow on the cubic schedule while the adapters train on; the best model is saved compacted. */
    private void gradual(CpuBackend be, MemoryTracker mem, GlueTask t, Recipe rc, BertModel dense, TaskHead head, ImportanceScores scores,
            double fraction, Structure shape, List<Trainer.Item> train, List<Trainer.Item> dev, ModelLoader.Loaded loaded, BertTokenizer tok,
            long denseParams, double scoreSeconds, long scorePeak) throws Exception {
        MaskedPruning masks = new MaskedPruning(dense.config());
        long stepsPerEpoch = (train.size() + rc.batchSize() - 1) / rc.batchSize();
        long rampSteps = Math.max(1, Math.round(ramp * stepsPerEpoch * rc.epochs())), every = Math.max(1, rampSteps / 10);
        long[] step = {0};
        Files.createDirectories(out);
        try (dense; BertTraining training = new BertTraining(null, dense, new BertTraining.Options(rc.trainable(), rc.dropout(), rc.recomputeProjections(), rc.activationPrecision().dtype()));
                Trainer trainer = new Trainer(be, dense, training, head, t, rc.trainerConfig(evalEvery))) {
            training.setMaskGradientListener(scores); // scores keep accumulating while the adapters train
            TrainingLoop.Outcome run = TrainingLoop.run(be, trainer, train, dev, t, dense, head, loaded.tokenizer(), tok.maxLength(), out, null,
                    Double.NEGATIVE_INFINITY, st -> {
                        step[0]++;
                        if (step[0] <= rampSteps && (step[0] % every == 0 || step[0] == rampSteps)) {
                            double target = MaskedPruning.cubicTarget(fraction, step[0], rampSteps);
                            boolean[][] h = keep(masked(ImportanceScores.normalized(scores.heads(scorer)), masks.keptHeads()), target, minHeads);
                            boolean[][] n = keep(masked(ImportanceScores.normalized(scores.neurons(scorer)), masks.keptNeurons()),
                                    shape == Structure.HEADS_FFN ? target : 0, minFfn);
                            masks.update(dense, h, n);
                        } else {
                            masks.enforce(dense);
                        }
                    }, () -> step[0] >= rampSteps ? masks.compact(dense) : null);
            try (BertModel pruned = masks.compact(dense)) {
                long prunedParams = encoderParameters(pruned);
                System.out.printf(Locale.ROOT, "gradual pruning over %d steps: heads per layer %s, FFN widths %s; encoder parameters %,d -> %,d%n",
                        rampSteps, Arrays.toString(pruned.config().heads()), Arrays.toString(pruned.config().ffn()), denseParams, prunedParams);
                writeReports(be, mem, t, rc, loaded.description() + ", pruned gradually", "prune-adapt (gradual)", trainer, pruned, run,
                        fraction, shape, denseParams, scoreSeconds, scorePeak, p -> {
                            p.put("recipe", "topa");
                            p.put("schedule", "gradual");
                            p.put("ramp_steps", rampSteps);
                        });
            }
        }
    }

    /**
     * report.json/md/png and pruning.json (shapes, parameters, scoring cost, best dev, size on disk,
     * the saved model's serving figures) of a finished run; extra adds the variant's own fields.
     */
    private void writeReports(CpuBackend be, MemoryTracker mem, GlueTask t, Recipe rc, String description, String plotTitle,
            Trainer trainer, BertModel pruned, TrainingLoop.Outcome run, double fraction, Structure shape, long denseParams,
            double scoreSeconds, long scorePeak, java.util.function.Consumer<ObjectNode> extra) throws java.io.IOException {
        long total = pruned.parameters().entrySet().stream().mapToLong(e -> BertModel.parameterCount(e.getKey(), e.getValue())).sum();
        TrainingReport.write(out, t, rc, description, trainer.trainableParameters(), total, run.results(), mem);
        System.out.print(mem.report()); // the run's peaks, before the serving probe below resets them
        TrainingPlot.write(out.resolve("report.png"), t.folder() + ", " + plotTitle, run.stepLoss(),
                run.results().stream().map(r -> r.dev().get(t.mainMetric())).toList(), t.mainMetric().name().toLowerCase(Locale.ROOT));
        ObjectMapper json = new ObjectMapper();
        ObjectNode p = json.createObjectNode();
        extra.accept(p);
        p.put("sparsity", fraction);
        p.put("structure", label(shape));
        p.put("scorer", scorer.name().toLowerCase(Locale.ROOT));
        p.put("score_seconds", scoreSeconds);
        p.put("score_peak_bytes", scorePeak);
        p.put("encoder_parameters_dense", denseParams);
        p.put("encoder_parameters_pruned", encoderParameters(pruned));
        p.set("heads_per_layer", json.valueToTree(pruned.config().heads()));
        p.set("ffn_per_layer", json.valueToTree(pruned.config().ffn()));
        p.put("best_dev", run.best());
        p.put("model_bytes_on_disk", Files.size(out.resolve("model.safetensors")));
        if (inferenceIterations > 0) try (FineTunedModel.Loaded saved = FineTunedModel.load(out)) {
            InferenceProbe.Figures f = InferenceProbe.measure(be, saved.model(), inferenceIterations);
            p.put("inference_b1_s128_latency_ms", f.latencyB1Ms());
            p.put("inference_b32_s128_seq_per_s", f.throughputB32());
            p.put("inference_b32_activation_peak_bytes", f.activationPeakBytes());
            p.put("inference_weight_bytes", saved.model().parameterBytes());
            System.out.printf(Locale.ROOT, "saved model: batch 1 %.1f ms, batch 32 %.1f seq/s%n", f.latencyB1Ms(), f.throughputB32());
        }
        FineTunedModel.writeAtomically(out.resolve("pruning.json"), json.writerWithDefaultPrettyPrinter().writeValueAsBytes(p));
        System.out.println("report: " + out.resolve("report.md") + ", " + out.resolve("pruning.json"));
    }

    private BlockScores.Method blockMethod() {
        return scorer == ImportanceScores.Scorer.LORA_TAYLOR ? BlockScores.Method.LORA : BlockScores.Method.EXACT;
    }

    /** Training steps over the first --score-examples examples of an epoch's order, while listeners score. */
    private void scoringSteps(Trainer trainer, List<Trainer.Item> train, Recipe rc, int epoch, double lr) {
        int[] order = Trainer.epochOrder(train.size(), rc.seed(), epoch);
        int n = Math.min(scoreExamples, train.size());
        for (int i = 0; i < n; i += rc.batchSize()) {
            List<Trainer.Item> batch = new ArrayList<>();
            for (int j = i; j < Math.min(n, i + rc.batchSize()); j++) batch.add(train.get(order[j]));
            trainer.trainStep(batch, lr);
        }
    }

    private static String label(Structure s) {
        return switch (s) {
            case HEADS -> "heads";
            case HEADS_FFN -> "heads+ffn";
            case BLOCKS -> "blocks";
            case BOTH -> "both";
        };
    }

    /** Per layer, keeps more units (the best-scored of those dropped) until the kept count is a multiple of m (or all). */
    static void roundUpKept(boolean[][] keep, double[][] scores, int m) {
        for (int l = 0; l < keep.length; l++) {
            int kept = 0;
            for (boolean k : keep[l]) if (k) kept++;
            int target = Math.min(keep[l].length, (kept + m - 1) / m * m);
            Integer[] idx = new Integer[keep[l].length];
            for (int i = 0; i < idx.length; i++) idx[i] = i;
            final int layer = l;
            Arrays.sort(idx, Comparator.comparingDouble(i -> -scores[layer][i]));
            for (int i = 0; i < idx.length && kept < target; i++)
                if (!keep[l][idx[i]]) {
                    keep[l][idx[i]] = true;
                    kept++;
                }
        }
    }

    /** Scores with units already masked placed below every live one, so masks only grow. */
    private static double[][] masked(double[][] scores, boolean[][] kept) {
        double[][] out = new double[scores.length][];
        for (int l = 0; l < scores.length; l++) {
            out[l] = scores[l].clone();
            for (int i = 0; i < out[l].length; i++) if (!kept[l][i]) out[l][i] = -1;
        }
        return out;
    }

    private static Recipe withLr(Recipe r, double lr) {
        return new Recipe(r.method(), r.epochs(), lr, r.batchSize(), r.maxSeqLen(), r.warmupRatio(), r.weightDecay(), r.maxGradNorm(),
                r.hiddenDropout(), r.attentionDropout(), r.loraRank(), r.loraAlpha(), r.loraDropout(), r.loraTargets(),
                r.recomputeProjections(), r.basePrecision(), r.activationPrecision(), r.seed());
    }

    /**
     * The paper's rank assignment by exact layer index: heads ranked by importance over the whole
     * model (1 = most important), each layer's ranks summed; the third of the layers with the lowest
     * sums (4 of 12 in the paper, at least one) get the high rank, the others the low one.
     */
    static List<Integer> layerRanks(double[][] headScores, int high, int low) {
        List<int[]> heads = new ArrayList<>();
        for (int l = 0; l < headScores.length; l++) for (int h = 0; h < headScores[l].length; h++) heads.add(new int[] {l, h});
        heads.sort(Comparator.comparingDouble((int[] u) -> -headScores[u[0]][u[1]]));
        long[] rankSum = new long[headScores.length];
        for (int i = 0; i < heads.size(); i++) rankSum[heads.get(i)[0]] += i + 1;
        Integer[] layers = new Integer[headScores.length];
        for (int l = 0; l < layers.length; l++) layers[l] = l;
        Arrays.sort(layers, Comparator.comparingLong(l -> rankSum[l]));
        int highCount = Math.max(1, Math.round(headScores.length / 3f));
        Integer[] ranks = new Integer[headScores.length];
        Arrays.fill(ranks, low);
        for (int i = 0; i < highCount; i++) ranks[layers[i]] = high;
        return List.of(ranks);
    }

    /** Encoder parameters (every layer's weights and biases, no embeddings, no adapters; block-pruned blocks do not count). */
    static long encoderParameters(BertModel m) {
        long dense = m.parameters().entrySet().stream().filter(e -> e.getKey().startsWith("encoder.") && !e.getKey().contains(".lora_"))
                .mapToLong(e -> e.getValue().numel()).sum();
        long removed = 0;
        for (boolean[][] mask : m.blockMasksByName().values())
            for (boolean[] row : mask) for (boolean k : row) if (!k) removed += (long) BlockSparseWeight.BLOCK * BlockSparseWeight.BLOCK;
        return dense - removed;
    }

    /** Keeps all but the round(fraction * total) lowest-scored units over the whole model. */
    static boolean[][] keep(double[][] scores, double fraction) {
        return keep(scores, fraction, 0);
    }

    /**
     * As above, but every layer keeps at least floor units (its best-scored ones): the floor wins
     * over the global fraction.
     */
    static boolean[][] keep(double[][] scores, double fraction, int floor) {
        List<int[]> units = new ArrayList<>();
        for (int l = 0; l < scores.length; l++) for (int i = 0; i < scores[l].length; i++) units.add(new int[] {l, i});
        units.sort(Comparator.comparingDouble(u -> scores[u[0]][u[1]]));
        boolean[][] keep = new boolean[scores.length][];
        for (int l = 0; l < scores.length; l++) Arrays.fill(keep[l] = new boolean[scores[l].length], true);
        long remove = Math.round(fraction * units.size());
        int[] left = new int[scores.length];
        for (int l = 0; l < scores.length; l++) left[l] = scores[l].length;
        for (int i = 0, removed = 0; i < units.size() && removed < remove; i++) {
            int[] u = units.get(i);
            if (left[u[0]] <= floor) continue; // this layer is at its floor
            keep[u[0]][u[1]] = false;
            left[u[0]]--;
            removed++;
        }
        return keep;
    }
}
