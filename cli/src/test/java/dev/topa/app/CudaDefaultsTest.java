package dev.topa.app;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.topa.backend.Backend;
import dev.topa.backend.Op;
import dev.topa.backend.cpu.CpuBackend;
import dev.topa.backend.cuda.CudaBackend;
import dev.topa.testing.TestData;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.EnumSet;
import java.util.List;
import java.util.Set;
import java.util.function.IntFunction;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * Every command's defaults with {@code --device cuda}, the CPU standing in for the GPU and
 * withholding every op CUDA declares unsupported ({@link CudaBackend#UNSUPPORTED}): each optional
 * op checks the declaration where it is used, so a default path that needs one the CUDA backend
 * refuses fails here, on a machine without a GPU. The recipes are the defaults as a CUDA run gets
 * them (dropout on, bf16 base and activations); only the sizes (examples, batch, tokens, epochs)
 * are shrunk, which changes no op.
 */
class CudaDefaultsTest {
    private final IntFunction<Backend> real = DeviceOption.cuda;

    @AfterEach
    void restore() {
        DeviceOption.cuda = real;
    }

    private static void standIn(Set<Op> withheld) {
        DeviceOption.cuda = device -> CpuBackend.create().without(withheld);
    }

    private static List<String> small(Path glue, Path out, String... command) {
        List<String> a = new ArrayList<>(List.of(command));
        a.addAll(List.of("--task", "rte", "--data-dir", glue.toString(), "--device", "cuda", "--train-limit", "16", "--batch-size", "8",
                "--max-seq-len", "32", "--epochs", "1", "--out", out.toString()));
        return a;
    }

    private static CliRun run(List<String> args) {
        return CliRun.of(args.toArray(String[]::new));
    }

    @Test
    void everyCommandsDefaultsRunOnWhatCudaSupports(@TempDir Path dir) throws Exception {
        Path glue = TestData.glue(), lines = Files.writeString(dir.resolve("lines.txt"), "a sentence to embed\nand a second one\n");
        standIn(CudaBackend.UNSUPPORTED);
        Path lora = dir.resolve("lora");
        for (List<String> args : List.of(small(glue, lora, "finetune"), small(glue, dir.resolve("full"), "finetune", "--method", "full"),
                small(glue, dir.resolve("prune"), "finetune", "--method", "prune"),
                withScoring(small(glue, dir.resolve("pa"), "prune-adapt")),
                withScoring(small(glue, dir.resolve("paper"), "prune-adapt", "--recipe", "paper")),
                withScoring(small(glue, dir.resolve("gradual"), "prune-adapt", "--schedule", "gradual")))) {
            CliRun r = run(args);
            assertEquals(0, r.code(), String.join(" ", args) + "\n" + r.printed());
        }
        for (List<String> args : List.of(List.of("eval", "--model", lora.toString(), "--data-dir", glue.toString(), "--device", "cuda"),
                List.of("predict", "--model", lora.toString(), "--device", "cuda", "A cat sat.", "A cat was sitting."),
                List.of("encode", "--device", "cuda", "--input", lines.toString(), "--output", dir.resolve("h.safetensors").toString(), "--pooled"),
                List.of("bench", "train", "--device", "cuda", "--steps", "1", "--warmup", "0", "--batch-size", "4", "--max-seq-len", "32"))) {
            CliRun r = run(args);
            assertEquals(0, r.code(), String.join(" ", args) + "\n" + r.printed());
        }
    }

    /** The test fails when a default needs what the device withholds: today's CUDA without attention dropout would. */
    @Test
    void aDefaultNeedingAWithheldOpFailsBeforeAnyStep(@TempDir Path dir) {
        Path glue = TestData.glue();
        Set<Op> withheld = EnumSet.copyOf(CudaBackend.UNSUPPORTED);
        withheld.add(Op.ATTENTION_DROPOUT);
        standIn(withheld);
        CliRun r = run(small(glue, dir.resolve("o"), "finetune"));
        assertEquals(1, r.code(), r.printed());
        assertTrue(r.err().contains("dropout on attention probabilities (attention-dropout)"), r.printed());
    }

    private static List<String> withScoring(List<String> args) {
        List<String> a = new ArrayList<>(args);
        a.addAll(List.of("--score-examples", "16", "--inference-iterations", "1"));
        return a;
    }
}
