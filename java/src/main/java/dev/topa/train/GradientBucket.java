package dev.topa.train;

import dev.topa.dist.Communicator;
import dev.topa.tensor.DType;
import dev.topa.tensor.Tensor;
import dev.topa.tensor.TensorAllocator;
import java.lang.foreign.MemorySegment;
import java.util.List;

/**
 * Gradients summed across ranks as one message: copied into one contiguous buffer, summed with a
 * non-blocking all-reduce, copied back when awaited. A bucket per encoder layer lets the sum of a
 * layer's gradients run while backward computes the layers below it; one message per bucket
 * rather than per tensor keeps the per-message latency from dominating LoRA's many small tensors.
 */
final class GradientBucket {
    private final List<Tensor> grads;
    private final Tensor flat;
    private Communicator.Pending pending;

    GradientBucket(List<Tensor> grads, TensorAllocator host) {
        this.grads = List.copyOf(grads);
        long n = 0;
        for (Tensor g : grads) n += g.numel();
        flat = n == 0 ? null : host.allocate(DType.F32, n);
    }

    /** Starts the sum unless it is running or there is nothing to sum. */
    void start(Communicator comm) {
        if (flat == null || pending != null) return;
        long at = 0;
        for (Tensor g : grads) {
            MemorySegment.copy(g.data(), 0, flat.data(), at, g.byteSize());
            at += g.byteSize();
        }
        pending = comm.allReduceSumAsync(flat);
    }

    /** Waits for the sum and puts it back into the gradients. */
    void finish() {
        if (pending == null) return;
        pending.await();
        pending = null;
        long at = 0;
        for (Tensor g : grads) {
            MemorySegment.copy(flat.data(), at, g.data(), 0, g.byteSize());
            at += g.byteSize();
        }
    }
}
