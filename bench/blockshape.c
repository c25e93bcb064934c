/* Which block edge for block-sparse weights (issue 5): native/blocksparse.c compiled three times,
 * with 16 x 16, 32 x 32 and 64 x 64 blocks (symbol suffixes _bs16, _bs32, _bs64), timed back to back
 * at the same kept fraction (20% of the weights, blocks kept at random) on BERT-base's FFN shapes
 * with 4096 tokens: forward Y = X W^T and input gradient dX = dY W. Prints `name: value` lines,
 * effective GFLOP/s (the dense product's FLOPs over the time), best edge last. */
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int topa_get_num_threads(void) { return omp_get_max_threads(); }

#define DECLARE(S)                                                                                                     \
    void topa_bsr_pack_bs##S(const float *, int64_t, int64_t, const uint8_t *, int, float *, int32_t *, int32_t *);   \
    int topa_bsr_linear_bs##S(int64_t, int64_t, int64_t, const float *, int64_t, const float *, const int32_t *,       \
                              const int32_t *, const float *, float, float *, int64_t, int64_t, const float *,          \
                              const float *, float, int);
DECLARE(16)
DECLARE(32)
DECLARE(64)

typedef void (*pack_fn)(const float *, int64_t, int64_t, const uint8_t *, int, float *, int32_t *, int32_t *);
typedef int (*linear_fn)(int64_t, int64_t, int64_t, const float *, int64_t, const float *, const int32_t *, const int32_t *,
                         const float *, float, float *, int64_t, int64_t, const float *, const float *, float, int);

static double now(void) { return omp_get_wtime(); }

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* median seconds of reps calls after 2 warm-ups */
static double timeit(linear_fn f, int64_t M, int64_t N, int64_t K, const float *X, const float *v, const int32_t *rp,
                     const int32_t *ci, float *Y, int reps) {
    double t[64];
    for (int i = -2; i < reps; i++) {
        double t0 = now();
        f(M, N, K, X, K, v, rp, ci, NULL, 0.0f, Y, N, 0, NULL, NULL, 0.0f, 0);
        if (i >= 0) t[i] = now() - t0;
    }
    qsort(t, reps, sizeof(double), cmp);
    return t[reps / 2];
}

int main(int argc, char **argv) {
    int reps = argc > 1 ? atoi(argv[1]) : 7;
    const int edges[3] = {16, 32, 64};
    pack_fn packs[3] = {topa_bsr_pack_bs16, topa_bsr_pack_bs32, topa_bsr_pack_bs64};
    linear_fn linears[3] = {topa_bsr_linear_bs16, topa_bsr_linear_bs32, topa_bsr_linear_bs64};
    const int64_t M = 4096, shapes[2][2] = {{3072, 768}, {768, 3072}};
    double score[3] = {0, 0, 0};
    srand(7);
    for (int s = 0; s < 2; s++) {
        int64_t out = shapes[s][0], in = shapes[s][1];
        float *W = malloc(out * in * 4), *X = malloc(M * in * 4), *dY = malloc(M * out * 4), *Y = malloc(M * out * 4),
              *dX = malloc(M * in * 4);
        for (int64_t i = 0; i < out * in; i++) W[i] = rand() / (float)RAND_MAX - 0.5f;
        for (int64_t i = 0; i < M * in; i++) X[i] = rand() / (float)RAND_MAX - 0.5f;
        for (int64_t i = 0; i < M * out; i++) dY[i] = rand() / (float)RAND_MAX - 0.5f, Y[i] = 0;
        memset(dX, 0, M * in * 4);
        for (int e = 0; e < 3; e++) {
            int64_t b = edges[e], ob = out / b, ib = in / b, kept = 0;
            uint8_t *mask = malloc(ob * ib);
            for (int64_t i = 0; i < ob * ib; i++) kept += (mask[i] = rand() % 100 < 20);
            float *vf = malloc((kept + 1) * b * b * 4), *vb = malloc((kept + 1) * b * b * 4);
            int32_t *rf = malloc((ob + 1) * 4), *cf = malloc((kept + 1) * 4), *rb = malloc((ib + 1) * 4), *cb = malloc((kept + 1) * 4);
            packs[e](W, out, in, mask, 0, vf, rf, cf);
            packs[e](W, out, in, mask, 1, vb, rb, cb);
            double density = (double)kept / (ob * ib);
            double tf = timeit(linears[e], M, out, in, X, vf, rf, cf, Y, reps);
            double tb = timeit(linears[e], M, in, out, dY, vb, rb, cb, dX, reps);
            double flops = 2.0 * M * out * in;
            printf("block%d_%ldx%ldx%ld_density: %.3f\n", (int)b, (long)M, (long)in, (long)out, density);
            printf("block%d_%ldx%ldx%ld_fwd_kept_gflops: %.1f\n", (int)b, (long)M, (long)in, (long)out, flops * density / tf * 1e-9);
            printf("block%d_%ldx%ldx%ld_bwd_kept_gflops: %.1f\n", (int)b, (long)M, (long)in, (long)out, flops * density / tb * 1e-9);
            score[e] += flops * density / tf * 1e-9 + flops * density / tb * 1e-9;
            free(mask), free(vf), free(vb), free(rf), free(cf), free(rb), free(cb);
        }
        free(W), free(X), free(dY), free(Y), free(dX);
    }
    int best = 0;
    for (int e = 0; e < 3; e++) {
        printf("block%d_mean_kept_gflops: %.1f\n", edges[e], score[e] / 4);
        if (score[e] > score[best]) best = e;
    }
    printf("best_block_edge: %d\n", edges[best]);
    return 0;
}
