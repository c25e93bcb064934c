package dev.topa.backend.cpu;

import java.io.IOException;
import java.io.InputStream;
import java.io.UncheckedIOException;
import java.lang.foreign.Arena;
import java.lang.foreign.FunctionDescriptor;
import java.lang.foreign.Linker;
import java.lang.foreign.SymbolLookup;
import java.lang.invoke.MethodHandle;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.util.HexFormat;

/**
 * Finds and loads libtopa_cpu.so. The jar carries it under /native/linux-x86_64/; it is copied
 * once into a cache directory keyed by its hash (dlopen needs a file) and loaded from there. The
 * system property {@code topa.native.lib} names another file to load instead.
 */
public final class NativeLibrary {
    public static final String PATH_PROPERTY = "topa.native.lib";
    private static final String RESOURCE = "/native/linux-x86_64/libtopa_cpu.so";

    private static volatile NativeLibrary instance;

    private final Path path;
    private final SymbolLookup lookup;
    private final Linker linker = Linker.nativeLinker();

    private NativeLibrary(Path path) {
        this.path = path;
        this.lookup = SymbolLookup.libraryLookup(path, Arena.global());
    }

    public static NativeLibrary get() {
        NativeLibrary lib = instance;
        if (lib == null) {
            synchronized (NativeLibrary.class) {
                if (instance == null) instance = new NativeLibrary(locate());
                lib = instance;
            }
        }
        return lib;
    }

    public Path path() {
        return path;
    }

    /** A downcall handle for symbol; critical for calls short enough not to hold up the GC. */
    public MethodHandle downcall(String symbol, FunctionDescriptor fd, boolean critical) {
        var address = lookup.find(symbol).orElseThrow(() -> new UnsatisfiedLinkError(
                "symbol " + symbol + " not found in " + path + " (library older than this jar? rebuild with mvn)"));
        return critical ? linker.downcallHandle(address, fd, Linker.Option.critical(false))
                : linker.downcallHandle(address, fd);
    }

    private static Path locate() {
        String override = System.getProperty(PATH_PROPERTY);
        if (override != null) {
            Path p = Path.of(override);
            if (!Files.isRegularFile(p))
                throw new UnsatisfiedLinkError("-D" + PATH_PROPERTY + "=" + override + ": no such file");
            return p;
        }
        try (InputStream in = NativeLibrary.class.getResourceAsStream(RESOURCE)) {
            if (in == null)
                throw new UnsatisfiedLinkError(RESOURCE + " is not on the class path: build with mvn (CMake compiles "
                        + "native/ into it) or set -D" + PATH_PROPERTY);
            byte[] bytes = in.readAllBytes();
            String hash = HexFormat.of().formatHex(MessageDigest.getInstance("SHA-256").digest(bytes)).substring(0, 16);
            Path dir = cacheDir().resolve("native").resolve(hash);
            Path lib = dir.resolve("libtopa_cpu.so");
            if (!Files.isRegularFile(lib) || Files.size(lib) != bytes.length) {
                Files.createDirectories(dir);
                Path tmp = Files.createTempFile(dir, "libtopa_cpu", ".tmp");
                Files.write(tmp, bytes);
                Files.move(tmp, lib, StandardCopyOption.ATOMIC_MOVE, StandardCopyOption.REPLACE_EXISTING);
            }
            return lib;
        } catch (IOException e) {
            throw new UncheckedIOException("cannot extract " + RESOURCE + " into " + cacheDir(), e);
        } catch (NoSuchAlgorithmException e) {
            throw new IllegalStateException(e);
        }
    }

    /** $TOPA_CACHE, else $XDG_CACHE_HOME/topa, else ~/.cache/topa. */
    public static Path cacheDir() {
        String env = System.getenv("TOPA_CACHE");
        if (env != null && !env.isBlank()) return Path.of(env);
        String xdg = System.getenv("XDG_CACHE_HOME");
        if (xdg != null && !xdg.isBlank()) return Path.of(xdg, "topa");
        return Path.of(System.getProperty("user.home"), ".cache", "topa");
    }
}
