package dev.topa.train;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import dev.topa.glue.GlueTask;
import dev.topa.glue.Metric;
import dev.topa.io.OutputDirectory;
import dev.topa.tensor.MemoryCategory;
import dev.topa.tensor.MemoryTracker;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.List;
import java.util.Locale;
import java.util.Map;

/** report.json and report.md of a fine-tuning run: the examples, metrics per epoch, the best (the saved model's), parameters, memory. */
public final class TrainingReport {
    private TrainingReport() {}

    public static void write(Path dir, GlueTask task, Recipe recipe, String model, long trainable, long total, int trainExamples, int devExamples,
            TrainingLoop.Outcome outcome, MemoryTracker memory) throws IOException {
        List<Trainer.EpochResult> epochs = outcome.results();
        String method = recipe.method().label();
        ObjectMapper json = new ObjectMapper();
        ObjectNode r = json.createObjectNode();
        r.put("task", task.folder());
        r.put("method", method);
        r.put("main_metric", task.mainMetric().name().toLowerCase(Locale.ROOT));
        r.set("recipe", json.valueToTree(recipe.describe()));
        r.put("model", model);
        r.put("trainable_parameters", trainable);
        r.put("total_parameters", total);
        r.put("train_examples", trainExamples);
        r.put("dev_examples", devExamples); // the dev metrics are over these (all of the split unless --dev-limit)
        ArrayNode ep = r.putArray("epochs");
        for (Trainer.EpochResult e : epochs) {
            ObjectNode n = ep.addObject();
            n.put("epoch", e.epoch());
            n.put("step", e.step());
            n.put("train_loss", e.trainLoss());
            n.put("seconds", e.seconds());
            ObjectNode d = n.putObject("dev");
            e.dev().forEach((k, v) -> d.put(k.name().toLowerCase(Locale.ROOT), v));
        }
        Trainer.EpochResult best = outcome.bestResult(); // the saved model's evaluation
        if (best != null) {
            ObjectNode b = r.putObject("best");
            b.put("epoch", best.epoch());
            b.put("step", best.step());
            best.dev().forEach((k, v) -> b.put(k.name().toLowerCase(Locale.ROOT), v));
        }
        ObjectNode mem = r.putObject("memory_" + memory.device());
        for (Map.Entry<MemoryCategory, long[]> e : memory.snapshot().entrySet())
            mem.putObject(e.getKey().label()).put("live", e.getValue()[0]).put("peak", e.getValue()[1]);
        mem.put("total_peak", memory.totalPeak());
        ObjectNode byPhase = mem.putObject("phase_peaks"); // which part of the run set the peak
        memory.phasePeaks().forEach(byPhase::put);
        OutputDirectory.writeFile(dir.resolve("report.json"), json.writerWithDefaultPrettyPrinter().writeValueAsBytes(r));

        StringBuilder md = new StringBuilder();
        md.append("# ").append(task.folder()).append(" — ").append(method).append("\n\n");
        md.append("- model: ").append(model).append('\n');
        md.append("- recipe: ").append(recipe.describe()).append('\n');
        md.append(String.format(Locale.ROOT, "- examples: %,d training, %,d dev%n", trainExamples, devExamples));
        md.append(String.format(Locale.ROOT, "- trainable parameters: %,d of %,d (%.2f%%)%n", trainable, total, 100.0 * trainable / total));
        md.append("- peak memory: ").append(MemoryTracker.human(memory.totalPeak())).append(" (by phase in the memory table below)\n\n");
        md.append("| epoch | step | train loss | ");
        for (Metric m : task.metrics()) md.append("dev ").append(m.name().toLowerCase(Locale.ROOT)).append(" | ");
        md.append("seconds |\n|---|---|---|");
        md.append("---|".repeat(task.metrics().size())).append("---|\n");
        for (Trainer.EpochResult e : epochs) {
            md.append(String.format(Locale.ROOT, "| %d | %d | %.4f | ", e.epoch(), e.step(), e.trainLoss()));
            for (Metric m : task.metrics()) md.append(String.format(Locale.ROOT, "%.4f | ", e.dev().get(m)));
            md.append(String.format(Locale.ROOT, "%.1f |%n", e.seconds()));
        }
        md.append("\n").append("```\n").append(memory.report()).append("```\n");
        OutputDirectory.writeFile(dir.resolve("report.md"), md.toString().getBytes(StandardCharsets.UTF_8));
    }
}
