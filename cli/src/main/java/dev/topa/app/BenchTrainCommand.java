package dev.topa.app;

import dev.topa.backend.Backend;
import dev.topa.glue.Example;
import dev.topa.glue.GlueTask;
import dev.topa.io.ModelLoader;
import dev.topa.io.RandomTokens;
import dev.topa.model.BertModel;
import dev.topa.model.TaskHead;
import dev.topa.tensor.MemoryTracker;
import dev.topa.train.Recipe;
import dev.topa.train.Trainer;
import dev.topa.train.TrainingCopy;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Locale;
import java.util.SplittableRandom;
import java.util.concurrent.Callable;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Option;
import picocli.CommandLine.Spec;

/** topa bench train: training steps end to end, as finetune runs them, on a synthetic batch. */
@Command(name = "train", description = {
        "Time training steps end to end on a synthetic batch of full-length sequences (2 classes) and print",
        "'name: value' lines: the median seconds per step (forward, loss, backward, clipping, AdamW, the",
        "loss read back) after warm-up steps, tokens per second, then the memory the run held per category.",
        "The recipe options are finetune's (on a GPU: bf16 frozen base and bf16-kept activations by default)."})
final class BenchTrainCommand implements Callable<Integer>, RecipeOptions.TakesRecipe {
    @Option(names = "--model", defaultValue = "default", description = "as for encode (default: ${DEFAULT-VALUE})")
    String model;

    @Option(names = "--method", defaultValue = "lora", description = "full or lora (default: ${DEFAULT-VALUE})")
    Recipe.Method method;

    @Option(names = "--steps", defaultValue = "10", description = "timed steps; the median is reported (default: ${DEFAULT-VALUE})")
    int steps;

    @Option(names = "--warmup", defaultValue = "3", description = "untimed steps first (default: ${DEFAULT-VALUE})")
    int warmup;

    @Spec
    CommandSpec spec;

    @Mixin
    ThreadsOption threads;

    @Mixin
    DeviceOption device;

    @Override
    public Integer call() throws Exception {
        if (method == Recipe.Method.PRUNE) throw new IllegalArgumentException("--method: full or lora (prune is timed by prune-adapt's report)");
        if (steps < 1 || warmup < 0) throw new IllegalArgumentException("--steps must be >= 1 and --warmup >= 0");
        threads.apply();
        Recipe rc = new RecipeOptions(spec).recipe(GlueTask.SST2, method, device.cuda());
        ModelLoader.Loaded loaded = ModelLoader.load(model);
        try (Backend be = device.backend(); BertModel m = loaded.model(); TaskHead head = new TaskHead(m.config().hidden(), 2, rc.seed())) {
            int seq = Math.min(rc.maxSeqLen(), m.config().maxPositions());
            SplittableRandom rnd = new SplittableRandom(rc.seed());
            List<Trainer.Item> batch = new ArrayList<>();
            for (int i = 0; i < rc.batchSize(); i++)
                batch.add(new Trainer.Item(RandomTokens.sequence(rnd, m.config().vocabSize(), seq), new Example("", null, i % 2, i % 2)));
            if (method == Recipe.Method.LORA) m.addLora(rc.loraConfig(), rc.seed());
            MemoryTracker mem = MemoryTracker.of(be.device());
            try (TrainingCopy copy = new TrainingCopy(be, m, head);
                    Trainer trainer = new Trainer(be, copy.model, copy.training(rc), copy.head, GlueTask.SST2, rc.trainerConfig(0))) {
                if (rc.basePrecision() == Recipe.Precision.BF16) copy.model.packForTraining(be);
                System.out.printf(Locale.ROOT, "backend: %s%nmodel: %s%n", be.name(), loaded.description());
                System.out.printf(Locale.ROOT, "recipe: %s, batch %d x seq %d, base %s, activations kept in %s, projections %s%n",
                        method.label(), rc.batchSize(), seq, rc.basePrecision().name().toLowerCase(Locale.ROOT),
                        rc.activationPrecision().name().toLowerCase(Locale.ROOT), rc.recomputeProjections() ? "recomputed" : "kept");
                System.out.printf(Locale.ROOT, "trainable_parameters: %d%n", trainer.trainableParameters());
                double[] t = new double[steps];
                for (int i = -warmup; i < steps; i++) {
                    long t0 = System.nanoTime();
                    double loss = trainer.trainStep(batch, rc.lr());
                    if (!Double.isFinite(loss)) throw new IllegalStateException("step " + (i + warmup + 1) + ": the loss is " + loss);
                    if (i >= 0) t[i] = (System.nanoTime() - t0) * 1e-9;
                }
                Arrays.sort(t);
                double median = t[steps / 2];
                System.out.printf(Locale.ROOT, "tokens_per_second: %.0f%n", rc.batchSize() * (double) seq / median);
                System.out.print(mem.report());
                System.out.printf(Locale.ROOT, "peak_mib: %.1f%nstep_seconds: %.4f%n", mem.totalPeak() / 1048576.0, median);
            }
        }
        return 0;
    }
}
