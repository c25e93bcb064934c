package dev.topa.glue;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import dev.topa.testing.TestData;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

class GlueTaskTest {
    @TempDir
    Path tmp;

    /** Row counts of the copies in shared/glue, as its README lists them. */
    @ParameterizedTest
    @CsvSource({"cola, 8551, 1043", "sst2, 67349, 872", "mrpc, 3668, 408", "stsb, 5749, 1500", "rte, 2490, 277",
            "wnli, 635, 71"})
    void readsTheRealFiles(String name, int train, int dev) throws IOException {
        Path g = TestData.glue();
        GlueTask t = GlueTask.parse(name);
        List<Example> tr = t.train(g), dv = t.dev(g, "dev");
        assertEquals(train, tr.size());
        assertEquals(dev, dv.size());
        assertEquals(t.isPair(), dv.get(0).textB() != null);
        for (Example e : dv)
            if (t.isRegression()) assertTrue(e.score() >= 0 && e.score() <= 5);
            else assertTrue(e.label() >= 0 && e.label() < t.numLabels());
    }

    @Test
    void mrpcSkipsTheByteOrderMarkAndStsbReadsScores() throws IOException {
        Path g = TestData.glue();
        Example m = GlueTask.MRPC.dev(g, "dev").get(0);
        assertTrue(m.textA().startsWith("He said the foodservice"), m.textA());
        Example s = GlueTask.STSB.dev(g, "dev").get(0);
        assertEquals(5.0f, s.score());
        assertEquals(5463, GlueTask.QNLI.dev(g, "dev").size());
    }

    @Test
    void mnliAndQqpLayoutsFromTheirDocumentedFormats() throws IOException {
        Path mnli = Files.createDirectories(tmp.resolve("MNLI"));
        String head = "index\tpromptID\tpairID\tgenre\ts1b\ts2b\ts1p\ts2p\tsentence1\tsentence2\tlabel1\tlabel2\tlabel3\tlabel4\tlabel5\tgold_label\n";
        Files.writeString(mnli.resolve("dev_matched.tsv"), head
                + "0\t1\t1e\tgov\t(a)\t(b)\t(A)\t(B)\tThe cat sat.\tA cat sat.\tentailment\tentailment\tneutral\tentailment\tentailment\tentailment\n");
        Example e = GlueTask.MNLI.dev(tmp, "dev_matched").get(0);
        assertEquals("The cat sat.", e.textA());
        assertEquals(GlueTask.MNLI.labels().indexOf("entailment"), e.label());
        Path qqp = Files.createDirectories(tmp.resolve("QQP"));
        Files.writeString(qqp.resolve("dev.tsv"), "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n7\t1\t2\tHow?\tWhy?\t1\n");
        assertEquals(1, GlueTask.QQP.dev(tmp, "dev").get(0).label());
        assertThrows(IllegalArgumentException.class, () -> GlueTask.MNLI.dev(tmp, "dev"));
    }

    @Test
    void malformedRowsNameFileAndLine() throws IOException {
        Path rte = Files.createDirectories(tmp.resolve("RTE"));
        Files.writeString(rte.resolve("dev.tsv"), "index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n1\ta\tb\tmaybe\n");
        var e = assertThrows(GlueFormatException.class, () -> GlueTask.RTE.dev(tmp, "dev"));
        assertTrue(e.getMessage().endsWith("dev.tsv:3: column 4: label 'maybe' is not one of [entailment, not_entailment]"), e.getMessage());
        Files.writeString(rte.resolve("dev.tsv"), "index\tsentence1\tsentence2\tlabel\n0\ta\tentailment\n");
        var e2 = assertThrows(GlueFormatException.class, () -> GlueTask.RTE.dev(tmp, "dev"));
        assertTrue(e2.getMessage().contains("dev.tsv:2: expected 4 tab-separated columns, found 3"), e2.getMessage());
        Path sts = Files.createDirectories(tmp.resolve("STS-B"));
        Files.writeString(sts.resolve("dev.tsv"), "i\tg\tf\ty\to\ts1\ts2\tsentence1\tsentence2\tscore\n0\tg\tf\ty\to\tx\tx\ta\tb\tfive\n");
        var e3 = assertThrows(GlueFormatException.class, () -> GlueTask.STSB.dev(tmp, "dev"));
        assertTrue(e3.getMessage().contains("dev.tsv:2: column 10: score 'five' is not a number"), e3.getMessage());
        var e4 = assertThrows(IOException.class, () -> GlueTask.COLA.dev(tmp, "dev"));
        assertTrue(e4.getMessage().contains("CoLA"), e4.getMessage());
        assertThrows(IllegalArgumentException.class, () -> GlueTask.parse("squad"));
        assertEquals(GlueTask.STSB, GlueTask.parse("STS-B"));
        assertNull(GlueTask.STSB.labels());
    }

    @Test
    void metricsAgainstKnownValues() {
        // scipy.stats documentation examples
        double[] x = {1, 2, 3, 4, 5}, y = {5, 6, 7, 8, 7};
        assertEquals(0.8320502943378437, Metric.PEARSON.regression(x, y), 1e-12);
        assertEquals(0.8207826816681233, Metric.SPEARMAN.regression(x, y), 1e-12);
        // scikit-learn's matthews_corrcoef example, labels +1/-1 as 1/0
        assertEquals(-1.0 / 3, Metric.MATTHEWS.classification(new int[] {1, 0, 1, 1}, new int[] {1, 1, 1, 0}), 1e-12);
        int[] gold = {0, 1, 1, 0, 1}, pred = {0, 1, 0, 1, 1};
        assertEquals(2.0 / 3, Metric.F1.classification(pred, gold), 1e-12);
        assertEquals(0.6, Metric.ACCURACY.classification(pred, gold), 1e-12);
        assertEquals(0.0, Metric.MATTHEWS.classification(new int[] {1, 1}, new int[] {0, 1}), "undefined MCC reads 0");
        assertThrows(IllegalArgumentException.class, () -> Metric.PEARSON.classification(pred, gold));
    }
}
