package dev.topa.bench;

import static org.jocl.CL.CL_DEVICE_TYPE_ALL;
import static org.jocl.CL.CL_MEM_READ_WRITE;

import dev.topa.backend.opencl.OpenCl;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.Arrays;
import java.util.Locale;
import org.jocl.CL;
import org.jocl.Pointer;
import org.jocl.Sizeof;
import org.jocl.cl_command_queue;
import org.jocl.cl_context;
import org.jocl.cl_context_properties;
import org.jocl.cl_device_id;
import org.jocl.cl_kernel;
import org.jocl.cl_mem;
import org.jocl.cl_platform_id;
import org.jocl.cl_program;

/**
 * What one kernel launch costs the host through each way into OpenCL from Java: topa's FFM binding
 * (OpenCl: clSetKernelArg x 3 and clEnqueueNDRangeKernel, each one invokeExact) and JOCL (the same
 * calls through JNI), on the first OpenCL device (PoCL in CI), a kernel that does almost nothing
 * (64 work-items), LAUNCHES launches then clFinish, median of REPEATS. Prints `name: value` lines,
 * the ratio last. Usage: java -cp benchmarks.jar dev.topa.bench.OpenClLaunchBench [launches] [repeats]
 */
public final class OpenClLaunchBench {
    private static final String SOURCE = "__kernel void bump(__global float *x, ulong off, long n) {"
            + " long i = get_global_id(0); if (i < n) x[off + i] += 1.0f; }";

    public static void main(String[] args) {
        int launches = args.length > 0 ? Integer.parseInt(args[0]) : 20000, repeats = args.length > 1 ? Integer.parseInt(args[1]) : 7;
        OpenCl cl = OpenCl.get().orElseThrow(() -> new IllegalStateException("no OpenCL: " + OpenCl.unavailableReason()));
        long platform = cl.platforms().get(0), device = cl.devices(platform).get(0);
        System.out.println("device: " + cl.deviceInfo(device, OpenCl.CL_DEVICE_NAME) + " (" + cl.platformInfo(platform, OpenCl.CL_PLATFORM_NAME) + ")");
        System.out.println("cpu: " + System.getProperty("os.arch") + ", launches: " + launches + ", repeats: " + repeats);
        double ffm = ffm(cl, device, launches, repeats), jocl = jocl(launches, repeats);
        System.out.printf(Locale.ROOT, "ffm_launch_us: %.3f%njocl_launch_us: %.3f%njocl_over_ffm_launch: %.3f%n", ffm, jocl, jocl / ffm);
    }

    private static double median(double[] t) {
        double[] s = t.clone();
        Arrays.sort(s);
        return s[s.length / 2];
    }

    private static double ffm(OpenCl cl, long device, int launches, int repeats) {
        long ctx = cl.createContext(device), q = cl.createQueue(ctx, device), prog = cl.buildProgram(ctx, device, SOURCE, "");
        long k = cl.createKernel(prog, "bump");
        int[] err = new int[1];
        long buf = cl.createBuffer(ctx, 256, err);
        try (Arena a = Arena.ofConfined()) {
            MemorySegment v = a.allocate(8, 8), g = a.allocateFrom(ValueLayout.JAVA_LONG, 64), l = a.allocateFrom(ValueLayout.JAVA_LONG, 64);
            double[] t = new double[repeats];
            for (int r = -1; r < repeats; r++) {
                long t0 = System.nanoTime();
                for (int i = 0; i < launches; i++) {
                    v.set(ValueLayout.JAVA_LONG, 0, buf);
                    cl.setArg(k, 0, 8, v);
                    v.set(ValueLayout.JAVA_LONG, 0, 0L);
                    cl.setArg(k, 1, 8, v);
                    v.set(ValueLayout.JAVA_LONG, 0, 64L);
                    cl.setArg(k, 2, 8, v);
                    if (cl.enqueue(q, k, g, l) != 0) throw new IllegalStateException("enqueue failed");
                }
                cl.finish(q);
                if (r >= 0) t[r] = (System.nanoTime() - t0) * 1e-3 / launches;
            }
            return median(t);
        } finally {
            cl.releaseBuffer(buf);
            cl.releaseKernel(k);
            cl.releaseProgram(prog);
            cl.releaseQueue(q);
            cl.releaseContext(ctx);
        }
    }

    private static double jocl(int launches, int repeats) {
        CL.setExceptionsEnabled(true);
        cl_platform_id[] platforms = new cl_platform_id[1];
        CL.clGetPlatformIDs(1, platforms, null);
        cl_device_id[] devices = new cl_device_id[1];
        CL.clGetDeviceIDs(platforms[0], CL_DEVICE_TYPE_ALL, 1, devices, null);
        cl_context ctx = CL.clCreateContext(new cl_context_properties(), 1, devices, null, null, null);
        @SuppressWarnings("deprecation")
        cl_command_queue q = CL.clCreateCommandQueue(ctx, devices[0], 0, null);
        cl_program prog = CL.clCreateProgramWithSource(ctx, 1, new String[] {SOURCE}, null, null);
        CL.clBuildProgram(prog, 0, null, null, null, null);
        cl_kernel k = CL.clCreateKernel(prog, "bump", null);
        cl_mem buf = CL.clCreateBuffer(ctx, CL_MEM_READ_WRITE, 256, null, null);
        long[] global = {64}, local = {64};
        double[] t = new double[repeats];
        for (int r = -1; r < repeats; r++) {
            long t0 = System.nanoTime();
            for (int i = 0; i < launches; i++) {
                CL.clSetKernelArg(k, 0, Sizeof.cl_mem, Pointer.to(buf));
                CL.clSetKernelArg(k, 1, Sizeof.cl_ulong, Pointer.to(new long[] {0}));
                CL.clSetKernelArg(k, 2, Sizeof.cl_long, Pointer.to(new long[] {64}));
                CL.clEnqueueNDRangeKernel(q, k, 1, null, global, local, 0, null, null);
            }
            CL.clFinish(q);
            if (r >= 0) t[r] = (System.nanoTime() - t0) * 1e-3 / launches;
        }
        CL.clReleaseMemObject(buf);
        CL.clReleaseKernel(k);
        CL.clReleaseProgram(prog);
        CL.clReleaseCommandQueue(q);
        CL.clReleaseContext(ctx);
        return median(t);
    }
}
