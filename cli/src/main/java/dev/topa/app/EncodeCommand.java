package dev.topa.app;

import dev.topa.backend.Backend;
import dev.topa.io.BertTokenizer;
import dev.topa.io.ModelLoader;
import dev.topa.io.Safetensors;
import dev.topa.io.TextFiles;
import dev.topa.tensor.DType;
import dev.topa.tensor.Device;
import dev.topa.tensor.MemoryCategory;
import dev.topa.tensor.MemoryTracker;
import dev.topa.tensor.StepArena;
import dev.topa.tensor.Tensor;
import dev.topa.tensor.TensorScope;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.Callable;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Option;

@Command(name = "encode", description = {"Run the encoder over text, one input per line, and write last_hidden_state",
        "(tensor hidden.<i> = [tokens of line i, hidden]) and, with --pooled, the mask-aware mean (pooled.<i>)",
        "into a safetensors file."})
final class EncodeCommand implements Callable<Integer> {
    @Option(names = "--model", defaultValue = "default",
            description = "default (all-MiniLM-L6-v2), a Hugging Face directory, or a directory with one BERT .onnx and tokenizer.json (default: ${DEFAULT-VALUE})")
    String model;

    @Option(names = "--input", required = true, description = "text file, one input per line")
    Path input;

    @Option(names = "--pair-file", description = "second texts, one per line, same count as --input")
    Path pairFile;

    @Option(names = "--output", required = true, description = "the safetensors file to write")
    Path output;

    @Option(names = "--pooled", description = "also write the mean over real tokens of each line")
    boolean pooled;

    @Option(names = "--max-seq-len", defaultValue = "512", description = "truncate longer inputs (default: ${DEFAULT-VALUE})")
    int maxSeqLen;

    @Option(names = "--batch-size", defaultValue = "32", description = "sequences per forward pass (default: ${DEFAULT-VALUE})")
    int batchSize;

    @Mixin
    ThreadsOption threads;

    @Mixin
    DeviceOption device;

    @Override
    public Integer call() throws Exception {
        threads.apply();
        List<String> a = TextFiles.lines(input);
        List<String> b = pairFile == null ? null : TextFiles.lines(pairFile);
        if (b != null && b.size() != a.size())
            throw new IllegalArgumentException(pairFile + " has " + b.size() + " lines, " + input + " has " + a.size());
        if (batchSize < 1) throw new IllegalArgumentException("--batch-size must be >= 1");
        long t0 = System.nanoTime();
        ModelLoader.Loaded loaded = ModelLoader.load(model);
        try (var host = loaded.model(); Backend be = device.backend(); var m = be.device().isHostAccessible() ? host : host.copyTo(be);
                BertTokenizer tok = new BertTokenizer(loaded.tokenizer(), Math.min(maxSeqLen, m.config().maxPositions()));
                StepArena arena = be.stepArena("encode"); StepArena hostArena = new StepArena("encode inputs");
                TensorScope results = new TensorScope("encode outputs", MemoryCategory.ACTIVATIONS)) {
            System.err.println("model: " + loaded.description() + " " + m.config());
            List<BertTokenizer.Encoded> enc = new ArrayList<>();
            for (int i = 0; i < a.size(); i++) enc.add(tok.encode(a.get(i), b == null ? null : b.get(i)));
            int c = m.config().hidden();
            Tensor[] hidden = new Tensor[a.size()], pool = new Tensor[a.size()];
            m.packForInference(be, false);
            for (int[] idx : BertTokenizer.batchesByLength(enc, batchSize)) {
                List<BertTokenizer.Encoded> part = new ArrayList<>();
                for (int i : idx) part.add(enc.get(i));
                BertTokenizer.Batch batch = BertTokenizer.pad(part, hostArena);
                Tensor h = be.copyOf(m.forward(be, arena, be.copyOf(batch.ids(), arena), be.copyOf(batch.types(), arena),
                        be.copyOf(batch.mask(), arena)), hostArena); // read back (a copy on the CPU too: simpler than two paths)
                long s = batch.ids().dim(1);
                for (int j = 0; j < idx.length; j++) {
                    int len = batch.lengths()[j];
                    Tensor rows = h.reshape(idx.length * s, c).rows(j * s, j * s + len);
                    hidden[idx[j]] = results.allocate(DType.F32, len, c).copyFrom(rows);
                    if (pooled) pool[idx[j]] = meanRows(results, rows, len, c);
                }
                arena.reset();
                hostArena.reset();
            }
            Map<String, Tensor> out = new LinkedHashMap<>();
            for (int i = 0; i < a.size(); i++) {
                out.put("hidden." + i, hidden[i]);
                if (pooled) out.put("pooled." + i, pool[i]);
            }
            Safetensors.write(output, out, Map.of("model", loaded.description(), "lines", String.valueOf(a.size())));
            System.err.printf("encoded %d inputs in %.2f s -> %s%n", a.size(), (System.nanoTime() - t0) * 1e-9, output);
            System.err.print(MemoryTracker.of(be.device()).report());
            if (!be.device().isHostAccessible()) System.err.print(MemoryTracker.of(Device.CPU).report());
        }
        return 0;
    }

    private static Tensor meanRows(TensorScope scope, Tensor rows, int len, int c) {
        double[] sum = new double[c];
        for (int t = 0; t < len; t++)
            for (int e = 0; e < c; e++) sum[e] += rows.getFloat((long) t * c + e);
        float[] mean = new float[c];
        for (int e = 0; e < c; e++) mean[e] = (float) (sum[e] / len);
        return scope.allocate(DType.F32, c).copyFrom(mean);
    }
}
