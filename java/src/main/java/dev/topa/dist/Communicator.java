package dev.topa.dist;

import dev.topa.tensor.Tensor;
import java.util.List;

/**
 * The processes of one run and the collectives training needs: sums over ranks (gradients,
 * importance scores, metrics, losses), a broadcast and a barrier. One process with no MPI is
 * {@link #SINGLE}, where every collective is the identity; under {@code mpirun} it is {@link Mpi}
 * (Open MPI through FFM). Every rank must make the same calls in the same order: the callers
 * (the trainer, the pruning pipeline) are written so that they do whatever each rank's data.
 */
public interface Communicator extends AutoCloseable {
    int rank();

    int size();

    /** data = the element-wise sum of every rank's data, on every rank. */
    void allReduceSum(double[] data);

    /** As above for f32 tensors in host memory, in place. */
    void allReduceSum(List<Tensor> hostTensors);

    /** A sum started now and finished by {@link Pending#await} (overlapped with the caller's work where the library progresses it). */
    Pending allReduceSumAsync(Tensor hostTensor);

    /** bytes from root, on every rank (the same length everywhere). */
    void broadcast(byte[] bytes, int root);

    void barrier();

    /** Stops every rank of the run with this message (printed by the caller first) and a non-zero exit. */
    void abort(int code);

    @Override
    void close();

    /** A started collective. */
    interface Pending {
        void await();
    }

    default boolean isRoot() {
        return rank() == 0;
    }

    /** One process: every collective is the identity. */
    Communicator SINGLE = alone(0, 1);

    /**
     * Rank rank of size that exchanges nothing with the others: every collective is the identity.
     * Rank 0 of 1 is {@link #SINGLE}; another is one process doing by itself what that rank does
     * (what it computes from its share, what it keeps), as a test watches it.
     */
    static Communicator alone(int rank, int size) {
        if (rank < 0 || rank >= size) throw new IllegalArgumentException("rank " + rank + " of " + size);
        return new Communicator() {
            @Override
            public int rank() {
                return rank;
            }

            @Override
            public int size() {
                return size;
            }

            @Override
            public void allReduceSum(double[] data) {}

            @Override
            public void allReduceSum(List<Tensor> hostTensors) {}

            @Override
            public Pending allReduceSumAsync(Tensor hostTensor) {
                return () -> {};
            }

            @Override
            public void broadcast(byte[] bytes, int root) {}

            @Override
            public void barrier() {}

            @Override
            public void abort(int code) {
                System.exit(code);
            }

            @Override
            public void close() {}

            @Override
            public String toString() {
                return size == 1 ? "1 process" : "rank " + rank + " of " + size + " alone";
            }
        };
    }

    /** The run's processes: MPI's when launched by mpirun (its environment says so), else {@link #SINGLE}. */
    static Communicator fromEnvironment() {
        return Mpi.launched() ? Mpi.init() : SINGLE;
    }
}
