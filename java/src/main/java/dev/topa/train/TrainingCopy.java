package dev.topa.train;

import dev.topa.backend.Backend;
import dev.topa.backend.cpu.CpuBackend;
import dev.topa.model.BertModel;
import dev.topa.model.BertTraining;
import dev.topa.model.TaskHead;
import java.util.Collection;
import java.util.function.Supplier;

/**
 * A host model and head as a training backend sees them: on the CPU the same objects; on a GPU
 * copies in device memory (adapters and block masks included), whose trained values are copied back
 * into the host objects when asked -- before saving, before pruning reshapes the host model.
 */
public final class TrainingCopy implements AutoCloseable {
    public final Backend be;
    public final BertModel host, model;
    public final TaskHead hostHead, head;
    private final boolean onDevice;
    private BertTraining training;

    public TrainingCopy(Backend be, BertModel host, TaskHead hostHead) {
        this(be, host, hostHead, !be.device().isHostAccessible());
    }

    /** copy: train on copies even on the host (the tests run the GPU's path that way). */
    public TrainingCopy(Backend be, BertModel host, TaskHead hostHead, boolean copy) {
        this.be = be;
        this.host = host;
        this.hostHead = hostHead;
        onDevice = copy;
        model = onDevice ? host.copyTo(be) : host;
        TaskHead h = hostHead;
        if (onDevice) try {
            h = hostHead.copyTo(be);
        } catch (RuntimeException | Error e) {
            model.close();
            throw e;
        }
        head = h;
    }

    /** The training state of the copy (gradients and scratch on the backend's device); closed with this. */
    public BertTraining training(BertTraining.Options options) {
        if (training != null) throw new IllegalStateException("one training per copy");
        training = new BertTraining(onDevice ? be : null, model, options);
        return training;
    }

    /** The training state the recipe asks for. */
    public BertTraining training(Recipe rc) {
        return training(rc.trainingOptions());
    }

    /** The trained parameters (names: the training's gradients) and the whole head, back in the host objects. */
    public void copyBack() {
        if (!onDevice) return;
        Collection<String> names = training.gradients().keySet();
        model.copyParametersTo(host, be, names);
        hostHead.parameters().forEach((n, p) -> be.copy(p, head.parameters().get(n)));
    }

    /** For {@link TrainingLoop.Hooks}: null on the CPU (it saves the model itself); on a GPU the trained values copied back into a host model to save. */
    public Supplier<BertModel> export() {
        return !onDevice ? null : () -> {
            copyBack();
            return host.copyTo(CpuBackend.create());
        };
    }

    @Override
    public void close() {
        if (training != null) training.close();
        if (onDevice) {
            head.close();
            model.close();
        }
    }
}
