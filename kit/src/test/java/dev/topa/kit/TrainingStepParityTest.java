package dev.topa.kit;

import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import dev.topa.backend.cpu.CpuBackend;
import dev.topa.backend.cuda.CudaBackend;
import dev.topa.backend.cuda.CudaDriver;
import dev.topa.model.BertConfig;
import dev.topa.tensor.DType;
import org.junit.jupiter.api.Test;

class TrainingStepParityTest {
    private static final BertConfig SMALL = new BertConfig(300, 64, 40, 2, 16, new int[] {4, 2}, new int[] {128, 37}, 1e-12f);

    /** The device path of training (model and head copied, gradients and state from the backend's scopes) with the CPU as the device. */
    @Test
    void aTrainingStepThroughTheDevicePathMatchesTheHostPath() {
        assertTrue(new TrainingStepParity().run(SMALL, CpuBackend.create(), CpuBackend.create(), 3, 17));
        assertTrue(new TrainingStepParity().trainer(SMALL, CpuBackend.create(), CpuBackend.create()));
        // activations kept in bf16 on the device side: within the mixed-precision bound of the f32 host step
        assertTrue(new TrainingStepParity().run(SMALL, CpuBackend.create(), CpuBackend.create(), 3, 17, 2e-2, "bf16_activations", 1, false,
                DType.BF16));
    }

    private static final BertConfig BLOCKABLE = new BertConfig(300, 64, 40, 2, 16, new int[] {4, 2}, new int[] {128, 64}, 1e-12f);

    /** Block-pruned weights with masked adapters: packs made for the device from the copied masks, transposes through the backend. */
    @Test
    void aBlockSparseTrainingStepThroughTheDevicePathMatchesTheHostPath() {
        assertTrue(new TrainingStepParity().run(BLOCKABLE, CpuBackend.create(), CpuBackend.create(), 3, 17, 1e-4, "blocksparse", 0.5, false));
        assertTrue(new TrainingStepParity().run(BLOCKABLE, CpuBackend.create(), CpuBackend.create(), 3, 17, 1e-4, "blockmasked_dense", 0.5, true));
    }

    /** The timing loop of the kit (bf16 frozen base, AdamW on adapters and head) runs through on the CPU. */
    @Test
    void theStepTimingLoopRuns() {
        new TrainingStepParity().timing("tiny", SMALL, CpuBackend.create(), 2, 9, true, DType.BF16);
    }

    @Test
    void aTrainingStepOnTheGpuMatchesTheCpu() {
        assumeTrue(CudaDriver.get().isPresent(), () -> "no GPU: " + CudaDriver.unavailableReason());
        try (CudaBackend gpu = CudaBackend.open(0)) {
            assertTrue(new TrainingStepParity().run(SMALL, CpuBackend.create(), gpu, 3, 17, 2e-2, "mixed"));
            assertTrue(new TrainingStepParity().run(SMALL, CpuBackend.create(), gpu, 3, 17, 2e-2, "mixed_bf16_activations", 1, false, DType.BF16));
            assertTrue(new TrainingStepParity().run(BLOCKABLE, CpuBackend.create(), gpu, 3, 17, 2e-2, "blocksparse", 0.5, false));
            assertTrue(new TrainingStepParity().run(BLOCKABLE, CpuBackend.create(), gpu, 3, 17, 2e-2, "blockmasked_dense", 0.5, true));
        }
    }
}
