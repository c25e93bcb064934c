package dev.topa.serve;

import ai.onnxruntime.OnnxTensor;
import ai.onnxruntime.OrtEnvironment;
import ai.onnxruntime.OrtException;
import ai.onnxruntime.OrtSession;
import dev.topa.glue.GlueTask;
import dev.topa.io.BertTokenizer;
import dev.topa.io.Safetensors;
import dev.topa.model.TaskHead;
import dev.topa.train.FineTunedModel;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;

/**
 * The serving baseline (bench/serve-load.sh): ONNX Runtime's Java API runs a dense BERT encoder
 * exported to ONNX, then the same mean-pool + linear head as topa's, behind the same PredictServer.
 * One session, calls serialised (ORT parallelises inside a call, as topa's kernels do).
 */
final class OrtModel implements TextModel, AutoCloseable {
    private final OrtEnvironment env = OrtEnvironment.getEnvironment();
    private final OrtSession session;
    private final BertTokenizer tokenizer;
    private final GlueTask task;
    private final float[] weight, bias;
    private final int outputs;

    /** onnx: the encoder; modelDir: a topa fine-tuned model whose task, head and tokenizer are used. */
    OrtModel(Path onnx, Path modelDir, int threads) throws Exception {
        OrtSession.SessionOptions o = new OrtSession.SessionOptions();
        o.setIntraOpNumThreads(threads);
        o.setOptimizationLevel(OrtSession.SessionOptions.OptLevel.ALL_OPT);
        o.addConfigEntry("session.intra_op.allow_spinning", "0"); // as topa serve's passive OpenMP threads: no spinning between calls
        session = env.createSession(onnx.toString(), o);
        com.fasterxml.jackson.databind.JsonNode t = new com.fasterxml.jackson.databind.ObjectMapper().readTree(modelDir.resolve(FineTunedModel.TASK).toFile());
        task = GlueTask.valueOf(t.get("task").asText());
        tokenizer = new BertTokenizer(modelDir.resolve(FineTunedModel.TOKENIZER), t.get("max_seq_len").asInt());
        try (Safetensors st = Safetensors.read(modelDir.resolve(FineTunedModel.HEAD))) {
            weight = st.entries().get(TaskHead.WEIGHT).floats(modelDir.resolve(FineTunedModel.HEAD));
            bias = st.entries().get(TaskHead.BIAS).floats(modelDir.resolve(FineTunedModel.HEAD));
        }
        outputs = bias.length;
    }

    @Override
    public GlueTask task() {
        return task;
    }

    @Override
    public synchronized List<Classifier.Prediction> predictBatch(List<Classifier.Input> inputs) {
        Classifier.checkInputs(task, inputs);
        List<BertTokenizer.Encoded> enc = new ArrayList<>();
        for (Classifier.Input in : inputs) enc.add(tokenizer.encode(in.text(), in.pair()));
        int b = enc.size(), s = enc.stream().mapToInt(BertTokenizer.Encoded::length).max().orElse(1);
        long[][] ids = new long[b][s], types = new long[b][s], mask = new long[b][s];
        for (int i = 0; i < b; i++)
            for (int k = 0; k < enc.get(i).length(); k++) {
                ids[i][k] = enc.get(i).ids()[k];
                types[i][k] = enc.get(i).types()[k];
                mask[i][k] = 1;
            }
        try (OnnxTensor a = OnnxTensor.createTensor(env, ids); OnnxTensor m = OnnxTensor.createTensor(env, mask);
                OnnxTensor y = OnnxTensor.createTensor(env, types);
                OrtSession.Result r = session.run(Map.of("input_ids", a, "attention_mask", m, "token_type_ids", y))) {
            float[][][] h = (float[][][]) r.get(0).getValue();
            List<Classifier.Prediction> out = new ArrayList<>(b);
            int c = h[0][0].length;
            for (int i = 0; i < b; i++) {
                float[] pooled = new float[c];
                int n = enc.get(i).length();
                for (int k = 0; k < n; k++) for (int e = 0; e < c; e++) pooled[e] += h[i][k][e] / n;
                float[] logits = new float[outputs];
                for (int o = 0; o < outputs; o++) {
                    float z = bias[o];
                    for (int e = 0; e < c; e++) z += weight[o * c + e] * pooled[e];
                    logits[o] = z;
                }
                out.add(Classifier.prediction(task, logits));
            }
            return out;
        } catch (OrtException e) {
            throw new IllegalStateException("ONNX Runtime: " + e.getMessage(), e);
        }
    }

    @Override
    public void close() throws Exception {
        session.close();
        tokenizer.close();
    }
}
