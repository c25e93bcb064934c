package dev.topa.dist;

/** An MPI call that failed, with the call, the rank and MPI's own text. */
public final class MpiException extends RuntimeException {
    public MpiException(String message) {
        super(message);
    }
}
