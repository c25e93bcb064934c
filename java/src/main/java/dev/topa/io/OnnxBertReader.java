package dev.topa.io;

import dev.topa.model.BertConfig;
import dev.topa.model.BertModel;
import dev.topa.tensor.Tensor;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.HashMap;
import java.util.Map;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * Loads a BERT encoder from an ONNX export of the Hugging Face / torch.onnx style. Embeddings,
 * LayerNorm parameters and biases are initializers with Hugging Face names; the linear weights are
 * anonymous ({@code onnx::MatMul_NNN}, stored [in, out]) and are named here by the MatMul node
 * that uses them ({@code /encoder/layer.0/attention/self/query/MatMul} ->
 * {@code encoder.layer.0.attention.self.query.weight}) and transposed. The config is read from
 * shapes (vocab, hidden, layers, FFN widths) and graph constants (heads and head size from the
 * attention Reshape, LayerNorm eps from its Add or LayerNormalization node).
 */
public final class OnnxBertReader {
    private static final Pattern LAYER = Pattern.compile("encoder\\.layer\\.(\\d+)\\.");

    private OnnxBertReader() {}

    public static BertModel load(Path file) {
        try (OnnxGraph g = OnnxGraph.read(file)) {
            Map<String, OnnxGraph.Tensor> named = new HashMap<>();
            Map<String, Boolean> transposed = new HashMap<>();
            g.initializers().forEach((k, v) -> named.put(hfName(k), v));
            for (OnnxGraph.Node n : g.nodes()) {
                if (!n.opType().equals("MatMul") || n.inputs().size() != 2 || !n.name().endsWith("/MatMul")) continue;
                OnnxGraph.Tensor w = g.initializers().get(n.inputs().get(1));
                if (w == null || w.dims().length != 2) continue;
                String name = hfName(n.name().substring(1, n.name().length() - "/MatMul".length()).replace('/', '.') + ".weight");
                named.put(name, w);
                transposed.put(name, true);
            }
            BertConfig config = inferConfig(g, named);
            BertModel model = new BertModel(config);
            try {
                for (Map.Entry<String, Tensor> p : model.parameters().entrySet()) {
                    OnnxGraph.Tensor src = named.get(p.getKey());
                    if (src == null)
                        throw new ModelFormatException(file + ": no tensor for " + p.getKey() + " (neither an initializer "
                                + "of that name nor a MatMul node that names it)");
                    copy(file, p.getKey(), src, p.getValue(), transposed.getOrDefault(p.getKey(), false));
                }
            } catch (RuntimeException e) {
                model.close();
                throw e;
            }
            return model;
        }
    }

    static String hfName(String name) {
        return name.startsWith("bert.") ? name.substring(5) : name;
    }

    private static void copy(Path file, String name, OnnxGraph.Tensor src, Tensor dst, boolean transpose) {
        long[] want = dst.shape();
        long[] have = transpose ? new long[] {src.dims()[1], src.dims()[0]} : src.dims();
        if (!Arrays.equals(want, have))
            throw new ModelFormatException(file + ": tensor " + name + " is " + Arrays.toString(src.dims())
                    + (transpose ? " ([in, out] of a MatMul)" : "") + ", the config needs " + Arrays.toString(want));
        float[] v = WeightConversion.toFloats(file, name, src.dataType() == OnnxGraph.FLOAT ? "F32"
                : src.dataType() == OnnxGraph.FLOAT16 ? "F16" : src.dataType() == OnnxGraph.BFLOAT16 ? "BF16" : "type "
                + src.dataType(), src.bytes(), src.numel());
        if (transpose) {
            int in = (int) src.dims()[0], out = (int) src.dims()[1];
            float[] t = new float[v.length];
            for (int i = 0; i < in; i++)
                for (int o = 0; o < out; o++) t[o * in + i] = v[i * out + o];
            v = t;
        }
        dst.copyFrom(v);
    }

    private static BertConfig inferConfig(OnnxGraph g, Map<String, OnnxGraph.Tensor> named) {
        Path file = g.file();
        OnnxGraph.Tensor wte = require(file, named, "embeddings.word_embeddings.weight");
        OnnxGraph.Tensor wpe = require(file, named, "embeddings.position_embeddings.weight");
        OnnxGraph.Tensor wtt = named.get("embeddings.token_type_embeddings.weight");
        int layers = 0;
        for (String k : named.keySet()) {
            Matcher m = LAYER.matcher(k);
            if (m.lookingAt()) layers = Math.max(layers, Integer.parseInt(m.group(1)) + 1);
        }
        if (layers == 0) throw new ModelFormatException(file + ": no encoder.layer.N tensors: not a BERT export");
        int[] heads = new int[layers], ffn = new int[layers];
        int headDim = -1;
        for (int l = 0; l < layers; l++) {
            int width = (int) require(file, named, "encoder.layer." + l + ".attention.self.query.bias").dims()[0];
            ffn[l] = (int) require(file, named, "encoder.layer." + l + ".intermediate.dense.bias").dims()[0];
            int d = headSize(g, l);
            if (d <= 0 || width % d != 0)
                throw new ModelFormatException(file + ": cannot read the head size of layer " + l + " from the attention "
                        + "Reshape or scale constants");
            if (headDim > 0 && d != headDim)
                throw new ModelFormatException(file + ": layer " + l + " has head size " + d + ", earlier layers " + headDim);
            headDim = d;
            heads[l] = width / d;
        }
        return new BertConfig((int) wte.dims()[0], (int) wte.dims()[1], (int) wpe.dims()[0],
                wtt == null ? 0 : (int) wtt.dims()[0], headDim, heads, ffn, layerNormEps(g));
    }

    private static OnnxGraph.Tensor require(Path file, Map<String, OnnxGraph.Tensor> named, String name) {
        OnnxGraph.Tensor t = named.get(name);
        if (t == null) throw new ModelFormatException(file + ": missing tensor " + name);
        return t;
    }

    /** Head size from the [batch, seq, heads, head] Reshape in the attention, else from the score scale. */
    private static int headSize(OnnxGraph g, int layer) {
        String prefix = "/encoder/layer." + layer + "/attention/self/";
        String bertPrefix = "/bert" + prefix;
        for (OnnxGraph.Node n : g.nodes()) {
            if (!n.opType().equals("Reshape") || !(n.name().startsWith(prefix) || n.name().startsWith(bertPrefix))) continue;
            long[] shape = constantShape(g, n.inputs().get(1));
            if (shape != null && shape.length == 4 && shape[3] > 0) return (int) shape[3];
        }
        for (OnnxGraph.Node n : g.nodes()) {
            if (!(n.name().startsWith(prefix) || n.name().startsWith(bertPrefix))) continue;
            if (!n.opType().equals("Div") && !n.opType().equals("Mul")) continue;
            OnnxGraph.Tensor c = g.constant(n.inputs().get(1));
            if (c == null || c.numel() != 1 || (c.dataType() != OnnxGraph.FLOAT && c.dataType() != OnnxGraph.DOUBLE)) continue;
            double v = c.doubles()[0];
            double d = n.opType().equals("Div") ? v * v : 1 / (v * v);
            if (Math.abs(d - Math.rint(d)) < 1e-3 && d >= 1) return (int) Math.rint(d);
        }
        return -1;
    }

    /** A shape given as a constant, or as a Concat whose parts are constants (dynamic batch/seq as -1). */
    private static long[] constantShape(OnnxGraph g, String value) {
        OnnxGraph.Tensor c = g.constant(value);
        if (c != null) return c.longs();
        OnnxGraph.Node n = g.producer(value);
        if (n == null || !n.opType().equals("Concat")) return null;
        long[] out = new long[n.inputs().size()];
        for (int i = 0; i < out.length; i++) {
            OnnxGraph.Tensor part = g.constant(n.inputs().get(i));
            out[i] = part != null && part.numel() == 1 && (part.dataType() == OnnxGraph.INT64 || part.dataType() == OnnxGraph.INT32)
                    ? part.longs()[0] : -1;
        }
        return out;
    }

    private static float layerNormEps(OnnxGraph g) {
        for (OnnxGraph.Node n : g.nodes()) {
            if (!n.name().contains("LayerNorm")) continue;
            if (n.opType().equals("LayerNormalization")) return n.floatAttributes().getOrDefault("epsilon", 1e-5f);
            if (n.opType().equals("Add") && n.name().endsWith("/LayerNorm/Add"))
                for (String in : n.inputs()) {
                    OnnxGraph.Tensor c = g.constant(in);
                    if (c != null && c.numel() == 1 && c.dataType() == OnnxGraph.FLOAT) return (float) c.doubles()[0];
                }
        }
        throw new ModelFormatException(g.file() + ": no LayerNorm epsilon found (no LayerNormalization node and no "
                + "constant Add inside a LayerNorm)");
    }
}
