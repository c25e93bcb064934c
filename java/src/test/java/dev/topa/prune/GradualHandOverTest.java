package dev.topa.prune;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.topa.backend.cpu.CpuBackend;
import dev.topa.glue.Example;
import dev.topa.glue.GlueTask;
import dev.topa.glue.Metric;
import dev.topa.io.BertTokenizer;
import dev.topa.io.ModelFilesTest;
import dev.topa.model.BertConfig;
import dev.topa.model.BertModel;
import dev.topa.model.BertTraining;
import dev.topa.model.LoraConfig;
import dev.topa.model.TaskHead;
import dev.topa.tensor.MemoryCategory;
import dev.topa.tensor.TensorScope;
import dev.topa.train.Trainer;
import java.util.ArrayList;
import java.util.EnumSet;
import java.util.List;
import java.util.Map;
import java.util.SplittableRandom;
import org.junit.jupiter.api.Test;

/**
 * The gradual schedule's hand-over (at each epoch's end of the ramp): the masked model's trainer
 * state (adapters, head, both AdamW moments, step) carried into a trainer of the compacted model,
 * which trains on as the masked model would have: the same losses, metrics and adapters, up to the
 * order of float sums (the masked units computed zeros; their adapter rows' gradients are zeroed
 * before clipping, so they count in no norm), with clipping binding at some steps, with blocks the
 * masks empty, and with masks that tighten again in the compacted model before the next hand-over.
 */
class GradualHandOverTest {
    private static final CpuBackend CPU = CpuBackend.create();
    /**
     * Clipping binds at some steps and not at others (a norm of 0.1): the masked units' gradients must
     * count in no norm (counted, this test fails; where clipping binds at every step AdamW hides them).
     */
    private static final Trainer.Config TRAINING = new Trainer.Config(3, 8, 2e-2, 0.01, 0.2, 0.1, 5);
    private static final boolean[][] HEADS = {{true, false, true, false}, {false, true, true}};

    private static boolean[][] neurons(BertConfig c, int emptyLayer) {
        SplittableRandom rnd = new SplittableRandom(11);
        boolean[][] n = new boolean[c.layers()][];
        for (int l = 0; l < n.length; l++) {
            n[l] = new boolean[c.ffn(l)];
            for (int j = 0; j < n[l].length; j++) n[l][j] = l != emptyLayer && (j == 0 || rnd.nextBoolean());
        }
        return n;
    }

    private static List<Trainer.Item> items(int n, long seed) {
        SplittableRandom rnd = new SplittableRandom(seed);
        List<Trainer.Item> out = new ArrayList<>();
        for (int i = 0; i < n; i++) {
            int len = 3 + rnd.nextInt(6);
            int[] ids = rnd.ints(len, 1, 50).toArray();
            int label = (ids[0] + ids[1]) % 2;
            out.add(new Trainer.Item(new BertTokenizer.Encoded(ids, new int[len]), new Example("", null, label, label)));
        }
        return out;
    }

    private static BertModel model() {
        BertModel m = ModelFilesTest.tinyRandomModel();
        m.addLora(new LoraConfig(2, 4, EnumSet.allOf(LoraConfig.Target.class)), 9);
        return m;
    }

    private static BertTraining training(BertModel m) {
        return new BertTraining(m, n -> n.contains("lora_"));
    }

    @Test
    void theCompactedModelTrainsOnAsTheMaskedOneWould() {
        handOver(HEADS, -1);
    }

    /** Layer 0 left with no head, layer 1 with no neuron: their adapters are not in the compacted model, the rest carries over. */
    @Test
    void blocksTheMasksEmptyHandOverWithoutTheirAdapters() {
        handOver(new boolean[][] {{false, false, false, false}, {false, true, true}}, 1);
    }

    private static void handOver(boolean[][] keepHeads, int emptyFfn) {
        List<Trainer.Item> train = items(40, 1), dev = items(16, 2);
        List<Trainer.EpochResult> masked = new ArrayList<>(), handedOver = new ArrayList<>();
        try (BertModel a = model(); TaskHead headA = new TaskHead(16, 2, 3); BertModel b = model(); TaskHead headB = new TaskHead(16, 2, 3)) {
            BertConfig c = a.config();
            MaskedPruning masksA = new MaskedPruning(c), masksB = new MaskedPruning(c);
            masksA.update(CPU, a, keepHeads, neurons(c, emptyFfn));
            masksB.update(CPU, b, keepHeads, neurons(c, emptyFfn));
            // three epochs masked all through
            try (BertTraining ta = training(a);
                    Trainer trainer = new Trainer(CPU, a, ta, headA, GlueTask.SST2, TRAINING).beforeOptimizerStep(g -> masksA.maskGradients(CPU, g))) {
                trainer.fit(train, dev, masked::add, st -> masksA.enforce(CPU, a));
            }
            // one epoch masked, then two compacted
            Trainer.State state;
            try (TensorScope host = new TensorScope("hand-over", MemoryCategory.WORKSPACE)) {
                try (BertTraining tb = training(b); Trainer trainer = new Trainer(CPU, b, tb, headB, GlueTask.SST2, TRAINING).stopAfter(1)
                        .beforeOptimizerStep(g -> masksB.maskGradients(CPU, g))) {
                    trainer.fit(train, dev, handedOver::add, st -> masksB.enforce(CPU, b));
                    state = trainer.state(host);
                }
                assertEquals(1, handedOver.size(), "stopped after the first epoch");
                try (BertModel pruned = masksB.compact(b); BertTraining tp = training(pruned);
                        Trainer trainer = new Trainer(CPU, pruned, tp, headB, GlueTask.SST2, TRAINING)) {
                    boolean[][] heads = masksB.keptHeads(), kept = masksB.keptNeurons();
                    Trainer.State carried = state.only(trainer.parameterNames());
                    for (String n : state.tensors().keySet())
                        assertEquals(!carried.tensors().containsKey(n), StructuredPruning.emptied(n, heads, kept), n + ": dropped exactly where emptied");
                    if (emptyFfn >= 0) assertTrue(carried.tensors().size() < state.tensors().size(), "the emptied blocks' adapters dropped");
                    masksB.handOver(state, trainer);
                    assertEquals(1, trainer.epochsDone());
                    trainer.fit(train, dev, handedOver::add, st -> {});
                    try (BertModel want = masksA.compact(a)) {
                        assertEquals(want.config(), pruned.config());
                        double moved = 0;
                        for (var e : want.parameters().entrySet()) {
                            float[] w = e.getValue().toFloatArray(), got = pruned.parameter(e.getKey()).toFloatArray();
                            for (int i = 0; i < w.length; i++) {
                                assertEquals(w[i], got[i], 2e-5, e.getKey() + "[" + i + "]");
                                if (e.getKey().contains("lora_B")) moved = Math.max(moved, Math.abs(w[i]));
                            }
                        }
                        assertTrue(moved > 1e-3, "the adapters' B factors trained away from zero: " + moved);
                        for (var e : headA.parameters().entrySet())
                            assertArrayEqualsWithin(e.getValue().toFloatArray(), headB.parameters().get(e.getKey()).toFloatArray(), e.getKey());
                    }
                }
            }
        }
        assertSameEpochs(masked, handedOver);
    }

    /** Three epochs of each, the same steps, losses and dev metrics (up to the order of float sums). */
    private static void assertSameEpochs(List<Trainer.EpochResult> want, List<Trainer.EpochResult> got) {
        assertEquals(3, got.size());
        for (int i = 0; i < 3; i++) {
            assertEquals(want.get(i).step(), got.get(i).step(), "epoch " + (i + 1));
            assertEquals(want.get(i).trainLoss(), got.get(i).trainLoss(), 1e-5, "epoch " + (i + 1));
            for (Metric m : want.get(i).dev().keySet()) assertEquals(want.get(i).dev().get(m), got.get(i).dev().get(m), 1e-9, m + ", epoch " + (i + 1));
        }
    }

    /**
     * The ramp's hand-overs: masks tightened in a compacted model (in epoch 2, after the hand-over at
     * epoch 1's end) and handed over again at epoch 2's end, so three shapes train in turn -- against
     * one masked dense model tightened at the same step: the same losses, metrics and adapters.
     */
    @Test
    void masksThatTightenInACompactedModelHandOverAgain() {
        List<Trainer.Item> train = items(40, 1), dev = items(16, 2); // 5 steps an epoch: the masks tighten at step 7
        List<Trainer.EpochResult> masked = new ArrayList<>(), staged = new ArrayList<>();
        try (BertModel a = model(); TaskHead headA = new TaskHead(16, 2, 3); BertModel b = model(); TaskHead headB = new TaskHead(16, 2, 3);
                TensorScope host = new TensorScope("hand-over", MemoryCategory.WORKSPACE)) {
            BertConfig c = a.config();
            boolean[][] n1 = neurons(c, -1), h2 = {{true, false, false, false}, {false, false, true}}, n2 = neurons(c, -1);
            SplittableRandom rnd = new SplittableRandom(3);
            for (boolean[] layer : n2) for (int j = 1; j < layer.length; j++) layer[j] &= rnd.nextBoolean();
            MaskedPruning masksA = new MaskedPruning(c), masksB = new MaskedPruning(c);
            masksA.update(CPU, a, HEADS, n1);
            masksB.update(CPU, b, HEADS, n1);
            int[] stepA = {0};
            try (BertTraining ta = training(a);
                    Trainer trainer = new Trainer(CPU, a, ta, headA, GlueTask.SST2, TRAINING).beforeOptimizerStep(g -> masksA.maskGradients(CPU, g))) {
                trainer.fit(train, dev, masked::add, st -> {
                    if (++stepA[0] == 7) masksA.update(CPU, a, h2, n2);
                    else masksA.enforce(CPU, a);
                });
            }
            BertModel shape = b;
            Trainer.State state = null;
            int[] stepB = {0};
            try {
                for (int epoch = 1; epoch <= 3; epoch++) {
                    BertModel m = shape;
                    try (BertTraining tm = training(m); Trainer trainer = new Trainer(CPU, m, tm, headB, GlueTask.SST2, TRAINING).stopAfter(epoch)
                            .beforeOptimizerStep(g -> masksB.maskGradients(CPU, g))) {
                        if (state != null) masksB.handOver(state, trainer);
                        assertEquals(epoch - 1, trainer.epochsDone());
                        trainer.fit(train, dev, staged::add, st -> {
                            if (++stepB[0] == 7) masksB.update(CPU, m, h2, n2);
                            else masksB.enforce(CPU, m);
                        });
                        if (epoch == 3) break;
                        state = trainer.state(host);
                    }
                    shape = masksB.compact(m);
                    m.close();
                }
                assertTrue(masksB.compacted());
                try (BertModel want = masksA.compact(a)) {
                    assertEquals(want.config(), shape.config());
                    for (var e : want.parameters().entrySet())
                        assertArrayEqualsWithin(e.getValue().toFloatArray(), shape.parameter(e.getKey()).toFloatArray(), e.getKey());
                }
                for (var e : headA.parameters().entrySet())
                    assertArrayEqualsWithin(e.getValue().toFloatArray(), headB.parameters().get(e.getKey()).toFloatArray(), e.getKey());
            } finally {
                shape.close();
            }
        }
        assertSameEpochs(masked, staged);
    }

    private static void assertArrayEqualsWithin(float[] want, float[] got, String what) {
        assertEquals(want.length, got.length, what);
        for (int i = 0; i < want.length; i++) assertEquals(want[i], got[i], 2e-5, what + "[" + i + "]");
    }

    @Test
    void aStateOfOtherParametersIsRefused() {
        try (BertModel a = model(); TaskHead head = new TaskHead(16, 2, 3); BertModel b = ModelFilesTest.tinyRandomModel();
                TensorScope host = new TensorScope("hand-over", MemoryCategory.WORKSPACE);
                BertTraining ta = training(a); Trainer lora = new Trainer(CPU, a, ta, head, GlueTask.SST2, TRAINING);
                BertTraining tb = new BertTraining(b, n -> true); Trainer full = new Trainer(CPU, b, tb, head, GlueTask.SST2, TRAINING)) {
            Trainer.State state = lora.state(host);
            var e = assertThrows(IllegalArgumentException.class, () -> full.restore(state, (n, from, to) -> to.copyFrom(from)));
            assertTrue(e.getMessage().contains("a state of other parameters"), e.getMessage());
        }
    }
}
