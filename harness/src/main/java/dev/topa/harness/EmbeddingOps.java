package dev.topa.harness;

import static dev.topa.harness.Check.EXACT;
import static dev.topa.harness.Check.GRAD;
import static dev.topa.harness.Check.dot;
import static dev.topa.harness.Check.gradient;
import static dev.topa.harness.Check.minus;

import dev.topa.backend.Op;
import dev.topa.tensor.Tensor;
import java.util.ArrayList;
import java.util.List;

/** Token + position + type embeddings (ids gathered, explicit positions where the backend takes them) and the scatter-add backward. */
final class EmbeddingOps implements OpFamily {
    @Override
    public String name() {
        return "embedding";
    }

    @Override
    public List<OpCase> cases() {
        List<OpCase> all = new ArrayList<>();
        // {B, S, C, vocab, positions, types, explicit position ids?}
        for (int[] c : new int[][] {{1, 1, 1, 3, 1, 1, 0}, {2, 7, 33, 11, 9, 2, 1}, {4, 128, 384, 1000, 512, 2, 0}, {3, 5, 8, 4, 6, 0, 0},
                {2, 7, 33, 11, 9, 2, 0}})
            all.add(embedding(c));
        return all;
    }

    private OpCase embedding(int[] cs) {
        int bsz = cs[0], seq = cs[1], c = cs[2], vocab = cs[3], npos = cs[4], ntypes = cs[5];
        boolean explicitPos = cs[6] == 1;
        String name = "B=" + bsz + " S=" + seq + " C=" + c + " vocab=" + vocab + (ntypes == 0 ? " no types" : "") + (explicitPos ? " +position ids" : "");
        return new OpCase(name(), name, explicitPos ? Op.POSITION_IDS : null, ws -> {
            int n = bsz * seq;
            int[] ids = ws.rnd().ints(n, 0, vocab).toArray(); // n > vocab or birthday repeats test the scatter-add
            int[] pos = explicitPos ? ws.rnd().ints(n, 0, npos).toArray() : null, types = ntypes == 0 ? null : ws.rnd().ints(n, 0, ntypes).toArray();
            Tensor tids = ws.i32(ids, bsz, seq), tpos = pos == null ? null : ws.i32(pos, bsz, seq), ttypes = types == null ? null : ws.i32(types, bsz, seq);
            Tensor wte = ws.f32(ws.random(vocab * c), vocab, c), wpe = ws.f32(ws.random(npos * c), npos, c);
            Tensor wtt = ntypes == 0 ? null : ws.f32(ws.random(ntypes * c), ntypes, c);
            double[] te = ws.values(wte), pe = ws.values(wpe), tt = wtt == null ? null : ws.values(wtt);
            Tensor out = ws.poisoned(bsz, seq, c);
            ws.backend().embeddingForward(out, tids, tpos, ttypes, wte, wpe, wtt);
            ws.close(name, Reference.embedding(ids, pos, types, te, pe, tt, seq, c), out, EXACT);
            Tensor dout = ws.f32(ws.random(n * c), bsz, seq, c);
            double[] wy = ws.values(dout);
            Tensor dwte = ws.f32(ws.random(vocab * c), vocab, c), dwpe = ws.f32(ws.random(npos * c), npos, c);
            Tensor dwtt = ntypes == 0 ? null : ws.f32(ws.random(ntypes * c), ntypes, c);
            double[] g0 = ws.values(dwte), p0 = ws.values(dwpe), y0 = dwtt == null ? null : ws.values(dwtt);
            ws.backend().embeddingBackward(dwte, dwpe, dwtt, dout, tids, tpos, ttypes, wte, wpe, wtt);
            gradient(name + " dwte (+=)", v -> dot(wy, Reference.embedding(ids, pos, types, v, pe, tt, seq, c)), te, minus(ws.floats(dwte), g0),
                    ws.rnd(), 64, GRAD);
            gradient(name + " dwpe (+=)", v -> dot(wy, Reference.embedding(ids, pos, types, te, v, tt, seq, c)), pe, minus(ws.floats(dwpe), p0),
                    ws.rnd(), 64, GRAD);
            if (dwtt != null)
                gradient(name + " dwtt (+=)", v -> dot(wy, Reference.embedding(ids, pos, types, te, pe, v, seq, c)), tt,
                        minus(ws.floats(dwtt), y0), ws.rnd(), 64, GRAD);
        });
    }

    @Override
    public List<OpTiming> timings(int tokens) {
        int seq = Math.min(128, tokens), batch = Math.max(1, tokens / seq), c = 768, vocab = 30522;
        return List.of(new OpTiming(name(), "forward " + batch + "x" + seq + "x" + c, ws -> {
            Tensor ids = ws.i32(ws.rnd().ints(batch * seq, 0, vocab).toArray(), batch, seq), out = ws.poisoned(batch, seq, c);
            Tensor wte = ws.f32(ws.random(vocab * c), vocab, c), wpe = ws.f32(ws.random(512 * c), 512, c), wtt = ws.f32(ws.random(2 * c), 2, c);
            return OpTiming.Work.bytes(4.0 * batch * seq * c * 4, () -> ws.backend().embeddingForward(out, ids, null, null, wte, wpe, wtt));
        }));
    }
}
