package dev.topa.backend;

import dev.topa.tensor.DType;
import dev.topa.tensor.Tensor;
import java.util.Arrays;

/**
 * The argument checks every op makes once, before its kernel: dtype, shape, device and liveness,
 * each failure an {@link IllegalArgumentException} naming the op and the tensor. Shared by
 * {@link Backend} and the weight formats.
 */
final class Checks {
    private Checks() {}

    /** A tensor used as a matrix is [numel / last, last]. */
    static long rows(Tensor t) {
        return t.rank() == 0 ? 1 : t.numel() / Math.max(1, t.dim(-1));
    }

    static long cols(Tensor t) {
        return t.rank() == 0 ? 1 : t.dim(-1);
    }

    static String shape(Tensor t) {
        return Arrays.toString(t.shape());
    }

    static void check(boolean ok, String op, String message) {
        if (!ok) throw new IllegalArgumentException(op + ": " + message);
    }

    static void onDevice(Backend be, String op, String name, Tensor t) {
        check(t.device().equals(be.device()), op, name + " is on " + t.device() + ", this backend runs on " + be.device());
        t.checkAlive();
    }

    static void f32(Backend be, String op, String name, Tensor t) {
        check(t != null, op, name + " is required");
        check(t.dtype() == DType.F32, op, name + " must be f32, got " + t);
        onDevice(be, op, name, t);
    }

    static void sameShape(Backend be, String op, String name, Tensor t, Tensor like) {
        f32(be, op, name, t);
        f32(be, op, "input", like);
        check(Arrays.equals(t.shape(), like.shape()), op, name + " " + shape(t) + " must have shape " + shape(like));
    }

    static void vector(Backend be, String op, String name, Tensor t, long n) {
        f32(be, op, name, t);
        check(t.numel() == n, op, name + " has " + t.numel() + " elements, expected " + n);
    }

    static void matrix(Backend be, String op, String name, Tensor t, long rows, long cols) {
        f32(be, op, name, t);
        check(rows(t) == rows && cols(t) == cols, op, name + " " + shape(t) + " is not [" + rows + ", " + cols + "]");
    }

    static void packedBy(Backend be, String op, String packer) {
        check(packer.equals(be.name()), op, "weight was packed by " + packer + ", this backend is " + be.name());
    }
}
