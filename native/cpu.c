/* ISA detection, thread count and scratch accounting: the parts compiled once, not per ISA. */
#include "topa_cpu.h"

#include <cpuid.h>
#include <omp.h>
#include <stdatomic.h>
#include <stdlib.h>

static int num_threads = 0; /* 0: all cores */
static _Atomic int64_t workspace_bytes = 0;

static uint64_t xgetbv0(void) {
    uint32_t lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((uint64_t)hi << 32) | lo;
}

int topa_cpu_best_isa(void) {
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return TOPA_ISA_SCALAR;
    int osxsave = (c >> 27) & 1, fma = (c >> 12) & 1, avx = (c >> 28) & 1;
    if (!osxsave || !avx) return TOPA_ISA_SCALAR;
    uint64_t xcr0 = xgetbv0();
    if ((xcr0 & 0x6) != 0x6) return TOPA_ISA_SCALAR; /* OS saves XMM and YMM state */
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return TOPA_ISA_SCALAR;
    int avx2 = (b >> 5) & 1;
    int avx512f = (b >> 16) & 1, avx512dq = (b >> 17) & 1, avx512bw = (b >> 30) & 1,
        avx512vl = (b >> 31) & 1;
    if (avx512f && avx512dq && avx512bw && avx512vl && (xcr0 & 0xe6) == 0xe6)
        return TOPA_ISA_AVX512; /* OS also saves opmask and ZMM state */
    if (avx2 && fma) return TOPA_ISA_AVX2;
    return TOPA_ISA_SCALAR;
}

int topa_cpu_has_avx512bf16(void) {
    unsigned a, b, c, d;
    if (topa_cpu_best_isa() != TOPA_ISA_AVX512) return 0;
    if (!__get_cpuid_count(7, 1, &a, &b, &c, &d)) return 0;
    return (a >> 5) & 1;
}

void topa_set_num_threads(int n) { num_threads = n > 0 ? n : 0; }

int topa_get_num_threads(void) { return num_threads > 0 ? num_threads : omp_get_num_procs(); }

int64_t topa_workspace_bytes(void) { return atomic_load(&workspace_bytes); }

static _Thread_local float *scratch_buf[TOPA_SCRATCH_SLOTS];
static _Thread_local int64_t scratch_cap[TOPA_SCRATCH_SLOTS];

float *topa_thread_scratch(int slot, int64_t floats) {
    if (scratch_cap[slot] < floats) {
        int64_t bytes = (floats * (int64_t)sizeof(float) + 63) & ~(int64_t)63;
        float *p = aligned_alloc(64, (size_t)bytes);
        if (!p) return NULL;
        free(scratch_buf[slot]);
        atomic_fetch_add(&workspace_bytes, bytes - scratch_cap[slot] * (int64_t)sizeof(float));
        scratch_buf[slot] = p;
        scratch_cap[slot] = bytes / (int64_t)sizeof(float);
    }
    return scratch_buf[slot];
}
