package dev.topa.train;

import static org.junit.jupiter.api.Assertions.assertDoesNotThrow;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Path;
import java.util.HashMap;
import java.util.Map;
import org.junit.jupiter.api.Test;

/** A resume's check of what makes a run the same run, for checkpoints of this build and of older ones. */
class RunIdentityTest {
    private static final RunIdentity RUN = new RunIdentity(Map.of("task", "RTE", "train_examples", "32", "dev_examples", "277", "dev_data", "1f"));
    private static final Path CKPT = Path.of("out/checkpoint.safetensors");

    @Test
    void aCheckpointWithoutTheDevFieldsIsAnOlderBuildsRunOverTheWholeSplit() {
        Map<String, String> older = new HashMap<>(RUN.metadata());
        older.remove("run.dev_examples");
        older.remove("run.dev_data");
        assertDoesNotThrow(() -> RUN.check(CKPT, older));
        assertDoesNotThrow(() -> RUN.check(CKPT, RUN.metadata()));
    }

    @Test
    void anyOtherFieldMissingOrDifferentIsRefusedByName() {
        Map<String, String> noTrain = new HashMap<>(RUN.metadata());
        noTrain.remove("run.train_examples");
        var e = assertThrows(IllegalArgumentException.class, () -> RUN.check(CKPT, noTrain));
        assertTrue(e.getMessage().contains("train_examples: checkpoint (not recorded), this run 32"), e.getMessage());
        Map<String, String> otherDev = new HashMap<>(RUN.metadata());
        otherDev.put("run.dev_examples", "50");
        e = assertThrows(IllegalArgumentException.class, () -> RUN.check(CKPT, otherDev));
        assertTrue(e.getMessage().contains("dev_examples: checkpoint 50, this run 277"), e.getMessage());
    }
}
