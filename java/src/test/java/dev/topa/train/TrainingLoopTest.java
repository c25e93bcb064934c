package dev.topa.train;

import static org.junit.jupiter.api.Assertions.assertEquals;

import dev.topa.backend.cpu.CpuBackend;
import dev.topa.dist.Communicator;
import dev.topa.glue.GlueTask;
import dev.topa.io.ModelFilesTest;
import dev.topa.model.BertModel;
import dev.topa.model.BertTraining;
import dev.topa.model.LoraConfig;
import dev.topa.model.TaskHead;
import dev.topa.testing.RandomTraining;
import java.util.ArrayList;
import java.util.EnumSet;
import java.util.List;
import java.util.SplittableRandom;
import org.junit.jupiter.api.Test;

/** The loop's books: which evaluation is the best so far, on a rank that saves nothing. */
class TrainingLoopTest {
    private static final CpuBackend CPU = CpuBackend.create();

    /**
     * While the model may not be saved (gradual pruning's ramp, the first two of three epochs here)
     * a rank that writes nothing takes no best either, as rank 0, which could not save it, does not:
     * every rank keeps the same books. The first evaluation beats no best at all, so a rank that took
     * unsaved bests would record epoch 1 as saved.
     */
    @Test
    void aRankThatWritesNothingTakesNoBestTheModelCouldNotBeSavedAt() {
        List<Trainer.Item> train = RandomTraining.items(new SplittableRandom(1), 40, 50, 3, 6), // 5 steps an epoch
                dev = RandomTraining.items(new SplittableRandom(2), 16, 50, 3, 6);
        List<Integer> saved = new ArrayList<>(), notSaved = new ArrayList<>();
        long[] steps = {0};
        TrainingLoop.Listener books = new TrainingLoop.Listener() {
            @Override
            public void saved(Trainer.EpochResult r) {
                saved.add(r.epoch());
            }

            @Override
            public void notSaved(Trainer.EpochResult r) {
                notSaved.add(r.epoch());
            }
        };
        TrainingLoop.Hooks hooks = new TrainingLoop.Hooks(st -> steps[0]++, null, () -> steps[0] > 10, books, java.util.Map::of);
        try (BertModel m = ModelFilesTest.tinyRandomModel(); TaskHead head = new TaskHead(16, 2, 3)) {
            m.addLora(new LoraConfig(2, 4, EnumSet.allOf(LoraConfig.Target.class)), 9);
            try (BertTraining training = new BertTraining(m, n -> n.contains("lora_"));
                    Trainer trainer = new Trainer(CPU, m, training, head, GlueTask.SST2, new Trainer.Config(3, 8, 2e-2, 0.01, 0.2, 1.0, 5))
                            .distributed(Communicator.alone(1, 2))) {
                TrainingLoop.Output nowhere = new TrainingLoop.Output(null, null, 0, null, null); // never written: not rank 0
                TrainingLoop.Outcome o = TrainingLoop.run(CPU, trainer, train, dev, m, head, nowhere, TrainingLoop.Outcome.NONE, hooks);
                assertEquals(List.of(1, 2), notSaved, "the evaluations before the model could be saved");
                assertEquals(List.of(3), saved);
                assertEquals(2, o.bestIndex());
                assertEquals(o.results().get(2).dev().get(GlueTask.SST2.mainMetric()), o.best());
            }
        }
    }
}
