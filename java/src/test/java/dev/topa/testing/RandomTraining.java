package dev.topa.testing;

import dev.topa.glue.Example;
import dev.topa.io.BertTokenizer;
import dev.topa.model.BertModel;
import dev.topa.train.Trainer;
import java.util.ArrayList;
import java.util.List;
import java.util.SplittableRandom;

/** Random weights and random training items for the trainer's tests (seeded: the same draw every run). */
public final class RandomTraining {
    private RandomTraining() {}

    /** Every parameter of model uniform in [-scale, scale]. */
    public static void randomize(BertModel model, SplittableRandom rnd, double scale) {
        for (var t : model.parameters().values()) {
            float[] v = new float[(int) t.numel()];
            for (int i = 0; i < v.length; i++) v[i] = (float) (scale * (2 * rnd.nextDouble() - 1));
            t.copyFrom(v);
        }
    }

    /** n items of minLen .. minLen + spread - 1 token ids below vocab, a random 0/1 label and a score in [0, 1). */
    public static List<Trainer.Item> items(SplittableRandom rnd, int n, int vocab, int minLen, int spread) {
        List<Trainer.Item> items = new ArrayList<>();
        for (int i = 0; i < n; i++) {
            int len = minLen + rnd.nextInt(spread);
            int[] ids = new int[len], types = new int[len];
            for (int t = 0; t < len; t++) ids[t] = rnd.nextInt(vocab);
            items.add(new Trainer.Item(new BertTokenizer.Encoded(ids, types), new Example("a", "b", rnd.nextInt(2), (float) rnd.nextDouble())));
        }
        return items;
    }
}
