package dev.topa.app;

import picocli.CommandLine;
import picocli.CommandLine.Command;

/** The topa command line. */
@Command(name = "topa", mixinStandardHelpOptions = true, scope = CommandLine.ScopeType.INHERIT, version = "topa 0.1.0",
        description = "Task-Oriented Pruning-Adapter: fine-tune transformer encoders so that training and inference are both cheap.",
        subcommands = {FinetuneCommand.class, PruneAdaptCommand.class, CompareCommand.class, EvalCommand.class, PredictCommand.class, EncodeCommand.class, ServeCommand.class, LoadTestCommand.class, InfoCommand.class, BenchCommand.class, CommandLine.HelpCommand.class})
public final class Main implements Runnable {
    @CommandLine.Spec
    CommandLine.Model.CommandSpec spec;

    public static void main(String[] args) {
        System.exit(commandLine().execute(args));
    }

    public static CommandLine commandLine() {
        CommandLine cl = new CommandLine(new Main()).setCaseInsensitiveEnumValuesAllowed(true);
        RecipeOptions.addTo(cl);
        cl.setExecutionExceptionHandler((ex, cmd, parse) -> {
            cmd.getErr().println("topa: " + (ex.getMessage() != null ? ex.getMessage() : ex.toString()));
            if (System.getenv("TOPA_DEBUG") != null) ex.printStackTrace(cmd.getErr());
            return 1;
        });
        return cl;
    }

    @Override
    public void run() {
        spec.commandLine().usage(spec.commandLine().getOut());
    }
}
