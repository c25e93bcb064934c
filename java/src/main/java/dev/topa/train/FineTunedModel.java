package dev.topa.train;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import dev.topa.backend.Backend;
import dev.topa.glue.GlueTask;
import dev.topa.io.HfBertDirectory;
import dev.topa.io.ModelFormatException;
import dev.topa.io.Safetensors;
import dev.topa.model.BertModel;
import dev.topa.model.TaskHead;
import dev.topa.tensor.MemoryCategory;
import dev.topa.tensor.TensorScope;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.util.Map;

/**
 * A fine-tuned model on disk: a Hugging Face directory with any LoRA adapters merged (config.json,
 * model.safetensors), the task head (head.safetensors), the tokenizer, and task.json (task,
 * outputs, max sequence length). Every file is written atomically.
 */
public final class FineTunedModel {
    public static final String HEAD = "head.safetensors", TASK = "task.json", TOKENIZER = "tokenizer.json";
    private static final ObjectMapper JSON = new ObjectMapper();

    /** A loaded fine-tuned model; closing releases the weights. */
    public record Loaded(BertModel model, TaskHead head, GlueTask task, Path tokenizer, int maxSeqLen) implements AutoCloseable {
        @Override
        public void close() {
            head.close();
            model.close();
        }
    }

    private FineTunedModel() {}

    public static void save(Path dir, Backend be, BertModel model, TaskHead head, GlueTask task, Path tokenizer, int maxSeqLen)
            throws IOException {
        Files.createDirectories(dir);
        try (TensorScope merged = new TensorScope("merge", MemoryCategory.WORKSPACE)) {
            HfBertDirectory.save(model.config(), model.mergedParameters(be, merged), model.blockMasksByName(), dir, merged);
        }
        Safetensors.write(dir.resolve(HEAD), head.parameters(), Map.of("task", task.name()));
        copyAtomically(tokenizer, dir.resolve(TOKENIZER));
        ObjectNode t = JSON.createObjectNode();
        t.put("task", task.name());
        t.put("outputs", head.outputs());
        t.put("max_seq_len", maxSeqLen);
        t.put("head", "mean-pool-linear");
        writeAtomically(dir.resolve(TASK), JSON.writerWithDefaultPrettyPrinter().writeValueAsBytes(t));
    }

    public static Loaded load(Path dir) {
        Path taskFile = dir.resolve(TASK);
        if (!Files.isRegularFile(taskFile))
            throw new ModelFormatException(dir + ": no " + TASK + " (not a directory written by topa finetune)");
        JsonNode t;
        try {
            t = JSON.readTree(taskFile.toFile());
        } catch (IOException e) {
            throw new ModelFormatException(taskFile + ": " + e.getMessage(), e);
        }
        GlueTask task = GlueTask.parse(t.path("task").asText());
        int outputs = t.path("outputs").asInt(task.numLabels());
        BertModel model = HfBertDirectory.load(dir);
        TaskHead head = new TaskHead(model.config().hidden(), outputs, 0);
        try (Safetensors st = Safetensors.read(dir.resolve(HEAD))) {
            for (var e : head.parameters().entrySet()) {
                Safetensors.Entry s = st.entries().get(e.getKey());
                if (s == null || s.numel() != e.getValue().numel())
                    throw new ModelFormatException(dir.resolve(HEAD) + ": tensor " + e.getKey() + " missing or of the wrong size");
                e.getValue().copyFrom(s.floats(dir.resolve(HEAD)));
            }
        } catch (RuntimeException e) {
            head.close();
            model.close();
            throw e;
        }
        return new Loaded(model, head, task, dir.resolve(TOKENIZER), t.path("max_seq_len").asInt(128));
    }

    /** Writes a file through a temp file in the same directory and an atomic rename. */
    public static void writeAtomically(Path target, byte[] bytes) throws IOException {
        Path tmp = Files.createTempFile(target.toAbsolutePath().getParent(), target.getFileName().toString(), ".tmp");
        try {
            Files.write(tmp, bytes);
            Files.setPosixFilePermissions(tmp, java.nio.file.attribute.PosixFilePermissions.fromString("rw-r--r--"));
            Files.move(tmp, target, StandardCopyOption.ATOMIC_MOVE, StandardCopyOption.REPLACE_EXISTING);
        } finally {
            Files.deleteIfExists(tmp);
        }
    }

    private static void copyAtomically(Path src, Path target) throws IOException {
        if (src.toAbsolutePath().equals(target.toAbsolutePath())) return;
        writeAtomically(target, Files.readAllBytes(src));
    }
}
