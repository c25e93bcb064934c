package dev.topa.app;

import dev.topa.backend.Backend;
import dev.topa.backend.cpu.CpuBackend;
import dev.topa.backend.cuda.CudaBackend;
import dev.topa.backend.opencl.OpenClBackend;
import dev.topa.dist.Communicator;
import java.util.Locale;
import java.util.function.IntFunction;
import picocli.CommandLine.ITypeConverter;
import picocli.CommandLine.Option;
import picocli.CommandLine.TypeConversionException;

/** The --device option of the commands that run the encoder (a picocli mixin): cpu, cuda[:N] or opencl[:N]. */
final class DeviceOption {
    enum Kind { cpu, cuda, opencl }

    /** A device kind and its index among the devices of that kind. */
    record Choice(Kind kind, int index) {}

    /**
     * What {@code --device cuda} opens. A test puts the CPU in its place, withholding what CUDA
     * declares unsupported, to walk every command's CUDA defaults on a machine without a GPU.
     */
    static IntFunction<Backend> cuda = CudaBackend::open;

    @Option(names = "--device", defaultValue = "cpu", converter = Parser.class, paramLabel = "DEVICE",
            description = "cpu; cuda[:N] (NVIDIA GPU N, default 0: bf16 tensor-core products, fp32 accumulation); or opencl[:N] (OpenCL "
                    + "device N of every platform, in `topa info`'s order: GPUs of any vendor, or the CPU through PoCL; fp32, a bf16 frozen base where measured faster) "
                    + "(default: ${DEFAULT-VALUE})")
    Choice device = new Choice(Kind.cpu, 0);

    /** Whether the NVIDIA GPU path (its recipe defaults: bf16 base and activations) was asked for. */
    boolean cuda() {
        return device.kind() == Kind.cuda;
    }

    /** Whether tensors live in host memory (the CPU backend). */
    boolean host() {
        return device.kind() == Kind.cpu;
    }

    /** The option's value as the command line spells it (for a child process). */
    String spec() {
        return device.kind() == Kind.cpu ? "cpu" : device.kind() + ":" + device.index();
    }

    /**
     * Training across processes sums gradients with MPI in host memory, so it runs on the CPU: said
     * before any rank opens a device or loads a model.
     */
    void checkTrainingAcross(Communicator processes) {
        if (processes.size() > 1 && !host())
            throw new IllegalArgumentException("--device " + spec() + ": training across " + processes.size() + " processes runs on the CPU"
                    + " (the ranks sum their gradients with MPI in host memory); use --device cpu");
    }

    /** The backend to run on; a device that is not there fails here, before any work, with the reason. */
    Backend backend() {
        return switch (device.kind()) {
            case cpu -> CpuBackend.create();
            case cuda -> cuda.apply(device.index());
            case opencl -> OpenClBackend.open(device.index());
        };
    }

    static final class Parser implements ITypeConverter<Choice> {
        @Override
        public Choice convert(String value) {
            String v = value.trim().toLowerCase(Locale.ROOT);
            int colon = v.indexOf(':');
            String kind = colon < 0 ? v : v.substring(0, colon);
            Kind k;
            try {
                k = Kind.valueOf(kind);
            } catch (IllegalArgumentException e) {
                throw new TypeConversionException("cpu, cuda[:N] or opencl[:N], got '" + value + "'");
            }
            if (colon < 0) return new Choice(k, 0);
            if (k == Kind.cpu) throw new TypeConversionException("cpu takes no index, got '" + value + "'");
            try {
                int index = Integer.parseInt(v.substring(colon + 1));
                if (index < 0) throw new NumberFormatException();
                return new Choice(k, index);
            } catch (NumberFormatException e) {
                throw new TypeConversionException("the device index is a whole number >= 0, got '" + value + "'");
            }
        }
    }
}
