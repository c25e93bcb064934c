package dev.topa.backend.cpu;

import static java.lang.foreign.ValueLayout.JAVA_INT;
import static java.lang.foreign.ValueLayout.JAVA_LONG;

import java.lang.foreign.FunctionDescriptor;
import java.lang.invoke.MethodHandle;

/** The process-wide native controls: CPUID, thread count, kernel scratch bytes. */
public final class CpuKernels {
    private CpuKernels() {}

    private static final class Handles {
        static final NativeLibrary LIB = NativeLibrary.get();
        static final MethodHandle BEST_ISA = LIB.downcall("topa_cpu_best_isa", FunctionDescriptor.of(JAVA_INT), true);
        static final MethodHandle SET_THREADS = LIB.downcall("topa_set_num_threads", FunctionDescriptor.ofVoid(JAVA_INT), true);
        static final MethodHandle GET_THREADS = LIB.downcall("topa_get_num_threads", FunctionDescriptor.of(JAVA_INT), true);
        static final MethodHandle WORKSPACE = LIB.downcall("topa_workspace_bytes", FunctionDescriptor.of(JAVA_LONG), true);
        static final MethodHandle HAS_BF16 = LIB.downcall("topa_cpu_has_avx512bf16", FunctionDescriptor.of(JAVA_INT), true);
    }

    static int bestIsa() {
        try {
            return (int) Handles.BEST_ISA.invokeExact();
        } catch (Throwable t) {
            throw rethrow(t);
        }
    }

    /** Whether this CPU runs AVX512_BF16 dot products (VDPBF16PS). */
    public static boolean hasAvx512Bf16() {
        try {
            return (int) Handles.HAS_BF16.invokeExact() != 0;
        } catch (Throwable t) {
            throw rethrow(t);
        }
    }

    /** Threads every CPU kernel uses (process-wide); n <= 0 means all cores. */
    public static void setNumThreads(int n) {
        try {
            Handles.SET_THREADS.invokeExact(n);
        } catch (Throwable t) {
            throw rethrow(t);
        }
    }

    public static int numThreads() {
        try {
            return (int) Handles.GET_THREADS.invokeExact();
        } catch (Throwable t) {
            throw rethrow(t);
        }
    }

    /** Bytes held by the kernels' per-thread scratch buffers (GEMM packing, attention). */
    public static long workspaceBytes() {
        try {
            return (long) Handles.WORKSPACE.invokeExact();
        } catch (Throwable t) {
            throw rethrow(t);
        }
    }

    static RuntimeException rethrow(Throwable t) {
        if (t instanceof RuntimeException r) return r;
        if (t instanceof Error e) throw e;
        return new IllegalStateException(t);
    }
}
