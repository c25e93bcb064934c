package dev.topa.app;

import dev.topa.backend.cpu.CpuKernels;
import dev.topa.backend.cpu.Isa;
import dev.topa.backend.cpu.NativeLibrary;
import java.util.concurrent.Callable;
import picocli.CommandLine.Command;

@Command(name = "info", description = "Print the runtime: JDK, native library, CPU ISA and threads.")
final class InfoCommand implements Callable<Integer> {
    @Override
    public Integer call() {
        System.out.println("java: " + Runtime.version());
        System.out.println("native library: " + NativeLibrary.get().path());
        System.out.println("cpu isa: " + Isa.best().name().toLowerCase());
        System.out.println("threads: " + CpuKernels.numThreads());
        return 0;
    }
}
