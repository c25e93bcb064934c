package dev.topa.backend.opencl;

/** An OpenCL or CLBlast call that failed: the message names the call and the error. */
public final class OpenClException extends RuntimeException {
    private final int status;

    public OpenClException(String message) {
        this(message, 0);
    }

    public OpenClException(String message, int status) {
        super(message);
        this.status = status;
    }

    /** The cl_int / CLBlastStatusCode (0 when none). */
    public int status() {
        return status;
    }
}
