package dev.topa.backend.cpu;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

import java.lang.foreign.MemoryLayout;
import java.lang.foreign.ValueLayout;
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
 * The Java declaration of every CPU kernel ({@link CpuKernel}) against its C prototype in
 * native/topa_cpu.h: the same arguments, in order, of the same widths (a mismatch would pass the
 * wrong bits to the kernel, silently).
 */
class CpuKernelTableTest {
    private static final Pattern PROTOTYPE = Pattern.compile(
            "^(void|int|int64_t|float|double)\\s+(?:TOPA_FN\\((\\w+)\\)|topa_(\\w+))\\s*\\(([^)]*)\\)\\s*;", Pattern.MULTILINE);

    /** name (without topa_ and the ISA suffix) -> {return, args...} as layouts (null: void). */
    static Map<String, List<MemoryLayout>> prototypes(String header) {
        String code = header.replaceAll("(?s)/\\*.*?\\*/", "");
        Map<String, List<MemoryLayout>> out = new HashMap<>();
        Matcher m = PROTOTYPE.matcher(code);
        while (m.find()) {
            List<MemoryLayout> sig = new ArrayList<>();
            sig.add(layout(m.group(1)));
            for (String p : m.group(4).split(",")) {
                String param = p.trim();
                if (param.isEmpty() || param.equals("void")) continue;
                sig.add(param.contains("*") ? ValueLayout.ADDRESS : layout(param.replaceAll("\\s+\\w+$", "").replace("const ", "").trim()));
            }
            out.put(m.group(2) != null ? m.group(2) : m.group(3), sig);
        }
        return out;
    }

    private static MemoryLayout layout(String c) {
        return switch (c) {
            case "void" -> null;
            case "int", "uint32_t", "int32_t" -> ValueLayout.JAVA_INT;
            case "int64_t" -> ValueLayout.JAVA_LONG;
            case "float" -> ValueLayout.JAVA_FLOAT;
            case "double" -> ValueLayout.JAVA_DOUBLE;
            default -> throw new AssertionError("a C type the table does not know: " + c);
        };
    }

    @Test
    void everyKernelIsDeclaredAsTheHeaderDeclaresIt() throws Exception {
        Map<String, List<MemoryLayout>> c = prototypes(Files.readString(Path.of("../native/topa_cpu.h")));
        assertTrue(c.size() > 30, "parsed " + c.size() + " prototypes from topa_cpu.h");
        for (CpuKernel k : CpuKernel.values()) {
            List<MemoryLayout> proto = c.get(k.symbol().substring("topa_".length()));
            if (proto == null) fail(k + ": no prototype " + k.symbol() + " in topa_cpu.h");
            List<MemoryLayout> java = new ArrayList<>();
            java.add(k.descriptor().returnLayout().orElse(null));
            java.addAll(k.descriptor().argumentLayouts());
            assertEquals(proto.size(), java.size(), k + ": " + (proto.size() - 1) + " C arguments, " + (java.size() - 1) + " declared");
            for (int i = 0; i < proto.size(); i++)
                assertEquals(proto.get(i) == null ? null : proto.get(i).withoutName(), java.get(i) == null ? null : java.get(i).withoutName(),
                        k + (i == 0 ? ": return type" : ": argument " + (i - 1)));
        }
    }

    @Test
    void aMismatchIsCaught() {
        var p = prototypes("int TOPA_FN(sgemm)(int transA, float alpha, const float *A);\nvoid topa_set_num_threads(int n);\n");
        assertEquals(List.of(ValueLayout.JAVA_INT, ValueLayout.JAVA_INT, ValueLayout.JAVA_FLOAT, ValueLayout.ADDRESS), p.get("sgemm"));
        assertEquals(2, p.get("set_num_threads").size());
    }
}
