package dev.topa.bench;

import dev.topa.backend.cpu.CpuBackend;
import dev.topa.serve.Classifier;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;

/**
 * In-process serving cost (bench/classifier.sh): {@link Classifier#predictBatch} on MRPC dev pairs,
 * one worker, for the merged pruned model and for its backbone with unmerged adapters, in fp32 and
 * bf16; ms per input at batch 1 and 8 (the first 48 inputs warm up). Prints `name: value` lines.
 * Args: pairs file (a tab between the texts), merged model dir, backbone dir, adapter dirs (comma-separated).
 */
public final class ClassifierBench {
    public static void main(String[] args) throws Exception {
        List<Classifier.Input> in = new ArrayList<>();
        for (String l : Files.readAllLines(Path.of(args[0]))) {
            String[] p = l.split("\t");
            if (p.length == 2) in.add(new Classifier.Input(p[0], p[1]));
        }
        List<Path> adapters = new ArrayList<>();
        for (String a : args[3].split(",")) adapters.add(Path.of(a));
        CpuBackend cpu = CpuBackend.create();
        for (Classifier.Precision pr : Classifier.Precision.values()) {
            String p = pr.name().toLowerCase(Locale.ROOT);
            try (Classifier c = Classifier.load(Path.of(args[1]), cpu, 1, pr)) {
                time("merged_" + p, c, in);
            }
            try (Classifier.MultiTask mt = Classifier.loadMultiTask(Path.of(args[2]), adapters, cpu, 1, pr)) {
                time("multitask_" + p, mt.tasks().values().iterator().next(), in);
            }
        }
    }

    private static void time(String name, Classifier c, List<Classifier.Input> in) {
        for (int bs : new int[] {1, 8}) {
            int n = 0;
            long t0 = 0;
            for (int i = 0; i + bs <= Math.min(400, in.size()); i += bs) {
                if (i == 48) {
                    t0 = System.nanoTime();
                    n = 0;
                }
                c.predictBatch(in.subList(i, i + bs));
                n += bs;
            }
            System.out.printf(Locale.ROOT, "%s_batch%d_ms_per_input: %.2f%n", name, bs, (System.nanoTime() - t0) / 1e6 / n);
        }
    }
}
