package dev.topa.io;

import dev.topa.io.BertTokenizer;
import dev.topa.tensor.DType;
import dev.topa.tensor.Tensor;
import dev.topa.tensor.TensorScope;
import java.util.SplittableRandom;

/** Random token input for checks and benchmarks: sequences of random ids, segment 1 from their middle on. */
public final class RandomTokens {
    private RandomTokens() {}

    /** One sequence of len random ids below vocab. */
    public static BertTokenizer.Encoded sequence(SplittableRandom rnd, int vocab, int len) {
        int[] ids = new int[len], types = new int[len];
        for (int t = 0; t < len; t++) {
            ids[t] = rnd.nextInt(vocab);
            types[t] = t < len / 2 ? 0 : 1;
        }
        return new BertTokenizer.Encoded(ids, types);
    }

    /** ids, types, mask [batch, seq] i32 on the host; with padding, every sequence but the first is shorter. */
    public static Tensor[] batch(SplittableRandom rnd, TensorScope s, int vocab, int batch, int seq, boolean padding) {
        int[] ids = new int[batch * seq], types = new int[batch * seq], mask = new int[batch * seq];
        for (int b = 0; b < batch; b++) {
            int real = !padding || b == 0 ? seq : 2 + rnd.nextInt(seq - 1);
            for (int t = 0; t < seq; t++) {
                ids[b * seq + t] = rnd.nextInt(vocab);
                types[b * seq + t] = t < real / 2 ? 0 : 1;
                mask[b * seq + t] = t < real ? 1 : 0;
            }
        }
        return new Tensor[] {s.allocate(DType.I32, batch, seq).copyFrom(ids), s.allocate(DType.I32, batch, seq).copyFrom(types),
                s.allocate(DType.I32, batch, seq).copyFrom(mask)};
    }
}
