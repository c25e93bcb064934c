package dev.topa.dist;

import static java.lang.foreign.ValueLayout.ADDRESS;
import static java.lang.foreign.ValueLayout.JAVA_INT;
import static java.lang.foreign.ValueLayout.JAVA_LONG;

import dev.topa.tensor.DType;
import dev.topa.tensor.Tensor;
import java.lang.foreign.Arena;
import java.lang.foreign.FunctionDescriptor;
import java.lang.foreign.Linker;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.SymbolLookup;
import java.lang.invoke.MethodHandle;
import java.util.List;

/**
 * MPI through the FFM API, on Open MPI's library (Debian's openmpi-bin / libopenmpi-dev,
 * {@code libmpi.so.40}): its handles are the addresses of its predefined globals
 * ({@code ompi_mpi_comm_world}, {@code ompi_mpi_float}, ...), as its mpi.h defines them. The
 * library is opened with RTLD_GLOBAL (its components, loaded later, resolve symbols against it).
 * Errors return to the caller (MPI_ERRORS_RETURN) and become a {@link MpiException} naming the
 * call and MPI's text; the run is stopped with {@link #abort}. Initialised once per process,
 * finalised at exit.
 */
public final class Mpi implements Communicator {
    private static final Linker LINKER = Linker.nativeLinker();
    private static final int RTLD_NOW = 2, RTLD_GLOBAL = 0x100, MPI_THREAD_SERIALIZED = 2;
    private static final MemorySegment IN_PLACE = MemorySegment.ofAddress(1), STATUS_IGNORE = MemorySegment.NULL;
    private static Mpi instance;

    private final MethodHandle allreduce, iallreduce, wait, bcast, barrier, abort, finalize, errorString;
    private final MemorySegment world, fp32, fp64, bytes, sum;
    private final int rank, size;
    private boolean closed;

    /** Whether this process was started by mpirun (Open MPI or PMIx say so in the environment). */
    static boolean launched() {
        return System.getenv("OMPI_COMM_WORLD_SIZE") != null || System.getenv("PMIX_RANK") != null;
    }

    /** MPI_Init once for the process; later calls return the same communicator. */
    static synchronized Mpi init() {
        if (instance == null) instance = new Mpi(library());
        return instance;
    }

    private static SymbolLookup library() {
        MethodHandle dlopen = LINKER.downcallHandle(LINKER.defaultLookup().find("dlopen").orElseThrow(),
                FunctionDescriptor.of(ADDRESS, ADDRESS, JAVA_INT));
        String tried = "";
        for (String name : new String[] {System.getProperty("topa.mpi.lib", "libmpi.so.40"), "libmpi.so"}) {
            try (Arena a = Arena.ofConfined()) {
                MemorySegment h = (MemorySegment) dlopen.invokeExact(a.allocateFrom(name), RTLD_NOW | RTLD_GLOBAL);
                if (!h.equals(MemorySegment.NULL)) return SymbolLookup.libraryLookup(name, Arena.global());
            } catch (Throwable t) {
                throw new MpiException("dlopen " + name + ": " + t);
            }
            tried += (tried.isEmpty() ? "" : ", ") + name;
        }
        throw new MpiException("launched by mpirun, but no MPI library loads (" + tried + "): install Open MPI (openmpi-bin, libopenmpi-dev)"
                + " or set -Dtopa.mpi.lib");
    }

    private Mpi(SymbolLookup lib) {
        world = global(lib, "ompi_mpi_comm_world");
        fp32 = global(lib, "ompi_mpi_float");
        fp64 = global(lib, "ompi_mpi_double");
        bytes = global(lib, "ompi_mpi_byte");
        sum = global(lib, "ompi_mpi_op_sum");
        MethodHandle initThread = bind(lib, "MPI_Init_thread", ADDRESS, ADDRESS, JAVA_INT, ADDRESS);
        MethodHandle initialized = bind(lib, "MPI_Initialized", ADDRESS);
        MethodHandle commRank = bind(lib, "MPI_Comm_rank", ADDRESS, ADDRESS), commSize = bind(lib, "MPI_Comm_size", ADDRESS, ADDRESS);
        MethodHandle setErrhandler = bind(lib, "MPI_Comm_set_errhandler", ADDRESS, ADDRESS);
        allreduce = bind(lib, "MPI_Allreduce", ADDRESS, ADDRESS, JAVA_INT, ADDRESS, ADDRESS, ADDRESS);
        iallreduce = bind(lib, "MPI_Iallreduce", ADDRESS, ADDRESS, JAVA_INT, ADDRESS, ADDRESS, ADDRESS, ADDRESS);
        wait = bind(lib, "MPI_Wait", ADDRESS, ADDRESS);
        bcast = bind(lib, "MPI_Bcast", ADDRESS, JAVA_INT, ADDRESS, JAVA_INT, ADDRESS);
        barrier = bind(lib, "MPI_Barrier", ADDRESS);
        abort = bind(lib, "MPI_Abort", ADDRESS, JAVA_INT);
        finalize = bind(lib, "MPI_Finalize");
        errorString = bind(lib, "MPI_Error_string", JAVA_INT, ADDRESS, ADDRESS);
        try (Arena a = Arena.ofConfined()) {
            MemorySegment flag = a.allocate(JAVA_INT), provided = a.allocate(JAVA_INT), out = a.allocate(JAVA_INT);
            check(call(initialized, flag), "MPI_Initialized");
            if (flag.get(JAVA_INT, 0) == 0) check(call(initThread, MemorySegment.NULL, MemorySegment.NULL, MPI_THREAD_SERIALIZED, provided),
                    "MPI_Init_thread");
            check(call(setErrhandler, world, global(lib, "ompi_mpi_errors_return")), "MPI_Comm_set_errhandler");
            check(call(commRank, world, out), "MPI_Comm_rank");
            rank = out.get(JAVA_INT, 0);
            check(call(commSize, world, out), "MPI_Comm_size");
            size = out.get(JAVA_INT, 0);
        }
        Runtime.getRuntime().addShutdownHook(new Thread(this::close, "mpi finalize"));
    }

    private static MemorySegment global(SymbolLookup lib, String name) {
        return lib.find(name).orElseThrow(() -> new MpiException("the MPI library has no " + name + ": topa binds Open MPI's ABI"));
    }

    private static MethodHandle bind(SymbolLookup lib, String name, java.lang.foreign.MemoryLayout... args) {
        return LINKER.downcallHandle(global(lib, name), FunctionDescriptor.of(JAVA_INT, args));
    }

    /** A downcall with its failure as an {@link MpiException} (NCCL's binding uses it too). */
    static int call(MethodHandle h, Object... args) {
        try {
            return (int) h.invokeWithArguments(args);
        } catch (RuntimeException | Error e) {
            throw e;
        } catch (Throwable t) {
            throw new MpiException(t.toString());
        }
    }

    private void check(int code, String what) {
        if (code == 0) return;
        String text = "error " + code;
        if (errorString != null) try (Arena a = Arena.ofConfined()) {
            MemorySegment buf = a.allocate(256), len = a.allocate(JAVA_INT);
            if (call(errorString, code, buf, len) == 0) text = buf.getString(0);
        }
        throw new MpiException(what + " on rank " + rank + ": " + text);
    }

    @Override
    public int rank() {
        return rank;
    }

    @Override
    public int size() {
        return size;
    }

    @Override
    public void allReduceSum(double[] data) {
        if (data.length == 0) return;
        try (Arena a = Arena.ofConfined()) {
            MemorySegment buf = a.allocateFrom(java.lang.foreign.ValueLayout.JAVA_DOUBLE, data);
            check(call(allreduce, IN_PLACE, buf, data.length, fp64, sum, world), "MPI_Allreduce");
            MemorySegment.copy(buf, java.lang.foreign.ValueLayout.JAVA_DOUBLE, 0, data, 0, data.length);
        }
    }

    @Override
    public void allReduceSum(List<Tensor> hostTensors) {
        for (Tensor t : hostTensors) {
            f32OnHost(t);
            for (long at = 0; at < t.numel(); at += Integer.MAX_VALUE) // MPI counts are ints
                check(call(allreduce, IN_PLACE, t.data().asSlice(4 * at), (int) Math.min(Integer.MAX_VALUE, t.numel() - at), fp32, sum, world),
                        "MPI_Allreduce");
        }
    }

    @Override
    public Pending allReduceSumAsync(Tensor t) {
        f32OnHost(t);
        if (t.numel() > Integer.MAX_VALUE) {
            allReduceSum(List.of(t));
            return () -> {};
        }
        Arena a = Arena.ofConfined();
        MemorySegment request = a.allocate(JAVA_LONG);
        check(call(iallreduce, IN_PLACE, t.data(), (int) t.numel(), fp32, sum, world, request), "MPI_Iallreduce");
        return () -> {
            try (a) {
                check(call(wait, request, STATUS_IGNORE), "MPI_Wait");
            }
        };
    }

    private static void f32OnHost(Tensor t) {
        if (t.dtype() != DType.F32 || !t.device().isHostAccessible())
            throw new IllegalArgumentException("MPI sums f32 tensors in host memory, got " + t);
    }

    @Override
    public void broadcast(byte[] data, int root) {
        try (Arena a = Arena.ofConfined()) {
            MemorySegment buf = a.allocate(Math.max(1, data.length));
            MemorySegment.copy(data, 0, buf, java.lang.foreign.ValueLayout.JAVA_BYTE, 0, data.length);
            check(call(bcast, buf, data.length, bytes, root, world), "MPI_Bcast");
            MemorySegment.copy(buf, java.lang.foreign.ValueLayout.JAVA_BYTE, 0, data, 0, data.length);
        }
    }

    @Override
    public void barrier() {
        check(call(barrier, world), "MPI_Barrier");
    }

    @Override
    public void abort(int code) {
        System.out.flush();
        System.err.flush();
        call(abort, world, code);
        Runtime.getRuntime().halt(code); // MPI_Abort does not return; if it did, this process still stops
    }

    @Override
    public synchronized void close() {
        if (closed) return;
        closed = true;
        call(finalize);
    }

    @Override
    public String toString() {
        return size + " MPI processes";
    }
}
