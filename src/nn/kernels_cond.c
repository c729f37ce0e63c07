/* Conditioning kernels of G; see kernels_cond.h. Plain OpenMP loops the compiler can
 * vectorise (no -ffast-math: NaN and Inf must propagate), serial below BF_PAR_MIN. */
#include "kernels_cond.h"
#include "fastmath.h"
#include "core.h"

#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <string.h>

/* Channel block of the backward reductions over tokens: each (example, block) task owns its
 * slice of the per-example gradient, so threads never share an output and no atomics or
 * per-thread copies are needed; 64 floats of partial sums stay in registers / L1. */
#define COND_CB 64
/* Elementwise loops are split in chunks so that every task runs whole vectors. */
#define COND_CHUNK 1024

/* ------------------------------------------------------------------ adaLN, gated residual */
/* The backward shared by both modulations, one pass over dout:
 *   dinp[b,t,c] += dout[b,t,c] * (one + v[b,c])   (set: dinp = 0 + that, old values unread)
 *   dsum[b,c]   += sum_t dout[b,t,c]             (dsum may be NULL)
 *   dprod[b,c]  += sum_t dout[b,t,c] * a[b,t,c] */
static void modulated_backward(float *dinp, float *dsum, float *dprod, const float *dout,
                               const float *a, const float *v, float one, int B, int T, int C,
                               int set) {
    int nblk = (C + COND_CB - 1) / COND_CB;
#pragma omp parallel for collapse(2) schedule(static) if ((size_t)B * T * C >= BF_PAR_MIN)
    for (int b = 0; b < B; b++)
        for (int k = 0; k < nblk; k++) {
            int c0 = k * COND_CB, n = C - c0 < COND_CB ? C - c0 : COND_CB;
            const float *vb = v + (size_t)b * C + c0;
            float s[COND_CB] = {0}, p[COND_CB] = {0};
            for (int t = 0; t < T; t++) {
                size_t off = ((size_t)b * T + t) * C + c0;
                const float *g = dout + off, *x = a + off;
                float *di = dinp + off;
                for (int c = 0; c < n; c++) {
                    /* 0 + x as zeroing then += gave (-0 becomes +0): the same bits */
                    di[c] = (set ? 0.0f : di[c]) + g[c] * (one + vb[c]);
                    s[c] += g[c];
                    p[c] += g[c] * x[c];
                }
            }
            for (int c = 0; c < n; c++) {
                if (dsum) dsum[(size_t)b * C + c0 + c] += s[c];
                dprod[(size_t)b * C + c0 + c] += p[c];
            }
        }
}

void bf_adaln_modulate_forward(float *out, const float *xn, const float *shift,
                               const float *scale, int B, int T, int C) {
#pragma omp parallel for collapse(2) schedule(static) if ((size_t)B * T * C >= BF_PAR_MIN)
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            size_t off = ((size_t)b * T + t) * C;
            const float *sh = shift + (size_t)b * C, *sc = scale + (size_t)b * C;
            for (int c = 0; c < C; c++) out[off + c] = xn[off + c] * (1.0f + sc[c]) + sh[c];
        }
}

void bf_adaln_modulate_backward(float *dxn, float *dshift, float *dscale, const float *dout,
                                const float *xn, const float *scale, int B, int T, int C) {
    modulated_backward(dxn, dshift, dscale, dout, xn, scale, 1.0f, B, T, C, 0);
}

void bf_adaln_modulate_backward_set(float *dxn, float *dshift, float *dscale, const float *dout,
                                    const float *xn, const float *scale, int B, int T, int C) {
    modulated_backward(dxn, dshift, dscale, dout, xn, scale, 1.0f, B, T, C, 1);
}

void bf_adaln_modulate_backward_ref(float *dxn, float *dshift, float *dscale, const float *dout,
                                    const float *xn, const float *scale, int B, int T, int C) {
    for (int b = 0; b < B; b++)
        for (int c = 0; c < C; c++) {
            double s = 0.0, p = 0.0;
            for (int t = 0; t < T; t++) {
                size_t i = ((size_t)b * T + t) * C + c;
                dxn[i] += (float)((double)dout[i] * (1.0 + (double)scale[(size_t)b * C + c]));
                s += dout[i];
                p += (double)dout[i] * xn[i];
            }
            dshift[(size_t)b * C + c] += (float)s;
            dscale[(size_t)b * C + c] += (float)p;
        }
}

void bf_gated_residual_forward(float *out, const float *x, const float *gate, const float *h,
                               int B, int T, int C) {
#pragma omp parallel for collapse(2) schedule(static) if ((size_t)B * T * C >= BF_PAR_MIN)
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            size_t off = ((size_t)b * T + t) * C;
            const float *g = gate + (size_t)b * C;
            for (int c = 0; c < C; c++) out[off + c] = x[off + c] + g[c] * h[off + c];
        }
}

void bf_gated_residual_backward(float *dx, float *dgate, float *dh, const float *dout,
                                const float *gate, const float *h, int B, int T, int C) {
    size_t n = (size_t)B * T * C;
#pragma omp parallel for simd schedule(static) if (n >= BF_PAR_MIN)
    for (size_t i = 0; i < n; i++) dx[i] += dout[i];
    modulated_backward(dh, NULL, dgate, dout, h, gate, 0.0f, B, T, C, 0);
}

void bf_gated_residual_backward_set(float *dx, float *dgate, float *dh, const float *dout,
                                    const float *gate, const float *h, int B, int T, int C) {
    size_t n = (size_t)B * T * C;
#pragma omp parallel for simd schedule(static) if (n >= BF_PAR_MIN)
    for (size_t i = 0; i < n; i++) dx[i] = 0.0f + dout[i];
    modulated_backward(dh, NULL, dgate, dout, h, gate, 0.0f, B, T, C, 1);
}

void bf_gated_residual_backward_ref(float *dx, float *dgate, float *dh, const float *dout,
                                    const float *gate, const float *h, int B, int T, int C) {
    for (int b = 0; b < B; b++)
        for (int c = 0; c < C; c++) {
            double p = 0.0;
            for (int t = 0; t < T; t++) {
                size_t i = ((size_t)b * T + t) * C + c;
                dx[i] += dout[i];
                dh[i] += (float)((double)dout[i] * gate[(size_t)b * C + c]);
                p += (double)dout[i] * h[i];
            }
            dgate[(size_t)b * C + c] += (float)p;
        }
}

/* ------------------------------------------------------------------ timestep embedding */
void bf_timestep_embed_forward(float *out, const float *w, int B, int F) {
    BF_ASSERT(F >= 2 && F % 2 == 0);
    int half = F / 2;
    /* double: w freq reaches hundreds of radians for large w, where a float argument would
     * already be off by 1e-5; libm cos/sin cost nothing at (B, F) sizes */
#pragma omp parallel for schedule(static) if ((size_t)B * F >= BF_PAR_MIN)
    for (int b = 0; b < B; b++)
        for (int i = 0; i < half; i++) {
            double arg = (double)w[b] * exp(-log(BF_TIMESTEP_MAX_PERIOD) * i / half);
            out[(size_t)b * F + i] = (float)cos(arg);
            out[(size_t)b * F + half + i] = (float)sin(arg);
        }
}

/* ------------------------------------------------------------------ SiLU */
void bf_silu_forward(float *out, const float *inp, size_t n) {
    /* exp(-x) overflows to +Inf below x = -88.7: sigmoid = 1/(1 + Inf) = 0, the right limit */
#pragma omp parallel for simd schedule(static) if (n >= BF_PAR_MIN)
    for (size_t i = 0; i < n; i++) out[i] = inp[i] / (1.0f + fast_expf(-inp[i]));
}

void bf_silu_backward(float *dinp, const float *inp, const float *dout, size_t n) {
#pragma omp parallel for simd schedule(static) if (n >= BF_PAR_MIN)
    for (size_t i = 0; i < n; i++) {
        float x = inp[i], e = fast_expf(-x), s = 1.0f / (1.0f + e);
        /* 1 - s = e s without the cancellation of 1 - s near s = 1; e = +Inf (s = 0) means
         * 1 - s = 1 (Inf * 0 would give NaN); a NaN e fails the test and s is NaN anyway */
        float sm = e < INFINITY ? e * s : 1.0f;
        dinp[i] += dout[i] * s * (1.0f + x * sm);
    }
}

/* ------------------------------------------------------------------ class embedding */
static inline int class_row(const int *y, int b, int K) {
    int r = (y && y[b] >= 0) ? y[b] : K;   /* negative or no label: the null row K */
    BF_ASSERT(r <= K);
    return r;
}

void bf_class_embed_forward(float *out, const float *table, const int *y, int B, int C, int K) {
#pragma omp parallel for schedule(static) if ((size_t)B * C >= BF_PAR_MIN)
    for (int b = 0; b < B; b++)
        memcpy(out + (size_t)b * C, table + (size_t)class_row(y, b, K) * C, sizeof(float) * C);
}

void bf_class_embed_backward(float *dtable, const float *dout, const int *y, int B, int C, int K) {
    /* examples share rows, so threads split the channels instead of the examples */
#pragma omp parallel if ((size_t)B * C >= BF_PAR_MIN)
    {
        int nt = omp_get_num_threads(), th = omp_get_thread_num();
        int c0 = (int)((long)C * th / nt), c1 = (int)((long)C * (th + 1) / nt);
        for (int b = 0; b < B; b++) {
            float *row = dtable + (size_t)class_row(y, b, K) * C;
            const float *g = dout + (size_t)b * C;
            for (int c = c0; c < c1; c++) row[c] += g[c];
        }
    }
}

/* ------------------------------------------------------------------ guidance combine */
static size_t guidance_check(const float *w, size_t N, int B) {
    BF_ASSERT(B > 0 && N % (size_t)B == 0);
    for (int b = 0; b < B; b++) BF_ASSERT(!(w[b] <= -1.0f));   /* NaN passes and propagates */
    return N / (size_t)B;
}

/* One chunk [i0, i1) of image b's guidance combine: forward, out <- (c + w u) / (1 + w)
 * (a = out, c, u); backward, dc += dout / (1 + w), du += dout w / (1 + w) (a = dc, da = du,
 * c = dout). */
typedef void combine_chunk_fn(float *a, float *da, const float *c, const float *u, float w,
                              size_t i0, size_t i1);

static void combine_forward_chunk(float *out, float *unused, const float *c, const float *u,
                                  float w, size_t i0, size_t i1) {
    if (w == 0.0f) {   /* exactly c, whatever u holds */
        if (out != c) memcpy(out + i0, c + i0, sizeof(float) * (i1 - i0));
        return;
    }
    float d = 1.0f + w;
    for (size_t i = i0; i < i1; i++) out[i] = (c[i] + w * u[i]) / d;
}

static void combine_backward_chunk(float *dc, float *du, const float *dout, const float *unused,
                                   float w, size_t i0, size_t i1) {
    float ac = 1.0f / (1.0f + w), au = w * ac;
    for (size_t i = i0; i < i1; i++) dc[i] += dout[i] * ac;
    if (du && w != 0.0f)   /* w = 0: u was never read */
        for (size_t i = i0; i < i1; i++) du[i] += dout[i] * au;
}

/* chunk over each image's N / B values in COND_CHUNK blocks, the blocks in parallel. */
static void combine_chunks(combine_chunk_fn *chunk, float *a, float *da, const float *c,
                           const float *u, const float *w, size_t N, int B) {
    size_t n_per = guidance_check(w, N, B), nch = (n_per + COND_CHUNK - 1) / COND_CHUNK;
#pragma omp parallel for collapse(2) schedule(static) if (N >= BF_PAR_MIN)
    for (int b = 0; b < B; b++)
        for (size_t k = 0; k < nch; k++) {
            size_t end = (size_t)(b + 1) * n_per, i0 = (size_t)b * n_per + k * COND_CHUNK;
            chunk(a, da, c, u, w[b], i0, i0 + COND_CHUNK < end ? i0 + COND_CHUNK : end);
        }
}

void bf_guidance_combine_forward(float *out, const float *c, const float *u, const float *w,
                                 size_t N, int B) {
    combine_chunks(combine_forward_chunk, out, NULL, c, u, w, N, B);
}

void bf_guidance_combine_backward(float *dc, float *du, const float *dout, const float *w,
                                  size_t N, int B) {
    combine_chunks(combine_backward_chunk, dc, du, dout, NULL, w, N, B);
}

/* ------------------------------------------------------------------ distances */
void bf_sqdist_forward(float *dist, const float *pred, const float *target,
                       const float *inv_scale, int B, int N) {
    for (int b = 0; b < B; b++) {
        const float *p = pred + (size_t)b * N, *t = target + (size_t)b * N;
        double s = 0.0;
        for (int i = 0; i < N; i++) s += (double)(p[i] - t[i]) * (p[i] - t[i]);
        dist[b] = (float)(s / N) * (inv_scale ? inv_scale[b] : 1.0f);
    }
}

void bf_sqdist_backward(float *dpred, const float *ddist, const float *pred,
                        const float *target, const float *inv_scale, int B, int N) {
    for (int b = 0; b < B; b++) {
        const float *p = pred + (size_t)b * N, *t = target + (size_t)b * N;
        float *d = dpred + (size_t)b * N;
        float k = ddist[b] * (inv_scale ? inv_scale[b] : 1.0f) * 2.0f / (float)N;
        for (int i = 0; i < N; i++) d[i] += k * (p[i] - t[i]);
    }
}

void bf_mean_square(float *ms, const float *x, int B, int N) {
    for (int b = 0; b < B; b++) {
        const float *v = x + (size_t)b * N;
        double s = 0.0;
        for (int i = 0; i < N; i++) s += (double)v[i] * v[i];
        ms[b] = (float)(s / N);
    }
}
