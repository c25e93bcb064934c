package dev.topa.backend.cuda;

import static java.lang.foreign.ValueLayout.ADDRESS;
import static java.lang.foreign.ValueLayout.JAVA_FLOAT;
import static java.lang.foreign.ValueLayout.JAVA_INT;
import static java.lang.foreign.ValueLayout.JAVA_LONG;

import java.lang.foreign.Arena;
import java.lang.foreign.FunctionDescriptor;
import java.lang.foreign.Linker;
import java.lang.foreign.MemoryLayout;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.SymbolLookup;
import java.lang.invoke.MethodHandle;
import java.util.HashMap;
import java.util.Map;

/**
 * Dense GEMM through cuBLASLt (libcublasLt.so.13, else .12) via FFM, in the engine's row-major
 * linear-layer form Y[M, N] = X[M, K] W[N, K]^T (+ bias[N]) (then GELU: cuBLASLt's is the tanh
 * approximation, so BERT's exact-erf layers use the bias epilogue and topa's GELU kernel). The
 * row-major product is issued as the column-major Y^T = W X^T: A = W (transposed), B = X. Plans
 * (descriptor, layouts, the heuristic's algorithm) are built once per shape and type and cached;
 * one workspace is allocated once. Every status is checked.
 */
public final class CublasLt implements AutoCloseable {
    /** cudaDataType_t and cuBLAS enums used here (cublasLt.h, library_types.h). */
    static final int CUDA_R_32F = 0, CUDA_R_16BF = 14, COMPUTE_32F = 68, OP_N = 0, OP_T = 1;
    static final int DESC_TRANSA = 3, DESC_TRANSB = 4, DESC_EPILOGUE = 7, DESC_BIAS_POINTER = 8;
    static final int EPILOGUE_DEFAULT = 1, EPILOGUE_BIAS = 4, EPILOGUE_GELU_BIAS = 36, PREF_MAX_WORKSPACE_BYTES = 1;
    /** cublasLtMatmulHeuristicResult_t: algo (8 x u64), workspaceSize, state, wavesCount, reserved[4]. */
    static final long HEURISTIC_BYTES = 64 + 8 + 4 + 4 + 16;
    static final long WORKSPACE_BYTES = 32L << 20;

    public enum Epilogue { NONE, BIAS, GELU_BIAS }

    private final CudaDriver cu;
    private final MethodHandle create, destroy, descCreate, descSetAttribute, layoutCreate, prefCreate, prefSetAttribute, heuristic, matmul;
    private final Arena arena = Arena.ofShared();
    private final MemorySegment handle;
    private final long workspace;
    private final Map<PlanKey, Plan> plans = new HashMap<>();
    private final String library;

    private record Plan(MemorySegment desc, MemorySegment a, MemorySegment b, MemorySegment c, MemorySegment algo) {}

    private record PlanKey(boolean transA, boolean transB, long m, long n, long k, long lda, long ldb, long ldc, Types types,
            Epilogue epilogue) {}

    /** alpha, beta and the bias pointer of the call in progress (calls are serialised; cuBLASLt reads them during the call). */
    private final MemorySegment alphaSlot, betaSlot, biasSlot;

    public CublasLt(CudaDriver cu) {
        this.cu = cu;
        SymbolLookup lib = null;
        String found = null;
        for (String name : new String[] {"libcublasLt.so.13", "libcublasLt.so.12"}) {
            try {
                lib = SymbolLookup.libraryLookup(name, Arena.global());
                found = name;
                break;
            } catch (IllegalArgumentException notHere) {
                // try the next soname
            }
        }
        if (lib == null) throw new CudaException("cuBLASLt not found (libcublasLt.so.13 or .12)");
        library = found;
        create = bind(lib, "cublasLtCreate", ADDRESS);
        destroy = bind(lib, "cublasLtDestroy", ADDRESS);
        descCreate = bind(lib, "cublasLtMatmulDescCreate", ADDRESS, JAVA_INT, JAVA_INT);
        descSetAttribute = bind(lib, "cublasLtMatmulDescSetAttribute", ADDRESS, JAVA_INT, ADDRESS, JAVA_LONG);
        layoutCreate = bind(lib, "cublasLtMatrixLayoutCreate", ADDRESS, JAVA_INT, JAVA_LONG, JAVA_LONG, JAVA_LONG);
        prefCreate = bind(lib, "cublasLtMatmulPreferenceCreate", ADDRESS);
        prefSetAttribute = bind(lib, "cublasLtMatmulPreferenceSetAttribute", ADDRESS, JAVA_INT, ADDRESS, JAVA_LONG);
        heuristic = bind(lib, "cublasLtMatmulAlgoGetHeuristic", ADDRESS, ADDRESS, ADDRESS, ADDRESS, ADDRESS, ADDRESS, ADDRESS, JAVA_INT,
                ADDRESS, ADDRESS);
        // the stream as a 64-bit integer (a pointer in the ABI alike), so the hot call is one invokeExact
        matmul = bind(lib, "cublasLtMatmul", ADDRESS, ADDRESS, ADDRESS, JAVA_LONG, ADDRESS, JAVA_LONG, ADDRESS, ADDRESS, JAVA_LONG, ADDRESS,
                JAVA_LONG, ADDRESS, ADDRESS, JAVA_LONG, JAVA_LONG, JAVA_LONG);
        MemorySegment h = arena.allocate(ADDRESS);
        check(call(create, h), "cublasLtCreate");
        handle = h.get(ADDRESS, 0);
        workspace = cu.malloc(WORKSPACE_BYTES);
        alphaSlot = arena.allocate(JAVA_FLOAT);
        betaSlot = arena.allocate(JAVA_FLOAT);
        biasSlot = arena.allocate(JAVA_LONG);
    }

    public String library() {
        return library;
    }

    private static MethodHandle bind(SymbolLookup lib, String name, MemoryLayout... args) {
        MemorySegment f = lib.find(name).orElseThrow(() -> new CudaException("cuBLASLt has no symbol " + name));
        return Linker.nativeLinker().downcallHandle(f, FunctionDescriptor.of(JAVA_INT, args));
    }

    private static int call(MethodHandle h, Object... args) {
        return CudaDriver.call(h, args);
    }

    private static void check(int status, String what) {
        if (status != 0) throw new CudaException(what + " failed: cublasStatus_t " + status + statusName(status), status);
    }

    private static String statusName(int s) {
        return switch (s) {
            case 1 -> " (CUBLAS_STATUS_NOT_INITIALIZED)";
            case 3 -> " (CUBLAS_STATUS_ALLOC_FAILED)";
            case 7 -> " (CUBLAS_STATUS_INVALID_VALUE)";
            case 8 -> " (CUBLAS_STATUS_ARCH_MISMATCH)";
            case 13 -> " (CUBLAS_STATUS_EXECUTION_FAILED)";
            case 14 -> " (CUBLAS_STATUS_INTERNAL_ERROR)";
            case 15 -> " (CUBLAS_STATUS_NOT_SUPPORTED)";
            default -> "";
        };
    }

    /** Storage types of a product: the inputs A and B, and the output C (fp32 accumulation always). */
    public enum Types {
        F32(CUDA_R_32F, CUDA_R_32F), BF16(CUDA_R_16BF, CUDA_R_16BF), BF16_IN_F32_OUT(CUDA_R_16BF, CUDA_R_32F);

        final int in, out;

        Types(int in, int out) {
            this.in = in;
            this.out = out;
        }
    }

    /**
     * y[m, n] = x[m, k] w[n, k]^T (+ bias[n]) (+ GELU) on the stream, all device pointers; bf16: x,
     * w, y and bias bf16 (fp32 accumulation), else all fp32.
     */
    public void linear(long y, long x, long w, long bias, long m, long n, long k, boolean bf16, Epilogue epilogue, long stream) {
        matmul(false, true, m, n, k, 1f, x, k, w, k, 0f, y, n, bias, bf16 ? Types.BF16 : Types.F32, epilogue, stream);
    }

    /**
     * Row-major C[m, n] = alpha op(A) op(B) + beta C (+ bias[n] of C's type, with the epilogue), op(A) [m, k]
     * (A stored [k, m] when transA), op(B) [k, n] (B stored [n, k] when transB), leading dimensions
     * in elements; device pointers, issued on the stream. Column-major cuBLASLt sees C^T = op(B)^T
     * op(A)^T: its first operand is B, its second A, each with the layout of the stored matrix.
     */
    public synchronized void matmul(boolean transA, boolean transB, long m, long n, long k, float alpha, long a, long lda, long b, long ldb,
            float beta, long c, long ldc, long bias, Types types, Epilogue epilogue, long stream) {
        if ((epilogue != Epilogue.NONE) != (bias != 0))
            throw new IllegalArgumentException("cuBLASLt matmul: the " + epilogue + " epilogue and the bias pointer disagree");
        Plan p = plans.computeIfAbsent(new PlanKey(transA, transB, m, n, k, lda, ldb, ldc, types, epilogue),
                x -> plan(transA, transB, m, n, k, lda, ldb, ldc, types, epilogue));
        if (bias != 0) {
            biasSlot.set(JAVA_LONG, 0, bias);
            check(call(descSetAttribute, p.desc(), DESC_BIAS_POINTER, biasSlot, 8L), "cublasLtMatmulDescSetAttribute(BIAS_POINTER)");
        }
        alphaSlot.set(JAVA_FLOAT, 0, alpha);
        betaSlot.set(JAVA_FLOAT, 0, beta);
        int status;
        try {
            status = (int) matmul.invokeExact(handle, p.desc(), alphaSlot, b, p.a(), a, p.b(), betaSlot, c, p.c(), c, p.c(), p.algo(), workspace,
                    WORKSPACE_BYTES, stream);
        } catch (Throwable t) {
            throw CudaDriver.unchecked(t);
        }
        if (status != 0) check(status, "cublasLtMatmul(" + m + "x" + n + "x" + k + " " + types + ")"); // no message built per call
    }

    private Plan plan(boolean transA, boolean transB, long m, long n, long k, long lda, long ldb, long ldc, Types types, Epilogue epilogue) {
        MemorySegment out = arena.allocate(ADDRESS);
        check(call(descCreate, out, COMPUTE_32F, CUDA_R_32F), "cublasLtMatmulDescCreate");
        MemorySegment desc = out.get(ADDRESS, 0);
        // cuBLASLt's A is our B: stored row-major [k, n] (or [n, k] when transB), i.e. column-major [n, k] (or [k, n])
        setInt(desc, DESC_TRANSA, transB ? OP_T : OP_N, "TRANSA");
        setInt(desc, DESC_TRANSB, transA ? OP_T : OP_N, "TRANSB");
        setInt(desc, DESC_EPILOGUE, switch (epilogue) {
            case NONE -> EPILOGUE_DEFAULT;
            case BIAS -> EPILOGUE_BIAS;
            case GELU_BIAS -> EPILOGUE_GELU_BIAS;
        }, "EPILOGUE");
        MemorySegment la = transB ? layout(types.in, k, n, ldb) : layout(types.in, n, k, ldb);
        MemorySegment lb = transA ? layout(types.in, m, k, lda) : layout(types.in, k, m, lda);
        MemorySegment lc = layout(types.out, n, m, ldc);
        MemorySegment pref = arena.allocate(ADDRESS);
        check(call(prefCreate, pref), "cublasLtMatmulPreferenceCreate");
        MemorySegment ws = arena.allocate(JAVA_LONG);
        ws.set(JAVA_LONG, 0, WORKSPACE_BYTES);
        check(call(prefSetAttribute, pref.get(ADDRESS, 0), PREF_MAX_WORKSPACE_BYTES, ws, 8L), "cublasLtMatmulPreferenceSetAttribute");
        MemorySegment result = arena.allocate(HEURISTIC_BYTES, 8), count = arena.allocate(JAVA_INT);
        check(call(heuristic, handle, desc, la, lb, lc, lc, pref.get(ADDRESS, 0), 1, result, count), "cublasLtMatmulAlgoGetHeuristic");
        if (count.get(JAVA_INT, 0) < 1)
            throw new CudaException("cuBLASLt has no algorithm for " + m + "x" + n + "x" + k + " " + types + " " + epilogue);
        return new Plan(desc, la, lb, lc, result); // the algorithm is the result's first 64 bytes
    }

    private void setInt(MemorySegment desc, int attr, int value, String name) {
        MemorySegment v = arena.allocate(JAVA_INT);
        v.set(JAVA_INT, 0, value);
        check(call(descSetAttribute, desc, attr, v, 4L), "cublasLtMatmulDescSetAttribute(" + name + ")");
    }

    private MemorySegment layout(int type, long rows, long cols, long ld) {
        MemorySegment out = arena.allocate(ADDRESS);
        check(call(layoutCreate, out, type, rows, cols, ld), "cublasLtMatrixLayoutCreate");
        return out.get(ADDRESS, 0);
    }

    @Override
    public void close() {
        cu.free(workspace);
        check(call(destroy, handle), "cublasLtDestroy");
        arena.close();
    }
}
