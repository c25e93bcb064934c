package dev.topa.serve;

import dev.topa.backend.cpu.CpuBackend;
import dev.topa.glue.GlueTask;
import dev.topa.io.DefaultModel;
import dev.topa.model.BertConfig;
import dev.topa.model.BertModel;
import dev.topa.model.TaskHead;
import dev.topa.tensor.Tensor;
import dev.topa.train.FineTunedModel;
import java.nio.file.Path;
import java.util.SplittableRandom;

/** Small random-weight models in the fine-tuned format (the default model's tokenizer, its vocabulary): fast serving tests. */
public final class TinyModels {
    private TinyModels() {}

    public static Path write(Path dir, GlueTask task, long seed) throws java.io.IOException {
        BertConfig cfg = BertConfig.uniform(30522, 32, 1, 2, 64, 128, 2, 1e-12f);
        SplittableRandom rnd = new SplittableRandom(seed);
        try (BertModel m = new BertModel(cfg); TaskHead head = new TaskHead(cfg.hidden(), task.isRegression() ? 1 : task.numLabels(), seed)) {
            for (var e : m.parameters().entrySet()) {
                Tensor t = e.getValue();
                float[] v = new float[(int) t.numel()];
                boolean gamma = e.getKey().endsWith("LayerNorm.weight");
                for (int i = 0; i < v.length; i++) v[i] = (float) ((gamma ? 1 : 0) + 0.1 * (2 * rnd.nextDouble() - 1));
                t.copyFrom(v);
            }
            float[] w = new float[(int) head.parameters().get(TaskHead.WEIGHT).numel()];
            for (int i = 0; i < w.length; i++) w[i] = (float) (2 * rnd.nextDouble() - 1); // large enough that labels differ between inputs
            head.parameters().get(TaskHead.WEIGHT).copyFrom(w);
            FineTunedModel.save(dir, CpuBackend.create(), m, head, task, DefaultModel.directory().resolve("tokenizer.json"), 128);
        }
        return dir;
    }
}
