package dev.topa.train;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.awt.image.BufferedImage;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.Map;
import javax.imageio.ImageIO;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

class TrainingPlotTest {
    @Test
    void panelsGoTwoToARowAndEachIsDrawn(@TempDir Path dir) throws Exception {
        Map<String, Map<String, double[][]>> panels = new LinkedHashMap<>();
        for (String task : new String[] {"rte", "mrpc", "stsb"})
            panels.put(task + ": best dev metric", Map.of("Pruning-Adapter", new double[][] {{0, 50, 70}, {60, 58, 55}},
                    "dense (reference)", new double[][] {{0, 75}, {60, 60}}));
        Path png = dir.resolve("plot.png");
        TrainingPlot.panels(png, "removed %", panels);
        BufferedImage img = ImageIO.read(png.toFile());
        assertEquals(TrainingPlot.WIDTH, img.getWidth());
        assertEquals(2 * TrainingPlot.HEIGHT, img.getHeight(), "three panels take two rows");
        // the third panel (bottom left) has ink; the empty fourth place (bottom right) stays white
        assertTrue(inked(img, 0, TrainingPlot.HEIGHT, TrainingPlot.WIDTH / 2, TrainingPlot.HEIGHT) > 1000, "third panel drawn");
        assertEquals(0, inked(img, TrainingPlot.WIDTH / 2, TrainingPlot.HEIGHT, TrainingPlot.WIDTH / 2, TrainingPlot.HEIGHT), "nothing in the fourth place");
        assertNotEquals(0, Files.size(png));
        assertTrue(Files.list(dir).allMatch(p -> p.equals(png)), "no temp file left beside it");
    }

    private static int inked(BufferedImage img, int x0, int y0, int w, int h) {
        int n = 0;
        for (int y = y0; y < y0 + h; y++)
            for (int x = x0; x < x0 + w; x++) if ((img.getRGB(x, y) & 0xFFFFFF) != 0xFFFFFF) n++;
        return n;
    }
}
