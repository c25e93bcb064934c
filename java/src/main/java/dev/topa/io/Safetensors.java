package dev.topa.io;

import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import dev.topa.tensor.Bf16;
import dev.topa.tensor.DType;
import dev.topa.tensor.Tensor;
import java.io.IOException;
import java.io.OutputStream;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.FileChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.nio.file.StandardOpenOption;
import java.util.Arrays;
import java.util.Iterator;
import java.util.LinkedHashMap;
import java.util.Map;

/**
 * The safetensors format: an 8-byte little-endian header length, a JSON header naming each
 * tensor's dtype, shape and byte range, then the data. Files are memory-mapped for reading (tensor
 * data is a slice of the mapping until copied) and written atomically (temp file + rename).
 */
public final class Safetensors implements AutoCloseable {
    private static final ObjectMapper JSON = new ObjectMapper();
    private static final long MAX_HEADER = 100L << 20;

    /** One tensor of the file: dtype as written ("F32", "BF16", ...), shape, bytes. */
    public record Entry(String name, String dtype, long[] shape, MemorySegment bytes) {
        public long numel() {
            long n = 1;
            for (long d : shape) n *= d;
            return n;
        }

        /** Rows [from, to) of the first dimension: a slice of these bytes, named name[from:to] (errors index within it). */
        public Entry rows(long from, long to) {
            if (shape.length == 0 || from < 0 || to < from || to > shape[0])
                throw new IndexOutOfBoundsException("rows " + from + " to " + to + " of tensor " + name + " " + Arrays.toString(shape));
            long rowBytes = shape[0] == 0 ? 0 : bytes.byteSize() / shape[0];
            long[] s = shape.clone();
            s[0] = to - from;
            return new Entry(name + "[" + from + ":" + to + "]", dtype, s, bytes.asSlice(from * rowBytes, (to - from) * rowBytes));
        }

        /** The values as float32 (F32, F16 and BF16 files). */
        public float[] floats(Path file) {
            return WeightConversion.toFloats(file, name, dtype, bytes, numel());
        }
    }

    private final Path file;
    private final Arena arena;
    private final Map<String, Entry> entries = new LinkedHashMap<>();
    private final Map<String, String> metadata = new LinkedHashMap<>();

    private Safetensors(Path file, Arena arena) {
        this.file = file;
        this.arena = arena;
    }

    public static Safetensors read(Path file) {
        Arena arena = Arena.ofShared();
        try (FileChannel ch = FileChannel.open(file, StandardOpenOption.READ)) {
            Safetensors st = new Safetensors(file, arena);
            st.parse(ch.size() == 0 ? MemorySegment.NULL : ch.map(FileChannel.MapMode.READ_ONLY, 0, ch.size(), arena), ch.size());
            return st;
        } catch (IOException e) {
            arena.close();
            throw new ModelFormatException("cannot read " + file + ": " + e, e);
        } catch (RuntimeException e) {
            arena.close();
            throw e;
        }
    }

    private void parse(MemorySegment all, long size) {
        if (size < 8) throw new ModelFormatException(file + ": " + size + " bytes is too short for a safetensors file (truncated?)");
        long n = all.get(ValueLayout.JAVA_LONG_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN), 0);
        if (n <= 0 || n > MAX_HEADER || n > size - 8)
            throw new ModelFormatException(file + ": header length " + n + " does not fit a file of " + size
                    + " bytes (truncated or not safetensors)");
        String header = new String(all.asSlice(8, n).toArray(ValueLayout.JAVA_BYTE), StandardCharsets.UTF_8);
        JsonNode root;
        try {
            root = JSON.readTree(header);
        } catch (JsonProcessingException e) {
            throw new ModelFormatException(file + ": corrupt safetensors header: " + e.getOriginalMessage());
        }
        if (root == null || !root.isObject()) throw new ModelFormatException(file + ": safetensors header is not a JSON object");
        MemorySegment data = all.asSlice(8 + n);
        for (Iterator<Map.Entry<String, JsonNode>> it = root.fields(); it.hasNext();) {
            Map.Entry<String, JsonNode> f = it.next();
            if (f.getKey().equals("__metadata__")) {
                f.getValue().fields().forEachRemaining(m -> metadata.put(m.getKey(), m.getValue().asText()));
                continue;
            }
            entries.put(f.getKey(), entry(f.getKey(), f.getValue(), data));
        }
    }

    private Entry entry(String name, JsonNode t, MemorySegment data) {
        JsonNode dt = t.get("dtype"), sh = t.get("shape"), off = t.get("data_offsets");
        if (dt == null || sh == null || off == null || !sh.isArray() || !off.isArray() || off.size() != 2)
            throw new ModelFormatException(file + ": tensor " + name + " lacks dtype, shape or data_offsets in the header");
        String dtype = dt.asText();
        int size = switch (dtype) {
            case "F32", "I32" -> 4;
            case "F16", "BF16", "I16" -> 2;
            case "F64", "I64" -> 8;
            case "I8", "U8", "BOOL" -> 1;
            default -> throw new ModelFormatException(file + ": tensor " + name + " has unknown dtype " + dtype);
        };
        long[] shape = new long[sh.size()];
        long numel = 1;
        for (int i = 0; i < shape.length; i++) {
            shape[i] = sh.get(i).asLong(-1);
            if (shape[i] < 0) throw new ModelFormatException(file + ": tensor " + name + " has a negative dimension");
            numel *= shape[i];
        }
        long begin = off.get(0).asLong(-1), end = off.get(1).asLong(-1);
        if (begin < 0 || end < begin || end - begin != numel * size)
            throw new ModelFormatException(file + ": tensor " + name + " " + dtype + java.util.Arrays.toString(shape) + " needs "
                    + numel * size + " bytes, its data_offsets [" + begin + ", " + end + ") give " + (end - begin));
        if (end > data.byteSize())
            throw new ModelFormatException(file + ": tensor " + name + " ends at byte " + end + " of the data, the file holds "
                    + data.byteSize() + " data bytes (truncated)");
        return new Entry(name, dtype, shape, data.asSlice(begin, end - begin));
    }

    public Path file() {
        return file;
    }

    public Map<String, Entry> entries() {
        return entries;
    }

    public Map<String, String> metadata() {
        return metadata;
    }

    @Override
    public void close() {
        arena.close();
    }

    /**
     * Writes tensors (f32, bf16, i32 or i64, host memory) in map order, atomically: a temp file in
     * the same directory is renamed over the target only once complete. A float tensor holding NaN
     * or an infinity is refused (naming it) before anything is written: what is saved loads again.
     */
    public static void write(Path target, Map<String, Tensor> tensors, Map<String, String> metadata) throws IOException {
        tensors.forEach((name, t) -> requireFinite(target, name, t));
        ObjectNode header = JSON.createObjectNode();
        if (metadata != null && !metadata.isEmpty()) {
            ObjectNode m = header.putObject("__metadata__");
            metadata.forEach(m::put);
        }
        long offset = 0;
        for (Map.Entry<String, Tensor> e : tensors.entrySet()) {
            Tensor t = e.getValue();
            ObjectNode n = header.putObject(e.getKey());
            n.put("dtype", switch (t.dtype()) {
                case F32 -> "F32";
                case BF16 -> "BF16";
                case I32 -> "I32";
                case I64 -> "I64";
            });
            var shape = n.putArray("shape");
            for (long d : t.shape()) shape.add(d);
            n.putArray("data_offsets").add(offset).add(offset + t.byteSize());
            offset += t.byteSize();
        }
        byte[] json = JSON.writeValueAsBytes(header);
        int padded = (json.length + 7) & ~7; // data starts 8-byte aligned
        byte[] head = new byte[padded];
        java.util.Arrays.fill(head, (byte) ' ');
        System.arraycopy(json, 0, head, 0, json.length);
        Path dir = target.toAbsolutePath().getParent();
        Files.createDirectories(dir);
        Path tmp = Files.createTempFile(dir, target.getFileName().toString(), ".tmp");
        try {
            try (OutputStream out = Files.newOutputStream(tmp); FileChannel ch = FileChannel.open(tmp, StandardOpenOption.WRITE)) {
                out.write(ByteBuffer.allocate(8).order(ByteOrder.LITTLE_ENDIAN).putLong(padded).array());
                out.write(head);
                out.flush();
                long pos = 8 + padded;
                for (Tensor t : tensors.values()) {
                    ByteBuffer b = t.data().asByteBuffer();
                    while (b.hasRemaining()) pos += ch.write(b, pos);
                }
                ch.force(true);
            }
            Files.setPosixFilePermissions(tmp, java.nio.file.attribute.PosixFilePermissions.fromString("rw-r--r--"));
            Files.move(tmp, target, StandardCopyOption.ATOMIC_MOVE, StandardCopyOption.REPLACE_EXISTING);
        } finally {
            Files.deleteIfExists(tmp);
        }
    }

    private static void requireFinite(Path target, String name, Tensor t) {
        if (t.dtype() != DType.F32 && t.dtype() != DType.BF16) return;
        long n = t.numel();
        for (long i = 0; i < n; i++) {
            float v = t.dtype() == DType.F32 ? t.data().getAtIndex(ValueLayout.JAVA_FLOAT, i)
                    : Bf16.toFloat(t.data().getAtIndex(ValueLayout.JAVA_SHORT, i));
            if (!Float.isFinite(v))
                throw new IllegalArgumentException("not writing " + target + ": tensor " + name + " holds a non-finite value (" + v
                        + ") at flat index " + i);
        }
    }
}
