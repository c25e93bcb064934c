package dev.topa.glue;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.sun.net.httpserver.HttpServer;
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.OutputStream;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.URI;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.zip.ZipEntry;
import java.util.zip.ZipOutputStream;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** GLUE download against a loopback fixture serving synthetic task files (never the network). */
class GlueDownloadTest {
    @TempDir
    Path tmp;

    private HttpServer server;
    private URI base;
    private final Map<String, byte[]> files = new ConcurrentHashMap<>();
    private final List<String> requests = new CopyOnWriteArrayList<>();

    @BeforeEach
    void start() throws IOException {
        server = HttpServer.create(new InetSocketAddress(InetAddress.getLoopbackAddress(), 0), 0);
        server.createContext("/", ex -> {
            String path = ex.getRequestURI().getPath();
            requests.add(path);
            byte[] body = files.get(path);
            if (body == null) {
                ex.sendResponseHeaders(404, -1);
                ex.close();
                return;
            }
            ex.sendResponseHeaders(200, body.length);
            try (OutputStream out = ex.getResponseBody()) {
                out.write(body);
            }
        });
        server.start();
        base = URI.create("http://127.0.0.1:" + server.getAddress().getPort() + "/glue/");
    }

    @AfterEach
    void stop() {
        server.stop(0);
    }

    private static byte[] zip(Map<String, String> entries) throws IOException {
        ByteArrayOutputStream bytes = new ByteArrayOutputStream();
        try (ZipOutputStream z = new ZipOutputStream(bytes)) {
            for (var e : entries.entrySet()) {
                z.putNextEntry(new ZipEntry(e.getKey()));
                z.write(e.getValue().getBytes(StandardCharsets.UTF_8));
                z.closeEntry();
            }
        }
        return bytes.toByteArray();
    }

    private static String rte(int n) {
        StringBuilder sb = new StringBuilder("index\tsentence1\tsentence2\tlabel\n");
        for (int i = 0; i < n; i++)
            sb.append(i).append("\tpremise number ").append(i).append("\thypothesis ").append(i).append('\t')
                    .append(i % 2 == 0 ? "entailment" : "not_entailment").append('\n');
        return sb.toString();
    }

    @Test
    void zippedTaskIsFetchedOnceAndReadable() throws IOException {
        files.put("/glue/RTE.zip", zip(Map.of("RTE/train.tsv", rte(5), "RTE/dev.tsv", rte(3), "RTE/test.tsv", "index\tsentence1\tsentence2\n")));
        Path cache = tmp.resolve("cache");
        Path data = new GlueDownload(base, cache).fetch(GlueTask.RTE);
        assertEquals(5, GlueTask.RTE.train(data).size());
        assertEquals(3, GlueTask.RTE.dev(data, "dev").size());
        assertEquals(1, GlueTask.RTE.dev(data, "dev").get(1).label());
        int before = requests.size();
        new GlueDownload(base, cache).fetch(GlueTask.RTE);
        assertEquals(before, requests.size(), "a cached task is not downloaded again");
    }

    @Test
    void mrpcIsBuiltFromMicrosoftFilesAndGlueDevIds() throws IOException {
        String header = "\uFEFFQuality\t#1 ID\t#2 ID\t#1 String\t#2 String\n";
        files.put("/glue/msr_paraphrase_train.txt", (header + "1\t11\t12\tone a\tone b\n0\t21\t22\ttwo a\ttwo b\n1\t31\t32\tthree a\tthree b\n")
                .getBytes(StandardCharsets.UTF_8));
        files.put("/glue/msr_paraphrase_test.txt", (header + "1\t41\t42\tfour a\tfour b\n").getBytes(StandardCharsets.UTF_8));
        files.put("/glue/mrpc_dev_ids.tsv", "21\t22\n".getBytes(StandardCharsets.UTF_8));
        Path data = new GlueDownload(base, tmp.resolve("cache")).fetch(GlueTask.MRPC);
        List<Example> train = GlueTask.MRPC.train(data), dev = GlueTask.MRPC.dev(data, "dev");
        assertEquals(List.of("one a", "three a"), train.stream().map(Example::textA).toList());
        assertEquals(List.of("two a"), dev.stream().map(Example::textA).toList());
        assertEquals(0, dev.get(0).label());
    }

    @Test
    void badDownloadsLeaveNoTaskFolder() throws IOException {
        Path cache = tmp.resolve("cache");
        var missing = assertThrows(IOException.class, () -> new GlueDownload(base, cache).fetch(GlueTask.COLA));
        assertTrue(missing.getMessage().contains("CoLA.zip") && missing.getMessage().contains("404"), missing.getMessage());
        files.put("/glue/SST-2.zip", "this is not a zip archive".getBytes(StandardCharsets.UTF_8));
        var corrupt = assertThrows(IOException.class, () -> new GlueDownload(base, cache).fetch(GlueTask.SST2));
        assertTrue(corrupt.getMessage().contains("SST-2"), corrupt.getMessage());
        files.put("/glue/WNLI.zip", zip(Map.of("WNLI/train.tsv", rte(2))));
        var incomplete = assertThrows(IOException.class, () -> new GlueDownload(base, cache).fetch(GlueTask.WNLI));
        assertTrue(incomplete.getMessage().contains("dev.tsv"), incomplete.getMessage());
        files.put("/glue/STS-B.zip", zip(Map.of("STS-B/../../evil.tsv", "x")));
        assertThrows(IOException.class, () -> new GlueDownload(base, cache).fetch(GlueTask.STSB));
        for (String f : List.of("CoLA", "SST-2", "WNLI", "STS-B")) assertFalse(Files.exists(cache.resolve(f)), f + " left behind");
        assertFalse(Files.exists(tmp.resolve("evil.tsv")));
        try (var s = Files.list(cache)) {
            assertTrue(s.noneMatch(p -> p.getFileName().toString().startsWith(".") && !p.getFileName().toString().equals(".downloads")),
                    "no temporary folders left");
        }
    }
}
