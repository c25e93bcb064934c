package dev.topa.prune;

import static org.junit.jupiter.api.Assertions.assertEquals;

import org.junit.jupiter.api.Test;

/** The pipeline's choices that need no training: which units go, which layers get the high LoRA rank. */
class PruningAdapterTest {
    @Test
    void layerRanksFollowHeadImportanceByExactLayerIndex() {
        // layer 2 holds the most important heads, then layer 0; a substring match would confuse 1 and 11
        double[][] scores = new double[12][];
        for (int l = 0; l < 12; l++) scores[l] = new double[] {0.1 * (l % 3), 0.05};
        scores[2] = new double[] {0.99, 0.98};
        scores[0] = new double[] {0.97, 0.96};
        scores[11] = new double[] {0.95, 0.94};
        scores[1] = new double[] {0.93, 0.92};
        var ranks = PruningAdapter.layerRanks(scores, 8, 4);
        assertEquals(java.util.List.of(8, 8, 8, 4, 4, 4, 4, 4, 4, 4, 4, 8), ranks);
    }

    @Test
    void perLayerFloorsWinOverTheGlobalFraction() {
        double[][] scores = {{0.1, 0.2, 0.3}, {0.9, 0.8, 0.7}};
        boolean[][] k = PruningAdapter.keep(scores, 0.5, 2);
        assertEquals(java.util.List.of(false, true, true), java.util.List.of(k[0][0], k[0][1], k[0][2]), "layer 0 stops at its floor of 2");
        assertEquals(java.util.List.of(true, true, false), java.util.List.of(k[1][0], k[1][1], k[1][2]), "the rest comes from layer 1");
        boolean[][] none = PruningAdapter.keep(scores, 0.5, 0);
        assertEquals(0, java.util.stream.IntStream.range(0, 3).filter(i -> none[0][i]).count(), "without a floor layer 0 goes entirely");
    }

    @Test
    void optionCombinationsThatCannotRunAreRefusedBeforeAnyLoading() {
        var e = org.junit.jupiter.api.Assertions.assertThrows(IllegalArgumentException.class, () -> new PruningAdapter.Config(
                PruningAdapter.Preset.PAPER, false, 0.5, PruningAdapter.Structure.BLOCKS, PruningAdapter.Schedule.ONESHOT, 0.6, 0, 0,
                ImportanceScores.Scorer.TAYLOR, 512, 0, 0));
        org.junit.jupiter.api.Assertions.assertTrue(e.getMessage().contains("topa recipe"), e.getMessage());
        var e2 = org.junit.jupiter.api.Assertions.assertThrows(IllegalArgumentException.class, () -> new PruningAdapter.Config(
                PruningAdapter.Preset.TOPA, false, 1.0, PruningAdapter.Structure.HEADS, PruningAdapter.Schedule.ONESHOT, 0.6, 0, 0,
                ImportanceScores.Scorer.TAYLOR, 512, 0, 0));
        org.junit.jupiter.api.Assertions.assertTrue(e2.getMessage().contains("--sparsity"), e2.getMessage());
    }
}
