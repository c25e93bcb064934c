package dev.topa.train;

import dev.topa.io.OutputDirectory;
import java.awt.BasicStroke;
import java.awt.Color;
import java.awt.Graphics2D;
import java.awt.RenderingHints;
import java.awt.image.BufferedImage;
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.nio.file.Path;
import java.util.List;
import java.util.Locale;
import javax.imageio.ImageIO;

/** {@link TrainingPlot}'s drawing, with Java2D (java.desktop), loaded only where that module is present. */
final class TrainingPlotImage {
    private static final int WIDTH = TrainingPlot.WIDTH, HEIGHT = TrainingPlot.HEIGHT;

    private TrainingPlotImage() {}

    /** stepLoss: one value per optimizer step; devMetric: one value per epoch, at its last step. */
    static void write(Path png, String title, List<Double> stepLoss, List<Double> devMetric, String metricName) throws IOException {
        double[] x = new double[stepLoss.size()];
        for (int i = 0; i < x.length; i++) x[i] = i + 1;
        double[] e = new double[devMetric.size()];
        for (int i = 0; i < e.length; i++) e[i] = i + 1;
        render(png, WIDTH, g -> {
            panel(g, 0, "train loss (" + title + ")", "step", x, stepLoss.stream().mapToDouble(Double::doubleValue).toArray(),
                    new Color(30, 90, 200));
            panel(g, WIDTH / 2, "dev " + metricName, "epoch", e, devMetric.stream().mapToDouble(Double::doubleValue).toArray(),
                    new Color(200, 80, 30));
        });
    }

    /** One curve y(x) on its own (half-width) panel, e.g. dev metric vs sparsity. */
    static void curve(Path png, String title, String xLabel, double[] x, double[] y) throws IOException {
        render(png, WIDTH / 2, g -> panel(g, 0, title, xLabel, x, y, new Color(200, 80, 30)));
    }

    private static void render(Path png, int width, java.util.function.Consumer<Graphics2D> draw) throws IOException {
        System.setProperty("java.awt.headless", "true");
        BufferedImage img = new BufferedImage(width, HEIGHT, BufferedImage.TYPE_INT_RGB);
        Graphics2D g = img.createGraphics();
        g.setRenderingHint(RenderingHints.KEY_ANTIALIASING, RenderingHints.VALUE_ANTIALIAS_ON);
        g.setColor(Color.WHITE);
        g.fillRect(0, 0, width, HEIGHT);
        draw.accept(g);
        g.dispose();
        ByteArrayOutputStream bytes = new ByteArrayOutputStream();
        ImageIO.write(img, "png", bytes);
        OutputDirectory.writeFile(png, bytes.toByteArray());
    }

    private static void panel(Graphics2D g, int x0, String title, String xLabel, double[] x, double[] y, Color color) {
        int left = x0 + 70, right = x0 + WIDTH / 2 - 20, top = 40, bottom = HEIGHT - 50;
        g.setColor(Color.GRAY);
        g.drawRect(left, top, right - left, bottom - top);
        if (y.length == 0) return;
        double xmin = x[0], xmax = Math.max(x[x.length - 1], xmin + 1), ymin = Double.POSITIVE_INFINITY, ymax = Double.NEGATIVE_INFINITY;
        for (double v : y) {
            ymin = Math.min(ymin, v);
            ymax = Math.max(ymax, v);
        }
        if (ymax - ymin < 1e-9) {
            ymin -= 0.5;
            ymax += 0.5;
        }
        g.setColor(color);
        g.setStroke(new BasicStroke(y.length > 1 ? 1.5f : 3f));
        int px = -1, py = -1;
        for (int i = 0; i < y.length; i++) {
            int cx = (int) Math.round(left + (x[i] - xmin) / (xmax - xmin) * (right - left));
            int cy = (int) Math.round(bottom - (y[i] - ymin) / (ymax - ymin) * (bottom - top));
            if (px >= 0) g.drawLine(px, py, cx, cy);
            g.fillOval(cx - 2, cy - 2, 5, 5);
            px = cx;
            py = cy;
        }
        try { // text needs a font; a machine without any still gets the curves
            g.setColor(Color.BLACK);
            g.drawString(title, left, top - 12);
            g.drawString(xLabel, (left + right) / 2 - 15, bottom + 35);
            g.drawString(String.format(Locale.ROOT, "%.4g", ymax), x0 + 5, top + 5);
            g.drawString(String.format(Locale.ROOT, "%.4g", ymin), x0 + 5, bottom);
            g.drawString(String.format(Locale.ROOT, "%.0f", xmin), left, bottom + 18);
            g.drawString(String.format(Locale.ROOT, "%.0f", xmax), right - 20, bottom + 18);
        } catch (Error | RuntimeException noFonts) {
            // headless JDK without fonts: labels are left out
        }
    }
}
