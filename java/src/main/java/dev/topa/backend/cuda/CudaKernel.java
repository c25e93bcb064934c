package dev.topa.backend.cuda;

import static dev.topa.backend.cuda.CudaKernel.Arg.F32;
import static dev.topa.backend.cuda.CudaKernel.Arg.I32;
import static dev.topa.backend.cuda.CudaKernel.Arg.I64;
import static dev.topa.backend.cuda.CudaKernel.Arg.PTR;

import java.util.Arrays;
import java.util.Locale;

/**
 * Every kernel of topa_kernels.fatbin, each parameter list declared once, here (the CUDA side is
 * cuda-kernels/*.cu). {@link CudaBackend} checks the list against the compiled kernel's own when it
 * binds one (count and byte widths, from the driver), and each launch's arguments against the list;
 * a test holds the list to the PTX nvcc makes of the sources (widths and float-ness).
 */
public enum CudaKernel {
    // adamw.cu
    ADAMW_MULTI_F32(PTR, F32, F32, F32, F32, F32, F32, F32, F32, F32, PTR),
    CLIP_SCALE_F32(PTR, PTR, PTR, F32, F32),
    SUM_SQUARES_F32(PTR, PTR, I64),
    // attention.cu, attention_tc.cu
    ATTENTION_FORWARD_F32(PTR, PTR, PTR, I32, I32, I32, F32, I32, I32, F32),
    ATTENTION_FORWARD_BF16(PTR, PTR, PTR, I32, I32, I32, F32, I32, I32, F32),
    ATTENTION_FORWARD_TC_D32_F32(PTR, PTR, PTR, I32, I32, F32, I32, I32, F32),
    ATTENTION_FORWARD_TC_D64_F32(PTR, PTR, PTR, I32, I32, F32, I32, I32, F32),
    ATTENTION_FORWARD_TC_D128_F32(PTR, PTR, PTR, I32, I32, F32, I32, I32, F32),
    ATTENTION_FORWARD_TC_D32_BF16(PTR, PTR, PTR, I32, I32, F32, I32, I32, F32),
    ATTENTION_FORWARD_TC_D64_BF16(PTR, PTR, PTR, I32, I32, F32, I32, I32, F32),
    ATTENTION_FORWARD_TC_D128_BF16(PTR, PTR, PTR, I32, I32, F32, I32, I32, F32),
    // attention_backward.cu, attention_backward_tc.cu
    ATTENTION_BACKWARD_ROWS_F32(PTR, PTR, PTR, PTR, PTR, PTR, I32, I32, I32, F32, I32, I32, F32),
    ATTENTION_BACKWARD_COLS_F32(PTR, PTR, PTR, PTR, PTR, I32, I32, I32, F32),
    ATTENTION_BACKWARD_ROWS_TC_D32(PTR, PTR, PTR, PTR, PTR, PTR, I32, I32, F32, I32, I32, F32),
    ATTENTION_BACKWARD_COLS_TC_D32(PTR, PTR, PTR, PTR, PTR, I32, I32, F32),
    ATTENTION_BACKWARD_ROWS_TC_D64(PTR, PTR, PTR, PTR, PTR, PTR, I32, I32, F32, I32, I32, F32),
    ATTENTION_BACKWARD_COLS_TC_D64(PTR, PTR, PTR, PTR, PTR, I32, I32, F32),
    ATTENTION_BACKWARD_ROWS_TC_D128(PTR, PTR, PTR, PTR, PTR, PTR, I32, I32, F32, I32, I32, F32),
    ATTENTION_BACKWARD_COLS_TC_D128(PTR, PTR, PTR, PTR, PTR, I32, I32, F32),
    // bias.cu
    BIAS_BACKWARD_F32(PTR, PTR, I64, I32),
    // blocksparse.cu
    BSR_PACK_BF16(PTR, PTR, I64, PTR, PTR, I32, I32),
    BSR_PACK_F32(PTR, PTR, I64, PTR, PTR, I32, I32),
    BSR_LINEAR_TC(PTR, PTR, PTR, PTR, PTR, PTR, F32, I64, I32, I32, PTR, PTR, I32, F32, I32),
    BSR_LINEAR_TC4(PTR, PTR, PTR, PTR, PTR, PTR, F32, I64, I32, I32),
    BSR_LINEAR_TC8(PTR, PTR, PTR, PTR, PTR, PTR, F32, I64, I32, I32),
    BSR_LINEAR_TC8S(PTR, PTR, PTR, PTR, PTR, PTR, F32, I64, I32, I32),
    BSR_LINEAR_F32(PTR, PTR, PTR, PTR, PTR, PTR, F32, I64, I32, I32, PTR, PTR, I32, F32, I32),
    BSR_BLOCK_LOWRANK(PTR, PTR, PTR, I64, I32, I32),
    BSR_LOWRANK_GRAD(PTR, PTR, PTR, PTR, PTR, I64, I32, I32, I32, F32),
    // convert.cu
    CONVERT_F32_TO_BF16(PTR, PTR, I64),
    CONVERT_BF16_TO_F32(PTR, PTR, I64),
    BROADCAST_ROWS_F32(PTR, PTR, I64, I32),
    ZERO_OFF_DIAGONAL_F32(PTR, I64, I64, I32),
    TRANSPOSE_TO_BF16(PTR, PTR, I32, I32),
    TRANSPOSE_F32(PTR, PTR, I32, I32, F32),
    LORA_AUGMENT_TO_BF16(PTR, PTR, PTR, F32, I64, I32, I32),
    LORA_AUGMENT_LOWRANK_TO_BF16(PTR, PTR, PTR, PTR, I32, F32, I64, I32, I32),
    LORA_PACK_B_BF16(PTR, PTR, I32, I32, I32),
    // dropout.cu, embedding.cu, gelu.cu, importance.cu
    DROPOUT_F32(PTR, PTR, I64, I32, I32, F32, I32),
    EMBEDDING_FORWARD_F32(PTR, PTR, PTR, PTR, PTR, PTR, I32, I32, I32, I32),
    EMBEDDING_FORWARD_BF16(PTR, PTR, PTR, PTR, PTR, PTR, I32, I32, I32, I32),
    EMBEDDING_BACKWARD_F32(PTR, PTR, PTR, PTR, PTR, PTR, I32, I32, I32, I32),
    BIAS_GELU_FORWARD_F32(PTR, PTR, PTR, I64, I32),
    BIAS_GELU_FORWARD_BF16(PTR, PTR, PTR, I64, I32),
    BIAS_GELU_BACKWARD_F32(PTR, PTR, PTR, PTR, I64, I32),
    GROUP_DOT_F32(PTR, PTR, PTR, I32, I32, I32),
    BLOCK_DOT_F32(PTR, PTR, PTR, I64),
    // layernorm.cu, loss.cu, pool.cu, softmax.cu
    LAYERNORM_FORWARD_F32(PTR, PTR, PTR, PTR, PTR, PTR, PTR, PTR, I32, F32),
    LAYERNORM_FORWARD_BF16(PTR, PTR, PTR, PTR, PTR, PTR, PTR, PTR, I32, F32),
    LAYERNORM_BACKWARD_F32(PTR, PTR, PTR, PTR, PTR, PTR, PTR, PTR, I32, I32),
    CROSS_ENTROPY_FORWARD_F32(PTR, PTR, PTR, I32, I32),
    CROSS_ENTROPY_BACKWARD_F32(PTR, PTR, PTR, I32, I32, F32),
    LOSS_MEAN_F32(PTR, PTR, PTR, I32),
    MSE_FORWARD_F32(PTR, PTR, PTR, I64),
    MSE_BACKWARD_F32(PTR, PTR, PTR, I64, F32),
    DISTILLATION_BACKWARD_F32(PTR, PTR, PTR, I32, I32, F32, F32),
    HIDDEN_MATCH_BACKWARD_F32(PTR, PTR, PTR, PTR, I32, I32, F32),
    MEAN_POOL_FORWARD_F32(PTR, PTR, PTR, I32, I32),
    MEAN_POOL_BACKWARD_F32(PTR, PTR, PTR, I32, I32),
    SOFTMAX_FORWARD_F32(PTR, PTR, I32),
    SOFTMAX_FORWARD_BF16(PTR, PTR, I32),
    SOFTMAX_BACKWARD_F32(PTR, PTR, PTR, I32),
    // sparse24.cu
    SPARSE24_LINEAR_TC_L0(PTR, PTR, PTR, PTR, PTR, I64, I32, I32),
    SPARSE24_LINEAR_TC_L1(PTR, PTR, PTR, PTR, PTR, I64, I32, I32);

    /** A kernel parameter: a device pointer (Long, or null), a 64-bit integer (Long), a 32-bit one (Integer), a float (Float). */
    public enum Arg {
        PTR(8), I64(8), I32(4), F32(4);

        private final int bytes;

        Arg(int bytes) {
            this.bytes = bytes;
        }

        public int bytes() {
            return bytes;
        }

        /** Whether a launch argument fits this parameter. */
        boolean accepts(Object v) {
            return switch (this) {
                case PTR -> v == null || v instanceof Long;
                case I64 -> v instanceof Long;
                case I32 -> v instanceof Integer;
                case F32 -> v instanceof Float;
            };
        }
    }

    private final Arg[] args;

    CudaKernel(Arg... args) {
        this.args = args;
    }

    /** The kernel's name in the fatbin (its extern "C" name). */
    public String symbol() {
        return name().toLowerCase(Locale.ROOT);
    }

    public Arg[] args() {
        return args.clone();
    }

    /** Fails, naming the kernel and the argument, unless args fit the declared parameters. */
    public void checkLaunch(Object[] values) {
        if (values.length != args.length)
            throw new IllegalArgumentException(symbol() + ": " + values.length + " launch arguments, the kernel takes " + args.length);
        for (int i = 0; i < values.length; i++)
            if (!args[i].accepts(values[i]))
                throw new IllegalArgumentException(symbol() + ": argument " + i + " is " + (values[i] == null ? "null" : "a "
                        + values[i].getClass().getSimpleName()) + ", the kernel takes " + args[i]);
    }

    /** Fails unless the compiled kernel's parameter sizes (from the driver) are the declared ones. */
    public void checkBinding(long[] sizes) {
        boolean same = sizes.length == args.length;
        for (int i = 0; same && i < sizes.length; i++) same = sizes[i] == args[i].bytes;
        if (same) return;
        StringBuilder want = new StringBuilder();
        for (Arg a : args) want.append(want.isEmpty() ? "" : ", ").append(a.bytes);
        throw new IllegalStateException(symbol() + ": the compiled kernel takes parameters of " + Arrays.toString(sizes)
                + " bytes, CudaKernel declares [" + want + "] (the fatbin and this jar disagree: rebuild)");
    }
}
