package dev.topa.backend.cpu;

import static dev.topa.backend.cpu.CpuKernel.call;
import static dev.topa.backend.cpu.CpuKernel.run;

import java.lang.invoke.MethodHandle;

/** The process-wide native controls: CPUID, thread count, kernel scratch bytes. */
public final class CpuKernels {
    private CpuKernels() {}

    private static final class Handles {
        static final MethodHandle BEST_ISA = CpuKernel.CPU_BEST_ISA.bind(null), SET_THREADS = CpuKernel.SET_NUM_THREADS.bind(null),
                GET_THREADS = CpuKernel.GET_NUM_THREADS.bind(null), WORKSPACE = CpuKernel.WORKSPACE_BYTES.bind(null),
                HAS_BF16 = CpuKernel.CPU_HAS_AVX512BF16.bind(null);
    }

    static int bestIsa() {
        return (int) call(() -> (int) Handles.BEST_ISA.invokeExact());
    }

    /** Whether this CPU runs AVX512_BF16 dot products (VDPBF16PS). */
    public static boolean hasAvx512Bf16() {
        return call(() -> (int) Handles.HAS_BF16.invokeExact()) != 0;
    }

    /** Threads every CPU kernel uses (process-wide); n <= 0 means all cores. */
    /**
     * Kernel threads for this process: 1 to the machine's CPU count (0: all of them). More threads
     * than CPUs only contend, and a huge count would exhaust the per-thread scratch.
     */
    public static void setNumThreads(int n) {
        int cpus = Runtime.getRuntime().availableProcessors();
        if (n < 0 || n > cpus)
            throw new IllegalArgumentException("threads must be between 1 and this machine's " + cpus + " CPUs (0: all), got " + n);
        run(() -> {
            Handles.SET_THREADS.invokeExact(n);
        });
    }

    public static int numThreads() {
        return (int) call(() -> (int) Handles.GET_THREADS.invokeExact());
    }

    /** Bytes held by the kernels' per-thread scratch buffers (GEMM packing, attention). */
    public static long workspaceBytes() {
        return call(() -> (long) Handles.WORKSPACE.invokeExact());
    }
}
