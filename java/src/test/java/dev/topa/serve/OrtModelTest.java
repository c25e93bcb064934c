package dev.topa.serve;

import static org.junit.jupiter.api.Assertions.assertEquals;

import dev.topa.glue.GlueTask;
import dev.topa.io.DefaultModel;
import dev.topa.train.FineTunedModel;
import java.nio.file.Path;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

class OrtModelTest {
    /** The baseline engine computes what topa's Classifier computes for the same dense model (the default one with a head). */
    @Test
    void theBaselineAgreesWithTopa(@TempDir Path dir) throws Exception {
        Path model = dir.resolve("sst2");
        try (var m = dev.topa.io.OnnxBertReader.load(DefaultModel.directory().resolve("model.onnx"));
                var head = new dev.topa.model.TaskHead(m.config().hidden(), 2, 9)) {
            FineTunedModel.save(model, dev.topa.backend.cpu.CpuBackend.create(), m, head, GlueTask.SST2,
                    DefaultModel.directory().resolve("tokenizer.json"), 128);
        }
        List<Classifier.Input> in = List.of(new Classifier.Input("a gripping film"), new Classifier.Input("the plot is thin and the jokes fall flat"));
        try (Classifier topa = Classifier.load(model); OrtModel ort = new OrtModel(DefaultModel.directory().resolve("model.onnx"), model, 2)) {
            List<Classifier.Prediction> a = topa.predictBatch(in), b = ort.predictBatch(in);
            for (int i = 0; i < in.size(); i++) {
                assertEquals(a.get(i).label(), b.get(i).label());
                for (String k : a.get(i).probabilities().keySet())
                    assertEquals(a.get(i).probabilities().get(k), b.get(i).probabilities().get(k), 1e-4);
            }
        }
    }
}
