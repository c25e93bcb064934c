package dev.topa.serve;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import dev.topa.glue.GlueTask;
import dev.topa.tensor.Device;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

class PredictServerTest {
    @TempDir
    static Path dir;
    static Classifier mrpc, sst2;
    static PredictServer server;
    static final HttpClient http = HttpClient.newHttpClient();
    static final ObjectMapper JSON = new ObjectMapper();

    @BeforeAll
    static void start() throws Exception {
        mrpc = Classifier.load(TinyModels.write(dir.resolve("mrpc"), GlueTask.MRPC, 1));
        sst2 = Classifier.load(TinyModels.write(dir.resolve("sst2"), GlueTask.SST2, 2));
        PredictServer.Options o = PredictServer.Options.defaults().withBatching(16, 1000, 64).withLimits(8, 200, 4096)
                .withTimeouts(30_000, 400, 400, 30_000);
        server = new PredictServer(Map.of("mrpc", mrpc, "sst2", sst2), o, "127.0.0.1", 0, List.of(Device.CPU));
    }

    @AfterAll
    static void stop() {
        server.close();
        mrpc.close();
        sst2.close();
    }

    static HttpResponse<String> post(String path, String body) throws Exception {
        return http.send(HttpRequest.newBuilder(URI.create("http://127.0.0.1:" + server.port() + path))
                .POST(HttpRequest.BodyPublishers.ofString(body)).header("Content-Type", "application/json").build(), HttpResponse.BodyHandlers.ofString());
    }

    static HttpResponse<String> get(String path) throws Exception {
        return http.send(HttpRequest.newBuilder(URI.create("http://127.0.0.1:" + server.port() + path)).GET().build(),
                HttpResponse.BodyHandlers.ofString());
    }

    @Test
    void predictionsAreTheClassifiersOwn() throws Exception {
        HttpResponse<String> r = post("/v1/predict", "{\"task\": \"sst2\", \"texts\": [\"a fine film\", \"dull\"]}");
        assertEquals(200, r.statusCode(), r.body());
        JsonNode preds = JSON.readTree(r.body()).get("predictions");
        assertEquals(2, preds.size());
        assertEquals(sst2.predict("a fine film").label(), preds.get(0).get("label").asText());
        assertEquals(sst2.predict("dull").probabilities().get("1"), (float) preds.get(1).get("probabilities").get("1").asDouble(), 1e-6);
        HttpResponse<String> p = post("/v1/predict", "{\"task\": \"MRPC\", \"pairs\": [[\"He left.\", \"He went away.\"]]}");
        assertEquals(200, p.statusCode(), p.body());
        assertEquals(mrpc.predict("He left.", "He went away.").label(), JSON.readTree(p.body()).get("predictions").get(0).get("label").asText());
    }

    @Test
    void healthAndMetrics() throws Exception {
        HttpResponse<String> h = get("/health");
        assertEquals(200, h.statusCode());
        assertEquals("ok", JSON.readTree(h.body()).get("status").asText());
        post("/v1/predict", "{\"task\": \"sst2\", \"texts\": [\"fine\"]}");
        HttpResponse<String> m = get("/metrics");
        assertEquals(200, m.statusCode());
        assertTrue(m.headers().firstValue("Content-Type").orElse("").startsWith("text/plain"), m.headers().toString());
        for (String s : new String[] {"topa_requests_total{code=\"200\",path=\"/v1/predict\"}", "topa_predict_seconds_bucket{le=\"+Inf\"}",
                "topa_batch_inputs_count", "topa_queue_depth{model=\"sst2\"}", "topa_process_resident_bytes", ",device=\"cpu\"}"})
            assertTrue(m.body().contains(s), s + " missing:\n" + m.body());
    }

    @Test
    void badRequestsGetA4xxWithTheReasonAndTheServerStaysUp() throws Exception {
        String longText = "x".repeat(201), big = "{\"task\": \"sst2\", \"texts\": [\"" + "y".repeat(5000) + "\"]}";
        Object[][] cases = {
            {"/v1/predict", "{not json", 400, "malformed JSON"},
            {"/v1/predict", "[1, 2]", 400, "JSON object"},
            {"/v1/predict", "{\"texts\": [\"a\"]}", 400, "\"task\" is required"},
            {"/v1/predict", "{\"task\": \"cola\", \"texts\": [\"a\"]}", 404, "unknown task"},
            {"/v1/predict", "{\"task\": 7, \"texts\": [\"a\"]}", 400, "must be a string"},
            {"/v1/predict", "{\"task\": \"sst2\", \"texts\": \"a\"}", 400, "must be an array"},
            {"/v1/predict", "{\"task\": \"sst2\", \"texts\": []}", 400, "is empty"},
            {"/v1/predict", "{\"task\": \"sst2\", \"texts\": [\"  \"]}", 400, "texts[0] is empty"},
            {"/v1/predict", "{\"task\": \"sst2\", \"texts\": [3]}", 400, "texts[0] must be a string"},
            {"/v1/predict", "{\"task\": \"sst2\", \"texts\": [\"" + longText + "\"]}", 413, "longer than 200"},
            {"/v1/predict", "{\"task\": \"sst2\", \"texts\": [\"a\",\"a\",\"a\",\"a\",\"a\",\"a\",\"a\",\"a\",\"a\"]}", 413, "too many inputs"},
            {"/v1/predict", big, 413, "over the limit"},
            {"/v1/predict", "{\"task\": \"mrpc\", \"texts\": [\"a\"]}", 400, "takes \"pairs\""},
            {"/v1/predict", "{\"task\": \"mrpc\", \"pairs\": [[\"a\"]]}", 400, "two strings"},
            {"/nowhere", "{}", 404, "no such path"},
        };
        for (Object[] c : cases) {
            HttpResponse<String> r = post((String) c[0], (String) c[1]);
            assertEquals((int) c[2], r.statusCode(), c[1] + " -> " + r.body());
            assertTrue(JSON.readTree(r.body()).get("error").asText().contains((String) c[3]), r.body());
        }
        assertEquals(405, get("/v1/predict").statusCode());
        assertEquals(405, post("/health", "{}").statusCode());
        assertEquals(200, post("/v1/predict", "{\"task\": \"sst2\", \"texts\": [\"still up\"]}").statusCode());
    }

    /** A client that stalls halfway through its body gets 408 with the reason (the body timeout is 400 ms here), and the server stays up. */
    @Test
    void aClientTooSlowToSendItsBodyGets408() throws Exception {
        try (java.net.Socket socket = new java.net.Socket("127.0.0.1", server.port())) {
            socket.setSoTimeout(10_000);
            String body = "{\"task\": \"sst2\", \"texts\": [\"slow\"]}";
            var out = socket.getOutputStream();
            out.write(("POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: " + body.length()
                    + "\r\n\r\n" + body.substring(0, 10)).getBytes(java.nio.charset.StandardCharsets.UTF_8));
            out.flush();
            long t0 = System.nanoTime();
            var reader = new java.io.BufferedReader(new java.io.InputStreamReader(socket.getInputStream(), java.nio.charset.StandardCharsets.UTF_8));
            String status = reader.readLine();
            double waited = (System.nanoTime() - t0) * 1e-6;
            assertTrue(status != null && status.startsWith("HTTP/1.1 408"), "status line: " + status);
            assertTrue(waited >= 300 && waited < 5000, "answered after " + waited + " ms");
            int length = -1;
            for (String line; !(line = reader.readLine()).isEmpty(); )
                if (line.toLowerCase(java.util.Locale.ROOT).startsWith("content-length:")) length = Integer.parseInt(line.substring(15).trim());
            char[] answer = new char[length];
            for (int got = 0; got < length; ) got += reader.read(answer, got, length - got);
            assertTrue(new String(answer).contains("did not arrive within 400 ms"), new String(answer));
        }
        assertEquals(200, post("/v1/predict", "{\"task\": \"sst2\", \"texts\": [\"still up\"]}").statusCode());
    }

    /** A queue of one and batches of one: a burst of concurrent requests gets answers and quick 503s, nothing else. */
    @Test
    void overloadIsAnsweredWith503() throws Exception {
        PredictServer.Options o = PredictServer.Options.defaults().withBatching(1, 0, 1).withLimits(8, 200, 4096);
        try (PredictServer small = new PredictServer(Map.of("sst2", sst2), o, "127.0.0.1", 0, List.of(Device.CPU))) {
            ExecutorService pool = Executors.newFixedThreadPool(48);
            List<Future<Integer>> codes = new ArrayList<>();
            for (int i = 0; i < 48; i++) {
                String body = "{\"texts\": [\"" + "a rather long sentence to keep the model busy ".repeat(3) + i + "\"]}";
                codes.add(pool.submit(() -> http.send(HttpRequest.newBuilder(URI.create("http://127.0.0.1:" + small.port() + "/v1/predict"))
                        .POST(HttpRequest.BodyPublishers.ofString(body)).build(), HttpResponse.BodyHandlers.ofString()).statusCode()));
            }
            int ok = 0, refused = 0;
            for (Future<Integer> f : codes) {
                int c = f.get();
                if (c == 200) ok++;
                else if (c == 503) refused++;
                else throw new AssertionError("unexpected status " + c);
            }
            pool.shutdown();
            assertTrue(ok >= 1 && refused >= 1, ok + " answered, " + refused + " refused");
        }
    }

    @Test
    void closingStopsListening() throws Exception {
        PredictServer s = new PredictServer(Map.of("sst2", sst2), PredictServer.Options.defaults(), "127.0.0.1", 0, List.of(Device.CPU));
        int port = s.port();
        s.close();
        assertThrows(java.io.IOException.class, () -> http.send(HttpRequest.newBuilder(URI.create("http://127.0.0.1:" + port + "/health")).GET()
                .build(), HttpResponse.BodyHandlers.ofString()));
    }
}
