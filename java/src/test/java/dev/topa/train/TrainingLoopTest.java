package dev.topa.train;

import static org.junit.jupiter.api.Assertions.assertEquals;

import dev.topa.backend.cpu.CpuBackend;
import dev.topa.dist.Communicator;
import dev.topa.glue.Example;
import dev.topa.glue.GlueTask;
import dev.topa.io.BertTokenizer;
import dev.topa.io.ModelFilesTest;
import dev.topa.model.BertModel;
import dev.topa.model.BertTraining;
import dev.topa.model.LoraConfig;
import dev.topa.model.TaskHead;
import dev.topa.tensor.Tensor;
import java.util.ArrayList;
import java.util.EnumSet;
import java.util.List;
import java.util.SplittableRandom;
import org.junit.jupiter.api.Test;

/** The loop's books: which evaluation is the best so far, on a rank that saves nothing. */
class TrainingLoopTest {
    private static final CpuBackend CPU = CpuBackend.create();

    /** Rank 1 of 2 whose collectives are the identity: it trains and evaluates its share, and never writes. */
    private static final Communicator SECOND_RANK = new Communicator() {
        @Override
        public int rank() {
            return 1;
        }

        @Override
        public int size() {
            return 2;
        }

        @Override
        public void allReduceSum(double[] data) {}

        @Override
        public void allReduceSum(List<Tensor> hostTensors) {}

        @Override
        public Pending allReduceSumAsync(Tensor hostTensor) {
            return () -> {};
        }

        @Override
        public void broadcast(byte[] bytes, int root) {}

        @Override
        public void barrier() {}

        @Override
        public void abort(int code) {
            throw new IllegalStateException("abort " + code);
        }

        @Override
        public void close() {}
    };

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

    /**
     * While the model may not be saved (gradual pruning's ramp, the first two of three epochs here)
     * a rank that writes nothing takes no best either, as rank 0, which could not save it, does not:
     * every rank keeps the same books. The first evaluation beats no best at all, so a rank that took
     * unsaved bests would record epoch 1 as saved.
     */
    @Test
    void aRankThatWritesNothingTakesNoBestTheModelCouldNotBeSavedAt() {
        List<Trainer.Item> train = items(40, 1), dev = items(16, 2); // 5 steps an epoch
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
                            .distributed(SECOND_RANK)) {
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
