package dev.topa.app;

import dev.topa.backend.Backend;
import dev.topa.serve.Classifier;
import dev.topa.serve.PredictServer;
import dev.topa.tensor.Device;
import java.net.InetAddress;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.concurrent.Callable;
import java.util.concurrent.CountDownLatch;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Option;

@Command(name = "serve", description = {"Serve models written by topa finetune or prune-adapt over HTTP: POST /v1/predict",
        "({\"texts\": [...]} or {\"pairs\": [[a, b], ...]}, optional \"task\"), GET /health, GET /metrics (Prometheus).",
        "Requests are micro-batched per model; a full queue answers 503. Ctrl-C (SIGTERM) drains and stops."})
final class ServeCommand implements Callable<Integer> {
    @Option(names = "--model", split = ",", description = "model directories, one per task (comma-separated)")
    List<Path> models;

    @Option(names = "--backbone", description = "instead of --model: one backbone (a model directory) for all the --adapters")
    Path backbone;

    @Option(names = "--adapters", split = ",", description = "with --backbone: directories of LoRA fine-tunings of that backbone, one per task;"
            + " each request runs the backbone with its task's adapters (kept apart, not merged)")
    List<Path> adapters;

    @Option(names = "--port", defaultValue = "8080", description = "port (0: any free one) (default: ${DEFAULT-VALUE})")
    int port;

    @Option(names = "--host", defaultValue = "127.0.0.1", description = "interface to listen on (default: ${DEFAULT-VALUE})")
    String host;

    @Option(names = "--workers", defaultValue = "1", description = "concurrent model calls per model (default: ${DEFAULT-VALUE})")
    int workers;

    @Option(names = "--max-batch", defaultValue = "32", description = "inputs per model call at most (default: ${DEFAULT-VALUE})")
    int maxBatch;

    @Option(names = "--max-wait-us", defaultValue = "2000", description = "how long a batch waits for more requests, microseconds (default: ${DEFAULT-VALUE})")
    long maxWaitMicros;

    @Option(names = "--queue", defaultValue = "256", description = "requests waiting per model before 503 (default: ${DEFAULT-VALUE})")
    int queue;

    @Option(names = "--max-texts", defaultValue = "64", description = "inputs per request at most (default: ${DEFAULT-VALUE})")
    int maxTexts;

    @Option(names = "--max-text-chars", defaultValue = "8192", description = "characters per text at most (default: ${DEFAULT-VALUE})")
    int maxTextChars;

    @Option(names = "--max-body-bytes", defaultValue = "1048576", description = "request body size at most (default: ${DEFAULT-VALUE})")
    int maxBodyBytes;

    @Option(names = "--header-timeout-ms", defaultValue = "5000", description = {"time from a request's first byte to the end of its headers;",
            "a slower client gets 408 and is cut off (default: ${DEFAULT-VALUE})"})
    long headerTimeoutMillis;

    @Option(names = {"--body-timeout-ms", "--read-timeout-ms"}, defaultValue = "10000",
            description = "time a client has to send its body after the headers, else 408 (default: ${DEFAULT-VALUE})")
    long bodyTimeoutMillis;

    @Option(names = "--idle-timeout-ms", defaultValue = "30000", description = "an idle keep-alive connection is closed after this (default: ${DEFAULT-VALUE})")
    long idleTimeoutMillis;

    @Option(names = "--request-timeout-ms", defaultValue = "30000", description = "a prediction not done by then is answered 503 (default: ${DEFAULT-VALUE})")
    long requestTimeoutMillis;

    @Option(names = "--max-connections", defaultValue = "1024", description = "open connections at most; beyond, 503 and close (default: ${DEFAULT-VALUE})")
    int maxConnections;

    @Option(names = "--max-header-bytes", defaultValue = "16384", description = "request headers' size at most, else 431 (default: ${DEFAULT-VALUE})")
    int maxHeaderBytes;

    @Option(names = "--max-headers", defaultValue = "100", description = "request headers at most, else 431 (default: ${DEFAULT-VALUE})")
    int maxHeaders;

    @Option(names = "--api-key-file", description = {"a file holding an API key: /v1/predict then needs \"Authorization: Bearer <key>\" (401",
            "otherwise); without it, listening beyond loopback prints a warning"})
    Path apiKeyFile;

    @Option(names = "--precision", defaultValue = "fp32", description = {"fp32 (the model's own outputs); bf16: bf16 weights and products",
            "with fp32 sums on the CPU (outputs within ~1e-2); auto: bf16 where measured faster than fp32 on this model's shapes here",
            "(default: ${DEFAULT-VALUE})"})
    Classifier.Precision precision;

    @Mixin
    ThreadsOption threads;

    @Mixin
    DeviceOption device;

    @Override
    public Integer call() throws Exception {
        threads.apply();
        Map<String, Long> positive = new LinkedHashMap<>();
        positive.put("--workers", (long) workers);
        positive.put("--max-batch", (long) maxBatch);
        positive.put("--queue", (long) queue);
        positive.put("--max-texts", (long) maxTexts);
        positive.put("--max-text-chars", (long) maxTextChars);
        positive.put("--max-body-bytes", (long) maxBodyBytes);
        positive.put("--header-timeout-ms", headerTimeoutMillis);
        positive.put("--body-timeout-ms", bodyTimeoutMillis);
        positive.put("--idle-timeout-ms", idleTimeoutMillis);
        positive.put("--request-timeout-ms", requestTimeoutMillis);
        positive.put("--max-connections", (long) maxConnections);
        positive.put("--max-header-bytes", (long) maxHeaderBytes);
        positive.put("--max-headers", (long) maxHeaders);
        positive.forEach((flag, v) -> {
            if (v < 1) throw new IllegalArgumentException(flag + " must be >= 1, got " + v);
        });
        if (maxWaitMicros < 0) throw new IllegalArgumentException("--max-wait-us must be >= 0, got " + maxWaitMicros);
        String apiKey = apiKeyFile == null ? null : readKey(apiKeyFile);
        if (apiKey == null && !InetAddress.getByName(host).isLoopbackAddress())
            System.err.println("warning: listening on " + host + " with no authentication: anyone who reaches this port can use the models;"
                    + " give --api-key-file, or put topa serve behind an authenticating proxy");
        if ((models == null) == (backbone == null) || (backbone == null) != (adapters == null))
            throw new IllegalArgumentException("give --model DIR[,DIR...], or --backbone DIR with --adapters DIR[,DIR...]");
        Backend be = device.backend();
        Map<String, Classifier> loaded = new LinkedHashMap<>();
        Classifier.MultiTask[] multi = {null};
        try {
            if (backbone != null) {
                multi[0] = Classifier.loadMultiTask(backbone, adapters, be, workers, precision);
                loaded.putAll(multi[0].tasks());
                System.err.printf(Locale.ROOT, "loaded %s as adapters on %s%n", loaded.keySet(), backbone);
            }
            for (Path dir : models == null ? List.<Path>of() : models) {
                Classifier c = Classifier.load(dir, be, workers, precision);
                String task = c.task().name().toLowerCase(Locale.ROOT);
                if (loaded.putIfAbsent(task, c) != null) {
                    c.close();
                    throw new IllegalArgumentException(dir + ": a second model for task " + task + " (one model per task)");
                }
                System.err.printf(Locale.ROOT, "loaded %s: %s%n", task, dir);
            }
            List<Device> devices = new ArrayList<>(List.of(Device.CPU));
            if (!be.device().isHostAccessible()) devices.add(be.device());
            PredictServer.Options o = PredictServer.Options.defaults().withBatching(maxBatch, maxWaitMicros, queue)
                    .withLimits(maxTexts, maxTextChars, maxBodyBytes).withTimeouts(requestTimeoutMillis, headerTimeoutMillis, bodyTimeoutMillis,
                            idleTimeoutMillis).withConnections(maxConnections, maxHeaderBytes, maxHeaders).withApiKey(apiKey);
            PredictServer server = new PredictServer(loaded, o, host, port, devices);
            CountDownLatch stopped = new CountDownLatch(1);
            Thread hook = new Thread(() -> {
                System.err.println("stopping: finishing queued requests");
                server.close();
                closeAll(loaded, multi[0], be);
                stopped.countDown();
            });
            Runtime.getRuntime().addShutdownHook(hook);
            System.out.printf(Locale.ROOT, "serving %s on http://%s:%d (POST /v1/predict, GET /health, GET /metrics)%n", loaded.keySet(), host,
                    server.port());
            System.out.flush();
            stopped.await();
            return 0;
        } catch (RuntimeException | Error e) {
            closeAll(loaded, multi[0], be);
            throw e;
        }
    }

    /** The key: the file's first line, trimmed. */
    private static String readKey(Path file) throws java.io.IOException {
        List<String> lines = dev.topa.io.TextFiles.lines(file);
        String key = lines.isEmpty() ? "" : lines.get(0).trim();
        if (key.length() < 16) throw new IllegalArgumentException("--api-key-file " + file + ": the key on its first line has "
                + key.length() + " characters; use 16 or more");
        return key;
    }

    private static void closeAll(Map<String, Classifier> loaded, Classifier.MultiTask multi, Backend be) {
        if (multi != null) multi.close(); // its classifiers and the backbone
        loaded.values().forEach(Classifier::close);
        be.close();
    }
}
