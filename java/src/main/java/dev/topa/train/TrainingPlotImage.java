package dev.topa.train;

import dev.topa.io.OutputDirectory;
import java.awt.BasicStroke;
import java.awt.Color;
import java.awt.Graphics2D;
import java.awt.geom.Ellipse2D;
import java.awt.image.BufferedImage;
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.nio.file.Path;
import java.util.List;
import javax.imageio.ImageIO;
import org.jfree.chart.ChartFactory;
import org.jfree.chart.JFreeChart;
import org.jfree.chart.axis.NumberAxis;
import org.jfree.chart.plot.PlotOrientation;
import org.jfree.chart.plot.XYPlot;
import org.jfree.chart.renderer.xy.XYLineAndShapeRenderer;
import org.jfree.data.xy.XYSeries;
import org.jfree.data.xy.XYSeriesCollection;

/** {@link TrainingPlot}'s drawing with JFreeChart (Java2D, java.desktop), loaded only where that module is present. */
final class TrainingPlotImage {
    private static final int WIDTH = TrainingPlot.WIDTH, HEIGHT = TrainingPlot.HEIGHT;

    private TrainingPlotImage() {}

    static void write(Path png, String title, List<Double> stepLoss, List<Double> devMetric, String metricName) throws IOException {
        JFreeChart loss = chart("train loss (" + title + ")", "step", "loss", List.of(series("train loss", stepLoss)), new Color(30, 90, 200));
        JFreeChart dev = chart("dev " + metricName, "epoch", metricName, List.of(series("dev " + metricName, devMetric)), new Color(200, 80, 30));
        for (JFreeChart c : new JFreeChart[] {loss, dev}) c.getXYPlot().getDomainAxis().setStandardTickUnits(NumberAxis.createIntegerTickUnits());
        save(png, loss, dev);
    }

    static void curve(Path png, String title, String xLabel, double[] x, double[] y) throws IOException {
        XYSeries s = new XYSeries(title);
        for (int i = 0; i < x.length; i++) s.add(x[i], y[i]);
        save(png, chart(title, xLabel, "", List.of(s), new Color(200, 80, 30)));
    }

    static void panels(Path png, String xLabel, java.util.Map<String, java.util.Map<String, double[][]>> panels) throws IOException {
        List<JFreeChart> charts = new java.util.ArrayList<>();
        java.util.Map<String, Color> colors = new java.util.HashMap<>(); // a curve's name keeps its colour on every panel
        Color[] palette = {new Color(200, 60, 40), new Color(40, 90, 200), new Color(40, 150, 70), Color.GRAY, new Color(150, 60, 170), new Color(220, 150, 0),
                new Color(0, 150, 160), new Color(140, 90, 40)};
        panels.forEach((title, named) -> {
            List<XYSeries> series = new java.util.ArrayList<>();
            named.forEach((name, xy) -> {
                XYSeries s = new XYSeries(name, false); // unsorted: a reference line keeps its two ends in order
                for (int i = 0; i < xy[0].length; i++) s.add(xy[0][i], xy[1][i]);
                series.add(s);
            });
            JFreeChart c = chart(title, xLabel, "", series, null);
            NumberAxis x = (NumberAxis) c.getXYPlot().getDomainAxis();
            x.setAutoRangeStickyZero(false); // a point at 0 (a dense method) stays whole, not cut by the axis
            x.setLowerMargin(0.03);
            XYLineAndShapeRenderer r = (XYLineAndShapeRenderer) c.getXYPlot().getRenderer();
            for (int i = 0; i < series.size(); i++) {
                String name = series.get(i).getKey().toString();
                r.setSeriesPaint(i, colors.computeIfAbsent(name, k -> palette[colors.size() % palette.length]));
                if (name.endsWith("(reference)")) {
                    r.setSeriesStroke(i, new BasicStroke(1.5f, BasicStroke.CAP_BUTT, BasicStroke.JOIN_MITER, 10, new float[] {6, 4}, 0));
                    r.setSeriesShapesVisible(i, false);
                }
            }
            charts.add(c);
        });
        int w = WIDTH / 2, rows = (charts.size() + 1) / 2;
        write(png, WIDTH, rows * HEIGHT, g -> {
            for (int i = 0; i < charts.size(); i++) charts.get(i).draw(g, new java.awt.Rectangle(i % 2 * w, i / 2 * HEIGHT, w, HEIGHT));
        });
    }

    private static XYSeries series(String name, List<Double> y) {
        XYSeries s = new XYSeries(name);
        for (int i = 0; i < y.size(); i++) s.add(i + 1, y.get(i));
        return s;
    }

    private static JFreeChart chart(String title, String xLabel, String yLabel, List<XYSeries> series, Color color) {
        XYSeriesCollection data = new XYSeriesCollection();
        series.forEach(data::addSeries);
        JFreeChart c = ChartFactory.createXYLineChart(title, xLabel, yLabel, data, PlotOrientation.VERTICAL, series.size() > 1, false, false);
        c.setBackgroundPaint(Color.WHITE);
        XYPlot plot = c.getXYPlot();
        plot.setBackgroundPaint(Color.WHITE);
        plot.setDomainGridlinePaint(Color.LIGHT_GRAY);
        plot.setRangeGridlinePaint(Color.LIGHT_GRAY);
        ((NumberAxis) plot.getRangeAxis()).setAutoRangeIncludesZero(false);
        XYLineAndShapeRenderer r = new XYLineAndShapeRenderer(true, true);
        for (int i = 0; i < series.size(); i++) {
            if (color != null && series.size() == 1) r.setSeriesPaint(i, color);
            r.setSeriesStroke(i, new BasicStroke(1.5f));
            r.setSeriesShape(i, new Ellipse2D.Double(-2.5, -2.5, 5, 5));
            r.setSeriesShapesVisible(i, series.get(i).getItemCount() <= 60); // marks where they can be told apart
        }
        plot.setRenderer(r);
        return c;
    }

    /** The charts side by side, each a half-width panel, written atomically. */
    private static void save(Path png, JFreeChart... charts) throws IOException {
        int w = WIDTH / 2;
        write(png, w * charts.length, HEIGHT, g -> {
            for (int i = 0; i < charts.length; i++) charts[i].draw(g, new java.awt.Rectangle(i * w, 0, w, HEIGHT));
        });
    }

    private static void write(Path png, int width, int height, java.util.function.Consumer<Graphics2D> draw) throws IOException {
        System.setProperty("java.awt.headless", "true");
        BufferedImage img = new BufferedImage(width, height, BufferedImage.TYPE_INT_RGB);
        Graphics2D g = img.createGraphics();
        g.setColor(Color.WHITE);
        g.fillRect(0, 0, width, height);
        draw.accept(g);
        g.dispose();
        ByteArrayOutputStream bytes = new ByteArrayOutputStream();
        ImageIO.write(img, "png", bytes);
        OutputDirectory.writeFile(png, bytes.toByteArray());
    }
}
