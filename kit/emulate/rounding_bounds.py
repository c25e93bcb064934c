# The bounds the GPU kit's parity checks ask where the device rounds more than the CPU does: each
# figure is the relative error (sqrt(sum d^2) / sqrt(sum ref^2)) between the CPU's computation and the
# device's, both emulated here in float64 with bf16 round-to-nearest-even where each rounds.
import numpy as np
rng = np.random.default_rng(0)
def bf(a):
    a = np.asarray(a, dtype=np.float32); b = a.view(np.uint32).astype(np.uint64)
    return (((b + 0x7fff + ((b >> 16) & 1)) >> 16) << 16).astype(np.uint32).view(np.float32).astype(np.float64)
def rel(a, b): return np.sqrt(((a - b) ** 2).sum() / (a ** 2).sum())
U = lambda *s: rng.uniform(-1, 1, s)
m, c, f, r = 256, 768, 3072, 16
# BackendParity.bf16Gemm: the rank-r term in the bf16 GEMM (device: scale u and B rounded) vs added in fp32 (CPU)
x, w, bias, u, b, y0 = U(m, c), U(f, c), U(f), U(m, r), U(f, r), U(m, f)
base = bf(x) @ bf(w).T
print("bf16_frozen_forward_lora: %.2e (bound 5e-4)" % rel(0.75 * (base + 0.25 * u @ b.T) + 0.5 * y0 + bias,
                                                          0.75 * (base + bf(0.25 * u) @ bf(b).T) + 0.5 * y0 + bias))
# BackendParity.bf16LoraWithFactor: u = x A^T then the same
a = U(r, c); uu = x @ a.T
print("bf16_lora_forward_with_factor_y: %.2e (bound 3e-3)" % rel(base + 0.25 * uu @ b.T + bias, base + bf(0.25 * uu) @ bf(b).T + bias))
g = U(m, f); gg = g @ b; dx0 = U(m, c)
print("bf16_lora_input_gradient_with_factor_dx: %.2e (bound 3e-3)" % rel(dx0 + bf(g) @ bf(w) + 0.25 * gg @ a,
                                                                         dx0 + bf(g) @ bf(w) + bf(0.25 * gg) @ bf(a)))
# attention backward on the tensor cores: Q, K, V, dO and then P, dS rounded for the second products, vs float64
def attention_backward(S, D, rounded):
    r_ = bf if rounded else (lambda t: t)
    scale = 1 / np.sqrt(D); out = []
    for _ in range(12):
        Q, K, V, dO = (U(S, D) for _ in range(4))
        s = r_(scale * Q) @ r_(K).T
        P = np.exp(s - s.max(1, keepdims=True)); P /= P.sum(1, keepdims=True)
        dP = r_(dO) @ r_(V).T; dS = P * (dP - (P * dP).sum(1, keepdims=True))
        out += [(scale * r_(dS) @ r_(K)).ravel(), (scale * r_(dS).T @ r_(Q)).ravel(), (r_(P).T @ r_(dO)).ravel()]
    return np.concatenate(out)
state = rng.bit_generator.state
exact = attention_backward(128, 64, False); rng.bit_generator.state = state
print("attention_backward_tensor_cores: %.2e (bound 2e-2)" % rel(exact, attention_backward(128, 64, True)))
