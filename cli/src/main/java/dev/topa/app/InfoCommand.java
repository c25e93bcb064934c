package dev.topa.app;

import dev.topa.backend.PrecisionChoice;
import dev.topa.backend.cpu.CpuBackend;
import dev.topa.backend.cpu.CpuKernels;
import dev.topa.backend.cpu.Isa;
import dev.topa.backend.cpu.NativeLibrary;
import dev.topa.backend.opencl.OpenCl;
import dev.topa.backend.opencl.OpenClBackend;
import dev.topa.model.BertConfig;
import dev.topa.model.BertModel;
import java.util.List;
import java.util.Locale;
import java.util.concurrent.Callable;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;

@Command(name = "info", description = {"Print the runtime: JDK, native library, CPU ISA, threads, and which precision the frozen",
        "and packed linear weights multiply in here (measured on the default model's shapes, batch 32 x 128 tokens; cached)."})
final class InfoCommand implements Callable<Integer> {
    @Mixin
    ThreadsOption threads;

    @Override
    public Integer call() {
        threads.apply();
        System.out.println("java: " + Runtime.version());
        System.out.println("native library: " + NativeLibrary.get().path());
        System.out.println("cpu isa: " + Isa.best().name().toLowerCase(Locale.ROOT) + (CpuKernels.hasAvx512Bf16() ? " (avx512_bf16)" : ""));
        System.out.println("threads: " + CpuKernels.numThreads());
        List<String> opencl = OpenClBackend.devices(); // --device opencl:N picks line N
        if (opencl.isEmpty()) System.out.println("opencl: none (" + OpenCl.unavailableReason() + ")");
        for (String d : opencl) System.out.println("opencl " + d);
        BertConfig miniLm = BertConfig.uniform(30522, 384, 6, 12, 1536, 512, 2, 1e-12f);
        try (CpuBackend be = CpuBackend.create()) {
            for (PrecisionChoice.Use use : PrecisionChoice.Use.values())
                System.out.println(use.name().toLowerCase(Locale.ROOT) + " linears: "
                        + PrecisionChoice.choose(be, use, BertModel.linearShapes(miniLm, 32 * 128)).describe());
        }
        return 0;
    }
}
