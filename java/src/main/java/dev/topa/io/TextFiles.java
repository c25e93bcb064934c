package dev.topa.io;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.CharBuffer;
import java.nio.charset.CharsetDecoder;
import java.nio.charset.CoderResult;
import java.nio.charset.CodingErrorAction;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;

/** Users' text files read as strict UTF-8, so that a bad byte is reported where it is, not as "Input length = 1". */
public final class TextFiles {
    /** Bytes that are not UTF-8, at a 1-based line and byte column. */
    public static final class NotUtf8Exception extends IOException {
        private final int line;

        NotUtf8Exception(Path file, int line, int column, int value) {
            super(file + ":" + line + ": byte column " + column + ": not UTF-8 (byte 0x" + String.format(Locale.ROOT, "%02X", value)
                    + "); save the file as UTF-8");
            this.line = line;
        }

        public int line() {
            return line;
        }
    }

    private TextFiles() {}

    /** The file's lines (LF or CRLF; no empty last line for a trailing newline). */
    public static List<String> lines(Path file) throws IOException {
        byte[] bytes = Files.readAllBytes(file);
        CharsetDecoder dec = StandardCharsets.UTF_8.newDecoder().onMalformedInput(CodingErrorAction.REPORT)
                .onUnmappableCharacter(CodingErrorAction.REPORT);
        ByteBuffer in = ByteBuffer.wrap(bytes);
        CharBuffer text = CharBuffer.allocate(bytes.length + 1);
        CoderResult r = dec.decode(in, text, true);
        if (r.isError()) {
            int at = in.position(), line = 1, start = 0;
            for (int k = 0; k < at; k++) {
                if (bytes[k] == '\n') {
                    line++;
                    start = k + 1;
                }
            }
            throw new NotUtf8Exception(file, line, at - start + 1, bytes[at] & 0xff);
        }
        dec.flush(text);
        text.flip();
        List<String> lines = new ArrayList<>(List.of(text.toString().split("\\r?\\n", -1)));
        if (!lines.isEmpty() && lines.getLast().isEmpty()) lines.removeLast();
        return lines;
    }
}
