package dev.topa.kit;

import dev.topa.backend.Backend;
import dev.topa.backend.cuda.CudaBackend;
import dev.topa.harness.Ops;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;

/**
 * The op harness on a GPU: every case of every op family against the float64 references, on
 * CUDA in fp32 (the fp32 bounds, as on the CPU) and in mixed precision (products on the tensor cores
 * held to the bf16 floor), then again for every kernel choice the backend's {@link CudaBackend.Tuning}
 * offers (block-sparse kernels, the attention backward on CUDA cores), then the timings. Modes:
 * {@code check} (the cases only: what the kit runs under compute-sanitizer and as its parity stage),
 * {@code bench} (the timings only), none (both); op families after the mode limit the cases to them
 * ({@code check blocksparse attention}: a slow sanitizer tool over the hand-written kernels only).
 * Prints a line per case and {@code ops_failures: N} last; exits 1 on a failure, 2 without a GPU.
 */
public final class OpsCheck {
    /** The normwise error of a product of bf16-rounded operands summed in fp32: a few units of bf16's 2^-9 (kit/emulate/rounding_bounds.py). */
    static final double BF16_PRODUCTS = 2e-2;

    private OpsCheck() {}

    public static void main(String[] args) {
        Gpu.requireOrExit();
        String mode = args.length > 0 ? args[0] : "all";
        boolean check = !mode.equals("bench"), bench = mode.equals("all") || mode.equals("bench");
        List<String> families = args.length > 1 ? List.of(args).subList(1, args.length) : List.of();
        families.forEach(Ops::families); // an unknown family refused before the device opens
        List<String> failed = new ArrayList<>();
        try (CudaBackend exact = CudaBackend.open(0, CudaBackend.Precision.FP32); CudaBackend mixed = CudaBackend.open(0)) {
            if (check) failed.addAll(checks(exact, mixed, families));
            if (bench) {
                Ops.bench(exact, null, 4096, 7, System.out);
                Ops.bench(mixed, null, 4096, 7, System.out);
            }
        }
        failed.forEach(f -> System.out.println("FAILED " + f));
        System.out.println("ops_failures: " + failed.size());
        System.exit(failed.isEmpty() ? 0 : 1);
    }

    /** Every case of families (none: of every family) in both modes and under every kernel choice: the failures. */
    static List<String> checks(CudaBackend exact, CudaBackend mixed, List<String> families) {
        List<String> failed = new ArrayList<>();
        for (String family : families.isEmpty() ? Collections.singletonList((String) null) : families) {
            failed.addAll(run(exact, family, 0, "fp32"));
            failed.addAll(run(mixed, family, BF16_PRODUCTS, "mixed"));
        }
        if (families.isEmpty() || families.contains("blocksparse")) {
            for (CudaBackend.BlockSparseKernel k : CudaBackend.BlockSparseKernel.values()) {
                mixed.tuning().blockSparseKernel(k);
                failed.addAll(Ops.checkAll(mixed, "blocksparse", BF16_PRODUCTS, System.out).stream().map(f -> "mixed " + k + " " + f).toList());
            }
            mixed.tuning().blockSparseKernel(CudaBackend.BlockSparseKernel.ROWS8_STAGED);
        }
        if (families.isEmpty() || families.contains("attention")) {
            mixed.tuning().tensorCoreAttentionBackward(false);
            failed.addAll(Ops.checkAll(mixed, "attention", BF16_PRODUCTS, System.out).stream().map(f -> "mixed cuda-core backward " + f).toList());
            mixed.tuning().tensorCoreAttentionBackward(true);
        }
        return failed;
    }

    /** Every case of family (null: every family) on be; the failures, each prefixed with the mode. */
    static List<String> run(Backend be, String family, double productFloor, String mode) {
        System.out.println("---- op harness on " + be.name() + " (" + mode + (family == null ? "" : ", " + family) + ")");
        return Ops.checkAll(be, family, productFloor, System.out).stream().map(f -> mode + " " + f).toList();
    }
}
