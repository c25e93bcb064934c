package dev.topa.train;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.topa.backend.cpu.CpuBackend;
import dev.topa.glue.GlueTask;
import dev.topa.model.BertConfig;
import dev.topa.model.BertModel;
import dev.topa.model.BertTraining;
import dev.topa.model.DropoutConfig;
import dev.topa.model.TaskHead;
import dev.topa.testing.RandomTraining;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.SplittableRandom;
import org.junit.jupiter.api.Test;

/**
 * A step reads nothing back: losses wait on the device in a window and the clip factor and the
 * finite check are decided there. Run on the CPU with windows of 1 and 5 steps, training must give
 * the same per-step losses and weights, and a diverging run must stop at the same step with the
 * same weights (the updates after the bad step skipped where the device decided, not applied).
 */
class ReadBackWindowTest {
    private static final BertConfig CONFIG = new BertConfig(200, 32, 40, 2, 16, new int[] {2}, new int[] {64}, 1e-12f);

    private record Run(List<Double> losses, Map<String, float[]> weights, String error) {}

    private static Run train(int window, double lr, GlueTask task) {
        SplittableRandom rnd = new SplittableRandom(11);
        CpuBackend be = CpuBackend.create();
        try (BertModel model = new BertModel(CONFIG); TaskHead head = new TaskHead(32, task.numLabels(), 5)) {
            RandomTraining.randomize(model, rnd, 0.05);
            List<Trainer.Item> items = RandomTraining.items(rnd, 28, 200, 3, 12);
            List<Double> losses = new ArrayList<>();
            String error = null;
            try (BertTraining training = new BertTraining(be, model, new BertTraining.Options(n -> true, DropoutConfig.BERT, false,
                    dev.topa.tensor.DType.F32));
                    Trainer trainer = new Trainer(be, model, training, head, task, new Trainer.Config(2, 4, lr, 0.01, 0.1, 1.0, 7))) {
                trainer.readBackEvery(window).fit(items, items.subList(0, 8), r -> {}, st -> losses.add(st.loss()));
            } catch (ArithmeticException e) {
                error = e.getMessage();
            }
            Map<String, float[]> weights = new LinkedHashMap<>();
            model.parameters().forEach((n, t) -> weights.put(n, t.toFloatArray()));
            head.parameters().forEach((n, t) -> weights.put(n, t.toFloatArray()));
            return new Run(losses, weights, error);
        }
    }

    private static void same(Run a, Run b) {
        assertEquals(a.losses(), b.losses());
        assertEquals(a.weights().keySet(), b.weights().keySet());
        a.weights().forEach((n, w) -> assertArrayEquals(w, b.weights().get(n), n));
    }

    @Test
    void aWindowOfStepsGivesTheSameLossesAndWeights() {
        for (GlueTask task : new GlueTask[] {GlueTask.MRPC, GlueTask.STSB}) {
            Run one = train(1, 1e-3, task), five = train(5, 1e-3, task);
            assertEquals(14, one.losses().size(), "2 epochs of 7 steps, each reported once");
            assertTrue(one.error() == null && one.losses().stream().allMatch(Double::isFinite), one.toString());
            same(one, five);
        }
    }

    @Test
    void aWindowOutsideOneToSixteenIsRefused() {
        try (BertModel model = new BertModel(CONFIG); TaskHead head = new TaskHead(32, 2, 5);
                BertTraining training = new BertTraining(CpuBackend.create(), model, new BertTraining.Options(n -> true, DropoutConfig.NONE, false,
                        dev.topa.tensor.DType.F32));
                Trainer trainer = new Trainer(CpuBackend.create(), model, training, head, GlueTask.MRPC, new Trainer.Config(1, 4, 1e-3, 0, 0, 1, 7))) {
            for (int bad : new int[] {0, -1, Trainer.DEVICE_WINDOW + 1}) {
                var e = org.junit.jupiter.api.Assertions.assertThrows(IllegalArgumentException.class, () -> trainer.readBackEvery(bad));
                assertTrue(e.getMessage().contains("read back every 1 to " + Trainer.DEVICE_WINDOW + " steps, got " + bad), e.getMessage());
            }
        }
    }

    @Test
    void aDivergingRunStopsAtTheSameStepWithNothingAppliedFromIt() {
        Run one = train(1, 1e30, GlueTask.MRPC), five = train(5, 1e30, GlueTask.MRPC);
        assertTrue(one.error() != null && one.error().matches("(?s)step \\d+: .*(NaN|Infinity).*training stopped.*"), String.valueOf(one.error()));
        assertEquals(one.error(), five.error());
        same(one, five);
    }

    /**
     * What a step hook changes (the gradual schedule's masks) reaches the next step only with a
     * window of one: then each hook has seen exactly as many backward passes as steps; with a window
     * of five the hooks of a window run after all its steps (which is why that schedule reads back
     * every step).
     */
    @Test
    void withAWindowOfOneEachStepsHookRunsBeforeTheNextStep() {
        for (int window : new int[] {1, 5}) {
            SplittableRandom rnd = new SplittableRandom(11);
            try (BertModel model = new BertModel(CONFIG); TaskHead head = new TaskHead(32, 2, 5)) {
                RandomTraining.randomize(model, rnd, 0.05);
                List<Trainer.Item> items = RandomTraining.items(rnd, 28, 200, 3, 12);
                long[] backward = {0};
                List<long[]> hooks = new ArrayList<>(); // per hook: steps hooked so far, backward passes so far
                try (BertTraining training = new BertTraining(CpuBackend.create(), model, new BertTraining.Options(n -> true, DropoutConfig.NONE, false,
                        dev.topa.tensor.DType.F32));
                        Trainer trainer = new Trainer(CpuBackend.create(), model, training, head, GlueTask.MRPC, new Trainer.Config(1, 4, 1e-3, 0, 0, 1, 7))) {
                    training.setMaskGradientListener(new BertTraining.MaskGradientListener() {
                        @Override
                        public void heads(int layer, dev.topa.tensor.Tensor perExample) {
                            if (layer == CONFIG.layers() - 1) backward[0]++; // backward visits the last layer first, once per step
                        }

                        @Override
                        public void neurons(int layer, dev.topa.tensor.Tensor perExample) {}
                    });
                    trainer.readBackEvery(window).fit(items, items.subList(0, 8), r -> {}, st -> hooks.add(new long[] {hooks.size() + 1, backward[0]}));
                }
                assertEquals(7, hooks.size(), "28 examples in batches of 4");
                boolean late = hooks.stream().anyMatch(h -> h[1] > h[0]);
                if (window == 1) assertTrue(hooks.stream().allMatch(h -> h[1] == h[0]), "window 1: a hook after each step, before the next");
                else assertTrue(late, "window 5: hooks after the window's steps (the test would not see a late hook otherwise)");
            }
        }
    }
}
