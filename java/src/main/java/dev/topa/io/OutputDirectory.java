package dev.topa.io;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.lang.foreign.Arena;
import java.lang.foreign.FunctionDescriptor;
import java.lang.foreign.Linker;
import java.lang.foreign.MemoryLayout;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.StructLayout;
import java.lang.foreign.ValueLayout;
import java.lang.invoke.MethodHandle;
import java.lang.invoke.VarHandle;
import java.nio.file.AccessDeniedException;
import java.nio.file.DirectoryStream;
import java.nio.file.FileStore;
import java.nio.file.FileSystemException;
import java.nio.file.Files;
import java.nio.file.LinkOption;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.nio.file.attribute.BasicFileAttributes;
import java.time.Instant;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.TreeSet;
import java.util.stream.Stream;
import java.util.zip.CRC32C;

/**
 * A run's output directory, in which the model is replaced as one unit. A new model is written
 * into a temp directory beside the target, the run's other files (checkpoint, reports) are linked
 * in beside it, and the two directories are swapped in one atomic step (Linux renameat2 with
 * RENAME_EXCHANGE; elsewhere two renames, undone at the next open if a kill falls between them).
 * So after a kill at any moment the directory holds the previous complete model or the new one,
 * never a mix; the leftovers of a killed save are removed by the next {@link #open}.
 *
 * <p>The model's files are listed with their sizes and CRC-32C checksums in {@value #MANIFEST},
 * written last into the temp directory; {@link #verify} refuses a directory whose files do not match
 * it (files of two saves put together by hand, a file damaged since).
 */
public final class OutputDirectory {
    /** The list of the model's files and their sizes. */
    public static final String MANIFEST = "manifest.json";
    private static final String TMP = ".topa-tmp-", OLD = ".topa-old-";
    private static final ObjectMapper JSON = new ObjectMapper();

    /** How a run takes its directory. */
    public enum Mode {
        /** The directory must be missing or empty. */
        NEW,
        /** The directory holds this run (its identity is checked by the caller against the checkpoint). */
        RESUME,
        /** Whatever the directory holds is replaced: its model stays until the new one is complete, its other files go then. */
        OVERWRITE
    }

    /** An existing, non-empty directory given to a new run. */
    public static final class NotEmptyException extends IOException {
        private final List<String> files;

        NotEmptyException(Path dir, List<String> files) {
            super(dir + " already holds " + files.size() + " file(s) (" + String.join(", ", files.subList(0, Math.min(6, files.size())))
                    + (files.size() > 6 ? ", ..." : "") + ")");
            this.files = List.copyOf(files);
        }

        public List<String> files() {
            return files;
        }
    }

    /** What a model save writes into the directory it is given (the temp directory). */
    @FunctionalInterface
    public interface Writer {
        void writeInto(Path dir) throws IOException;
    }

    private final Path dir;
    /** Files (by name) present at open in OVERWRITE mode, with their identity: still the same file at a swap means the earlier run's. */
    private final Map<String, Object> stale;

    private OutputDirectory(Path dir, Map<String, Object> stale) {
        this.dir = dir;
        this.stale = stale;
    }

    /**
     * Takes dir for a run: finishes or undoes a save that a kill interrupted, refuses per mode, and
     * checks before any work that the directory and its parent are writable and that bytesNeeded
     * bytes are free on their file system. Nothing is created when it refuses.
     */
    public static OutputDirectory open(Path dir, Mode mode, long bytesNeeded) throws IOException {
        dir = dir.toAbsolutePath().normalize();
        Path parent = dir.getParent();
        if (parent == null) throw new IOException(dir + ": an output directory needs a parent directory to stage its saves in");
        recover(dir);
        boolean existed = Files.exists(dir, LinkOption.NOFOLLOW_LINKS);
        if (existed && !Files.isDirectory(dir)) throw new IOException(dir + " exists and is not a directory");
        List<String> present = existed ? names(dir) : List.of();
        if (mode == Mode.NEW && !present.isEmpty()) throw new NotEmptyException(dir, present);
        if (mode == Mode.RESUME && !existed) throw new NoSuchFileException(dir.toString(), null, "nothing to resume: the directory does not exist");
        Path firstExisting = parent;
        while (firstExisting != null && !Files.exists(firstExisting)) firstExisting = firstExisting.getParent();
        if (firstExisting == null) throw new IOException(dir + ": no existing ancestor directory");
        FileStore store = Files.getFileStore(firstExisting);
        long free = store.getUsableSpace();
        if (free < bytesNeeded)
            throw new IOException(dir + ": " + mib(free) + " free on " + store + ", this run needs about " + mib(bytesNeeded)
                    + " (the model twice while one replaces the other, and the checkpoint)");
        List<Path> created = new ArrayList<>();
        try {
            for (Path p = dir; p != null && !Files.exists(p); p = p.getParent()) created.add(0, p);
            for (Path p : created) Files.createDirectory(p);
            probe(dir);
            probe(parent);
        } catch (IOException e) {
            for (int i = created.size() - 1; i >= 0; i--) Files.deleteIfExists(created.get(i));
            throw new IOException("cannot write the output directory " + dir + ": " + reason(e), e);
        }
        Map<String, Object> stale = new HashMap<>();
        if (mode == Mode.OVERWRITE) for (String n : present) stale.put(n, identity(dir.resolve(n)));
        return new OutputDirectory(dir, stale);
    }

    public Path path() {
        return dir;
    }

    /** A file of the run beside the model (checkpoint, reports): written straight into the directory, atomically by its writer. */
    public Path file(String name) {
        return dir.resolve(name);
    }

    /**
     * Replaces the model: writer fills a temp directory beside this one, the run's other files are
     * linked in, {@value #MANIFEST} is written, and the directories are swapped. On failure the
     * previous model stays and the temp directory is removed; the exception names the cause.
     */
    public void replaceModel(Writer writer) throws IOException {
        Path parent = dir.getParent(), tmp = parent.resolve(TMP + dir.getFileName() + "-" + ProcessHandle.current().pid() + "-" + System.nanoTime());
        try {
            Files.createDirectory(tmp);
            writer.writeInto(tmp);
            Map<String, long[]> model = new LinkedHashMap<>();
            for (String n : names(tmp)) model.put(n, new long[] {Files.size(tmp.resolve(n)), crc32c(tmp.resolve(n))});
            Map<String, long[]> previous = manifest(dir).orElse(Map.of());
            for (String n : names(dir)) {
                if (model.containsKey(n) || previous.containsKey(n) || n.equals(MANIFEST)) continue; // the model's files are the writer's
                Path f = dir.resolve(n);
                if (!Files.isRegularFile(f, LinkOption.NOFOLLOW_LINKS)) continue;
                if (stale.containsKey(n) && stale.get(n).equals(identity(f))) continue; // the earlier run's: dropped with its model
                try {
                    Files.createLink(tmp.resolve(n), f);
                } catch (UnsupportedOperationException | IOException e) {
                    Files.copy(f, tmp.resolve(n), StandardCopyOption.COPY_ATTRIBUTES);
                }
            }
            ObjectNode m = JSON.createObjectNode();
            m.put("written", Instant.now().toString());
            ObjectNode files = m.putObject("files");
            model.forEach((n, v) -> files.putObject(n).put("bytes", v[0]).put("crc32c", Long.toHexString(v[1])));
            writeFile(tmp.resolve(MANIFEST), JSON.writerWithDefaultPrettyPrinter().writeValueAsBytes(m));
            syncDirectory(tmp);
            swap(tmp, dir);
        } catch (IOException e) {
            throw new IOException("cannot save the model into " + dir + ": " + reason(e), e);
        } finally {
            deleteTree(tmp); // after the swap: the previous model
        }
    }

    /**
     * Refuses a model directory whose files do not match its {@value #MANIFEST} (a directory with no
     * manifest, from elsewhere, passes).
     */
    public static void verify(Path dir) {
        Optional<Map<String, long[]>> m;
        try {
            m = manifest(dir);
        } catch (IOException e) {
            throw new ModelFormatException(dir.resolve(MANIFEST) + ": " + e.getMessage(), e);
        }
        if (m.isEmpty()) return;
        for (var e : m.get().entrySet()) {
            Path f = dir.resolve(e.getKey());
            long size, crc;
            try {
                size = Files.size(f);
                crc = size == e.getValue()[0] ? crc32c(f) : -1;
            } catch (IOException ex) {
                throw new ModelFormatException(dir + ": " + e.getKey() + " is listed in " + MANIFEST + " but " + reason(ex));
            }
            if (size != e.getValue()[0] || crc != e.getValue()[1])
                throw new ModelFormatException(dir + ": " + e.getKey() + " does not match " + MANIFEST + " (" + (size != e.getValue()[0]
                        ? size + " bytes, listed " + e.getValue()[0] : "its checksum differs") + "): files of different saves are mixed, or"
                        + " the file was damaged (copy a model directory as a whole)");
        }
    }

    /**
     * What a written model directory holds, as its {@value #MANIFEST} lists it (each file's name, size
     * and checksum): two saves of different weights differ here. A directory without a manifest has
     * none (empty).
     */
    public static Optional<String> fingerprint(Path dir) {
        try {
            return manifest(dir).map(m -> {
                StringBuilder b = new StringBuilder();
                new java.util.TreeMap<>(m).forEach((n, v) -> b.append(b.isEmpty() ? "" : ",").append(n).append(':').append(v[0]).append(':')
                        .append(Long.toHexString(v[1])));
                return b.toString();
            });
        } catch (IOException e) {
            throw new ModelFormatException(dir.resolve(MANIFEST) + ": " + e.getMessage(), e);
        }
    }

    /** The OS's reason for a failed file operation, with the path it concerns. */
    public static String reason(IOException e) {
        String what = switch (e) {
            case AccessDeniedException a -> "permission denied";
            case NoSuchFileException n -> n.getReason() != null ? n.getReason() : "no such file or directory";
            case java.nio.file.FileAlreadyExistsException f -> "already exists";
            case FileSystemException f when f.getReason() != null -> f.getReason();
            default -> null;
        };
        if (what == null) return e.getMessage() != null ? e.getMessage() : e.toString();
        FileSystemException f = (FileSystemException) e;
        return what + " (" + f.getFile() + (f.getOtherFile() != null ? " -> " + f.getOtherFile() : "") + ")";
    }

    /** Writes bytes to target through a temp file beside it and an atomic rename (synced first). */
    public static void writeFile(Path target, byte[] bytes) throws IOException {
        Path tmp = Files.createTempFile(target.toAbsolutePath().getParent(), target.getFileName().toString(), ".tmp");
        try {
            try (var ch = java.nio.channels.FileChannel.open(tmp, java.nio.file.StandardOpenOption.WRITE)) {
                var b = java.nio.ByteBuffer.wrap(bytes);
                while (b.hasRemaining()) ch.write(b);
                ch.force(true);
            }
            Files.setPosixFilePermissions(tmp, java.nio.file.attribute.PosixFilePermissions.fromString("rw-r--r--"));
            Files.move(tmp, target, StandardCopyOption.ATOMIC_MOVE, StandardCopyOption.REPLACE_EXISTING);
        } finally {
            Files.deleteIfExists(tmp);
        }
    }

    // ---------------------------------------------------------------- internals

    private static Optional<Map<String, long[]>> manifest(Path dir) throws IOException {
        Path f = dir.resolve(MANIFEST);
        if (!Files.isRegularFile(f)) return Optional.empty();
        JsonNode files = JSON.readTree(f.toFile()).path("files");
        if (!files.isObject()) throw new IOException(f + ": no \"files\" object");
        Map<String, long[]> m = new LinkedHashMap<>();
        for (var it = files.fields(); it.hasNext(); ) {
            var e = it.next();
            JsonNode crc = e.getValue().path("crc32c");
            if (!e.getValue().path("bytes").canConvertToLong() || !crc.isTextual())
                throw new IOException(f + ": entry " + e.getKey() + " lacks \"bytes\" or \"crc32c\"");
            try {
                m.put(e.getKey(), new long[] {e.getValue().path("bytes").asLong(), Long.parseUnsignedLong(crc.asText(), 16)});
            } catch (NumberFormatException ex) {
                throw new IOException(f + ": entry " + e.getKey() + ": crc32c '" + crc.asText() + "' is not hexadecimal");
            }
        }
        return Optional.of(m);
    }

    private static long crc32c(Path file) throws IOException {
        CRC32C crc = new CRC32C();
        try (var ch = java.nio.channels.FileChannel.open(file, java.nio.file.StandardOpenOption.READ)) {
            java.nio.ByteBuffer buf = java.nio.ByteBuffer.allocateDirect(1 << 20);
            while (ch.read(buf.clear()) > 0) crc.update(buf.flip());
        }
        return crc.getValue();
    }

    /** Leftovers of a save killed part-way: a temp directory is dropped; a directory moved aside is put back if its place is empty. */
    private static void recover(Path dir) throws IOException {
        Path parent = dir.getParent();
        if (!Files.isDirectory(parent)) return;
        String tmpPrefix = TMP + dir.getFileName() + "-", oldPrefix = OLD + dir.getFileName() + "-";
        List<Path> tmps = new ArrayList<>(), olds = new ArrayList<>();
        try (DirectoryStream<Path> s = Files.newDirectoryStream(parent)) {
            for (Path p : s) {
                String n = p.getFileName().toString();
                if (n.startsWith(tmpPrefix)) tmps.add(p);
                else if (n.startsWith(oldPrefix)) olds.add(p);
            }
        }
        for (Path o : olds) {
            if (!Files.exists(dir, LinkOption.NOFOLLOW_LINKS)) Files.move(o, dir, StandardCopyOption.ATOMIC_MOVE); // the previous model, complete
            else deleteTree(o);
        }
        for (Path t : tmps) deleteTree(t);
    }

    private static void swap(Path fresh, Path live) throws IOException {
        if (!Files.exists(live)) {
            Files.move(fresh, live, StandardCopyOption.ATOMIC_MOVE);
            return;
        }
        if (Rename.exchange(fresh, live)) return;
        Path old = live.resolveSibling(OLD + live.getFileName() + "-" + ProcessHandle.current().pid() + "-" + System.nanoTime());
        Files.move(live, old, StandardCopyOption.ATOMIC_MOVE);
        Files.move(fresh, live, StandardCopyOption.ATOMIC_MOVE);
        Files.move(old, fresh, StandardCopyOption.ATOMIC_MOVE); // where the caller deletes it
    }

    private static List<String> names(Path dir) throws IOException {
        try (Stream<Path> s = Files.list(dir)) {
            return s.map(p -> p.getFileName().toString()).collect(java.util.stream.Collectors.toCollection(TreeSet::new)).stream().toList();
        }
    }

    private static Object identity(Path f) throws IOException {
        BasicFileAttributes a = Files.readAttributes(f, BasicFileAttributes.class, LinkOption.NOFOLLOW_LINKS);
        return a.fileKey() != null ? a.fileKey() : a.lastModifiedTime().toMillis() + ":" + a.size();
    }

    private static void probe(Path dir) throws IOException {
        Path p = Files.createTempFile(dir, ".topa-probe-", ".tmp");
        Files.delete(p);
    }

    private static void syncDirectory(Path dir) {
        try (var ch = java.nio.channels.FileChannel.open(dir, java.nio.file.StandardOpenOption.READ)) {
            ch.force(true);
        } catch (IOException | UnsupportedOperationException e) {
            // not every file system syncs a directory; the files themselves were synced
        }
    }

    private static void deleteTree(Path root) {
        if (!Files.exists(root, LinkOption.NOFOLLOW_LINKS)) return;
        try (Stream<Path> s = Files.walk(root)) {
            for (Path p : s.sorted(Comparator.reverseOrder()).toList()) Files.deleteIfExists(p);
        } catch (IOException e) {
            throw new UncheckedIOException("cannot remove " + root + ": " + reason(e), e);
        }
    }

    private static String mib(long bytes) {
        return String.format(java.util.Locale.ROOT, "%.1f MiB", bytes / 1048576.0);
    }

    /** renameat2(RENAME_EXCHANGE) through the C library, where there is one that has it. */
    private static final class Rename {
        private static final int AT_FDCWD = -100, RENAME_EXCHANGE = 2, EINVAL = 22, ENOSYS = 38;
        private static final MethodHandle RENAMEAT2;
        private static final StructLayout STATE = Linker.Option.captureStateLayout();
        private static final VarHandle ERRNO = STATE.varHandle(MemoryLayout.PathElement.groupElement("errno"));

        static {
            Linker linker = Linker.nativeLinker();
            RENAMEAT2 = linker.defaultLookup().find("renameat2").map(a -> linker.downcallHandle(a,
                    FunctionDescriptor.of(ValueLayout.JAVA_INT, ValueLayout.JAVA_INT, ValueLayout.ADDRESS, ValueLayout.JAVA_INT, ValueLayout.ADDRESS,
                            ValueLayout.JAVA_INT), Linker.Option.captureCallState("errno"))).orElse(null);
        }

        /** Swaps a and b atomically; false where this system or file system cannot (the caller renames twice instead). */
        static boolean exchange(Path a, Path b) throws IOException {
            if (RENAMEAT2 == null) return false;
            try (Arena arena = Arena.ofConfined()) {
                MemorySegment state = arena.allocate(STATE);
                int rc = (int) RENAMEAT2.invokeExact(state, AT_FDCWD, arena.allocateFrom(a.toString()), AT_FDCWD, arena.allocateFrom(b.toString()),
                        RENAME_EXCHANGE);
                if (rc == 0) return true;
                int errno = (int) ERRNO.get(state, 0L);
                if (errno == EINVAL || errno == ENOSYS) return false;
                throw new FileSystemException(a.toString(), b.toString(), "renameat2 failed with errno " + errno);
            } catch (IOException | RuntimeException | Error e) {
                throw e;
            } catch (Throwable t) {
                throw new IllegalStateException(t);
            }
        }
    }
}
