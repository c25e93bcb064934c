package dev.topa.bench;

import dev.topa.backend.cpu.CpuBackend;
import dev.topa.backend.cpu.CpuKernels;
import dev.topa.dist.Communicator;
import dev.topa.glue.GlueTask;
import dev.topa.io.DefaultModel;
import dev.topa.io.OnnxBertReader;
import dev.topa.model.BertModel;
import dev.topa.model.BertTraining;
import dev.topa.model.DropoutConfig;
import dev.topa.model.LoraConfig;
import dev.topa.model.TaskHead;
import dev.topa.tensor.DType;
import dev.topa.tensor.MemoryCategory;
import dev.topa.tensor.Tensor;
import dev.topa.tensor.TensorScope;
import dev.topa.train.Trainer;
import java.util.Arrays;
import java.util.EnumSet;
import java.util.List;
import java.util.Locale;

/**
 * Data-parallel training steps of the default model under mpirun (bench/dist.sh): the global batch
 * (32 x 128) split over the ranks, per step the time, the part spent waiting for the gradient sums
 * after backward (what overlap did not hide), the bytes each rank reduces, and the same bytes summed
 * alone (the all-reduce's own cost). Rank 0 prints `name: value` lines.
 * Usage: DistBench lora|full [steps] [threads per rank]
 */
public final class DistBench {
    private DistBench() {}

    public static void main(String[] args) {
        String method = args[0];
        int steps = args.length > 1 ? Integer.parseInt(args[1]) : 5, threads = args.length > 2 ? Integer.parseInt(args[2]) : 1;
        Communicator comm = Communicator.fromEnvironment();
        CpuKernels.setNumThreads(threads);
        boolean lora = method.equals("lora");
        List<Trainer.Item> batch = TrainBench.syntheticBatch(32, 128);
        try (BertModel model = OnnxBertReader.load(DefaultModel.directory().resolve("model.onnx"))) {
            if (lora) model.addLora(new LoraConfig(8, 16, EnumSet.allOf(LoraConfig.Target.class)), 1);
            CpuBackend be = CpuBackend.create();
            try (BertTraining training = new BertTraining(be, model, new BertTraining.Options(lora ? n -> n.contains("lora_") || n.contains("LayerNorm")
                    : n -> true, DropoutConfig.NONE, lora, DType.F32));
                    TaskHead head = new TaskHead(model.config().hidden(), 2, 1);
                    Trainer trainer = new Trainer(be, model, training, head, GlueTask.SST2, new Trainer.Config(1, 32, 1e-5, 0.01, 0, 1.0, 1))
                            .distributed(comm)) {
                double[] step = new double[steps], wait = new double[steps];
                for (int i = -2; i < steps; i++) {
                    comm.barrier();
                    double w0 = trainer.communicationSeconds();
                    long t0 = System.nanoTime();
                    trainer.trainStep(batch, 1e-5);
                    if (i >= 0) {
                        step[i] = (System.nanoTime() - t0) * 1e-6;
                        wait[i] = (trainer.communicationSeconds() - w0) * 1e3;
                    }
                }
                long bytes = trainer.bytesReducedPerStep();
                double alone = allReduceAlone(comm, bytes);
                if (!comm.isRoot()) return;
                Arrays.sort(step);
                Arrays.sort(wait);
                String p = "dist_" + method + "_" + comm.size() + "ranks_";
                System.out.printf(Locale.ROOT, "%sthreads_per_rank: %d%n", p, threads);
                System.out.printf(Locale.ROOT, "%sstep_ms: %.1f (min %.1f, max %.1f)%n", p, step[steps / 2], step[0], step[steps - 1]);
                System.out.printf(Locale.ROOT, "%scompute_ms: %.1f%n", p, step[steps / 2] - wait[steps / 2]);
                System.out.printf(Locale.ROOT, "%scommunication_exposed_ms: %.2f (min %.2f, max %.2f)%n", p, wait[steps / 2], wait[0], wait[steps - 1]);
                System.out.printf(Locale.ROOT, "%sbytes_reduced_per_step: %d%n", p, bytes);
                System.out.printf(Locale.ROOT, "%sallreduce_alone_ms: %.2f%n", p, alone);
            }
        } finally {
            comm.close();
        }
    }

    /** Median of 7 blocking sums of that many bytes in one buffer, after 2 warm-ups. */
    private static double allReduceAlone(Communicator comm, long bytes) {
        if (bytes == 0) return 0;
        try (TensorScope s = new TensorScope("allreduce probe", MemoryCategory.WORKSPACE)) {
            Tensor t = s.allocate(DType.F32, bytes / 4);
            double[] ms = new double[7];
            for (int i = -2; i < ms.length; i++) {
                comm.barrier();
                long t0 = System.nanoTime();
                comm.allReduceSum(List.of(t));
                if (i >= 0) ms[i] = (System.nanoTime() - t0) * 1e-6;
            }
            Arrays.sort(ms);
            return ms[ms.length / 2];
        }
    }
}
