package dev.topa.serve;

import dev.topa.tensor.Device;
import dev.topa.tensor.MemoryCategory;
import dev.topa.tensor.MemoryTracker;
import io.prometheus.metrics.core.metrics.Counter;
import io.prometheus.metrics.core.metrics.GaugeWithCallback;
import io.prometheus.metrics.core.metrics.Histogram;
import io.prometheus.metrics.expositionformats.PrometheusTextFormatWriter;
import io.prometheus.metrics.model.registry.PrometheusRegistry;
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ConcurrentSkipListMap;
import java.util.function.IntSupplier;

/**
 * The server's metrics, kept and written by the Prometheus Java client (text format 0.0.4): requests
 * by path and status, the latency of predictions and the sizes of the batches the model ran
 * (histograms), connections open and refused, queue depths, the process's resident memory and the
 * tensor memory each device's tracker counts.
 */
final class ServerMetrics {
    private final PrometheusRegistry registry = new PrometheusRegistry();
    private final PrometheusTextFormatWriter writer = PrometheusTextFormatWriter.create();
    private final Counter requests, predicted, refusedConnections;
    private final Histogram latency, batches;
    private final Map<String, IntSupplier> queues = new ConcurrentSkipListMap<>();

    ServerMetrics(List<Device> devices, IntSupplier openConnections) {
        requests = Counter.builder().name("topa_requests_total").help("HTTP requests by path and status code.").labelNames("path", "code")
                .register(registry);
        predicted = Counter.builder().name("topa_inputs_predicted_total").help("Inputs the models predicted.").register(registry);
        refusedConnections = Counter.builder().name("topa_connections_refused_total")
                .help("Connections answered 503 because the connection cap was reached.").register(registry);
        latency = Histogram.builder().name("topa_predict_seconds").help("Time from a prediction request's arrival to its answer.")
                .classicOnly().classicUpperBounds(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10).register(registry);
        batches = Histogram.builder().name("topa_batch_inputs").help("Inputs per model call (micro-batches).").classicOnly()
                .classicUpperBounds(1, 2, 4, 8, 16, 32, 64, 128, 256).register(registry);
        GaugeWithCallback.builder().name("topa_queue_depth").help("Requests waiting for their model.").labelNames("model")
                .callback(cb -> queues.forEach((m, d) -> cb.call(d.getAsInt(), m))).register(registry);
        GaugeWithCallback.builder().name("topa_connections_open").help("Open client connections.")
                .callback(cb -> cb.call(openConnections.getAsInt())).register(registry);
        GaugeWithCallback.builder().name("topa_process_resident_bytes").help("Resident memory of the process.")
                .callback(cb -> cb.call(residentBytes())).register(registry);
        List<Device> devs = List.copyOf(devices);
        GaugeWithCallback.builder().name("topa_tensor_bytes").help("Live tensor memory by device and category.").labelNames("device", "category")
                .callback(cb -> {
                    for (Device d : devs)
                        for (Map.Entry<MemoryCategory, long[]> e : MemoryTracker.of(d).snapshot().entrySet())
                            cb.call(e.getValue()[0], d.toString(), e.getKey().label());
                }).register(registry);
    }

    void request(String path, int code) {
        requests.labelValues(path, Integer.toString(code)).inc();
    }

    void predictionSeconds(double s) {
        latency.observe(s);
    }

    void batch(int inputs) {
        batches.observe(inputs);
        predicted.inc(inputs);
    }

    void connectionRefused() {
        refusedConnections.inc();
    }

    void queue(String model, IntSupplier depth) {
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

    String contentType() {
        return writer.getContentType();
    }

    byte[] render() {
        ByteArrayOutputStream out = new ByteArrayOutputStream(4096);
        try {
            writer.write(out, registry.scrape());
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
        return out.toByteArray();
    }
}
