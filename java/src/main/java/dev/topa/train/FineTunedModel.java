package dev.topa.train;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import dev.topa.backend.Backend;
import dev.topa.glue.GlueTask;
import dev.topa.io.HfBertDirectory;
import dev.topa.io.ModelFormatException;
import dev.topa.io.OutputDirectory;
import dev.topa.io.Safetensors;
import dev.topa.model.BertModel;
import dev.topa.model.TaskHead;
import dev.topa.tensor.DType;
import dev.topa.tensor.MemoryCategory;
import dev.topa.tensor.Tensor;
import dev.topa.tensor.TensorAllocator;
import dev.topa.tensor.TensorScope;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.util.Map;
import java.util.function.Supplier;

/**
 * A fine-tuned model on disk: a Hugging Face directory with any LoRA adapters merged (config.json,
 * model.safetensors), the task head (head.safetensors), the tokenizer, and task.json (task,
 * outputs, max sequence length). Every file is written atomically.
 */
public final class FineTunedModel {
    public static final String HEAD = "head.safetensors", TASK = "task.json", TOKENIZER = "tokenizer.json", ADAPTER = "adapter.safetensors";
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
        if (!model.adapterScales().isEmpty()) saveAdapter(dir.resolve(ADAPTER), model);
        copyAtomically(tokenizer, dir.resolve(TOKENIZER));
        ObjectNode t = JSON.createObjectNode();
        t.put("task", task.name());
        t.put("outputs", head.outputs());
        t.put("max_seq_len", maxSeqLen);
        t.put("head", "mean-pool-linear");
        OutputDirectory.writeFile(dir.resolve(TASK), JSON.writerWithDefaultPrettyPrinter().writeValueAsBytes(t));
    }

    /**
     * The unmerged adapter beside the merged model: every LoRA tensor and every LayerNorm parameter
     * (what a LoRA recipe trains), the adapters' scales and the fingerprint of the backbone they were
     * trained on (metadata), so one backbone can serve several tasks' adapters ({@link #loadAdapter}).
     */
    static void saveAdapter(Path file, BertModel model) throws IOException {
        Map<String, Tensor> t = new java.util.LinkedHashMap<>();
        model.parameters().forEach((n, v) -> {
            if (n.contains(".lora_") || n.contains("LayerNorm")) t.put(n, v);
        });
        Map<String, String> meta = new java.util.LinkedHashMap<>();
        meta.put("backbone_fingerprint", model.fingerprint());
        model.adapterScales().forEach((m, sc) -> meta.put("scale." + m, Float.toString(sc)));
        Safetensors.write(file, t, meta);
    }

    /** A task's adapter set, head and task facts, loaded against a backbone (its tensors on the backbone's device). */
    public record Adapter(BertModel.AdapterSet set, TaskHead head, GlueTask task, Path tokenizer, int maxSeqLen,
            TensorAllocator memory) implements AutoCloseable {
        @Override
        public void close() {
            head.close();
            memory.close();
        }
    }

    /**
     * The adapter in a directory written by a LoRA fine-tuning, for the given backbone (on be's
     * device); refuses, naming both, an adapter trained on another backbone.
     */
    public static Adapter loadAdapter(Path dir, BertModel backbone, String backboneFingerprint, Backend be) {
        Path file = dir.resolve(ADAPTER);
        if (!Files.isRegularFile(file))
            throw new ModelFormatException(dir + ": no " + ADAPTER + " (write one with topa finetune --method lora)");
        OutputDirectory.verify(dir);
        TensorAllocator memory = be.scope("adapter " + dir.getFileName(), MemoryCategory.ADAPTERS);
        try (Safetensors st = Safetensors.read(file); TensorScope host = new TensorScope("adapter load", MemoryCategory.WORKSPACE)) {
            String trainedOn = st.metadata().get("backbone_fingerprint");
            if (!backboneFingerprint.equals(trainedOn))
                throw new ModelFormatException(file + ": trained on backbone " + trainedOn + ", this backbone is " + backboneFingerprint
                        + " (serve it with the model it was fine-tuned from)");
            Map<String, Tensor> tensors = new java.util.LinkedHashMap<>();
            Map<String, Float> scales = new java.util.LinkedHashMap<>();
            for (var e : st.entries().entrySet()) {
                Tensor t = host.allocate(DType.F32, e.getValue().shape()).copyFrom(e.getValue().floats(file));
                tensors.put(e.getKey(), be.copyOf(t, memory));
            }
            st.metadata().forEach((k, v) -> {
                if (k.startsWith("scale.")) scales.put(k.substring("scale.".length()), Float.parseFloat(v));
            });
            BertModel.AdapterSet set;
            try {
                set = backbone.adapterSet(tensors, scales);
            } catch (IllegalArgumentException e) {
                throw new ModelFormatException(file + ": " + e.getMessage(), e);
            }
            JsonNode t = readTask(dir);
            GlueTask task = GlueTask.parse(t.path("task").asText());
            TaskHead h = loadHead(dir, backbone.config().hidden(), t.path("outputs").asInt(task.numLabels()));
            return new Adapter(set, h, task, dir.resolve(TOKENIZER), t.path("max_seq_len").asInt(128), memory);
        } catch (RuntimeException | Error e) {
            memory.close();
            throw e;
        }
    }

    public static Loaded load(Path dir) {
        return load(dir, () -> HfBertDirectory.load(dir));
    }

    /**
     * The model in dir compacted for inference on be's host as it is read, never whole in memory
     * ({@link HfBertDirectory#loadCompactedForInference}): the word embeddings of tokens only, with
     * bf16 its linear weights only as bf16 packs (a teacher beside its student).
     */
    public static Loaded loadCompactedForInference(Path dir, Backend be, boolean bf16, int[] tokens) {
        return load(dir, () -> HfBertDirectory.loadCompactedForInference(dir, be, bf16, tokens));
    }

    private static Loaded load(Path dir, Supplier<BertModel> encoder) {
        OutputDirectory.verify(dir);
        JsonNode t = readTask(dir);
        GlueTask task = GlueTask.parse(t.path("task").asText());
        BertModel model = encoder.get();
        try {
            TaskHead head = loadHead(dir, model.config().hidden(), t.path("outputs").asInt(task.numLabels()));
            return new Loaded(model, head, task, dir.resolve(TOKENIZER), t.path("max_seq_len").asInt(128));
        } catch (RuntimeException e) {
            model.close();
            throw e;
        }
    }

    /** The task of the fine-tuned model in dir (read from its task.json alone, nothing loaded). */
    public static GlueTask task(Path dir) {
        OutputDirectory.verify(dir);
        return GlueTask.parse(readTask(dir).path("task").asText());
    }

    private static JsonNode readTask(Path dir) {
        Path taskFile = dir.resolve(TASK);
        if (!Files.isRegularFile(taskFile))
            throw new ModelFormatException(dir + ": no " + TASK + " (not a directory written by topa finetune)");
        try {
            return JSON.readTree(taskFile.toFile());
        } catch (IOException e) {
            throw new ModelFormatException(taskFile + ": " + e.getMessage(), e);
        }
    }

    private static TaskHead loadHead(Path dir, int hidden, int outputs) {
        TaskHead head = new TaskHead(hidden, outputs, 0);
        try (Safetensors st = Safetensors.read(dir.resolve(HEAD))) {
            for (var e : head.parameters().entrySet()) {
                Safetensors.Entry s = st.entries().get(e.getKey());
                if (s == null || s.numel() != e.getValue().numel())
                    throw new ModelFormatException(dir.resolve(HEAD) + ": tensor " + e.getKey() + " missing or of the wrong size");
                e.getValue().copyFrom(s.floats(dir.resolve(HEAD)));
            }
            return head;
        } catch (RuntimeException e) {
            head.close();
            throw e;
        }
    }

    private static void copyAtomically(Path src, Path target) throws IOException {
        if (src.toAbsolutePath().equals(target.toAbsolutePath())) return;
        OutputDirectory.writeFile(target, Files.readAllBytes(src));
    }
}
