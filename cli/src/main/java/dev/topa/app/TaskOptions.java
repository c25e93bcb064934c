package dev.topa.app;

import dev.topa.glue.Example;
import dev.topa.glue.GlueDownload;
import dev.topa.glue.GlueTask;
import dev.topa.io.OutputDirectory;
import java.io.IOException;
import java.nio.file.Path;
import java.util.List;
import picocli.CommandLine.Option;

/** What a training command works on: the task, its data, the model, where the outputs go (a picocli mixin). */
final class TaskOptions {
    @Option(names = "--task", required = true, description = "cola, sst2, mrpc, stsb, qqp, mnli, qnli, rte, wnli")
    String task;

    @Option(names = "--model", defaultValue = "default", description = "as for encode (default: ${DEFAULT-VALUE})")
    String model;

    @Option(names = "--data-dir", description = {"GLUE data: one folder per task (SST-2/train.tsv, ...); default: downloaded",
            "into the cache (TOPA_GLUE_URL sets the source, TOPA_OFFLINE=1 uses the cache only)"})
    Path dataDir;

    @Option(names = "--out", required = true, description = "where the outputs go: the best model (LoRA merged), head, tokenizer and reports; compare: a folder per run")
    Path out;

    @Option(names = "--train-limit", paramLabel = "N", description = "use only the first N training examples")
    Integer trainLimit;

    @Option(names = "--dev-limit", paramLabel = "N", description = "evaluate on only the first N dev examples (quick runs: the best model is"
            + " chosen on them; the reports give how many)")
    Integer devLimit;

    @Option(names = "--overwrite", description = {"replace what --out holds (its model stays until the new one is complete);",
            "without it a non-empty --out is refused"})
    boolean overwrite;

    /**
     * --out taken for this run, before any training: a non-empty one refused unless resuming or
     * --overwrite; writability and free space (bytesNeeded) checked.
     */
    OutputDirectory openOut(boolean resume, long bytesNeeded) throws IOException {
        if (resume && overwrite) throw new IllegalArgumentException("--resume continues the run in --out; --overwrite replaces it: give one");
        try {
            return OutputDirectory.open(out, resume ? OutputDirectory.Mode.RESUME : overwrite ? OutputDirectory.Mode.OVERWRITE
                    : OutputDirectory.Mode.NEW, bytesNeeded);
        } catch (java.nio.file.NoSuchFileException e) {
            throw new IllegalArgumentException("--resume: " + out + " does not exist (nothing to continue)");
        } catch (OutputDirectory.NotEmptyException e) {
            throw new IllegalArgumentException("--out: " + e.getMessage() + ": give a new or empty directory, --resume to continue the run"
                    + " it holds, or --overwrite to replace it");
        }
    }

    /** What a run's --out must have free: the model twice (old and new side by side during a save), the checkpoint, and slack. */
    static long bytesNeeded(long modelBytes, long checkpointBytes) {
        return 2 * modelBytes + checkpointBytes + (32L << 20);
    }

    GlueTask glueTask() {
        return GlueTask.parse(task);
    }

    /** The task's data folder: --data-dir, or the cache (downloaded there when missing). */
    Path data() throws IOException {
        return dataDir != null ? dataDir : GlueDownload.dataDir(glueTask());
    }

    /** The training examples (the first --train-limit of them). */
    List<Example> train() throws IOException {
        checkLimit("--train-limit", trainLimit);
        return first(glueTask().train(data()), trainLimit);
    }

    /** The first dev split's examples (the first --dev-limit of them). */
    List<Example> dev() throws IOException {
        checkLimit("--dev-limit", devLimit);
        GlueTask t = glueTask();
        return first(t.dev(data(), t.devSplits().get(0)), devLimit);
    }

    private static void checkLimit(String option, Integer limit) {
        if (limit != null && limit < 1) throw new IllegalArgumentException(option + " must be >= 1, got " + limit);
    }

    private static List<Example> first(List<Example> all, Integer limit) {
        return limit == null ? all : all.subList(0, Math.min(limit, all.size()));
    }
}
