package dev.topa.tensor;

/**
 * Where a tensor's storage lives. CPU storage is host memory the JVM can read; CUDA storage is a
 * device pointer wrapped in a zero-length segment.
 */
public record Device(Kind kind, int index) {
    public enum Kind { CPU, CUDA }

    public static final Device CPU = new Device(Kind.CPU, 0);

    public static Device cuda(int index) {
        return new Device(Kind.CUDA, index);
    }

    public boolean isHostAccessible() {
        return kind == Kind.CPU;
    }

    @Override
    public String toString() {
        return kind == Kind.CPU ? "cpu" : "cuda:" + index;
    }
}
