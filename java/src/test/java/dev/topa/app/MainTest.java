package dev.topa.app;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.PrintWriter;
import java.io.StringWriter;
import org.junit.jupiter.api.Test;
import picocli.CommandLine;

class MainTest {
    private static String[] run(String... args) {
        CommandLine cl = Main.commandLine();
        StringWriter out = new StringWriter(), err = new StringWriter();
        cl.setOut(new PrintWriter(out));
        cl.setErr(new PrintWriter(err));
        int code = cl.execute(args);
        return new String[] {String.valueOf(code), out.toString(), err.toString()};
    }

    @Test
    void helpListsTheCommands() {
        String[] r = run("--help");
        assertEquals("0", r[0]);
        assertTrue(r[1].contains("bench") && r[1].contains("info"), r[1]);
    }

    @Test
    void unknownIsaIsAClearError() {
        String[] r = run("bench", "kernels", "--isa", "avx9000", "--m", "8", "--iterations", "1");
        assertEquals("2", r[0]);
        assertTrue(r[2].contains("--isa") && r[2].contains("avx9000") && r[2].contains("AVX512"), r[2]);
    }
}
