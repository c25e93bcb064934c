package dev.topa.train;

import java.io.IOException;
import java.nio.file.Path;
import java.util.List;

/**
 * The run's PNG: training loss per step (left) and the dev metric per epoch (right), drawn with
 * JFreeChart (axes, ticks, legends); also single curves and families of curves. A Java runtime
 * without java.desktop (a jlink'd one, as the GPU kit carries) writes no image and says so once:
 * the run itself does not depend on its picture.
 */
public final class TrainingPlot {
    public static final int WIDTH = 1000, HEIGHT = 400;
    private static boolean told;

    private TrainingPlot() {}

    /** Whether this runtime can draw (java.desktop present). */
    public static boolean available() {
        return ModuleLayer.boot().findModule("java.desktop").isPresent();
    }

    /** stepLoss: one value per optimizer step; devMetric: one value per epoch, at its last step. */
    public static void write(Path png, String title, List<Double> stepLoss, List<Double> devMetric, String metricName) throws IOException {
        if (drawable(png)) TrainingPlotImage.write(png, title, stepLoss, devMetric, metricName);
    }

    /** One curve y(x) on its own (half-width) panel, e.g. dev metric vs sparsity. */
    public static void curve(Path png, String title, String xLabel, double[] x, double[] y) throws IOException {
        if (drawable(png)) TrainingPlotImage.curve(png, title, xLabel, x, y);
    }

    /**
     * Panels of named curves {x[], y[]}, each with its title, axes and legend, two to a row (e.g. a
     * metric against sparsity, a panel per task); a curve whose name ends in "(reference)" is drawn
     * dashed without marks.
     */
    public static void panels(Path png, String xLabel, java.util.Map<String, java.util.Map<String, double[][]>> panels) throws IOException {
        if (drawable(png)) TrainingPlotImage.panels(png, xLabel, panels);
    }

    private static synchronized boolean drawable(Path png) {
        if (available()) return true;
        if (!told) System.err.println("plots: not drawn (" + png.getFileName() + "): this Java runtime has no java.desktop module");
        told = true;
        return false;
    }
}
