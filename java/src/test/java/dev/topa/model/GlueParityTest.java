package dev.topa.model;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import ai.onnxruntime.OnnxTensor;
import ai.onnxruntime.OrtEnvironment;
import ai.onnxruntime.OrtSession;
import dev.topa.backend.cpu.CpuBackend;
import dev.topa.io.BertTokenizer;
import dev.topa.io.DefaultModel;
import dev.topa.io.OnnxBertReader;
import dev.topa.tensor.StepArena;
import dev.topa.testing.TestData;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;

/**
 * The default model on real GLUE text (SST-2 sentences, MRPC pairs), tokenized by our tokenizer
 * and batched by length with dynamic padding, against ONNX Runtime fed the same token ids.
 */
class GlueParityTest {
    @Test
    void sst2AndMrpcDevMatchOnnxRuntime() throws Exception {
        Path glue = TestData.glue();
        List<String[]> texts = new ArrayList<>();
        List<String> sst = Files.readAllLines(glue.resolve("SST-2/dev.tsv"));
        for (String line : sst.subList(1, 41)) texts.add(new String[] {line.split("\t")[0], null});
        List<String> mrpc = Files.readAllLines(glue.resolve("MRPC/dev.tsv"));
        for (String line : mrpc.subList(1, 33)) {
            String[] f = line.split("\t");
            texts.add(new String[] {f[3], f[4]});
        }
        assertTrue(texts.size() >= 64);
        Path dir = DefaultModel.directory();
        try (BertModel model = OnnxBertReader.load(dir.resolve("model.onnx"));
                BertTokenizer tok = new BertTokenizer(dir.resolve("tokenizer.json"), 256);
                StepArena arena = new StepArena("glue parity");
                OrtEnvironment env = OrtEnvironment.getEnvironment();
                OrtSession ort = env.createSession(dir.resolve("model.onnx").toString(), new OrtSession.SessionOptions())) {
            List<BertTokenizer.Encoded> enc = new ArrayList<>();
            for (String[] t : texts) enc.add(tok.encode(t[0], t[1]));
            BertTokenizer.Encoded pair = enc.get(40);
            assertEquals(101, pair.ids()[0], "[CLS] first");
            assertTrue(java.util.Arrays.stream(pair.types()).anyMatch(x -> x == 1), "second segment has type 1");
            double worst = 0;
            int hidden = model.config().hidden();
            CpuBackend be = CpuBackend.create();
            model.packForInference(be, false); // the inference path (pre-packed weights); OrtParityTest covers the plain one
            for (int[] idx : BertTokenizer.batchesByLength(enc, 16)) {
                List<BertTokenizer.Encoded> part = new ArrayList<>();
                for (int i : idx) part.add(enc.get(i));
                BertTokenizer.Batch batch = BertTokenizer.pad(part, arena);
                float[] ours = model.forward(be, arena, batch.ids(), batch.types(), batch.mask()).toFloatArray();
                int b = idx.length, s = (int) batch.ids().dim(1);
                long[][] ids = new long[b][s], types = new long[b][s], mask = new long[b][s];
                for (int i = 0; i < b; i++)
                    for (int t = 0; t < s; t++) {
                        ids[i][t] = batch.ids().getInt(i * s + t);
                        types[i][t] = batch.types().getInt(i * s + t);
                        mask[i][t] = batch.mask().getInt(i * s + t);
                    }
                try (OnnxTensor a = OnnxTensor.createTensor(env, ids); OnnxTensor m = OnnxTensor.createTensor(env, mask);
                        OnnxTensor y = OnnxTensor.createTensor(env, types);
                        OrtSession.Result r = ort.run(Map.of("input_ids", a, "attention_mask", m, "token_type_ids", y))) {
                    float[][][] ref = (float[][][]) r.get(0).getValue();
                    for (int i = 0; i < b; i++)
                        for (int t = 0; t < batch.lengths()[i]; t++)
                            for (int e = 0; e < hidden; e++)
                                worst = Math.max(worst, Math.abs(ours[(i * s + t) * hidden + e] - ref[i][t][e]));
                }
                arena.reset();
            }
            assertTrue(worst <= 1e-4, "max |ours - ORT| over " + texts.size() + " GLUE examples = " + worst);
        }
    }

    @Test
    void tokenizerIgnoresTheFileFixedPaddingAndTruncatesPairsLongestFirst() throws IOException {
        Path dir = DefaultModel.directory();
        try (BertTokenizer tok = new BertTokenizer(dir.resolve("tokenizer.json"), 16)) {
            assertEquals(4, tok.encode("hello world", null).length(), "[CLS] hello world [SEP], no padding to 128");
            String longA = "one two three four five six seven eight nine ten eleven twelve", shortB = "yes no";
            BertTokenizer.Encoded e = tok.encode(longA, shortB);
            assertEquals(16, e.length());
            int typeOnes = (int) java.util.Arrays.stream(e.types()).filter(x -> x == 1).count();
            assertEquals(3, typeOnes, "the short second text survives whole (yes no [SEP])");
        }
    }
}
