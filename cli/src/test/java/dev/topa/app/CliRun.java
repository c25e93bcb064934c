package dev.topa.app;

import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.io.PrintWriter;
import java.io.StringWriter;

/** Runs the topa command line in-process and keeps what it printed (picocli's streams and System.out/err). */
record CliRun(int code, String out, String err) {
    static CliRun of(String... args) {
        PrintStream stdout = System.out, stderr = System.err;
        ByteArrayOutputStream sysOut = new ByteArrayOutputStream(), sysErr = new ByteArrayOutputStream();
        // the streams are swapped before the command line is made: picocli takes them as it is built
        System.setOut(new PrintStream(sysOut, true));
        System.setErr(new PrintStream(sysErr, true));
        StringWriter out = new StringWriter(), err = new StringWriter();
        try {
            picocli.CommandLine cl = Main.commandLine();
            cl.setOut(new PrintWriter(out, true));
            cl.setErr(new PrintWriter(err, true));
            int code = cl.execute(args);
            return new CliRun(code, sysOut + out.toString(), sysErr + err.toString());
        } finally {
            System.setOut(stdout);
            System.setErr(stderr);
        }
    }

    /** For assertion messages. */
    String printed() {
        return "exit " + code + "\n--- out:\n" + out + "\n--- err:\n" + err;
    }
}
