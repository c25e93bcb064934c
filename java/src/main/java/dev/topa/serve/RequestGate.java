package dev.topa.serve;

import io.netty.buffer.ByteBuf;
import io.netty.channel.ChannelHandlerContext;
import io.netty.channel.ChannelInboundHandlerAdapter;
import io.netty.handler.codec.DecoderResult;
import io.netty.handler.codec.TooLongFrameException;
import io.netty.handler.codec.http.HttpContent;
import io.netty.handler.codec.http.HttpRequest;
import io.netty.handler.codec.http.HttpUtil;
import io.netty.handler.codec.http.LastHttpContent;
import io.netty.handler.codec.http.TooLongHttpHeaderException;
import io.netty.handler.codec.http.TooLongHttpLineException;
import io.netty.util.ReferenceCountUtil;
import io.netty.util.concurrent.ScheduledFuture;
import java.nio.charset.StandardCharsets;
import java.util.ArrayDeque;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;

/**
 * One connection's limits, between the HTTP decoder and the application: the connection cap (503),
 * a deadline for the request headers counted from the request's first byte (slow-header clients
 * are answered 408 and cut), one for the body (408), one for an idle keep-alive connection (closed),
 * and the header count and body size (431, 413). It also holds a connection to one request at a
 * time: reading stops once a request is complete and resumes when its answer is written, so answers
 * leave in order however the model's batches finish. Runs on the connection's event loop.
 */
final class RequestGate extends ChannelInboundHandlerAdapter {
    private enum State { HEADERS, BODY, BUSY, IDLE, DONE }

    private final PredictServer.Options options;
    private final AtomicInteger open;
    private final ServerMetrics metrics;
    private State state = State.HEADERS;
    private boolean overCap, counted;
    private ScheduledFuture<?> deadline;
    /** What arrived while a request was being answered (a pipelining client's next request), in order. */
    private final ArrayDeque<Object> pending = new ArrayDeque<>();

    RequestGate(PredictServer.Options options, AtomicInteger open, ServerMetrics metrics) {
        this.options = options;
        this.open = open;
        this.metrics = metrics;
    }

    /** The handler in front of the decoder that tells the gate when an idle connection starts a new request. */
    ChannelInboundHandlerAdapter firstByte() {
        return new ChannelInboundHandlerAdapter() {
            @Override
            public void channelRead(ChannelHandlerContext ctx, Object msg) {
                if (state == State.IDLE && msg instanceof ByteBuf b && b.isReadable()) {
                    state = State.HEADERS;
                    arm(ctx.pipeline().context(RequestGate.this), options.headerTimeoutMillis(), "the request headers");
                }
                ctx.fireChannelRead(msg);
            }
        };
    }

    @Override
    public void channelActive(ChannelHandlerContext ctx) throws Exception {
        counted = true;
        overCap = open.incrementAndGet() > options.maxConnections();
        arm(ctx, options.headerTimeoutMillis(), "the request headers"); // a silent new connection is a slow-header one
        super.channelActive(ctx);
    }

    @Override
    public void channelInactive(ChannelHandlerContext ctx) throws Exception {
        cancel();
        pending.forEach(ReferenceCountUtil::release);
        pending.clear();
        if (counted) open.decrementAndGet();
        counted = false;
        state = State.DONE;
        super.channelInactive(ctx);
    }

    @Override
    public void channelRead(ChannelHandlerContext ctx, Object msg) {
        if (state == State.DONE) {
            ReferenceCountUtil.release(msg); // after a refusal
            return;
        }
        if (state == State.BUSY || state == State.IDLE) {
            pending.add(msg);
            return;
        }
        if (msg instanceof HttpRequest req) {
            cancel();
            String refusal = refusal(req);
            if (refusal != null) {
                ReferenceCountUtil.release(msg);
                int code = Integer.parseInt(refusal.substring(0, 3));
                if (code == 503) metrics.connectionRefused();
                refuse(ctx, code, refusal.substring(4));
                return;
            }
            state = State.BODY;
            arm(ctx, options.bodyTimeoutMillis(), "the request body");
        }
        if (msg instanceof LastHttpContent) {
            cancel();
            state = State.BUSY;
            ctx.channel().config().setAutoRead(false); // the next request waits for this one's answer
        } else if (!(msg instanceof HttpRequest) && !(msg instanceof HttpContent)) {
            ReferenceCountUtil.release(msg);
            return;
        }
        ctx.fireChannelRead(msg);
    }

    /** "CODE message" when the request must not go on, else null. */
    private String refusal(HttpRequest req) {
        DecoderResult r = req.decoderResult();
        if (r.isFailure()) {
            Throwable c = r.cause();
            if (c instanceof TooLongHttpHeaderException) return "431 the request headers are over the limit of " + options.maxHeaderBytes() + " bytes";
            if (c instanceof TooLongHttpLineException) return "414 the request line is too long";
            if (c instanceof TooLongFrameException) return "413 " + c.getMessage();
            return "400 malformed HTTP request: " + c.getMessage();
        }
        if (overCap) return "503 the server holds its limit of " + options.maxConnections() + " connections; try again";
        if (req.headers().size() > options.maxHeaders())
            return "431 " + req.headers().size() + " request headers, over the limit of " + options.maxHeaders();
        long length = HttpUtil.getContentLength(req, -1L);
        if (length > options.maxBodyBytes()) return "413 body of " + length + " bytes is over the limit of " + options.maxBodyBytes();
        return null;
    }

    /** The answer of the last request is out: wait (up to the idle timeout) for the next one. */
    void answered(ChannelHandlerContext appCtx) {
        ChannelHandlerContext ctx = appCtx.pipeline().context(this);
        if (ctx == null || state == State.DONE) return;
        state = State.IDLE;
        deadlineIdle(ctx);
        if (!pending.isEmpty()) {
            state = State.HEADERS;
            arm(ctx, options.headerTimeoutMillis(), "the request headers");
            while (!pending.isEmpty() && state != State.BUSY && state != State.DONE) channelRead(ctx, pending.poll());
        }
        if (state == State.BUSY || state == State.DONE) return;
        ctx.channel().config().setAutoRead(true);
        ctx.read();
    }

    private void deadlineIdle(ChannelHandlerContext ctx) {
        cancel();
        deadline = ctx.executor().schedule(() -> {
            if (state == State.IDLE) ctx.close();
        }, options.idleTimeoutMillis(), TimeUnit.MILLISECONDS);
    }

    private void arm(ChannelHandlerContext ctx, long millis, String what) {
        cancel();
        deadline = ctx.executor().schedule(() -> {
            if (state == State.HEADERS || state == State.BODY) {
                metrics.request("other", 408);
                refuse(ctx, 408, what + " did not arrive within " + millis + " ms");
            }
        }, millis, TimeUnit.MILLISECONDS);
    }

    private void cancel() {
        if (deadline != null) deadline.cancel(false);
        deadline = null;
    }

    /** Answers with an error and closes the connection; nothing more is read from it. */
    private void refuse(ChannelHandlerContext ctx, int code, String message) {
        cancel();
        state = State.DONE;
        if (code != 408) metrics.request("other", code);
        byte[] body = PredictServer.JSON.createObjectNode().put("error", message).toString().getBytes(StandardCharsets.UTF_8);
        PredictServer.respond(ctx, code, "application/json", body, false, null);
    }

    @Override
    public void exceptionCaught(ChannelHandlerContext ctx, Throwable cause) {
        ctx.close();
    }
}
