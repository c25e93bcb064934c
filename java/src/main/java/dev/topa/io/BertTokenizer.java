package dev.topa.io;

import ai.djl.huggingface.tokenizers.Encoding;
import ai.djl.huggingface.tokenizers.HuggingFaceTokenizer;
import dev.topa.tensor.DType;
import dev.topa.tensor.Tensor;
import dev.topa.tensor.TensorAllocator;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;
import java.util.stream.IntStream;

/**
 * WordPiece tokenization through DJL's binding of Hugging Face tokenizers: single texts and pairs
 * ([CLS] A [SEP] B [SEP], type ids 0/1), truncation to maxLength (longest-first for pairs), and no
 * padding here, whatever tokenizer.json says (the default model's file fixes it at 128): batches
 * are padded to their own longest sequence by {@link #pad}, and {@link #batchesByLength} groups
 * examples of similar length so little padding is computed.
 */
public final class BertTokenizer implements AutoCloseable {
    /** One example, unpadded. */
    public record Encoded(int[] ids, int[] types) {
        public int length() {
            return ids.length;
        }
    }

    /** A padded batch: ids, types and mask [B, S] (i32), S the longest example. */
    public record Batch(Tensor ids, Tensor types, Tensor mask, int[] lengths) {}

    private final HuggingFaceTokenizer tokenizer;
    private final int maxLength;

    public BertTokenizer(Path tokenizerJson, int maxLength) {
        if (!Files.isRegularFile(tokenizerJson))
            throw new ModelFormatException(tokenizerJson + ": tokenizer file not found");
        if (maxLength < 2) throw new IllegalArgumentException("maxLength must be >= 2 (room for [CLS] and [SEP]), got " + maxLength);
        this.maxLength = maxLength;
        try {
            tokenizer = HuggingFaceTokenizer.builder().optTokenizerPath(tokenizerJson).optPadding(false).optTruncation(true)
                    .optMaxLength(maxLength).build();
        } catch (IOException | RuntimeException e) {
            throw new ModelFormatException(tokenizerJson + ": cannot load tokenizer: " + e.getMessage(), e);
        }
    }

    public int maxLength() {
        return maxLength;
    }

    /** Encodes text, or the pair (text, pair) when pair is not null. */
    public Encoded encode(String text, String pair) {
        Encoding e = pair == null ? tokenizer.encode(text) : tokenizer.encode(text, pair);
        long[] ids = e.getIds(), types = e.getTypeIds();
        int[] i = new int[ids.length], t = new int[ids.length];
        for (int k = 0; k < ids.length; k++) {
            i[k] = Math.toIntExact(ids[k]);
            t[k] = Math.toIntExact(types[k]);
        }
        return new Encoded(i, t);
    }

    /** Pads examples to the longest of them (id 0, mask 0), into tensors from alloc. */
    public static Batch pad(List<Encoded> examples, TensorAllocator alloc) {
        int b = examples.size(), s = examples.stream().mapToInt(Encoded::length).max().orElse(0);
        int[] ids = new int[b * s], types = new int[b * s], mask = new int[b * s], lengths = new int[b];
        for (int i = 0; i < b; i++) {
            Encoded e = examples.get(i);
            lengths[i] = e.length();
            System.arraycopy(e.ids(), 0, ids, i * s, e.length());
            System.arraycopy(e.types(), 0, types, i * s, e.length());
            for (int t = 0; t < e.length(); t++) mask[i * s + t] = 1;
        }
        return new Batch(alloc.allocate(DType.I32, b, s).copyFrom(ids), alloc.allocate(DType.I32, b, s).copyFrom(types),
                alloc.allocate(DType.I32, b, s).copyFrom(mask), lengths);
    }

    /** Example indices grouped into batches of up to batchSize, examples of similar length together. */
    public static List<int[]> batchesByLength(List<Encoded> examples, int batchSize) {
        int[] order = IntStream.range(0, examples.size()).boxed()
                .sorted(Comparator.comparingInt((Integer i) -> examples.get(i).length()).thenComparingInt(i -> i))
                .mapToInt(Integer::intValue).toArray();
        List<int[]> out = new ArrayList<>();
        for (int i = 0; i < order.length; i += batchSize)
            out.add(java.util.Arrays.copyOfRange(order, i, Math.min(order.length, i + batchSize)));
        return out;
    }

    @Override
    public void close() {
        tokenizer.close();
    }

}
