package dev.topa.io;

import dev.topa.model.BertModel;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.stream.Stream;

/**
 * Resolves what a user names as a model: "default" (the bundled all-MiniLM-L6-v2), a Hugging Face
 * directory (config.json + model.safetensors), a hub id org/name (fetched into the cache by
 * {@link HubClient}), or a directory holding one BERT .onnx export; each with its tokenizer.json.
 */
public final class ModelLoader {
    public record Loaded(BertModel model, Path tokenizer, String description) {}

    private ModelLoader() {}

    public static Loaded load(String spec) {
        if (spec.equals("default")) {
            Path dir = DefaultModel.directory();
            return new Loaded(OnnxBertReader.load(dir.resolve("model.onnx")), dir.resolve("tokenizer.json"),
                    DefaultModel.NAME + " (bundled ONNX)");
        }
        Path dir = Path.of(spec);
        if (!Files.isDirectory(dir) && HubClient.isRepoId(spec)) {
            try {
                dir = HubClient.fromEnvironment().fetch(spec);
            } catch (IOException e) {
                throw new ModelFormatException(spec + ": cannot fetch from the hub: " + e.getMessage(), e);
            }
        }
        if (!Files.isDirectory(dir))
            throw new ModelFormatException(spec + ": not a directory (give 'default', a Hugging Face model directory, "
                    + "a hub id org/name, or a directory with one BERT .onnx file and its tokenizer.json)");
        Path tokenizer = dir.resolve("tokenizer.json");
        if (!Files.isRegularFile(tokenizer)) throw new ModelFormatException(dir + ": no tokenizer.json");
        if (HfBertDirectory.isOne(dir)) return new Loaded(HfBertDirectory.load(dir), tokenizer, dir + " (safetensors)");
        List<Path> onnx;
        try (Stream<Path> files = Files.list(dir)) {
            onnx = files.filter(p -> p.toString().endsWith(".onnx")).sorted().toList();
        } catch (IOException e) {
            throw new ModelFormatException(dir + ": " + e.getMessage(), e);
        }
        if (onnx.size() != 1)
            throw new ModelFormatException(dir + ": expected config.json + model.safetensors, or exactly one .onnx file; found "
                    + onnx.size() + " .onnx files");
        return new Loaded(OnnxBertReader.load(onnx.get(0)), tokenizer, onnx.get(0) + " (ONNX)");
    }
}
