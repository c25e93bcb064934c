package dev.topa.train;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.topa.backend.cpu.CpuBackend;
import dev.topa.glue.Example;
import dev.topa.glue.GlueTask;
import dev.topa.io.BertTokenizer;
import dev.topa.io.ModelFilesTest;
import dev.topa.model.BertModel;
import dev.topa.model.BertTraining;
import dev.topa.model.LoraConfig;
import dev.topa.model.TaskHead;
import dev.topa.tensor.Tensor;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.EnumSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.SplittableRandom;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** A run that crashes after an epoch and resumes from its checkpoint ends where an unbroken run ends, to the bit. */
class ResumeTest {
    @TempDir
    Path tmp;

    static List<Trainer.Item> items(int n, long seed) {
        SplittableRandom rnd = new SplittableRandom(seed);
        List<Trainer.Item> out = new ArrayList<>();
        for (int i = 0; i < n; i++) {
            int len = 3 + rnd.nextInt(5);
            int[] ids = rnd.ints(len, 1, 50).toArray();
            int label = ids[0] % 2;
            out.add(new Trainer.Item(new BertTokenizer.Encoded(ids, new int[len]), new Example("", null, label, label)));
        }
        return out;
    }

    /** Trains for 3 epochs; crashAfter > 0 stops (by an exception) after that epoch, leaving a checkpoint. */
    static Map<String, float[]> train(boolean lora, Path checkpoint, int crashAfter, boolean resume, List<Integer> epochsRun)
            throws Exception {
        try (BertModel model = ModelFilesTest.tinyRandomModel(); TaskHead head = new TaskHead(16, 2, 3)) {
            if (lora) model.addLora(new LoraConfig(2, 4, EnumSet.allOf(LoraConfig.Target.class)), 9);
            try (BertTraining training = new BertTraining(model, lora ? n -> n.contains("lora_") || n.contains("LayerNorm") : n -> true);
                    Trainer trainer = new Trainer(CpuBackend.create(), model, training, head, GlueTask.SST2,
                            new Trainer.Config(3, 8, 1e-3, 0.01, 0.2, 1.0, 5))) {
                if (resume) trainer.loadCheckpoint(checkpoint);
                trainer.fit(items(40, 1), items(10, 2), r -> {
                    epochsRun.add(r.epoch());
                    try {
                        trainer.saveCheckpoint(checkpoint);
                    } catch (java.io.IOException e) {
                        throw new java.io.UncheckedIOException(e);
                    }
                    if (r.epoch() == crashAfter) throw new IllegalStateException("simulated crash after epoch " + r.epoch());
                }, s -> {});
                Map<String, float[]> out = new LinkedHashMap<>();
                for (var e : model.parameters().entrySet()) out.put(e.getKey(), e.getValue().toFloatArray());
                for (var e : head.parameters().entrySet()) out.put(e.getKey(), e.getValue().toFloatArray());
                return out;
            }
        }
    }

    void check(boolean lora) throws Exception {
        Map<String, float[]> straight = train(lora, tmp.resolve("straight.safetensors"), -1, false, new ArrayList<>());
        Path ckpt = tmp.resolve("crash.safetensors");
        var e = assertThrows(IllegalStateException.class, () -> train(lora, ckpt, 2, false, new ArrayList<>()));
        assertTrue(e.getMessage().contains("simulated crash"));
        List<Integer> after = new ArrayList<>();
        Map<String, float[]> resumed = train(lora, ckpt, -1, true, after);
        assertEquals(List.of(3), after, "the resumed run trains only the epoch left; its state must come from the checkpoint");
        assertEquals(straight.keySet(), resumed.keySet());
        boolean moved = false;
        try (BertModel init = ModelFilesTest.tinyRandomModel()) {
            for (var p : init.parameters().entrySet()) moved |= !java.util.Arrays.equals(p.getValue().toFloatArray(), straight.get(p.getKey()));
        }
        assertTrue(moved, "training changed the parameters");
        for (String n : straight.keySet()) assertArrayEquals(straight.get(n), resumed.get(n), n + " after resume");
    }

    @Test
    void fullFineTuningResumesExactly() throws Exception {
        check(false);
    }

    @Test
    void loraResumesExactly() throws Exception {
        check(true);
    }
}
