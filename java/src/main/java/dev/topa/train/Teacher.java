package dev.topa.train;

import dev.topa.backend.Backend;
import dev.topa.io.BertTokenizer;
import dev.topa.model.BertModel;
import dev.topa.model.TaskHead;
import dev.topa.tensor.StepArena;
import dev.topa.tensor.Tensor;

/**
 * A task model that only runs forward, so that its outputs teach a student (knowledge
 * distillation): the student's loss becomes (1 - alpha) x its task loss + alpha x
 * {@link Backend#distillationForward} against these outputs at the given temperature. The teacher
 * keeps no activations (the inference forward) and multiplies with whatever it was packed for
 * (bf16 where that is measured faster); the time its forwards take is counted.
 */
public final class Teacher implements AutoCloseable {
    private final BertModel model;
    private final TaskHead head;
    private final double alpha, temperature;
    private long nanos;

    /** Takes model and head (closed with the teacher); both on the device of the backend that trains. */
    public Teacher(BertModel model, TaskHead head, double alpha, double temperature) {
        if (!(alpha > 0 && alpha <= 1)) throw new IllegalArgumentException("distillation weight must be in (0, 1], got " + alpha);
        if (!(temperature > 0)) throw new IllegalArgumentException("distillation temperature must be positive, got " + temperature);
        this.model = model;
        this.head = head;
        this.alpha = alpha;
        this.temperature = temperature;
    }

    public double alpha() {
        return alpha;
    }

    public double temperature() {
        return temperature;
    }

    /** The teacher's head outputs [B, C] for a padded batch already on be's device. */
    Tensor outputs(Backend be, StepArena arena, BertTokenizer.Batch batch) {
        long t0 = System.nanoTime();
        Tensor out = head.infer(be, arena, model.forward(be, arena, batch.ids(), batch.types(), batch.mask()), batch.mask());
        nanos += System.nanoTime() - t0;
        return out;
    }

    /** Seconds spent in the teacher's forwards so far (host time; on a device, what the host waited). */
    public double seconds() {
        return nanos * 1e-9;
    }

    /** Bytes of the teacher's weights and packs. */
    public long weightBytes() {
        return model.parameterBytes();
    }

    @Override
    public void close() {
        model.close();
        head.close();
    }
}
