package dev.topa.serve;

import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import dev.topa.tensor.Device;
import dev.topa.train.NonFiniteOutputException;
import io.netty.bootstrap.ServerBootstrap;
import io.netty.buffer.ByteBufInputStream;
import io.netty.buffer.Unpooled;
import io.netty.channel.Channel;
import io.netty.channel.ChannelFutureListener;
import io.netty.channel.ChannelHandlerContext;
import io.netty.channel.ChannelInitializer;
import io.netty.channel.ChannelOption;
import io.netty.channel.EventLoopGroup;
import io.netty.channel.MultiThreadIoEventLoopGroup;
import io.netty.channel.SimpleChannelInboundHandler;
import io.netty.channel.nio.NioIoHandler;
import io.netty.channel.socket.SocketChannel;
import io.netty.channel.socket.nio.NioServerSocketChannel;
import io.netty.handler.codec.http.DefaultFullHttpResponse;
import io.netty.handler.codec.http.FullHttpRequest;
import io.netty.handler.codec.http.FullHttpResponse;
import io.netty.handler.codec.http.HttpDecoderConfig;
import io.netty.handler.codec.http.HttpHeaderNames;
import io.netty.handler.codec.http.HttpHeaderValues;
import io.netty.handler.codec.http.HttpObjectAggregator;
import io.netty.handler.codec.http.HttpResponseStatus;
import io.netty.handler.codec.http.HttpServerCodec;
import io.netty.handler.codec.http.HttpUtil;
import io.netty.handler.codec.http.HttpVersion;
import io.netty.handler.codec.http.QueryStringDecoder;
import java.io.IOException;
import java.net.InetSocketAddress;
import java.nio.charset.StandardCharsets;
import java.security.MessageDigest;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import java.util.concurrent.atomic.AtomicInteger;

/**
 * JSON over HTTP/1.1 for one or more {@link TextModel}s (topa's {@link Classifier}s), on Netty:
 * {@code POST /v1/predict} with {@code {"texts": [...]}} or {@code {"pairs": [[a, b], ...]}} and an
 * optional {@code "task"}, {@code GET /health}, {@code GET /metrics} (Prometheus text). Requests for
 * a model are micro-batched ({@link MicroBatcher}) off the event loop; its bounded queue answers 503
 * when full. Every bad request gets a 4xx with a JSON message: malformed JSON, wrong field types,
 * empty or oversized texts, too many texts, a body or headers over the limit, an unknown task, a
 * wrong method or path, a missing API key.
 *
 * <p>What a hostile or broken client can hold is bounded per connection ({@link RequestGate}): the
 * headers must be complete within {@link Options#headerTimeoutMillis} of a connection's first byte
 * (slow-header clients are cut), the body within {@link Options#bodyTimeoutMillis} (408), an idle
 * keep-alive connection is closed after {@link Options#idleTimeoutMillis}; connections beyond
 * {@link Options#maxConnections} are answered 503 and closed, so the server stays responsive to the
 * clients it holds. Requests on one connection are answered in order, one at a time.
 */
public final class PredictServer implements AutoCloseable {
    /** Limits, timeouts and batching knobs; every size and timeout must be positive. */
    public record Options(int maxBatch, long maxWaitMicros, int queueCapacity, int maxTexts, int maxTextChars, int maxBodyBytes,
            long requestTimeoutMillis, long headerTimeoutMillis, long bodyTimeoutMillis, long idleTimeoutMillis, int maxConnections,
            int maxHeaderBytes, int maxHeaders, String apiKey) {
        public Options {
            long[] positive = {maxBatch, queueCapacity, maxTexts, maxTextChars, maxBodyBytes, requestTimeoutMillis, headerTimeoutMillis,
                bodyTimeoutMillis, idleTimeoutMillis, maxConnections, maxHeaderBytes, maxHeaders};
            String[] names = {"maxBatch", "queueCapacity", "maxTexts", "maxTextChars", "maxBodyBytes", "requestTimeoutMillis",
                "headerTimeoutMillis", "bodyTimeoutMillis", "idleTimeoutMillis", "maxConnections", "maxHeaderBytes", "maxHeaders"};
            for (int i = 0; i < positive.length; i++)
                if (positive[i] < 1) throw new IllegalArgumentException("server option " + names[i] + " must be >= 1, got " + positive[i]);
            if (maxWaitMicros < 0) throw new IllegalArgumentException("server option maxWaitMicros must be >= 0, got " + maxWaitMicros);
            if (apiKey != null && apiKey.isBlank()) throw new IllegalArgumentException("the API key is empty");
        }

        public static Options defaults() {
            return new Options(32, 2000, 256, 64, 8192, 1 << 20, 30_000, 5_000, 10_000, 30_000, 1024, 16 << 10, 100, null);
        }

        public Options withBatching(int maxBatch, long maxWaitMicros, int queueCapacity) {
            return new Options(maxBatch, maxWaitMicros, queueCapacity, maxTexts, maxTextChars, maxBodyBytes, requestTimeoutMillis,
                    headerTimeoutMillis, bodyTimeoutMillis, idleTimeoutMillis, maxConnections, maxHeaderBytes, maxHeaders, apiKey);
        }

        public Options withLimits(int maxTexts, int maxTextChars, int maxBodyBytes) {
            return new Options(maxBatch, maxWaitMicros, queueCapacity, maxTexts, maxTextChars, maxBodyBytes, requestTimeoutMillis,
                    headerTimeoutMillis, bodyTimeoutMillis, idleTimeoutMillis, maxConnections, maxHeaderBytes, maxHeaders, apiKey);
        }

        public Options withTimeouts(long requestMillis, long headerMillis, long bodyMillis, long idleMillis) {
            return new Options(maxBatch, maxWaitMicros, queueCapacity, maxTexts, maxTextChars, maxBodyBytes, requestMillis, headerMillis,
                    bodyMillis, idleMillis, maxConnections, maxHeaderBytes, maxHeaders, apiKey);
        }

        public Options withConnections(int maxConnections, int maxHeaderBytes, int maxHeaders) {
            return new Options(maxBatch, maxWaitMicros, queueCapacity, maxTexts, maxTextChars, maxBodyBytes, requestTimeoutMillis,
                    headerTimeoutMillis, bodyTimeoutMillis, idleTimeoutMillis, maxConnections, maxHeaderBytes, maxHeaders, apiKey);
        }

        /** Requests to /v1/predict must carry "Authorization: Bearer KEY" (null: no key asked). */
        public Options withApiKey(String key) {
            return new Options(maxBatch, maxWaitMicros, queueCapacity, maxTexts, maxTextChars, maxBodyBytes, requestTimeoutMillis,
                    headerTimeoutMillis, bodyTimeoutMillis, idleTimeoutMillis, maxConnections, maxHeaderBytes, maxHeaders, key);
        }
    }

    static final ObjectMapper JSON = new ObjectMapper();

    private final Map<String, TextModel> models;
    private final Map<String, MicroBatcher> batchers = new LinkedHashMap<>();
    private final Options options;
    private final ServerMetrics metrics;
    private final AtomicInteger open = new AtomicInteger();
    private final EventLoopGroup loops;
    private final Channel listener;
    private volatile boolean stopping;

    /** models by task name (lower case, e.g. "mrpc"); the server listens on port (0: any free port) of host. */
    public PredictServer(Map<String, ? extends TextModel> models, Options options, String host, int port, List<Device> devices) throws IOException {
        if (models.isEmpty()) throw new IllegalArgumentException("no model to serve");
        this.models = Map.copyOf(models);
        this.options = options;
        this.metrics = new ServerMetrics(devices, open::get);
        for (var e : models.entrySet()) {
            MicroBatcher b = new MicroBatcher(e.getKey(), e.getValue()::predictBatch, options.queueCapacity(), options.maxBatch(),
                    options.maxWaitMicros(), metrics);
            batchers.put(e.getKey(), b);
            metrics.queue(e.getKey(), b::queued);
        }
        // one event loop accepts, parses and writes: the models run on the batchers' threads, and more
        // loop threads would only take CPU from the kernels' threads
        loops = new MultiThreadIoEventLoopGroup(1, NioIoHandler.newFactory());
        try {
            listener = new ServerBootstrap().group(loops).channel(NioServerSocketChannel.class).option(ChannelOption.SO_BACKLOG, 1024)
                    .childOption(ChannelOption.TCP_NODELAY, true).childHandler(new ChannelInitializer<SocketChannel>() {
                        @Override
                        protected void initChannel(SocketChannel ch) {
                            RequestGate gate = new RequestGate(options, open, metrics);
                            ch.pipeline().addLast("first-byte", gate.firstByte())
                                    .addLast("codec", new HttpServerCodec(new HttpDecoderConfig().setMaxInitialLineLength(8192)
                                            .setMaxHeaderSize(options.maxHeaderBytes()).setMaxChunkSize(64 << 10)))
                                    .addLast("gate", gate)
                                    .addLast("aggregate", new HttpObjectAggregator(options.maxBodyBytes()))
                                    .addLast("predict", new Handler());
                        }
                    }).bind(new InetSocketAddress(host, port)).sync().channel();
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            shutdownLoops();
            throw new IOException("interrupted while binding " + host + ":" + port, e);
        } catch (RuntimeException e) {
            shutdownLoops();
            throw new IOException("cannot listen on " + host + ":" + port + ": " + e.getMessage(), e);
        }
    }

    public int port() {
        return ((InetSocketAddress) listener.localAddress()).getPort();
    }

    /** Open client connections (those over the cap included until they are closed). */
    public int openConnections() {
        return open.get();
    }

    /** The application: routes, the API key, the prediction JSON. */
    private final class Handler extends SimpleChannelInboundHandler<FullHttpRequest> {
        @Override
        protected void channelRead0(ChannelHandlerContext ctx, FullHttpRequest req) {
            long t0 = System.nanoTime();
            String path = new QueryStringDecoder(req.uri()).path();
            String label = switch (path) {
                case "/v1/predict", "/health", "/metrics" -> path;
                default -> "other";
            };
            boolean keepAlive = HttpUtil.isKeepAlive(req);
            Reply reply = (code, type, body) -> {
                metrics.request(label, code);
                if (label.equals("/v1/predict") && code == 200) metrics.predictionSeconds((System.nanoTime() - t0) * 1e-9);
                respond(ctx, code, type, body, keepAlive, null);
            };
            try {
                switch (path) {
                    case "/v1/predict" -> predict(req, reply);
                    case "/health" -> get(req, reply, "application/json", () -> health().getBytes(StandardCharsets.UTF_8));
                    case "/metrics" -> get(req, reply, metrics.contentType(), metrics::render);
                    default -> reply.error(404, "no such path: " + path + " (POST /v1/predict, GET /health, GET /metrics)");
                }
            } catch (RuntimeException e) {
                reply.error(500, "internal error: " + e);
            }
        }

        @Override
        public void exceptionCaught(ChannelHandlerContext ctx, Throwable cause) {
            ctx.close(); // a reset connection: nothing to answer
        }
    }

    /** Where an answer goes (from the event loop or from a batcher's completion). */
    @FunctionalInterface
    private interface Reply {
        void send(int code, String type, byte[] body);

        default void json(int code, String body) {
            send(code, "application/json", body.getBytes(StandardCharsets.UTF_8));
        }

        default void error(int code, String message) {
            json(code, JSON.createObjectNode().put("error", message).toString());
        }
    }

    private void get(FullHttpRequest req, Reply reply, String type, java.util.function.Supplier<byte[]> body) {
        if (!req.method().name().equals("GET")) reply.error(405, new QueryStringDecoder(req.uri()).path() + " takes GET");
        else reply.send(200, type, body.get());
    }

    private String health() {
        ObjectNode h = JSON.createObjectNode();
        h.put("status", stopping ? "stopping" : "ok");
        ArrayNode m = h.putArray("models");
        models.forEach((name, c) -> m.addObject().put("task", name).put("pairs", c.task().isPair()).put("regression", c.task().isRegression()));
        return h.toString();
    }

    private void predict(FullHttpRequest req, Reply reply) {
        if (!req.method().name().equals("POST")) {
            reply.error(405, "/v1/predict takes POST with a JSON body");
            return;
        }
        if (options.apiKey() != null && !authorized(req.headers().get(HttpHeaderNames.AUTHORIZATION))) {
            reply.error(401, "this server needs \"Authorization: Bearer <key>\" (the key given to topa serve --api-key-file)");
            return;
        }
        if (stopping) {
            reply.error(503, "server is shutting down");
            return;
        }
        JsonNode body;
        try (ByteBufInputStream in = new ByteBufInputStream(req.content())) {
            body = JSON.readTree((java.io.InputStream) in);
        } catch (JsonProcessingException e) {
            reply.error(400, "malformed JSON: " + e.getOriginalMessage());
            return;
        } catch (IOException e) {
            reply.error(400, "cannot read the body: " + e.getMessage());
            return;
        }
        if (body == null || !body.isObject()) {
            reply.error(400, "the body must be a JSON object with \"texts\" or \"pairs\"");
            return;
        }
        String task;
        if (body.has("task")) {
            if (!body.get("task").isTextual()) {
                reply.error(400, "\"task\" must be a string");
                return;
            }
            task = body.get("task").asText().toLowerCase(Locale.ROOT);
            if (!models.containsKey(task)) {
                reply.error(404, "unknown task '" + task + "': this server has " + models.keySet());
                return;
            }
        } else if (models.size() == 1) {
            task = models.keySet().iterator().next();
        } else {
            reply.error(400, "\"task\" is required: this server has " + models.keySet());
            return;
        }
        List<Classifier.Input> inputs;
        try {
            inputs = inputs(body, models.get(task));
        } catch (IllegalArgumentException e) {
            reply.error(e.getMessage().startsWith("too many") || e.getMessage().contains("longer than") ? 413 : 400, e.getMessage());
            return;
        }
        MicroBatcher.Job job = batchers.get(task).submit(inputs);
        if (job == null) {
            reply.error(503, "overloaded: " + options.queueCapacity() + " requests are already waiting for " + task);
            return;
        }
        String field = models.get(task).task().isPair() ? "pairs[" : "texts[";
        job.result().orTimeout(options.requestTimeoutMillis(), TimeUnit.MILLISECONDS).whenComplete((out, failure) -> {
            if (failure == null) {
                reply.json(200, answer(task, out));
                return;
            }
            Throwable c = failure instanceof java.util.concurrent.CompletionException && failure.getCause() != null ? failure.getCause() : failure;
            switch (c) {
                case TimeoutException t -> reply.error(503, "the prediction took longer than " + options.requestTimeoutMillis() + " ms");
                case IllegalArgumentException bad -> reply.error(400, bad.getMessage());
                case NonFiniteOutputException n -> reply.error(500, n.as(n.index(), field + n.index() + "]").getMessage());
                default -> reply.error(500, "prediction failed: " + c);
            }
        });
    }

    private boolean authorized(String header) {
        String expected = "Bearer " + options.apiKey();
        return header != null && MessageDigest.isEqual(header.getBytes(StandardCharsets.UTF_8), expected.getBytes(StandardCharsets.UTF_8));
    }

    private static String answer(String task, List<Classifier.Prediction> out) {
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
        return res.toString();
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

    /**
     * Writes a complete answer; then either reads the connection's next request (keep-alive) or
     * closes it. extra: headers to add (or null).
     */
    static void respond(ChannelHandlerContext ctx, int code, String type, byte[] body, boolean keepAlive, Map<String, String> extra) {
        FullHttpResponse res = new DefaultFullHttpResponse(HttpVersion.HTTP_1_1, HttpResponseStatus.valueOf(code), Unpooled.wrappedBuffer(body));
        res.headers().set(HttpHeaderNames.CONTENT_TYPE, type).setInt(HttpHeaderNames.CONTENT_LENGTH, body.length);
        if (extra != null) extra.forEach((k, v) -> res.headers().set(k, v));
        if (code == 503) res.headers().set(HttpHeaderNames.RETRY_AFTER, "1");
        res.headers().set(HttpHeaderNames.CONNECTION, keepAlive ? HttpHeaderValues.KEEP_ALIVE : HttpHeaderValues.CLOSE);
        var written = ctx.writeAndFlush(res);
        if (!keepAlive) {
            written.addListener(ChannelFutureListener.CLOSE);
            return;
        }
        written.addListener(f -> {
            RequestGate gate = ctx.pipeline().get(RequestGate.class);
            if (gate != null) gate.answered(ctx);
        });
    }

    /** Graceful: refuses new predictions (503), lets queued ones finish, then stops listening. Models stay open (the caller's). */
    @Override
    public void close() {
        stopping = true;
        listener.close().awaitUninterruptibly(5, TimeUnit.SECONDS);
        batchers.values().forEach(MicroBatcher::close);
        shutdownLoops();
    }

    private void shutdownLoops() {
        loops.shutdownGracefully(0, 2, TimeUnit.SECONDS).awaitUninterruptibly(5, TimeUnit.SECONDS);
    }
}
