package dev.topa.bench;

import static java.lang.foreign.ValueLayout.ADDRESS;
import static java.lang.foreign.ValueLayout.JAVA_FLOAT;
import static java.lang.foreign.ValueLayout.JAVA_INT;

import java.lang.foreign.Arena;
import java.lang.foreign.FunctionDescriptor;
import java.lang.foreign.Linker;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.SymbolLookup;
import java.lang.invoke.MethodHandle;

/** OpenBLAS's cblas_sgemm through FFM: the baseline our GEMM is measured against. */
final class OpenBlas {
    static final String SONAME = "libopenblas.so.0";
    private static final int ROW_MAJOR = 101, NO_TRANS = 111, TRANS = 112;

    private final MethodHandle sgemm, setThreads, coreName;

    OpenBlas() {
        SymbolLookup lib;
        try {
            lib = SymbolLookup.libraryLookup(SONAME, Arena.global());
        } catch (IllegalArgumentException e) {
            throw new IllegalStateException(SONAME + " not found: install Debian's libopenblas0-pthread (bench/gemm.sh does)", e);
        }
        Linker linker = Linker.nativeLinker();
        sgemm = linker.downcallHandle(lib.find("cblas_sgemm").orElseThrow(), FunctionDescriptor.ofVoid(JAVA_INT, JAVA_INT,
                JAVA_INT, JAVA_INT, JAVA_INT, JAVA_INT, JAVA_FLOAT, ADDRESS, JAVA_INT, ADDRESS, JAVA_INT, JAVA_FLOAT, ADDRESS,
                JAVA_INT));
        setThreads = linker.downcallHandle(lib.find("openblas_set_num_threads").orElseThrow(),
                FunctionDescriptor.ofVoid(JAVA_INT));
        coreName = linker.downcallHandle(lib.find("openblas_get_corename").orElseThrow(), FunctionDescriptor.of(ADDRESS));
    }

    void setThreads(int n) throws Throwable {
        setThreads.invokeExact(n);
    }

    /** The kernel family OpenBLAS picked for this CPU (OPENBLAS_CORETYPE overrides it). */
    String coreName() throws Throwable {
        MemorySegment p = (MemorySegment) coreName.invokeExact();
        return p.reinterpret(64).getString(0);
    }

    /** Row-major C[M,N] = alpha op(A) op(B) + beta C, as our sgemm. */
    void sgemm(boolean tA, boolean tB, int m, int n, int k, float alpha, MemorySegment a, int lda, MemorySegment b,
            int ldb, float beta, MemorySegment c, int ldc) throws Throwable {
        sgemm.invokeExact(ROW_MAJOR, tA ? TRANS : NO_TRANS, tB ? TRANS : NO_TRANS, m, n, k, alpha, a, lda, b, ldb, beta, c,
                ldc);
    }
}
