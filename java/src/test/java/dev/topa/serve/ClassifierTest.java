package dev.topa.serve;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.topa.glue.GlueTask;
import dev.topa.tensor.Device;
import dev.topa.tensor.MemoryTracker;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import javax.tools.JavaCompiler;
import javax.tools.ToolProvider;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

class ClassifierTest {
    @TempDir
    static Path dir;
    static Path mrpc, sst2, stsb;

    @BeforeAll
    static void models() throws Exception {
        mrpc = TinyModels.write(dir.resolve("mrpc"), GlueTask.MRPC, 1);
        sst2 = TinyModels.write(dir.resolve("sst2"), GlueTask.SST2, 2);
        stsb = TinyModels.write(dir.resolve("stsb"), GlueTask.STSB, 3);
    }

    /** The Javadoc's usage example, cut out of the source and compiled against the real API. */
    @Test
    void theJavadocExampleCompiles() throws Exception {
        String src = Files.readString(Path.of("src/main/java/dev/topa/serve/Classifier.java"));
        Matcher m = Pattern.compile("<pre>\\{@code\\n(.*?)\\n \\* }</pre>", Pattern.DOTALL).matcher(src);
        assertTrue(m.find(), "no {@code} example in Classifier's Javadoc");
        String body = m.group(1).replaceAll("(?m)^ \\* ?", "");
        assertTrue(body.lines().count() >= 8 && body.lines().count() <= 12, "about ten lines:\n" + body);
        Path pkg = Files.createDirectories(dir.resolve("example/ex"));
        Files.writeString(pkg.resolve("Example.java"), "package ex;\nimport dev.topa.serve.Classifier;\nimport java.nio.file.Path;\n"
                + "import java.util.List;\nclass Example {\n    static void run() {\n" + body + "\n    }\n}\n");
        JavaCompiler javac = ToolProvider.getSystemJavaCompiler();
        java.io.ByteArrayOutputStream err = new java.io.ByteArrayOutputStream();
        int rc = javac.run(null, null, err, "-cp", System.getProperty("java.class.path"), "-d", dir.resolve("example-classes").toString(),
                pkg.resolve("Example.java").toString());
        assertEquals(0, rc, "the example does not compile:\n" + err + "\n" + body);
    }

    /** The CUDA path (encoder on the GPU, head on the CPU) answers what the CPU answers; skipped, with the reason, without a GPU. */
    @Test
    void onAGpuTheClassifierAnswersWhatTheCpuAnswers() {
        org.junit.jupiter.api.Assumptions.assumeTrue(dev.topa.backend.cuda.CudaDriver.get().isPresent(),
                () -> "no GPU: " + dev.topa.backend.cuda.CudaDriver.unavailableReason());
        try (Classifier cpu = Classifier.load(mrpc); dev.topa.backend.cuda.CudaBackend gpu = dev.topa.backend.cuda.CudaBackend.open(0);
                Classifier onGpu = Classifier.load(mrpc, gpu, 2)) {
            List<Classifier.Input> in = List.of(new Classifier.Input("The cat sat.", "A cat was sitting."), new Classifier.Input("a", "b c d e"));
            List<Classifier.Prediction> a = cpu.predictBatch(in), b = onGpu.predictBatch(in);
            for (int i = 0; i < in.size(); i++)
                for (String label : cpu.labels())
                    assertEquals(a.get(i).probabilities().get(label), b.get(i).probabilities().get(label), 2e-2, "input " + i + " label " + label);
        }
    }

    @Test
    void predictionsOfEveryKind() {
        try (Classifier c = Classifier.load(mrpc)) {
            Classifier.Prediction p = c.predict("The cat sat on the mat.", "A cat was sitting on a mat.");
            assertTrue(c.labels().contains(p.label()), p.toString());
            double sum = p.probabilities().values().stream().mapToDouble(Float::doubleValue).sum();
            assertEquals(1.0, sum, 1e-5);
            assertNull(p.value());
        }
        try (Classifier c = Classifier.load(stsb)) {
            Classifier.Prediction p = c.predict("A man plays a guitar.", "Someone is playing music.");
            assertNotNull(p.value());
            assertNull(p.label());
            assertTrue(Float.isFinite(p.value()));
        }
    }

    /** bf16 products (where the CPU has them) move the probabilities by little: the same labels here, probabilities within 2e-2. */
    @Test
    void bf16PrecisionStaysCloseToFp32() {
        List<Classifier.Input> in = List.of(new Classifier.Input("a gripping film"), new Classifier.Input("the plot is thin"),
                new Classifier.Input("fine"));
        try (Classifier a = Classifier.load(sst2); Classifier b = Classifier.load(sst2, dev.topa.backend.cpu.CpuBackend.create(), 1,
                Classifier.Precision.BF16)) {
            List<Classifier.Prediction> p = a.predictBatch(in), q = b.predictBatch(in);
            for (int i = 0; i < in.size(); i++)
                for (String k : p.get(i).probabilities().keySet())
                    assertEquals(p.get(i).probabilities().get(k), q.get(i).probabilities().get(k), 2e-2);
        }
    }

    @Test
    void badInputsAreRefusedWithTheReason() {
        try (Classifier pair = Classifier.load(mrpc); Classifier single = Classifier.load(sst2)) {
            assertTrue(assertThrows(IllegalArgumentException.class, () -> single.predict("  ")).getMessage().contains("empty"));
            assertTrue(assertThrows(IllegalArgumentException.class, () -> pair.predict("only one")).getMessage().contains("second text"));
            assertTrue(assertThrows(IllegalArgumentException.class, () -> single.predict("a", "b")).getMessage().contains("not pairs"));
        }
    }

    /** 8 threads at once get exactly what one thread gets; the activation arenas are reused (tensor memory flat). */
    @Test
    void threadsShareOneModelAndGetTheSameAnswers() throws Exception {
        List<Classifier.Input> inputs = new ArrayList<>();
        String[] words = {"good", "bad", "a long and winding film that never ends", "fine", "terrible acting", "wonderful"};
        for (int i = 0; i < 24; i++) inputs.add(new Classifier.Input(words[i % words.length] + " " + i));
        try (Classifier c = Classifier.load(sst2, dev.topa.backend.cpu.CpuBackend.create(), 4)) {
            List<Classifier.Prediction> expected = c.predictBatch(inputs);
            ExecutorService pool = Executors.newFixedThreadPool(8);
            assertTrue(sameAnswers(c, inputs, expected, pool));
            long live = tensorBytes(); // every worker has run: its arenas are at their size
            assertTrue(sameAnswers(c, inputs, expected, pool));
            pool.shutdown();
            assertEquals(live, tensorBytes(), "tensor memory grew across calls");
            // the kernels' per-thread scratch grows to the largest shape a worker thread has seen, then stays: bounded by the workers
            assertTrue(MemoryTracker.of(Device.CPU).live(dev.topa.tensor.MemoryCategory.WORKSPACE) < (8L << 20),
                    MemoryTracker.of(Device.CPU).report());
        }
    }

    private static long tensorBytes() {
        MemoryTracker t = MemoryTracker.of(Device.CPU);
        return t.totalLive() - t.live(dev.topa.tensor.MemoryCategory.WORKSPACE);
    }

    private static boolean sameAnswers(Classifier c, List<Classifier.Input> inputs, List<Classifier.Prediction> expected, ExecutorService pool)
            throws Exception {
        List<Future<Boolean>> same = new ArrayList<>();
        for (int t = 0; t < 8; t++) {
            int shift = t;
            same.add(pool.submit(() -> {
                for (int k = 0; k < 10; k++) {
                    int i = (shift + k) % inputs.size();
                    if (!c.predict(inputs.get(i).text()).equals(expected.get(i))) return false;
                }
                return true;
            }));
        }
        boolean all = true;
        for (Future<Boolean> f : same) all &= f.get();
        return all;
    }
}
