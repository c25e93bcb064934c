package dev.topa.glue;

import dev.topa.io.TextFiles;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;

/**
 * The nine GLUE tasks in the standard distribution layout (one folder per task, tab-separated,
 * no quoting). Each task knows its files, which columns hold the text(s) and the label, its label
 * set (or that it is a regression) and its official metrics. A malformed row is an error naming
 * the file and line, never a silent skip.
 */
public enum GlueTask {
    COLA("CoLA", false, 4, 3, -1, 1, List.of("0", "1"), List.of("train"), List.of("dev"), Metric.MATTHEWS),
    SST2("SST-2", true, 2, 0, -1, 1, List.of("0", "1"), List.of("train"), List.of("dev"), Metric.ACCURACY),
    MRPC("MRPC", true, 5, 3, 4, 0, List.of("0", "1"), List.of("train"), List.of("dev"), Metric.F1, Metric.ACCURACY),
    STSB("STS-B", true, 10, 7, 8, 9, null, List.of("train"), List.of("dev"), Metric.PEARSON, Metric.SPEARMAN),
    QQP("QQP", true, 6, 3, 4, 5, List.of("0", "1"), List.of("train"), List.of("dev"), Metric.F1, Metric.ACCURACY),
    MNLI("MNLI", true, -1, 8, 9, -1, List.of("contradiction", "entailment", "neutral"), List.of("train"),
            List.of("dev_matched", "dev_mismatched"), Metric.ACCURACY),
    QNLI("QNLI", true, 4, 1, 2, 3, List.of("entailment", "not_entailment"), List.of("train"), List.of("dev"), Metric.ACCURACY),
    RTE("RTE", true, 4, 1, 2, 3, List.of("entailment", "not_entailment"), List.of("train"), List.of("dev"), Metric.ACCURACY),
    WNLI("WNLI", true, 4, 1, 2, 3, List.of("0", "1"), List.of("train"), List.of("dev"), Metric.ACCURACY);

    private final String folder;
    private final boolean header;
    private final int columns, textA, textB, label;
    private final List<String> labels;
    private final List<String> trainFiles, devFiles;
    private final List<Metric> metrics;

    /** columns -1: any count >= the used columns (MNLI's train and dev differ); label -1: the last column. */
    GlueTask(String folder, boolean header, int columns, int textA, int textB, int label, List<String> labels,
            List<String> trainFiles, List<String> devFiles, Metric... metrics) {
        this.folder = folder;
        this.header = header;
        this.columns = columns;
        this.textA = textA;
        this.textB = textB;
        this.label = label;
        this.labels = labels;
        this.trainFiles = trainFiles;
        this.devFiles = devFiles;
        this.metrics = List.of(metrics);
    }

    /** By its usual spelling: "sst2", "SST-2", "sts-b", "mnli" ... */
    public static GlueTask parse(String name) {
        String n = name.toUpperCase(Locale.ROOT).replace("-", "");
        for (GlueTask t : values())
            if (t.name().equals(n)) return t;
        throw new IllegalArgumentException("unknown GLUE task '" + name + "'; one of cola, sst2, mrpc, stsb, qqp, mnli, qnli, rte, wnli");
    }

    public String folder() {
        return folder;
    }

    public boolean isRegression() {
        return labels == null;
    }

    public boolean isPair() {
        return textB >= 0;
    }

    /** Number of outputs of the task head: classes, or 1 for regression. */
    public int numLabels() {
        return labels == null ? 1 : labels.size();
    }

    public List<String> labels() {
        return labels;
    }

    public List<Metric> metrics() {
        return metrics;
    }

    /** The metric used to pick the best checkpoint (the first official one). */
    public Metric mainMetric() {
        return metrics.get(0);
    }

    /** File names of the training split and the first dev split, inside the task's folder. */
    public String trainFile() {
        return trainFiles.get(0) + ".tsv";
    }

    public String devFile() {
        return devFiles.get(0) + ".tsv";
    }

    public List<String> devSplits() {
        return devFiles;
    }

    public List<Example> train(Path dataDir) throws IOException {
        return read(dataDir.resolve(folder).resolve(trainFiles.get(0) + ".tsv"));
    }

    /** A dev split by name ("dev", "dev_matched", "dev_mismatched"). */
    public List<Example> dev(Path dataDir, String split) throws IOException {
        if (!devFiles.contains(split)) throw new IllegalArgumentException(this + " has no dev split '" + split + "'; it has " + devFiles);
        return read(dataDir.resolve(folder).resolve(split + ".tsv"));
    }

    /**
     * Reads one labelled file of this task. Every refusal names the file, the line and, where one
     * field is at fault, its column (1-based, counted in tab-separated fields); a file without
     * examples is refused too.
     */
    public List<Example> read(Path file) throws IOException {
        if (!Files.isRegularFile(file)) throw new IOException(file + ": no such GLUE file (task " + folder + ")");
        List<String> lines = TextFiles.lines(file);
        List<Example> out = new ArrayList<>();
        int need = Math.max(Math.max(textA, textB), label) + 1;
        for (int i = header ? 1 : 0; i < lines.size(); i++) {
            String line = lines.get(i);
            if (i == 0 && line.startsWith("\uFEFF")) line = line.substring(1);
            if (line.isEmpty()) continue; // a trailing newline
            String[] f = line.split("\t", -1);
            if ((columns > 0 && f.length != columns) || f.length < need)
                throw new GlueFormatException(file, i + 1, "expected " + (columns > 0 ? columns : "at least " + need)
                        + " tab-separated columns, found " + f.length);
            int labelColumn = label >= 0 ? label : f.length - 1;
            String raw = f[labelColumn].trim();
            String a = f[textA], b = textB >= 0 ? f[textB] : null;
            if (labels == null) {
                float score;
                try {
                    score = Float.parseFloat(raw);
                } catch (NumberFormatException e) {
                    throw new GlueFormatException(file, i + 1, labelColumn + 1, "score '" + raw + "' is not a number");
                }
                if (!Float.isFinite(score)) throw new GlueFormatException(file, i + 1, labelColumn + 1, "score '" + raw + "' is not finite");
                out.add(new Example(a, b, -1, score));
            } else {
                int id = labels.indexOf(raw);
                if (id < 0) throw new GlueFormatException(file, i + 1, labelColumn + 1, "label '" + raw + "' is not one of " + labels);
                out.add(new Example(a, b, id, id));
            }
        }
        if (out.isEmpty())
            throw new GlueFormatException(file, "no examples (" + (lines.isEmpty() ? "the file is empty" : "no rows after the header") + ")");
        return out;
    }

}
