package dev.topa.serve;

import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.ArrayBlockingQueue;
import java.util.concurrent.BlockingQueue;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import java.util.function.Function;

/**
 * Gathers requests for one model into batches: one thread takes the first waiting request, then
 * keeps adding requests for up to maxWait (or until maxBatch inputs), and runs them as one
 * {@link Classifier#predictBatch} call. The queue is bounded: {@link #submit} refuses a request when
 * it is full (the server answers 503), so overload costs a quick refusal instead of unbounded
 * latency and memory.
 */
final class MicroBatcher implements AutoCloseable {
    /** A request's inputs and the future its handler waits on. */
    record Job(List<Classifier.Input> inputs, CompletableFuture<List<Classifier.Prediction>> result, long enqueuedNanos) {}

    private final Function<List<Classifier.Input>, List<Classifier.Prediction>> model;
    private final BlockingQueue<Job> queue;
    private final int maxBatch;
    private final long maxWaitNanos;
    private final Thread thread;
    private final ServerMetrics metrics;
    private volatile boolean running = true;

    MicroBatcher(String name, Function<List<Classifier.Input>, List<Classifier.Prediction>> model, int queueCapacity, int maxBatch,
            long maxWaitMicros, ServerMetrics metrics) {
        this.model = model;
        this.queue = new ArrayBlockingQueue<>(queueCapacity);
        this.maxBatch = maxBatch;
        this.maxWaitNanos = maxWaitMicros * 1000;
        this.metrics = metrics;
        this.thread = Thread.ofPlatform().name("batcher-" + name).daemon().start(this::loop);
    }

    /** The job, queued; null when the queue is full or the batcher is stopping. */
    Job submit(List<Classifier.Input> inputs) {
        if (!running) return null;
        Job j = new Job(inputs, new CompletableFuture<>(), System.nanoTime());
        return queue.offer(j) ? j : null;
    }

    int queued() {
        return queue.size();
    }

    private void loop() {
        List<Job> batch = new ArrayList<>();
        while (running || !queue.isEmpty()) {
            try {
                Job first = queue.poll(100, TimeUnit.MILLISECONDS);
                if (first == null) continue;
                batch.add(first);
                int inputs = first.inputs().size();
                long deadline = System.nanoTime() + maxWaitNanos;
                while (inputs < maxBatch) {
                    long left = deadline - System.nanoTime();
                    Job next = left > 0 ? queue.poll(left, TimeUnit.NANOSECONDS) : queue.poll();
                    if (next == null) break;
                    batch.add(next);
                    inputs += next.inputs().size();
                }
                run(batch, inputs);
            } catch (InterruptedException e) {
                if (!running) break;
            } finally {
                batch.clear();
            }
        }
    }

    private void run(List<Job> batch, int inputs) {
        List<Classifier.Input> all = new ArrayList<>(inputs);
        for (Job j : batch) all.addAll(j.inputs());
        metrics.batch(all.size());
        try {
            List<Classifier.Prediction> out = model.apply(all);
            int at = 0;
            for (Job j : batch) {
                j.result().complete(out.subList(at, at + j.inputs().size()));
                at += j.inputs().size();
            }
        } catch (RuntimeException e) {
            if (batch.size() == 1) {
                batch.get(0).result().completeExceptionally(e);
                return;
            }
            // one request's fault (e.g. an input whose output is not finite) must not fail the others batched with it
            for (Job j : batch) {
                try {
                    j.result().complete(model.apply(j.inputs()));
                } catch (RuntimeException | Error alone) {
                    j.result().completeExceptionally(alone);
                }
            }
        } catch (Error e) {
            for (Job j : batch) j.result().completeExceptionally(e);
        }
    }

    /** Stops taking requests, finishes the queued ones, and waits for the thread (at most timeoutMillis). */
    @Override
    public void close() {
        close(10_000);
    }

    void close(long timeoutMillis) {
        running = false;
        try {
            thread.join(timeoutMillis);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
        Job j;
        while ((j = queue.poll()) != null) j.result().completeExceptionally(new IllegalStateException("server is shutting down"));
    }
}
