package dev.topa.harness;

import static dev.topa.harness.Check.GEMM;
import static dev.topa.harness.Check.GRAD;
import static dev.topa.harness.Check.ROW;
import static dev.topa.harness.Check.dot;
import static dev.topa.harness.Check.gradient;

import dev.topa.backend.Backend;
import dev.topa.backend.Dropout;
import dev.topa.backend.Op;
import dev.topa.tensor.Tensor;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;

/**
 * Multi-head attention over a fused QKV projection: forward with a padding mask, backward
 * recomputing the probabilities (as training runs it), the probabilities kept for backward, dropout
 * on them, and sequences packed without padding.
 */
final class AttentionOps implements OpFamily {
    @Override
    public String name() {
        return "attention";
    }

    /** {B, S, H, D, masked}. */
    private static final int[][] SHAPES = {{1, 1, 1, 1, 0}, {2, 7, 3, 4, 1}, {3, 33, 2, 8, 1}, {1, 129, 1, 7, 0}, {2, 128, 12, 64, 1},
            {2, 70, 4, 32, 1}, {3, 37, 2, 32, 1}, {1, 46, 2, 128, 1}};

    @Override
    public List<OpCase> cases() {
        List<OpCase> all = new ArrayList<>();
        for (int[] s : SHAPES) {
            all.add(attention(s, false, false));
            all.add(attention(s, true, false));
            all.add(attention(s, false, true));
        }
        all.add(packed(new int[] {5, 1, 12, 7}, 3, 8));
        all.add(packed(new int[] {64, 3, 128, 33, 1}, 2, 64));
        return all;
    }

    /** Sequence b has length seq - 3b - 1 (at least 1): real tokens first, then padding. */
    private static int[] mask(int bsz, int seq) {
        int[] mask = new int[bsz * seq];
        for (int b = 0; b < bsz; b++)
            for (int t = 0; t < seq; t++) mask[b * seq + t] = t < Math.max(1, seq - 3 * b - 1) ? 1 : 0;
        return mask;
    }

    /** Forward, then dqkv against finite differences; probs: kept by forward and read by backward; dropout on the probabilities. */
    private OpCase attention(int[] s, boolean probs, boolean dropout) {
        int bsz = s[0], seq = s[1], heads = s[2], hd = s[3];
        boolean masked = s[4] == 1;
        String name = "B=" + bsz + " S=" + seq + " H=" + heads + " D=" + hd + (masked ? " +padding" : "") + (probs ? " probs kept" : "")
                + (dropout ? " dropout 0.25" : "");
        return new OpCase(name(), name, probs ? Op.ATTENTION_PROBS : dropout ? Op.ATTENTION_DROPOUT : null, ws -> {
            Backend be = ws.backend();
            int c = heads * hd;
            float scale = (float) (1 / Math.sqrt(hd));
            Dropout drop = dropout ? new Dropout(0.25, ws.rnd().nextInt()) : Dropout.NONE;
            Tensor qkv = ws.f32(ws.uniform(bsz * seq * 3 * c, -2, 2), bsz, seq, 3 * c);
            int[] mask = masked ? mask(bsz, seq) : null;
            Tensor tmask = mask == null ? null : ws.i32(mask, bsz, seq);
            double[] qd = ws.values(qkv), refProbs = probs ? new double[bsz * heads * seq * seq] : null;
            double[] ref = Reference.attention(qd, mask, bsz, seq, heads, hd, scale, refProbs, drop);
            Tensor out = ws.poisoned(bsz, seq, c), p = probs ? ws.poisoned(bsz, heads, seq, seq) : null;
            be.attentionForward(out, p, qkv, tmask, heads, scale, drop);
            ws.close(name + " out", ref, out, ws.productBound(GEMM));
            if (p != null) ws.close(name + " probs", refProbs, p, ws.productBound(ROW));
            Tensor dout = ws.f32(ws.random(bsz * seq * c), bsz, seq, c), dqkv = ws.poisoned(bsz, seq, 3 * c);
            double[] wy = ws.values(dout);
            be.attentionBackward(dqkv, dout, p, qkv, tmask, heads, scale, drop);
            int samples = bsz * seq * c > 100_000 ? 12 : 64;
            gradient(name + " dqkv", v -> dot(wy, Reference.attention(v, mask, bsz, seq, heads, hd, scale, null, drop)), qd, ws.floats(dqkv),
                    ws.rnd(), samples, Math.max(GRAD, ws.productBound(0)));
        });
    }

    private OpCase packed(int[] lengths, int heads, int d) {
        String name = "packed " + Arrays.toString(lengths) + " H=" + heads + " D=" + d;
        return new OpCase(name(), name, ws -> {
            int c = heads * d, n = Arrays.stream(lengths).sum();
            Tensor qkv = ws.f32(ws.random(n * 3 * c), n, 3 * c), out = ws.poisoned(n, c);
            ws.backend().attentionForwardPacked(out, qkv, lengths, heads, 0.3f);
            ws.close(name, Reference.attentionPacked(ws.values(qkv), lengths, heads, d, 0.3), out, ws.productBound(ROW));
        });
    }

    @Override
    public List<OpTiming> timings(int tokens) {
        int seq = Math.min(128, tokens), batch = Math.max(1, tokens / seq), heads = 12, hd = 64, c = heads * hd;
        float scale = (float) (1 / Math.sqrt(hd));
        double flops = 4.0 * batch * heads * seq * seq * hd; // QK^T and PV
        List<OpTiming> all = new ArrayList<>();
        all.add(new OpTiming(name(), "forward B=" + batch + " S=" + seq + " H=12 D=64", ws -> {
            Tensor qkv = ws.f32(ws.random(batch * seq * 3 * c), batch, seq, 3 * c), out = ws.poisoned(batch, seq, c);
            return OpTiming.Work.flops(flops, () -> ws.backend().attentionForward(out, null, qkv, null, heads, scale));
        }));
        all.add(new OpTiming(name(), "backward B=" + batch + " S=" + seq + " H=12 D=64", ws -> {
            Tensor qkv = ws.f32(ws.random(batch * seq * 3 * c), batch, seq, 3 * c), dout = ws.f32(ws.random(batch * seq * c), batch, seq, c);
            Tensor dqkv = ws.poisoned(batch, seq, 3 * c);
            return OpTiming.Work.flops(2.5 * flops, () -> ws.backend().attentionBackward(dqkv, dout, null, qkv, null, heads, scale, Dropout.NONE));
        }));
        all.add(new OpTiming(name(), "packed " + batch + " sequences of 32 to 128", ws -> {
            int[] lengths = new int[batch];
            for (int i = 0; i < batch; i++) lengths[i] = seq / 4 + ws.rnd().nextInt(seq - seq / 4 + 1);
            int n = Arrays.stream(lengths).sum();
            double work = 0;
            for (int len : lengths) work += 4.0 * heads * len * len * hd;
            Tensor qkv = ws.f32(ws.random(n * 3 * c), n, 3 * c), out = ws.poisoned(n, c);
            return OpTiming.Work.flops(work, () -> ws.backend().attentionForwardPacked(out, qkv, lengths, heads, scale));
        }));
        return all;
    }
}
