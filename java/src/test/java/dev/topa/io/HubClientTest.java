package dev.topa.io;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.sun.net.httpserver.HttpServer;
import java.io.IOException;
import java.io.OutputStream;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.URI;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import java.util.SplittableRandom;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.CopyOnWriteArrayList;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** The hub client against a loopback HTTP fixture: never an external network. */
class HubClientTest {
    @TempDir
    Path tmp;

    private HttpServer server;
    private final Map<String, byte[]> files = new ConcurrentHashMap<>();
    private final List<String> ranges = new CopyOnWriteArrayList<>();

    @BeforeEach
    void start() throws IOException {
        server = HttpServer.create(new InetSocketAddress(InetAddress.getLoopbackAddress(), 0), 0);
        server.createContext("/", ex -> {
            String path = ex.getRequestURI().getPath();
            byte[] body = files.get(path);
            if (body == null) {
                ex.sendResponseHeaders(404, -1);
                ex.close();
                return;
            }
            String range = ex.getRequestHeaders().getFirst("Range");
            int from = 0;
            if (range != null) {
                ranges.add(range);
                from = Integer.parseInt(range.replaceAll("bytes=(\\d+)-.*", "$1"));
                ex.getResponseHeaders().add("Content-Range", "bytes " + from + "-" + (body.length - 1) + "/" + body.length);
            }
            ex.sendResponseHeaders(range != null ? 206 : 200, body.length - from);
            try (OutputStream out = ex.getResponseBody()) {
                out.write(body, from, body.length - from);
            }
        });
        server.start();
    }

    @AfterEach
    void stop() {
        server.stop(0);
    }

    private URI base() {
        return URI.create("http://127.0.0.1:" + server.getAddress().getPort());
    }

    private byte[] randomBytes(int n) {
        byte[] b = new byte[n];
        new SplittableRandom(n).nextBytes(b);
        return b;
    }

    private void serveRepo(String repo) {
        for (String f : HubClient.MODEL_FILES) files.put("/" + repo + "/resolve/main/" + f, randomBytes(f.length() * 1000 + 17));
    }

    @Test
    void downloadsIntoTheCacheThenWorksOffline() throws IOException {
        serveRepo("org/model");
        Path dir = new HubClient(base(), tmp, false).fetch("org/model");
        for (String f : HubClient.MODEL_FILES)
            assertArrayEquals(files.get("/org/model/resolve/main/" + f), Files.readAllBytes(dir.resolve(f)));
        server.stop(0);
        assertEquals(dir, new HubClient(base(), tmp, true).fetch("org/model"), "offline: served from the cache");
    }

    @Test
    void resumesAPartialDownloadWithARangeRequest() throws IOException {
        serveRepo("org/resume");
        byte[] full = files.get("/org/resume/resolve/main/model.safetensors");
        Path dir = tmp.resolve("org/resume");
        Files.createDirectories(dir);
        Files.write(dir.resolve("model.safetensors.part"), java.util.Arrays.copyOf(full, 5000));
        new HubClient(base(), tmp, false).fetch("org/resume");
        assertTrue(ranges.contains("bytes=5000-"), "asked for the rest only: " + ranges);
        assertArrayEquals(full, Files.readAllBytes(dir.resolve("model.safetensors")));
    }

    @Test
    void aConnectionLostMidFileIsNotCachedAndResumesLater() throws Exception {
        serveRepo("org/short");
        byte[] full = files.get("/org/short/resolve/main/config.json");
        // a raw server that declares the whole file, sends 3000 bytes and hangs up
        try (java.net.ServerSocket raw = new java.net.ServerSocket(0, 1, InetAddress.getLoopbackAddress())) {
            Thread t = new Thread(() -> {
                try (java.net.Socket c = raw.accept()) {
                    c.getInputStream().read(new byte[8192]);
                    OutputStream out = c.getOutputStream();
                    out.write(("HTTP/1.1 200 OK\r\nContent-Length: " + full.length + "\r\nConnection: close\r\n\r\n")
                            .getBytes(java.nio.charset.StandardCharsets.US_ASCII));
                    out.write(full, 0, 3000);
                    out.flush();
                } catch (IOException ignored) {
                    // the client went away first
                }
            });
            t.start();
            HubClient broken = new HubClient(URI.create("http://127.0.0.1:" + raw.getLocalPort()), tmp, false);
            var e = assertThrows(IOException.class, () -> broken.fetch("org/short"));
            assertTrue(e.getMessage().contains("stopped at 3000 of"), e.getMessage());
            t.join(10_000);
        }
        assertFalse(Files.exists(tmp.resolve("org/short/config.json")), "no partial file under the real name");
        new HubClient(base(), tmp, false).fetch("org/short");
        assertTrue(ranges.contains("bytes=3000-"), "resumed: " + ranges);
        assertArrayEquals(full, Files.readAllBytes(tmp.resolve("org/short/config.json")));
    }

    @Test
    void offlineWithoutCacheAndMissingFilesAreClearErrors() {
        var e = assertThrows(IOException.class, () -> new HubClient(base(), tmp, true).fetch("org/absent"));
        assertTrue(e.getMessage().contains("offline") && e.getMessage().contains("config.json"), e.getMessage());
        var e2 = assertThrows(IOException.class, () -> new HubClient(base(), tmp, false).fetch("org/absent"));
        assertTrue(e2.getMessage().contains("HTTP 404"), e2.getMessage());
        assertThrows(IllegalArgumentException.class, () -> new HubClient(base(), tmp, false).fetch("../etc"));
    }
}
