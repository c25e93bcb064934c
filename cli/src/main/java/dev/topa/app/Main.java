package dev.topa.app;

import dev.topa.dist.Communicator;
import java.io.OutputStream;
import java.io.PrintStream;
import picocli.CommandLine;
import picocli.CommandLine.Command;

/** The topa command line. */
@Command(name = "topa", mixinStandardHelpOptions = true, scope = CommandLine.ScopeType.INHERIT, version = "topa 0.1.0",
        description = "Task-Oriented Pruning-Adapter: fine-tune transformer encoders so that training and inference are both cheap.",
        subcommands = {FinetuneCommand.class, PruneAdaptCommand.class, CompareCommand.class, EvalCommand.class, PredictCommand.class, EncodeCommand.class, ServeCommand.class, LoadTestCommand.class, InfoCommand.class, BenchCommand.class, CommandLine.HelpCommand.class})
public final class Main implements Runnable {
    @CommandLine.Spec
    CommandLine.Model.CommandSpec spec;

    /**
     * The run's processes: one, or the ranks mpirun started (data-parallel training; the other
     * commands simply run on each). Only rank 0 prints to stdout and writes outputs.
     */
    static Communicator processes = Communicator.SINGLE;

    public static void main(String[] args) {
        processes = Communicator.fromEnvironment();
        if (!processes.isRoot()) System.setOut(new PrintStream(OutputStream.nullOutputStream()));
        int code = commandLine().execute(args);
        processes.close();
        System.exit(code);
    }

    public static CommandLine commandLine() {
        CommandLine cl = new CommandLine(new Main()).setCaseInsensitiveEnumValuesAllowed(true);
        RecipeOptions.addTo(cl);
        cl.setExecutionExceptionHandler((ex, cmd, parse) -> {
            Communicator p = processes;
            cmd.getErr().println("topa: " + (p.size() > 1 ? "rank " + p.rank() + " of " + p.size() + ": " : "")
                    + (ex.getMessage() != null ? ex.getMessage() : ex.toString()));
            if (System.getenv("TOPA_DEBUG") != null) ex.printStackTrace(cmd.getErr());
            cmd.getErr().flush();
            if (p.size() > 1) p.abort(1); // every rank stops: the others would wait for this one forever
            return 1;
        });
        return cl;
    }

    @Override
    public void run() {
        spec.commandLine().usage(spec.commandLine().getOut());
    }
}
