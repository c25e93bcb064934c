package dev.topa.train;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.topa.glue.GlueTask;
import dev.topa.model.LoraConfig;
import java.util.Set;
import org.junit.jupiter.api.Test;

class RecipeTest {
    @Test
    void defaultsDifferByTaskSizeAndMethod() {
        Recipe rteLora = Recipe.defaults(GlueTask.RTE, Recipe.Method.LORA), sstLora = Recipe.defaults(GlueTask.SST2, Recipe.Method.LORA);
        Recipe rteFull = Recipe.defaults(GlueTask.RTE, Recipe.Method.FULL);
        assertTrue(rteLora.epochs() > sstLora.epochs(), "small tasks train longer");
        assertTrue(rteLora.lr() > rteFull.lr(), "adapters take a larger learning rate");
        assertTrue(rteLora.recomputeProjections() && !rteFull.recomputeProjections());
        assertEquals(0.1, rteLora.hiddenDropout());
        assertEquals(Set.of(LoraConfig.Target.values()), rteLora.loraTargets());
        assertEquals(rteLora.epochs(), rteLora.trainerConfig(0).epochs());
        assertTrue(rteLora.trainable().test("encoder.layer.0.attention.self.qkv.lora_A"));
        assertFalse(rteLora.trainable().test("encoder.layer.0.intermediate.dense.weight"));
        assertTrue(rteFull.trainable().test("encoder.layer.0.intermediate.dense.weight"));
        assertEquals("lora", rteLora.describe().get("method"));
        assertTrue(rteLora.describe().containsKey("lora_rank") && !rteFull.describe().containsKey("lora_rank"));
    }

    @Test
    void badValuesAreRejectedWithTheField() {
        Recipe d = Recipe.defaults(GlueTask.COLA, Recipe.Method.LORA);
        var e = assertThrows(IllegalArgumentException.class, () -> new Recipe(d.method(), 0, d.lr(), d.batchSize(), d.maxSeqLen(),
                d.warmupRatio(), d.weightDecay(), d.maxGradNorm(), d.hiddenDropout(), d.attentionDropout(), d.loraRank(), d.loraAlpha(),
                d.loraDropout(), d.loraTargets(), d.recomputeProjections(), d.basePrecision(), d.activationPrecision(), d.seed()));
        assertTrue(e.getMessage().contains("epochs"), e.getMessage());
        e = assertThrows(IllegalArgumentException.class, () -> new Recipe(d.method(), 1, d.lr(), d.batchSize(), d.maxSeqLen(),
                d.warmupRatio(), d.weightDecay(), d.maxGradNorm(), 1.0, d.attentionDropout(), d.loraRank(), d.loraAlpha(),
                d.loraDropout(), d.loraTargets(), d.recomputeProjections(), d.basePrecision(), d.activationPrecision(), d.seed()));
        assertTrue(e.getMessage().contains("hidden dropout"), e.getMessage());
        e = assertThrows(IllegalArgumentException.class, () -> new Recipe(d.method(), 1, d.lr(), d.batchSize(), d.maxSeqLen(),
                d.warmupRatio(), d.weightDecay(), d.maxGradNorm(), d.hiddenDropout(), d.attentionDropout(), d.loraRank(), d.loraAlpha(),
                -0.5, d.loraTargets(), d.recomputeProjections(), d.basePrecision(), d.activationPrecision(), d.seed()));
        assertTrue(e.getMessage().contains("LoRA dropout"), e.getMessage());
    }
}
