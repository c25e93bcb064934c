package dev.topa.app;

import dev.topa.backend.Backend;
import dev.topa.backend.cpu.CpuBackend;
import dev.topa.model.BertModel;
import dev.topa.model.BertTraining;
import dev.topa.model.DropoutConfig;
import dev.topa.model.TaskHead;
import java.util.Collection;
import java.util.function.Predicate;
import java.util.function.Supplier;

/**
 * A host model and head as a training backend sees them: on the CPU the same objects; on a GPU
 * copies in device memory (adapters and block masks included), whose trained values are copied back
 * into the host objects when asked -- before saving, before pruning reshapes the host model.
 */
final class TrainingCopy implements AutoCloseable {
    final Backend be;
    final BertModel host, model;
    final TaskHead hostHead, head;
    private final boolean onDevice;
    private BertTraining training;

    TrainingCopy(Backend be, BertModel host, TaskHead hostHead) {
        this(be, host, hostHead, !be.device().isHostAccessible());
    }

    /** copy: train on copies even on the host (the tests run the GPU's path that way). */
    TrainingCopy(Backend be, BertModel host, TaskHead hostHead, boolean copy) {
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

    /**
     * The training state of the copy (gradients and scratch on the backend's device; activations kept
     * for backward as savedType); closed with this.
     */
    BertTraining training(Predicate<String> trainable, DropoutConfig dropout, boolean recomputeProjections, dev.topa.tensor.DType savedType) {
        if (training != null) throw new IllegalStateException("one training per copy");
        training = new BertTraining(onDevice ? be : null, model, trainable, dropout, recomputeProjections, savedType);
        return training;
    }

    /** The training state the recipe asks for. */
    BertTraining training(dev.topa.train.Recipe rc) {
        return training(rc.trainable(), rc.dropout(), rc.recomputeProjections(), rc.activationPrecision().dtype());
    }

    /** The trained parameters (names: the training's gradients) and the whole head, back in the host objects. */
    void copyBack() {
        if (!onDevice) return;
        Collection<String> names = training.gradients().keySet();
        model.copyParametersTo(host, be, names);
        hostHead.parameters().forEach((n, p) -> be.copy(p, head.parameters().get(n)));
    }

    /** For TrainingLoop: null on the CPU (it saves the model itself); on a GPU the trained values copied back into a host model to save. */
    Supplier<BertModel> export() {
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
