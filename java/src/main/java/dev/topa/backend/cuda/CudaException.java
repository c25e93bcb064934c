package dev.topa.backend.cuda;

/** A CUDA driver or library call that failed: the message names the call and the error. */
public final class CudaException extends RuntimeException {
    private final int status;

    public CudaException(String message) {
        this(message, -1);
    }

    public CudaException(String message, int status) {
        super(message);
        this.status = status;
    }

    /** The CUresult / cublasStatus_t value (-1 when none). */
    public int status() {
        return status;
    }
}
