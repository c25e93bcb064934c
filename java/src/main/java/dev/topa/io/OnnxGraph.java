package dev.topa.io;

import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.channels.FileChannel;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * The parts of an ONNX model a weight loader needs: nodes (name, op, inputs, outputs, tensor
 * attributes) and initializers, read from a memory-mapped file with {@link ProtoReader}.
 * Initializer data stays in the mapping; close the graph to unmap it.
 */
public final class OnnxGraph implements AutoCloseable {
    public static final int FLOAT = 1, INT32 = 6, INT64 = 7, FLOAT16 = 10, DOUBLE = 11, BFLOAT16 = 16;

    public record Node(String name, String opType, List<String> inputs, List<String> outputs, Map<String, Tensor> tensorAttributes,
            Map<String, Float> floatAttributes, Map<String, Long> intAttributes) {}

    /** A tensor as stored: data type code, dims, little-endian bytes. */
    public record Tensor(String name, int dataType, long[] dims, MemorySegment bytes) {
        public long numel() {
            long n = 1;
            for (long d : dims) n *= d;
            return n;
        }

        /** Values of an integer tensor (int32 or int64), for shapes and constants. */
        public long[] longs() {
            long[] out = new long[(int) numel()];
            for (int i = 0; i < out.length; i++)
                out[i] = switch (dataType) {
                    case INT64 -> bytes.getAtIndex(ValueLayout.JAVA_LONG_UNALIGNED, i);
                    case INT32 -> bytes.getAtIndex(ValueLayout.JAVA_INT_UNALIGNED, i);
                    default -> throw new ModelFormatException("tensor " + name + " is not an integer tensor");
                };
            return out;
        }

        /** Values of a float32 or float64 tensor as doubles (small constants). */
        public double[] doubles() {
            double[] out = new double[(int) numel()];
            for (int i = 0; i < out.length; i++)
                out[i] = switch (dataType) {
                    case FLOAT -> bytes.getAtIndex(ValueLayout.JAVA_FLOAT_UNALIGNED, i);
                    case DOUBLE -> bytes.getAtIndex(ValueLayout.JAVA_DOUBLE_UNALIGNED, i);
                    default -> throw new ModelFormatException("tensor " + name + " is not a float tensor");
                };
            return out;
        }
    }

    private final Arena arena;
    private final Path file;
    private final List<Node> nodes = new ArrayList<>();
    private final Map<String, Tensor> initializers = new LinkedHashMap<>();
    private final Map<String, Node> producers = new HashMap<>();

    private OnnxGraph(Path file, Arena arena) {
        this.file = file;
        this.arena = arena;
    }

    public static OnnxGraph read(Path file) {
        Arena arena = Arena.ofShared();
        try (FileChannel ch = FileChannel.open(file, StandardOpenOption.READ)) {
            MemorySegment all = ch.map(FileChannel.MapMode.READ_ONLY, 0, ch.size(), arena);
            OnnxGraph g = new OnnxGraph(file, arena);
            g.parseModel(new ProtoReader(all, file.toString()));
            return g;
        } catch (IOException e) {
            arena.close();
            throw new ModelFormatException("cannot read ONNX model " + file + ": " + e.getMessage(), e);
        } catch (RuntimeException e) {
            arena.close();
            throw e;
        }
    }

    public Path file() {
        return file;
    }

    public List<Node> nodes() {
        return nodes;
    }

    public Map<String, Tensor> initializers() {
        return initializers;
    }

    /** The node whose output is this value, or null (graph inputs, initializers). */
    public Node producer(String value) {
        return producers.get(value);
    }

    /** A constant value: an initializer, or the output of a Constant node; null if neither. */
    public Tensor constant(String value) {
        Tensor t = initializers.get(value);
        if (t != null) return t;
        Node n = producers.get(value);
        return n != null && n.opType().equals("Constant") ? n.tensorAttributes().get("value") : null;
    }

    private void parseModel(ProtoReader r) {
        boolean graph = false;
        while (r.next()) {
            if (r.field() == 7 && r.wireType() == ProtoReader.LENGTH) {
                parseGraph(r.message());
                graph = true;
            } else {
                r.skip();
            }
        }
        if (!graph) throw new ModelFormatException(file + ": not an ONNX model (no graph field)");
        for (Node n : nodes)
            for (String o : n.outputs()) producers.put(o, n);
    }

    private void parseGraph(ProtoReader r) {
        while (r.next()) {
            switch (r.field()) {
                case 1 -> nodes.add(parseNode(r.message()));
                case 5 -> {
                    Tensor t = parseTensor(r.message());
                    initializers.put(t.name(), t);
                }
                default -> r.skip();
            }
        }
    }

    private Node parseNode(ProtoReader r) {
        List<String> in = new ArrayList<>(), out = new ArrayList<>();
        String name = "", op = "";
        Map<String, Tensor> tensors = new HashMap<>();
        Map<String, Float> floats = new HashMap<>();
        Map<String, Long> ints = new HashMap<>();
        while (r.next()) {
            switch (r.field()) {
                case 1 -> in.add(r.string());
                case 2 -> out.add(r.string());
                case 3 -> name = r.string();
                case 4 -> op = r.string();
                case 5 -> parseAttribute(r.message(), tensors, floats, ints);
                default -> r.skip();
            }
        }
        return new Node(name, op, in, out, tensors, floats, ints);
    }

    private void parseAttribute(ProtoReader r, Map<String, Tensor> tensors, Map<String, Float> floats, Map<String, Long> ints) {
        String name = null;
        Tensor t = null;
        Float f = null;
        Long i = null;
        while (r.next()) {
            switch (r.field()) {
                case 1 -> name = r.string();
                case 2 -> {
                    if (r.wireType() == ProtoReader.FIXED32) f = r.fixed32Float();
                    else r.skip();
                }
                case 3 -> i = r.varint();
                case 5 -> t = parseTensor(r.message());
                default -> r.skip();
            }
        }
        if (name == null) return;
        if (t != null) tensors.put(name, t);
        if (f != null) floats.put(name, f);
        if (i != null) ints.put(name, i);
    }

    private Tensor parseTensor(ProtoReader r) {
        List<Long> dims = new ArrayList<>();
        int type = 0;
        String name = "";
        MemorySegment raw = null;
        List<Float> floatData = new ArrayList<>();
        List<Long> intData = new ArrayList<>();
        boolean external = false;
        while (r.next()) {
            switch (r.field()) {
                case 1 -> r.int64s(dims::add);
                case 2 -> type = (int) r.varint();
                case 4 -> {
                    if (r.wireType() == ProtoReader.LENGTH) {
                        MemorySegment s = r.bytes();
                        for (long k = 0; k < s.byteSize() / 4; k++) floatData.add(s.getAtIndex(ValueLayout.JAVA_FLOAT_UNALIGNED, k));
                    } else {
                        floatData.add(r.fixed32Float());
                    }
                }
                case 5, 7 -> r.int64s(intData::add);
                case 8 -> name = r.string();
                case 9 -> raw = r.bytes();
                case 14 -> external = r.varint() == 1;
                default -> r.skip();
            }
        }
        long[] d = dims.stream().mapToLong(Long::longValue).toArray();
        if (external)
            throw new ModelFormatException(file + ": tensor " + name + " keeps its data in an external file; only inline data is supported");
        int elem = switch (type) {
            case FLOAT, INT32 -> 4;
            case INT64, DOUBLE -> 8;
            case FLOAT16, BFLOAT16 -> 2;
            default -> throw new ModelFormatException(file + ": tensor " + name + " has unsupported ONNX data type " + type);
        };
        Tensor t;
        if (raw != null) {
            t = new Tensor(name, type, d, raw);
        } else if (!floatData.isEmpty() && type == FLOAT) {
            MemorySegment s = arena.allocate(4L * floatData.size());
            for (int k = 0; k < floatData.size(); k++) s.setAtIndex(ValueLayout.JAVA_FLOAT_UNALIGNED, k, floatData.get(k));
            t = new Tensor(name, type, d, s);
        } else if (type == INT64 || type == INT32) {
            MemorySegment s = arena.allocate((long) elem * intData.size());
            for (int k = 0; k < intData.size(); k++)
                if (type == INT64) s.setAtIndex(ValueLayout.JAVA_LONG_UNALIGNED, k, intData.get(k));
                else s.setAtIndex(ValueLayout.JAVA_INT_UNALIGNED, k, (int) (long) intData.get(k));
            t = new Tensor(name, type, d, s);
        } else {
            t = new Tensor(name, type, d, MemorySegment.NULL);
        }
        if (t.bytes().byteSize() != t.numel() * elem)
            throw new ModelFormatException(file + ": tensor " + name + " " + java.util.Arrays.toString(d) + " holds "
                    + t.bytes().byteSize() + " bytes, its shape needs " + t.numel() * elem + " (truncated or corrupt)");
        return t;
    }

    @Override
    public void close() {
        arena.close();
    }
}
