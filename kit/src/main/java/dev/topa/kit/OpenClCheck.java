package dev.topa.kit;

import dev.topa.backend.opencl.OpenCl;
import dev.topa.backend.opencl.OpenClBackend;
import dev.topa.harness.Ops;
import java.util.ArrayList;
import java.util.List;

/**
 * The OpenCL backend on every OpenCL device this machine has (on the GPU machine: the GPU vendor's
 * driver, when it ships one): the devices found, then on each every case of the op harness against
 * the float64 references with the fp32 bounds, then (mode {@code all}) the op timings at 4096
 * tokens. Prints a line per case, {@code opencl_devices: N} and {@code opencl_failures: N} last.
 * Exit 0 pass, 1 a failure, 3 no OpenCL here (said why: not a failure of the kit).
 */
public final class OpenClCheck {
    private OpenClCheck() {}

    public static void main(String[] args) {
        boolean bench = args.length == 0 || args[0].equals("all");
        List<String> devices = OpenClBackend.devices();
        System.out.println("opencl_devices: " + devices.size() + (devices.isEmpty() ? " (" + OpenCl.unavailableReason() + ")" : ""));
        devices.forEach(d -> System.out.println("opencl " + d));
        if (devices.isEmpty()) System.exit(3);
        List<String> failed = new ArrayList<>();
        for (int i = 0; i < devices.size(); i++) {
            try (OpenClBackend be = OpenClBackend.open(i)) {
                System.out.println("---- op harness on " + be.name());
                int index = i;
                failed.addAll(Ops.checkAll(be, null, 0, System.out).stream().map(f -> "opencl:" + index + " " + f).toList());
                if (bench) Ops.bench(be, null, 4096, 5, System.out);
            } catch (RuntimeException e) {
                failed.add("opencl:" + i + " " + e);
                System.out.println("opencl:" + i + ": FAILED " + e);
            }
        }
        failed.forEach(f -> System.out.println("FAILED " + f));
        System.out.println("opencl_failures: " + failed.size());
        System.exit(failed.isEmpty() ? 0 : 1);
    }
}
