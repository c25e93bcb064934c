package dev.topa.io;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.charset.StandardCharsets;

/**
 * Protocol-buffer wire format over a memory segment: just enough to walk an ONNX model without a
 * protobuf runtime. Length-delimited fields come back as slices of the same (memory-mapped)
 * segment, so tensor data is never copied here. Every read is bounds-checked and reports the byte
 * offset where the data stops making sense.
 */
final class ProtoReader {
    static final int VARINT = 0, FIXED64 = 1, LENGTH = 2, FIXED32 = 5;

    private final MemorySegment data;
    private final String source;
    private long pos;
    private int tag;

    ProtoReader(MemorySegment data, String source) {
        this.data = data;
        this.source = source;
    }

    /** Advances to the next field; false at the end of the message. */
    boolean next() {
        if (pos >= data.byteSize()) return false;
        long t = varint();
        if (t >>> 3 == 0 || t > Integer.MAX_VALUE) throw corrupt("bad field tag " + t);
        tag = (int) t;
        return true;
    }

    int field() {
        return tag >>> 3;
    }

    int wireType() {
        return tag & 7;
    }

    long varint() {
        long result = 0;
        for (int shift = 0; shift < 64; shift += 7) {
            if (pos >= data.byteSize()) throw corrupt("varint runs past the end");
            byte b = data.get(ValueLayout.JAVA_BYTE, pos++);
            result |= (long) (b & 0x7f) << shift;
            if (b >= 0) return result;
        }
        throw corrupt("varint longer than 10 bytes");
    }

    float fixed32Float() {
        need(4);
        float f = data.get(ValueLayout.JAVA_FLOAT_UNALIGNED, pos);
        pos += 4;
        return f;
    }

    MemorySegment bytes() {
        long len = varint();
        if (len < 0 || len > data.byteSize() - pos)
            throw corrupt("a field of " + len + " bytes runs past the end (" + (data.byteSize() - pos) + " left): truncated?");
        MemorySegment s = data.asSlice(pos, len);
        pos += len;
        return s;
    }

    String string() {
        return new String(bytes().toArray(ValueLayout.JAVA_BYTE), StandardCharsets.UTF_8);
    }

    ProtoReader message() {
        return new ProtoReader(bytes(), source);
    }

    /** A repeated int64 field, packed (one length-delimited run) or not (one varint). */
    void int64s(java.util.function.LongConsumer out) {
        if (wireType() == LENGTH) {
            ProtoReader r = new ProtoReader(bytes(), source);
            while (r.pos < r.data.byteSize()) out.accept(r.varint());
        } else {
            out.accept(varint());
        }
    }

    void skip() {
        switch (wireType()) {
            case VARINT -> varint();
            case FIXED64 -> {
                need(8);
                pos += 8;
            }
            case LENGTH -> bytes();
            case FIXED32 -> {
                need(4);
                pos += 4;
            }
            default -> throw corrupt("unsupported wire type " + wireType());
        }
    }

    private void need(long n) {
        if (data.byteSize() - pos < n) throw corrupt("field runs past the end");
    }

    private ModelFormatException corrupt(String what) {
        return new ModelFormatException(source + ": corrupt protobuf at byte " + pos + " of a " + data.byteSize()
                + "-byte message: " + what);
    }
}
