package dev.topa.train;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import dev.topa.glue.GlueTask;
import dev.topa.glue.Metric;
import dev.topa.tensor.Device;
import dev.topa.tensor.MemoryTracker;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

class TrainingReportTest {
    private static Trainer.EpochResult eval(int epoch, double accuracy) {
        return new Trainer.EpochResult(epoch, 10L * epoch, true, 0.5, Map.of(Metric.ACCURACY, accuracy), 1.0);
    }

    @Test
    void theBestIsTheSavedEvaluationNotTheHighest(@TempDir Path dir) throws Exception {
        // epoch 2 scored highest but its model was never saved (gradual pruning's ramp); epoch 3's was
        List<Trainer.EpochResult> evals = List.of(eval(1, 0.55), eval(2, 0.71), eval(3, 0.62), eval(4, 0.60));
        TrainingLoop.Outcome outcome = new TrainingLoop.Outcome(evals, List.of(0.7, 0.6), 0.62, 2);
        TrainingReport.write(dir, GlueTask.RTE, Recipe.defaults(GlueTask.RTE, Recipe.Method.LORA), "test model", 10, 100, 32, 277, outcome,
                MemoryTracker.of(Device.CPU));
        JsonNode report = new ObjectMapper().readTree(dir.resolve("report.json").toFile()), best = report.get("best");
        assertEquals(32, report.get("train_examples").asInt());
        assertEquals(277, report.get("dev_examples").asInt());
        assertEquals(3, best.get("epoch").asInt(), best.toString());
        assertEquals(0.62, best.get("accuracy").asDouble(), best.toString());
    }

    @Test
    void noSavedEvaluationMeansNoBest(@TempDir Path dir) throws Exception {
        TrainingLoop.Outcome outcome = new TrainingLoop.Outcome(List.of(eval(1, 0.71)), List.of(0.7), Double.NEGATIVE_INFINITY, -1);
        TrainingReport.write(dir, GlueTask.RTE, Recipe.defaults(GlueTask.RTE, Recipe.Method.LORA), "test model", 10, 100, 32, 277, outcome,
                MemoryTracker.of(Device.CPU));
        assertFalse(new ObjectMapper().readTree(dir.resolve("report.json").toFile()).has("best"));
    }

    @Test
    void anOlderCheckpointWithoutBestIndexPointsAtTheFirstEvaluationThatReachedItsBest() {
        String history = "{\"results\":[{\"epoch\":1,\"step\":10,\"end_of_epoch\":true,\"train_loss\":0.5,\"dev\":{\"ACCURACY\":0.6},\"seconds\":1},"
                + "{\"epoch\":2,\"step\":20,\"end_of_epoch\":true,\"train_loss\":0.4,\"dev\":{\"ACCURACY\":0.65},\"seconds\":1},"
                + "{\"epoch\":3,\"step\":30,\"end_of_epoch\":true,\"train_loss\":0.3,\"dev\":{\"ACCURACY\":0.65},\"seconds\":1}],\"step_loss\":[0.5]}";
        TrainingLoop.Outcome o = TrainingLoop.resumed(Map.of("best_dev", "0.65", "history", history));
        assertEquals(1, o.bestIndex());
        assertEquals(2, o.bestResult().epoch());
        assertEquals(2, TrainingLoop.resumed(Map.of("best_dev", "0.65", "best_index", "2", "history", history)).bestIndex());
    }
}
