package dev.topa.glue;

import java.nio.file.Path;

/** A malformed GLUE file: names the file, the 1-based line and, where one field is at fault, its column. */
public class GlueFormatException extends java.io.IOException {
    public GlueFormatException(Path file, int line, String what) {
        super(file + ":" + line + ": " + what);
    }

    public GlueFormatException(Path file, int line, int column, String what) {
        super(file + ":" + line + ": column " + column + ": " + what);
    }

    /** A fault of the whole file. */
    public GlueFormatException(Path file, String what) {
        super(file + ": " + what);
    }
}
