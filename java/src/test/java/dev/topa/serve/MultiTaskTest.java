package dev.topa.serve;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.topa.backend.cpu.CpuBackend;
import dev.topa.glue.GlueTask;
import dev.topa.io.DefaultModel;
import dev.topa.io.HfBertDirectory;
import dev.topa.io.ModelFormatException;
import dev.topa.model.BertModel;
import dev.topa.model.LoraConfig;
import dev.topa.model.TaskHead;
import dev.topa.tensor.Tensor;
import dev.topa.train.FineTunedModel;
import java.nio.file.Path;
import java.util.EnumSet;
import java.util.List;
import java.util.SplittableRandom;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

class MultiTaskTest {
    @TempDir
    static Path dir;
    static Path backbone, otherBackbone, sst2, cola, mrpc;

    @BeforeAll
    static void models() throws Exception {
        backbone = TinyModels.write(dir.resolve("backbone"), GlueTask.SST2, 1);
        otherBackbone = TinyModels.write(dir.resolve("other"), GlueTask.SST2, 99);
        sst2 = adapter(dir.resolve("sst2"), GlueTask.SST2, 2);
        cola = adapter(dir.resolve("cola"), GlueTask.COLA, 3);
        mrpc = adapter(dir.resolve("mrpc"), GlueTask.MRPC, 4);
    }

    /** A LoRA "fine-tuning" of the backbone (random adapters, changed LayerNorms): the merged model and the adapter beside it. */
    static Path adapter(Path out, GlueTask task, long seed) throws Exception {
        SplittableRandom rnd = new SplittableRandom(seed);
        try (BertModel m = HfBertDirectory.load(backbone); TaskHead head = new TaskHead(m.config().hidden(), task.numLabels(), seed)) {
            m.addLora(new LoraConfig(4, 8, EnumSet.allOf(LoraConfig.Target.class)), seed);
            for (var e : m.parameters().entrySet())
                if (e.getKey().contains("lora_B") || e.getKey().contains("LayerNorm")) {
                    Tensor t = e.getValue();
                    for (long i = 0; i < t.numel(); i++) t.setFloat(i, t.getFloat(i) + (float) (0.2 * (2 * rnd.nextDouble() - 1)));
                }
            for (int l = 0; l < m.config().layers(); l++) { // keep the fused QKV adapter's B block-diagonal, as training does
                Tensor b = m.parameter("encoder.layer." + l + ".attention.self.qkv.lora_B");
                CpuBackend.create().zeroOffDiagonal(b, 3);
            }
            Tensor w = head.parameters().get(TaskHead.WEIGHT);
            for (long i = 0; i < w.numel(); i++) w.setFloat(i, (float) (2 * rnd.nextDouble() - 1));
            FineTunedModel.save(out, CpuBackend.create(), m, head, task, DefaultModel.directory().resolve("tokenizer.json"), 128);
        }
        return out;
    }

    /** Each task's answers through its unmerged adapters on the shared backbone equal its merged model's. */
    @Test
    void adaptersOnOneBackboneAnswerAsTheMergedModels() {
        List<Classifier.Input> single = List.of(new Classifier.Input("a gripping film"), new Classifier.Input("the plot is thin"));
        List<Classifier.Input> pairs = List.of(new Classifier.Input("He left.", "He went away."), new Classifier.Input("Prices rose.", "It rained."));
        try (Classifier.MultiTask mt = Classifier.loadMultiTask(backbone, List.of(sst2, cola, mrpc), CpuBackend.create(), 1)) {
            assertEquals(List.of("sst2", "cola", "mrpc"), List.copyOf(mt.tasks().keySet()));
            Object[][] cases = {{"sst2", sst2, single}, {"cola", cola, single}, {"mrpc", mrpc, pairs}};
            for (Object[] c : cases) {
                @SuppressWarnings("unchecked")
                List<Classifier.Input> in = (List<Classifier.Input>) c[2];
                try (Classifier merged = Classifier.load((Path) c[1])) {
                    List<Classifier.Prediction> a = mt.tasks().get((String) c[0]).predictBatch(in), b = merged.predictBatch(in);
                    for (int i = 0; i < in.size(); i++)
                        for (String k : b.get(i).probabilities().keySet())
                            assertEquals(b.get(i).probabilities().get(k), a.get(i).probabilities().get(k), 1e-4, c[0] + " input " + i);
                }
            }
            // the adapters matter: the same text, two tasks, two different answers
            assertTrue(!mt.tasks().get("sst2").predict("a gripping film").probabilities().equals(
                    mt.tasks().get("cola").predict("a gripping film").probabilities()));
        }
    }

    /** With bf16 packs the adapters ride in the bf16 product (the LoRA term fused): still the merged model's answers, within bf16. */
    @Test
    void bf16BackboneWithAdaptersStaysClose() {
        List<Classifier.Input> in = List.of(new Classifier.Input("a gripping film"), new Classifier.Input("the plot is thin"));
        try (Classifier.MultiTask mt = Classifier.loadMultiTask(backbone, List.of(sst2), CpuBackend.create(), 1, Classifier.Precision.BF16);
                Classifier merged = Classifier.load(sst2)) {
            List<Classifier.Prediction> a = mt.tasks().get("sst2").predictBatch(in), b = merged.predictBatch(in);
            for (int i = 0; i < in.size(); i++)
                for (String k : b.get(i).probabilities().keySet())
                    assertEquals(b.get(i).probabilities().get(k), a.get(i).probabilities().get(k), 2e-2);
        }
    }

    @Test
    void adapterTensorsThatDoNotFitTheBackboneAreRefusedByName() {
        try (BertModel m = HfBertDirectory.load(backbone); dev.topa.tensor.TensorScope s = new dev.topa.tensor.TensorScope("t",
                dev.topa.tensor.MemoryCategory.ADAPTERS)) {
            String mod = "encoder.layer.0.intermediate.dense";
            var a = s.allocate(dev.topa.tensor.DType.F32, 4, 32);
            var wrongB = s.allocate(dev.topa.tensor.DType.F32, 63, 4); // the layer has 64 outputs
            var e = assertThrows(IllegalArgumentException.class,
                    () -> m.adapterSet(java.util.Map.of(mod + ".lora_A", a, mod + ".lora_B", wrongB), java.util.Map.of(mod, 2f)));
            assertTrue(e.getMessage().contains(mod) && e.getMessage().contains("do not fit"), e.getMessage());
            var e2 = assertThrows(IllegalArgumentException.class, () -> m.adapterSet(java.util.Map.of("encoder.layer.0.no.such", a), java.util.Map.of()));
            assertTrue(e2.getMessage().contains("no such parameter"), e2.getMessage());
            var e3 = assertThrows(IllegalArgumentException.class, () -> m.adapterSet(java.util.Map.of(mod + ".lora_A", a), java.util.Map.of()));
            assertTrue(e3.getMessage().contains("lora_B or its scale is missing"), e3.getMessage());
        }
        ModelFormatException e4 = assertThrows(ModelFormatException.class,
                () -> Classifier.loadMultiTask(backbone, List.of(backbone), CpuBackend.create(), 1).close());
        assertTrue(e4.getMessage().contains("no adapter.safetensors"), e4.getMessage());
    }

    @Test
    void anAdapterOfAnotherBackboneIsRefused() {
        ModelFormatException e = assertThrows(ModelFormatException.class,
                () -> Classifier.loadMultiTask(otherBackbone, List.of(sst2), CpuBackend.create(), 1).close());
        assertTrue(e.getMessage().contains("trained on backbone") && e.getMessage().contains("adapter.safetensors"), e.getMessage());
    }
}
