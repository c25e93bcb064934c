package dev.topa.bench;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * The summary of prune-glue.sh's results: gaps are taken to each task's strongest dense run (a
 * learning-rate or epochs check that beat the default recipe replaces it), the figures against the
 * default are printed beside them, and avg_metric_gap_points_50 is the last line.
 */
class GlueTableTest {
    @TempDir
    Path dir;

    private static String row(String task, String method, double sparsity, int seed, double best, double peak, boolean atLast) {
        return String.join("\t", task, method, String.valueOf(sparsity), String.valueOf(seed), String.valueOf(best),
                sparsity > 0 ? "49.9" : "0", String.valueOf(peak), "100", String.valueOf(atLast));
    }

    private List<String> run(List<String> rows) throws Exception {
        Path tsv = dir.resolve("results.tsv");
        Files.write(tsv, java.util.stream.Stream.concat(
                java.util.stream.Stream.of("task\tmethod\tsparsity\tseed\tbest\tremoved_pct\tpeak_mib\tseconds\tbest_at_last"), rows.stream()).toList());
        PrintStream out = System.out;
        ByteArrayOutputStream buf = new ByteArrayOutputStream();
        System.setOut(new PrintStream(buf, true, StandardCharsets.UTF_8));
        try {
            GlueTable.main(new String[] {tsv.toString(), dir.resolve("plot.png").toString(), "0.5"});
        } finally {
            System.setOut(out);
        }
        return buf.toString(StandardCharsets.UTF_8).lines().toList();
    }

    private static double value(List<String> lines, String name) {
        return lines.stream().filter(l -> l.startsWith(name + ": ")).map(l -> Double.parseDouble(l.substring(name.length() + 2).split(" ")[0]))
                .findFirst().orElseThrow(() -> new AssertionError("no line " + name + " in " + lines));
    }

    @Test
    void gapsAreTakenToTheStrongestDenseRun() throws Exception {
        List<String> lines = run(List.of(
                row("rte", "full", 0, 1, 0.60, 700, false), row("rte", "full", 0, 2, 0.62, 700, false),
                row("rte", "pa50", 0.5, 1, 0.59, 250, false), row("rte", "pa50", 0.5, 2, 0.58, 250, false),
                row("rte", "fulllr2", 0, 1, 0.65, 700, false), row("rte", "fulllr0.5", 0, 1, 0.55, 700, false),
                row("stsb", "full", 0, 1, 0.86, 800, true), row("stsb", "pa50", 0.5, 1, 0.87, 250, false),
                row("stsb", "fullep10", 0, 1, 0.855, 800, false), row("rte", "fullep10", 0, 1, 0.64, 700, true)));
        assertTrue(lines.contains("rte_dense_reference: fulllr2 (65.00 points; the default recipe's full 61.00)"), lines.toString());
        assertTrue(lines.contains("stsb_full_best_at_last_epoch: true (a longer run might still improve it)"), lines.toString());
        assertTrue(lines.contains("rte_fullep10_best_at_last_epoch: true (a longer run might still improve it)"), "a check is flagged too: " + lines);
        assertFalse(lines.stream().anyMatch(l -> l.startsWith("rte_full_") && l.contains("best_at_last")), "rte's default run peaked before its last");
        assertFalse(lines.stream().anyMatch(l -> l.startsWith("stsb_dense_reference")), "a check below the default does not replace it");
        assertEquals(65.0 - 58.5, value(lines, "rte_gap_points_pa50"), 1e-9);
        assertEquals(86.0 - 87.0, value(lines, "stsb_gap_points_pa50"), 1e-9);
        assertEquals(((61.0 - 58.5) + (86.0 - 87.0)) / 2, value(lines, "avg_metric_gap_points_50_to_default_full"), 1e-9);
        assertTrue(lines.getLast().startsWith("avg_metric_gap_points_50: "), "the asked figure is last: " + lines.getLast());
        assertEquals(((65.0 - 58.5) + (86.0 - 87.0)) / 2, value(lines, "avg_metric_gap_points_50"), 1e-9);
        String table = Files.readString(dir.resolve("plot.md"));
        assertTrue(table.contains("| rte | fulllr2 | 0.0 | 1 | 65.00 (0.00) | reference |"), table);
        assertTrue(table.contains("| rte | pa50 | 49.9 | 2 | 58.50 (0.71) | 6.50 |"), table);
    }

    @Test
    void distillationEffectsAreTakenAgainstTheRunWithoutIt() throws Exception {
        List<String> lines = run(List.of(row("cola", "full", 0, 1, 0.33, 500, false), row("cola", "pa50", 0.5, 1, 0.23, 150, false),
                row("cola", "pa-distill50", 0.5, 1, 0.26, 180, false), row("cola", "pa-hidden50", 0.5, 1, 0.28, 260, false),
                row("cola", "pa-gradual50", 0.5, 1, 0.285, 200, false), row("cola", "lora", 0, 1, 0.27, 400, false),
                row("rte", "full", 0, 1, 0.60, 800, false), row("rte", "pa50", 0.5, 1, 0.55, 150, false),
                row("rte", "pa-distill50", 0.5, 1, 0.54, 380, false)));
        assertEquals(3.0, value(lines, "cola_distill_effect_points_50"), 1e-9);
        assertEquals(-1.0, value(lines, "rte_distill_effect_points_50"), 1e-9);
        assertTrue(lines.contains("avg_distill_effect_points_50: 1.00 (2 tasks, better on 1)"), "the mean over tasks: " + lines);
        assertTrue(lines.contains("max_peak_ratio_to_full_pa-distill50: 0.475 (rte)"), "the larger of 0.36 (cola) and 0.475 (rte): " + lines);
        assertEquals(260.0 / 500, value(lines, "max_peak_ratio_to_full_pa-hidden50"), 1e-3);
        assertFalse(lines.stream().anyMatch(l -> l.startsWith("max_peak_ratio_to_full_lora") || l.startsWith("max_peak_ratio_to_full_full")),
                "dense runs get no ratio: " + lines);
        assertEquals(2.0, value(lines, "cola_hidden_effect_points_50"), 1e-9); // on top of the outputs' distillation, not of pa50
        assertEquals(5.0, value(lines, "avg_metric_gap_points_50_hidden"), 1e-9);
        assertEquals(2.5, value(lines, "cola_gradual_effect_points_50"), 1e-9); // the same teacher, one-shot: pa-distill50
        assertEquals(4.5, value(lines, "avg_metric_gap_points_50_gradual"), 1e-9);
        assertEquals((10.0 + 5.0) / 2, value(lines, "avg_metric_gap_points_50"), 1e-9);
        assertTrue(lines.getLast().startsWith("avg_metric_gap_points_50: "), "the asked figure is last: " + lines.getLast());
    }

    @Test
    void effectsAreTakenOnTheSeedsBothMethodsRan() throws Exception {
        // pa-distill50 on three seeds (mean 60), pa-gradual50 on seed 1 only: its effect is against seed 1's 55, not the mean;
        // on mrpc the two share no seed, so mrpc has no gradual effect; the lr check against the default's seed 1, not its mean
        List<String> lines = run(List.of(
                row("rte", "full", 0, 1, 0.64, 700, false), row("rte", "full", 0, 2, 0.66, 700, false), row("rte", "full", 0, 3, 0.68, 700, false),
                row("rte", "fulllr2", 0, 1, 0.65, 700, false),
                row("rte", "pa-distill50", 0.5, 1, 0.55, 250, false), row("rte", "pa-distill50", 0.5, 2, 0.60, 250, false),
                row("rte", "pa-distill50", 0.5, 3, 0.65, 250, false), row("rte", "pa-gradual50", 0.5, 1, 0.57, 250, false),
                row("mrpc", "full", 0, 1, 0.86, 700, false), row("mrpc", "pa-distill50", 0.5, 2, 0.84, 250, false),
                row("mrpc", "pa-gradual50", 0.5, 1, 0.85, 250, false)));
        assertEquals(2.0, value(lines, "rte_gradual_effect_points_50"), 1e-9);
        assertTrue(lines.contains("rte_gradual_effect_points_50: 2.00 (seed 1)"), lines.toString());
        assertFalse(lines.stream().anyMatch(l -> l.startsWith("mrpc_gradual_effect")), "no seed in common: " + lines);
        assertTrue(lines.contains("avg_gradual_effect_points_50: 2.00 (1 tasks, better on 1)"), lines.toString());
        assertEquals(1.0, value(lines, "rte_dense_lr_x2_minus_default_points"), 1e-9); // 65 - 64, not 65 - 66
        assertEquals(66.0 - 60.0, value(lines, "rte_gap_points_pa-distill50"), 1e-9); // the gaps stay means against the reference
        // on several seeds the spread of the per-seed differences: 64-66-68 against 55-60-65 differ by 9, 6, 3
        List<String> three = run(List.of(
                row("rte", "full", 0, 1, 0.64, 700, false), row("rte", "full", 0, 2, 0.66, 700, false), row("rte", "full", 0, 3, 0.68, 700, false),
                row("rte", "pa-distill50", 0.5, 1, 0.55, 250, false), row("rte", "pa-distill50", 0.5, 2, 0.60, 250, false),
                row("rte", "pa-distill50", 0.5, 3, 0.65, 250, false), row("rte", "pa-gradual50", 0.5, 1, 0.64, 250, false),
                row("rte", "pa-gradual50", 0.5, 2, 0.66, 250, false), row("rte", "pa-gradual50", 0.5, 3, 0.68, 250, false)));
        assertTrue(three.contains("rte_gradual_effect_points_50: 6.00 (seeds 1 2 3; sd 3.00)"), three.toString());
    }

    @Test
    void theAskedFigureNamesTheTasksItAveragesOnTheLineBefore() throws Exception {
        List<String> lines = run(List.of(row("mrpc", "full", 0, 1, 0.85, 700, false), row("mrpc", "pa50", 0.5, 1, 0.84, 250, false),
                row("cola", "full", 0, 1, 0.33, 500, false), row("cola", "pa70", 0.7, 1, 0.20, 150, false)));
        assertEquals("avg_metric_gap_points_50_tasks: 1 (mrpc)", lines.get(lines.size() - 2), "cola has no 50% row: " + lines);
        assertEquals("avg_metric_gap_points_50: 1.00", lines.getLast());
    }

    @Test
    void withoutAWinningCheckTheDefaultIsTheReference() throws Exception {
        List<String> lines = run(List.of(row("mrpc", "full", 0, 1, 0.85, 700, false), row("mrpc", "pa50", 0.5, 1, 0.84, 250, false)));
        assertFalse(lines.stream().anyMatch(l -> l.contains("dense_reference") || l.contains("to_default_full")), lines.toString());
        assertEquals(1.0, value(lines, "avg_metric_gap_points_50"), 1e-9);
    }
}
