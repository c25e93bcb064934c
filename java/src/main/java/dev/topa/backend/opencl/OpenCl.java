package dev.topa.backend.opencl;

import static java.lang.foreign.ValueLayout.ADDRESS;
import static java.lang.foreign.ValueLayout.JAVA_INT;
import static java.lang.foreign.ValueLayout.JAVA_LONG;

import java.lang.foreign.Arena;
import java.lang.foreign.FunctionDescriptor;
import java.lang.foreign.Linker;
import java.lang.foreign.MemoryLayout;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.SymbolLookup;
import java.lang.invoke.MethodHandle;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Optional;

/**
 * OpenCL 1.2 through FFM on the ICD loader (libOpenCL.so.1, which dispatches to every installed
 * platform: PoCL, NVIDIA, ROCm, Intel): platforms and devices, a context and an in-order queue,
 * buffers, copies and fills, programs built from source, kernels and launches. Every call's status is
 * checked; a failure throws {@link OpenClException} naming the call and the error. Handles are
 * carried as longs (pointers in the ABI). Launches are the hot path: the argument setter and the
 * enqueue are bound with exact types so each is one invokeExact.
 */
public final class OpenCl {
    private static final Linker LINKER = Linker.nativeLinker();
    private static volatile Object loaded; // OpenCl or the String reason it is unavailable

    static final int CL_DEVICE_TYPE_ALL = 0xFFFFFFFF;
    /** The info queries topa asks ({@link #platformInfo}, {@link #deviceInfo}). */
    public static final int CL_PLATFORM_NAME = 0x0902, CL_DEVICE_NAME = 0x102B, CL_DEVICE_VERSION = 0x102F, CL_DEVICE_EXTENSIONS = 0x1030;
    static final int CL_PROGRAM_BUILD_LOG = 0x1183, CL_KERNEL_NUM_ARGS = 0x1191;
    static final long CL_MEM_READ_WRITE = 1;

    private final MethodHandle clGetPlatformIDs, clGetPlatformInfo, clGetDeviceIDs, clGetDeviceInfo, clCreateContext, clCreateCommandQueue,
            clCreateBuffer, clReleaseMemObject, clEnqueueWriteBuffer, clEnqueueReadBuffer, clEnqueueCopyBuffer, clEnqueueFillBuffer,
            clCreateProgramWithSource, clBuildProgram, clGetProgramBuildInfo, clCreateKernel, clGetKernelInfo, clSetKernelArg,
            clEnqueueNDRangeKernel, clFinish, clReleaseKernel, clReleaseProgram, clReleaseCommandQueue, clReleaseContext, clWaitForEvents,
            clReleaseEvent;

    private OpenCl(SymbolLookup lib) {
        clGetPlatformIDs = bind(lib, "clGetPlatformIDs", JAVA_INT, ADDRESS, ADDRESS);
        clGetPlatformInfo = bind(lib, "clGetPlatformInfo", JAVA_LONG, JAVA_INT, JAVA_LONG, ADDRESS, ADDRESS);
        clGetDeviceIDs = bind(lib, "clGetDeviceIDs", JAVA_LONG, JAVA_LONG, JAVA_INT, ADDRESS, ADDRESS);
        clGetDeviceInfo = bind(lib, "clGetDeviceInfo", JAVA_LONG, JAVA_INT, JAVA_LONG, ADDRESS, ADDRESS);
        clCreateContext = bindReturning(lib, "clCreateContext", JAVA_LONG, ADDRESS, JAVA_INT, ADDRESS, ADDRESS, ADDRESS, ADDRESS);
        clCreateCommandQueue = bindReturning(lib, "clCreateCommandQueue", JAVA_LONG, JAVA_LONG, JAVA_LONG, JAVA_LONG, ADDRESS);
        clCreateBuffer = bindReturning(lib, "clCreateBuffer", JAVA_LONG, JAVA_LONG, JAVA_LONG, JAVA_LONG, ADDRESS, ADDRESS);
        clReleaseMemObject = bind(lib, "clReleaseMemObject", JAVA_LONG);
        clEnqueueWriteBuffer = bind(lib, "clEnqueueWriteBuffer", JAVA_LONG, JAVA_LONG, JAVA_INT, JAVA_LONG, JAVA_LONG, ADDRESS, JAVA_INT, ADDRESS,
                ADDRESS);
        clEnqueueReadBuffer = bind(lib, "clEnqueueReadBuffer", JAVA_LONG, JAVA_LONG, JAVA_INT, JAVA_LONG, JAVA_LONG, ADDRESS, JAVA_INT, ADDRESS,
                ADDRESS);
        clEnqueueCopyBuffer = bind(lib, "clEnqueueCopyBuffer", JAVA_LONG, JAVA_LONG, JAVA_LONG, JAVA_LONG, JAVA_LONG, JAVA_LONG, JAVA_INT,
                ADDRESS, ADDRESS);
        clEnqueueFillBuffer = bind(lib, "clEnqueueFillBuffer", JAVA_LONG, JAVA_LONG, ADDRESS, JAVA_LONG, JAVA_LONG, JAVA_LONG, JAVA_INT, ADDRESS,
                ADDRESS);
        clCreateProgramWithSource = bindReturning(lib, "clCreateProgramWithSource", JAVA_LONG, JAVA_LONG, JAVA_INT, ADDRESS, ADDRESS, ADDRESS);
        clBuildProgram = bind(lib, "clBuildProgram", JAVA_LONG, JAVA_INT, ADDRESS, ADDRESS, ADDRESS, ADDRESS);
        clGetProgramBuildInfo = bind(lib, "clGetProgramBuildInfo", JAVA_LONG, JAVA_LONG, JAVA_INT, JAVA_LONG, ADDRESS, ADDRESS);
        clCreateKernel = bindReturning(lib, "clCreateKernel", JAVA_LONG, JAVA_LONG, ADDRESS, ADDRESS);
        clGetKernelInfo = bind(lib, "clGetKernelInfo", JAVA_LONG, JAVA_INT, JAVA_LONG, ADDRESS, ADDRESS);
        clSetKernelArg = bind(lib, "clSetKernelArg", JAVA_LONG, JAVA_INT, JAVA_LONG, ADDRESS);
        clEnqueueNDRangeKernel = bind(lib, "clEnqueueNDRangeKernel", JAVA_LONG, JAVA_LONG, JAVA_INT, ADDRESS, ADDRESS, ADDRESS, JAVA_INT, ADDRESS,
                ADDRESS);
        clFinish = bind(lib, "clFinish", JAVA_LONG);
        clReleaseKernel = bind(lib, "clReleaseKernel", JAVA_LONG);
        clReleaseProgram = bind(lib, "clReleaseProgram", JAVA_LONG);
        clReleaseCommandQueue = bind(lib, "clReleaseCommandQueue", JAVA_LONG);
        clReleaseContext = bind(lib, "clReleaseContext", JAVA_LONG);
        clWaitForEvents = bind(lib, "clWaitForEvents", JAVA_INT, ADDRESS);
        clReleaseEvent = bind(lib, "clReleaseEvent", JAVA_LONG);
    }

    private static MethodHandle bind(SymbolLookup lib, String name, MemoryLayout... args) {
        return bindReturning(lib, name, JAVA_INT, args);
    }

    private static MethodHandle bindReturning(SymbolLookup lib, String name, MemoryLayout result, MemoryLayout... args) {
        MemorySegment f = lib.find(name).orElseThrow(() -> new OpenClException("libOpenCL.so.1 has no symbol " + name));
        return LINKER.downcallHandle(f, FunctionDescriptor.of(result, args));
    }

    /** The ICD loader, or empty when this machine has none or no platform; then {@link #unavailableReason()} says why. */
    public static synchronized Optional<OpenCl> get() {
        if (loaded == null) {
            try {
                OpenCl cl = new OpenCl(SymbolLookup.libraryLookup("libOpenCL.so.1", Arena.global()));
                loaded = cl.platforms().isEmpty() ? "the OpenCL ICD loader finds no platform (install one: pocl-opencl-icd for the CPU, "
                        + "or a GPU vendor's driver)" : cl;
            } catch (IllegalArgumentException e) {
                loaded = "no OpenCL ICD loader here (libOpenCL.so.1 not found; Debian: ocl-icd-libopencl1)";
            } catch (OpenClException e) {
                loaded = e.getMessage();
            }
        }
        return loaded instanceof OpenCl cl ? Optional.of(cl) : Optional.empty();
    }

    /** Why {@link #get()} is empty (null when OpenCL is there). */
    public static String unavailableReason() {
        get();
        return loaded instanceof String s ? s : null;
    }

    static int call(MethodHandle h, Object... args) {
        try {
            return (int) h.invokeWithArguments(args);
        } catch (Throwable t) {
            throw unchecked(t);
        }
    }

    static RuntimeException unchecked(Throwable t) {
        if (t instanceof Error e) throw e;
        return t instanceof RuntimeException r ? r : new IllegalStateException(t);
    }

    private static final Map<Integer, String> ERRORS = Map.ofEntries(Map.entry(-1, "CL_DEVICE_NOT_FOUND"),
            Map.entry(-2, "CL_DEVICE_NOT_AVAILABLE"), Map.entry(-4, "CL_MEM_OBJECT_ALLOCATION_FAILURE"), Map.entry(-5, "CL_OUT_OF_RESOURCES"),
            Map.entry(-6, "CL_OUT_OF_HOST_MEMORY"), Map.entry(-11, "CL_BUILD_PROGRAM_FAILURE"), Map.entry(-30, "CL_INVALID_VALUE"),
            Map.entry(-33, "CL_INVALID_DEVICE"), Map.entry(-34, "CL_INVALID_CONTEXT"), Map.entry(-36, "CL_INVALID_COMMAND_QUEUE"),
            Map.entry(-38, "CL_INVALID_MEM_OBJECT"), Map.entry(-44, "CL_INVALID_PROGRAM"), Map.entry(-45, "CL_INVALID_PROGRAM_EXECUTABLE"),
            Map.entry(-46, "CL_INVALID_KERNEL_NAME"), Map.entry(-48, "CL_INVALID_KERNEL"), Map.entry(-49, "CL_INVALID_ARG_INDEX"),
            Map.entry(-50, "CL_INVALID_ARG_VALUE"), Map.entry(-51, "CL_INVALID_ARG_SIZE"), Map.entry(-52, "CL_INVALID_KERNEL_ARGS"),
            Map.entry(-54, "CL_INVALID_WORK_GROUP_SIZE"), Map.entry(-55, "CL_INVALID_WORK_ITEM_SIZE"), Map.entry(-61, "CL_INVALID_BUFFER_SIZE"),
            Map.entry(-63, "CL_INVALID_GLOBAL_WORK_SIZE"), Map.entry(-1001, "CL_PLATFORM_NOT_FOUND_KHR"));

    static String errorName(int status) {
        return ERRORS.getOrDefault(status, "OpenCL error " + status);
    }

    static void check(int status, String callName) {
        if (status != 0) throw new OpenClException(callName + " failed: " + errorName(status), status);
    }

    // ---------------------------------------------------------------- platforms and devices

    /** Every platform's handle (none when the loader finds no ICD). */
    public List<Long> platforms() {
        try (Arena a = Arena.ofConfined()) {
            MemorySegment n = a.allocate(JAVA_INT);
            int st = call(clGetPlatformIDs, 0, MemorySegment.NULL, n);
            if (st == -1001) return List.of(); // no ICD installed
            check(st, "clGetPlatformIDs");
            int count = n.get(JAVA_INT, 0);
            if (count == 0) return List.of();
            MemorySegment ids = a.allocate(JAVA_LONG, count);
            check(call(clGetPlatformIDs, count, ids, MemorySegment.NULL), "clGetPlatformIDs");
            List<Long> out = new ArrayList<>();
            for (int i = 0; i < count; i++) out.add(ids.getAtIndex(JAVA_LONG, i));
            return out;
        }
    }

    public String platformInfo(long platform, int param) {
        return string((size, value, ret) -> call(clGetPlatformInfo, platform, param, size, value, ret), "clGetPlatformInfo");
    }

    /** Every device of a platform (any type). */
    public List<Long> devices(long platform) {
        try (Arena a = Arena.ofConfined()) {
            MemorySegment n = a.allocate(JAVA_INT);
            int st = call(clGetDeviceIDs, platform, (long) CL_DEVICE_TYPE_ALL & 0xFFFFFFFFL, 0, MemorySegment.NULL, n);
            if (st == -1) return List.of(); // CL_DEVICE_NOT_FOUND
            check(st, "clGetDeviceIDs");
            int count = n.get(JAVA_INT, 0);
            MemorySegment ids = a.allocate(JAVA_LONG, Math.max(1, count));
            check(call(clGetDeviceIDs, platform, (long) CL_DEVICE_TYPE_ALL & 0xFFFFFFFFL, count, ids, MemorySegment.NULL), "clGetDeviceIDs");
            List<Long> out = new ArrayList<>();
            for (int i = 0; i < count; i++) out.add(ids.getAtIndex(JAVA_LONG, i));
            return out;
        }
    }

    public String deviceInfo(long device, int param) {
        return string((size, value, ret) -> call(clGetDeviceInfo, device, param, size, value, ret), "clGetDeviceInfo");
    }

    private interface InfoCall {
        int call(long size, MemorySegment value, MemorySegment sizeRet);
    }

    private static String string(InfoCall f, String name) {
        try (Arena a = Arena.ofConfined()) {
            MemorySegment n = a.allocate(JAVA_LONG);
            check(f.call(0, MemorySegment.NULL, n), name);
            long size = n.get(JAVA_LONG, 0);
            MemorySegment v = a.allocate(Math.max(1, size));
            check(f.call(size, v, MemorySegment.NULL), name);
            return v.getString(0).trim();
        }
    }

    // ---------------------------------------------------------------- context, queue, memory

    public long createContext(long device) {
        try (Arena a = Arena.ofConfined()) {
            MemorySegment err = a.allocate(JAVA_INT), dev = a.allocateFrom(JAVA_LONG, device);
            long ctx = (long) invoke(clCreateContext, MemorySegment.NULL, 1, dev, MemorySegment.NULL, MemorySegment.NULL, err);
            check(err.get(JAVA_INT, 0), "clCreateContext");
            return ctx;
        }
    }

    /** An in-order queue (ops are ordered without waiting on the host). */
    public long createQueue(long context, long device) {
        try (Arena a = Arena.ofConfined()) {
            MemorySegment err = a.allocate(JAVA_INT);
            long q = (long) invoke(clCreateCommandQueue, context, device, 0L, err);
            check(err.get(JAVA_INT, 0), "clCreateCommandQueue");
            return q;
        }
    }

    /** A device buffer; null (0) with the status in err[0] when the device is out of memory, so the caller may free and retry. */
    public long createBuffer(long context, long bytes, int[] err) {
        try (Arena a = Arena.ofConfined()) {
            MemorySegment e = a.allocate(JAVA_INT);
            long m = (long) invoke(clCreateBuffer, context, CL_MEM_READ_WRITE, bytes, MemorySegment.NULL, e);
            err[0] = e.get(JAVA_INT, 0);
            return err[0] == 0 ? m : 0;
        }
    }

    public void releaseBuffer(long mem) {
        check(call(clReleaseMemObject, mem), "clReleaseMemObject");
    }

    /** Host to device; blocking, so the caller may reuse host at once. */
    public void write(long queue, long mem, long offset, MemorySegment host, long bytes) {
        check(call(clEnqueueWriteBuffer, queue, mem, 1, offset, bytes, host, 0, MemorySegment.NULL, MemorySegment.NULL), "clEnqueueWriteBuffer");
    }

    /** Device to host, blocking (waits for everything queued before it). */
    public void read(long queue, long mem, long offset, MemorySegment host, long bytes) {
        check(call(clEnqueueReadBuffer, queue, mem, 1, offset, bytes, host, 0, MemorySegment.NULL, MemorySegment.NULL), "clEnqueueReadBuffer");
    }

    /**
     * Host to device without waiting: the copy is queued behind what is queued and host must stay
     * unchanged until it has run; returns its event (wait for it with {@link #waitAndRelease}).
     */
    public long writeAsync(long queue, long mem, long offset, MemorySegment host, long bytes) {
        try (Arena a = Arena.ofConfined()) {
            MemorySegment event = a.allocate(JAVA_LONG);
            check(call(clEnqueueWriteBuffer, queue, mem, 0, offset, bytes, host, 0, MemorySegment.NULL, event), "clEnqueueWriteBuffer");
            return event.get(JAVA_LONG, 0);
        }
    }

    /** Waits for an event, then releases it. */
    public void waitAndRelease(long event) {
        try (Arena a = Arena.ofConfined()) {
            check(call(clWaitForEvents, 1, a.allocateFrom(JAVA_LONG, event)), "clWaitForEvents");
        }
        check(call(clReleaseEvent, event), "clReleaseEvent");
    }

    public void copy(long queue, long src, long srcOffset, long dst, long dstOffset, long bytes) {
        check(call(clEnqueueCopyBuffer, queue, src, dst, srcOffset, dstOffset, bytes, 0, MemorySegment.NULL, MemorySegment.NULL),
                "clEnqueueCopyBuffer");
    }

    /** bytes at offset (both multiples of 4) set to the 32-bit pattern. */
    public void fill32(long queue, long mem, long offset, long bytes, int pattern) {
        try (Arena a = Arena.ofConfined()) {
            check(call(clEnqueueFillBuffer, queue, mem, a.allocateFrom(JAVA_INT, pattern), 4L, offset, bytes, 0, MemorySegment.NULL,
                    MemorySegment.NULL), "clEnqueueFillBuffer");
        }
    }

    public void finish(long queue) {
        check(call(clFinish, queue), "clFinish");
    }

    // ---------------------------------------------------------------- programs and kernels

    /** The program built from source for device; a build failure throws with the compiler's log. */
    public long buildProgram(long context, long device, String source, String options) {
        try (Arena a = Arena.ofConfined()) {
            MemorySegment err = a.allocate(JAVA_INT), strings = a.allocateFrom(ADDRESS, a.allocateFrom(source));
            long program = (long) invoke(clCreateProgramWithSource, context, 1, strings, MemorySegment.NULL, err);
            check(err.get(JAVA_INT, 0), "clCreateProgramWithSource");
            int st = call(clBuildProgram, program, 1, a.allocateFrom(JAVA_LONG, device), a.allocateFrom(options), MemorySegment.NULL,
                    MemorySegment.NULL);
            if (st != 0) {
                String log = string((size, value, ret) -> call(clGetProgramBuildInfo, program, device, CL_PROGRAM_BUILD_LOG, size, value, ret),
                        "clGetProgramBuildInfo");
                throw new OpenClException("clBuildProgram failed: " + errorName(st) + "\n" + log, st);
            }
            return program;
        }
    }

    public long createKernel(long program, String name) {
        try (Arena a = Arena.ofConfined()) {
            MemorySegment err = a.allocate(JAVA_INT);
            long k = (long) invoke(clCreateKernel, program, a.allocateFrom(name), err);
            check(err.get(JAVA_INT, 0), "clCreateKernel(" + name + ")");
            return k;
        }
    }

    public int kernelArgCount(long kernel) {
        try (Arena a = Arena.ofConfined()) {
            MemorySegment v = a.allocate(JAVA_INT);
            check(call(clGetKernelInfo, kernel, CL_KERNEL_NUM_ARGS, 4L, v, MemorySegment.NULL), "clGetKernelInfo");
            return v.get(JAVA_INT, 0);
        }
    }

    /** Argument index of kernel from the bytes at value (copied by the call). */
    public int setArg(long kernel, int index, long bytes, MemorySegment value) {
        try {
            return (int) clSetKernelArg.invokeExact(kernel, index, bytes, value);
        } catch (Throwable t) {
            throw unchecked(t);
        }
    }

    /** A 1-D launch: global work-items in work-groups of local (global a multiple of local). */
    public int enqueue(long queue, long kernel, MemorySegment global, MemorySegment local) {
        try {
            return (int) clEnqueueNDRangeKernel.invokeExact(queue, kernel, 1, MemorySegment.NULL, global, local, 0, MemorySegment.NULL,
                    MemorySegment.NULL);
        } catch (Throwable t) {
            throw unchecked(t);
        }
    }

    public void releaseKernel(long kernel) {
        call(clReleaseKernel, kernel);
    }

    public void releaseProgram(long program) {
        call(clReleaseProgram, program);
    }

    public void releaseQueue(long queue) {
        call(clReleaseCommandQueue, queue);
    }

    public void releaseContext(long context) {
        call(clReleaseContext, context);
    }

    private static Object invoke(MethodHandle h, Object... args) {
        try {
            return h.invokeWithArguments(args);
        } catch (Throwable t) {
            throw unchecked(t);
        }
    }
}
