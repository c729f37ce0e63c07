/* Convolution-net kernels; see kernels_conv.h for the conventions. A convolution is im2col
 * plus one GEMM per image: out (OC, OH OW) = weight (OC, C K K) @ col (C K K, OH OW).
 * fp32 (bf_gemm_f32) unless the dims ask for the precision setting (lowp: the perceptual
 * loss), so that evaluation never depends on it. */
#include "kernels_conv.h"
#include "core.h"
#include "gemm.h"

#include <math.h>
#include <string.h>
#if defined(__AVX512F__)
#include <immintrin.h>
#endif

int bf_conv_out_h(const bf_conv_dims *d) { return (d->H + 2 * d->pad - d->K) / d->stride + 1; }
int bf_conv_out_w(const bf_conv_dims *d) { return (d->W + 2 * d->pad - d->K) / d->stride + 1; }

size_t bf_conv_col_size(const bf_conv_dims *d) {
    return (size_t)d->C * d->K * d->K * bf_conv_out_h(d) * bf_conv_out_w(d);
}

/* ------------------------------------------------------------------ im2col */
/* Output columns [*lo, *hi) whose input column ox * stride - pad + kx lies inside the image;
 * the others read padding. */
static void valid_range(int *lo, int *hi, int OW, int W, int kx, int stride, int pad) {
    int a = 0, b = OW;
    while (a < OW && a * stride - pad + kx < 0) a++;
    while (b > a && (b - 1) * stride - pad + kx >= W) b--;
    *lo = a;
    *hi = b;
}

#if defined(__AVX512F__)
/* im2col's stride 1 rows, a few dozen floats, in 16-lane pieces (a memcpy call per row cost
 * more than the copy): positions [lo, hi) of the output row r (OW long) hold src[pos + off],
 * the others 0: one masked load and store per piece (the masked-off lanes, the padding, are
 * not read). col2im_s1 below reads the col rows the same way. */
static inline __mmask16 span16(int a, int b) {   /* lanes [a, b) of 16, clamped */
    a = a < 0 ? 0 : a;
    b = b > 16 ? 16 : b;
    return b <= a ? 0 : (__mmask16)(((1u << (b - a)) - 1) << a);
}

static inline void row_gather_s1(float *r, const float *src, int off, int lo, int hi, int OW) {
    for (int x0 = 0; x0 < OW; x0 += 16) {
        __mmask16 m = span16(lo - x0, hi - x0), out = span16(0, OW - x0);
        /* lanes before lo (src + x0 + off may start before the row) are masked: not read */
        _mm512_mask_storeu_ps(r + x0, out, _mm512_maskz_loadu_ps(m, src + x0 + off));
    }
}
#endif

/* col (C K K, OH OW) from one image img (C, H, W); row (c, ky, kx) holds, for every output
 * position, the input pixel under that tap of the window (0 in the padding). */
static void im2col(float *col, const float *img, const bf_conv_dims *d, int OH, int OW) {
    int K = d->K, s = d->stride, p = d->pad;
    for (int c = 0; c < d->C; c++)
        for (int ky = 0; ky < K; ky++)
            for (int kx = 0; kx < K; kx++) {
                float *row = col + ((size_t)(c * K + ky) * K + kx) * OH * OW;
                int lo, hi;
                valid_range(&lo, &hi, OW, d->W, kx, s, p);
                for (int oy = 0; oy < OH; oy++) {
                    float *r = row + (size_t)oy * OW;
                    int iy = oy * s - p + ky;
                    if (iy < 0 || iy >= d->H) { memset(r, 0, sizeof(float) * OW); continue; }
                    const float *src = img + ((size_t)c * d->H + iy) * d->W;
#if defined(__AVX512F__)
                    if (s == 1) { row_gather_s1(r, src, kx - p, lo, hi, OW); continue; }
#endif
                    for (int ox = 0; ox < lo; ox++) r[ox] = 0.0f;
                    if (s == 1) memcpy(r + lo, src + lo - p + kx, sizeof(float) * (hi - lo));
                    else for (int ox = lo; ox < hi; ox++) r[ox] = src[ox * s - p + kx];
                    for (int ox = hi; ox < OW; ox++) r[ox] = 0.0f;
                }
            }
}

#if defined(__AVX512F__)
/* col2im at stride 1 by image rows: each 16-pixel piece of a row gathers its K K taps in a
 * register and is stored once (adding each tap's row into the image in turn, a masked
 * read-modify-write per tap, measured slower than the scalar-vector loop). The tap (ky, kx)
 * reads col row (c, ky, kx) at output row iy + pad - ky, columns x - kx + pad (lanes outside
 * the valid columns masked, not read). */
static void col2im_s1(float *img, const float *col, const bf_conv_dims *d, int OH, int OW) {
    int K = d->K, p = d->pad, H = d->H, W = d->W;
    size_t P = (size_t)OH * OW;
    for (int c = 0; c < d->C; c++)
        for (int iy = 0; iy < H; iy++) {
            float *dst = img + ((size_t)c * H + iy) * W;
            for (int x0 = 0; x0 < W; x0 += 16) {
                __mmask16 in = span16(0, W - x0);
                __m512 acc = _mm512_maskz_loadu_ps(in, dst + x0);
                for (int ky = 0; ky < K; ky++) {
                    int oy = iy + p - ky;
                    if (oy < 0 || oy >= OH) continue;
                    for (int kx = 0; kx < K; kx++) {
                        int off = kx - p;   /* image column x reads output column x - off */
                        __mmask16 m = in & span16(off - x0, OW + off - x0);
                        const float *r = col + ((size_t)(c * K + ky) * K + kx) * P + (size_t)oy * OW;
                        acc = _mm512_add_ps(acc, _mm512_maskz_loadu_ps(m, r + x0 - off));
                    }
                }
                _mm512_mask_storeu_ps(dst + x0, in, acc);
            }
        }
}
#endif

/* img (C, H, W) += col (C K K, OH OW): the transpose of im2col */
static void col2im(float *img, const float *col, const bf_conv_dims *d, int OH, int OW) {
    int K = d->K, s = d->stride, p = d->pad;
#if defined(__AVX512F__)
    if (s == 1) { col2im_s1(img, col, d, OH, OW); return; }
#endif
    for (int c = 0; c < d->C; c++)
        for (int ky = 0; ky < K; ky++)
            for (int kx = 0; kx < K; kx++) {
                const float *row = col + ((size_t)(c * K + ky) * K + kx) * OH * OW;
                int lo, hi;
                valid_range(&lo, &hi, OW, d->W, kx, s, p);
                for (int oy = 0; oy < OH; oy++) {
                    int iy = oy * s - p + ky;
                    if (iy < 0 || iy >= d->H) continue;
                    const float *r = row + (size_t)oy * OW;
                    float *dst = img + ((size_t)c * d->H + iy) * d->W;
                    if (s == 1) {   /* contiguous: vectorises */
                        float *dd = dst + lo - p + kx;
                        const float *rr = r + lo;
                        for (int j = 0; j < hi - lo; j++) dd[j] += rr[j];
                    } else {
                        for (int ox = lo; ox < hi; ox++) dst[ox * s - p + kx] += r[ox];
                    }
                }
            }
}

/* ------------------------------------------------------------------ convolution */
void bf_conv2d_forward(float *out, float *col, const float *inp, const float *weight,
                       const float *bias, const bf_conv_dims *d) {
    int OH = bf_conv_out_h(d), OW = bf_conv_out_w(d), P = OH * OW, CKK = d->C * d->K * d->K;
    BF_ASSERT(OH > 0 && OW > 0);
    for (int n = 0; n < d->N; n++) {
        float *o = out + (size_t)n * d->OC * P;
        for (int oc = 0; oc < d->OC; oc++)
            for (int i = 0; i < P; i++) o[(size_t)oc * P + i] = bias ? bias[oc] : 0.0f;
        im2col(col, inp + (size_t)n * d->C * d->H * d->W, d, OH, OW);
        (d->lowp ? bf_gemm : bf_gemm_f32)(0, 0, d->OC, P, CKK, weight, CKK, col, P, o, P);
    }
}

void bf_conv2d_backward(float *dinp, float *dweight, float *dbias, float *col, float *dcol,
                        const float *dout, const float *inp, const float *weight,
                        const bf_conv_dims *d) {
    int OH = bf_conv_out_h(d), OW = bf_conv_out_w(d), P = OH * OW, CKK = d->C * d->K * d->K;
    size_t img = (size_t)d->C * d->H * d->W;
    for (int n = 0; n < d->N; n++) {
        const float *g = dout + (size_t)n * d->OC * P;
        if (dbias)
            for (int oc = 0; oc < d->OC; oc++) {
                float s = 0.0f;
                for (int i = 0; i < P; i++) s += g[(size_t)oc * P + i];
                dbias[oc] += s;
            }
        if (dweight) {   /* dweight (OC, CKK) += dout (OC, P) @ col^T */
            im2col(col, inp + n * img, d, OH, OW);
            (d->lowp ? bf_gemm : bf_gemm_f32)(0, 1, d->OC, CKK, P, g, P, col, P, dweight, CKK);
        }
        if (dinp) {      /* dcol (CKK, P) = weight^T @ dout (set by the product), folded back */
            (d->lowp ? bf_gemm_bias : bf_gemm_f32_bias)(1, 0, CKK, P, d->OC, weight, CKK, g, P,
                                                        dcol, P, NULL);
            col2im(dinp + n * img, dcol, d, OH, OW);
        }
    }
}

/* Index of input pixel (c, y, x) of image n, or -1 in the padding. */
static long in_index(const bf_conv_dims *d, int n, int c, int y, int x) {
    if (y < 0 || y >= d->H || x < 0 || x >= d->W) return -1;
    return (((long)n * d->C + c) * d->H + y) * d->W + x;
}

void bf_conv2d_forward_ref(float *out, const float *inp, const float *weight, const float *bias,
                           const bf_conv_dims *d) {
    int OH = bf_conv_out_h(d), OW = bf_conv_out_w(d), K = d->K;
    for (int n = 0; n < d->N; n++)
        for (int oc = 0; oc < d->OC; oc++)
            for (int oy = 0; oy < OH; oy++)
                for (int ox = 0; ox < OW; ox++) {
                    double s = bias ? bias[oc] : 0.0;
                    for (int c = 0; c < d->C; c++)
                        for (int ky = 0; ky < K; ky++)
                            for (int kx = 0; kx < K; kx++) {
                                long i = in_index(d, n, c, oy * d->stride - d->pad + ky,
                                                  ox * d->stride - d->pad + kx);
                                if (i >= 0) s += (double)inp[i] * weight[((oc * d->C + c) * K + ky) * K + kx];
                            }
                    out[(((size_t)n * d->OC + oc) * OH + oy) * OW + ox] = (float)s;
                }
}

void bf_conv2d_backward_ref(float *dinp, float *dweight, float *dbias, const float *dout,
                            const float *inp, const float *weight, const bf_conv_dims *d) {
    int OH = bf_conv_out_h(d), OW = bf_conv_out_w(d), K = d->K;
    size_t ni = (size_t)d->N * d->C * d->H * d->W, nw = (size_t)d->OC * d->C * K * K;
    double *gi = bf_calloc(ni + 1, sizeof(double)), *gw = bf_calloc(nw, sizeof(double));
    double *gb = bf_calloc((size_t)d->OC, sizeof(double));
    for (int n = 0; n < d->N; n++)
        for (int oc = 0; oc < d->OC; oc++)
            for (int oy = 0; oy < OH; oy++)
                for (int ox = 0; ox < OW; ox++) {
                    double g = dout[(((size_t)n * d->OC + oc) * OH + oy) * OW + ox];
                    gb[oc] += g;
                    for (int c = 0; c < d->C; c++)
                        for (int ky = 0; ky < K; ky++)
                            for (int kx = 0; kx < K; kx++) {
                                long i = in_index(d, n, c, oy * d->stride - d->pad + ky,
                                                  ox * d->stride - d->pad + kx);
                                size_t w = ((size_t)(oc * d->C + c) * K + ky) * K + kx;
                                if (i < 0) continue;
                                gi[i] += g * weight[w];
                                gw[w] += g * inp[i];
                            }
                }
    for (size_t i = 0; dinp && i < ni; i++) dinp[i] += (float)gi[i];
    for (size_t i = 0; dweight && i < nw; i++) dweight[i] += (float)gw[i];
    for (int i = 0; dbias && i < d->OC; i++) dbias[i] += (float)gb[i];
    free(gi); free(gw); free(gb);
}

/* ------------------------------------------------------------------ ReLU */
void bf_relu_forward(float *out, const float *inp, size_t n) {
    /* written as a comparison so that NaN propagates (fmaxf would drop it) */
    for (size_t i = 0; i < n; i++) out[i] = inp[i] < 0.0f ? 0.0f : inp[i];
}

void bf_relu_backward(float *dinp, const float *dout, const float *out, size_t n) {
    for (size_t i = 0; i < n; i++) dinp[i] += out[i] > 0.0f ? dout[i] : 0.0f;
}

/* ------------------------------------------------------------------ max pooling */
/* Which of the 4 pixels a, b (top row), c, d (bottom row) of a window is largest (0..3):
 * the first on ties, the first NaN if any (so that NaN propagates). */
static inline int beats(float v, float m) { return v > m || (v != v && m == m); }
static inline int max4_index(float a, float b, float c, float d) {
    int k = 0;
    float m = a;
    if (beats(b, m)) { k = 1; m = b; }
    if (beats(c, m)) { k = 2; m = c; }
    if (beats(d, m)) k = 3;
    return k;
}

void bf_maxpool2_forward(float *out, const float *inp, int N, int C, int H, int W) {
    int OH = H / 2, OW = W / 2;
    for (long m = 0; m < (long)N * C; m++)
        for (int oy = 0; oy < OH; oy++) {
            const float *r0 = inp + (m * H + 2 * oy) * W, *r1 = r0 + W;
            float *dst = out + (m * OH + oy) * OW;
            for (int ox = 0; ox < OW; ox++) {
                float v[4] = {r0[2 * ox], r0[2 * ox + 1], r1[2 * ox], r1[2 * ox + 1]};
                dst[ox] = v[max4_index(v[0], v[1], v[2], v[3])];
            }
        }
}

void bf_maxpool2_backward(float *dinp, const float *dout, const float *inp, int N, int C, int H,
                          int W) {
    int OH = H / 2, OW = W / 2;
    for (long m = 0; m < (long)N * C; m++)
        for (int oy = 0; oy < OH; oy++) {
            size_t r0 = (size_t)(m * H + 2 * oy) * W, r1 = r0 + W;
            const float *g = dout + (m * OH + oy) * OW;
            for (int ox = 0; ox < OW; ox++) {
                size_t at[4] = {r0 + 2 * ox, r0 + 2 * ox + 1, r1 + 2 * ox, r1 + 2 * ox + 1};
                dinp[at[max4_index(inp[at[0]], inp[at[1]], inp[at[2]], inp[at[3]])]] += g[ox];
            }
        }
}

/* ------------------------------------------------------------------ softmax cross-entropy */
void bf_softmax_xent_forward(float *loss, float *probs, const float *logits, const int *y,
                             int N, int K) {
    for (int i = 0; i < N; i++) {
        const float *l = logits + (size_t)i * K;
        float *p = probs + (size_t)i * K;
        BF_ASSERT(y[i] >= 0 && y[i] < K);
        float mx = l[0];
        for (int k = 1; k < K; k++) mx = l[k] > mx ? l[k] : mx;
        double sum = 0.0;
        for (int k = 0; k < K; k++) sum += exp((double)l[k] - mx);
        for (int k = 0; k < K; k++) p[k] = (float)(exp((double)l[k] - mx) / sum);
        loss[i] = (float)(log(sum) - ((double)l[y[i]] - mx));
    }
}

void bf_softmax_xent_backward(float *dlogits, const float *dloss, const float *probs,
                              const int *y, int N, int K) {
    for (int i = 0; i < N; i++) {
        float *d = dlogits + (size_t)i * K;
        const float *p = probs + (size_t)i * K;
        for (int k = 0; k < K; k++) d[k] += dloss[i] * (p[k] - (k == y[i] ? 1.0f : 0.0f));
    }
}
