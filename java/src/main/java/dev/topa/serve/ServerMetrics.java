package dev.topa.serve;

import dev.topa.tensor.Device;
import dev.topa.tensor.MemoryCategory;
import dev.topa.tensor.MemoryTracker;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.TreeMap;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.atomic.AtomicLongArray;
import java.util.function.Supplier;

/**
 * The server's counters in Prometheus' text exposition format (version 0.0.4): requests by path and
 * status, the latency of predictions and the sizes of the batches the model ran (histograms),
 * queue depths, the process's resident memory and the tensor memory each device's tracker counts.
 */
final class ServerMetrics {
    private static final double[] LATENCY_BUCKETS = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
    private static final double[] BATCH_BUCKETS = {1, 2, 4, 8, 16, 32, 64, 128, 256};

    private final Map<String, AtomicLong> requests = new TreeMap<>(); // "path|code"
    private final Histogram latency = new Histogram(LATENCY_BUCKETS), batches = new Histogram(BATCH_BUCKETS);
    private final AtomicLong predicted = new AtomicLong();
    private final Map<String, Supplier<Integer>> queues = new TreeMap<>();
    private final List<Device> devices;

    ServerMetrics(List<Device> devices) {
        this.devices = List.copyOf(devices);
    }

    synchronized void request(String path, int code) {
        requests.computeIfAbsent(path + "|" + code, k -> new AtomicLong()).incrementAndGet();
    }

    void predictionSeconds(double s) {
        latency.observe(s);
    }

    void batch(int inputs) {
        batches.observe(inputs);
        predicted.addAndGet(inputs);
    }

    synchronized void queue(String model, Supplier<Integer> depth) {
        queues.put(model, depth);
    }

    /** Resident set size from /proc/self/statm (bytes; -1 where there is no /proc). */
    static long residentBytes() {
        try {
            String[] f = Files.readString(Path.of("/proc/self/statm")).trim().split("\\s+");
            return Long.parseLong(f[1]) * 4096;
        } catch (IOException | RuntimeException e) {
            return -1;
        }
    }

    synchronized String render() {
        StringBuilder b = new StringBuilder();
        b.append("# HELP topa_requests_total HTTP requests by path and status code.\n# TYPE topa_requests_total counter\n");
        requests.forEach((k, v) -> {
            String[] p = k.split("\\|");
            b.append("topa_requests_total{path=\"").append(p[0]).append("\",code=\"").append(p[1]).append("\"} ").append(v.get()).append('\n');
        });
        latency.render(b, "topa_predict_seconds", "Time from a prediction request's arrival to its answer.");
        batches.render(b, "topa_batch_inputs", "Inputs per model call (micro-batches).");
        b.append("# HELP topa_inputs_predicted_total Inputs the models predicted.\n# TYPE topa_inputs_predicted_total counter\n");
        b.append("topa_inputs_predicted_total ").append(predicted.get()).append('\n');
        b.append("# HELP topa_queue_depth Requests waiting for their model.\n# TYPE topa_queue_depth gauge\n");
        queues.forEach((m, d) -> b.append("topa_queue_depth{model=\"").append(m).append("\"} ").append(d.get()).append('\n'));
        b.append("# HELP topa_process_resident_bytes Resident memory of the process.\n# TYPE topa_process_resident_bytes gauge\n");
        b.append("topa_process_resident_bytes ").append(residentBytes()).append('\n');
        b.append("# HELP topa_tensor_bytes Live tensor memory by device and category.\n# TYPE topa_tensor_bytes gauge\n");
        for (Device d : devices)
            for (Map.Entry<MemoryCategory, long[]> e : MemoryTracker.of(d).snapshot().entrySet())
                b.append("topa_tensor_bytes{device=\"").append(d).append("\",category=\"").append(e.getKey().label()).append("\"} ")
                        .append(e.getValue()[0]).append('\n');
        return b.toString();
    }

    /** A cumulative histogram with fixed buckets. */
    private static final class Histogram {
        private final double[] bounds;
        private final AtomicLongArray counts;
        private final AtomicLong count = new AtomicLong();
        private double sum;

        Histogram(double[] bounds) {
            this.bounds = bounds;
            this.counts = new AtomicLongArray(bounds.length);
        }

        void observe(double v) {
            for (int i = 0; i < bounds.length; i++) if (v <= bounds[i]) counts.incrementAndGet(i);
            count.incrementAndGet();
            synchronized (this) {
                sum += v;
            }
        }

        synchronized void render(StringBuilder b, String name, String help) {
            b.append("# HELP ").append(name).append(' ').append(help).append("\n# TYPE ").append(name).append(" histogram\n");
            for (int i = 0; i < bounds.length; i++)
                b.append(name).append("_bucket{le=\"").append(fmt(bounds[i])).append("\"} ").append(counts.get(i)).append('\n');
            b.append(name).append("_bucket{le=\"+Inf\"} ").append(count.get()).append('\n');
            b.append(name).append("_sum ").append(String.format(Locale.ROOT, "%.6f", sum)).append('\n');
            b.append(name).append("_count ").append(count.get()).append('\n');
        }

        private static String fmt(double v) {
            return v == Math.rint(v) ? String.valueOf((long) v) : String.valueOf(v);
        }
    }
}
