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
 * NCCL on this machine's GPU through topa's binding: found, joined as a communicator of mpirun's
 * ranks (or of this one process), a sum of a ragged f32 buffer (1,000,003 elements) on the
 * backend's stream into a second buffer filled with NaN first (one rank: NCCL copies it, so a wrong
 * count, element size or stream order shows), read back and compared with rank-count times the
 * values; then the in-place sum, and its time. Each rank takes the GPU of its local rank (Open
 * MPI's, Slurm's or MPICH's variable): NCCL refuses two ranks on one GPU, so more local ranks than
 * GPUs is refused here with the reason. Exit 0 pass, 1 a wrong sum, 2 no GPU, 3 no NCCL here (said why).
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
        int ordinal = localRank(), gpus = CudaDriver.get().orElseThrow().deviceCount();
        if (ordinal >= gpus) {
            System.out.println("nccl_check: FAILED (local rank " + ordinal + " but " + gpus + " GPUs visible: start at most one rank per GPU)");
            System.exit(1);
        }
        try (CudaBackend gpu = CudaBackend.open(ordinal); TensorScope host = new TensorScope("nccl check", MemoryCategory.WORKSPACE);
                TensorAllocator dev = gpu.scope("nccl check", MemoryCategory.WORKSPACE); Nccl.Comm comm = nccl.get().join(mpi)) {
            System.out.println("nccl_version: " + nccl.get().version() + ", ranks: " + comm.size());
            float[] v = new float[n];
            for (int i = 0; i < n; i++) v[i] = (i % 977) * 0.25f + mpi.rank();
            Tensor d = gpu.copyOf(host.allocate(DType.F32, n).copyFrom(v), dev);
            float[] nan = new float[n];
            java.util.Arrays.fill(nan, Float.NaN);
            Tensor sum = gpu.copyOf(host.allocate(DType.F32, n).copyFrom(nan), dev);
            comm.allReduceSum(d.data().address(), sum.data().address(), n, gpu.stream());
            int size = comm.size();
            double outOfPlace = worst(gpu.copyOf(sum, host).toFloatArray(), size);
            comm.allReduceSum(d.data().address(), n, gpu.stream());
            double inPlace = worst(gpu.copyOf(d, host).toFloatArray(), size);
            ok = outOfPlace == 0 && inPlace == 0;
            System.out.printf(Locale.ROOT, "nccl_allreduce_%dranks_max_abs_error: %.3g out of place, %.3g in place%n", size, outOfPlace, inPlace);
            long t0 = System.nanoTime();
            for (int i = 0; i < 20; i++) comm.allReduceSum(d.data().address(), n, gpu.stream());
            gpu.synchronize();
            System.out.printf(Locale.ROOT, "nccl_allreduce_%dranks_4MB_us: %.1f%n", size, (System.nanoTime() - t0) * 1e-3 / 20);
        }
        mpi.close();
        System.out.println("nccl_check: " + (ok ? "pass" : "FAILED"));
        System.exit(ok ? 0 : 1);
    }

    /** The largest distance of got from the sum over size ranks of rank + (i % 977) / 4 (NaN where a slot is NaN). */
    private static double worst(float[] got, int size) {
        double worst = 0;
        for (int i = 0; i < got.length; i++) {
            double d = Math.abs(got[i] - (size * ((i % 977) * 0.25) + size * (size - 1) / 2.0));
            if (Double.isNaN(d)) return d; // a slot never written
            worst = Math.max(worst, d);
        }
        return worst;
    }

    /** This process's rank among its node's, from the launcher's variable (0 when started alone). */
    private static int localRank() {
        for (String v : new String[] {"OMPI_COMM_WORLD_LOCAL_RANK", "SLURM_LOCALID", "MPI_LOCALRANKID"}) {
            String s = System.getenv(v);
            if (s != null) return Integer.parseInt(s.trim());
        }
        return 0;
    }
}
