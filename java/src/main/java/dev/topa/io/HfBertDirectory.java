package dev.topa.io;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import dev.topa.backend.Backend;
import dev.topa.backend.BlockSparseWeight;
import dev.topa.model.BertConfig;
import dev.topa.model.BertModel;
import dev.topa.model.BertNames;
import dev.topa.tensor.DType;
import dev.topa.tensor.Tensor;
import dev.topa.tensor.TensorAllocator;
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
        limit(file, "topa_head_dim", headDim, hidden);
        for (int l = 0; l < layers; l++) {
            limit(file, "topa_heads_per_layer[" + l + "]", h[l], hidden / Math.max(1, headDim));
            limit(file, "topa_ffn_per_layer[" + l + "]", f[l], MAX_FFN);
        }
        int types = c.path("type_vocab_size").asInt(2);
        limit(file, "type_vocab_size", types, MAX_TYPES);
        double eps = c.path("layer_norm_eps").asDouble(1e-12);
        if (!(eps > 0 && eps < 1)) throw new ModelFormatException(file + ": field layer_norm_eps is " + eps + ", not in (0, 1)");
        return new BertConfig(required(file, c, "vocab_size"), hidden, required(file, c, "max_position_embeddings"), types, headDim, h, f,
                (float) eps);
    }

    // sizes a config may claim: beyond these it is not a BERT encoder this engine runs, and sizes decide allocations
    private static final int MAX_HIDDEN = 1 << 14, MAX_LAYERS = 256, MAX_VOCAB = 1 << 22, MAX_POSITIONS = 1 << 16, MAX_FFN = 1 << 17,
            MAX_TYPES = 1 << 10;

    private static int required(Path file, JsonNode c, String key) {
        JsonNode v = c.get(key);
        if (v == null || !v.canConvertToInt() || v.asInt() <= 0)
            throw new ModelFormatException(file + ": field " + key + " is missing or not a positive integer");
        int max = switch (key) {
            case "hidden_size", "num_attention_heads" -> MAX_HIDDEN;
            case "num_hidden_layers" -> MAX_LAYERS;
            case "vocab_size" -> MAX_VOCAB;
            case "max_position_embeddings" -> MAX_POSITIONS;
            default -> MAX_FFN;
        };
        limit(file, key, v.asInt(), max);
        return v.asInt();
    }

    private static void limit(Path file, String key, int value, int max) {
        if (value < 0 || value > max) throw new ModelFormatException(file + ": field " + key + " is " + value + ", over the limit of " + max);
    }

    /**
     * Every disagreement between the config and the weight files, found from the files' headers
     * before any weight is allocated: a tensor the config implies that is missing or of another
     * shape, or an encoder tensor the config does not imply (a layer or module beyond it).
     */
    private static void checkAgainstWeights(Path dir, BertConfig config, Map<String, Safetensors.Entry> entries, Map<String, Path> where) {
        Map<String, long[]> shapes = BertNames.shapes(config);
        for (var s : shapes.entrySet()) {
            String n = s.getKey();
            Safetensors.Entry e = entries.get(n);
            if (e == null && entries.containsKey(n + BSR_VALUES)) continue; // block-sparse: checked against the grid as it loads
            if (e == null) throw new ModelFormatException(dir + ": no tensor " + n + " " + Arrays.toString(s.getValue()) + " in " + shards(dir)
                    + " (config.json implies it)");
            if (!Arrays.equals(e.shape(), s.getValue()))
                throw new ModelFormatException(where.get(n) + ": tensor " + n + " is " + Arrays.toString(e.shape()) + ", config.json implies "
                        + Arrays.toString(s.getValue()));
        }
        for (String n : entries.keySet()) {
            String base = n.endsWith(BSR_VALUES) ? n.substring(0, n.length() - BSR_VALUES.length())
                    : n.endsWith(BSR_BLOCKS) ? n.substring(0, n.length() - BSR_BLOCKS.length()) : n;
            boolean encoder = base.startsWith("embeddings.") || base.startsWith("encoder.");
            if (encoder && !shapes.containsKey(base) && !base.equals("embeddings.position_ids"))
                throw new ModelFormatException(where.get(n) + ": tensor " + n + " is not part of the encoder config.json describes ("
                        + config.layers() + " layers, hidden " + config.hidden() + ")");
        }
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

    /** The tensors of a directory's shards by Hugging Face name, and the file of each (open until closed). */
    private record Tensors(Path dir, List<Safetensors> files, Map<String, Safetensors.Entry> entries, Map<String, Path> where)
            implements AutoCloseable {
        static Tensors open(Path dir, BertConfig config) {
            Tensors t = new Tensors(dir, new ArrayList<>(), new HashMap<>(), new HashMap<>());
            try {
                for (Path p : shards(dir)) {
                    Safetensors st = Safetensors.read(p);
                    t.files.add(st);
                    st.entries().forEach((k, v) -> {
                        t.entries.put(OnnxBertReader.hfName(k), v);
                        t.where.put(OnnxBertReader.hfName(k), p);
                    });
                }
                checkAgainstWeights(dir, config, t.entries, t.where);
                return t;
            } catch (RuntimeException | Error e) {
                t.close();
                throw e;
            }
        }

        /** The tensor name (its shape was checked against config.json when the shards were opened). */
        Safetensors.Entry entry(String name) {
            Safetensors.Entry e = entries.get(name);
            if (e == null) throw new ModelFormatException(dir + ": no tensor " + name + " in " + shards(dir));
            return e;
        }

        @Override
        public void close() {
            files.forEach(Safetensors::close);
        }
    }

    public static BertModel load(Path dir) {
        BertConfig config = readConfig(dir);
        try (Tensors tensors = Tensors.open(dir, config)) {
            BertModel model = new BertModel(config);
            try {
                Map<String, boolean[][]> masks = new LinkedHashMap<>();
                for (Map.Entry<String, Tensor> p : model.parameters().entrySet()) {
                    if (!tensors.entries.containsKey(p.getKey()) && tensors.entries.containsKey(p.getKey() + BSR_VALUES)) {
                        masks.put(p.getKey(), loadBlocks(dir, p.getKey(), p.getValue(), tensors.entries, tensors.where));
                        continue;
                    }
                    p.getValue().copyFrom(tensors.entry(p.getKey()).floats(tensors.where.get(p.getKey())));
                }
                if (!masks.isEmpty()) {
                    if (blockSize(dir) != BlockSparseWeight.BLOCK)
                        throw new ModelFormatException(dir.resolve("config.json") + ": block-sparse tensors need \"topa_block_size\": "
                                + BlockSparseWeight.BLOCK);
                    model.setBlockMasksByName(masks);
                }
            } catch (RuntimeException ex) {
                model.close();
                throw ex;
            }
            return model;
        }
    }

    /**
     * The dense model in dir compacted for inference on be's host as it is read (see
     * {@link BertModel#compactForInference(BertConfig, Backend, boolean, int[], BertModel.WeightReader)}):
     * the word embeddings of tokens only, with bf16 each linear weight only as its bf16 pack, so the
     * whole model is never in memory; a model beside another (a teacher beside its student) costs
     * the least it can. A block-sparse directory is refused (its blocks are scattered into a whole weight).
     */
    public static BertModel loadCompactedForInference(Path dir, Backend be, boolean bf16, int[] tokens) {
        BertConfig config = readConfig(dir);
        try (Tensors tensors = Tensors.open(dir, config)) {
            for (String n : tensors.entries.keySet())
                if (n.endsWith(BSR_VALUES))
                    throw new ModelFormatException(tensors.where.get(n) + ": tensor " + n + " is block-sparse; a model is compacted for inference"
                            + " from a dense one");
            return BertModel.compactForInference(config, be, bf16, tokens, new BertModel.WeightReader() {
                @Override
                public void read(String name, Tensor into) {
                    into.copyFrom(tensors.entry(name).floats(tensors.where.get(name)));
                }

                @Override
                public void readRows(String name, int[] rows, Tensor into) {
                    Safetensors.Entry e = tensors.entry(name);
                    for (int i = 0; i < rows.length; i++) into.rows(i, i + 1).copyFrom(e.rows(rows[i], rows[i] + 1).floats(tensors.where.get(name)));
                }
            });
        }
    }

    /** Scatters a block-sparse weight's kept blocks into w (zeros elsewhere) and returns its block mask. */
    private static boolean[][] loadBlocks(Path dir, String name, Tensor w, Map<String, Safetensors.Entry> entries, Map<String, Path> where) {
        int b = BlockSparseWeight.BLOCK;
        Safetensors.Entry values = entries.get(name + BSR_VALUES), blocks = entries.get(name + BSR_BLOCKS);
        Path file = where.get(name + BSR_VALUES);
        if (blocks == null) throw new ModelFormatException(file + ": " + name + BSR_VALUES + " without " + name + BSR_BLOCKS);
        if (w.rank() != 2 || w.dim(0) % b != 0 || w.dim(1) % b != 0)
            throw new ModelFormatException(file + ": " + name + " is " + Arrays.toString(w.shape()) + ", not a multiple of " + b
                    + " x " + b + " blocks");
        if (!blocks.dtype().equals("I32") || blocks.shape().length != 1)
            throw new ModelFormatException(file + ": " + name + BSR_BLOCKS + " must be a 1-d I32 tensor, is " + blocks.dtype() + " "
                    + Arrays.toString(blocks.shape()));
        int rows = (int) (w.dim(0) / b), cols = (int) (w.dim(1) / b);
        int[] idx = new int[(int) blocks.numel()];
        for (int i = 0; i < idx.length; i++) idx[i] = blocks.bytes().getAtIndex(java.lang.foreign.ValueLayout.JAVA_INT_UNALIGNED, i);
        if (idx.length == 1 && idx[0] == -1) idx = new int[0]; // no block kept
        long[] expect = {idx.length, b, b};
        if (!Arrays.equals(values.shape(), expect) && !(idx.length == 0 && values.numel() == 0))
            throw new ModelFormatException(file + ": " + name + BSR_VALUES + " is " + Arrays.toString(values.shape()) + ", its "
                    + idx.length + " block indices imply " + Arrays.toString(expect));
        boolean[][] mask = new boolean[rows][cols];
        float[] v = idx.length == 0 ? new float[0] : values.floats(file);
        w.fill(0f);
        for (int i = 0; i < idx.length; i++) {
            if (idx[i] < 0 || idx[i] >= rows * cols || (i > 0 && idx[i] <= idx[i - 1]))
                throw new ModelFormatException(file + ": " + name + BSR_BLOCKS + "[" + i + "] = " + idx[i]
                        + " is out of the " + rows + " x " + cols + " block grid or not increasing");
            int r = idx[i] / cols, c = idx[i] % cols;
            mask[r][c] = true;
            for (int row = 0; row < b; row++)
                java.lang.foreign.MemorySegment.copy(v, i * b * b + row * b, w.data(), java.lang.foreign.ValueLayout.JAVA_FLOAT,
                        (((long) r * b + row) * w.dim(1) + (long) c * b) * 4, b);
        }
        return mask;
    }

    private static int blockSize(Path dir) {
        try {
            return JSON.readTree(dir.resolve("config.json").toFile()).path("topa_block_size").asInt(0);
        } catch (IOException e) {
            throw new ModelFormatException(dir.resolve("config.json") + ": " + e.getMessage(), e);
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
        save(c, tensors, Map.of(), dir, null);
    }

    /** Suffixes of a block-sparse weight's two tensors: its kept blocks [kept, 32, 32] and their flat indices (row-major over the block grid). */
    public static final String BSR_VALUES = ".bsr_values", BSR_BLOCKS = ".bsr_blocks";

    /**
     * As {@link #save(BertConfig, Map, Path)}, but every weight named in blockMasks is stored as its
     * kept 32 x 32 blocks only (name + {@link #BSR_VALUES}, name + {@link #BSR_BLOCKS}; config.json
     * says "topa_block_size": 32): the file holds what the model multiplies. scratch holds the
     * gathered blocks while writing.
     */
    public static void save(BertConfig c, Map<String, Tensor> tensors, Map<String, boolean[][]> blockMasks, Path dir,
            TensorAllocator scratch) {
        if (!blockMasks.isEmpty()) {
            Map<String, Tensor> sparse = new LinkedHashMap<>();
            for (Map.Entry<String, Tensor> e : tensors.entrySet()) {
                boolean[][] m = blockMasks.get(e.getKey());
                if (m == null) {
                    sparse.put(e.getKey(), e.getValue());
                    continue;
                }
                Tensor w = e.getValue();
                int b = BlockSparseWeight.BLOCK, cols = m[0].length;
                List<Integer> kept = new ArrayList<>();
                for (int r = 0; r < m.length; r++) for (int k = 0; k < cols; k++) if (m[r][k]) kept.add(r * cols + k);
                Tensor values = scratch.allocate(DType.F32, kept.size(), b, b);
                int[] idx = new int[kept.size()];
                for (int i = 0; i < idx.length; i++) {
                    idx[i] = kept.get(i);
                    long r0 = (long) (idx[i] / cols) * b, c0 = (long) (idx[i] % cols) * b;
                    for (int row = 0; row < b; row++)
                        java.lang.foreign.MemorySegment.copy(w.data(), ((r0 + row) * w.dim(1) + c0) * 4, values.data(),
                                ((long) i * b * b + (long) row * b) * 4, b * 4L);
                }
                sparse.put(e.getKey() + BSR_VALUES, values);
                sparse.put(e.getKey() + BSR_BLOCKS, scratch.allocate(DType.I32, Math.max(1, idx.length)).copyFrom(
                        idx.length > 0 ? idx : new int[] {-1}));
            }
            tensors = sparse;
        }
        writeDirectory(c, tensors, !blockMasks.isEmpty(), dir);
    }

    private static void writeDirectory(BertConfig c, Map<String, Tensor> tensors, boolean blockSparse, Path dir) {
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
        if (blockSparse) cfg.put("topa_block_size", BlockSparseWeight.BLOCK);
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
