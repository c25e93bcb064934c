// AdamW with PyTorch's semantics (native/adamw.c; scalars formed on the host in double, rounded
// once), on grad x gradScale, the scale read from the device when scale_at is given (clip_scale's
// factor; 0 leaves the tensor as it is). The gradient norm: per work-group partial sums of squares
// into partials, summed in order by sum_partials, and the clip decision by clip_scale -- a training
// step reads nothing back.

__kernel void adamw_step(TENSOR(float, param), TENSOR(const float, grad), TENSOR(float, m), TENSOR(float, v), long n, float b1, float b2,
                         float one_b1, float one_b2, float inv_sqrt_bc2, float step, float decay, float eps, float grad_scale,
                         TENSOR(const float, scale_at)) {
    long i = get_global_id(0);
    if (i >= n) return;
    if (scale_at_buf) {
        grad_scale = AT(scale_at)[0];
        if (grad_scale == 0.0f) return;
    }
    float g = AT(grad)[i] * grad_scale;
    float mi = b1 * AT(m)[i] + one_b1 * g, vi = b2 * AT(v)[i] + one_b2 * g * g;
    AT(m)[i] = mi;
    AT(v)[i] = vi;
    AT(param)[i] = AT(param)[i] * decay - step * mi / (sqrt(vi) * inv_sqrt_bc2 + eps);
}

#define TOPA_SUM_LOCAL 64

// partials[slot + group] = sum of x^2 over the group's stride of x (local size TOPA_SUM_LOCAL)
__kernel void sum_squares(TENSOR(acc_t, partials), long slot, TENSOR(const float, x), long n) {
    __local acc_t s[TOPA_SUM_LOCAL];
    int l = get_local_id(0);
    acc_t a = 0;
    for (long i = get_global_id(0); i < n; i += get_global_size(0)) a += (acc_t)AT(x)[i] * (acc_t)AT(x)[i];
    s[l] = a;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int h = TOPA_SUM_LOCAL / 2; h > 0; h >>= 1) {
        if (l < h) s[l] += s[l + h];
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    if (l == 0) AT(partials)[slot + get_group_id(0)] = s[0];
}

__kernel void sum_partials(TENSOR(acc_t, total), TENSOR(const acc_t, partials), long count) {
    if (get_global_id(0) != 0) return;
    acc_t s = 0;
    for (long i = 0; i < count; i++) s += AT(partials)[i];
    AT(total)[0] = s;
}

// state (Backend.CLIP_*): [0] the first step whose loss or norm was not finite, [1] its loss, [2]
// its norm, [3] this step's scale: min(1, maxNorm / norm), 1 when maxNorm <= 0, 0 after a bad step.
__kernel void clip_scale(TENSOR(float, state), TENSOR(const acc_t, sum_squares), TENSOR(const float, loss), float max_norm, float step) {
    if (get_global_id(0) != 0) return;
    __global float *st = AT(state);
    acc_t norm = sqrt(AT(sum_squares)[0]);
    float l = loss_buf ? AT(loss)[0] : 0.0f;
    if ((!isfinite(norm) || !isfinite(l)) && st[0] == 0.0f) {
        st[0] = step;
        st[1] = l;
        st[2] = (float)norm;
    }
    st[3] = st[0] != 0.0f ? 0.0f : max_norm > 0.0f && norm > max_norm ? (float)(max_norm / norm) : 1.0f;
}
