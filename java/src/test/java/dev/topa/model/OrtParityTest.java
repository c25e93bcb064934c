package dev.topa.model;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import ai.onnxruntime.OnnxTensor;
import ai.onnxruntime.OrtEnvironment;
import ai.onnxruntime.OrtSession;
import dev.topa.backend.cpu.CpuBackend;
import dev.topa.io.DefaultModel;
import dev.topa.io.OnnxBertReader;
import dev.topa.tensor.DType;
import dev.topa.tensor.StepArena;
import dev.topa.tensor.Tensor;
import java.nio.file.Path;
import java.util.Map;
import java.util.SplittableRandom;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

/** BERT ONNX exports of the Hugging Face style, each against ONNX Runtime on the same ids. */
class OrtParityTest {
    @ParameterizedTest
    @CsvSource({"all-minilm-l6-v2, 6, 1536", "bge-small-en-v1.5, 12, 1536"})
    void bundledExportsMatchOnnxRuntimeOnRandomTokens(String name, int layers, int ffn) throws Exception {
        Path dir = DefaultModel.bundled(name);
        try (BertModel model = OnnxBertReader.load(dir.resolve("model.onnx"));
                StepArena arena = new StepArena("parity");
                OrtEnvironment env = OrtEnvironment.getEnvironment();
                OrtSession ort = env.createSession(dir.resolve("model.onnx").toString(), new OrtSession.SessionOptions())) {
            BertConfig c = model.config();
            assertEquals(384, c.hidden());
            assertEquals(layers, c.layers());
            assertEquals(12, c.heads(0));
            assertEquals(ffn, c.ffn(0));
            int b = 3, s = 17;
            SplittableRandom rnd = new SplittableRandom(5);
            long[][] ids = new long[b][s], types = new long[b][s], mask = new long[b][s];
            int[] fid = new int[b * s], ftype = new int[b * s], fmask = new int[b * s];
            for (int i = 0; i < b; i++) {
                int len = s - 4 * i;
                for (int t = 0; t < s; t++) {
                    ids[i][t] = t < len ? rnd.nextInt(1000, 30000) : 0;
                    types[i][t] = t < len / 2 ? 0 : 1;
                    mask[i][t] = t < len ? 1 : 0;
                    fid[i * s + t] = (int) ids[i][t];
                    ftype[i * s + t] = (int) types[i][t];
                    fmask[i * s + t] = (int) mask[i][t];
                }
            }
            Tensor tid = arena.allocate(DType.I32, b, s).copyFrom(fid), ttype = arena.allocate(DType.I32, b, s).copyFrom(ftype);
            Tensor tmask = arena.allocate(DType.I32, b, s).copyFrom(fmask);
            float[] ours = model.forward(CpuBackend.create(), arena, tid, ttype, tmask).toFloatArray();
            try (OnnxTensor i1 = OnnxTensor.createTensor(env, ids); OnnxTensor i2 = OnnxTensor.createTensor(env, mask);
                    OnnxTensor i3 = OnnxTensor.createTensor(env, types);
                    OrtSession.Result r = ort.run(Map.of("input_ids", i1, "attention_mask", i2, "token_type_ids", i3))) {
                float[][][] ref = (float[][][]) r.get(0).getValue();
                double maxDiff = 0;
                for (int i = 0; i < b; i++)
                    for (int t = 0; t < s; t++) {
                        if (mask[i][t] == 0) continue;
                        for (int e = 0; e < c.hidden(); e++)
                            maxDiff = Math.max(maxDiff, Math.abs(ours[(i * s + t) * c.hidden() + e] - ref[i][t][e]));
                    }
                assertTrue(maxDiff <= 1e-4, name + ": max |ours - ORT| = " + maxDiff);
                System.out.println(name + ": max |ours - ORT| = " + maxDiff);
            }
        }
    }
}
