package dev.topa.harness;

import dev.topa.backend.Dropout;

/**
 * The spec: every op in plain float64 Java, written for clarity, not speed. Kernels are checked
 * against these forwards, and their backwards against finite differences of these forwards.
 */
public final class Reference {
    private Reference() {}

    /** C = alpha op(A) op(B) + beta C + bias, row-major; A [M,K] or [K,M], B [K,N] or [N,K]. */
    public static double[] gemm(boolean tA, boolean tB, int m, int n, int k, double alpha, double[] a, double[] b,
            double beta, double[] c, double[] bias) {
        double[] out = new double[m * n];
        for (int i = 0; i < m; i++)
            for (int j = 0; j < n; j++) {
                double s = 0;
                for (int p = 0; p < k; p++) s += (tA ? a[p * m + i] : a[i * k + p]) * (tB ? b[j * k + p] : b[p * n + j]);
                out[i * n + j] = alpha * s + (beta == 0 ? 0 : beta * c[i * n + j]) + (bias == null ? 0 : bias[j]);
            }
        return out;
    }

    public static double[] add(double[] a, double[] b) {
        double[] o = a.clone();
        if (b != null) for (int i = 0; i < o.length; i++) o[i] += b[i];
        return o;
    }

    public static double[] layernorm(double[] x, double[] gamma, double[] beta, int rows, int cols, double eps) {
        double[] out = new double[rows * cols];
        for (int r = 0; r < rows; r++) {
            double m = 0, v = 0;
            for (int c = 0; c < cols; c++) m += x[r * cols + c];
            m /= cols;
            for (int c = 0; c < cols; c++) v += (x[r * cols + c] - m) * (x[r * cols + c] - m);
            v /= cols;
            double s = 1 / Math.sqrt(v + eps);
            for (int c = 0; c < cols; c++) out[r * cols + c] = (x[r * cols + c] - m) * s * gamma[c] + beta[c];
        }
        return out;
    }

    /** GELU(u) = u Phi(u) with Phi from erf (double-precision erf below). */
    public static double[] biasGelu(double[] x, double[] bias, int rows, int cols) {
        double[] out = new double[rows * cols];
        for (int i = 0; i < out.length; i++) {
            double u = x[i] + (bias == null ? 0 : bias[i % cols]);
            out[i] = u * 0.5 * erfc(-u / Math.sqrt(2));
        }
        return out;
    }

    /** erfc to ~1e-15 relative: series for small |z|, continued fraction (Lentz) for large. */
    public static double erfc(double z) {
        if (z < 0) return 2 - erfc(-z);
        if (z < 2.5) {
            double sum = 0, term = z, z2 = z * z;
            for (int n = 0; n < 200; n++) {
                sum += term / (2 * n + 1);
                term *= -z2 / (n + 1);
                if (Math.abs(term) < 1e-18 * Math.abs(sum)) break;
            }
            return 1 - 2 / Math.sqrt(Math.PI) * sum;
        }
        // erfc(z) = exp(-z^2)/sqrt(pi) * 1/(z + 1/2/(z + 1/(z + 3/2/(z + ...))))
        double tiny = 1e-300, f = z, c = z, d = 0;
        for (int n = 1; n < 500; n++) {
            double an = n / 2.0;
            d = z + an * d;
            d = Math.abs(d) < tiny ? tiny : d;
            c = z + an / c;
            c = Math.abs(c) < tiny ? tiny : c;
            d = 1 / d;
            double delta = c * d;
            f *= delta;
            if (Math.abs(delta - 1) < 1e-16) break;
        }
        return Math.exp(-z * z) / Math.sqrt(Math.PI) / f;
    }

    public static double[] softmax(double[] x, int rows, int cols) {
        double[] y = new double[rows * cols];
        for (int r = 0; r < rows; r++) {
            double mx = Double.NEGATIVE_INFINITY, s = 0;
            for (int c = 0; c < cols; c++) mx = Math.max(mx, x[r * cols + c]);
            for (int c = 0; c < cols; c++) s += y[r * cols + c] = Math.exp(x[r * cols + c] - mx);
            for (int c = 0; c < cols; c++) y[r * cols + c] /= s;
        }
        return y;
    }

    /** out [B,S,H*D] from qkv [B,S,3*H*D]; mask [B,S] (1 keep, 0 pad) or null; probs [B,H,S,S] if not null. */
    public static double[] attention(double[] qkv, int[] mask, int bsz, int s, int h, int d, double scale, double[] probs) {
        return attention(qkv, mask, bsz, s, h, d, scale, probs, Dropout.NONE);
    }

    /** As above with dropout on the probabilities (probs receives them before it). */
    public static double[] attention(double[] qkv, int[] mask, int bsz, int s, int h, int d, double scale, double[] probs,
            Dropout drop) {
        int c = h * d;
        double[] out = new double[bsz * s * c];
        double[] p = new double[s];
        for (int b = 0; b < bsz; b++)
            for (int hh = 0; hh < h; hh++)
                for (int i = 0; i < s; i++) {
                    double mx = Double.NEGATIVE_INFINITY;
                    for (int j = 0; j < s; j++) {
                        if (mask != null && mask[b * s + j] == 0) {
                            p[j] = Double.NEGATIVE_INFINITY;
                            continue;
                        }
                        double dot = 0;
                        for (int e = 0; e < d; e++)
                            dot += qkv[(b * s + i) * 3 * c + hh * d + e] * qkv[(b * s + j) * 3 * c + c + hh * d + e];
                        p[j] = dot * scale;
                        mx = Math.max(mx, p[j]);
                    }
                    double sum = 0;
                    for (int j = 0; j < s; j++) sum += p[j] = mx == Double.NEGATIVE_INFINITY ? 0 : Math.exp(p[j] - mx);
                    for (int j = 0; j < s; j++) {
                        p[j] = sum == 0 ? 0 : p[j] / sum;
                        int e = ((b * h + hh) * s + i) * s + j;
                        if (probs != null) probs[e] = p[j];
                        if (drop.active()) p[j] = drop.keep(e) ? p[j] * drop.scale() : 0;
                    }
                    for (int e = 0; e < d; e++) {
                        double acc = 0;
                        for (int j = 0; j < s; j++) acc += p[j] * qkv[(b * s + j) * 3 * c + 2 * c + hh * d + e];
                        out[(b * s + i) * c + hh * d + e] = acc;
                    }
                }
        return out;
    }

    /** Sequences packed end to end (qkv [N, 3*H*D], sequence i the next lengths[i] rows), each attending only to itself. */
    public static double[] attentionPacked(double[] qkv, int[] lengths, int h, int d, double scale) {
        int c = h * d, n = 0;
        for (int len : lengths) n += len;
        double[] out = new double[n * c];
        int off = 0;
        for (int len : lengths) {
            double[] one = attention(java.util.Arrays.copyOfRange(qkv, off * 3 * c, (off + len) * 3 * c), null, 1, len, h, d, scale, null);
            System.arraycopy(one, 0, out, off * c, len * c);
            off += len;
        }
        return out;
    }

    /** dropout(x): kept elements scaled by 1 / (1 - p), the rest 0. */
    public static double[] dropout(double[] x, Dropout d) {
        double[] out = new double[x.length];
        for (int i = 0; i < x.length; i++) out[i] = d.keep(i) ? x[i] * d.scale() : 0;
        return out;
    }

    public static double[] embedding(int[] ids, int[] pos, int[] types, double[] wte, double[] wpe, double[] wtt, int s, int c) {
        double[] out = new double[ids.length * c];
        for (int t = 0; t < ids.length; t++) {
            int p = pos == null ? t % s : pos[t];
            int ty = types == null ? 0 : types[t];
            for (int e = 0; e < c; e++)
                out[t * c + e] = wte[ids[t] * c + e] + wpe[p * c + e] + (wtt == null ? 0 : wtt[ty * c + e]);
        }
        return out;
    }

    /** Mean over tokens with mask 1 (all when mask is null); a sequence with none gives 0. */
    public static double[] meanPool(double[] x, int[] mask, int bsz, int s, int c) {
        double[] out = new double[bsz * c];
        for (int b = 0; b < bsz; b++) {
            int n = 0;
            for (int t = 0; t < s; t++)
                if (mask == null || mask[b * s + t] != 0) {
                    n++;
                    for (int e = 0; e < c; e++) out[b * c + e] += x[(b * s + t) * c + e];
                }
            for (int e = 0; e < c; e++) out[b * c + e] = n == 0 ? 0 : out[b * c + e] / n;
        }
        return out;
    }

    /** Per-row losses; the last element is the mean over rows with label >= 0. */
    public static double[] crossEntropy(double[] logits, int[] labels, int n, int classes) {
        double[] out = new double[n + 1];
        double total = 0;
        int counted = 0;
        for (int i = 0; i < n; i++) {
            if (labels[i] < 0) continue;
            double mx = Double.NEGATIVE_INFINITY, s = 0;
            for (int c = 0; c < classes; c++) mx = Math.max(mx, logits[i * classes + c]);
            for (int c = 0; c < classes; c++) s += Math.exp(logits[i * classes + c] - mx);
            out[i] = mx + Math.log(s) - logits[i * classes + labels[i]];
            total += out[i];
            counted++;
        }
        out[n] = counted == 0 ? 0 : total / counted;
        return out;
    }

    /** T^2 KL(softmax(t / T) || softmax(s / T)) (or (s - t)^2 for one column), the mean over rows, in float64. */
    public static double distillation(double[] s, double[] t, int rows, int cols, double temperature) {
        double total = 0;
        for (int i = 0; i < rows; i++) {
            if (cols == 1) {
                total += (s[i] - t[i]) * (s[i] - t[i]);
                continue;
            }
            double ms = Double.NEGATIVE_INFINITY, mt = Double.NEGATIVE_INFINITY, zs = 0, zt = 0;
            for (int j = 0; j < cols; j++) {
                ms = Math.max(ms, s[i * cols + j] / temperature);
                mt = Math.max(mt, t[i * cols + j] / temperature);
            }
            for (int j = 0; j < cols; j++) {
                zs += Math.exp(s[i * cols + j] / temperature - ms);
                zt += Math.exp(t[i * cols + j] / temperature - mt);
            }
            for (int j = 0; j < cols; j++) {
                double lt = t[i * cols + j] / temperature - mt - Math.log(zt), ls = s[i * cols + j] / temperature - ms - Math.log(zs);
                total += Math.exp(lt) * (lt - ls);
            }
        }
        return (cols == 1 ? 1 : temperature * temperature) * total / rows;
    }

    /** Hidden-state matching: sum over rows with mask 1 (null: all) of |s - t|^2, over (their count x cols); in float64. */
    public static double hiddenMatch(double[] s, double[] t, int[] mask, int cols) {
        double total = 0;
        long real = 0;
        for (int r = 0; r < s.length / cols; r++) {
            if (mask != null && mask[r] == 0) continue;
            real++;
            for (int j = r * cols; j < (r + 1) * cols; j++) total += (s[j] - t[j]) * (s[j] - t[j]);
        }
        return real == 0 ? 0 : total / (real * cols);
    }

    public static double mse(double[] pred, double[] target) {
        double s = 0;
        for (int i = 0; i < pred.length; i++) s += (pred[i] - target[i]) * (pred[i] - target[i]);
        return s / pred.length;
    }

    /** One AdamW step in place on p, m, v (PyTorch's algorithm). */
    public static void adamw(double[] p, double[] g, double[] m, double[] v, double lr, double b1, double b2, double eps,
            double wd, long t) {
        for (int i = 0; i < p.length; i++) {
            p[i] *= 1 - lr * wd;
            m[i] = b1 * m[i] + (1 - b1) * g[i];
            v[i] = b2 * v[i] + (1 - b2) * g[i] * g[i];
            double mhat = m[i] / (1 - Math.pow(b1, t)), vhat = v[i] / (1 - Math.pow(b2, t));
            p[i] -= lr * mhat / (Math.sqrt(vhat) + eps);
        }
    }
}
