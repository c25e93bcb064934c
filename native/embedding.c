/* Token + position + token-type embedding lookup and its scatter-add backward. */
#include "topa_cpu.h"

#include <omp.h>

int TOPA_FN(embedding_forward)(float *out, const int32_t *ids, const int32_t *pos_ids,
                               const int32_t *type_ids, const float *wte, const float *wpe,
                               const float *wtt, int64_t BS, int64_t S, int64_t C, int64_t vocab,
                               int64_t max_pos, int64_t n_types) {
    for (int64_t t = 0; t < BS; t++) {
        int64_t pos = pos_ids ? pos_ids[t] : t % S;
        int64_t typ = type_ids ? type_ids[t] : 0;
        if (ids[t] < 0 || ids[t] >= vocab || pos < 0 || pos >= max_pos ||
            (wtt && (typ < 0 || typ >= n_types)))
            return (int)(1 + t);
    }
#pragma omp parallel for num_threads(topa_get_num_threads()) schedule(static) if (BS * C > 1 << 14)
    for (int64_t t = 0; t < BS; t++) {
        const float *a = wte + (int64_t)ids[t] * C;
        const float *p = wpe + (pos_ids ? (int64_t)pos_ids[t] : t % S) * C;
        float *o = out + t * C;
        if (wtt) {
            const float *y = wtt + (type_ids ? (int64_t)type_ids[t] : 0) * C;
            for (int64_t c = 0; c < C; c++) o[c] = a[c] + p[c] + y[c];
        } else {
            for (int64_t c = 0; c < C; c++) o[c] = a[c] + p[c];
        }
    }
    return 0;
}

void TOPA_FN(embedding_backward)(float *dwte, float *dwpe, float *dwtt, const float *dout,
                                 const int32_t *ids, const int32_t *pos_ids,
                                 const int32_t *type_ids, int64_t BS, int64_t S, int64_t C) {
    /* Repeated ids add into the same row: threads own column ranges, never rows, so no two
     * threads touch one float and the summation order is fixed. */
#pragma omp parallel num_threads(topa_get_num_threads()) if (BS * C > 1 << 14)
    {
        int tid = omp_get_thread_num(), nth = omp_get_num_threads();
        int64_t c0, c1;
        topa_column_share(tid, nth, C, &c0, &c1);
        for (int64_t t = 0; t < BS; t++) {
            const float *g = dout + t * C;
            if (dwte) {
                float *d = dwte + (int64_t)ids[t] * C;
                for (int64_t c = c0; c < c1; c++) d[c] += g[c];
            }
            if (dwpe) {
                float *d = dwpe + (pos_ids ? (int64_t)pos_ids[t] : t % S) * C;
                for (int64_t c = c0; c < c1; c++) d[c] += g[c];
            }
            if (dwtt) {
                float *d = dwtt + (type_ids ? (int64_t)type_ids[t] : 0) * C;
                for (int64_t c = c0; c < c1; c++) d[c] += g[c];
            }
        }
    }
}
