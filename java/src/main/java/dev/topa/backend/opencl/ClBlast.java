package dev.topa.backend.opencl;

import static java.lang.foreign.ValueLayout.ADDRESS;
import static java.lang.foreign.ValueLayout.JAVA_FLOAT;
import static java.lang.foreign.ValueLayout.JAVA_INT;
import static java.lang.foreign.ValueLayout.JAVA_LONG;

import java.lang.foreign.Arena;
import java.lang.foreign.FunctionDescriptor;
import java.lang.foreign.Linker;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.SymbolLookup;
import java.lang.invoke.MethodHandle;

/**
 * CLBlast (libclblast.so.1; Debian libclblast-dev), the tuned OpenCL BLAS: the OpenCL backend's
 * matrix products, as cuBLASLt is the CUDA backend's. Row-major SGEMM on buffers with element
 * offsets, enqueued on the caller's queue (asynchronous, ordered like the kernels).
 */
final class ClBlast {
    private static final int ROW_MAJOR = 101, NO = 111, YES = 112;
    private static volatile Object loaded;

    private final MethodHandle sgemm;

    private ClBlast(SymbolLookup lib) {
        MemorySegment f = lib.find("CLBlastSgemm").orElseThrow(() -> new OpenClException("libclblast.so.1 has no CLBlastSgemm"));
        sgemm = Linker.nativeLinker().downcallHandle(f, FunctionDescriptor.of(JAVA_INT, JAVA_INT, JAVA_INT, JAVA_INT, JAVA_LONG, JAVA_LONG,
                JAVA_LONG, JAVA_FLOAT, JAVA_LONG, JAVA_LONG, JAVA_LONG, JAVA_LONG, JAVA_LONG, JAVA_LONG, JAVA_FLOAT, JAVA_LONG, JAVA_LONG,
                JAVA_LONG, ADDRESS, ADDRESS));
    }

    /** The library, or an error saying why there is none. */
    static synchronized ClBlast get() {
        if (loaded == null) {
            try {
                loaded = new ClBlast(SymbolLookup.libraryLookup("libclblast.so.1", Arena.global()));
            } catch (IllegalArgumentException e) {
                loaded = "CLBlast not found (libclblast.so.1; Debian: libclblast-dev)";
            }
        }
        if (loaded instanceof String s) throw new OpenClException(s);
        return (ClBlast) loaded;
    }

    /**
     * C [m, n] = alpha op(A) op(B) + beta C, row-major, offsets and leading dimensions in elements;
     * queue is a pointer to the cl_command_queue (CLBlast's signature).
     */
    void sgemm(boolean transA, boolean transB, long m, long n, long k, float alpha, long a, long aOff, long lda, long b, long bOff, long ldb,
            float beta, long c, long cOff, long ldc, MemorySegment queue) {
        int st;
        try {
            st = (int) sgemm.invokeExact(ROW_MAJOR, transA ? YES : NO, transB ? YES : NO, m, n, k, alpha, a, aOff, lda, b, bOff, ldb, beta, c,
                    cOff, ldc, queue, MemorySegment.NULL);
        } catch (Throwable t) {
            throw OpenCl.unchecked(t);
        }
        if (st != 0)
            throw new OpenClException("CLBlastSgemm(" + m + " x " + n + " x " + k + ") failed: " + (st > -1000 ? OpenCl.errorName(st)
                    : "CLBlast status " + st), st);
    }
}
