package dev.topa.app;

import dev.topa.backend.Backend;
import dev.topa.io.BertTokenizer;
import dev.topa.train.FineTunedModel;
import dev.topa.train.NonFiniteOutputException;
import dev.topa.train.Predictor;
import java.nio.file.Path;
import java.util.List;
import java.util.Locale;
import java.util.concurrent.Callable;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;
import picocli.CommandLine.Parameters;

@Command(name = "predict", description = "Predict with a model written by topa finetune: label and probabilities, or the value.")
final class PredictCommand implements Callable<Integer> {
    @picocli.CommandLine.Mixin
    DeviceOption device;

    @Option(names = "--model", required = true, description = "a directory written by topa finetune")
    Path model;

    @Parameters(index = "0", description = "the text")
    String text;

    @Parameters(index = "1", arity = "0..1", description = "the second text of a pair task")
    String textB;

    @Override
    public Integer call() {
        try (FineTunedModel.Loaded ft = FineTunedModel.load(model);
                BertTokenizer tok = new BertTokenizer(ft.tokenizer(), ft.maxSeqLen());
                Backend be = device.backend(); Predictor p = new Predictor(be, ft.model(), ft.head())) {
            if (ft.task().isPair() != (textB != null))
                throw new IllegalArgumentException(ft.task().folder() + (ft.task().isPair() ? " needs two texts" : " takes one text"));
            float[] out;
            try {
                out = p.outputs(List.of(tok.encode(text, textB)), 1)[0];
            } catch (NonFiniteOutputException e) {
                throw e.as(0, "the text \"" + EvalCommand.abbreviate(text) + "\"");
            }
            if (ft.task().isRegression()) {
                System.out.printf(Locale.ROOT, "value: %.4f%n", out[0]);
                return 0;
            }
            double max = Double.NEGATIVE_INFINITY, sum = 0;
            for (float v : out) max = Math.max(max, v);
            double[] prob = new double[out.length];
            for (int i = 0; i < out.length; i++) sum += prob[i] = Math.exp(out[i] - max);
            int best = Predictor.argmax(out);
            System.out.println("label: " + ft.task().labels().get(best));
            for (int i = 0; i < out.length; i++)
                System.out.printf(Locale.ROOT, "p(%s): %.4f%n", ft.task().labels().get(i), prob[i] / sum);
        }
        return 0;
    }
}
