package dev.topa.app;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import dev.topa.io.TextFiles;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.SplittableRandom;
import java.util.TreeMap;
import java.util.concurrent.Callable;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.atomic.AtomicLong;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

/**
 * A closed-loop load generator for {@code topa serve} (bench/serve-load.sh): N clients on loopback,
 * each sending its next request when the previous answer arrives, for a fixed time after a warm-up;
 * request texts (or pairs) drawn from a file of inputs. Reports throughput and latency percentiles
 * of the valid requests, status codes, and (with --invalid-every) how the server answered a share of
 * malformed or oversized requests mixed in.
 */
@Command(name = "loadtest", hidden = true, description = "Closed-loop load on a topa serve endpoint (bench/serve-load.sh).")
final class LoadTestCommand implements Callable<Integer> {
    @Option(names = "--url", required = true, description = "the /v1/predict URL")
    URI url;

    @Option(names = "--inputs", required = true, description = "one input per line; pair tasks: the two texts separated by a tab")
    Path inputs;

    @Option(names = "--clients", defaultValue = "8")
    int clients;

    @Option(names = "--seconds", defaultValue = "10", description = "measured time (after --warmup-seconds)")
    double seconds;

    @Option(names = "--warmup-seconds", defaultValue = "2")
    double warmup;

    @Option(names = "--requests", defaultValue = "0", description = "stop after this many requests in all instead of after --seconds")
    long requests;

    @Option(names = "--invalid-every", defaultValue = "0", description = "every k-th request is a bad one (malformed, empty, oversized, wrong types)")
    int invalidEvery;

    @Option(names = "--name", defaultValue = "load", description = "prefix of the printed names")
    String name;

    @Option(names = "--task", description = "the task field of every request (a server with several models)")
    String task;

    private static final ObjectMapper JSON = new ObjectMapper();

    @Override
    public Integer call() throws Exception {
        List<String> lines = TextFiles.lines(inputs).stream().filter(s -> !s.isBlank()).toList();
        if (lines.isEmpty()) throw new IllegalArgumentException(inputs + " has no inputs");
        boolean pairs = lines.get(0).contains("\t"); // bad requests take the shape the task expects, so each fault is its own
        HttpClient http = HttpClient.newBuilder().connectTimeout(Duration.ofSeconds(5)).build();
        Map<Integer, AtomicLong> codes = new ConcurrentHashMap<>();
        AtomicLong sent = new AtomicLong(), validServerErrors = new AtomicLong(), invalidAnswered4xx = new AtomicLong(), invalidSent = new AtomicLong();
        List<long[]> perClient = new ArrayList<>();
        long start = System.nanoTime(), measureFrom = start + (long) (warmup * 1e9), end = measureFrom + (long) (seconds * 1e9);
        List<Thread> threads = new ArrayList<>();
        long[] counts = new long[clients];
        for (int c = 0; c < clients; c++) {
            long[] lat = new long[1 << 18];
            perClient.add(lat);
            int client = c;
            threads.add(Thread.ofPlatform().start(() -> {
                SplittableRandom rnd = new SplittableRandom(client);
                int n = 0;
                while (true) {
                    long k = sent.incrementAndGet();
                    if (requests > 0 ? k > requests : System.nanoTime() > end) break;
                    boolean invalid = invalidEvery > 0 && k % invalidEvery == 0;
                    String body = invalid ? invalidBody(rnd, pairs) : validBody(lines.get(rnd.nextInt(lines.size())), task);
                    long t0 = System.nanoTime();
                    int code;
                    try {
                        code = http.send(HttpRequest.newBuilder(url).timeout(Duration.ofSeconds(60)).POST(HttpRequest.BodyPublishers.ofString(body))
                                .header("Content-Type", "application/json").build(), HttpResponse.BodyHandlers.ofString()).statusCode();
                    } catch (Exception e) {
                        code = -1; // connection refused or reset: counted, never retried
                    }
                    long t1 = System.nanoTime();
                    codes.computeIfAbsent(code, x -> new AtomicLong()).incrementAndGet();
                    if (invalid) {
                        invalidSent.incrementAndGet();
                        if (code >= 400 && code < 500) invalidAnswered4xx.incrementAndGet();
                    } else {
                        if (code >= 500 || code < 0) validServerErrors.incrementAndGet();
                        if ((requests > 0 || t0 >= measureFrom) && code == 200 && n < lat.length) lat[n++] = t1 - t0;
                    }
                }
                counts[client] = n;
            }));
        }
        for (Thread t : threads) t.join();
        double wall = requests > 0 ? (System.nanoTime() - start) * 1e-9 : seconds;
        long total = 0;
        for (long n : counts) total += n;
        long[] all = new long[(int) total];
        int at = 0;
        for (int c = 0; c < clients; c++) {
            System.arraycopy(perClient.get(c), 0, all, at, (int) counts[c]);
            at += (int) counts[c];
        }
        Arrays.sort(all);
        String p = name + "_c" + clients;
        System.out.printf(Locale.ROOT, "%s_requests_ok: %d%n", p, total);
        System.out.printf(Locale.ROOT, "%s_throughput_rps: %.1f%n", p, total / wall);
        if (total > 0) {
            System.out.printf(Locale.ROOT, "%s_p50_ms: %.2f%n", p, all[(int) (0.50 * (total - 1))] * 1e-6);
            System.out.printf(Locale.ROOT, "%s_p99_ms: %.2f%n", p, all[(int) (0.99 * (total - 1))] * 1e-6);
        }
        Map<Integer, Long> byCode = new TreeMap<>();
        codes.forEach((k, v) -> byCode.put(k, v.get()));
        System.out.printf(Locale.ROOT, "%s_status_codes: %s%n", p, byCode);
        System.out.printf(Locale.ROOT, "%s_valid_requests_5xx_or_failed: %d%n", p, validServerErrors.get());
        if (invalidEvery > 0) System.out.printf(Locale.ROOT, "%s_invalid_requests_answered_4xx: %d of %d%n", p, invalidAnswered4xx.get(),
                invalidSent.get());
        return 0;
    }

    private static String validBody(String line, String task) {
        ObjectNode o = JSON.createObjectNode();
        if (task != null) o.put("task", task);
        int tab = line.indexOf('\t');
        if (tab >= 0) o.putArray("pairs").addArray().add(line.substring(0, tab)).add(line.substring(tab + 1));
        else o.putArray("texts").add(line);
        return o.toString();
    }

    /** One of the kinds of bad request a server sees, shaped for the task (texts or pairs) so that each carries its own fault. */
    private static String invalidBody(SplittableRandom rnd, boolean pairs) {
        String f = pairs ? "pairs" : "texts";
        String big = "z".repeat(20_000);
        return switch (rnd.nextInt(6)) {
            case 0 -> "{\"" + f + "\": [\"unterminated";                                               // malformed JSON: 400
            case 1 -> pairs ? "{\"pairs\": [[\"\", \"b\"]]}" : "{\"texts\": [\"\"]}";                  // empty text: 400
            case 2 -> "{\"" + f + "\": 42}";                                                            // wrong type: 400
            case 3 -> pairs ? "{\"pairs\": [[1, 2]]}" : "{\"texts\": [null]}";                           // wrong element type: 400
            case 4 -> "{\"task\": \"no-such-task\", \"" + f + "\": []}";                              // unknown task: 404
            default -> pairs ? "{\"pairs\": [[\"" + big + "\", \"b\"]]}" : "{\"texts\": [\"" + big + "\"]}"; // text too long: 413
        };
    }
}
