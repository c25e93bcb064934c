package dev.topa.model;

import java.util.LinkedHashMap;
import java.util.Locale;
import java.util.Map;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * The one table of BERT parameter names (Hugging Face's, without the "bert." prefix): every name
 * the engine reads, writes or matches is built or parsed here.
 */
public final class BertNames {
    private BertNames() {}

    public static final String WORD_EMBEDDINGS = "embeddings.word_embeddings.weight";
    public static final String POSITION_EMBEDDINGS = "embeddings.position_embeddings.weight";
    public static final String TYPE_EMBEDDINGS = "embeddings.token_type_embeddings.weight";
    /** The embeddings' LayerNorm module (".weight" and ".bias" follow). */
    public static final String EMBEDDINGS_NORM = "embeddings.LayerNorm";
    public static final String WEIGHT = "weight", BIAS = "bias", LORA_A = "lora_A", LORA_B = "lora_B";

    /** The modules of an encoder layer, by their path under "encoder.layer.L.". */
    public enum Module {
        QUERY("attention.self.query"), KEY("attention.self.key"), VALUE("attention.self.value"),
        /** The fused query/key/value projection: its adapter's tensors carry this name (the weights are q, k and v). */
        QKV("attention.self.qkv"),
        ATTENTION_OUTPUT("attention.output.dense"), ATTENTION_NORM("attention.output.LayerNorm"),
        FFN_IN("intermediate.dense"), FFN_OUT("output.dense"), OUTPUT_NORM("output.LayerNorm");

        private final String path;

        Module(String path) {
            this.path = path;
        }

        public String path() {
            return path;
        }
    }

    /** The four linear slots of a layer in forward order; QKV is the fused [3A, C] projection. */
    public enum Slot {
        QKV(Module.QKV), ATTENTION_OUTPUT(Module.ATTENTION_OUTPUT), FFN_IN(Module.FFN_IN), FFN_OUT(Module.FFN_OUT);

        private final Module module;

        Slot(Module module) {
            this.module = module;
        }

        public Module module() {
            return module;
        }

        public String label() {
            return name().toLowerCase(Locale.ROOT).replace('_', '-');
        }
    }

    /**
     * Every parameter of a BERT encoder of this config with its shape, in {@link BertModel#parameters}
     * order, without allocating anything: what a weight file is checked against before a model is made.
     */
    public static Map<String, long[]> shapes(BertConfig config) {
        Map<String, long[]> m = new LinkedHashMap<>();
        long c = config.hidden();
        m.put(WORD_EMBEDDINGS, new long[] {config.vocabSize(), c});
        m.put(POSITION_EMBEDDINGS, new long[] {config.maxPositions(), c});
        if (config.typeVocabSize() > 0) m.put(TYPE_EMBEDDINGS, new long[] {config.typeVocabSize(), c});
        m.put(EMBEDDINGS_NORM + "." + WEIGHT, new long[] {c});
        m.put(EMBEDDINGS_NORM + "." + BIAS, new long[] {c});
        for (int l = 0; l < config.layers(); l++) {
            long a = config.attentionWidth(l), f = config.ffn(l);
            for (Module q : QKV_PARTS) {
                m.put(of(l, q, WEIGHT), new long[] {a, c});
                m.put(of(l, q, BIAS), new long[] {a});
            }
            long[][] linear = {{c, a}, {f, c}, {c, f}};
            Module[] modules = {Module.ATTENTION_OUTPUT, Module.FFN_IN, Module.FFN_OUT};
            for (int i = 0; i < 3; i++) {
                m.put(of(l, modules[i], WEIGHT), linear[i]);
                m.put(of(l, modules[i], BIAS), new long[] {linear[i][0]});
                if (i == 0) for (String t : new String[] {WEIGHT, BIAS}) m.put(of(l, Module.ATTENTION_NORM, t), new long[] {c});
            }
            for (String t : new String[] {WEIGHT, BIAS}) m.put(of(l, Module.OUTPUT_NORM, t), new long[] {c});
        }
        return m;
    }

    /** q, k, v in the fused projection's row order. */
    public static final Module[] QKV_PARTS = {Module.QUERY, Module.KEY, Module.VALUE};

    /** "encoder.layer.L." */
    public static String layer(int layer) {
        return "encoder.layer." + layer + ".";
    }

    /** "encoder.layer.L.<module>" */
    public static String module(int layer, Module module) {
        return layer(layer) + module.path;
    }

    /** "encoder.layer.L.<module>.<tensor>" (tensor: weight, bias, lora_A, lora_B). */
    public static String of(int layer, Module module, String tensor) {
        return module(layer, module) + "." + tensor;
    }

    /** A linear slot's module name (the fused QKV one as attention.self.qkv). */
    public static String slot(int layer, Slot slot) {
        return module(layer, slot.module());
    }

    public static boolean isNorm(String name) {
        return name.contains("LayerNorm");
    }

    public static boolean isAdapter(String name) {
        return name.endsWith("." + LORA_A) || name.endsWith("." + LORA_B);
    }

    public static boolean isBias(String name) {
        return name.endsWith(BIAS);
    }

    public static boolean isEmbedding(String name) {
        return name.startsWith("embeddings.");
    }

    /** An encoder layer's parameter: its layer, module and tensor. */
    public record Parsed(int layer, Module module, String tensor) {}

    private static final Pattern LAYER_NAME = Pattern.compile("encoder\\.layer\\.(\\d+)\\.(.+)\\.([A-Za-z_]+)");

    /** The encoder layer a parameter belongs to ("encoder.layer.L. ..."), or -1 for any other name. */
    public static int layerOf(String name) {
        Matcher m = LAYER_NAME.matcher(name);
        return m.matches() ? Integer.parseInt(m.group(1)) : -1;
    }

    /** The parts of an encoder layer's parameter name, or null for any other name. */
    public static Parsed parse(String name) {
        Matcher m = LAYER_NAME.matcher(name);
        if (!m.matches()) return null;
        for (Module mod : Module.values())
            if (mod.path.equals(m.group(2))) return new Parsed(Integer.parseInt(m.group(1)), mod, m.group(3));
        return null;
    }
}
