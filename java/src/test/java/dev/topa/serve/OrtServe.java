package dev.topa.serve;

import dev.topa.tensor.Device;
import java.nio.file.Path;
import java.util.List;
import java.util.Locale;
import java.util.Map;

/**
 * The baseline server of bench/serve-load.sh: {@link OrtModel} behind topa's PredictServer, same
 * options as {@code topa serve}'s defaults. Args: ONNX file, model directory, port, threads.
 */
public final class OrtServe {
    public static void main(String[] args) throws Exception {
        OrtModel m = new OrtModel(Path.of(args[0]), Path.of(args[1]), Integer.parseInt(args[3]));
        PredictServer s = new PredictServer(Map.of(m.task().name().toLowerCase(Locale.ROOT), m), PredictServer.Options.defaults(), "127.0.0.1",
                Integer.parseInt(args[2]), List.of(Device.CPU));
        System.out.println("serving (ONNX Runtime) on http://127.0.0.1:" + s.port());
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            s.close();
            try {
                m.close();
            } catch (Exception e) {
                // exiting anyway
            }
        }));
        Thread.currentThread().join();
    }
}
