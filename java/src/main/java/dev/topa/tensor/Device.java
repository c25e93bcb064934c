package dev.topa.tensor;

/**
 * Where a tensor's storage lives. CPU storage is host memory the JVM can read; CUDA storage is a
 * device pointer wrapped in a zero-length segment; OpenCL storage an address in the backend's map
 * of its buffers (OpenClMemory), wrapped the same way.
 */
public record Device(Kind kind, int index) {
    public enum Kind { CPU, CUDA, OPENCL }

    public static final Device CPU = new Device(Kind.CPU, 0);

    public static Device cuda(int index) {
        return new Device(Kind.CUDA, index);
    }

    public static Device opencl(int index) {
        return new Device(Kind.OPENCL, index);
    }

    public boolean isHostAccessible() {
        return kind == Kind.CPU;
    }

    @Override
    public String toString() {
        return kind == Kind.CPU ? "cpu" : (kind == Kind.CUDA ? "cuda:" : "opencl:") + index;
    }
}
