package dev.topa.backend.cpu;

import static java.lang.foreign.ValueLayout.ADDRESS;
import static java.lang.foreign.ValueLayout.JAVA_DOUBLE;
import static java.lang.foreign.ValueLayout.JAVA_FLOAT;
import static java.lang.foreign.ValueLayout.JAVA_INT;
import static java.lang.foreign.ValueLayout.JAVA_LONG;

import java.lang.foreign.FunctionDescriptor;
import java.lang.foreign.MemoryLayout;
import java.lang.invoke.MethodHandle;
import java.util.Locale;

/**
 * Every function of libtopa_cpu.so the engine calls, each signature written once, here (the C side
 * is native/topa_cpu.h; a test holds the two to the same argument widths). Per-ISA kernels are
 * bound as {@code topa_<name>_<isa>}; the process-wide controls have no suffix. Critical: short
 * calls that need not let the GC run (losses, sizes).
 */
public enum CpuKernel {
    // process-wide controls (cpu.c)
    CPU_BEST_ISA(false, true, JAVA_INT),
    SET_NUM_THREADS(false, true, null, JAVA_INT),
    GET_NUM_THREADS(false, true, JAVA_INT),
    WORKSPACE_BYTES(false, true, JAVA_LONG),
    CPU_HAS_AVX512BF16(false, true, JAVA_INT),
    // gemm.c
    SGEMM(true, false, JAVA_INT, JAVA_INT, JAVA_INT, JAVA_LONG, JAVA_LONG, JAVA_LONG, JAVA_FLOAT, ADDRESS, JAVA_LONG, ADDRESS, JAVA_LONG,
            JAVA_FLOAT, ADDRESS, JAVA_LONG, ADDRESS),
    SGEMM_AUG(true, false, JAVA_INT, JAVA_INT, JAVA_INT, JAVA_LONG, JAVA_LONG, JAVA_LONG, JAVA_FLOAT, ADDRESS, JAVA_LONG, ADDRESS, JAVA_LONG,
            JAVA_LONG, ADDRESS, JAVA_LONG, JAVA_FLOAT, JAVA_INT, ADDRESS, JAVA_LONG, JAVA_FLOAT, ADDRESS, JAVA_LONG, ADDRESS),
    SGEMM_PACKED_SIZE(true, true, JAVA_LONG, JAVA_LONG, JAVA_LONG),
    SGEMM_PACK_B(true, false, null, JAVA_INT, JAVA_LONG, JAVA_LONG, ADDRESS, JAVA_LONG, ADDRESS),
    SGEMM_PACKED(true, false, JAVA_INT, JAVA_INT, JAVA_LONG, JAVA_LONG, JAVA_LONG, JAVA_FLOAT, ADDRESS, JAVA_LONG, ADDRESS, JAVA_FLOAT,
            ADDRESS, JAVA_LONG, ADDRESS),
    BIAS_BACKWARD(true, false, null, ADDRESS, ADDRESS, JAVA_LONG, JAVA_LONG),
    // gemm_bf16.c
    BF16_PACKED_SIZE(true, true, JAVA_LONG, JAVA_LONG, JAVA_LONG),
    CONVERT_F32_TO_BF16(true, false, null, ADDRESS, ADDRESS, JAVA_LONG),
    CONVERT_BF16_TO_F32(true, false, null, ADDRESS, ADDRESS, JAVA_LONG),
    BF16_PACK_B(true, false, null, JAVA_INT, JAVA_LONG, JAVA_LONG, ADDRESS, JAVA_LONG, ADDRESS),
    BF16_GEMM_PACKED(true, false, JAVA_INT, JAVA_INT, JAVA_LONG, JAVA_LONG, JAVA_LONG, JAVA_FLOAT, ADDRESS, JAVA_LONG, ADDRESS, JAVA_FLOAT,
            ADDRESS, JAVA_LONG, ADDRESS, JAVA_LONG, ADDRESS, JAVA_FLOAT, JAVA_INT, ADDRESS),
    // blocksparse.c
    BSR_PACK(true, false, null, ADDRESS, JAVA_LONG, JAVA_LONG, ADDRESS, JAVA_INT, ADDRESS, ADDRESS, ADDRESS),
    BSR_LINEAR(true, false, JAVA_INT, JAVA_LONG, JAVA_LONG, JAVA_LONG, ADDRESS, JAVA_LONG, ADDRESS, ADDRESS, ADDRESS, ADDRESS, JAVA_FLOAT,
            ADDRESS, JAVA_LONG, JAVA_LONG, ADDRESS, ADDRESS, JAVA_FLOAT, JAVA_INT),
    BSR_BLOCK_LOWRANK(true, false, JAVA_INT, JAVA_LONG, JAVA_LONG, JAVA_LONG, ADDRESS, JAVA_LONG, ADDRESS, ADDRESS),
    BSR_LOWRANK_GRAD(true, false, null, JAVA_LONG, JAVA_LONG, JAVA_LONG, JAVA_LONG, ADDRESS, JAVA_LONG, ADDRESS, ADDRESS, ADDRESS, JAVA_FLOAT,
            ADDRESS),
    // layernorm.c, gelu.c, softmax.c
    LAYERNORM_FORWARD(true, false, null, ADDRESS, ADDRESS, ADDRESS, ADDRESS, ADDRESS, ADDRESS, ADDRESS, ADDRESS, JAVA_LONG, JAVA_LONG,
            JAVA_FLOAT),
    LAYERNORM_BACKWARD(true, false, null, ADDRESS, ADDRESS, ADDRESS, ADDRESS, ADDRESS, ADDRESS, ADDRESS, ADDRESS, JAVA_LONG, JAVA_LONG,
            JAVA_INT),
    BIAS_GELU_FORWARD(true, false, null, ADDRESS, ADDRESS, ADDRESS, JAVA_LONG, JAVA_LONG),
    BIAS_GELU_BACKWARD(true, false, null, ADDRESS, ADDRESS, ADDRESS, ADDRESS, ADDRESS, JAVA_LONG, JAVA_LONG),
    SOFTMAX_FORWARD(true, false, null, ADDRESS, ADDRESS, JAVA_LONG, JAVA_LONG),
    SOFTMAX_BACKWARD(true, false, null, ADDRESS, ADDRESS, ADDRESS, JAVA_LONG, JAVA_LONG),
    // attention.c
    ATTENTION_FORWARD(true, false, JAVA_INT, ADDRESS, JAVA_LONG, ADDRESS, ADDRESS, ADDRESS, ADDRESS, JAVA_LONG, ADDRESS, JAVA_LONG, JAVA_LONG,
            JAVA_LONG, JAVA_LONG, JAVA_FLOAT, JAVA_INT, JAVA_INT, JAVA_FLOAT),
    ATTENTION_FORWARD_PACKED(true, false, JAVA_INT, ADDRESS, JAVA_LONG, ADDRESS, ADDRESS, ADDRESS, JAVA_LONG, ADDRESS, JAVA_LONG, JAVA_LONG,
            JAVA_LONG, JAVA_FLOAT),
    ATTENTION_BACKWARD(true, false, JAVA_INT, ADDRESS, ADDRESS, ADDRESS, JAVA_LONG, ADDRESS, JAVA_LONG, ADDRESS, ADDRESS, ADDRESS, ADDRESS,
            JAVA_LONG, ADDRESS, JAVA_LONG, JAVA_LONG, JAVA_LONG, JAVA_LONG, JAVA_FLOAT, JAVA_INT, JAVA_INT, JAVA_FLOAT),
    // dropout.c, importance.c
    DROPOUT(true, false, null, ADDRESS, ADDRESS, JAVA_LONG, JAVA_INT, JAVA_INT, JAVA_FLOAT, JAVA_INT),
    GROUP_DOT(true, false, null, ADDRESS, ADDRESS, ADDRESS, JAVA_LONG, JAVA_LONG, JAVA_LONG, JAVA_LONG),
    BLOCK_DOT(true, false, null, ADDRESS, ADDRESS, ADDRESS, JAVA_LONG, JAVA_LONG),
    TRANSPOSE(true, false, null, ADDRESS, ADDRESS, JAVA_LONG, JAVA_LONG, JAVA_FLOAT),
    // embedding.c, pool.c
    EMBEDDING_FORWARD(true, false, JAVA_INT, ADDRESS, ADDRESS, ADDRESS, ADDRESS, ADDRESS, ADDRESS, ADDRESS, JAVA_LONG, JAVA_LONG, JAVA_LONG,
            JAVA_LONG, JAVA_LONG, JAVA_LONG),
    EMBEDDING_BACKWARD(true, false, null, ADDRESS, ADDRESS, ADDRESS, ADDRESS, ADDRESS, ADDRESS, ADDRESS, JAVA_LONG, JAVA_LONG, JAVA_LONG),
    MEAN_POOL_FORWARD(true, false, null, ADDRESS, ADDRESS, ADDRESS, JAVA_LONG, JAVA_LONG, JAVA_LONG),
    MEAN_POOL_BACKWARD(true, false, null, ADDRESS, ADDRESS, ADDRESS, JAVA_LONG, JAVA_LONG, JAVA_LONG),
    // loss.c, adamw.c
    CROSS_ENTROPY_FORWARD(true, true, JAVA_INT, ADDRESS, ADDRESS, ADDRESS, ADDRESS, JAVA_LONG, JAVA_LONG),
    CROSS_ENTROPY_BACKWARD(true, true, null, ADDRESS, ADDRESS, ADDRESS, JAVA_LONG, JAVA_LONG, JAVA_FLOAT),
    MSE_FORWARD(true, true, JAVA_FLOAT, ADDRESS, ADDRESS, JAVA_LONG),
    MSE_BACKWARD(true, true, null, ADDRESS, ADDRESS, ADDRESS, JAVA_LONG, JAVA_FLOAT),
    ADAMW_STEP(true, false, null, ADDRESS, ADDRESS, ADDRESS, ADDRESS, JAVA_LONG, JAVA_DOUBLE, JAVA_DOUBLE, JAVA_DOUBLE, JAVA_DOUBLE, JAVA_DOUBLE,
            JAVA_LONG, JAVA_FLOAT),
    SUM_SQUARES(true, false, JAVA_DOUBLE, ADDRESS, JAVA_LONG);

    private final boolean perIsa, critical;
    private final FunctionDescriptor descriptor;

    /** result null: void. */
    CpuKernel(boolean perIsa, boolean critical, MemoryLayout result, MemoryLayout... args) {
        this.perIsa = perIsa;
        this.critical = critical;
        this.descriptor = result == null ? FunctionDescriptor.ofVoid(args) : FunctionDescriptor.of(result, args);
    }

    /** The C name without its ISA suffix: topa_sgemm for SGEMM. */
    public String symbol() {
        return "topa_" + name().toLowerCase(Locale.ROOT);
    }

    public FunctionDescriptor descriptor() {
        return descriptor;
    }

    public boolean perIsa() {
        return perIsa;
    }

    /** The downcall handle of this kernel for isa (ignored for the process-wide controls). */
    MethodHandle bind(Isa isa) {
        return NativeLibrary.get().downcall(symbol() + (perIsa ? isa.suffix() : ""), descriptor, critical);
    }

    /** A call through a kernel's handle: invokeExact with the declared argument types. */
    @FunctionalInterface
    interface Call {
        long run() throws Throwable;
    }

    /** The same for the kernels that return nothing, and for those that return a float or double. */
    @FunctionalInterface
    interface VoidCall {
        void run() throws Throwable;
    }

    @FunctionalInterface
    interface ValueCall {
        double run() throws Throwable;
    }

    /** Runs a call; every downcall of the engine goes through here (the one place a Throwable is unwrapped). */
    static long call(Call c) {
        try {
            return c.run();
        } catch (RuntimeException | Error e) {
            throw e;
        } catch (Throwable t) {
            throw new IllegalStateException(t);
        }
    }

    static void run(VoidCall c) {
        call(() -> {
            c.run();
            return 0;
        });
    }

    static double value(ValueCall c) {
        double[] v = new double[1];
        call(() -> {
            v[0] = c.run();
            return 0;
        });
        return v[0];
    }
}
