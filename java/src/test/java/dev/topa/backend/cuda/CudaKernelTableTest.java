package dev.topa.backend.cuda;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.junit.jupiter.api.Test;

/**
 * Every CUDA kernel's declaration ({@link CudaKernel}) against the parameter list nvcc compiled:
 * the PTX .entry of each kernel (built beside the fatbin when the build had nvcc), widths and
 * float-ness; on a GPU the same check runs when the backend binds a kernel (cuFuncGetParamInfo).
 */
class CudaKernelTableTest {
    private static final Path PTX = Path.of("target/native-build/topa_kernels.ptx");
    private static final Path PTXAS = Path.of("target/native-build/topa_kernels.ptxas.txt");

    /** kernel -> PTX parameter types (u64, u32, f32, ...). */
    static Map<String, List<String>> entries(String ptx) {
        Map<String, List<String>> out = new HashMap<>();
        Matcher m = Pattern.compile("\\.visible \\.entry (\\w+)\\(\\s*(.*?)\\)", Pattern.DOTALL).matcher(ptx);
        while (m.find()) {
            List<String> types = new ArrayList<>();
            Matcher p = Pattern.compile("\\.param \\.(\\w+)").matcher(m.group(2));
            while (p.find()) types.add(p.group(1));
            out.put(m.group(1), types);
        }
        return out;
    }

    @Test
    void everyKernelIsDeclaredAsCompiled() throws Exception {
        assumeTrue(Files.isRegularFile(PTX), "this build had no nvcc: no PTX to check the declarations against");
        Map<String, List<String>> ptx = entries(Files.readString(PTX));
        assertEquals(ptx.size(), CudaKernel.values().length, "kernels in the PTX " + ptx.keySet());
        for (CudaKernel k : CudaKernel.values()) {
            List<String> params = ptx.get(k.symbol());
            assertTrue(params != null, k + " is not in the PTX");
            CudaKernel.Arg[] args = k.args();
            assertEquals(params.size(), args.length, k + ": parameters " + params);
            for (int i = 0; i < args.length; i++) {
                String t = params.get(i);
                boolean ok = switch (args[i]) {
                    case PTR, I64 -> t.equals("u64") || t.equals("s64") || t.equals("b64");
                    case I32 -> t.equals("u32") || t.equals("s32") || t.equals("b32");
                    case F32 -> t.equals("f32");
                };
                assertTrue(ok, k + ": argument " + i + " is ." + t + " in the PTX, declared " + args[i]);
            }
        }
    }

    /** ptxas's report of the fatbin build: no kernel, on any architecture built, spills registers or keeps a stack frame. */
    @Test
    void noKernelSpillsOnAnyArchitecture() throws Exception {
        assumeTrue(Files.isRegularFile(PTXAS), "this build had no nvcc: no ptxas report to read");
        Matcher m = Pattern.compile("Compiling entry function '(\\w+)' for '(\\w+)'\\s+ptxas info\\s+: Function properties for \\w+\\s+"
                + "(\\d+) bytes stack frame, (\\d+) bytes spill stores, (\\d+) bytes spill loads").matcher(Files.readString(PTXAS));
        int kernels = 0;
        List<String> bad = new ArrayList<>();
        while (m.find()) {
            kernels++;
            if (!m.group(3).equals("0") || !m.group(4).equals("0") || !m.group(5).equals("0"))
                bad.add(m.group(1) + " on " + m.group(2) + ": " + m.group(3) + " B stack, " + m.group(4) + "/" + m.group(5) + " B spilled");
        }
        assertEquals(2 * CudaKernel.values().length, kernels, "a report per kernel for sm_80 and sm_90a");
        assertTrue(bad.isEmpty(), String.join("\n", bad));
    }

    @Test
    void launchesAndBindingsAreHeldToTheDeclaration() {
        CudaKernel k = CudaKernel.TRANSPOSE_F32; // (out, in, rows, cols, beta)
        k.checkLaunch(new Object[] {1L, null, 3, 4, 0.5f});
        var e = assertThrows(IllegalArgumentException.class, () -> k.checkLaunch(new Object[] {1L, 2L, 3L, 4, 0.5f}));
        assertTrue(e.getMessage().contains("argument 2") && e.getMessage().contains("I32"), e.getMessage());
        var e2 = assertThrows(IllegalArgumentException.class, () -> k.checkLaunch(new Object[] {1L, 2L, 3}));
        assertTrue(e2.getMessage().contains("3 launch arguments"), e2.getMessage());
        k.checkBinding(new long[] {8, 8, 4, 4, 4});
        var e3 = assertThrows(IllegalStateException.class, () -> k.checkBinding(new long[] {8, 8, 8, 4, 4}));
        assertTrue(e3.getMessage().contains("transpose_f32"), e3.getMessage());
    }
}
