package dev.topa.io;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import dev.topa.model.BertConfig;
import dev.topa.model.BertModel;
import dev.topa.tensor.Tensor;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * A Hugging Face model directory: config.json + model.safetensors (or shards listed in
 * model.safetensors.index.json). Tensor names may carry the "bert." prefix. Pruned models add
 * per-layer head counts and FFN widths to config.json ("topa_heads_per_layer",
 * "topa_ffn_per_layer"); standard configs have one value for all layers.
 */
public final class HfBertDirectory {
    private static final ObjectMapper JSON = new ObjectMapper();

    private HfBertDirectory() {}

    public static boolean isOne(Path dir) {
        return Files.isRegularFile(dir.resolve("config.json"))
                && (Files.isRegularFile(dir.resolve("model.safetensors")) || Files.isRegularFile(dir.resolve("model.safetensors.index.json")));
    }

    public static BertConfig readConfig(Path dir) {
        Path file = dir.resolve("config.json");
        JsonNode c;
        try {
            c = JSON.readTree(file.toFile());
        } catch (IOException e) {
            throw new ModelFormatException(file + ": cannot read config: " + e.getMessage(), e);
        }
        String type = c.path("model_type").asText("bert");
        if (!type.equals("bert"))
            throw new ModelFormatException(file + ": model_type '" + type + "' is not supported (only bert)");
        String act = c.path("hidden_act").asText("gelu");
        if (!act.equals("gelu"))
            throw new ModelFormatException(file + ": hidden_act '" + act + "' is not supported (exact gelu only)");
        int hidden = required(file, c, "hidden_size"), layers = required(file, c, "num_hidden_layers");
        int heads = required(file, c, "num_attention_heads");
        if (hidden % heads != 0) throw new ModelFormatException(file + ": hidden_size " + hidden + " is not divisible by "
                + "num_attention_heads " + heads);
        int[] h = perLayer(file, c, "topa_heads_per_layer", layers, heads);
        int[] f = perLayer(file, c, "topa_ffn_per_layer", layers, required(file, c, "intermediate_size"));
        int headDim = c.path("topa_head_dim").asInt(hidden / heads);
        return new BertConfig(required(file, c, "vocab_size"), hidden, required(file, c, "max_position_embeddings"),
                c.path("type_vocab_size").asInt(2), headDim, h, f, (float) c.path("layer_norm_eps").asDouble(1e-12));
    }

    private static int required(Path file, JsonNode c, String key) {
        JsonNode v = c.get(key);
        if (v == null || !v.canConvertToInt() || v.asInt() <= 0)
            throw new ModelFormatException(file + ": field " + key + " is missing or not a positive integer");
        return v.asInt();
    }

    private static int[] perLayer(Path file, JsonNode c, String key, int layers, int fallback) {
        int[] out = new int[layers];
        JsonNode v = c.get(key);
        if (v == null) {
            Arrays.fill(out, fallback);
            return out;
        }
        if (!v.isArray() || v.size() != layers)
            throw new ModelFormatException(file + ": " + key + " must list " + layers + " values");
        for (int i = 0; i < layers; i++) {
            if (!v.get(i).canConvertToInt() || v.get(i).asInt() < 0)
                throw new ModelFormatException(file + ": " + key + "[" + i + "] is " + v.get(i) + ", not a count >= 0");
            out[i] = v.get(i).asInt();
        }
        return out;
    }

    public static BertModel load(Path dir) {
        BertConfig config = readConfig(dir);
        List<Safetensors> files = new ArrayList<>();
        try {
            Map<String, Safetensors.Entry> entries = new HashMap<>();
            Map<String, Path> where = new HashMap<>();
            for (Path p : shards(dir)) {
                Safetensors st = Safetensors.read(p);
                files.add(st);
                st.entries().forEach((k, v) -> {
                    entries.put(OnnxBertReader.hfName(k), v);
                    where.put(OnnxBertReader.hfName(k), p);
                });
            }
            BertModel model = new BertModel(config);
            try {
                for (Map.Entry<String, Tensor> p : model.parameters().entrySet()) {
                    Safetensors.Entry e = entries.get(p.getKey());
                    if (e == null) throw new ModelFormatException(dir + ": no tensor " + p.getKey() + " in " + shards(dir));
                    if (!Arrays.equals(e.shape(), p.getValue().shape()))
                        throw new ModelFormatException(where.get(p.getKey()) + ": tensor " + p.getKey() + " is "
                                + Arrays.toString(e.shape()) + ", config.json implies " + Arrays.toString(p.getValue().shape()));
                    p.getValue().copyFrom(e.floats(where.get(p.getKey())));
                }
            } catch (RuntimeException ex) {
                model.close();
                throw ex;
            }
            return model;
        } finally {
            files.forEach(Safetensors::close);
        }
    }

    private static List<Path> shards(Path dir) {
        Path single = dir.resolve("model.safetensors");
        if (Files.isRegularFile(single)) return List.of(single);
        Path index = dir.resolve("model.safetensors.index.json");
        if (!Files.isRegularFile(index)) throw new ModelFormatException(dir + ": no model.safetensors or model.safetensors.index.json");
        try {
            JsonNode map = JSON.readTree(index.toFile()).get("weight_map");
            if (map == null || !map.isObject()) throw new ModelFormatException(index + ": no weight_map object");
            LinkedHashMap<String, Path> files = new LinkedHashMap<>();
            map.fields().forEachRemaining(e -> files.put(e.getValue().asText(), dir.resolve(e.getValue().asText())));
            for (Path p : files.values())
                if (!Files.isRegularFile(p)) throw new ModelFormatException(index + ": shard " + p.getFileName() + " is missing");
            return new ArrayList<>(files.values());
        } catch (IOException e) {
            throw new ModelFormatException(index + ": " + e.getMessage(), e);
        }
    }

    /** Writes config.json and model.safetensors into dir, each atomically. */
    public static void save(BertModel model, Path dir) {
        save(model.config(), model.parameters(), dir);
    }

    /** Writes a config and named tensors (e.g. with LoRA merged) as a Hugging Face directory. */
    public static void save(BertConfig c, Map<String, Tensor> tensors, Path dir) {
        ObjectNode cfg = JSON.createObjectNode();
        cfg.put("model_type", "bert");
        cfg.putArray("architectures").add("BertModel");
        cfg.put("vocab_size", c.vocabSize());
        cfg.put("hidden_size", c.hidden());
        cfg.put("num_hidden_layers", c.layers());
        cfg.put("num_attention_heads", c.hidden() / c.headDim());
        cfg.put("intermediate_size", c.ffn(0));
        cfg.put("max_position_embeddings", c.maxPositions());
        cfg.put("type_vocab_size", c.typeVocabSize());
        cfg.put("layer_norm_eps", c.layerNormEps());
        cfg.put("hidden_act", "gelu");
        boolean uniform = Arrays.stream(c.heads()).allMatch(h -> h == c.hidden() / c.headDim())
                && Arrays.stream(c.ffn()).allMatch(f -> f == c.ffn(0));
        if (!uniform) {
            cfg.put("topa_head_dim", c.headDim());
            var h = cfg.putArray("topa_heads_per_layer");
            for (int v : c.heads()) h.add(v);
            var f = cfg.putArray("topa_ffn_per_layer");
            for (int v : c.ffn()) f.add(v);
        }
        try {
            Files.createDirectories(dir);
            Safetensors.write(dir.resolve("model.safetensors"), tensors, Map.of("format", "pt"));
            Path tmp = Files.createTempFile(dir, "config.json", ".tmp");
            try {
                JSON.writerWithDefaultPrettyPrinter().writeValue(tmp.toFile(), cfg);
                Files.setPosixFilePermissions(tmp, java.nio.file.attribute.PosixFilePermissions.fromString("rw-r--r--"));
                Files.move(tmp, dir.resolve("config.json"), StandardCopyOption.ATOMIC_MOVE, StandardCopyOption.REPLACE_EXISTING);
            } finally {
                Files.deleteIfExists(tmp);
            }
        } catch (IOException e) {
            throw new UncheckedIOException("cannot save the model into " + dir, e);
        }
    }
}
