package dev.topa.kit;

import dev.topa.backend.cuda.CudaBackend;
import dev.topa.backend.cuda.CudaDriver;
import dev.topa.dist.Communicator;
import dev.topa.dist.Nccl;
import dev.topa.tensor.DType;
import dev.topa.tensor.MemoryCategory;
import dev.topa.tensor.Tensor;
import dev.topa.tensor.TensorAllocator;
import dev.topa.tensor.TensorScope;
import java.util.Locale;

/**
 * NCCL on this machine's GPU through topa's binding: found, joined as a communicator of this one
 * process (one rank: the unique id made and used here), an in-place sum of a ragged f32 buffer
 * (1,000,003 elements) on the backend's stream, read back unchanged (the sum over one rank), then
 * the time of that sum. Under mpirun the same check sums across the ranks and expects rank-count
 * times the values; each rank takes the GPU of its local rank (Open MPI's OMPI_COMM_WORLD_LOCAL_RANK)
 * modulo the GPUs it sees, since NCCL refuses two ranks on one GPU. Exit 0 pass, 1 a wrong sum, 2 no GPU, 3 no NCCL here (said why).
 */
public final class NcclCheck {
    private NcclCheck() {}

    public static void main(String[] args) {
        Gpu.requireOrExit();
        var nccl = Nccl.load();
        if (nccl.isEmpty()) {
            System.out.println("nccl_available: false (" + Nccl.unavailableReason() + ")");
            System.exit(3);
        }
        Communicator mpi = Communicator.fromEnvironment();
        int n = 1_000_003;
        boolean ok;
        int ordinal = Integer.parseInt(System.getenv().getOrDefault("OMPI_COMM_WORLD_LOCAL_RANK", "0"))
                % CudaDriver.get().orElseThrow().deviceCount();
        try (CudaBackend gpu = CudaBackend.open(ordinal); TensorScope host = new TensorScope("nccl check", MemoryCategory.WORKSPACE);
                TensorAllocator dev = gpu.scope("nccl check", MemoryCategory.WORKSPACE); Nccl.Comm comm = nccl.get().join(mpi)) {
            System.out.println("nccl_version: " + nccl.get().version() + ", ranks: " + comm.size());
            float[] v = new float[n];
            for (int i = 0; i < n; i++) v[i] = (i % 977) * 0.25f + mpi.rank();
            Tensor d = gpu.copyOf(host.allocate(DType.F32, n).copyFrom(v), dev);
            comm.allReduceSum(d.data().address(), n, gpu.stream());
            float[] got = gpu.copyOf(d, host).toFloatArray();
            int size = comm.size();
            double worst = 0;
            for (int i = 0; i < n; i++) {
                double want = size * ((i % 977) * 0.25) + size * (size - 1) / 2.0;
                worst = Math.max(worst, Math.abs(got[i] - want));
            }
            ok = worst == 0;
            System.out.printf(Locale.ROOT, "nccl_allreduce_%dranks_max_abs_error: %.3g%n", size, worst);
            long t0 = System.nanoTime();
            for (int i = 0; i < 20; i++) comm.allReduceSum(d.data().address(), n, gpu.stream());
            gpu.synchronize();
            System.out.printf(Locale.ROOT, "nccl_allreduce_%dranks_4MB_us: %.1f%n", size, (System.nanoTime() - t0) * 1e-3 / 20);
        }
        mpi.close();
        System.out.println("nccl_check: " + (ok ? "pass" : "FAILED"));
        System.exit(ok ? 0 : 1);
    }
}
