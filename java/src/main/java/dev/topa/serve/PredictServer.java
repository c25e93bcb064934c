package dev.topa.serve;

import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import com.sun.net.httpserver.HttpExchange;
import com.sun.net.httpserver.HttpServer;
import dev.topa.tensor.Device;
import java.io.IOException;
import java.io.InputStream;
import java.net.InetSocketAddress;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;

/**
 * JSON over HTTP for one or more {@link TextModel}s (topa's {@link Classifier}s), on the JDK's HttpServer (no HTTP parsing of
 * our own): {@code POST /v1/predict} with {@code {"texts": [...]}} or {@code {"pairs": [[a, b], ...]}}
 * and an optional {@code "task"}, {@code GET /health}, {@code GET /metrics} (Prometheus text).
 * Requests for a model are micro-batched ({@link MicroBatcher}); its bounded queue answers 503 when
 * full. Every bad request gets a 4xx with a message: malformed JSON, wrong field types, empty or
 * oversized texts, too many texts, a body over the limit, an unknown task, a wrong method or path.
 * Handlers run on virtual threads. A client too slow to send its body gets 408 with a message after
 * {@link Options#bodyTimeoutMillis} (and the connection closed); one too slow to send even its
 * headers is cut off by the JDK server's request timeout (sun.net.httpserver.maxReqTime, set by
 * {@code topa serve}): no handler has seen it, so there is no one to answer.
 */
public final class PredictServer implements AutoCloseable {
    /** Limits and batching knobs. */
    public record Options(int maxBatch, long maxWaitMicros, int queueCapacity, int maxTexts, int maxTextChars, int maxBodyBytes,
            long requestTimeoutMillis, long bodyTimeoutMillis) {
        public static Options defaults() {
            return new Options(32, 2000, 256, 64, 8192, 1 << 20, 30_000, 10_000);
        }
    }

    private static final ObjectMapper JSON = new ObjectMapper();

    private final Map<String, TextModel> models;
    private final Map<String, MicroBatcher> batchers = new LinkedHashMap<>();
    private final Options options;
    private final ServerMetrics metrics;
    private final HttpServer server;
    private final ExecutorService handlers = Executors.newVirtualThreadPerTaskExecutor();
    private volatile boolean stopping;

    /** models by task name (lower case, e.g. "mrpc"); the server listens on port (0: any free port) of the loopback or all interfaces. */
    public PredictServer(Map<String, ? extends TextModel> models, Options options, String host, int port, List<Device> devices) throws IOException {
        if (models.isEmpty()) throw new IllegalArgumentException("no model to serve");
        this.models = Map.copyOf(models);
        this.options = options;
        this.metrics = new ServerMetrics(devices);
        for (var e : models.entrySet()) {
            MicroBatcher b = new MicroBatcher(e.getKey(), e.getValue()::predictBatch, options.queueCapacity(), options.maxBatch(),
                    options.maxWaitMicros(), metrics);
            batchers.put(e.getKey(), b);
            metrics.queue(e.getKey(), b::queued);
        }
        server = HttpServer.create(new InetSocketAddress(host, port), 128);
        server.setExecutor(handlers);
        server.createContext("/", this::handle);
        server.start();
    }

    public int port() {
        return server.getAddress().getPort();
    }

    private void handle(HttpExchange ex) throws IOException {
        String path = ex.getRequestURI().getPath();
        int code;
        try {
            code = switch (path) {
                case "/v1/predict" -> predict(ex);
                case "/health" -> get(ex, () -> health());
                case "/metrics" -> get(ex, metrics::render);
                default -> error(ex, 404, "no such path: " + path + " (POST /v1/predict, GET /health, GET /metrics)");
            };
        } catch (RuntimeException | Error e) {
            code = error(ex, 500, "internal error: " + e);
        } finally {
            ex.close();
        }
        metrics.request(switch (path) {
            case "/v1/predict", "/health", "/metrics" -> path;
            default -> "other";
        }, code);
    }

    private int get(HttpExchange ex, java.util.function.Supplier<String> body) throws IOException {
        if (!ex.getRequestMethod().equals("GET")) return error(ex, 405, ex.getRequestURI().getPath() + " takes GET");
        boolean json = ex.getRequestURI().getPath().equals("/health");
        return send(ex, 200, json ? "application/json" : "text/plain; version=0.0.4", body.get());
    }

    private String health() {
        ObjectNode h = JSON.createObjectNode();
        h.put("status", stopping ? "stopping" : "ok");
        ArrayNode m = h.putArray("models");
        models.forEach((name, c) -> m.addObject().put("task", name).put("pairs", c.task().isPair()).put("regression", c.task().isRegression()));
        return h.toString();
    }

    private int predict(HttpExchange ex) throws IOException {
        long t0 = System.nanoTime();
        if (!ex.getRequestMethod().equals("POST")) return error(ex, 405, "/v1/predict takes POST with a JSON body");
        if (stopping) return error(ex, 503, "server is shutting down");
        String length = ex.getRequestHeaders().getFirst("Content-Length");
        if (length != null && parseLong(length) > options.maxBodyBytes())
            return error(ex, 413, "body of " + length + " bytes is over the limit of " + options.maxBodyBytes());
        byte[] body;
        // the body is read on a thread of its own so a client that stalls mid-body gets an answer, not a hung handler
        java.util.concurrent.Future<byte[]> reading = handlers.submit(() -> {
            try (InputStream in = ex.getRequestBody()) {
                return in.readNBytes(options.maxBodyBytes() + 1);
            }
        });
        try {
            body = reading.get(options.bodyTimeoutMillis(), TimeUnit.MILLISECONDS);
        } catch (TimeoutException e) {
            reading.cancel(false); // no interrupt: it would close the socket before the answer goes out; closing the exchange ends the read
            return error(ex, 408, "the request body did not arrive within " + options.bodyTimeoutMillis() + " ms");
        } catch (ExecutionException e) {
            throw e.getCause() instanceof IOException io ? io : new IOException(e.getCause());
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new IOException("interrupted while reading the request body", e);
        }
        if (body.length > options.maxBodyBytes()) return error(ex, 413, "body is over the limit of " + options.maxBodyBytes() + " bytes");
        JsonNode req;
        try {
            req = JSON.readTree(body);
        } catch (JsonProcessingException e) {
            return error(ex, 400, "malformed JSON: " + e.getOriginalMessage());
        }
        if (req == null || !req.isObject()) return error(ex, 400, "the body must be a JSON object with \"texts\" or \"pairs\"");
        String task;
        if (req.has("task")) {
            if (!req.get("task").isTextual()) return error(ex, 400, "\"task\" must be a string");
            task = req.get("task").asText().toLowerCase(Locale.ROOT);
            if (!models.containsKey(task)) return error(ex, 404, "unknown task '" + task + "': this server has " + models.keySet());
        } else if (models.size() == 1) {
            task = models.keySet().iterator().next();
        } else {
            return error(ex, 400, "\"task\" is required: this server has " + models.keySet());
        }
        List<Classifier.Input> inputs;
        try {
            inputs = inputs(req, models.get(task));
        } catch (IllegalArgumentException e) {
            return error(ex, e.getMessage().startsWith("too many") || e.getMessage().contains("longer than") ? 413 : 400, e.getMessage());
        }
        MicroBatcher.Job job = batchers.get(task).submit(inputs);
        if (job == null) {
            ex.getResponseHeaders().set("Retry-After", "1");
            return error(ex, 503, "overloaded: " + options.queueCapacity() + " requests are already waiting for " + task);
        }
        List<Classifier.Prediction> out;
        try {
            out = job.result().get(options.requestTimeoutMillis(), TimeUnit.MILLISECONDS);
        } catch (TimeoutException e) {
            return error(ex, 503, "the prediction took longer than " + options.requestTimeoutMillis() + " ms");
        } catch (ExecutionException e) {
            Throwable c = e.getCause();
            return c instanceof IllegalArgumentException ? error(ex, 400, c.getMessage()) : error(ex, 500, "prediction failed: " + c);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            return error(ex, 503, "interrupted");
        }
        ObjectNode res = JSON.createObjectNode();
        res.put("task", task);
        ArrayNode preds = res.putArray("predictions");
        for (Classifier.Prediction p : out) {
            ObjectNode o = preds.addObject();
            if (p.value() != null) {
                o.put("value", p.value());
            } else {
                o.put("label", p.label());
                ObjectNode probs = o.putObject("probabilities");
                p.probabilities().forEach(probs::put);
            }
        }
        metrics.predictionSeconds((System.nanoTime() - t0) * 1e-9);
        return send(ex, 200, "application/json", res.toString());
    }

    /** The request's inputs, checked against the limits and the task's kind (single texts or pairs). */
    private List<Classifier.Input> inputs(JsonNode req, TextModel c) {
        boolean pairs = c.task().isPair();
        String field = pairs ? "pairs" : "texts", other = pairs ? "texts" : "pairs";
        if (req.has(other) && !req.has(field))
            throw new IllegalArgumentException(c.task().folder() + " takes \"" + field + "\", not \"" + other + "\"");
        JsonNode arr = req.get(field);
        if (arr == null || !arr.isArray()) throw new IllegalArgumentException("\"" + field + "\" must be an array");
        if (arr.isEmpty()) throw new IllegalArgumentException("\"" + field + "\" is empty");
        if (arr.size() > options.maxTexts())
            throw new IllegalArgumentException("too many inputs: " + arr.size() + " (the limit is " + options.maxTexts() + ")");
        List<Classifier.Input> out = new ArrayList<>(arr.size());
        for (int i = 0; i < arr.size(); i++) {
            JsonNode n = arr.get(i);
            if (pairs) {
                if (!n.isArray() || n.size() != 2) throw new IllegalArgumentException("pairs[" + i + "] must be an array of two strings");
                out.add(new Classifier.Input(text(n.get(0), "pairs[" + i + "][0]"), text(n.get(1), "pairs[" + i + "][1]")));
            } else {
                out.add(new Classifier.Input(text(n, "texts[" + i + "]")));
            }
        }
        return out;
    }

    private String text(JsonNode n, String where) {
        if (!n.isTextual()) throw new IllegalArgumentException(where + " must be a string");
        String s = n.asText();
        if (s.isBlank()) throw new IllegalArgumentException(where + " is empty");
        if (s.length() > options.maxTextChars())
            throw new IllegalArgumentException(where + " is longer than " + options.maxTextChars() + " characters (" + s.length() + ")");
        return s;
    }

    private static long parseLong(String s) {
        try {
            return Long.parseLong(s.trim());
        } catch (NumberFormatException e) {
            return -1;
        }
    }

    private static int error(HttpExchange ex, int code, String message) throws IOException {
        return send(ex, code, "application/json", JSON.createObjectNode().put("error", message).toString());
    }

    private static int send(HttpExchange ex, int code, String type, String body) throws IOException {
        byte[] b = body.getBytes(StandardCharsets.UTF_8);
        ex.getResponseHeaders().set("Content-Type", type);
        ex.sendResponseHeaders(code, b.length);
        try (var out = ex.getResponseBody()) { // closed here, so the answer goes out before the exchange drains what is left of the request
            out.write(b);
        }
        return code;
    }

    /** Graceful: refuses new predictions (503), lets queued ones finish, then stops listening. Models stay open (the caller's). */
    @Override
    public void close() {
        stopping = true;
        batchers.values().forEach(MicroBatcher::close);
        server.stop(1);
        handlers.shutdown();
        try {
            handlers.awaitTermination(5, TimeUnit.SECONDS);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }
}
