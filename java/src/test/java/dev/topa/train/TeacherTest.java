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
import dev.topa.tensor.DType;
import dev.topa.tensor.MemoryCategory;
import dev.topa.tensor.TensorScope;
import dev.topa.testing.RandomTraining;
import java.util.List;
import java.util.SplittableRandom;
import org.junit.jupiter.api.Test;

/**
 * Distillation's plumbing: a student taught only by itself (alpha 1: the teacher's outputs are its
 * own, no dropout) gets a gradient that is zero up to rounding (the teacher's outputs come from the
 * inference path), while taught half by the labels it gets a real one; a batch the teacher never
 * saw is refused.
 */
class TeacherTest {
    private static final BertConfig CONFIG = new BertConfig(100, 32, 24, 2, 16, new int[] {2}, new int[] {64}, 1e-12f);

    /** The norm of the gradients of one batch. */
    private static double gradientNorm(double alpha, boolean unseen) {
        return gradientNorm(alpha, unseen, 0, 0, false);
    }

    /**
     * As above; hidden > 0: layer-wise too, the teacher's encoder a copy of the student's with its
     * weights moved by shift (0: the student's own hidden states); compacted: that copy compacted for
     * the items' tokens (fp32: the same arithmetic), ids given through its token map.
     */
    private static double gradientNorm(double alpha, boolean unseen, double hidden, double shift, boolean compacted) {
        return gradientNorm(alpha, unseen, hidden, shift, compacted, DType.F32);
    }

    /** As above, the student keeping its activations (and so the teacher's states) in kept. */
    private static double gradientNorm(double alpha, boolean unseen, double hidden, double shift, boolean compacted, DType kept) {
        SplittableRandom rnd = new SplittableRandom(4);
        CpuBackend be = CpuBackend.create();
        try (BertModel model = new BertModel(CONFIG); TaskHead head = new TaskHead(32, 2, 3)) {
            RandomTraining.randomize(model, rnd, 0.1);
            List<Trainer.Item> items = RandomTraining.items(rnd, 8, 100, 3, 8);
            Teacher teacher;
            try (Predictor p = new Predictor(be, model, head)) {
                teacher = new Teacher(p, model.parameterBytes(), items.subList(0, unseen ? 4 : 8), alpha, 1.0);
            }
            if (hidden > 0) {
                BertModel copy = new BertModel(CONFIG);
                SplittableRandom moved = new SplittableRandom(9);
                for (var e : model.parameters().entrySet()) {
                    float[] v = e.getValue().toFloatArray();
                    for (int i = 0; i < v.length; i++) v[i] += (float) (shift * (moved.nextDouble() - 0.5));
                    copy.parameter(e.getKey()).copyFrom(v);
                }
                if (compacted) {
                    int[] tokens = Teacher.tokensOf(items);
                    BertModel compact = copy.compactForInference(be, false, tokens);
                    copy.close();
                    teacher.matchingHiddenStates(be, compact, hidden, compact.parameterBytes(), compact);
                } else {
                    teacher.matchingHiddenStates(be, copy, hidden, copy.parameterBytes(), copy);
                }
            }
            try (BertTraining training = new BertTraining(be, model, new BertTraining.Options(n -> true, DropoutConfig.NONE, false, kept));
                    Trainer trainer = new Trainer(be, model, training, head, GlueTask.MRPC, new Trainer.Config(1, 8, 1e-2, 0.0, 0, 1.0, 7))
                            .distillFrom(teacher)) {
                trainer.lossAndGradients(items);
                teacher.close();
                double sq = 0;
                for (var g : training.gradients().values()) for (float x : g.toFloatArray()) sq += (double) x * x;
                return Math.sqrt(sq);
            }
        }
    }

    @Test
    void aTeacherCompactedForItsItemsTeachesWhatTheWholeModelDoesBitForBit() {
        CpuBackend be = CpuBackend.create();
        for (boolean bf16 : new boolean[] {true, false}) {
            SplittableRandom rnd = new SplittableRandom(6);
            try (BertModel model = new BertModel(CONFIG); TaskHead head = new TaskHead(32, 2, 3)) {
                RandomTraining.randomize(model, rnd, 0.1);
                List<Trainer.Item> items = RandomTraining.items(rnd, 9, 100, 2, 9);
                float[] want, got;
                try (TensorScope packs = new TensorScope("teacher packs", MemoryCategory.WEIGHTS)) { // the whole model's pass, as a warmed-up teacher's
                    if (bf16) model.packForInference(be, true, packs);
                    try (Predictor p = new Predictor(be, model, head)) {
                        want = new Teacher(p, 0, items, 0.5, 2.0).outputs(items);
                    }
                    model.dropInferencePacks();
                }
                try (BertModel compact = model.compactForInference(be, bf16, Teacher.tokensOf(items)); Predictor p = new Predictor(be, compact, head)) {
                    got = new Teacher(p, 0, items, 0.5, 2.0).outputs(items);
                }
                assertArrayEquals(want, got, 0f, "bf16 " + bf16);
            }
        }
    }

    @Test
    void aStudentTaughtOnlyByItselfGetsNoGradientAndWithLabelsItDoes() {
        double self = gradientNorm(1.0, false), half = gradientNorm(0.5, false);
        assertTrue(half > 1e-3, "the labels' half of the loss has a gradient: " + half);
        assertTrue(self < 1e-3 * half, "taught by its own outputs the student's gradient is rounding: " + self + " vs " + half);
        var e = assertThrows(IllegalArgumentException.class, () -> gradientNorm(0.5, true));
        assertTrue(e.getMessage().contains("no outputs for a training item"), e.getMessage());
    }

    /**
     * Layer-wise: a student matching its own hidden states (and outputs) gets no gradient; matching
     * those of a teacher whose weights differ gets one, which grows with the matching weight.
     */
    @Test
    void aStudentMatchingItsOwnHiddenStatesGetsNoGradientAndAnotherTeachersItDoes() {
        double self = gradientNorm(1.0, false, 2.0, 0, false), other = gradientNorm(1.0, false, 2.0, 0.2, false);
        double more = gradientNorm(1.0, false, 8.0, 0.2, false);
        assertTrue(other > 1e-3, "another teacher's hidden states give a gradient: " + other);
        assertTrue(self < 1e-3 * other, "its own hidden states give rounding: " + self + " vs " + other);
        assertTrue(more > 2 * other, "four times the weight, more gradient: " + more + " vs " + other);
        // the same through an encoder compacted for the items' tokens: a wrong row for any id would show
        double compactSelf = gradientNorm(1.0, false, 2.0, 0, true), compactOther = gradientNorm(1.0, false, 2.0, 0.2, true);
        assertTrue(compactSelf < 1e-3 * other, "its own hidden states, compacted, give rounding: " + compactSelf + " vs " + other);
        assertEquals(other, compactOther, 1e-9 * other, "another teacher's, compacted: the same gradient");
        // kept in bf16, the teacher's states with the student's activations: about the same gradient, not the same
        double half = gradientNorm(1.0, false, 2.0, 0.2, false, DType.BF16);
        assertTrue(half != other && Math.abs(half - other) < 0.02 * other, "bf16-kept targets: " + half + " vs " + other);
    }
}
