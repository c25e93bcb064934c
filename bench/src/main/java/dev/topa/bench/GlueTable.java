package dev.topa.bench;

import dev.topa.glue.GlueTask;
import dev.topa.io.OutputDirectory;
import dev.topa.train.TrainingPlot;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Set;
import java.util.TreeMap;

/**
 * bench/prune-glue.sh's summary of its results.tsv (one row per finished run): per task and
 * method the mean best dev main metric over seeds, in GLUE points (x 100), with its spread; the
 * gaps to dense full fine-tuning; distillation's effect per task and on average (and on how many
 * tasks it helps), each on the seeds both methods ran; each pruned method's largest peak ratio to dense full fine-tuning (the whole run's
 * peak); the dense learning-rate check; whether a dense run's best evaluation was its last (then it
 * may be under-trained; the checks too); the averages over
 * tasks with avg_metric_gap_points_50 last (the tasks it averages on the line before it); the plot (metric vs sparsity per task, dense at 0) and
 * the same figures as a Markdown table beside it (plot.md).
 * The gaps are taken to each task's strongest dense run: the default recipe (full) or a check that
 * beat it (another learning rate, fulllrF; more epochs, fullepN), so a baseline that a check showed
 * weak is not the one measured against. A check has one seed where the default may have three: the
 * choice can only favour the dense side, which makes the gap conservative.
 * Usage: GlueTable results.tsv plot.png "0.5 0.7"
 */
public final class GlueTable {
    private GlueTable() {}

    private record Row(String task, String method, double sparsity, int seed, double best, double removedPct, double peakMib, boolean bestAtLast) {}

    /**
     * A difference between two methods on one task over the seeds both ran (mean of a minus mean of b there), the sample sd
     * of the per-seed differences (0 for one seed), and those seeds.
     */
    private record Matched(double difference, double sd, List<Integer> seeds) {
        String seedsNamed() {
            String named = (seeds.size() == 1 ? "seed " : "seeds ") + String.join(" ", seeds.stream().map(String::valueOf).toList());
            return seeds.size() == 1 ? named : String.format(Locale.ROOT, "%s; sd %.2f", named, sd);
        }
    }

    /** a minus b on task over the seeds both methods ran; null where they share none. */
    static Matched matched(List<Row> rows, String task, String a, String b) {
        Map<Integer, Double> ofA = new TreeMap<>(), ofB = new TreeMap<>();
        for (Row r : rows)
            if (r.task().equals(task)) {
                if (r.method().equals(a)) ofA.put(r.seed(), r.best());
                if (r.method().equals(b)) ofB.put(r.seed(), r.best());
            }
        ofA.keySet().retainAll(ofB.keySet());
        if (ofA.isEmpty()) return null;
        double[] d = ofA.entrySet().stream().mapToDouble(e -> e.getValue() - ofB.get(e.getKey())).toArray();
        double mean = Arrays.stream(d).average().orElseThrow(), ss = 0;
        for (double x : d) ss += (x - mean) * (x - mean);
        return new Matched(mean, d.length > 1 ? Math.sqrt(ss / (d.length - 1)) : 0, List.copyOf(ofA.keySet()));
    }

    public static void main(String[] args) throws Exception {
        List<Row> rows = new ArrayList<>();
        List<String> lines = Files.readAllLines(Path.of(args[0]));
        for (String line : lines.subList(1, lines.size())) {
            String[] f = line.split("\t");
            rows.add(new Row(f[0], f[1], Double.parseDouble(f[2]), Integer.parseInt(f[3]), 100 * Double.parseDouble(f[4]), Double.parseDouble(f[5]),
                    Double.parseDouble(f[6]), f.length > 8 && f[8].equals("true")));
        }
        Set<String> tasks = new LinkedHashSet<>(), methods = new LinkedHashSet<>();
        for (Row r : rows) {
            tasks.add(r.task());
            methods.add(r.method());
        }
        Map<String, double[]> mean = new LinkedHashMap<>(); // task/method -> {mean, spread (sample sd), n, removed %, peak MiB}
        for (String t : tasks)
            for (String m : methods) {
                List<Row> rs = rows.stream().filter(r -> r.task().equals(t) && r.method().equals(m)).toList();
                if (rs.isEmpty()) continue;
                double mu = rs.stream().mapToDouble(Row::best).average().orElse(0), sd = 0;
                for (Row r : rs) sd += (r.best() - mu) * (r.best() - mu);
                sd = rs.size() > 1 ? Math.sqrt(sd / (rs.size() - 1)) : 0;
                mean.put(t + "/" + m, new double[] {mu, sd, rs.size(), rs.get(0).removedPct(), rs.stream().mapToDouble(Row::peakMib).max().orElse(0)});
                System.out.printf(Locale.ROOT, "%s_%s_best_points: %.2f (sd %.2f over %d seeds; encoder parameters removed %.1f%%; peak %.0f MiB)%n",
                        t, m, mu, sd, rs.size(), rs.get(0).removedPct(), mean.get(t + "/" + m)[4]);
                if (m.startsWith("full") && rs.stream().anyMatch(Row::bestAtLast)) // every dense run, the checks too: a check can be cut short
                    System.out.printf(Locale.ROOT, "%s_%s_best_at_last_epoch: true (a longer run might still improve it)%n", t, m);
            }
        // the dense checks: another learning rate (fulllrF) or more epochs (fullepN) against the default recipe on the same
        // seeds (the reference below is chosen by means: a one-seed check that beats the default's mean replaces it)
        String[][] checks = {{"fulllr", "dense_lr_x"}, {"fullep", "dense_epochs_"}};
        for (String m : methods)
            for (String[] c : checks)
                if (m.startsWith(c[0]))
                    for (String t : tasks) {
                        Matched d = matched(rows, t, m, "full");
                        if (d != null)
                            System.out.printf(Locale.ROOT, "%s_%s%s_minus_default_points: %.2f (%s)%n", t, c[1], m.substring(c[0].length()),
                                    d.difference(), d.seedsNamed());
                    }
        Map<String, String> reference = denseReferences(tasks, methods, mean);
        for (var e : reference.entrySet())
            if (!e.getValue().equals("full"))
                System.out.printf(Locale.ROOT, "%s_dense_reference: %s (%.2f points; the default recipe's full %.2f)%n", e.getKey(), e.getValue(),
                        mean.get(e.getKey() + "/" + e.getValue())[0], mean.get(e.getKey() + "/full")[0]);
        Map<String, Map<String, Double>> gaps = new LinkedHashMap<>(); // method -> task -> gap, in the tasks' order
        Map<String, List<Double>> toDefault = new LinkedHashMap<>();
        for (String m : methods) {
            if (m.startsWith("full")) continue;
            for (String t : tasks) {
                double[] other = mean.get(t + "/" + m);
                if (!reference.containsKey(t) || other == null) continue;
                double gap = mean.get(t + "/" + reference.get(t))[0] - other[0];
                System.out.printf(Locale.ROOT, "%s_gap_points_%s: %.2f%n", t, m, gap);
                gaps.computeIfAbsent(m, k -> new LinkedHashMap<>()).put(t, gap);
                toDefault.computeIfAbsent(m, k -> new ArrayList<>()).add(mean.get(t + "/full")[0] - other[0]);
            }
        }
        // distillation's effect: pa-distillNN (the dense fine-tuned teacher) and warmdistillNN (the warm-up's) against paNN;
        // the layer-wise term's, pa-hiddenNN, and the gradual schedule's, pa-gradualNN, against pa-distillNN (the same teacher's
        // outputs, one-shot and without the layer-wise term); each on the seeds both ran, so that a method run on one seed is
        // not set against another's mean over three (a task where they share none is left out)
        String[][] effects = {{"pa-distill", "pa", "distill"}, {"warmdistill", "pa", "warmdistill"}, {"pa-hidden", "pa-distill", "hidden"},
                {"pa-gradual", "pa-distill", "gradual"}};
        for (String m : methods)
            for (String[] e : effects)
                if (m.matches(e[0] + "\\d+")) {
                    String sp = m.substring(e[0].length());
                    List<Double> each = new ArrayList<>();
                    for (String t : tasks) {
                        Matched d = matched(rows, t, m, e[1] + sp);
                        if (d == null) continue;
                        System.out.printf(Locale.ROOT, "%s_%s_effect_points_%s: %.2f (%s)%n", t, e[2], sp, d.difference(), d.seedsNamed());
                        each.add(d.difference());
                    }
                    if (!each.isEmpty())
                        System.out.printf(Locale.ROOT, "avg_%s_effect_points_%s: %.2f (%d tasks, better on %d)%n", e[2], sp,
                                each.stream().mapToDouble(Double::doubleValue).average().orElse(0), each.size(), each.stream().filter(d -> d > 0).count());
                }
        // memory: each pruned method's peak against the task's default dense full fine-tuning's (the whole run's peak, its
        // scoring warm-up and evaluations included), the largest over tasks per method
        for (String m : methods) {
            if (m.startsWith("full") || m.equals("lora")) continue;
            String worst = null;
            double most = 0;
            for (String t : tasks) {
                double[] with = mean.get(t + "/" + m), dense = mean.get(t + "/full");
                if (with == null || dense == null || dense[4] <= 0) continue;
                if (with[4] / dense[4] > most) {
                    most = with[4] / dense[4];
                    worst = t;
                }
            }
            if (worst != null) System.out.printf(Locale.ROOT, "max_peak_ratio_to_full_%s: %.3f (%s)%n", m, most, worst);
        }
        plot(Path.of(args[1]), tasks, methods, mean, rows, reference);
        table(Path.of(args[1].replaceFirst("\\.png$", "") + ".md"), tasks, methods, mean, rows, reference);
        boolean checksWon = reference.values().stream().anyMatch(m -> !m.equals("full"));
        String last = null;
        for (var e : gaps.entrySet()) {
            String name = "avg_metric_gap_points_" + suffix(e.getKey());
            if (checksWon)
                System.out.printf(Locale.ROOT, "%s_to_default_full: %.2f%n", name, toDefault.get(e.getKey()).stream().mapToDouble(Double::doubleValue).average().orElse(0));
            Map<String, Double> byTask = e.getValue();
            String line = String.format(Locale.ROOT, "%s: %.2f (%d tasks)", name, byTask.values().stream().mapToDouble(Double::doubleValue).average().orElse(0),
                    byTask.size());
            if (name.equals("avg_metric_gap_points_50")) // the asked figure last and bare; the tasks it averages on the line before it
                last = String.format(Locale.ROOT, "%s_tasks: %d (%s)%n%s", name, byTask.size(), String.join(" ", byTask.keySet()),
                        line.replaceFirst(" \\(.*", ""));
            else System.out.println(line);
        }
        if (last != null) System.out.println(last);
    }

    /** Per task with a default dense run, the dense method the gaps are taken to: full, or a check (fulllr*, fullep*) whose mean beat it. */
    static Map<String, String> denseReferences(Set<String> tasks, Set<String> methods, Map<String, double[]> mean) {
        Map<String, String> ref = new LinkedHashMap<>();
        for (String t : tasks) {
            if (!mean.containsKey(t + "/full")) continue;
            String best = "full";
            for (String m : methods)
                if ((m.startsWith("fulllr") || m.startsWith("fullep")) && mean.containsKey(t + "/" + m)
                        && mean.get(t + "/" + m)[0] > mean.get(t + "/" + best)[0])
                    best = m;
            ref.put(t, best);
        }
        return ref;
    }

    /**
     * Dense dev scores published for MiniLM-L6-H384 (the default model's architecture, before its
     * sentence-embedding training; MRPC as accuracy), for scale beside the table: not the same
     * checkpoint, so not a target.
     */
    private static final Map<String, String> PUBLISHED = Map.of("sst2", "91.5", "mrpc", "88.9 (accuracy; F1 here)", "rte", "68.8", "cola", "47.5");

    /**
     * The table for RESULTS.md: a row per task and method, mean over seeds with its spread, the gap to
     * the task's strongest dense run (marked "reference" in its own row) and the peak against the
     * default dense full fine-tuning's.
     */
    private static void table(Path md, Set<String> tasks, Set<String> methods, Map<String, double[]> mean, List<Row> rows, Map<String, String> reference)
            throws Exception {
        StringBuilder b = new StringBuilder();
        b.append("| task | method | encoder params removed % | seeds | best dev metric x 100, mean (sd) | gap to the best dense run (points) |")
                .append(" peak MiB of the whole run (x full FT) | dense best at the last epoch | published dense MiniLM-L6-H384 |\n");
        b.append("|---|---|---|---|---|---|---|---|---|\n");
        for (String t : tasks)
            for (String m : methods) {
                double[] v = mean.get(t + "/" + m), full = mean.get(t + "/full");
                if (v == null) continue;
                boolean dense = m.startsWith("full");
                String atLast = !dense ? "" : String.valueOf(rows.stream().anyMatch(r -> r.task().equals(t) && r.method().equals(m) && r.bestAtLast()));
                String ref = reference.get(t), gap = ref == null || dense ? "" : String.format(Locale.ROOT, "%.2f", mean.get(t + "/" + ref)[0] - v[0]);
                if (m.equals(ref)) gap = "reference";
                b.append(String.format(Locale.ROOT, "| %s | %s | %.1f | %d | %.2f (%.2f) | %s | %.1f (%s) | %s | %s |%n", t, m, v[3], (int) v[2], v[0], v[1],
                        gap, v[4],
                        full == null || full[4] <= 0 ? "?" : String.format(Locale.ROOT, "%.2f", v[4] / full[4]), atLast,
                        m.equals("full") ? PUBLISHED.getOrDefault(t, "") : ""));
            }
        OutputDirectory.writeFile(md, b.toString().getBytes(java.nio.charset.StandardCharsets.UTF_8));
    }

    /**
     * pa50 -> 50, pa-distill70 -> 70_distill, pa-hidden50 -> 50_hidden, pa-gradual50 -> 50_gradual, warmdistill50 -> 50_warmdistill,
     * lora -> lora, paper -> paper.
     */
    private static String suffix(String method) {
        if (method.matches("pa-gradual\\d+")) return method.substring("pa-gradual".length()) + "_gradual";
        if (method.matches("pa-distill\\d+")) return method.substring("pa-distill".length()) + "_distill";
        if (method.matches("pa-hidden\\d+")) return method.substring("pa-hidden".length()) + "_hidden";
        if (method.matches("warmdistill\\d+")) return method.substring("warmdistill".length()) + "_warmdistill";
        if (method.matches("pa\\d+")) return method.substring(2);
        return method;
    }

    /** Best dev metric vs encoder parameters removed, a panel per task: the Pruning-Adapter with and without distillation, the strongest dense run as a level line. */
    private static void plot(Path png, Set<String> tasks, Set<String> methods, Map<String, double[]> mean, List<Row> rows, Map<String, String> reference)
            throws Exception {
        Map<String, Map<String, double[][]>> panels = new LinkedHashMap<>();
        for (String t : tasks) {
            Map<String, double[][]> series = new LinkedHashMap<>();
            double[] full = reference.containsKey(t) ? mean.get(t + "/" + reference.get(t)) : null;
            for (String kind : new String[] {"pa", "pa-distill", "pa-hidden", "pa-gradual", "warmdistill"}) {
                List<double[]> points = new ArrayList<>();
                if (full != null) points.add(new double[] {0, full[0]});
                for (String m : methods)
                    if (m.matches(kind + "\\d+") && mean.containsKey(t + "/" + m)) points.add(new double[] {mean.get(t + "/" + m)[3], mean.get(t + "/" + m)[0]});
                if (points.size() < 2) continue;
                points.sort((a, b) -> Double.compare(a[0], b[0]));
                series.put(switch (kind) {
                    case "pa" -> "Pruning-Adapter";
                    case "pa-distill" -> "with distillation (fine-tuned teacher)";
                    case "pa-hidden" -> "with layer-wise distillation too";
                    case "pa-gradual" -> "gradual schedule with distillation";
                    default -> "with distillation (warm-up teacher)";
                }, new double[][] {points.stream().mapToDouble(p -> p[0]).toArray(), points.stream().mapToDouble(p -> p[1]).toArray()});
            }
            // the methods with one point a task: LoRA on the dense model, the paper's recipe at the share it removes
            for (String[] one : new String[][] {{"lora", "dense LoRA"}, {"paper", "the paper's recipe"}}) {
                double[] m = mean.get(t + "/" + one[0]);
                if (m != null) series.put(one[1], new double[][] {{m[3]}, {m[0]}});
            }
            if (full != null)
                series.put("dense full fine-tuning" + (reference.get(t).equals("full") ? "" : ", " + reference.get(t)) + " (reference)",
                        new double[][] {{0, 75}, {full[0], full[0]}});
            String metric = GlueTask.parse(t).mainMetric().name().toLowerCase(Locale.ROOT);
            if (series.size() > 1) panels.put(t + ": best dev " + metric + " x 100", series);
        }
        if (!panels.isEmpty()) TrainingPlot.panels(png, "encoder parameters removed %", panels);
    }
}
