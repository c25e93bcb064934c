package dev.topa;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;

/**
 * The engine's layers name only what is below them: tensor < backend < dist < model < io < glue < train <
 * prune < serve. Every source file is read for imports and fully qualified names of dev.topa
 * packages; one that names a higher layer fails with the file and the name.
 */
class LayeringTest {
    static final List<String> LAYERS = List.of("tensor", "backend", "dist", "model", "io", "glue", "train", "prune", "serve");
    private static final Pattern NAME = Pattern.compile("\\bdev\\.topa\\.([a-z]+)\\b");

    static List<String> violations(Path root) throws IOException {
        List<String> out = new ArrayList<>();
        try (Stream<Path> files = Files.walk(root)) {
            for (Path f : files.filter(p -> p.toString().endsWith(".java")).toList()) {
                String layer = root.relativize(f).getName(0).toString();
                int rank = LAYERS.indexOf(layer);
                if (rank < 0) {
                    out.add(f + ": package " + layer + " is in no layer");
                    continue;
                }
                String src = Files.readString(f);
                Matcher m = NAME.matcher(src.replaceFirst("package [^;]+;", ""));
                while (m.find()) {
                    int other = LAYERS.indexOf(m.group(1));
                    if (other > rank) out.add(f + ": " + layer + " names " + m.group(0) + ", a layer above it");
                }
            }
        }
        return out;
    }

    @Test
    void noLayerNamesOneAboveIt() throws IOException {
        assertEquals(List.of(), violations(Path.of("src/main/java/dev/topa")));
    }

    @Test
    void aViolationIsFound(@org.junit.jupiter.api.io.TempDir Path dir) throws IOException {
        Files.createDirectories(dir.resolve("model"));
        Files.writeString(dir.resolve("model/A.java"), "package dev.topa.model;\nclass A { dev.topa.train.Trainer t; }\n");
        var v = violations(dir);
        assertTrue(v.size() == 1 && v.get(0).contains("dev.topa.train"), v.toString());
    }
}
