package dev.topa.train;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import dev.topa.glue.GlueTask;
import dev.topa.glue.Metric;
import dev.topa.io.OutputDirectory;
import dev.topa.io.Safetensors;
import dev.topa.model.BertConfig;
import dev.topa.model.BertModel;
import dev.topa.model.TaskHead;
import dev.topa.tensor.DType;
import dev.topa.tensor.MemoryCategory;
import dev.topa.tensor.Tensor;
import dev.topa.tensor.TensorScope;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;

/**
 * What bench/reference/glue_finetune.py needs to replay a fine-tuning run in PyTorch exactly:
 * recipe.json (hyper-parameters, task, model shape), init.safetensors (every parameter as topa
 * starts: pretrained encoder, fresh head, fresh LoRA factors under topa's names) and
 * data.safetensors (tokenized train and dev sets, targets, and each epoch's example order). With
 * the counter-based dropout masks, both engines then compute the same run.
 */
public final class RecipeExport {
    private RecipeExport() {}

    public static void write(Path dir, GlueTask task, Recipe recipe, BertModel model, TaskHead head, List<Trainer.Item> train,
            List<Trainer.Item> dev) throws IOException {
        Files.createDirectories(dir);
        ObjectMapper json = new ObjectMapper();
        ObjectNode r = json.createObjectNode();
        r.set("recipe", json.valueToTree(recipe.describe()));
        r.put("task", task.folder());
        r.put("regression", task.isRegression());
        r.put("num_labels", task.numLabels());
        r.put("main_metric", task.mainMetric().name().toLowerCase(Locale.ROOT));
        r.set("metrics", json.valueToTree(task.metrics().stream().map(m -> m.name().toLowerCase(Locale.ROOT)).toList()));
        BertConfig c = model.config();
        ObjectNode mc = r.putObject("model");
        mc.put("hidden", c.hidden());
        mc.put("layers", c.layers());
        mc.put("head_dim", c.headDim());
        mc.put("eps", c.layerNormEps());
        mc.set("heads", json.valueToTree(java.util.stream.IntStream.range(0, c.layers()).map(c::heads).toArray()));
        mc.set("ffn", json.valueToTree(java.util.stream.IntStream.range(0, c.layers()).map(c::ffn).toArray()));
        r.put("lora_scale", recipe.method() == Recipe.Method.LORA ? recipe.loraConfig().scale() : 0.0);
        OutputDirectory.writeFile(dir.resolve("recipe.json"), json.writerWithDefaultPrettyPrinter().writeValueAsBytes(r));

        Map<String, Tensor> init = new LinkedHashMap<>(model.parameters());
        init.putAll(head.parameters());
        Safetensors.write(dir.resolve("init.safetensors"), init, Map.of("format", "topa-recipe-init"));

        try (TensorScope scope = new TensorScope("recipe export", MemoryCategory.ACTIVATIONS)) {
            Map<String, Tensor> data = new LinkedHashMap<>();
            split(scope, data, "train", train, task);
            split(scope, data, "dev", dev, task);
            int n = train.size();
            int[] order = new int[recipe.epochs() * n];
            for (int e = 1; e <= recipe.epochs(); e++)
                System.arraycopy(Trainer.epochOrder(n, recipe.seed(), e), 0, order, (e - 1) * n, n);
            data.put("order", scope.allocate(DType.I32, recipe.epochs(), n).copyFrom(order));
            Safetensors.write(dir.resolve("data.safetensors"), data, Map.of("format", "topa-recipe-data"));
        }
    }

    /** name_ids / name_types (flat tokens), name_offsets [n + 1], name_labels (i32) or name_scores (f32). */
    private static void split(TensorScope scope, Map<String, Tensor> out, String name, List<Trainer.Item> items, GlueTask task) {
        int total = items.stream().mapToInt(i -> i.tokens().ids().length).sum();
        int[] ids = new int[total], types = new int[total], offsets = new int[items.size() + 1], labels = new int[items.size()];
        float[] scores = new float[items.size()];
        int at = 0;
        for (int i = 0; i < items.size(); i++) {
            int[] t = items.get(i).tokens().ids();
            System.arraycopy(t, 0, ids, at, t.length);
            System.arraycopy(items.get(i).tokens().types(), 0, types, at, t.length);
            at += t.length;
            offsets[i + 1] = at;
            labels[i] = items.get(i).example().label();
            scores[i] = items.get(i).example().score();
        }
        out.put(name + "_ids", scope.allocate(DType.I32, total).copyFrom(ids));
        out.put(name + "_types", scope.allocate(DType.I32, total).copyFrom(types));
        out.put(name + "_offsets", scope.allocate(DType.I32, items.size() + 1).copyFrom(offsets));
        if (task.isRegression()) out.put(name + "_scores", scope.allocate(DType.F32, items.size()).copyFrom(scores));
        else out.put(name + "_labels", scope.allocate(DType.I32, items.size()).copyFrom(labels));
    }
}
