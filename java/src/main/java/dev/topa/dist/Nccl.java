package dev.topa.dist;

import static java.lang.foreign.ValueLayout.ADDRESS;
import static java.lang.foreign.ValueLayout.JAVA_INT;
import static java.lang.foreign.ValueLayout.JAVA_LONG;

import java.lang.foreign.Arena;
import java.lang.foreign.FunctionDescriptor;
import java.lang.foreign.Linker;
import java.lang.foreign.MemoryLayout;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.SymbolLookup;
import java.lang.foreign.ValueLayout;
import java.lang.invoke.MethodHandle;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Optional;

/**
 * NCCL through the FFM API, from the library the machine has ({@code libnccl.so.2}: on the loader's
 * path, named by {@code -Dtopa.nccl.lib}, or the one a PyTorch install carries under
 * {@code site-packages/nvidia/nccl/lib}), as the CUDA driver is found: no toolkit needed. A
 * communicator spans the ranks of an MPI {@link Communicator}: rank 0 makes the unique id, MPI
 * broadcasts it, every rank joins with its GPU current. Sums run on a CUDA stream, ordered with the
 * work queued there. Not yet run on a GPU machine (the kit's NcclCheck is its first use).
 */
public final class Nccl {
    private static final Linker LINKER = Linker.nativeLinker();
    /** ncclUniqueId: 128 opaque bytes, passed by value. */
    private static final MemoryLayout UNIQUE_ID = MemoryLayout.structLayout(MemoryLayout.sequenceLayout(128, ValueLayout.JAVA_BYTE));
    private static final int NCCL_FLOAT32 = 7, NCCL_SUM = 0;

    private final MethodHandle getUniqueId, commInitRank, allReduce, commDestroy, getErrorString, getVersion;

    private Nccl(SymbolLookup lib) {
        getUniqueId = bind(lib, "ncclGetUniqueId", FunctionDescriptor.of(JAVA_INT, ADDRESS));
        commInitRank = bind(lib, "ncclCommInitRank", FunctionDescriptor.of(JAVA_INT, ADDRESS, JAVA_INT, UNIQUE_ID, JAVA_INT));
        allReduce = bind(lib, "ncclAllReduce", FunctionDescriptor.of(JAVA_INT, JAVA_LONG, JAVA_LONG, JAVA_LONG, JAVA_INT, JAVA_INT, ADDRESS, JAVA_LONG));
        commDestroy = bind(lib, "ncclCommDestroy", FunctionDescriptor.of(JAVA_INT, ADDRESS));
        getErrorString = bind(lib, "ncclGetErrorString", FunctionDescriptor.of(ADDRESS, JAVA_INT));
        getVersion = bind(lib, "ncclGetVersion", FunctionDescriptor.of(JAVA_INT, ADDRESS));
    }

    private static MethodHandle bind(SymbolLookup lib, String name, FunctionDescriptor fd) {
        return LINKER.downcallHandle(lib.find(name).orElseThrow(() -> new MpiException("libnccl has no " + name)), fd);
    }

    /** The library, or empty with the places looked at in the message of {@link #unavailableReason()}. */
    public static synchronized Optional<Nccl> load() {
        for (String candidate : candidates())
            try {
                return Optional.of(new Nccl(SymbolLookup.libraryLookup(candidate, Arena.global())));
            } catch (IllegalArgumentException | MpiException e) {
                // not here, or a library without every symbol topa calls: the next place
            }
        return Optional.empty();
    }

    /** Where NCCL was looked for, for the error that says it is missing. */
    public static String unavailableReason() {
        return "no libnccl.so.2 (looked at: " + String.join(", ", candidates()) + "); name one with -Dtopa.nccl.lib";
    }

    private static List<String> candidates() {
        List<String> c = new ArrayList<>();
        String given = System.getProperty("topa.nccl.lib");
        if (given != null) c.add(given);
        c.add("libnccl.so.2");
        for (String root : new String[] {"/usr/local/lib", "/usr/lib", "/opt/torch/.venv/lib", "/opt/conda/lib"})
            try (var dirs = Files.list(Path.of(root))) {
                dirs.filter(p -> p.getFileName().toString().startsWith("python3")).forEach(py -> {
                    for (String site : new String[] {"site-packages", "dist-packages"}) {
                        Path lib = py.resolve(site).resolve("nvidia/nccl/lib/libnccl.so.2");
                        if (Files.isRegularFile(lib)) c.add(lib.toString());
                    }
                });
            } catch (java.io.IOException | RuntimeException e) {
                // no such folder
            }
        return c;
    }

    /** NCCL's version code (e.g. 22703 for 2.27.3). */
    public int version() {
        try (Arena a = Arena.ofConfined()) {
            MemorySegment v = a.allocate(JAVA_INT);
            check(Mpi.call(getVersion, v), "ncclGetVersion");
            return v.get(JAVA_INT, 0);
        }
    }

    /**
     * A communicator over mpi's ranks (the device of each must be current on the calling thread):
     * rank 0's unique id broadcast over MPI, then ncclCommInitRank on every rank.
     */
    public Comm join(Communicator mpi) {
        try (Arena a = Arena.ofConfined()) {
            MemorySegment id = a.allocate(UNIQUE_ID);
            // the id and, in a last byte, rank 0's status: a failure there reaches every rank (not left waiting in the broadcast)
            byte[] bytes = new byte[(int) UNIQUE_ID.byteSize() + 1];
            int made = mpi.isRoot() ? Mpi.call(getUniqueId, id) : 0;
            if (mpi.isRoot()) {
                MemorySegment.copy(id, ValueLayout.JAVA_BYTE, 0, bytes, 0, bytes.length - 1);
                bytes[bytes.length - 1] = (byte) Math.min(made, 127);
            }
            mpi.broadcast(bytes, 0);
            if (bytes[bytes.length - 1] != 0) check(mpi.isRoot() ? made : bytes[bytes.length - 1], "ncclGetUniqueId (rank 0)");
            MemorySegment.copy(bytes, 0, id, ValueLayout.JAVA_BYTE, 0, bytes.length - 1);
            MemorySegment out = a.allocate(ADDRESS);
            check(Mpi.call(commInitRank, out, mpi.size(), id, mpi.rank()), "ncclCommInitRank");
            return new Comm(out.get(ADDRESS, 0), mpi.rank(), mpi.size());
        }
    }

    /** One NCCL communicator: in-place sums of f32 device buffers on a stream. */
    public final class Comm implements AutoCloseable {
        private final MemorySegment handle;
        private final int rank, size;

        private Comm(MemorySegment handle, int rank, int size) {
            this.handle = handle;
            this.rank = rank;
            this.size = size;
        }

        public int rank() {
            return rank;
        }

        public int size() {
            return size;
        }

        /** The f32 buffer at devicePtr (count elements) summed over the ranks in place, queued on stream. */
        public void allReduceSum(long devicePtr, long count, long stream) {
            allReduceSum(devicePtr, devicePtr, count, stream);
        }

        /** recv = the sum over the ranks of each rank's send (f32, count elements, device pointers), queued on stream. */
        public void allReduceSum(long send, long recv, long count, long stream) {
            check(Mpi.call(allReduce, send, recv, count, NCCL_FLOAT32, NCCL_SUM, handle, stream), "ncclAllReduce");
        }

        @Override
        public void close() {
            check(Mpi.call(commDestroy, handle), "ncclCommDestroy");
        }
    }

    private void check(int code, String what) {
        if (code == 0) return;
        String text = "error " + code;
        try {
            text = ((MemorySegment) getErrorString.invokeExact(code)).reinterpret(512).getString(0);
        } catch (Throwable t) {
            // the code alone
        }
        throw new MpiException(what + ": " + text);
    }
}
