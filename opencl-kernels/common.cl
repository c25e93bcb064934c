// Shared helpers of topa's OpenCL kernels. The backend builds one program from this file and every
// family's file (OpenClKernel lists them), so a kernel here is found by name like a CUDA one.
//
// A tensor argument is two parameters: the buffer (cl_mem) and the tensor's offset in it, in
// elements. Tensors are views into the caching allocator's buffers, so the offset is rarely 0; a
// null buffer is an absent optional tensor (AT then gives a null pointer, the kernel tests it).
// Sizes are long (int64 on the host), as in native/topa_cpu.h; every kernel guards its global id,
// because the host rounds global sizes up to whole work-groups.

#ifdef cl_khr_fp64
#pragma OPENCL EXTENSION cl_khr_fp64 : enable
typedef double acc_t; // sums the CPU kernels keep in double (losses, gradient norms)
#else
typedef float acc_t;
#endif

#define TENSOR(T, name) __global T *name##_buf, ulong name##_off
#define AT(name) (name##_buf ? name##_buf + name##_off : name##_buf)

// Dropout's counter-based mask (native/topa_cpu.h, cuda-kernels/common.cuh): element i is kept iff
// (hash32(i ^ key) >> 8) >= threshold, a pure function of (key, i), so every backend draws one mask.
inline uint topa_hash32(uint x) {
    x ^= x >> 16;
    x *= 0x7feb352du;
    x ^= x >> 15;
    x *= 0x846ca68bu;
    x ^= x >> 16;
    return x;
}

inline int topa_dropout_keep(uint i, uint key, uint threshold) { return (topa_hash32(i ^ key) >> 8) >= threshold; }

// x rounded to bf16 (nearest even; NaN stays NaN) and back to f32: what a bf16 operand holds
inline uint topa_bf16_bits(float x) {
    uint u = as_uint(x);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (u >> 16) | 0x40u; // quiet NaN
    return (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
}

inline float topa_bf16_round(float x) { return as_float(topa_bf16_bits(x) << 16); }
