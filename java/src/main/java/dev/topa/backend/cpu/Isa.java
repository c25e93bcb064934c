package dev.topa.backend.cpu;

/** The instruction sets the native kernels are built for, in the order of the C TOPA_ISA_* codes. */
public enum Isa {
    SCALAR, AVX2, AVX512;

    public String suffix() {
        return "_" + name().toLowerCase(java.util.Locale.ROOT);
    }

    /** The best ISA this CPU and OS support, as the native CPUID check sees it. */
    public static Isa best() {
        return values()[CpuKernels.bestIsa()];
    }

    public boolean supported() {
        return ordinal() <= best().ordinal();
    }
}
