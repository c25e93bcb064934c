package dev.topa.model;

import java.util.EnumSet;
import java.util.Locale;
import java.util.Set;

/**
 * LoRA hyper-parameters: rank r, alpha (scale = alpha / r), targets, and dropout on the adapter's
 * input (PEFT's lora_dropout; 0 keeps the fused one-GEMM path in backward too). On the fused
 * query/key/value slot one mask serves all three adapters (PEFT draws one per module).
 */
public record LoraConfig(int rank, double alpha, Set<Target> targets, double dropout, java.util.List<Integer> layerRanks) {
    /** The linear layers an adapter can sit on, by their Hugging Face module names. */
    public enum Target {
        QUERY(BertNames.Module.QUERY), KEY(BertNames.Module.KEY), VALUE(BertNames.Module.VALUE),
        ATTENTION_OUTPUT(BertNames.Module.ATTENTION_OUTPUT), FFN_IN(BertNames.Module.FFN_IN), FFN_OUT(BertNames.Module.FFN_OUT);

        private final BertNames.Module module;

        Target(BertNames.Module module) {
            this.module = module;
        }

        public BertNames.Module module() {
            return module;
        }

        /** "query", "key", "value", "attention.output" / "dense", "intermediate" / "ffn-in", "output" / "ffn-out". */
        public static Target parse(String s) {
            return switch (s.toLowerCase(Locale.ROOT)) {
                case "query", "q" -> QUERY;
                case "key", "k" -> KEY;
                case "value", "v" -> VALUE;
                case "attention.output", "attention-output", "dense", "o" -> ATTENTION_OUTPUT;
                case "intermediate", "ffn-in", "ffn_in" -> FFN_IN;
                case "output", "ffn-out", "ffn_out" -> FFN_OUT;
                default -> throw new IllegalArgumentException("unknown LoRA target '" + s
                        + "'; one of query, key, value, attention.output, intermediate, output");
            };
        }
    }

    public LoraConfig(int rank, double alpha, Set<Target> targets) {
        this(rank, alpha, targets, 0);
    }

    public LoraConfig(int rank, double alpha, Set<Target> targets, double dropout) {
        this(rank, alpha, targets, dropout, java.util.List.of());
    }

    public LoraConfig {
        layerRanks = java.util.List.copyOf(layerRanks);
        for (int r : layerRanks) if (r < 1) throw new IllegalArgumentException("LoRA layer ranks must be >= 1, got " + layerRanks);
        if (!(dropout >= 0 && dropout < 1)) throw new IllegalArgumentException("LoRA dropout must be in [0, 1), got " + dropout);
        if (rank < 1) throw new IllegalArgumentException("LoRA rank must be >= 1, got " + rank);
        if (!(alpha > 0)) throw new IllegalArgumentException("LoRA alpha must be > 0, got " + alpha);
        if (targets.isEmpty()) throw new IllegalArgumentException("LoRA needs at least one target");
        targets = Set.copyOf(EnumSet.copyOf(targets));
    }

    public float scale() {
        return (float) (alpha / rank);
    }

    /** The rank of a layer's adapters: its own where layerRanks gives one (empty: rank everywhere). */
    public int rank(int layer) {
        return layerRanks.isEmpty() ? rank : layerRanks.get(layer);
    }

    /** alpha / rank(layer). */
    public float scale(int layer) {
        return (float) (alpha / rank(layer));
    }
}
