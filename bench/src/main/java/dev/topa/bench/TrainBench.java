package dev.topa.bench;

import dev.topa.backend.PrecisionChoice;
import dev.topa.backend.cpu.CpuBackend;
import dev.topa.backend.cpu.CpuKernels;
import dev.topa.backend.cpu.Isa;
import dev.topa.glue.Example;
import dev.topa.glue.GlueTask;
import dev.topa.io.BertTokenizer;
import dev.topa.io.DefaultModel;
import dev.topa.io.OnnxBertReader;
import dev.topa.model.BertConfig;
import dev.topa.model.BertModel;
import dev.topa.model.BertTraining;
import dev.topa.model.LoraConfig;
import dev.topa.model.TaskHead;
import dev.topa.tensor.DType;
import dev.topa.tensor.Device;
import dev.topa.tensor.MemoryTracker;
import dev.topa.train.Trainer;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.EnumSet;
import java.util.List;
import java.util.Locale;
import java.util.SplittableRandom;

/**
 * One training step of the default model (MiniLM-L6 shape) at batch 32 x seq 128, full fine-tuning
 * or LoRA (r 8 on all six linears, LayerNorm and head trained): median seconds per step after
 * warm-up steps, and the peak bytes the tensor runtime held (weights, adapters, optimizer state,
 * gradients, activations, kernel workspace). One method per process, so peaks do not mix.
 * Usage: TrainBench full|lora[-recompute][-bf16][-bf16act] [threads] [steps] (recompute: the QKV projection
 * and FFN pre-activation are recomputed in backward instead of kept; bf16: frozen weights multiply in
 * bf16; bf16act: the activations products read are kept for backward in bf16).
 */
public final class TrainBench {
    /** b sequences of s random word-piece ids ([CLS] ... [SEP]) with alternating labels: a full-length training batch. */
    static List<Trainer.Item> syntheticBatch(int b, int s) {
        SplittableRandom rnd = new SplittableRandom(7);
        List<Trainer.Item> batch = new ArrayList<>();
        for (int i = 0; i < b; i++) {
            int[] ids = new int[s], types = new int[s];
            for (int t = 0; t < s; t++) ids[t] = t == 0 ? 101 : t == s - 1 ? 102 : rnd.nextInt(1000, 30000);
            batch.add(new Trainer.Item(new BertTokenizer.Encoded(ids, types), new Example("", null, i % 2, i % 2)));
        }
        return batch;
    }

    public static void main(String[] args) {
        String method = args[0];
        int threads = args.length > 1 ? Integer.parseInt(args[1]) : 2, steps = args.length > 2 ? Integer.parseInt(args[2]) : 5;
        CpuKernels.setNumThreads(threads);
        int b = 32, s = 128;
        if (method.equals("choice")) { // what topa finetune --method lora takes here for the frozen base, and why
            PrecisionChoice.Result c = PrecisionChoice.choose(CpuBackend.create(), PrecisionChoice.Use.TRAINING,
                    BertModel.linearShapes(BertConfig.uniform(30522, 384, 6, 12, 1536, 512, 2, 1e-12f), (long) b * s));
            System.out.println("lora_default_base_precision: " + (c.bf16() ? "bf16" : "fp32"));
            System.out.println("lora_default_base_precision_why: " + c.why());
            // the same measurement on the slower instruction sets this CPU also runs: a bf16 without VDPBF16PS is never taken
            for (Isa isa : Isa.values()) {
                if (isa == Isa.SCALAR || !isa.supported() || isa == Isa.best()) continue;
                try (CpuBackend be = CpuBackend.create(isa)) {
                    PrecisionChoice.Result r = PrecisionChoice.choose(be, PrecisionChoice.Use.TRAINING,
                            BertModel.linearShapes(BertConfig.uniform(30522, 384, 6, 12, 1536, 512, 2, 1e-12f), (long) b * s));
                    System.out.println("lora_base_precision_on_" + be.name() + ": " + r.describe());
                }
            }
            return;
        }
        List<Trainer.Item> batch = syntheticBatch(b, s);
        try (BertModel model = OnnxBertReader.load(DefaultModel.directory().resolve("model.onnx"))) {
            List<String> parts = List.of(method.split("-"));
            boolean lora = parts.contains("lora"), recompute = parts.contains("recompute"), bf16 = parts.contains("bf16");
            dev.topa.tensor.DType saved = parts.contains("bf16act") ? dev.topa.tensor.DType.BF16 : dev.topa.tensor.DType.F32;
            if (lora) model.addLora(new LoraConfig(8, 16, EnumSet.allOf(LoraConfig.Target.class)), 1);
            if (bf16) model.packForTraining(CpuBackend.create());
            try (BertTraining training = new BertTraining(null, model, new BertTraining.Options(lora ? n -> n.contains("lora_") || n.contains("LayerNorm") : n -> true, dev.topa.model.DropoutConfig.NONE, recompute, saved));
                    TaskHead head = new TaskHead(model.config().hidden(), 2, 1);
                    Trainer trainer = new Trainer(CpuBackend.create(), model, training, head, GlueTask.SST2,
                            new Trainer.Config(1, b, 1e-4, 0.01, 0, 1.0, 1))) {
                int warm = 2;
                double[] t = new double[steps];
                for (int i = -warm; i < steps; i++) {
                    long t0 = System.nanoTime();
                    trainer.trainStep(batch, 1e-5);
                    if (i >= 0) t[i] = (System.nanoTime() - t0) * 1e-9;
                }
                Arrays.sort(t);
                MemoryTracker mem = MemoryTracker.of(Device.CPU);
                System.out.printf(Locale.ROOT, "%s_kernel_path: %s, frozen base %s%n", method, CpuBackend.create().name(),
                        bf16 ? "bf16 (" + (CpuKernels.hasAvx512Bf16() ? "vdpbf16ps" : "emulated") + ")" : lora ? "fp32" : "trained in fp32");
                System.out.printf(Locale.ROOT, "%s_trainable_parameters: %d%n", method, trainer.trainableParameters());
                System.out.printf(Locale.ROOT, "%s_step_seconds: %.3f%n", method, t[steps / 2]);
                System.out.printf(Locale.ROOT, "%s_peak_mib: %.1f%n", method, mem.totalPeak() / 1048576.0);
                System.out.printf(Locale.ROOT, "%s_activations_peak_mib: %.1f%n", method,
                        mem.peak(dev.topa.tensor.MemoryCategory.ACTIVATIONS) / 1048576.0);
            }
        }
    }
}
