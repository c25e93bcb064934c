package dev.topa.harness;

import dev.topa.backend.Op;

/**
 * One op at a model's shape, timed: setup makes its inputs once and returns the call to repeat and
 * the work one call does (flops for GFLOP/s, else bytes moved for GB/s). requires: as for a case.
 */
public record OpTiming(String family, String name, Op requires, Setup setup) {
    /** What one call of a timed op does: the call, and its floating-point operations or bytes moved. */
    public record Work(Runnable call, double flops, double bytes) {
        public static Work flops(double flops, Runnable call) {
            return new Work(call, flops, 0);
        }

        public static Work bytes(double bytes, Runnable call) {
            return new Work(call, 0, bytes);
        }
    }

    @FunctionalInterface
    public interface Setup {
        Work prepare(Workspace ws);
    }

    public OpTiming(String family, String name, Setup setup) {
        this(family, name, null, setup);
    }
}
