package dev.topa.io;

/** A model file that cannot be used as it is: the message names the file and the tensor or field. */
public class ModelFormatException extends RuntimeException {
    public ModelFormatException(String message) {
        super(message);
    }

    public ModelFormatException(String message, Throwable cause) {
        super(message, cause);
    }
}
