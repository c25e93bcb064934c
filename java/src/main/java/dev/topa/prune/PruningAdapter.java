package dev.topa.prune;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import dev.topa.backend.Backend;
import dev.topa.backend.BlockSparseWeight;
import dev.topa.backend.PrecisionChoice;
import dev.topa.backend.cpu.CpuBackend;
import dev.topa.dist.Communicator;
import dev.topa.glue.Example;
import dev.topa.glue.GlueTask;
import dev.topa.io.BertTokenizer;
import dev.topa.io.HfBertDirectory;
import dev.topa.io.ModelLoader;
import dev.topa.io.OutputDirectory;
import dev.topa.io.Safetensors;
import dev.topa.model.BertConfig;
import dev.topa.model.BertModel;
import dev.topa.model.BertNames;
import dev.topa.model.BertTraining;
import dev.topa.model.DropoutConfig;
import dev.topa.model.LoraConfig;
import dev.topa.model.TaskHead;
import dev.topa.tensor.MemoryCategory;
import dev.topa.tensor.MemoryTracker;
import dev.topa.tensor.Tensor;
import dev.topa.tensor.TensorScope;
import dev.topa.train.FineTunedModel;
import dev.topa.train.InferenceProbe;
import dev.topa.train.Predictor;
import dev.topa.train.Recipe;
import dev.topa.train.RunIdentity;
import dev.topa.train.Teacher;
import dev.topa.train.Trainer;
import dev.topa.train.TrainingCopy;
import dev.topa.train.TrainingLoop;
import dev.topa.train.TrainingPlot;
import dev.topa.train.TrainingReport;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Comparator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.TreeMap;
import java.util.function.Consumer;

/**
 * The Pruning-Adapter as a library: score -> prune -> adapt -> merge -> export -> report. A LoRA
 * warm-up on the task scores every attention head and FFN neuron (mask gradients) or every 32 x 32
 * weight block (Taylor); the lowest-scored are physically removed (one-shot, or on a cubic schedule
 * while the adapters train); LoRA training continues on the smaller frozen backbone; the best model
 * is saved merged (per-layer shapes, or kept blocks only) with report.json/md/png and pruning.json.
 * {@code topa prune-adapt} is this class with its options parsed.
 */
public final class PruningAdapter {
    public enum Structure {
        HEADS("heads"), HEADS_FFN("heads+ffn"), BLOCKS("blocks"), BOTH("both");

        private final String label;

        Structure(String label) {
            this.label = label;
        }

        public String label() {
            return label;
        }
    }

    public enum Schedule { ONESHOT, GRADUAL }

    /** topa's recipe (scores gathered during a LoRA warm-up) or the paper's (head scores on the pretrained model). */
    public enum Preset { TOPA, PAPER }

    /**
     * How a run prunes. sparsity: the fraction of heads (and FFN neurons, and blocks) removed, in
     * [0, 1); minHeads / minFfn: per-layer floors; scoreExamples: training examples of the scoring
     * warm-up; ramp: the gradual schedule's share of the training steps; pruneOnly: the pruning-only
     * baseline (no adapters, every remaining weight trains); inferenceIterations: timed forwards per
     * serving figure of the saved model (0: none).
     */
    public record Config(Preset preset, boolean pruneOnly, double sparsity, Structure structure, Schedule schedule, double ramp,
            int minHeads, int minFfn, ImportanceScores.Scorer scorer, int scoreExamples, int evalEvery, int inferenceIterations) {
        /** The option combinations that cannot run, refused before anything is loaded. */
        public Config {
            if (!(sparsity >= 0 && sparsity < 1)) throw new IllegalArgumentException("--sparsity must be in [0, 1), got " + sparsity);
            boolean blocks = structure == Structure.BLOCKS || structure == Structure.BOTH;
            if (blocks && (preset == Preset.PAPER || pruneOnly))
                throw new IllegalArgumentException("--structure " + structure.label() + " goes with the topa recipe");
            if (blocks && schedule == Schedule.GRADUAL)
                throw new IllegalArgumentException("--structure " + structure.label() + " is one-shot for now (--schedule oneshot)");
            if ((preset == Preset.PAPER || pruneOnly) && schedule == Schedule.GRADUAL)
                throw new IllegalArgumentException("--schedule gradual goes with the topa recipe (adapters score as they train)");
            if (structure == Structure.BLOCKS && scorer == ImportanceScores.Scorer.FISHER)
                throw new IllegalArgumentException("--structure blocks scores with taylor or lora-taylor, not fisher");
            if (!blocks && scorer == ImportanceScores.Scorer.LORA_TAYLOR)
                throw new IllegalArgumentException("--scorer lora-taylor scores weight blocks: use it with --structure blocks or both");
            if (!(ramp > 0 && ramp <= 1)) throw new IllegalArgumentException("--ramp must be in (0, 1], got " + ramp);
            if (scoreExamples < 1) throw new IllegalArgumentException("--score-examples must be >= 1, got " + scoreExamples);
        }

        /** Scores are gathered as the paper gathers them: on the pretrained model, only a new head training. */
        boolean headScoring() {
            return preset == Preset.PAPER || pruneOnly;
        }
    }

    /** What a run works on: the task, its recipe, its examples, the model and where the outputs go. */
    public record Job(GlueTask task, Recipe recipe, List<Example> train, List<Example> dev, ModelLoader.Loaded model, OutputDirectory out) {}

    /** What a run reports as it goes: a line of news, and the training loop's progress. */
    public interface Listener extends TrainingLoop.Listener {
        default void message(String line) {}
    }

    /** A finished run: the training outcome, the encoder's parameters before and after, and the pruned shape. */
    public record Result(TrainingLoop.Outcome outcome, long denseParameters, long prunedParameters, int[] heads, int[] ffn, Path out) {}

    private final Backend be;
    private final Config cfg;
    private final Listener listener;
    /** The host backend: it saves, and measures the saved model. */
    private final CpuBackend cpu = CpuBackend.create();

    private Communicator comm = Communicator.SINGLE;

    /**
     * Runs as one of comm's ranks: every training data parallel, importance and block scores summed
     * over ranks before anything is ranked (so every rank removes the same heads, neurons and
     * blocks), evaluation sharded; only rank 0 writes the outputs (the job's out may be null on the others).
     */
    public PruningAdapter distributed(Communicator comm) {
        this.comm = comm;
        return this;
    }

    private double distillAlpha, distillTemperature = 2, distillHidden;
    private Path teacherDir; // a dense fine-tuned model that teaches instead of the warmed-up one (null: the warm-up's)
    private Teacher teacher; // during adaptation, when distilling

    /**
     * Adaptation learns from the dense task model too: the scoring warm-up's model (its LoRA
     * adapters and head) becomes a forward-only teacher, and the pruned student's loss is
     * (1 - alpha) x the task loss + alpha x the distillation term at temperature (KL of softened
     * outputs; squared error for regression). alpha 0: off. teacherDir, when not null, names a dense
     * model fine-tuned on the task ({@link FineTunedModel}) that teaches instead: a stronger teacher
     * than a warm-up of a few hundred examples, as pruning methods that distil use (CoFi, APT).
     */
    public PruningAdapter distilling(double alpha, double temperature, Path teacherDir) {
        if (!(alpha >= 0 && alpha <= 1)) throw new IllegalArgumentException("--distill: a weight in [0, 1], got " + alpha);
        if (!(temperature > 0)) throw new IllegalArgumentException("--distill-temperature: positive, got " + temperature);
        if (teacherDir != null && alpha == 0) throw new IllegalArgumentException("--teacher " + teacherDir + ": only with --distill ALPHA > 0");
        distillAlpha = alpha;
        distillTemperature = temperature;
        this.teacherDir = teacherDir;
        return this;
    }

    /**
     * Layer-wise distillation beside {@link #distilling}: the student also matches each layer's
     * output to the fine-tuned teacher's, weight x their mean squared error per element, summed over
     * layers (0: off). The teacher then stays for the whole adaptation and runs forward on every
     * batch (its weights beside the student's, one inference forward per step). Only with a
     * fine-tuned teacher: the warmed-up model is what pruning turns into the student.
     */
    public PruningAdapter matchingHiddenStates(double weight) {
        if (!(weight >= 0 && Double.isFinite(weight))) throw new IllegalArgumentException("--distill-hidden: a weight >= 0, got " + weight);
        if (weight > 0 && (distillAlpha == 0 || teacherDir == null))
            throw new IllegalArgumentException("--distill-hidden " + weight + ": needs --distill ALPHA > 0 and --teacher DIR (the warmed-up"
                    + " model becomes the pruned student, so only a fine-tuned model can stay beside it as the dense teacher)");
        distillHidden = weight;
        return this;
    }

    private Path checkpoint; // adaptation's checkpoint after every epoch (null: none)
    private boolean resume;

    /**
     * Adaptation writes a checkpoint to file after every epoch (with what resuming needs and the
     * run's identity); resume: the run continues from it. Scoring, pruning and the teacher are
     * deterministic, so a resumed run replays them (tens of seconds) and checks that it arrives at
     * the checkpoint's starting point -- shapes, block masks, warmed adapters and head -- before it
     * loads the adapters' and optimizer's state and trains the epochs left. The gradual schedule's
     * checkpoints also hold its step, masks, importance scores and the units its (compacted) model
     * holds, which a resumed run restores (its starting point is the warmed dense model, compacted to
     * those units). Pruning only writes none and cannot resume.
     */
    public PruningAdapter checkpointing(Path file, boolean resume) {
        if (resume && file == null) throw new IllegalArgumentException("--resume needs a checkpoint file");
        this.checkpoint = file;
        this.resume = resume;
        return this;
    }

    /** A pipeline that trains on be (the CPU, or a GPU backend). */
    public PruningAdapter(Backend be, Config cfg, Listener listener) {
        this.be = be;
        this.cfg = cfg;
        this.listener = listener;
    }

    private void say(String format, Object... args) {
        listener.message(String.format(Locale.ROOT, format, args));
    }

    /** The run's state between its stages. */
    private record Run(Job job, Recipe recipe, List<Trainer.Item> train, List<Trainer.Item> dev, BertTokenizer tok, TaskHead head,
            MemoryTracker mem, long denseParams, double scoreSeconds, long scorePeak, RunIdentity identity) {
        Run scored(double seconds, long peak) {
            return new Run(job, recipe, train, dev, tok, head, mem, denseParams, seconds, peak, identity);
        }
    }

    /** What makes a run the same run: finetune's identity (task, model as loaded, data, recipe) and this pipeline's settings. */
    private RunIdentity identity(Job job, BertModel dense) {
        Map<String, String> f = new LinkedHashMap<>(RunIdentity.of(job.task(), dense, job.train(), job.dev(), job.recipe()).fields());
        f.put("prune.config", new Config(cfg.preset(), cfg.pruneOnly(), cfg.sparsity(), cfg.structure(), cfg.schedule(), cfg.ramp(), cfg.minHeads(),
                cfg.minFfn(), cfg.scorer(), cfg.scoreExamples(), cfg.evalEvery(), 0).toString()); // the serving probe's length changes no training
        f.put("prune.distill", distillAlpha + "/" + distillTemperature + "/" + (teacherDir == null ? "warm-up" : teacherDir.toString())
                + (distillHidden > 0 ? "/hidden " + distillHidden : ""));
        // the teacher's files as saved: one retrained into the same directory is another teacher
        if (teacherDir != null) f.put("prune.teacher", OutputDirectory.fingerprint(teacherDir).orElse("no manifest"));
        return new RunIdentity(f);
    }

    /**
     * Where adaptation starts, as a resumed run must find it again: the pruned shapes, block masks and
     * (sampled) values of every parameter -- warmed adapters included -- and of the head.
     */
    private static String startingPoint(BertModel m, TaskHead head) {
        long h = 1125899906842597L;
        Map<String, Tensor> all = new TreeMap<>(m.parameters());
        head.parameters().forEach((n, t) -> all.put("head." + n, t));
        for (var e : all.entrySet()) h = BertModel.sampleHash(h, e.getKey(), e.getValue(), 997);
        for (var e : m.blockMasksByName().entrySet()) h = 31 * h + e.getKey().hashCode() + Arrays.deepHashCode(e.getValue());
        return Long.toHexString(h);
    }

    /** Fails when the recipe cannot run with this configuration (call it before loading anything). */
    public void check(Recipe rc) {
        if (resume && cfg.pruneOnly()) throw new IllegalArgumentException("--resume: pruning only cannot resume; run it afresh");
        if (distillAlpha > 0 && cfg.pruneOnly())
            throw new IllegalArgumentException("--distill: pruning only has no adaptation to teach");
        if (distillAlpha > 0 && cfg.schedule() == Schedule.GRADUAL && teacherDir == null)
            throw new IllegalArgumentException("--distill with --schedule gradual needs --teacher DIR: the warmed-up dense model is the student"
                    + " that the masks prune as it trains, so no dense copy of it stays to teach");
        if (cfg.schedule() == Schedule.GRADUAL && rc.basePrecision() == Recipe.Precision.BF16) // bf16 packs would miss the masks
            throw new IllegalArgumentException("--schedule gradual masks the fp32 weights as it goes; bf16 packs of them would not see the masks:"
                    + " use --base-precision fp32");
    }

    /** Runs the pipeline on a job; the job's model is consumed (closed when done). */
    public Result run(Job job) throws IOException {
        MemoryTracker mem = MemoryTracker.of(be.device());
        mem.clearPhases(); // this run's phases are its own
        try {
            return runPhases(job);
        } finally {
            mem.phase(null);
        }
    }

    private Result runPhases(Job job) throws IOException {
        Recipe rc = job.recipe();
        check(rc);
        GlueTask t = job.task();
        BertModel dense = job.model().model();
        try (BertTokenizer tok = new BertTokenizer(job.model().tokenizer(), Math.min(rc.maxSeqLen(), dense.config().maxPositions()));
                TaskHead head = new TaskHead(dense.config().hidden(), t.numLabels(), rc.seed())) {
            Run run = new Run(job, rc, Trainer.items(job.train(), tok), Trainer.items(job.dev(), tok), tok, head,
                    MemoryTracker.of(be.device()), encoderParameters(dense), 0, 0, identity(job, dense));
            if (resume) run.identity().checkCheckpoint(checkpoint); // before any work; the starting point is checked once it is reached
            boolean blocks = cfg.structure() == Structure.BLOCKS;
            // 1. scoring: topa scores during a LoRA warm-up; the paper on the pretrained model, only the new head training
            if (!cfg.headScoring()) dense.addLora(rc.loraConfig(), rc.seed());
            ImportanceScores scores = new ImportanceScores(dense.config()).distributed(comm);
            BlockScores blockScores = blocks ? new BlockScores(dense.config(), blockMethod()).distributed(comm) : null;
            long t0 = System.nanoTime();
            run.mem().phase("scoring");
            Recipe scoring = cfg.headScoring() ? rc.with("lr", 1e-3) : rc; // a fresh head needs a head's learning rate to say anything
            try (TrainingCopy copy = new TrainingCopy(be, dense, head)) {
                BertTraining warm = copy.training(new BertTraining.Options(cfg.headScoring() ? n -> false : rc.trainable(),
                        cfg.headScoring() ? DropoutConfig.NONE : rc.dropout(), rc.recomputeProjections(), rc.activationPrecision().dtype()));
                if (!cfg.headScoring() && !blocks && rc.basePrecision() == Recipe.Precision.BF16) copy.model.packForTraining(be);
                warm.setMaskGradientListener(scores);
                if (blocks) warm.setWeightGradientListener(blockScores);
                try (Trainer trainer = new Trainer(be, copy.model, warm, copy.head, t, scoring.trainerConfig(0))) {
                    trainer.distributed(comm);
                    scoringSteps(trainer, run.train(), rc, 0, scoring.lr());
                }
                copy.copyBack(); // the warmed-up adapters and head go on with the pruned model
            }
            run = run.scored((System.nanoTime() - t0) * 1e-9, run.mem().totalPeak());
            run.mem().phase("pruning");
            // the warmed-up teacher runs now, while it exists; a fine-tuned one when adaptation starts (see adapt)
            if (distillAlpha > 0 && teacherDir == null) teacher = teacher(dense, head, run.train(), "the warmed-up dense model", 0);
            try {
                if (cfg.schedule() == Schedule.GRADUAL) return gradual(run, dense, scores);
                if (blocks) return blockPruned(run, dense, blockScores, Structure.BLOCKS);
                return structured(run, dense, scores);
            } finally {
                if (teacher != null) teacher.close(); // a layer-wise teacher's encoder goes with it
                teacher = null;
            }
        }
    }

    /**
     * The fine-tuned model in teacherDir as teacher (see {@link #teacher}). On the host it is read
     * compacted for the training items ({@link FineTunedModel#loadCompactedForInference}: the word
     * embeddings of their tokens, the linear weights only as bf16 packs where bf16 multiplies faster
     * here), never whole in memory beside the student; on a device its fp32 weights are freed when it
     * has run. Matching hidden states, the compacted model (or a copy on the device) stays until the
     * teacher is closed after adaptation.
     */
    private Teacher fineTunedTeacher(List<Trainer.Item> train, BertConfig student) {
        BertConfig tc = HfBertDirectory.readConfig(teacherDir); // checked before anything is read
        if (distillHidden > 0 && (tc.layers() != student.layers() || tc.hidden() != student.hidden()))
            throw new IllegalArgumentException("--distill-hidden: the teacher in " + teacherDir + " has " + tc.layers() + " layers of width "
                    + tc.hidden() + ", the student " + student.layers() + " of width " + student.hidden() + "; layer l is matched to layer l");
        try (MemoryTracker.Phase p = MemoryTracker.of(be.device()).during("teacher")) {
            return be.device().isHostAccessible() ? compactedTeacher(train, tc) : deviceTeacher(train);
        }
    }

    private Teacher compactedTeacher(List<Trainer.Item> train, BertConfig tc) {
        int[] tokens = Teacher.tokensOf(train);
        boolean bf16 = teacherInBf16(tc);
        FineTunedModel.Loaded ft = FineTunedModel.loadCompactedForInference(teacherDir, be, bf16, tokens);
        try {
            long bytes = ft.model().parameterBytes();
            Teacher t;
            try (Predictor p = new Predictor(be, ft.model(), ft.head())) {
                t = new Teacher(p, bytes, train, distillAlpha, distillTemperature);
            }
            String held = MemoryTracker.human(bytes) + " (" + (bf16 ? "bf16" : "fp32") + " linear weights, the word embeddings of the "
                    + tokens.length + " tokens the training set uses)";
            taught(t, teacherDir.toString(), train.size(), bf16 ? "bf16" : "fp32", held);
            if (distillHidden == 0) {
                ft.close();
                return t;
            }
            say("distillation: hidden states of every layer matched too (weight %.2f); the teacher's encoder stays beside the student: %s",
                    distillHidden, held);
            return t.matchingHiddenStates(be, ft.model(), distillHidden, bytes, ft); // nothing after this can fail
        } catch (RuntimeException | Error e) {
            ft.close();
            throw e;
        }
    }

    /** On a device: the teacher's pass on the predictor's copy there; matching hidden states, a copy of its encoder stays there. */
    private Teacher deviceTeacher(List<Trainer.Item> train) {
        FineTunedModel.Loaded ft = FineTunedModel.load(teacherDir);
        BertModel there = null;
        try {
            Teacher t = teacher(ft.model(), ft.head(), train, teacherDir.toString(), ft.model().parameterBytes()); // its fp32 weights too
            if (distillHidden == 0) {
                ft.close();
                return t;
            }
            (there = ft.model().copyTo(be)).packForInference(be, false);
            ft.close();
            long bytes = there.parameterBytes();
            say("distillation: hidden states of every layer matched too (weight %.2f); the teacher's encoder stays beside the student: %s"
                    + " (a copy on the device)", distillHidden, MemoryTracker.human(bytes));
            return t.matchingHiddenStates(be, there, distillHidden, bytes, there); // nothing after this can fail
        } catch (RuntimeException | Error e) {
            if (there != null) there.close();
            ft.close(); // closing twice is harmless: a model's tensors free once
            throw e;
        }
    }

    /** Whether the teacher's inference multiplies faster in bf16 packs here (measured, as serving chooses). */
    private boolean teacherInBf16(BertConfig config) {
        return PrecisionChoice.choose(be, PrecisionChoice.Use.INFERENCE, BertModel.linearShapes(config, 32L * 128)).bf16();
    }

    /**
     * A dense model in memory (the warmed-up one; on a device a loaded fine-tuned one) as teacher:
     * its outputs on every training example, by one inference pass over them (on the CPU with bf16
     * packs of its weights where that multiplies faster here, on a GPU the predictor's own fp32 copy);
     * the packs go right after, so the warmed-up teacher costs no fp32 copy of the model and nothing
     * of it stays for the student's steps. ownBytes: weights held for the teacher alone (a loaded model's).
     */
    private Teacher teacher(BertModel dense, TaskHead head, List<Trainer.Item> train, String who, long ownBytes) {
        boolean onHost = be.device().isHostAccessible();
        boolean bf16 = onHost && teacherInBf16(dense.config());
        Teacher t;
        try (MemoryTracker.Phase phase = MemoryTracker.of(be.device()).during("teacher");
                TensorScope packs = new TensorScope("teacher packs", MemoryCategory.WEIGHTS)) {
            try {
                if (bf16) dense.packForInference(be, true, packs);
                try (Predictor p = new Predictor(be, dense, head)) { // on a device the predictor packs its own copy there
                    t = new Teacher(p, ownBytes + (onHost ? packs.bytes() : dense.parameterBytes()), train, distillAlpha, distillTemperature);
                }
            } finally {
                dense.dropInferencePacks(); // the dense model goes on to be pruned (and, block-masked, trained) without stale packs
            }
        }
        taught(t, who, train.size(), !onHost ? "the device's" : bf16 ? "bf16" : "fp32", MemoryTracker.human(t.weightBytes()));
        return t;
    }

    private void taught(Teacher t, String who, int examples, String products, String weights) {
        say("distillation: %s taught %d examples in %.1f s (weight %.2f, temperature %.1f, %s products, %s of weights)", who, examples,
                t.seconds(), distillAlpha, distillTemperature, products, weights);
    }

    /** 2. heads and neurons chosen and removed (then, with both, blocks of what is left); 3. adapters train on. */
    private Result structured(Run run, BertModel dense, ImportanceScores scores) throws IOException {
        Recipe rc = run.recipe();
        boolean both = cfg.structure() == Structure.BOTH, paper = cfg.preset() == Preset.PAPER;
        ImportanceScores.Scorer unitScorer = cfg.scorer() == ImportanceScores.Scorer.LORA_TAYLOR ? ImportanceScores.Scorer.TAYLOR : cfg.scorer();
        double unitFraction = both ? cfg.sparsity() / 2 : cfg.sparsity();
        double[][] headScores = ImportanceScores.normalized(scores.heads(unitScorer));
        boolean[][] keepHeads = keep(headScores, unitFraction, cfg.minHeads());
        double[][] neuronScores = ImportanceScores.normalized(scores.neurons(unitScorer));
        boolean[][] keepNeurons = keep(neuronScores, cfg.structure() == Structure.HEADS ? 0 : unitFraction, cfg.minFfn());
        if (both) roundUpKept(keepNeurons, neuronScores, BlockSparseWeight.BLOCK); // block pruning needs widths in whole blocks
        BertModel pruned = StructuredPruning.compact(dense, keepHeads, keepNeurons);
        dense.close();
        if (both) {
            say("structured part: heads per layer %s, FFN widths %s; encoder parameters %,d -> %,d", Arrays.toString(pruned.config().heads()),
                    Arrays.toString(pruned.config().ffn()), run.denseParams(), encoderParameters(pruned));
            BlockScores second = new BlockScores(pruned.config(), blockMethod()).distributed(comm);
            long t1 = System.nanoTime();
            try (MemoryTracker.Phase p = run.mem().during("scoring"); TrainingCopy copy = new TrainingCopy(be, pruned, run.head())) {
                BertTraining warm = copy.training(rc);
                warm.setWeightGradientListener(second); // blocks scored on the smaller model, its adapters training on
                try (Trainer trainer = new Trainer(be, copy.model, warm, copy.head, run.job().task(), rc.trainerConfig(0))) {
                    trainer.distributed(comm);
                    scoringSteps(trainer, run.train(), rc, 1, rc.lr());
                }
                copy.copyBack();
            }
            return blockPruned(run.scored(run.scoreSeconds() + (System.nanoTime() - t1) * 1e-9, Math.max(run.scorePeak(), run.mem().totalPeak())),
                    pruned, second, Structure.BOTH);
        }
        List<Integer> layerRanks = List.of();
        if (paper) { // the paper's per-layer ranks: rank 8 for the layers whose heads matter most, 4 elsewhere
            layerRanks = layerRanks(headScores, rc.loraRank(), Math.max(1, rc.loraRank() / 2));
            pruned.addLora(new LoraConfig(rc.loraRank(), rc.loraAlpha(), rc.loraTargets(), rc.loraDropout(), layerRanks), rc.seed());
        }
        say("scored %d batches (%s, %s) in %.1f s, peak %s; heads per layer %s, FFN widths %s%s", scores.batches(),
                cfg.scorer().name().toLowerCase(Locale.ROOT), paper ? "paper" : "topa", run.scoreSeconds(), MemoryTracker.human(run.scorePeak()),
                Arrays.toString(pruned.config().heads()), Arrays.toString(pruned.config().ffn()), layerRanks.isEmpty() ? "" : ", LoRA ranks " + layerRanks);
        reportParameters(run.denseParams(), encoderParameters(pruned));
        List<Integer> ranks = layerRanks;
        try (pruned) {
            return adapt(run, pruned, false, cfg.pruneOnly() ? "prune-only" : paper ? "paper" : "topa", ", pruned", "prune-adapt", p -> {
                p.put("score_batches", scores.batches());
                if (!ranks.isEmpty()) p.set("lora_rank_per_layer", new ObjectMapper().valueToTree(ranks));
            });
        }
    }

    /**
     * Block pruning: the globally lowest-scored 32 x 32 blocks of the encoder's linear weights go
     * until the fraction of the dense encoder's parameters is removed (counting what structured
     * pruning already removed, with both); the weights become block-sparse, the adapters train on, and
     * the best model is saved merged inside the mask, in the block-sparse layout.
     */
    private Result blockPruned(Run run, BertModel model, BlockScores blockScores, Structure shape) throws IOException {
        double[][][][] s = blockScores.scores();
        long all = BlockScores.blockCount(s), block = (long) BlockSparseWeight.BLOCK * BlockSparseWeight.BLOCK;
        long already = run.denseParams() - encoderParameters(model);
        long remove = Math.min(all, Math.max(0, Math.round((cfg.sparsity() * run.denseParams() - already) / block)));
        model.setBlockMasks(BlockScores.keep(s, remove));
        blockScores.close();
        say("scored %d batches (block %s) in %.1f s, peak %s; %d of %d blocks removed (density %.3f)", blockScores.batches(),
                cfg.scorer() == ImportanceScores.Scorer.LORA_TAYLOR ? "lora-taylor" : "taylor, exact", run.scoreSeconds(),
                MemoryTracker.human(run.scorePeak()), remove, all, model.blockDensity());
        reportParameters(run.denseParams(), encoderParameters(model));
        try (model) {
            return adapt(run, model, true, "topa", ", block-pruned", "prune-adapt (" + shape.label() + ")", p -> {
                p.put("score_batches", blockScores.batches());
                p.put("block_size", BlockSparseWeight.BLOCK);
                p.put("blocks_removed", remove);
                p.put("blocks_total", all);
                p.put("block_density", model.blockDensity());
            });
        }
    }

    /**
     * 3. adapters (or, pruning only, every weight) train on the pruned model; each block-masked weight in
     * the form this device runs faster at the training batch; the best saved; 4. the reports.
     */
    private Result adapt(Run run, BertModel pruned, boolean blockMasked, String recipeName, String description, String title,
            Consumer<ObjectNode> extra) throws IOException {
        Recipe rc = run.recipe();
        GlueTask t = run.job().task();
        run.mem().phase(null); // pruning is done; what follows names itself (the teacher, training, evaluation, saving)
        // a fine-tuned teacher runs here, beside the pruned model rather than the dense one (whose scoring warm-up set the peak),
        // and is gone before the first step (matching hidden states, it stays until adaptation ends); its outputs do not depend on when it runs
        if (distillAlpha > 0 && teacherDir != null) teacher = fineTunedTeacher(run.train(), pruned.config());
        try (TrainingCopy copy = new TrainingCopy(be, pruned, run.head());
                Trainer trainer = new Trainer(be, copy.model, copy.training(rc), copy.head, t, rc.trainerConfig(cfg.evalEvery()))) {
            trainer.distributed(comm).distillFrom(teacher); // inside: a refusal here still closes the trainer
            List<BlockFormats.Slot> formats = List.of();
            if (blockMasked) {
                long rows = Math.min((long) rc.batchSize() * rc.maxSeqLen(), be.device().isHostAccessible() ? 1024 : 4096);
                formats = BlockFormats.choose(be, copy.model, rows, rc.basePrecision() == Recipe.Precision.BF16);
                say("formats on %s: %s", be.name(), BlockFormats.summary(formats));
                copy.model.packBlockSparse(be);
            }
            if (rc.basePrecision() == Recipe.Precision.BF16) copy.model.packForTraining(be); // dense-form weights of a block-masked model too
            RunIdentity id = run.identity().with("prune.starting_point", startingPoint(pruned, run.head()));
            TrainingLoop.Outcome before = TrainingLoop.Outcome.NONE;
            if (resume) {
                id.checkCheckpoint(checkpoint);
                before = TrainingLoop.resumed(trainer.loadCheckpoint(checkpoint));
                say("resumed after epoch %d (best dev %s so far)", trainer.epochsDone(), before.best());
            }
            TrainingLoop.Output output = new TrainingLoop.Output(run.job().out(), run.job().model().tokenizer(), run.tok().maxLength(),
                    cfg.pruneOnly() ? null : checkpoint, id);
            TrainingLoop.Outcome outcome = TrainingLoop.run(cpu, trainer, run.train(), run.dev(), pruned, run.head(), output, before,
                    new TrainingLoop.Hooks(st -> {}, copy.export(), listener));
            List<BlockFormats.Slot> chosen = formats;
            return writeReports(run, trainer, pruned, outcome, run.job().model().description() + description, title, p -> {
                p.put("recipe", recipeName);
                p.put("schedule", "oneshot");
                extra.accept(p);
                if (blockMasked) {
                    p.put("block_format_device", be.name());
                    var f = p.putArray("block_formats");
                    for (BlockFormats.Slot sl : chosen)
                        f.addObject().put("weight", BertNames.slot(sl.layer(), sl.slot())).put("density", sl.density())
                                .put("block_sparse_ms", sl.sparseMs()).put("dense_ms", sl.denseMs()).put("chosen", sl.dense() ? "dense" : "block-sparse");
                }
            });
        }
    }

    /**
     * Gradual pruning: masks grow on the cubic schedule while the adapters train on (on a device, in the
     * training copy there). At the end of every epoch of the ramp, and of the epoch in which it ends,
     * the model is compacted to the masks so far and the adapters train on in it, their optimizer state
     * carried over (the masked units computed zeros: the compacted model computes the same, in less
     * time: the cubic ramp masks two thirds of the target in its first third). Once the masks are final
     * the last compacted model trains to the end. The best model is saved compacted.
     */
    private Result gradual(Run run, BertModel dense, ImportanceScores scores) throws IOException {
        run.mem().phase(null); // the masks tighten inside training, which names itself
        Recipe rc = run.recipe();
        MaskedPruning masks = new MaskedPruning(dense.config());
        long stepsPerEpoch = (run.train().size() + rc.batchSize() - 1) / rc.batchSize();
        long rampSteps = Math.max(1, Math.round(cfg.ramp() * stepsPerEpoch * rc.epochs()));
        long[] step = {0};
        // a checkpoint at each epoch's end holds, beside the trainer's state, the step, the masks, the units its model holds and (while
        // the ramp lasts) the scores: a resumed run replays scoring (and the teacher), arrives at the same starting point, compacts the
        // dense model to those units, masks as they were and goes on
        RunIdentity id;
        Map<String, String> resumed = null;
        try {
            id = run.identity().with("prune.starting_point", startingPoint(dense, run.head()));
            if (resume) {
                id.checkCheckpoint(checkpoint);
                try (Safetensors st = Safetensors.read(checkpoint)) {
                    resumed = Map.copyOf(st.metadata());
                }
                if (resumed.containsKey(GRADUAL_COMPACTED)) // an older build's, after its ramp: its metadata lacks the step
                    throw new IllegalArgumentException(checkpoint + ": written by an older topa (compacted only once the masks were final);"
                            + " run it afresh, or resume it with that version");
                for (String k : List.of(GRADUAL_STEP, GRADUAL_MASKS))
                    if (!resumed.containsKey(k))
                        throw new IllegalArgumentException(checkpoint + ": no " + k + " in its metadata (not a gradual run's checkpoint)");
                step[0] = Long.parseLong(resumed.get(GRADUAL_STEP));
                if (step[0] < rampSteps && !resumed.containsKey(GRADUAL_SCORES))
                    throw new IllegalArgumentException(checkpoint + ": no " + GRADUAL_SCORES + " in its metadata, and its ramp is not over");
            }
        } catch (RuntimeException | Error e) {
            dense.close(); // not yet in the tries below, which close it on every later path
            throw e;
        }
        // a fine-tuned teacher's one pass over the training set runs beside the dense student (no pruned one yet)
        if (distillAlpha > 0) try {
            teacher = fineTunedTeacher(run.train(), dense.config());
        } catch (RuntimeException | Error e) {
            dense.close();
            throw e;
        }
        TrainingLoop.Output output = new TrainingLoop.Output(run.job().out(), run.job().model().tokenizer(), run.tok().maxLength(), checkpoint, id);
        BertModel model = dense; // the host model at its current shape: dense, then compacted at each hand-over
        TensorScope carried = null; // the state handed over, on the host, between two shapes' trainers
        try {
            TrainingLoop.Outcome outcome = TrainingLoop.Outcome.NONE;
            Trainer.State state = null;
            if (resumed != null) {
                String shape = resumed.get(GRADUAL_SHAPE); // none in an older build's checkpoint of its ramp, which held every unit
                if (shape != null) {
                    BertModel held = masks.compactAs(model, shape);
                    if (held != model) model.close();
                    model = held;
                }
                if (resumed.containsKey(GRADUAL_SCORES)) scores.restore(resumed.get(GRADUAL_SCORES));
            }
            while (true) {
                boolean ramp = step[0] < rampSteps; // the masks still tighten: this shape trains one epoch
                BertModel shaped = model;
                try (TrainingCopy copy = new TrainingCopy(be, shaped, run.head())) {
                    BertTraining training = copy.training(rc); // closed with the copy
                    // the scores go on accumulating, in the dense model's units; this shape's model holds the units kept so far (a state
                    // to hand over is of the former shape, whose masked units the compaction removed)
                    if (ramp) training.setMaskGradientListener(scores.held(masks.keptHeads(), masks.keptNeurons()));
                    // each step's masks before the next step: the step hook runs once its loss is read back, so every step (on a
                    // device the loop would read back a window of steps at once, and the masks would come steps late)
                    try (Trainer trainer = new Trainer(be, copy.model, training, copy.head, run.job().task(), rc.trainerConfig(cfg.evalEvery()))) {
                        trainer.distributed(comm).distillFrom(teacher);
                        // after the ramp this shape holds no masked unit and the masks change no more: nothing to zero
                        if (ramp) trainer.readBackEvery(1).beforeOptimizerStep(g -> masks.maskGradients(be, g));
                        if (state != null) {
                            masks.handOver(state, trainer);
                            carried.close(); // the former shape's copy is done with
                            carried = null;
                            state = null;
                        } else if (resumed != null) {
                            trainer.loadCheckpoint(checkpoint);
                            masks.restore(be, copy.model, resumed.get(GRADUAL_MASKS));
                            outcome = TrainingLoop.resumed(resumed);
                            resumed = null;
                            say("resumed after epoch %d (best dev %s so far)", trainer.epochsDone(), outcome.best());
                        }
                        if (masks.compacted()) { // else a checkpoint after an epoch that masked more: its hand-over is next
                            if (ramp) trainer.stopAfter(trainer.epochsDone() + 1);
                            outcome = TrainingLoop.run(cpu, trainer, run.train(), run.dev(), shaped, run.head(), output, outcome,
                                    gradualHooks(masks, scores, copy, step, rampSteps, ramp));
                            copy.copyBack(); // the epoch's values (a no-op on the CPU, where the copy is the model)
                            // done and at its final shape; where the last epoch masked more, the hand-over below first (as a run
                            // resumed from that epoch's checkpoint does), so that the report is the compacted trainer's
                            if (trainer.epochsDone() == rc.epochs() && masks.compacted()) return gradualReports(run, trainer, shaped, outcome, rampSteps);
                        }
                        carried = new TensorScope("gradual: the trainer's state", MemoryCategory.WORKSPACE);
                        state = trainer.state(carried);
                    }
                }
                // this shape's trainer and copy closed: the host model (trained values back) compacted beside the state alone
                try (MemoryTracker.Phase p = run.mem().during("hand-over")) {
                    BertModel next = masks.compact(shaped);
                    model = next;
                    shaped.close();
                }
                if (step[0] < rampSteps)
                    say("after epoch %d the adapters train on in the model compacted to the masks so far (encoder parameters %,d -> %,d)",
                            state.epochsDone(), run.denseParams(), encoderParameters(model));
                else if (state.epochsDone() < rc.epochs())
                    say("the masks final after epoch %d: the adapters train on in the compacted model (encoder parameters %,d -> %,d)",
                            state.epochsDone(), run.denseParams(), encoderParameters(model));
            }
        } finally {
            model.close();
            if (carried != null) carried.close();
        }
    }

    /**
     * A gradual run's checkpoint metadata beside the trainer's: steps taken, masks, the units the
     * checkpoint's model holds (it was compacted to the masks of an earlier epoch) and, while the
     * ramp lasts, the importance scores. An older build's checkpoint after its ramp said only that its
     * model was compacted (and its masks): it is refused.
     */
    private static final String GRADUAL_STEP = "gradual.step", GRADUAL_MASKS = "gradual.masks", GRADUAL_SHAPE = "gradual.shape",
            GRADUAL_SCORES = "gradual.scores", GRADUAL_COMPACTED = "gradual.compacted";

    /**
     * One shape's hooks: after each step the masks tighten (every tenth of the ramp) or are enforced;
     * the best model saved compacted (none before the masks are final); the checkpoint's metadata.
     */
    private TrainingLoop.Hooks gradualHooks(MaskedPruning masks, ImportanceScores scores, TrainingCopy copy, long[] step, long rampSteps,
            boolean ramp) {
        long every = Math.max(1, rampSteps / 10);
        return new TrainingLoop.Hooks(st -> {
            step[0]++;
            if (step[0] <= rampSteps && (step[0] % every == 0 || step[0] == rampSteps)) {
                double target = MaskedPruning.cubicTarget(cfg.sparsity(), step[0], rampSteps);
                boolean[][] h = keep(masked(ImportanceScores.normalized(scores.heads(cfg.scorer())), masks.keptHeads()), target, cfg.minHeads());
                boolean[][] n = keep(masked(ImportanceScores.normalized(scores.neurons(cfg.scorer())), masks.keptNeurons()),
                        cfg.structure() == Structure.HEADS_FFN ? target : 0, cfg.minFfn());
                masks.update(be, copy.model, h, n);
            } else if (ramp) {
                masks.enforce(be, copy.model);
            }
        }, !ramp ? copy.export() : () -> {
            copy.copyBack();
            return masks.compact(copy.host);
        }, () -> step[0] >= rampSteps, listener, () -> {
            Map<String, String> m = new LinkedHashMap<>();
            m.put(GRADUAL_STEP, Long.toString(step[0]));
            m.put(GRADUAL_MASKS, masks.state());
            m.put(GRADUAL_SHAPE, masks.heldState());
            if (ramp) m.put(GRADUAL_SCORES, scores.state());
            return m;
        });
    }

    private Result gradualReports(Run run, Trainer trainer, BertModel pruned, TrainingLoop.Outcome outcome, long rampSteps) throws IOException {
        say("gradual pruning over %d steps: heads per layer %s, FFN widths %s; encoder parameters %,d -> %,d", rampSteps,
                Arrays.toString(pruned.config().heads()), Arrays.toString(pruned.config().ffn()), run.denseParams(), encoderParameters(pruned));
        return writeReports(run, trainer, pruned, outcome, run.job().model().description() + ", pruned gradually", "prune-adapt (gradual)", p -> {
            p.put("recipe", "topa");
            p.put("schedule", "gradual");
            p.put("ramp_steps", rampSteps);
        });
    }

    private void reportParameters(long dense, long pruned) {
        say("encoder parameters: %,d -> %,d (%.1f%% removed)", dense, pruned, 100.0 * (dense - pruned) / dense);
    }

    /**
     * report.json/md/png and pruning.json (shapes, parameters, scoring cost, best dev, size on disk,
     * the saved model's serving figures) of a finished run; extra adds the variant's own fields.
     */
    private Result writeReports(Run run, Trainer trainer, BertModel pruned, TrainingLoop.Outcome outcome, String description, String plotTitle,
            Consumer<ObjectNode> extra) throws IOException {
        if (!comm.isRoot()) // the other ranks hold the same model and books; rank 0 writes
            return new Result(outcome, run.denseParams(), encoderParameters(pruned), pruned.config().heads(), pruned.config().ffn(), null);
        Path out = run.job().out().path();
        GlueTask t = run.job().task();
        long total = pruned.parameters().entrySet().stream().mapToLong(e -> BertModel.parameterCount(e.getKey(), e.getValue())).sum();
        TrainingReport.write(out, t, run.recipe(), description, trainer.trainableParameters(), total, run.train().size(), run.dev().size(), outcome,
                run.mem());
        listener.message(run.mem().report().stripTrailing()); // the run's peaks, before the serving probe below resets them
        TrainingPlot.write(out.resolve("report.png"), t.folder() + ", " + plotTitle, outcome.stepLoss(),
                outcome.results().stream().map(r -> r.dev().get(t.mainMetric())).toList(), t.mainMetric().name().toLowerCase(Locale.ROOT));
        ObjectMapper json = new ObjectMapper();
        ObjectNode p = json.createObjectNode();
        extra.accept(p);
        long prunedParams = encoderParameters(pruned);
        p.put("sparsity", cfg.sparsity());
        p.put("distill_alpha", teacher == null ? 0 : teacher.alpha());
        if (teacher != null) {
            p.put("distill_temperature", teacher.temperature());
            p.put("teacher", teacherDir == null ? "warm-up" : teacherDir.toString());
            p.put("teacher_forward_seconds", teacher.seconds());
            p.put("teacher_weight_bytes", teacher.weightBytes());
            if (teacher.matchesHiddenStates()) {
                p.put("distill_hidden_weight", teacher.hiddenWeight());
                p.put("teacher_hidden_forward_seconds", teacher.hiddenSeconds());
                p.put("teacher_hidden_weight_bytes", teacher.hiddenBytes());
            }
        }
        p.put("structure", cfg.structure().label());
        p.put("scorer", cfg.scorer().name().toLowerCase(Locale.ROOT));
        p.put("score_seconds", run.scoreSeconds());
        p.put("score_peak_bytes", run.scorePeak());
        p.put("encoder_parameters_dense", run.denseParams());
        p.put("encoder_parameters_pruned", prunedParams);
        p.set("heads_per_layer", json.valueToTree(pruned.config().heads()));
        p.set("ffn_per_layer", json.valueToTree(pruned.config().ffn()));
        p.put("best_dev", outcome.best());
        p.put("model_bytes_on_disk", Files.size(out.resolve("model.safetensors")));
        if (cfg.inferenceIterations() > 0) try (FineTunedModel.Loaded saved = FineTunedModel.load(out)) {
            InferenceProbe.Figures f = InferenceProbe.measure(cpu, saved.model(), cfg.inferenceIterations());
            p.put("inference_b1_s128_latency_ms", f.latencyB1Ms());
            p.put("inference_b32_s128_seq_per_s", f.throughputB32());
            p.put("inference_b32_activation_peak_bytes", f.activationPeakBytes());
            p.put("inference_weight_bytes", saved.model().parameterBytes());
            say("saved model: batch 1 %.1f ms, batch 32 %.1f seq/s", f.latencyB1Ms(), f.throughputB32());
        }
        OutputDirectory.writeFile(out.resolve("pruning.json"), json.writerWithDefaultPrettyPrinter().writeValueAsBytes(p));
        say("report: %s, %s", out.resolve("report.md"), out.resolve("pruning.json"));
        return new Result(outcome, run.denseParams(), prunedParams, pruned.config().heads(), pruned.config().ffn(), out);
    }

    private BlockScores.Method blockMethod() {
        return cfg.scorer() == ImportanceScores.Scorer.LORA_TAYLOR ? BlockScores.Method.LORA : BlockScores.Method.EXACT;
    }

    /** Training steps over the first scoreExamples examples of an epoch's order, while listeners score. */
    private void scoringSteps(Trainer trainer, List<Trainer.Item> train, Recipe rc, int epoch, double lr) {
        int[] order = Trainer.epochOrder(train.size(), rc.seed(), epoch);
        int n = Math.min(cfg.scoreExamples(), train.size());
        for (int i = 0; i < n; i += rc.batchSize()) {
            List<Trainer.Item> batch = new ArrayList<>();
            for (int j = i; j < Math.min(n, i + rc.batchSize()); j++) batch.add(train.get(order[j]));
            trainer.trainStep(batch, lr);
        }
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

    /**
     * The paper's rank assignment by exact layer index: heads ranked by importance over the whole
     * model (1 = most important), each layer's ranks summed; the third of the layers with the lowest
     * sums (4 of 12 in the paper, at least one) get the high rank, the others the low one.
     */
    public static List<Integer> layerRanks(double[][] headScores, int high, int low) {
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
    public static long encoderParameters(BertModel m) {
        long dense = m.parameters().entrySet().stream().filter(e -> e.getKey().startsWith("encoder.") && !BertNames.isAdapter(e.getKey()))
                .mapToLong(e -> e.getValue().numel()).sum();
        long removed = 0;
        for (boolean[][] mask : m.blockMasksByName().values())
            for (boolean[] row : mask) for (boolean k : row) if (!k) removed += (long) BlockSparseWeight.BLOCK * BlockSparseWeight.BLOCK;
        return dense - removed;
    }

    /**
     * Keeps all but the round(fraction * total) lowest-scored units over the whole model; every layer
     * keeps at least floor units (its best-scored ones): the floor wins over the global fraction.
     */
    public static boolean[][] keep(double[][] scores, double fraction, int floor) {
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
