package dev.topa.bench;

import dev.topa.backend.cpu.CpuBackend;
import dev.topa.backend.cpu.CpuKernels;
import dev.topa.tensor.DType;
import dev.topa.tensor.MemoryCategory;
import dev.topa.tensor.Tensor;
import dev.topa.tensor.TensorScope;
import java.util.SplittableRandom;
import java.util.concurrent.TimeUnit;
import org.openjdk.jmh.annotations.Benchmark;
import org.openjdk.jmh.annotations.BenchmarkMode;
import org.openjdk.jmh.annotations.Level;
import org.openjdk.jmh.annotations.Mode;
import org.openjdk.jmh.annotations.OutputTimeUnit;
import org.openjdk.jmh.annotations.Param;
import org.openjdk.jmh.annotations.Scope;
import org.openjdk.jmh.annotations.Setup;
import org.openjdk.jmh.annotations.State;
import org.openjdk.jmh.annotations.TearDown;

/**
 * fp32 GEMM of a linear layer's forward, Y[M,N] = X[M,K] W[N,K]^T, at the six training shapes of
 * MiniLM (hidden 384, FFN 1536) and BERT-base (768, 3072) with M = 4096 tokens (batch 32 x seq 128):
 * topa's packed AVX-512 kernel vs OpenBLAS cblas_sgemm, same threads, same inputs, same run.
 * Reaches: 2MNK / time. Ceiling here: ~300-320 GFLOP/s on 2 Zen 4 cores (1 zmm FMA per cycle each).
 */
@State(Scope.Benchmark)
@BenchmarkMode(Mode.AverageTime)
@OutputTimeUnit(TimeUnit.MILLISECONDS)
public class GemmBenchmark {
    /** K x N. JMH orders parameters by name: "dims" before "impl" puts both impls of a shape side by side in time. */
    @Param({"384x384", "384x1536", "1536x384", "768x768", "768x3072", "3072x768"})
    public String dims;

    @Param({"topa", "openblas"})
    public String impl;

    @Param({"4096"})
    public int m;

    @Param({"2"})
    public int threads;

    private TensorScope scope;
    private CpuBackend topa;
    private OpenBlas blas;
    private Tensor x, w, y;
    private int k, n;

    @Setup(Level.Trial)
    public void setup() throws Throwable {
        String[] p = dims.split("x");
        k = Integer.parseInt(p[0]);
        n = Integer.parseInt(p[1]);
        scope = new TensorScope("gemm bench", MemoryCategory.ACTIVATIONS);
        x = random(m, k);
        w = random(n, k);
        y = scope.allocate(DType.F32, m, n).fill(0f); // pre-touched: first touch is slow on these VMs
        if (impl.equals("topa")) {
            CpuKernels.setNumThreads(threads);
            topa = CpuBackend.create();
        } else {
            blas = new OpenBlas();
            blas.setThreads(threads);
        }
    }

    private Tensor random(long rows, long cols) {
        SplittableRandom rnd = new SplittableRandom(rows * 31 + cols);
        float[] v = new float[(int) (rows * cols)];
        for (int i = 0; i < v.length; i++) v[i] = (float) (rnd.nextDouble() * 2 - 1);
        return scope.allocate(DType.F32, rows, cols).copyFrom(v);
    }

    @Benchmark
    public void linearForward() throws Throwable {
        if (topa != null) topa.gemm(false, true, 1f, x, w, 0f, y, null);
        else blas.sgemm(false, true, m, n, k, 1f, x.data(), k, w.data(), k, 0f, y.data(), n);
    }

    @TearDown(Level.Trial)
    public void tearDown() {
        scope.close();
    }
}
