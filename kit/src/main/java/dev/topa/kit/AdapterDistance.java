package dev.topa.kit;

import dev.topa.harness.Check;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Locale;

/**
 * Layer-wise distillation on a device against the CPU (the GPU kit's command-line stage): given
 * three prune-adapt outputs -- layer-wise on the device, layer-wise on the CPU, outputs only on the
 * CPU, all else the same -- their pruned shapes must agree, and the device's adapters must be far
 * closer to the CPU's layer-wise run than that run is to the one without the term (so the term ran
 * on the device, and ran as on the CPU). Distances are Euclidean over every adapter tensor: AdamW's
 * first steps move a weight by about lr whatever its gradient's size, so a largest-element bound
 * would measure sign flips of near-zero gradients, not the term. Prints `name: value` lines, the
 * ratio last; exit 0 pass, 1 fail.
 */
public final class AdapterDistance {
    public static void main(String[] args) throws Exception {
        if (args.length != 3) {
            System.err.println("usage: AdapterDistance DEVICE_RUN CPU_RUN CPU_RUN_WITHOUT_THE_TERM (prune-adapt output folders)");
            System.exit(2);
        }
        Path device = Path.of(args[0]), cpu = Path.of(args[1]), without = Path.of(args[2]);
        for (Path p : new Path[] {device, without})
            if (!Files.readString(p.resolve("config.json")).equals(Files.readString(cpu.resolve("config.json")))) {
                System.out.println("layerwise_check: fail, " + p + " was pruned to other shapes than " + cpu + " (compare their config.json)");
                System.exit(1);
            }
        double d = Check.distance(device.resolve("adapter.safetensors"), cpu.resolve("adapter.safetensors"));
        double t = Check.distance(cpu.resolve("adapter.safetensors"), without.resolve("adapter.safetensors"));
        System.out.printf(Locale.ROOT, "layerwise_device_vs_cpu_distance: %.6g%n", d);
        System.out.printf(Locale.ROOT, "layerwise_term_distance: %.6g%n", t);
        System.out.printf(Locale.ROOT, "layerwise_device_over_term: %.4g%n", d / t);
        boolean pass = d < t / 10;
        if (!pass) System.out.println("layerwise_check: fail, the device's adapters are not within a tenth of the term's distance of the CPU's");
        System.exit(pass ? 0 : 1);
    }
}
