package dev.topa.app;

import dev.topa.backend.cpu.CpuKernels;
import picocli.CommandLine.Option;

/** The --threads option every compute command shares (a picocli mixin). */
final class ThreadsOption {
    @Option(names = "--threads", description = "kernel threads (default: all cores)")
    int threads;

    /** Sets the kernels' thread count for this process. */
    void apply() {
        try {
            CpuKernels.setNumThreads(threads);
        } catch (IllegalArgumentException e) {
            throw new IllegalArgumentException("--threads: " + e.getMessage(), e);
        }
    }
}
