package dev.topa.glue;

import java.nio.file.Path;

/** A malformed GLUE row: names the file and the 1-based line. */
public class GlueFormatException extends java.io.IOException {
    public GlueFormatException(Path file, int line, String what) {
        super(file + ":" + line + ": " + what);
    }
}
