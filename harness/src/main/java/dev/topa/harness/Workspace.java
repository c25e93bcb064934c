package dev.topa.harness;

import dev.topa.backend.Backend;
import dev.topa.tensor.Bf16;
import dev.topa.tensor.DType;
import dev.topa.tensor.Device;
import dev.topa.tensor.MemoryCategory;
import dev.topa.tensor.StepArena;
import dev.topa.tensor.Tensor;
import dev.topa.tensor.TensorAllocator;
import dev.topa.tensor.TensorScope;
import java.util.SplittableRandom;

/**
 * One case's tensors on the backend under test: inputs made on the host and copied to the backend's
 * memory, outputs poisoned with NaN before the call (a kernel that skips an element cannot pass),
 * results read back as float64. On the CPU the copies are plain host tensors.
 */
public final class Workspace implements AutoCloseable {
    private final Backend be;
    private final SplittableRandom rnd;
    private final TensorScope host = new TensorScope("harness inputs", MemoryCategory.ACTIVATIONS), device;
    private final double productFloor;

    /**
     * productFloor: the normwise error a product in reduced precision reaches (0 where products are
     * fp32; ~1e-2 where the backend multiplies bf16 operands), the bound of the cases marked so.
     */
    Workspace(Backend be, SplittableRandom rnd, double productFloor) {
        this.be = be;
        this.rnd = rnd;
        this.productFloor = productFloor;
        this.device = be.device().isHostAccessible() ? null : be.scope("harness tensors", MemoryCategory.ACTIVATIONS);
    }

    public Backend backend() {
        return be;
    }

    public SplittableRandom rnd() {
        return rnd;
    }

    /** The bound of a product's result here: the case's fp32 bound, or the backend's reduced-precision floor above it. */
    public double productBound(double fp32) {
        return Math.max(fp32, productFloor);
    }

    private Tensor place(Tensor onHost) {
        return device == null ? onHost : be.copyOf(onHost, device);
    }

    /** An f32 tensor with these values (rounded to float) in the backend's memory. */
    public Tensor f32(double[] values, long... shape) {
        float[] f = new float[values.length];
        for (int i = 0; i < f.length; i++) f[i] = (float) values[i];
        return place(host.allocate(DType.F32, shape).copyFrom(f));
    }

    public Tensor i32(int[] values, long... shape) {
        return place(host.allocate(DType.I32, shape).copyFrom(values));
    }

    /** An output, every element NaN. */
    public Tensor poisoned(long... shape) {
        return place(host.allocate(DType.F32, shape).fill(Float.NaN));
    }

    /** An uninitialised tensor of any dtype in the backend's memory. */
    public Tensor allocate(DType dtype, long... shape) {
        return device == null ? host.allocate(dtype, shape) : device.allocate(dtype, shape);
    }

    /**
     * Scratch for an op that takes an allocator (a weight format's temporaries, the LoRA factor it
     * keeps): f32 tensors come poisoned, so an op that reads scratch before writing it cannot pass.
     */
    public TensorAllocator scratch() {
        return new TensorAllocator() {
            @Override
            public Device device() {
                return be.device();
            }

            @Override
            public Tensor allocate(DType dtype, long... shape) {
                return dtype == DType.F32 ? poisoned(shape) : Workspace.this.allocate(dtype, shape);
            }

            @Override
            public Tensor allocate(MemoryCategory category, DType dtype, long... shape) {
                return allocate(dtype, shape);
            }

            @Override
            public void close() {}
        };
    }

    /** The values as bf16 holds them (round to nearest even): what a bf16 product multiplies. */
    public double[] rounded(Tensor t) {
        float[] v = floats(t);
        double[] out = new double[v.length];
        for (int i = 0; i < v.length; i++) out[i] = Bf16.toFloat(Bf16.fromFloat(v[i]));
        return out;
    }

    /** A tensor's values as the kernel left them (read back). */
    public float[] floats(Tensor t) {
        if (t.device().isHostAccessible()) return t.toFloatArray();
        return be.copyOf(t, host).toFloatArray();
    }

    /** The same as float64 (inputs as the kernel saw them, rounded to float). */
    public double[] values(Tensor t) {
        float[] f = floats(t);
        double[] d = new double[f.length];
        for (int i = 0; i < f.length; i++) d[i] = f[i];
        return d;
    }

    /** Uniform in [-1, 1] with |x| >= 0.05, so no input is (near) zero. */
    public double[] random(int n) {
        double[] v = new double[n];
        for (int i = 0; i < n; i++) {
            double x = 0.05 + 0.95 * rnd.nextDouble();
            v[i] = rnd.nextBoolean() ? x : -x;
        }
        return v;
    }

    public double[] uniform(int n, double lo, double hi) {
        double[] v = new double[n];
        for (int i = 0; i < n; i++) v[i] = lo + (hi - lo) * rnd.nextDouble();
        return v;
    }

    /** got (read back) against the reference: normwise relative error within bound. */
    public void close(String what, double[] ref, Tensor got, double bound) {
        Check.close(what, ref, floats(got), bound);
    }

    private final java.util.List<StepArena> arenas = new java.util.ArrayList<>();

    /** A step arena in the backend's memory (closed with the workspace): a timed op's temporaries, reset before each call. */
    public StepArena arena() {
        StepArena a = be.stepArena("harness");
        arenas.add(a);
        return a;
    }

    @Override
    public void close() {
        arenas.forEach(StepArena::close);
        if (device != null) device.close();
        host.close();
    }
}
