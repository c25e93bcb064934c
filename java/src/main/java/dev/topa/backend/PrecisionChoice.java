package dev.topa.backend;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import dev.topa.backend.cpu.CpuKernels;
import dev.topa.backend.cpu.NativeLibrary;
import dev.topa.tensor.DType;
import dev.topa.tensor.Device;
import dev.topa.tensor.MemoryCategory;
import dev.topa.tensor.Tensor;
import dev.topa.tensor.TensorScope;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.util.List;
import java.util.Locale;
import java.util.SplittableRandom;

/**
 * Whether a model's frozen linear weights multiply faster in bf16 (bf16 operands, fp32 sums) or in
 * fp32 on a backend: measured on the model's own shapes, never assumed from a CPU flag. On Zen 4
 * VDPBF16PS doubles the fp32 rate; on an Intel Xeon without AMX it has half the throughput of the
 * two FMA ports, so the same flag would make bf16 a regression there. The measurement (each form's
 * forward over the shapes, 2 warm-ups, median of 5) is cached per machine (backend, CPU model,
 * threads, shapes) under the topa cache; {@code -Dtopa.precision=fp32|bf16} forces a choice for
 * comparison. bf16 is taken only when it is at least {@value #MARGIN_PERCENT}% faster, so noise
 * never picks a path slower than fp32. A GPU's tensor cores are not measured: bf16 is their rate.
 */
public final class PrecisionChoice {
    /** The form the weights take: training's frozen base (unpacked fp32 or bf16 packs) or inference's packs. */
    public enum Use {
        TRAINING, INFERENCE
    }

    /** One linear product: rows of input, output and input features. */
    public record Shape(long rows, long out, long in) {}

    /** The choice with what decided it. */
    public record Result(boolean bf16, double fp32Ms, double bf16Ms, String why) {
        /** One line for logs and {@code topa info}. */
        public String describe() {
            return (bf16 ? "bf16" : "fp32") + " products (" + why + ")";
        }
    }

    static final int MARGIN_PERCENT = 5;
    private static final ObjectMapper JSON = new ObjectMapper();

    private PrecisionChoice() {}

    /** The faster form for these shapes on be (forced, cached or measured now). */
    public static Result choose(Backend be, Use use, List<Shape> shapes) {
        String forced = System.getProperty("topa.precision");
        if (forced != null && !forced.isBlank()) {
            return switch (forced.trim().toLowerCase(Locale.ROOT)) {
                case "fp32" -> new Result(false, Double.NaN, Double.NaN, "forced by -Dtopa.precision=fp32");
                case "bf16" -> new Result(be.supports(Op.BF16_WEIGHTS), Double.NaN, Double.NaN, be.supports(Op.BF16_WEIGHTS)
                        ? "forced by -Dtopa.precision=bf16" : "-Dtopa.precision=bf16, but " + be.name() + " has no bf16 products");
                default -> throw new IllegalArgumentException("-Dtopa.precision: fp32 or bf16, got '" + forced + "'");
            };
        }
        if (!be.supports(Op.BF16_WEIGHTS)) return new Result(false, Double.NaN, Double.NaN, be.name() + " has no bf16 products");
        if (be.device().kind() == Device.Kind.CUDA) return new Result(true, Double.NaN, Double.NaN, "tensor cores run bf16 at their full rate");
        String key = key(be, use, shapes);
        Path cache = NativeLibrary.cacheDir().resolve("precision.json");
        JsonNode hit = read(cache).path(key);
        double gflop = 0;
        for (Shape s : shapes) gflop += 2e-9 * s.rows() * s.out() * s.in();
        if (hit.has("fp32_ms") && hit.has("bf16_ms"))
            return decide(hit.get("fp32_ms").asDouble(), hit.get("bf16_ms").asDouble(), gflop, "measured earlier here, cached in " + cache);
        double[] ms = measure(be, use, shapes);
        write(cache, key, ms);
        return decide(ms[0], ms[1], gflop, "measured now on the model's shapes");
    }

    /** bf16 when it is at least the margin faster than fp32; gflop: the work of one pass, for the rates. */
    static Result decide(double fp32Ms, double bf16Ms, double gflop, String how) {
        boolean bf16 = bf16Ms < fp32Ms * (1 - MARGIN_PERCENT / 100.0);
        return new Result(bf16, fp32Ms, bf16Ms, String.format(Locale.ROOT,
                "a pass over the model's linears: fp32 %.1f ms (%.0f GFLOP/s), bf16 %.1f ms (%.0f GFLOP/s); %s", fp32Ms, gflop / fp32Ms * 1e3,
                bf16Ms, gflop / bf16Ms * 1e3, how));
    }

    /** Milliseconds of one forward over every shape: {fp32, bf16}. */
    private static double[] measure(Backend be, Use use, List<Shape> shapes) {
        double fp32 = 0, bf16 = 0;
        SplittableRandom rnd = new SplittableRandom(7);
        for (Shape s : distinct(shapes)) {
            int times = (int) shapes.stream().filter(s::equals).count(); // a model repeats its layer shapes
            try (TensorScope mem = be.scope("precision probe", MemoryCategory.WORKSPACE)) {
                Tensor w = random(be, mem, rnd, s.out(), s.in()), x = random(be, mem, rnd, s.rows(), s.in());
                Tensor y = mem.allocate(DType.F32, s.rows(), s.out());
                LinearWeight full = use == Use.INFERENCE && be.supports(Op.PACKED_WEIGHTS) ? PackedWeight.pack(be, w, mem) : new DenseWeight(w);
                LinearWeight half = Bf16Weight.pack(be, w, mem, false);
                fp32 += times * be.medianMs(() -> full.forward(be, y, x, null));
                bf16 += times * be.medianMs(() -> half.forward(be, y, x, null));
            }
        }
        return new double[] {fp32, bf16};
    }

    private static List<Shape> distinct(List<Shape> shapes) {
        return shapes.stream().distinct().toList();
    }

    /** Uniform values in [-1, 1) on be's device. */
    private static Tensor random(Backend be, TensorScope mem, SplittableRandom rnd, long rows, long cols) {
        float[] v = new float[Math.toIntExact(rows * cols)];
        for (int i = 0; i < v.length; i++) v[i] = (float) (2 * rnd.nextDouble() - 1);
        try (TensorScope host = new TensorScope("precision probe (host)", MemoryCategory.WORKSPACE)) {
            return be.copyOf(host.allocate(DType.F32, rows, cols).copyFrom(v), mem);
        }
    }


    private static String key(Backend be, Use use, List<Shape> shapes) {
        StringBuilder k = new StringBuilder(be.name()).append('|').append(cpuModel()).append("|threads ").append(CpuKernels.numThreads())
                .append('|').append(use.name().toLowerCase(Locale.ROOT));
        for (Shape s : distinct(shapes)) k.append('|').append(s.rows()).append('x').append(s.out()).append('x').append(s.in());
        return k.toString();
    }

    /** The CPU's model name (/proc/cpuinfo), so a cache copied to another machine is not believed there. */
    static String cpuModel() {
        try {
            for (String line : Files.readAllLines(Path.of("/proc/cpuinfo")))
                if (line.startsWith("model name")) return line.substring(line.indexOf(':') + 1).trim();
        } catch (IOException | RuntimeException e) {
            // no /proc: the key has no CPU name
        }
        return "unknown cpu";
    }

    private static JsonNode read(Path cache) {
        try {
            return Files.isRegularFile(cache) ? JSON.readTree(cache.toFile()) : JSON.createObjectNode();
        } catch (IOException e) {
            return JSON.createObjectNode(); // a damaged cache is measured again and rewritten
        }
    }

    private static synchronized void write(Path cache, String key, double[] ms) {
        try {
            Files.createDirectories(cache.getParent());
            JsonNode all = read(cache);
            ObjectNode root = all.isObject() ? (ObjectNode) all : JSON.createObjectNode();
            root.putObject(key).put("fp32_ms", ms[0]).put("bf16_ms", ms[1]);
            Path tmp = Files.createTempFile(cache.getParent(), "precision", ".tmp");
            try {
                Files.write(tmp, JSON.writerWithDefaultPrettyPrinter().writeValueAsBytes(root));
                Files.move(tmp, cache, StandardCopyOption.ATOMIC_MOVE, StandardCopyOption.REPLACE_EXISTING);
            } finally {
                Files.deleteIfExists(tmp);
            }
        } catch (IOException e) {
            // an unwritable cache only means measuring again next time
        }
    }
}
