package dev.topa.app;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import dev.topa.backend.Backend;
import dev.topa.backend.cpu.CpuBackend;
import dev.topa.io.OutputDirectory;
import dev.topa.train.FineTunedModel;
import dev.topa.train.InferenceProbe;
import dev.topa.train.TrainingPlot;
import java.io.IOException;
import java.lang.management.ManagementFactory;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.concurrent.Callable;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Option;

/**
 * The five-method comparison of issue 5 in one command: full fine-tuning, LoRA, pruning-only, the
 * paper's recipe and topa's Pruning-Adapter on one task, then topa's Pruning-Adapter over a sweep
 * of sparsities. Every training run is its own process (so each one's peak memory is its own);
 * the serving figures of every saved model are measured here, one model at a time, the same way.
 */
@Command(name = "compare", description = {"Full fine-tuning, LoRA, pruning-only, the paper's recipe and topa's Pruning-Adapter on one",
        "task, side by side (dev metric, trainable parameters, training peak memory, time per epoch, batch-1 latency, batch-32",
        "throughput, inference peak memory, size on disk), and dev metric vs sparsity: compare.md, compare.json, sparsity.png."})
final class CompareCommand implements Callable<Integer> {
    @Mixin
    TaskOptions job;

    @Option(names = "--sparsity", defaultValue = "0.5", description = "the sparsity of the pruning-only and topa rows (default: ${DEFAULT-VALUE})")
    double sparsity;

    @Option(names = "--sweep", defaultValue = "0,0.3,0.5,0.7,0.9",
            description = "sparsities of the dev-metric curve, comma-separated (topa's Pruning-Adapter; empty: no sweep) (default: ${DEFAULT-VALUE})")
    String sweepText;

    /** --sweep's sparsities (none for an empty value). */
    List<Double> sweep() {
        List<Double> out = new ArrayList<>();
        for (String s : sweepText.split(",")) {
            if (s.isBlank()) continue;
            try {
                out.add(Double.parseDouble(s.trim()));
            } catch (NumberFormatException e) {
                throw new IllegalArgumentException("--sweep: sparsities separated by commas, got '" + s.trim() + "'");
            }
        }
        return out;
    }

    @Option(names = "--epochs", description = "epochs of every run (default: each method's own default)")
    Integer epochs;

    @Option(names = "--max-seq-len", description = "for every run (default: the recipes' 128)")
    Integer maxSeqLen;

    @Option(names = "--inference-iterations", defaultValue = "10", description = "timed forwards per serving figure (default: ${DEFAULT-VALUE})")
    int inferenceIterations;

    @Mixin
    ThreadsOption threads;

    @Mixin
    DeviceOption device;

    /** One training run: its table label, its folder name and the topa arguments that train it. */
    record Run(String label, String name, double sparsity, List<String> args) {}

    /** What a finished run measured. */
    record Row(Run run, String metric, double dev, long trainable, long trainPeakBytes, double secondsPerEpoch, double latencyB1Ms,
            double throughputB32, long inferencePeakBytes, long diskBytes) {
        /** The same measurements under another run's label (a sweep point that is a table row's run). */
        Row as(Run other) {
            return new Row(other, metric, dev, trainable, trainPeakBytes, secondsPerEpoch, latencyB1Ms, throughputB32, inferencePeakBytes,
                    diskBytes);
        }
    }

    @Override
    public Integer call() throws Exception {
        threads.apply();
        if (!(sparsity >= 0 && sparsity < 1)) throw new IllegalArgumentException("--sparsity must be in [0, 1), got " + sparsity);
        List<Double> sweep = sweep();
        for (double s : sweep) if (!(s >= 0 && s < 1)) throw new IllegalArgumentException("--sweep: every sparsity must be in [0, 1), got " + s);
        job.openOut(false, 0); // each run checks its own folder's space
        List<Run> methods = methods();
        Map<String, Row> done = new LinkedHashMap<>();
        List<Row> table = new ArrayList<>(), curve = new ArrayList<>();
        for (Run r : methods) table.add(runOnce(r, done));
        for (double s : sweep) {
            String name = "topa-" + percent(s);
            curve.add(runOnce(new Run("topa Pruning-Adapter " + percent(s) + "%", name, s, pruneAdapt(s)), done));
        }
        write(table, curve);
        return 0;
    }

    List<Run> methods() {
        String sp = Double.toString(sparsity);
        return List.of(new Run("full fine-tuning", "full", 0, List.of("finetune", "--method", "full")),
                new Run("LoRA", "lora", 0, List.of("finetune", "--method", "lora")),
                new Run("pruning-only " + percent(sparsity) + "% (full fine-tuning of what remains)", "prune-only", sparsity,
                        List.of("finetune", "--method", "prune", "--sparsity", sp)),
                new Run("paper's recipe (30% of heads, LoRA q/k/v)", "paper", 43.0 / 144, List.of("prune-adapt", "--recipe", "paper",
                        "--inference-iterations", "0")),
                new Run("topa Pruning-Adapter " + percent(sparsity) + "%", "topa-" + percent(sparsity), sparsity, pruneAdapt(sparsity)));
    }

    private static List<String> pruneAdapt(double s) {
        return List.of("prune-adapt", "--sparsity", Double.toString(s), "--inference-iterations", "0");
    }

    private static String percent(double s) {
        return Long.toString(Math.round(100 * s));
    }

    /** Trains one run in its own process (once per folder name), then measures its saved model here. */
    private Row runOnce(Run r, Map<String, Row> done) throws IOException, InterruptedException {
        Row prior = done.get(r.name());
        if (prior != null) return prior.as(r);
        Path dir = job.out.resolve(r.name()), log = job.out.resolve(r.name() + ".log");
        List<String> cmd = new ArrayList<>(javaCommand());
        cmd.addAll(r.args());
        cmd.addAll(List.of("--task", job.task, "--model", job.model, "--out", dir.toString()));
        if (job.dataDir != null) cmd.addAll(List.of("--data-dir", job.dataDir.toString()));
        if (epochs != null) cmd.addAll(List.of("--epochs", epochs.toString()));
        if (job.trainLimit != null) cmd.addAll(List.of("--train-limit", job.trainLimit.toString()));
        if (job.devLimit != null) cmd.addAll(List.of("--dev-limit", job.devLimit.toString()));
        if (job.overwrite) cmd.add("--overwrite");
        if (maxSeqLen != null) cmd.addAll(List.of("--max-seq-len", maxSeqLen.toString()));
        if (threads.threads > 0) cmd.addAll(List.of("--threads", Integer.toString(threads.threads)));
        cmd.addAll(List.of("--device", device.spec()));
        System.out.printf(Locale.ROOT, "%-55s ", r.label());
        System.out.flush();
        long t0 = System.nanoTime();
        Process p = new ProcessBuilder(cmd).redirectErrorStream(true).redirectOutput(log.toFile()).start();
        int rc = p.waitFor();
        if (rc != 0) {
            List<String> lines = Files.readAllLines(log);
            throw new IllegalStateException("compare: the " + r.name() + " run failed (exit " + rc + "); last lines of " + log + ":\n"
                    + String.join("\n", lines.subList(Math.max(0, lines.size() - 15), lines.size())));
        }
        JsonNode report = new ObjectMapper().readTree(dir.resolve("report.json").toFile());
        String metric = report.path("main_metric").asText();
        double seconds = 0;
        for (JsonNode e : report.path("epochs")) seconds += e.path("seconds").asDouble();
        seconds /= Math.max(1, report.path("epochs").size());
        Row row;
        // the serving figures on the CPU, for every device the runs trained on (a Java service's embedded inference)
        Backend be = CpuBackend.create();
        try (FineTunedModel.Loaded saved = FineTunedModel.load(dir)) {
            InferenceProbe.Figures f = inferenceIterations > 0 ? InferenceProbe.measure(be, saved.model(), inferenceIterations)
                    : new InferenceProbe.Figures(Double.NaN, Double.NaN, 0);
            row = new Row(r, metric, report.path("best").path(metric).asDouble(), report.path("trainable_parameters").asLong(),
                    report.path("memory_" + device.spec()).path("total_peak").asLong(), seconds, f.latencyB1Ms(), f.throughputB32(),
                    saved.model().parameterBytes() + f.activationPeakBytes(), diskBytes(dir));
        }
        System.out.printf(Locale.ROOT, "dev %s %.4f (%.0f s)%n", metric, row.dev(), (System.nanoTime() - t0) * 1e-9);
        done.put(r.name(), row);
        return row;
    }

    /** This JVM's launch command, pointed at topa's main class. */
    static List<String> javaCommand() {
        String java = ProcessHandle.current().info().command().orElse(Path.of(System.getProperty("java.home"), "bin", "java").toString());
        List<String> cmd = new ArrayList<>(List.of(java));
        cmd.addAll(ManagementFactory.getRuntimeMXBean().getInputArguments());
        cmd.addAll(List.of("-cp", System.getProperty("java.class.path"), Main.class.getName()));
        return cmd;
    }

    private static long diskBytes(Path dir) throws IOException {
        long sum = 0;
        for (String f : List.of("model.safetensors", FineTunedModel.HEAD, "config.json")) {
            Path p = dir.resolve(f);
            if (Files.isRegularFile(p)) sum += Files.size(p);
        }
        return sum;
    }

    private void write(List<Row> table, List<Row> curve) throws IOException {
        ObjectMapper json = new ObjectMapper();
        ObjectNode root = json.createObjectNode();
        root.put("task", job.task);
        root.put("model", job.model);
        if (job.trainLimit != null) root.put("train_limit", job.trainLimit);
        if (job.devLimit != null) root.put("dev_limit", job.devLimit);
        if (epochs != null) root.put("epochs", epochs);
        ArrayNode methods = root.putArray("methods"), points = root.putArray("sparsity_curve");
        for (Row r : table) methods.add(json.valueToTree(rowMap(r)));
        for (Row r : curve) points.add(json.valueToTree(rowMap(r)));
        OutputDirectory.writeFile(job.out.resolve("compare.json"), json.writerWithDefaultPrettyPrinter().writeValueAsBytes(root));
        StringBuilder md = new StringBuilder();
        md.append("# ").append(job.task).append(": five methods side by side\n\n");
        md.append(String.format(Locale.ROOT, "Model %s; %s; each run in its own process on %s, with its own defaults%s. Serving figures:"
                + " sequence length 128, medians after warm-up, measured on the CPU in the comparing process one model at a time."
                + " Training peak: the tensor runtime's peak over the whole run (weights, adapters, optimizer state, gradients,"
                + " activations, workspace). Inference peak: the model's weights + the batch-32 forward's activation peak.%n%n", job.model,
                job.trainLimit != null ? "first " + job.trainLimit + " training examples" : "all training examples", device.spec(),
                epochs != null ? ", " + (epochs == 1 ? "1 epoch" : epochs + " epochs") + " each" : ""));
        md.append("| method | dev ").append(table.isEmpty() ? "" : table.get(0).metric()).append(" | trainable parameters | training peak"
                + " MiB | s / epoch | batch-1 ms | batch-32 seq/s | inference peak MiB | size on disk MiB |\n");
        md.append("|---|---|---|---|---|---|---|---|---|\n");
        for (Row r : table) md.append(markdownRow(r));
        if (!curve.isEmpty()) {
            md.append("\n## Dev metric vs sparsity (topa's Pruning-Adapter)\n\n![dev metric vs sparsity](sparsity.png)\n\n");
            md.append("| sparsity | dev | batch-32 seq/s | size on disk MiB |\n|---|---|---|---|\n");
            for (Row r : curve)
                md.append(String.format(Locale.ROOT, "| %s%% | %.4f | %.1f | %.1f |%n", percent(r.run().sparsity()), r.dev(), r.throughputB32(),
                        r.diskBytes() / 1048576.0));
            TrainingPlot.curve(job.out.resolve("sparsity.png"), job.task + ": dev " + curve.get(0).metric() + " vs sparsity", "sparsity %",
                    curve.stream().mapToDouble(r -> 100 * r.run().sparsity()).toArray(), curve.stream().mapToDouble(Row::dev).toArray());
        }
        OutputDirectory.writeFile(job.out.resolve("compare.md"), md.toString().getBytes(java.nio.charset.StandardCharsets.UTF_8));
        System.out.print(md);
        System.out.println("report: " + job.out.resolve("compare.md") + ", " + job.out.resolve("compare.json"));
    }

    private static String markdownRow(Row r) {
        return String.format(Locale.ROOT, "| %s | %.4f | %,d | %.1f | %.1f | %.2f | %.1f | %.1f | %.1f |%n", r.run().label(), r.dev(),
                r.trainable(), r.trainPeakBytes() / 1048576.0, r.secondsPerEpoch(), r.latencyB1Ms(), r.throughputB32(),
                r.inferencePeakBytes() / 1048576.0, r.diskBytes() / 1048576.0);
    }

    private static Map<String, Object> rowMap(Row r) {
        Map<String, Object> m = new LinkedHashMap<>();
        m.put("method", r.run().label());
        m.put("run", r.run().name());
        m.put("sparsity", r.run().sparsity());
        m.put("metric", r.metric());
        m.put("dev", r.dev());
        m.put("trainable_parameters", r.trainable());
        m.put("training_peak_bytes", r.trainPeakBytes());
        m.put("seconds_per_epoch", r.secondsPerEpoch());
        m.put("inference_b1_s128_latency_ms", r.latencyB1Ms());
        m.put("inference_b32_s128_seq_per_s", r.throughputB32());
        m.put("inference_peak_bytes", r.inferencePeakBytes());
        m.put("disk_bytes", r.diskBytes());
        return m;
    }
}
