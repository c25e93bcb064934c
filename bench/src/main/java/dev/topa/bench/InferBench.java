package dev.topa.bench;

import ai.onnxruntime.OnnxTensor;
import ai.onnxruntime.OrtEnvironment;
import ai.onnxruntime.OrtSession;
import dev.topa.backend.PrecisionChoice;
import dev.topa.backend.cpu.CpuBackend;
import dev.topa.backend.cpu.CpuKernels;
import dev.topa.io.BertTokenizer;
import dev.topa.io.DefaultModel;
import dev.topa.io.OnnxBertReader;
import dev.topa.model.BertModel;
import dev.topa.tensor.DType;
import dev.topa.tensor.MemoryTracker;
import dev.topa.tensor.StepArena;
import dev.topa.tensor.Tensor;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.Locale;
import java.util.Map;
import java.util.SplittableRandom;

/**
 * Encoder inference on the default model, topa vs ONNX Runtime (Java API) on the same machine, same
 * thread count, same token ids, in one process: batch 32 x seq 128 throughput and batch 1 x seq
 * 128 latency. The engines run in alternating blocks of calls; each figure is the median of the
 * timed calls (warm-up calls of each block discarded). Prints `name: value` lines.
 * Usage: InferBench [threads] [iterations]
 */
public final class InferBench {
    public static void main(String[] args) throws Exception {
        int threads = args.length > 0 ? Integer.parseInt(args[0]) : 2;
        int iterations = args.length > 1 ? Integer.parseInt(args[1]) : 20;
        CpuKernels.setNumThreads(threads);
        Path dir = DefaultModel.directory();
        System.out.println("threads: " + threads);
        try (BertModel model = OnnxBertReader.load(dir.resolve("model.onnx"));
                StepArena arena = new StepArena("infer bench");
                OrtEnvironment env = OrtEnvironment.getEnvironment();
                OrtSession.SessionOptions opts = new OrtSession.SessionOptions()) {
            opts.setIntraOpNumThreads(threads);
            opts.setInterOpNumThreads(1);
            opts.setOptimizationLevel(OrtSession.SessionOptions.OptLevel.ALL_OPT);
            try (OrtSession ort = env.createSession(dir.resolve("model.onnx").toString(), opts)) {
                CpuBackend be = CpuBackend.create();
                model.packForInference(be, false);
                double[] b32 = compare(model, be, arena, env, ort, 32, 128, iterations);
                System.out.printf(Locale.ROOT, "infer_b32_s128_topa_seq_per_s: %.1f%n", 32 / b32[0]);
                System.out.printf(Locale.ROOT, "infer_b32_s128_ort_seq_per_s: %.1f%n", 32 / b32[1]);
                double[] b1 = compare(model, be, arena, env, ort, 1, 128, iterations * 5);
                System.out.printf(Locale.ROOT, "infer_b1_s128_topa_latency_ms: %.3f%n", b1[0] * 1e3);
                System.out.printf(Locale.ROOT, "infer_b1_s128_ort_latency_ms: %.3f%n", b1[1] * 1e3);
                Path glue = glueDir();
                if (glue != null) {
                    double[] sst = sst2(model, be, arena, env, ort, glue.resolve("SST-2/dev.tsv"), dir.resolve("tokenizer.json"));
                    System.out.printf(Locale.ROOT, "infer_sst2_dev_topa_seq_per_s: %.1f%n", sst[0]);
                    System.out.printf(Locale.ROOT, "infer_sst2_dev_ort_seq_per_s: %.1f%n", sst[1]);
                } else {
                    System.out.println("infer_sst2_dev: skipped (no GLUE data: set TOPA_GLUE_DIR)");
                }
                System.out.printf(Locale.ROOT, "topa_weights_mib: %.1f%n", model.parameterBytes() / 1048576.0);
                System.out.printf(Locale.ROOT, "topa_peak_mib: %.1f%n", MemoryTracker.of(be.device()).totalPeak() / 1048576.0);
                // after the memory figures (the bf16 packs come on top of the fp32 ones): the precision topa serve
                // --precision auto takes here, bf16 packs where measured faster on these shapes
                PrecisionChoice.Result choice = PrecisionChoice.choose(be, PrecisionChoice.Use.INFERENCE, BertModel.linearShapes(model.config(), 32 * 128));
                System.out.println("infer_kernel_path: " + be.name() + ", " + choice.describe());
                if (choice.bf16()) {
                    model.packForInference(be, true);
                    double[] chosen = compare(model, be, arena, env, ort, 32, 128, iterations);
                    System.out.printf(Locale.ROOT, "infer_b32_s128_topa_chosen_seq_per_s: %.1f%n", 32 / chosen[0]);
                } else {
                    System.out.printf(Locale.ROOT, "infer_b32_s128_topa_chosen_seq_per_s: %.1f%n", 32 / b32[0]);
                }
                System.out.printf(Locale.ROOT, "infer_b1_latency_ratio_vs_ort: %.3f%n", b1[0] / b1[1]);
                System.out.printf(Locale.ROOT, "infer_b32_throughput_ratio_vs_ort: %.3f%n", b32[1] / b32[0]);
            }
        }
    }

    static Path glueDir() {
        String env = System.getenv("TOPA_GLUE_DIR");
        if (env != null && !env.isBlank()) return Path.of(env);
        for (Path p = Path.of("").toAbsolutePath(); p != null; p = p.getParent())
            if (java.nio.file.Files.isDirectory(p.resolve("shared/glue"))) return p.resolve("shared/glue");
        return null;
    }

    /**
     * SST-2 dev (872 sentences, real lengths) in batches of 32 grouped by length, padded per batch:
     * sequences per second {topa, ort} of the second of two passes each (the first warms up).
     */
    private static double[] sst2(BertModel model, CpuBackend be, StepArena arena, OrtEnvironment env, OrtSession ort,
            Path tsv, Path tokenizerJson) throws Exception {
        java.util.List<String> lines = java.nio.file.Files.readAllLines(tsv);
        java.util.List<BertTokenizer.Encoded> enc = new java.util.ArrayList<>();
        try (BertTokenizer tok = new BertTokenizer(tokenizerJson, 128)) {
            for (String l : lines.subList(1, lines.size())) enc.add(tok.encode(l.split("\t")[0], null));
        }
        java.util.List<int[]> batches = BertTokenizer.batchesByLength(enc, 32);
        double[] rate = new double[2];
        try (StepArena inputs = new StepArena("sst2 inputs")) {
            java.util.List<BertTokenizer.Batch> padded = new java.util.ArrayList<>();
            java.util.List<Map<String, OnnxTensor>> feeds = new java.util.ArrayList<>();
            for (int[] idx : batches) {
                java.util.List<BertTokenizer.Encoded> part = new java.util.ArrayList<>();
                for (int i : idx) part.add(enc.get(i));
                BertTokenizer.Batch b = BertTokenizer.pad(part, inputs);
                padded.add(b);
                int n = idx.length, s = (int) b.ids().dim(1);
                long[][] ids = new long[n][s], types = new long[n][s], mask = new long[n][s];
                for (int i = 0; i < n; i++)
                    for (int t = 0; t < s; t++) {
                        ids[i][t] = b.ids().getInt(i * s + t);
                        mask[i][t] = b.mask().getInt(i * s + t);
                    }
                feeds.add(Map.of("input_ids", OnnxTensor.createTensor(env, ids), "attention_mask",
                        OnnxTensor.createTensor(env, mask), "token_type_ids", OnnxTensor.createTensor(env, types)));
            }
            for (int pass = 0; pass < 2; pass++) {
                long t0 = System.nanoTime();
                for (BertTokenizer.Batch b : padded) {
                    model.forward(be, arena, b.ids(), b.types(), b.mask());
                    arena.reset();
                }
                rate[0] = enc.size() / ((System.nanoTime() - t0) * 1e-9);
            }
            for (int pass = 0; pass < 2; pass++) {
                long t0 = System.nanoTime();
                for (Map<String, OnnxTensor> f : feeds)
                    try (OrtSession.Result r = ort.run(f)) {
                        r.get(0);
                    }
                rate[1] = enc.size() / ((System.nanoTime() - t0) * 1e-9);
            }
            for (Map<String, OnnxTensor> f : feeds) f.values().forEach(OnnxTensor::close);
        }
        return rate;
    }

    /** Median seconds per call: {topa, ort}. */
    private static double[] compare(BertModel model, CpuBackend be, StepArena arena, OrtEnvironment env, OrtSession ort,
            int b, int s, int iterations) throws Exception {
        SplittableRandom rnd = new SplittableRandom(b * 1000L + s);
        long[][] ids = new long[b][s], types = new long[b][s], mask = new long[b][s];
        int[] fid = new int[b * s], fmask = new int[b * s];
        for (int i = 0; i < b; i++)
            for (int t = 0; t < s; t++) {
                ids[i][t] = t == 0 ? 101 : t == s - 1 ? 102 : rnd.nextInt(1000, 30000);
                mask[i][t] = 1;
                fid[i * s + t] = (int) ids[i][t];
                fmask[i * s + t] = 1;
            }
        try (StepArena inputs = new StepArena("inputs");
                OnnxTensor oi = OnnxTensor.createTensor(env, ids); OnnxTensor om = OnnxTensor.createTensor(env, mask);
                OnnxTensor ot = OnnxTensor.createTensor(env, types)) {
            Tensor tid = inputs.allocate(DType.I32, b, s).copyFrom(fid), tmask = inputs.allocate(DType.I32, b, s).copyFrom(fmask);
            Map<String, OnnxTensor> feed = Map.of("input_ids", oi, "attention_mask", om, "token_type_ids", ot);
            // Blocks, not call-by-call alternation: both engines keep their worker threads spinning for
            // a while after a call, and on 2 cores the other engine's spinners would steal the CPU.
            // Each block starts with discarded calls; blocks alternate so noise hits both alike.
            int warm = 3, blocks = 4, per = Math.max(1, iterations / blocks);
            double[] ours = new double[blocks * per], theirs = new double[blocks * per];
            for (int blk = 0; blk < blocks; blk++) {
                for (int it = -warm; it < per; it++) {
                    long t0 = System.nanoTime();
                    model.forward(be, arena, tid, null, tmask);
                    arena.reset();
                    if (it >= 0) ours[blk * per + it] = (System.nanoTime() - t0) * 1e-9;
                }
                for (int it = -warm; it < per; it++) {
                    long t0 = System.nanoTime();
                    try (OrtSession.Result r = ort.run(feed)) {
                        r.get(0);
                    }
                    if (it >= 0) theirs[blk * per + it] = (System.nanoTime() - t0) * 1e-9;
                }
            }
            iterations = blocks * per;
            Arrays.sort(ours);
            Arrays.sort(theirs);
            return new double[] {ours[iterations / 2], theirs[iterations / 2]};
        }
    }
}
