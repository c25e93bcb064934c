package dev.topa.train;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import dev.topa.backend.cpu.CpuBackend;
import dev.topa.glue.Example;
import dev.topa.glue.GlueTask;
import dev.topa.io.BertTokenizer;
import dev.topa.model.BertConfig;
import dev.topa.model.BertModel;
import dev.topa.model.BertTraining;
import dev.topa.model.LoraConfig;
import dev.topa.model.TaskHead;
import dev.topa.tensor.Tensor;
import java.io.InputStream;
import java.util.ArrayList;
import java.util.EnumSet;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

/**
 * topa against PyTorch: bench/reference/golden_bert.py wrote, for a tiny random BERT with a
 * mean-pooled head, the loss, every trainable gradient and the losses over 5 AdamW steps, for full
 * fine-tuning and for LoRA (float64). Each must match here to a relative error of 1e-4.
 */
class GoldenTest {
    static final double BOUND = 1e-4;
    static JsonNode golden;

    @BeforeAll
    static void load() throws Exception {
        try (InputStream in = GoldenTest.class.getResourceAsStream("/golden/bert_golden.json")) {
            assertNotNull(in, "golden/bert_golden.json: regenerate with bench/reference/golden_bert.py");
            golden = new ObjectMapper().readTree(in);
        }
    }

    static float[] floats(JsonNode t) {
        JsonNode d = t.get("data");
        float[] out = new float[d.size()];
        for (int i = 0; i < out.length; i++) out[i] = (float) d.get(i).asDouble();
        return out;
    }

    static BertConfig config() {
        JsonNode c = golden.get("config");
        int[] heads = new int[c.get("heads").size()], ffn = new int[heads.length];
        for (int i = 0; i < heads.length; i++) {
            heads[i] = c.get("heads").get(i).asInt();
            ffn[i] = c.get("ffn").get(i).asInt();
        }
        return new BertConfig(c.get("vocab").asInt(), c.get("hidden").asInt(), c.get("max_pos").asInt(), c.get("types").asInt(),
                c.get("head_dim").asInt(), heads, ffn, (float) c.get("eps").asDouble());
    }

    /** Golden name -> where that tensor lives here: q/k/v adapters are blocks of the fused QKV adapter. */
    static Map<String, Block> layout(BertModel model, Map<String, Tensor> tensors, BertConfig cfg, int rank) {
        Map<String, Block> m = new HashMap<>();
        for (var e : tensors.entrySet())
            m.put(e.getKey(), new Block(e.getValue(), 0, 0, e.getValue().dim(0), e.getValue().rank() == 1 ? 1 : e.getValue().dim(1)));
        String[] qkv = {"query", "key", "value"};
        for (int l = 0; l < cfg.layers(); l++) {
            String n = "encoder.layer." + l + ".attention.self.";
            Tensor a = tensors.get(n + "qkv.lora_A"), b = tensors.get(n + "qkv.lora_B");
            if (a == null) continue;
            int att = cfg.attentionWidth(l);
            for (int i = 0; i < 3; i++) {
                m.put(n + qkv[i] + ".lora_A", new Block(a, (long) i * rank, 0, rank, a.dim(1)));
                m.put(n + qkv[i] + ".lora_B", new Block(b, (long) i * att, (long) i * rank, att, rank));
            }
        }
        return m;
    }

    /** A rows x cols block at (r0, c0) of a matrix tensor (vectors: one row). */
    record Block(Tensor t, long r0, long c0, long rows, long cols) {
        long stride() {
            return t.rank() == 1 ? t.numel() : t.dim(1);
        }

        float[] get() {
            float[] out = new float[(int) (rows * Math.max(1, cols))];
            long c = t.rank() == 1 ? 1 : cols;
            if (t.rank() == 1) for (int i = 0; i < out.length; i++) out[i] = t.getFloat(i);
            else for (long i = 0; i < rows; i++) for (long j = 0; j < c; j++) out[(int) (i * c + j)] = t.getFloat((r0 + i) * stride() + c0 + j);
            return out;
        }

        void set(float[] v) {
            if (t.rank() == 1) {
                for (int i = 0; i < v.length; i++) t.setFloat(i, v[i]);
                return;
            }
            for (long i = 0; i < rows; i++) for (long j = 0; j < cols; j++) t.setFloat((r0 + i) * stride() + c0 + j, v[(int) (i * cols + j)]);
        }
    }

    void check(String method) {
        BertConfig cfg = config();
        JsonNode c = golden.get("config"), run = golden.get(method), params = golden.get("params");
        int rank = c.get("lora_rank").asInt();
        try (BertModel model = new BertModel(cfg); TaskHead head = new TaskHead(cfg.hidden(), 2, 1)) {
            boolean lora = method.equals("lora");
            if (lora) {
                EnumSet<LoraConfig.Target> targets = EnumSet.noneOf(LoraConfig.Target.class);
                c.get("lora_targets").forEach(t -> targets.add(LoraConfig.Target.parse(t.asText())));
                model.addLora(new LoraConfig(rank, c.get("lora_alpha").asDouble(), targets), 1);
            }
            Map<String, Tensor> all = new HashMap<>(model.parameters());
            all.putAll(head.parameters());
            Map<String, Block> where = layout(model, all, cfg, rank);
            params.fields().forEachRemaining(e -> {
                if (!lora && e.getKey().contains("lora_")) return;
                Block b = where.get(e.getKey());
                assertNotNull(b, "no tensor here for golden " + e.getKey());
                b.set(floats(e.getValue()));
            });
            try (BertTraining training = new BertTraining(model, lora ? n -> n.contains("lora_") || n.contains("LayerNorm") : n -> true);
                    Trainer trainer = new Trainer(CpuBackend.create(), model, training, head, GlueTask.SST2,
                            new Trainer.Config(1, 3, golden.get("lr").asDouble(), golden.get("weight_decay").asDouble(), 0, 0, 1))) {
                List<Trainer.Item> batch = new ArrayList<>();
                for (int i = 0; i < golden.get("batch").asInt(); i++) {
                    int len = golden.get("lengths").get(i).asInt();
                    int[] ids = new int[len], types = new int[len];
                    for (int t = 0; t < len; t++) {
                        ids[t] = golden.get("ids").get(i).get(t).asInt();
                        types[t] = golden.get("types").get(i).get(t).asInt();
                    }
                    int label = golden.get("labels").get(i).asInt();
                    batch.add(new Trainer.Item(new BertTokenizer.Encoded(ids, types), new Example("", null, label, label)));
                }
                double loss = trainer.lossAndGradients(batch);
                assertEquals(run.get("loss").asDouble(), loss, BOUND * run.get("loss").asDouble(), method + " loss");
                Map<String, Tensor> grads = new HashMap<>(training.gradients());
                grads.putAll(head.gradients());
                Map<String, Block> gwhere = layout(model, grads, cfg, rank);
                int checked = 0;
                for (var it = run.get("grads").fields(); it.hasNext();) {
                    var e = it.next();
                    Block g = gwhere.get(e.getKey());
                    assertNotNull(g, method + ": no gradient here for " + e.getKey());
                    float[] got = g.get(), want = floats(e.getValue());
                    // relative, with a float32-rounding floor for the key bias, whose true gradient is 0
                    // (softmax ignores a constant added to a row of scores)
                    double diff = 0, norm = 0;
                    for (int i = 0; i < want.length; i++) {
                        diff += (got[i] - (double) want[i]) * (got[i] - (double) want[i]);
                        norm += (double) want[i] * want[i];
                    }
                    diff = Math.sqrt(diff);
                    norm = Math.sqrt(norm);
                    assertTrue(diff <= BOUND * norm || diff <= 1e-6 * Math.sqrt(want.length), method + " gradient of " + e.getKey()
                            + ": |difference| " + diff + ", |golden| " + norm);
                    checked++;
                }
                assertTrue(checked > 10, "compared " + checked + " gradients");
                trainer.zeroGradients();
                JsonNode losses = run.get("losses");
                for (int s = 0; s < losses.size(); s++) {
                    double l = trainer.trainStep(batch, golden.get("lr").asDouble());
                    assertEquals(losses.get(s).asDouble(), l, BOUND * losses.get(s).asDouble(), method + " loss before AdamW step " + (s + 1));
                }
            }
        }
    }

    @Test
    void fullFineTuningMatchesPyTorch() {
        check("full");
    }

    @Test
    void loraMatchesPyTorch() {
        check("lora");
    }
}
