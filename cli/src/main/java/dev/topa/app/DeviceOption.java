package dev.topa.app;

import dev.topa.backend.Backend;
import dev.topa.backend.cpu.CpuBackend;
import dev.topa.backend.cuda.CudaBackend;
import java.util.function.IntFunction;
import picocli.CommandLine.Option;

/** The --device option of the commands that run the encoder (a picocli mixin). */
final class DeviceOption {
    enum Kind { cpu, cuda }

    /**
     * What {@code --device cuda} opens. A test puts the CPU in its place, withholding what CUDA
     * declares unsupported, to walk every command's CUDA defaults on a machine without a GPU.
     */
    static IntFunction<Backend> cuda = CudaBackend::open;

    @Option(names = "--device", defaultValue = "cpu",
            description = "cpu, or cuda (the first NVIDIA GPU: bf16 tensor-core products, fp32 accumulation) (default: ${DEFAULT-VALUE})")
    Kind device;

    /** The backend to run on; cuda without a usable GPU fails here with the reason. */
    Backend backend() {
        return device == Kind.cuda ? cuda.apply(0) : CpuBackend.create();
    }
}
