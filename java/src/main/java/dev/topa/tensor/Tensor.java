package dev.topa.tensor;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.Arrays;

/**
 * A dense, contiguous, row-major tensor: device + dtype + shape + storage. Storage belongs to the
 * allocator that made the tensor (a {@link TensorScope} or a {@link StepArena}); views made with
 * {@link #reshape} and {@link #rows} share it. A tensor whose owner was closed or reset refuses to
 * be used ({@link #checkAlive}), so a stale activation cannot be read by mistake.
 */
public final class Tensor {
    /** What a tensor's storage lives and dies with. */
    interface Owner {
        boolean alive(long token);

        String describe();
    }

    private static final ValueLayout.OfFloat F32 = ValueLayout.JAVA_FLOAT_UNALIGNED;
    private static final ValueLayout.OfShort BF16 = ValueLayout.JAVA_SHORT_UNALIGNED;
    private static final ValueLayout.OfInt I32 = ValueLayout.JAVA_INT_UNALIGNED;
    private static final ValueLayout.OfLong I64 = ValueLayout.JAVA_LONG_UNALIGNED;

    private final Device device;
    private final DType dtype;
    private final long[] shape;
    private final long numel;
    private final MemorySegment data;
    private final MemoryCategory category;
    private final Owner owner;
    private final long epoch;

    Tensor(Device device, DType dtype, long[] shape, MemorySegment data, MemoryCategory category,
            Owner owner, long epoch) {
        this.device = device;
        this.dtype = dtype;
        this.shape = shape.clone();
        this.numel = numel(shape);
        this.data = data;
        this.category = category;
        this.owner = owner;
        this.epoch = epoch;
        if (data.byteSize() != 0 && data.byteSize() < numel * dtype.byteSize())
            throw new IllegalArgumentException("storage of " + data.byteSize() + " bytes is too small for "
                    + dtype + Arrays.toString(shape));
    }

    public static long numel(long... shape) {
        long n = 1;
        for (long d : shape) {
            if (d < 0) throw new IllegalArgumentException("negative dimension in " + Arrays.toString(shape));
            n = Math.multiplyExact(n, d);
        }
        return n;
    }

    public Device device() {
        return device;
    }

    public DType dtype() {
        return dtype;
    }

    public MemoryCategory category() {
        return category;
    }

    public long[] shape() {
        return shape.clone();
    }

    public int rank() {
        return shape.length;
    }

    /** Dimension i; negative i counts from the end. */
    public long dim(int i) {
        return shape[i < 0 ? shape.length + i : i];
    }

    public long numel() {
        return numel;
    }

    public long byteSize() {
        return numel * dtype.byteSize();
    }

    /** The storage, after checking that the owner still holds it. */
    public MemorySegment data() {
        checkAlive();
        return data;
    }

    public boolean isAlive() {
        return owner.alive(epoch);
    }

    public void checkAlive() {
        if (!owner.alive(epoch))
            throw new IllegalStateException("tensor " + this + " is no longer valid: its owner ("
                    + owner.describe() + ") was closed or reset");
    }

    /** The same storage seen with another shape of the same element count. */
    public Tensor reshape(long... newShape) {
        if (numel(newShape) != numel)
            throw new IllegalArgumentException("cannot reshape " + Arrays.toString(shape) + " to "
                    + Arrays.toString(newShape));
        return new Tensor(device, dtype, newShape, data, category, owner, epoch);
    }

    /** Rows [from, to) along dimension 0, sharing storage. */
    public Tensor rows(long from, long to) {
        if (rank() == 0 || from < 0 || to > shape[0] || from > to)
            throw new IllegalArgumentException("rows [" + from + ", " + to + ") out of " + this);
        long rowElems = numel / Math.max(1, shape[0]);
        long[] s = shape.clone();
        s[0] = to - from;
        long bytes = rowElems * dtype.byteSize();
        MemorySegment slice = device.isHostAccessible()
                ? data.asSlice(from * bytes, (to - from) * bytes)
                : MemorySegment.ofAddress(data.address() + from * bytes);
        return new Tensor(device, dtype, s, slice, category, owner, epoch);
    }

    // ---- host element access (tests, loaders, small heads) ----

    private MemorySegment host() {
        if (!device.isHostAccessible())
            throw new IllegalStateException("tensor on " + device + " is not host-accessible; copy it first");
        return data();
    }

    private void requireType(DType t) {
        if (dtype != t) throw new IllegalStateException("tensor is " + dtype + ", not " + t);
    }

    public float getFloat(long i) {
        MemorySegment s = host();
        return switch (dtype) {
            case F32 -> s.getAtIndex(F32, i);
            case BF16 -> Bf16.toFloat(s.getAtIndex(BF16, i));
            default -> throw new IllegalStateException("tensor is " + dtype + ", not a float type");
        };
    }

    public void setFloat(long i, float v) {
        MemorySegment s = host();
        switch (dtype) {
            case F32 -> s.setAtIndex(F32, i, v);
            case BF16 -> s.setAtIndex(BF16, i, Bf16.fromFloat(v));
            default -> throw new IllegalStateException("tensor is " + dtype + ", not a float type");
        }
    }

    public int getInt(long i) {
        requireType(DType.I32);
        return host().getAtIndex(I32, i);
    }

    public void setInt(long i, int v) {
        requireType(DType.I32);
        host().setAtIndex(I32, i, v);
    }

    public long getLong(long i) {
        requireType(DType.I64);
        return host().getAtIndex(I64, i);
    }

    public void setLong(long i, long v) {
        requireType(DType.I64);
        host().setAtIndex(I64, i, v);
    }

    /** Copies values in (converted to this tensor's float type); length must equal numel. */
    public Tensor copyFrom(float[] values) {
        requireLength(values.length);
        if (dtype == DType.F32) MemorySegment.copy(values, 0, host(), F32, 0, values.length);
        else for (int i = 0; i < values.length; i++) setFloat(i, values[i]);
        return this;
    }

    public Tensor copyFrom(int[] values) {
        requireType(DType.I32);
        requireLength(values.length);
        MemorySegment.copy(values, 0, host(), I32, 0, values.length);
        return this;
    }

    /** Copies another host tensor of the same element count, converting between f32 and bf16. */
    public Tensor copyFrom(Tensor src) {
        requireLength(src.numel);
        if (src.dtype == dtype) {
            MemorySegment.copy(src.host(), 0, host(), 0, byteSize());
        } else if (isFloat() && src.isFloat()) {
            for (long i = 0; i < numel; i++) setFloat(i, src.getFloat(i));
        } else {
            throw new IllegalArgumentException("cannot convert " + src.dtype + " to " + dtype);
        }
        return this;
    }

    public float[] toFloatArray() {
        if (numel > Integer.MAX_VALUE) throw new IllegalStateException("tensor too large for a Java array");
        float[] out = new float[(int) numel];
        if (dtype == DType.F32) MemorySegment.copy(host(), F32, 0, out, 0, out.length);
        else for (int i = 0; i < out.length; i++) out[i] = getFloat(i);
        return out;
    }

    public Tensor fill(float v) {
        MemorySegment s = host();
        if (Float.floatToRawIntBits(v) == 0) s.asSlice(0, byteSize()).fill((byte) 0); // +0.0 is all zero bits: a memset
        else if (dtype == DType.F32) for (long i = 0; i < numel; i++) s.setAtIndex(F32, i, v);
        else for (long i = 0; i < numel; i++) setFloat(i, v);
        return this;
    }

    public boolean isFloat() {
        return dtype == DType.F32 || dtype == DType.BF16;
    }

    private void requireLength(long n) {
        if (n != numel)
            throw new IllegalArgumentException(n + " values do not fit tensor " + this + " (" + numel + " elements)");
    }

    @Override
    public String toString() {
        return dtype.name().toLowerCase() + Arrays.toString(shape) + "@" + device + "/" + category.label();
    }
}
