package dev.topa.kit;

import dev.topa.io.DefaultModel;
import dev.topa.io.HfBertDirectory;
import dev.topa.model.BertConfig;
import dev.topa.model.BertModel;
import dev.topa.tensor.Tensor;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.util.SplittableRandom;

/**
 * The model the kit's command-line stage trains on the GPU: a small random BERT (2 layers, hidden
 * 64, 2 heads of 32, so attention takes the tensor-core path) as a Hugging Face directory, with the
 * default model's tokenizer.json, small enough to carry. Written here, at kit build time, where the
 * default model's artifact is on the class path: {@code TinyBert DIR}.
 */
public final class TinyBert {
    private TinyBert() {}

    public static void main(String[] args) throws Exception {
        Path dir = Path.of(args[0]);
        Files.createDirectories(dir);
        BertConfig config = BertConfig.uniform(30522, 64, 2, 2, 256, 512, 2, 1e-12f);
        SplittableRandom rnd = new SplittableRandom(2026);
        try (BertModel model = new BertModel(config)) {
            for (var e : model.parameters().entrySet()) {
                Tensor t = e.getValue();
                float[] v = new float[(int) t.numel()];
                boolean gamma = e.getKey().endsWith("LayerNorm.weight");
                for (int i = 0; i < v.length; i++) v[i] = gamma ? 1f : (float) (0.04 * (2 * rnd.nextDouble() - 1));
                t.copyFrom(v);
            }
            HfBertDirectory.save(model, dir);
        }
        Files.copy(DefaultModel.directory().resolve("tokenizer.json"), dir.resolve("tokenizer.json"), StandardCopyOption.REPLACE_EXISTING);
        System.out.println("tiny bert: " + dir);
    }
}
