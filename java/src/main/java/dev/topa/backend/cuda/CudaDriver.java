package dev.topa.backend.cuda;

import static java.lang.foreign.ValueLayout.ADDRESS;
import static java.lang.foreign.ValueLayout.JAVA_FLOAT;
import static java.lang.foreign.ValueLayout.JAVA_INT;
import static java.lang.foreign.ValueLayout.JAVA_LONG;

import java.lang.foreign.Arena;
import java.lang.foreign.FunctionDescriptor;
import java.lang.foreign.Linker;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.SymbolLookup;
import java.lang.invoke.MethodHandle;
import java.util.Optional;
import java.util.concurrent.atomic.AtomicLong;

/**
 * The CUDA driver API (libcuda.so.1, what the NVIDIA driver installs) through FFM: init, devices,
 * the primary context, memory, copies, streams, events, modules and launches. Every call's
 * status is checked and a failure throws {@link CudaException} naming the call and the driver's
 * error name and text. Handles (contexts, streams, modules, functions, events) and device
 * pointers are carried as longs. No CUDA toolkit is needed at run time: kernels come as a fatbin
 * built with the project.
 */
public final class CudaDriver {
    private static final Linker LINKER = Linker.nativeLinker();
    private static volatile Object loaded; // CudaDriver or the String reason it is unavailable

    private final MethodHandle cuInit, cuDriverGetVersion, cuDeviceGetCount, cuDeviceGet, cuDeviceGetName, cuDeviceTotalMem,
            cuDeviceGetAttribute, cuDevicePrimaryCtxRetain, cuDevicePrimaryCtxRelease, cuCtxSetCurrent, cuCtxSynchronize, cuMemAlloc, cuMemFree, cuMemAllocHost,
            cuMemFreeHost, cuMemcpyHtoD, cuMemcpyDtoH, cuMemcpyDtoD, cuMemsetD32, cuStreamCreate, cuStreamDestroy, cuStreamSynchronize, cuEventCreate, cuEventDestroy, cuEventRecord,
            cuEventSynchronize, cuEventElapsedTime, cuModuleLoadData, cuModuleUnload, cuModuleGetFunction, cuFuncSetAttribute, cuLaunchKernel, cuGetErrorName,
            cuGetErrorString, cuMemGetInfo;
    /** cuFuncGetParamInfo (drivers of CUDA 12.4 and later), or null. */
    private final MethodHandle cuFuncGetParamInfo;

    /**
     * The context each thread last made current through this driver, with the {@link #contexts} count
     * it was made under. Every backend and allocator in the process switches contexts here, so a
     * thread that works for two devices (or allocates for one while it computes for another) never
     * runs a call in the other's context, and a thread that stays on one pays no driver call.
     */
    private final ThreadLocal<long[]> current = ThreadLocal.withInitial(() -> new long[] {0, -1});
    /** Retains and releases so far: a context made current before the last one is set again. */
    private final AtomicLong contexts = new AtomicLong();

    private CudaDriver(SymbolLookup lib) {
        cuInit = bind(lib, "cuInit", JAVA_INT);
        cuDriverGetVersion = bind(lib, "cuDriverGetVersion", ADDRESS);
        cuDeviceGetCount = bind(lib, "cuDeviceGetCount", ADDRESS);
        cuDeviceGet = bind(lib, "cuDeviceGet", ADDRESS, JAVA_INT);
        cuDeviceGetName = bind(lib, "cuDeviceGetName", ADDRESS, JAVA_INT, JAVA_INT);
        cuDeviceTotalMem = bind(lib, "cuDeviceTotalMem_v2", ADDRESS, JAVA_INT);
        cuDeviceGetAttribute = bind(lib, "cuDeviceGetAttribute", ADDRESS, JAVA_INT, JAVA_INT);
        cuDevicePrimaryCtxRetain = bind(lib, "cuDevicePrimaryCtxRetain", ADDRESS, JAVA_INT);
        cuDevicePrimaryCtxRelease = bind(lib, "cuDevicePrimaryCtxRelease_v2", JAVA_INT);
        cuCtxSetCurrent = bind(lib, "cuCtxSetCurrent", ADDRESS);
        cuCtxSynchronize = bind(lib, "cuCtxSynchronize");
        cuMemAlloc = bind(lib, "cuMemAlloc_v2", ADDRESS, JAVA_LONG);
        cuMemFree = bind(lib, "cuMemFree_v2", JAVA_LONG);
        cuMemAllocHost = bind(lib, "cuMemAllocHost_v2", ADDRESS, JAVA_LONG);
        cuMemFreeHost = bind(lib, "cuMemFreeHost", JAVA_LONG);
        cuMemGetInfo = bind(lib, "cuMemGetInfo_v2", ADDRESS, ADDRESS);
        cuMemcpyHtoD = bind(lib, "cuMemcpyHtoDAsync_v2", JAVA_LONG, ADDRESS, JAVA_LONG, ADDRESS);
        cuMemcpyDtoH = bind(lib, "cuMemcpyDtoHAsync_v2", ADDRESS, JAVA_LONG, JAVA_LONG, ADDRESS);
        cuMemcpyDtoD = bind(lib, "cuMemcpyDtoDAsync_v2", JAVA_LONG, JAVA_LONG, JAVA_LONG, ADDRESS);
        cuMemsetD32 = bind(lib, "cuMemsetD32Async", JAVA_LONG, JAVA_INT, JAVA_LONG, ADDRESS);
        cuStreamCreate = bind(lib, "cuStreamCreate", ADDRESS, JAVA_INT);
        cuStreamDestroy = bind(lib, "cuStreamDestroy_v2", ADDRESS);
        cuStreamSynchronize = bind(lib, "cuStreamSynchronize", ADDRESS);
        cuEventCreate = bind(lib, "cuEventCreate", ADDRESS, JAVA_INT);
        cuEventDestroy = bind(lib, "cuEventDestroy_v2", ADDRESS);
        cuEventRecord = bind(lib, "cuEventRecord", ADDRESS, ADDRESS);
        cuEventSynchronize = bind(lib, "cuEventSynchronize", ADDRESS);
        // the symbol CUDA 12.8+ headers name (cuda.h maps cuEventElapsedTime to it); older drivers have only the first
        cuEventElapsedTime = bind(lib, lib.find("cuEventElapsedTime_v2").isPresent() ? "cuEventElapsedTime_v2" : "cuEventElapsedTime",
                ADDRESS, ADDRESS, ADDRESS);
        cuModuleLoadData = bind(lib, "cuModuleLoadData", ADDRESS, ADDRESS);
        cuModuleUnload = bind(lib, "cuModuleUnload", ADDRESS);
        cuModuleGetFunction = bind(lib, "cuModuleGetFunction", ADDRESS, ADDRESS, ADDRESS);
        cuFuncSetAttribute = bind(lib, "cuFuncSetAttribute", ADDRESS, JAVA_INT, JAVA_INT);
        // function and stream as 64-bit integers (pointers in the ABI alike), so the hot call is one invokeExact
        cuLaunchKernel = bind(lib, "cuLaunchKernel", JAVA_LONG, JAVA_INT, JAVA_INT, JAVA_INT, JAVA_INT, JAVA_INT, JAVA_INT, JAVA_INT,
                JAVA_LONG, ADDRESS, ADDRESS);
        cuGetErrorName = bind(lib, "cuGetErrorName", JAVA_INT, ADDRESS);
        cuGetErrorString = bind(lib, "cuGetErrorString", JAVA_INT, ADDRESS);
        cuFuncGetParamInfo = lib.find("cuFuncGetParamInfo").map(f -> LINKER.downcallHandle(f, FunctionDescriptor.of(JAVA_INT, ADDRESS,
                JAVA_LONG, ADDRESS, ADDRESS))).orElse(null);
    }

    private static MethodHandle bind(SymbolLookup lib, String name, java.lang.foreign.MemoryLayout... args) {
        MemorySegment f = lib.find(name).orElseThrow(() -> new CudaException("libcuda.so.1 has no symbol " + name + " (driver too old?)"));
        return LINKER.downcallHandle(f, FunctionDescriptor.of(JAVA_INT, args));
    }

    /**
     * The driver, initialised (cuInit) once per process, or empty when this machine has none; then
     * {@link #unavailableReason()} says why.
     */
    public static synchronized Optional<CudaDriver> get() {
        if (loaded == null) {
            try {
                CudaDriver d = new CudaDriver(SymbolLookup.libraryLookup("libcuda.so.1", Arena.global()));
                d.check(call(d.cuInit, 0), "cuInit");
                loaded = d.outInt(d.cuDeviceGetCount, "cuDeviceGetCount") > 0 ? d : "the CUDA driver reports no device";
            } catch (IllegalArgumentException e) { // libraryLookup: no such library
                loaded = "no NVIDIA driver here (libcuda.so.1 not found)";
            } catch (CudaException e) {
                loaded = e.getMessage();
            }
        }
        return loaded instanceof CudaDriver d ? Optional.of(d) : Optional.empty();
    }

    /** Why {@link #get()} is empty (null when a driver is there). */
    public static String unavailableReason() {
        get();
        return loaded instanceof String s ? s : null;
    }

    /** Invokes a downcall returning a status (shared with the other CUDA library bindings). */
    static int call(MethodHandle h, Object... args) {
        try {
            return (int) h.invokeWithArguments(args);
        } catch (RuntimeException | Error e) {
            throw e;
        } catch (Throwable t) {
            throw new IllegalStateException(t);
        }
    }

    /** A downcall's Throwable as an unchecked one (a downcall throws nothing checked). */
    static RuntimeException unchecked(Throwable t) {
        if (t instanceof Error e) throw e;
        return t instanceof RuntimeException r ? r : new IllegalStateException(t);
    }

    /** Throws unless status is CUDA_SUCCESS, naming the call and the driver's error name and text. */
    void check(int status, String callName) {
        if (status == 0) return;
        String name = "CUDA error " + status, text = "";
        try (Arena a = Arena.ofConfined()) {
            MemorySegment p = a.allocate(ADDRESS);
            if (call(cuGetErrorName, status, p) == 0) name = p.get(ADDRESS, 0).reinterpret(256).getString(0);
            if (call(cuGetErrorString, status, p) == 0) text = p.get(ADDRESS, 0).reinterpret(1024).getString(0);
        }
        throw new CudaException(callName + " failed: " + name + (text.isEmpty() ? "" : " (" + text + ")"), status);
    }

    /** Calls h with a fresh 8-byte out-parameter first, checks the status, and returns that word. */
    private long out(MethodHandle h, String name, Object... args) {
        try (Arena a = Arena.ofConfined()) {
            MemorySegment out = a.allocate(JAVA_LONG);
            out.set(JAVA_LONG, 0, 0L);
            Object[] all = new Object[args.length + 1];
            all[0] = out;
            System.arraycopy(args, 0, all, 1, args.length);
            check(call(h, all), name);
            return out.get(JAVA_LONG, 0);
        }
    }

    /** An int out-parameter (the low 4 bytes of the zeroed word, little-endian). */
    private int outInt(MethodHandle h, String name, Object... args) {
        return (int) out(h, name, args);
    }

    public int driverVersion() {
        return outInt(cuDriverGetVersion, "cuDriverGetVersion");
    }

    /** How many devices the driver reports. */
    public int deviceCount() {
        return outInt(cuDeviceGetCount, "cuDeviceGetCount");
    }

    public int device(int ordinal) {
        return outInt(cuDeviceGet, "cuDeviceGet", ordinal);
    }

    public String deviceName(int device) {
        try (Arena a = Arena.ofConfined()) {
            MemorySegment buf = a.allocate(256);
            check(call(cuDeviceGetName, buf, 256, device), "cuDeviceGetName");
            return buf.getString(0);
        }
    }

    public long totalMemory(int device) {
        return out(cuDeviceTotalMem, "cuDeviceTotalMem_v2", device);
    }

    /** CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR (75) and _MINOR (76) as major * 10 + minor. */
    public int computeCapability(int device) {
        return outInt(cuDeviceGetAttribute, "cuDeviceGetAttribute", 75, device) * 10
                + outInt(cuDeviceGetAttribute, "cuDeviceGetAttribute", 76, device);
    }

    /** Retains the device's primary context and makes it current on this thread. */
    public long useDevice(int device) {
        long ctx = out(cuDevicePrimaryCtxRetain, "cuDevicePrimaryCtxRetain", device);
        contexts.incrementAndGet();
        makeCurrent(ctx);
        return ctx;
    }

    /** Gives back what {@link #useDevice} retained (the primary context is destroyed with its last release). */
    public void releaseDevice(int device) {
        try {
            check(call(cuDevicePrimaryCtxRelease, device), "cuDevicePrimaryCtxRelease_v2");
        } finally {
            contexts.incrementAndGet(); // a handle made current before may name a destroyed context: every thread sets it again
        }
    }

    /** Makes ctx current on the calling thread unless this driver made it current there already (contexts are per thread). */
    public void makeCurrent(long ctx) {
        long[] c = current.get();
        long n = contexts.get();
        if (c[0] == ctx && c[1] == n) return;
        check(call(cuCtxSetCurrent, MemorySegment.ofAddress(ctx)), "cuCtxSetCurrent");
        c[0] = ctx;
        c[1] = n;
    }

    public void synchronize() {
        check(call(cuCtxSynchronize), "cuCtxSynchronize");
    }

    /** {free, total} device bytes. */
    public long[] memoryInfo() {
        try (Arena a = Arena.ofConfined()) {
            MemorySegment free = a.allocate(JAVA_LONG), total = a.allocate(JAVA_LONG);
            check(call(cuMemGetInfo, free, total), "cuMemGetInfo_v2");
            return new long[] {free.get(JAVA_LONG, 0), total.get(JAVA_LONG, 0)};
        }
    }

    public long malloc(long bytes) {
        return out(cuMemAlloc, "cuMemAlloc_v2(" + bytes + " bytes)", bytes);
    }

    public void free(long ptr) {
        check(call(cuMemFree, ptr), "cuMemFree_v2");
    }

    /** Page-locked host memory (copies from it are asynchronous to the host), as a segment of that size. */
    public MemorySegment hostAlloc(long bytes) {
        return MemorySegment.ofAddress(out(cuMemAllocHost, "cuMemAllocHost_v2(" + bytes + " bytes)", bytes)).reinterpret(bytes);
    }

    public void hostFree(MemorySegment pinned) {
        check(call(cuMemFreeHost, pinned.address()), "cuMemFreeHost");
    }

    /** Waits until the work queued before the event's record has run. */
    public void eventSynchronize(long event) {
        check(call(cuEventSynchronize, MemorySegment.ofAddress(event)), "cuEventSynchronize");
    }

    public void copyToDevice(long dst, MemorySegment src, long bytes, long stream) {
        check(call(cuMemcpyHtoD, dst, src, bytes, MemorySegment.ofAddress(stream)), "cuMemcpyHtoDAsync_v2");
    }

    public void copyToHost(MemorySegment dst, long src, long bytes, long stream) {
        check(call(cuMemcpyDtoH, dst, src, bytes, MemorySegment.ofAddress(stream)), "cuMemcpyDtoHAsync_v2");
    }

    public void copyOnDevice(long dst, long src, long bytes, long stream) {
        check(call(cuMemcpyDtoD, dst, src, bytes, MemorySegment.ofAddress(stream)), "cuMemcpyDtoDAsync_v2");
    }

    /** Fills count 32-bit words (e.g. a NaN bit pattern to poison an output). */
    public void fill32(long dst, int value, long count, long stream) {
        check(call(cuMemsetD32, dst, value, count, MemorySegment.ofAddress(stream)), "cuMemsetD32Async");
    }

    public long streamCreate() {
        return out(cuStreamCreate, "cuStreamCreate", 0);
    }

    public void streamDestroy(long stream) {
        check(call(cuStreamDestroy, MemorySegment.ofAddress(stream)), "cuStreamDestroy_v2");
    }

    public void streamSynchronize(long stream) {
        check(call(cuStreamSynchronize, MemorySegment.ofAddress(stream)), "cuStreamSynchronize");
    }

    /** An event that can time (elapsedMs). */
    public long eventCreate() {
        return out(cuEventCreate, "cuEventCreate", 0);
    }

    /** An event only waited on: CU_EVENT_DISABLE_TIMING, the cheaper kind to record and to wait for. */
    public long syncEventCreate() {
        return out(cuEventCreate, "cuEventCreate", 2);
    }

    public void eventDestroy(long event) {
        check(call(cuEventDestroy, MemorySegment.ofAddress(event)), "cuEventDestroy");
    }

    public void eventRecord(long event, long stream) {
        check(call(cuEventRecord, MemorySegment.ofAddress(event), MemorySegment.ofAddress(stream)), "cuEventRecord");
    }

    /** Milliseconds between two recorded events (waits for the second). */
    public float elapsedMs(long start, long end) {
        check(call(cuEventSynchronize, MemorySegment.ofAddress(end)), "cuEventSynchronize");
        try (Arena a = Arena.ofConfined()) {
            MemorySegment ms = a.allocate(JAVA_FLOAT);
            check(call(cuEventElapsedTime, ms, MemorySegment.ofAddress(start), MemorySegment.ofAddress(end)), "cuEventElapsedTime");
            return ms.get(JAVA_FLOAT, 0);
        }
    }

    public void unloadModule(long module) {
        check(call(cuModuleUnload, MemorySegment.ofAddress(module)), "cuModuleUnload");
    }

    /** Loads a module from an image in memory (a fatbin, cubin or PTX). */
    public long loadModule(byte[] image) {
        try (Arena a = Arena.ofConfined()) {
            MemorySegment img = a.allocate(image.length + 1L);
            MemorySegment.copy(image, 0, img, java.lang.foreign.ValueLayout.JAVA_BYTE, 0, image.length);
            return out(cuModuleLoadData, "cuModuleLoadData", img);
        }
    }

    public long function(long module, String name) {
        try (Arena a = Arena.ofConfined()) {
            return out(cuModuleGetFunction, "cuModuleGetFunction(" + name + ")", MemorySegment.ofAddress(module), a.allocateFrom(name));
        }
    }

    /**
     * The byte size of each parameter of a kernel as compiled, or null when this driver cannot say
     * (cuFuncGetParamInfo came with CUDA 12.4).
     */
    public long[] parameterSizes(long function) {
        if (cuFuncGetParamInfo == null) return null;
        java.util.List<Long> sizes = new java.util.ArrayList<>();
        try (Arena a = Arena.ofConfined()) {
            MemorySegment offset = a.allocate(JAVA_LONG), size = a.allocate(JAVA_LONG);
            while (sizes.size() < MAX_ARGS && call(cuFuncGetParamInfo, MemorySegment.ofAddress(function), (long) sizes.size(), offset, size) == 0)
                sizes.add(size.get(JAVA_LONG, 0));
        }
        return sizes.stream().mapToLong(Long::longValue).toArray();
    }

    /** CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES: a kernel may take more than 48 KB of dynamic shared memory only when told. */
    public void setMaxDynamicSharedMemory(long function, String name, int bytes) {
        check(call(cuFuncSetAttribute, MemorySegment.ofAddress(function), 8, bytes), "cuFuncSetAttribute(" + name + ", " + bytes + " B)");
    }

    /** Per thread: 64 argument slots of 8 bytes and the array of pointers to them that cuLaunchKernel takes. */
    private static final int MAX_ARGS = 64;
    private static final ThreadLocal<MemorySegment[]> LAUNCH_ARGS = ThreadLocal.withInitial(() -> {
        Arena a = Arena.ofAuto();
        MemorySegment values = a.allocate(8L * MAX_ARGS, 8), pointers = a.allocate(ADDRESS, MAX_ARGS);
        for (int i = 0; i < MAX_ARGS; i++) pointers.setAtIndex(ADDRESS, i, values.asSlice(8L * i, 8));
        return new MemorySegment[] {values, pointers};
    });

    /**
     * Launches a kernel. Arguments, in the kernel's order: Long (a device pointer or an int64), Integer,
     * Float; null passes a null pointer. No allocation: the argument slots are per thread and reused
     * (the driver copies them at the call).
     */
    public void launch(long function, String name, int[] grid, int[] block, int sharedBytes, long stream, Object... args) {
        if (args.length > MAX_ARGS) throw new IllegalArgumentException(name + ": more than " + MAX_ARGS + " kernel arguments");
        MemorySegment[] slots = LAUNCH_ARGS.get();
        MemorySegment values = slots[0];
        for (int i = 0; i < args.length; i++) {
            long at = 8L * i;
            switch (args[i]) {
                case null -> values.set(JAVA_LONG, at, 0L);
                case Long l -> values.set(JAVA_LONG, at, l);
                case Integer n -> values.set(JAVA_INT, at, n);
                case Float f -> values.set(JAVA_FLOAT, at, f);
                default -> throw new IllegalArgumentException(name + ": argument " + i + " is a " + args[i].getClass().getSimpleName()
                        + ", not Long, Integer or Float");
            }
        }
        int status;
        try {
            status = (int) cuLaunchKernel.invokeExact(function, grid[0], grid[1], grid[2], block[0], block[1], block[2], sharedBytes, stream,
                    slots[1], MemorySegment.NULL);
        } catch (Throwable t) {
            throw CudaDriver.unchecked(t);
        }
        if (status != 0) check(status, "cuLaunchKernel(" + name + ")"); // no message built on the hot path
    }
}
