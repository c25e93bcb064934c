package dev.topa.train;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotSame;
import static org.junit.jupiter.api.Assertions.assertNotNull;

import dev.topa.backend.cpu.CpuBackend;
import dev.topa.glue.Example;
import dev.topa.glue.GlueTask;
import dev.topa.io.BertTokenizer;
import dev.topa.model.BertConfig;
import dev.topa.model.BertModel;
import dev.topa.model.BertNames;
import dev.topa.model.BertTraining;
import dev.topa.model.DropoutConfig;
import dev.topa.model.LoraConfig;
import dev.topa.model.TaskHead;
import dev.topa.train.Trainer;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.EnumSet;
import java.util.List;
import java.util.SplittableRandom;
import org.junit.jupiter.api.Test;

/** The GPU training path of finetune and prune-adapt (train on copies, copy the trained values back), run with copies on the host. */
class TrainingCopyTest {
    private static final BertConfig CONFIG = new BertConfig(300, 64, 40, 2, 16, new int[] {4, 2}, new int[] {128, 64}, 1e-12f);

    @Test
    void trainedValuesComeBackIntoTheHostModelAndHeadAndTheExportCarriesTheBlockMasks() {
        SplittableRandom rnd = new SplittableRandom(3);
        CpuBackend be = CpuBackend.create();
        try (BertModel host = new BertModel(CONFIG); TaskHead head = new TaskHead(64, 2, 5)) {
            for (var t : host.parameters().values()) {
                float[] v = new float[(int) t.numel()];
                for (int i = 0; i < v.length; i++) v[i] = (float) (0.05 * (2 * rnd.nextDouble() - 1));
                t.copyFrom(v);
            }
            host.addLora(new LoraConfig(4, 8, EnumSet.allOf(LoraConfig.Target.class)), 1);
            boolean[][] mask = new boolean[64 / 32][128 / 32]; // layer 0's FFN out, half its blocks
            for (boolean[] row : mask) for (int j = 0; j < row.length; j += 2) row[j] = true;
            boolean[][][][] masks = new boolean[2][4][][];
            masks[0][3] = mask;
            host.setBlockMasks(masks);
            String a = "encoder.layer.0.output.dense.lora_A", b = "encoder.layer.1.attention.self.qkv.lora_B";
            float[] hostA = host.parameter(a).toFloatArray(), hostB = host.parameter(b).toFloatArray();
            float[] headW = head.parameters().values().iterator().next().toFloatArray();
            List<Trainer.Item> items = new ArrayList<>();
            for (int i = 0; i < 16; i++) {
                int len = 5 + rnd.nextInt(20);
                int[] ids = new int[len], types = new int[len];
                for (int t = 0; t < len; t++) ids[t] = rnd.nextInt(300);
                items.add(new Trainer.Item(new BertTokenizer.Encoded(ids, types), new Example("a", "b", rnd.nextInt(2), 0f)));
            }
            try (TrainingCopy copy = new TrainingCopy(be, host, head, true);
                    Trainer trainer = new Trainer(be, copy.model, copy.training(new BertTraining.Options(n -> n.contains("lora_"), DropoutConfig.NONE, false, dev.topa.tensor.DType.F32)), copy.head,
                            GlueTask.MRPC, new Trainer.Config(1, 8, 1e-2, 0.0, 0, 1.0, 7))) {
                assertNotSame(host, copy.model);
                trainer.trainStep(items.subList(0, 8), 1e-2);
                trainer.trainStep(items.subList(8, 16), 1e-2);
                assertArrayEquals(hostA, host.parameter(a).toFloatArray(), "the host model is untouched until copied back");
                copy.copyBack();
                float[] trainedA = copy.model.parameter(a).toFloatArray();
                assertFalse(Arrays.equals(hostA, trainedA), "training moved A");
                assertArrayEquals(trainedA, host.parameter(a).toFloatArray());
                assertArrayEquals(copy.model.parameter(b).toFloatArray(), host.parameter(b).toFloatArray());
                assertFalse(Arrays.equals(hostB, host.parameter(b).toFloatArray()), "training moved B");
                float[] trainedHead = copy.head.parameters().values().iterator().next().toFloatArray();
                assertFalse(Arrays.equals(headW, trainedHead), "training moved the head");
                assertArrayEquals(trainedHead, head.parameters().values().iterator().next().toFloatArray());
                try (BertModel saved = copy.export().get()) {
                    assertNotNull(saved.blockMask(0, BertNames.Slot.FFN_OUT));
                    assertArrayEquals(trainedA, saved.parameter(a).toFloatArray());
                }
            }
        }
    }
}
