package dev.topa.app;

import dev.topa.backend.Backend;
import dev.topa.backend.cpu.CpuBackend;
import dev.topa.backend.cpu.CpuKernels;
import dev.topa.backend.cpu.Isa;
import dev.topa.harness.Ops;
import dev.topa.tensor.MemoryTracker;
import java.util.concurrent.Callable;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Option;

@Command(name = "bench", description = "Benchmarks of the engine.", subcommands = {BenchCommand.OpsBench.class, BenchTrainCommand.class})
final class BenchCommand {

    @Command(name = "ops", aliases = "kernels", description = {
            "Time every op (or one family) on a device at BERT shapes and print 'name: value' lines: per op and",
            "shape the median milliseconds and GFLOP/s (or GB/s for ops that move rather than compute), then the",
            "memory the run held. With --check, first run the op harness's checks against the float64 references."})
    static final class OpsBench implements Callable<Integer> {
        @Mixin
        ThreadsOption threads;

        @Mixin
        DeviceOption device;

        @Option(names = "--op", description = "one family: gemm, linear, blocksparse, layernorm, gelu, softmax, attention, dropout,"
                + " embedding, pool, loss, optimizer, importance, layout (default: all)")
        String op;

        @Option(names = "--isa", description = "the CPU's kernels of one of ${COMPLETION-CANDIDATES} (default: best supported)")
        Isa isa;

        @Option(names = "--m", description = "tokens: rows of the products, batch x sequence (default: ${DEFAULT-VALUE})")
        int m = 4096;

        @Option(names = "--iterations", description = "timed calls per op and shape; the median is reported (default: ${DEFAULT-VALUE})")
        int iterations = 7;

        @Option(names = "--check", description = "check every case of the chosen families against the references first (exit 1 on a failure)")
        boolean check;

        @Override
        public Integer call() {
            threads.apply();
            if (m < 1 || iterations < 1) throw new IllegalArgumentException("--m and --iterations must be >= 1");
            try (Backend be = isa != null ? CpuBackend.create(isa) : device.backend()) {
                System.out.println("backend: " + be.name());
                System.out.println("threads: " + CpuKernels.numThreads());
                if (check && !Ops.checkAll(be, op, 0, System.out).isEmpty()) return 1;
                Ops.bench(be, op, m, iterations, System.out);
                System.out.print(MemoryTracker.of(be.device()).report());
            }
            return 0;
        }
    }
}
