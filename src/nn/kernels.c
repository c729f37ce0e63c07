/* Kernels with their backward passes. See kernels.h for the conventions.
 * Large matrix products go through bf_gemm (fp32 or bf16 by the precision setting; the _f32
 * variants always fp32); the rest are hand-written, OpenMP-parallel loops
 * that the compiler can vectorise (no -ffast-math: NaN and Inf must propagate). */
#include "kernels.h"
#include "core.h"
#include "gemm.h"
#include "fastmath.h"

#include <math.h>
#include <omp.h>
#include <stdatomic.h>
#include <string.h>

#define LN_EPS 1e-5f

/* ------------------------------------------------------------------ vectorisable math */
/* erf for float: rational approximation on [-4, 4] (saturates beyond, where erf = +-1
 * in float). NaN propagates because the clamp is written with comparisons. */
static inline float fast_erff(float x) {
    float xc = x > 4.0f ? 4.0f : (x < -4.0f ? -4.0f : x);
    float x2 = xc * xc;
    float p = -2.72614225801306e-10f;
    p = p * x2 + 2.77068142495902e-08f;
    p = p * x2 - 2.10102402082508e-06f;
    p = p * x2 - 5.69250639462346e-05f;
    p = p * x2 - 7.34990630326855e-04f;
    p = p * x2 - 2.95459980854025e-03f;
    p = p * x2 - 1.60960333262415e-02f;
    float q = -1.45660718464996e-05f;
    q = q * x2 - 2.13374055278905e-04f;
    q = q * x2 - 1.68282697438203e-03f;
    q = q * x2 - 7.37332916720468e-03f;
    q = q * x2 - 1.42647390514189e-02f;
    return xc * p / q;
}

/* ------------------------------------------------------------------ linear */
typedef void (*gemm_fn)(int, int, int, int, int, const float *, int, const float *, int, float *,
                        int);

/* The product sets out to bias + inp @ weight^T itself (no pass filling out with the bias). */
void bf_linear_forward(float *out, const float *inp, const float *weight, const float *bias,
                       int N, int IC, int OC) {
    bf_gemm_bias(0, 1, N, OC, IC, inp, IC, weight, IC, out, OC, bias);
}

void bf_linear_forward_f32(float *out, const float *inp, const float *weight, const float *bias,
                           int N, int IC, int OC) {
    bf_gemm_f32_bias(0, 1, N, OC, IC, inp, IC, weight, IC, out, OC, bias);
}

/* The old form, out filled with the bias then accumulated into (tests compare the two). */
void bf_linear_forward_ref(float *out, const float *inp, const float *weight, const float *bias,
                           int N, int IC, int OC) {
    for (int i = 0; i < N; i++) {
        if (bias) memcpy(out + (size_t)i * OC, bias, sizeof(float) * OC);
        else memset(out + (size_t)i * OC, 0, sizeof(float) * OC);
    }
    bf_gemm(0, 1, N, OC, IC, inp, IC, weight, IC, out, OC);
}

static void column_sums_accumulate(float *dst, const float *src, int N, int C) {
#pragma omp parallel if ((size_t)N * C >= BF_PAR_MIN)
    {
        int nt = omp_get_num_threads(), t = omp_get_thread_num();
        int c0 = (int)((long)C * t / nt), c1 = (int)((long)C * (t + 1) / nt);
        for (int i = 0; i < N; i++) {
            const float *row = src + (size_t)i * C;
            for (int c = c0; c < c1; c++) dst[c] += row[c];
        }
    }
}

static void linear_backward(gemm_fn gemm, float *dinp, float *dweight, float *dbias,
                            const float *dout, const float *inp, const float *weight, int N,
                            int IC, int OC) {
    if (dinp) gemm(0, 0, N, IC, OC, dout, OC, weight, IC, dinp, IC);
    if (dweight) gemm(1, 0, OC, IC, N, dout, OC, inp, IC, dweight, IC);
    if (dbias) column_sums_accumulate(dbias, dout, N, OC);
}

void bf_linear_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                        const float *inp, const float *weight, int N, int IC, int OC) {
    linear_backward(bf_gemm, dinp, dweight, dbias, dout, inp, weight, N, IC, OC);
}

void bf_linear_backward_set(float *dinp, float *dweight, float *dbias, const float *dout,
                            const float *inp, const float *weight, int N, int IC, int OC) {
    BF_ASSERT(dinp);
    bf_gemm_bias(0, 0, N, IC, OC, dout, OC, weight, IC, dinp, IC, NULL);   /* dinp = 0 + ... */
    linear_backward(bf_gemm, NULL, dweight, dbias, dout, inp, weight, N, IC, OC);
}

void bf_linear_backward_f32(float *dinp, float *dweight, float *dbias, const float *dout,
                            const float *inp, const float *weight, int N, int IC, int OC) {
    linear_backward(bf_gemm_f32, dinp, dweight, dbias, dout, inp, weight, N, IC, OC);
}

/* ------------------------------------------------------------------ layernorm */
void bf_layernorm_forward(float *out, float *mean, float *rstd, const float *inp,
                          const float *weight, const float *bias, int N, int C) {
#pragma omp parallel for schedule(static) if ((size_t)N * C >= BF_PAR_MIN)
    for (int i = 0; i < N; i++) {
        const float *x = inp + (size_t)i * C;
        float *o = out + (size_t)i * C;
        float m = 0.0f;
#pragma omp simd reduction(+:m)
        for (int c = 0; c < C; c++) m += x[c];
        m /= (float)C;
        float v = 0.0f;
#pragma omp simd reduction(+:v)
        for (int c = 0; c < C; c++) v += (x[c] - m) * (x[c] - m);
        float s = 1.0f / sqrtf(v / (float)C + LN_EPS);
        for (int c = 0; c < C; c++) o[c] = (x[c] - m) * s * weight[c] + bias[c];
        mean[i] = m;
        rstd[i] = s;
    }
}

void bf_layernorm_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                           const float *inp, const float *weight, const float *mean,
                           const float *rstd, int N, int C) {
    int params = dweight || dbias;   /* G's LayerNorms are frozen: no per-thread sums then */
#pragma omp parallel if ((size_t)N * C >= BF_PAR_MIN)
    {
        float *dw = params ? bf_calloc((size_t)2 * C, sizeof(float)) : NULL, *db = dw ? dw + C : NULL;
#pragma omp for schedule(static)
        for (int i = 0; i < N; i++) {
            const float *x = inp + (size_t)i * C, *g = dout + (size_t)i * C;
            float m = mean[i], s = rstd[i], sum_g = 0.0f, sum_gx = 0.0f;
            /* the row sums in vector lanes (reassociated: float rounding only) */
#pragma omp simd reduction(+:sum_g, sum_gx)
            for (int c = 0; c < C; c++) {
                float xh = (x[c] - m) * s, gw = g[c] * weight[c];
                sum_g += gw;
                sum_gx += gw * xh;
            }
            if (params)
                for (int c = 0; c < C; c++) {
                    float xh = (x[c] - m) * s;
                    dw[c] += g[c] * xh;
                    db[c] += g[c];
                }
            sum_g /= (float)C;
            sum_gx /= (float)C;
            float *dx = dinp + (size_t)i * C;
            for (int c = 0; c < C; c++) {
                float xh = (x[c] - m) * s;
                dx[c] += s * (g[c] * weight[c] - sum_g - xh * sum_gx);
            }
        }
        if (params) {
#pragma omp critical
            for (int c = 0; c < C; c++) {
                if (dweight) dweight[c] += dw[c];
                if (dbias) dbias[c] += db[c];
            }
        }
        free(dw);
    }
}

/* ------------------------------------------------------------------ AVX-512 by function */
/* Kernels that need AVX-512 even where the build's -march lacks it are compiled with a
 * function-level target attribute and run only where the CPU reports AVX-512F (as gemm.c does
 * for its bf16 kernel), so -march=x86-64, clang's fuzz build and SAN=1 all build. */
#if (defined(__x86_64__) || defined(__i386__)) && \
    ((defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 8) || (defined(__clang__) && __clang_major__ >= 9))
#define BF_AVX512_FN 1
#include <immintrin.h>
#define AVX512_TARGET __attribute__((target("avx512f")))

/* __builtin_cpu_supports also checks that the OS saves the AVX-512 registers. */
static int cpu_has_avx512f(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f");
}

/* 16-lane version of fast_expf (same polynomial); NaN propagates through the arithmetic, and
 * min/max are ordered so that a NaN input is returned as NaN. Compiled for AVX-512 whatever the
 * build's -march, for the fused attention below (GELU calls it only where __AVX512F__). */
AVX512_TARGET static inline __m512 exp16(__m512 x) {
    __m512 xc = _mm512_max_ps(_mm512_min_ps(x, _mm512_set1_ps(88.72f)), _mm512_set1_ps(-87.33f));
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(xc, _mm512_set1_ps(1.44269504088896341f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), xc);
    r = _mm512_fmadd_ps(n, _mm512_set1_ps(2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.9875691500e-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
    p = _mm512_fmadd_ps(_mm512_mul_ps(p, r), r, _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    __m512 y = _mm512_scalef_ps(p, n);
    y = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(x, _mm512_set1_ps(88.72f), _CMP_GT_OQ), y,
                             _mm512_set1_ps(INFINITY));
    y = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(x, _mm512_set1_ps(-87.33f), _CMP_LT_OQ), y,
                             _mm512_setzero_ps());
    return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q), y, x);
}

#endif

/* ------------------------------------------------------------------ attention */
static inline float dot(const float *a, const float *b, int n) {
    float s = 0.0f;
#pragma omp simd reduction(+:s)
    for (int k = 0; k < n; k++) s += a[k] * b[k];
    return s;
}

/* softmax over scores[0..n) in place; returns nothing; NaN propagates */
static void softmax_inplace(float *s, int n) {
    float mx = -INFINITY;
    for (int j = 0; j < n; j++) mx = s[j] > mx ? s[j] : mx;
    if (mx != mx) mx = 0.0f;
    float sum = 0.0f;
#pragma omp simd reduction(+:sum)
    for (int j = 0; j < n; j++) { s[j] = fast_expf(s[j] - mx); sum += s[j]; }
    float inv = 1.0f / sum;
    for (int j = 0; j < n; j++) s[j] *= inv;
}

/* Heads of at least this size and sequences of at least this length go through bf_gemm (the
 * packed AVX-512 product; OpenBLAS may pick an SSE kernel on CPUs it does not know): the
 * products Q K^T, P V and their backward are small dense matrices; scalar loops below. */
#define ATT_GEMM_MIN 16

static int att_use_gemm(int T, int hs) { return T >= ATT_GEMM_MIN && hs >= ATT_GEMM_MIN; }

/* Fused attention for short sequences. At T = 49, hs = 64 (the shipped models) every bf_gemm
 * call spends more on packing its operands (and, in bf16, on converting them and loading AMX
 * tiles) than on the 49 x 49 x 64 product, so sequences of at most ATT_FUSED_MAXT tokens with
 * heads of whole 16-float vectors go through one AVX-512 pass per head instead: score rows in
 * four registers, softmax in registers, P V accumulated row by row. They stay fp32 in both
 * precisions (the saving is the call overhead, not the multiply rate). */
#define ATT_FUSED_MAXT 64
#define ATT_LD 64   /* row stride of the transposed K or V and of ds: four vectors */

static atomic_int att_fused_off;   /* tests compare the fused kernel with the GEMM path */


static int att_use_fused(int T, int hs) {
#ifdef BF_AVX512_FN
    return T <= ATT_FUSED_MAXT && hs > 0 && hs % 16 == 0 && !atomic_load(&att_fused_off) &&
           cpu_has_avx512f();
#else
    return 0;
#endif
}

void bf_attention_test_force_gemm(int on) { atomic_store(&att_fused_off, on); }
int bf_attention_fused_active(int T, int hs) { return att_use_fused(T, hs); }

/* Floats of per-thread scratch the fused forward (transposed K) or backward (transposed V and
 * ds) needs. */
static size_t att_fused_scratch(int T, int hs, int backward) {
    return (size_t)hs * ATT_LD + (backward ? (size_t)T * ATT_LD : 0);
}

#ifdef BF_AVX512_FN
/* dst (hs, ATT_LD) = src (T, hs; rows of stride ld) transposed, columns T.. zero: a score row
 * is then hs vector FMAs of broadcast q entries, with no horizontal sums per (i, j). */
static void att_transpose(float *dst, const float *src, int T, int hs, int ld) {
    for (int d = 0; d < hs; d++)
        for (int j = T; j < ATT_LD; j++) dst[(size_t)d * ATT_LD + j] = 0.0f;
    for (int j = 0; j < T; j++)
        for (int d = 0; d < hs; d++) dst[(size_t)d * ATT_LD + j] = src[(size_t)j * ld + d];
}

/* s[r][c] = lanes 16c..16c+15 of x_r tT for four rows x_r (x + r ldx; rows past nr repeat the
 * last, their results unused): each loaded vector of tT feeds four rows, so the loop is bound
 * by the FMAs rather than the loads. */
AVX512_TARGET static inline void att_rows_dot(__m512 s[4][4], const float *x, int ldx, int nr,
                                              const float *tT, int hs) {
    const float *xr[4];
    for (int r = 0; r < 4; r++) {
        xr[r] = x + (size_t)(r < nr ? r : nr - 1) * ldx;
        for (int c = 0; c < 4; c++) s[r][c] = _mm512_setzero_ps();
    }
    for (int d = 0; d < hs; d++, tT += ATT_LD) {
        __m512 t0 = _mm512_loadu_ps(tT), t1 = _mm512_loadu_ps(tT + 16);
        __m512 t2 = _mm512_loadu_ps(tT + 32), t3 = _mm512_loadu_ps(tT + 48);
        for (int r = 0; r < 4; r++) {
            __m512 xd = _mm512_set1_ps(xr[r][d]);
            s[r][0] = _mm512_fmadd_ps(xd, t0, s[r][0]);
            s[r][1] = _mm512_fmadd_ps(xd, t1, s[r][1]);
            s[r][2] = _mm512_fmadd_ps(xd, t2, s[r][2]);
            s[r][3] = _mm512_fmadd_ps(xd, t3, s[r][3]);
        }
    }
}

/* The first n lanes of the 16 starting at column 16c. */
static inline __mmask16 att_lanes(int n, int c) {
    int k = n - 16 * c;
    return k <= 0 ? 0 : k >= 16 ? 0xffff : (__mmask16)((1u << k) - 1u);
}

/* a[0..T) = softmax of scale s over columns < n, 0 beyond (the causal mask). As in
 * softmax_inplace, the max skips NaN scores (max_ps returns its second operand then) and their
 * exp makes the row NaN. */
AVX512_TARGET static inline void att_softmax_row(float *a, __m512 s[4], int n, int T,
                                                 float scale) {
    __m512 ninf = _mm512_set1_ps(-INFINITY), mx = ninf, sum = _mm512_setzero_ps();
    for (int c = 0; c < 4; c++) {
        s[c] = _mm512_mask_mul_ps(ninf, att_lanes(n, c), s[c], _mm512_set1_ps(scale));
        mx = _mm512_max_ps(s[c], mx);
    }
    __m512 m = _mm512_set1_ps(_mm512_reduce_max_ps(mx));
    for (int c = 0; c < 4; c++) {   /* exp16 flushes the masked -Inf lanes to 0 */
        s[c] = exp16(_mm512_sub_ps(s[c], m));
        sum = _mm512_add_ps(sum, s[c]);
    }
    __m512 inv = _mm512_set1_ps(1.0f / _mm512_reduce_add_ps(sum));
    for (int c = 0; c < 4; c++)
        _mm512_mask_storeu_ps(a + 16 * c, att_lanes(T, c), _mm512_mul_ps(s[c], inv));
}

/* Four outputs o_r (o + r ldo) (+)= sum over j in [j0, n) of p_r[j ps] x_j (p_r = p + r prs,
 * x_j rows of stride ldx), for nv vectors of columns from d0: 4 x nv FMA chains, each loaded
 * x_j vector shared by the four outputs. Outputs past nr read the last one's p and are not
 * stored. nv is a constant at every call, so the accumulators stay in registers. */
AVX512_TARGET static inline __attribute__((always_inline)) void
att_combine_nv(float *o, int ldo, const float *p, size_t prs, size_t ps, const float *x, int ldx,
               int j0, int n, int nr, int d0, int accumulate, const int nv) {
    __m512 acc[4][4], xv[4];
    const float *pr[4];
    for (int r = 0; r < 4; r++) {
        pr[r] = p + (r < nr ? r : nr - 1) * prs;
        for (int c = 0; c < nv; c++) acc[r][c] = _mm512_setzero_ps();
    }
    for (int j = j0; j < n; j++) {
        const float *xj = x + (size_t)j * ldx + d0;
        for (int c = 0; c < nv; c++) xv[c] = _mm512_loadu_ps(xj + 16 * c);
        for (int r = 0; r < 4; r++) {
            __m512 b = _mm512_set1_ps(pr[r][(size_t)j * ps]);
            for (int c = 0; c < nv; c++) acc[r][c] = _mm512_fmadd_ps(b, xv[c], acc[r][c]);
        }
    }
    for (int r = 0; r < nr; r++)
        for (int c = 0; c < nv; c++) {
            float *oc = o + (size_t)r * ldo + d0 + 16 * c;
            _mm512_storeu_ps(oc, accumulate ? _mm512_add_ps(_mm512_loadu_ps(oc), acc[r][c]) : acc[r][c]);
        }
}

/* att_combine_nv over the head's columns, up to four vectors a pass. Rows of P or ds (P V,
 * ds K) take ps = 1 and prs = their row stride; columns (P^T g, ds^T q) take prs = 1 and the
 * row stride as ps, so nothing is transposed. */
AVX512_TARGET static void att_combine(float *o, int ldo, const float *p, size_t prs, size_t ps,
                                      const float *x, int ldx, int j0, int n, int nr, int hs,
                                      int accumulate) {
    for (int d0 = 0; d0 < hs; d0 += 64) {
        int nv = (hs - d0) / 16 < 4 ? (hs - d0) / 16 : 4;
        if (nv == 4) att_combine_nv(o, ldo, p, prs, ps, x, ldx, j0, n, nr, d0, accumulate, 4);
        else if (nv == 3) att_combine_nv(o, ldo, p, prs, ps, x, ldx, j0, n, nr, d0, accumulate, 3);
        else if (nv == 2) att_combine_nv(o, ldo, p, prs, ps, x, ldx, j0, n, nr, d0, accumulate, 2);
        else att_combine_nv(o, ldo, p, prs, ps, x, ldx, j0, n, nr, d0, accumulate, 1);
    }
}

/* Forward of one head (the arguments of attention_head_forward; kT: hs * ATT_LD scratch), four
 * rows at a time. Causal rows of a block share the last row's length: the others' P entries
 * past their own length are the zeros att_softmax_row wrote (as the GEMM path multiplies them). */
AVX512_TARGET static void att_fused_forward(float *o, float *a, float *kT, const float *q,
                                            const float *k, const float *v, int T, int C,
                                            int C3, int hs, float scale, int causal) {
    att_transpose(kT, k, T, hs, C3);
    for (int i = 0; i < T; i += 4) {
        __m512 s[4][4];
        int nr = T - i < 4 ? T - i : 4, n = causal ? i + nr : T;
        att_rows_dot(s, q + (size_t)i * C3, C3, nr, kT, hs);
        for (int r = 0; r < nr; r++)
            att_softmax_row(a + (size_t)(i + r) * T, s[r], causal ? i + r + 1 : T, T, scale);
        att_combine(o + (size_t)i * C, C, a + (size_t)i * T, T, 1, v, C3, 0, n, nr, hs, 0);
    }
}

/* ds rows i.. i + nr - 1 from dp (g_i V^T) and the saved P: scale a_i (dp - dp . a_i). */
AVX512_TARGET static inline void att_ds_rows(float *ds, __m512 dp[4][4], const float *a, int T,
                                             int nr, float scale) {
    for (int r = 0; r < nr; r++) {
        __m512 ai[4], dot = _mm512_setzero_ps(), sc = _mm512_set1_ps(scale);
        for (int c = 0; c < 4; c++) {
            ai[c] = _mm512_maskz_loadu_ps(att_lanes(T, c), a + (size_t)r * T + 16 * c);
            dot = _mm512_fmadd_ps(dp[r][c], ai[c], dot);
        }
        __m512 s = _mm512_set1_ps(_mm512_reduce_add_ps(dot));
        for (int c = 0; c < 4; c++)
            _mm512_storeu_ps(ds + (size_t)r * ATT_LD + 16 * c,
                             _mm512_mul_ps(sc, _mm512_mul_ps(ai[c], _mm512_sub_ps(dp[r][c], s))));
    }
}

/* Backward of one head, the products of attention_head_backward without bf_gemm, four rows or
 * columns at a time: dp = g V^T (from the transposed V), ds into ws, dq += ds K; then
 * dv += P^T g and dk += ds^T q from columns of P and ds (causal: rows above a block's first
 * column are zero and skipped). ws: att_fused_scratch(T, hs, 1) floats. */
AVX512_TARGET static void att_fused_backward(float *dq, float *dk, float *dv, float *ws,
                                             const float *g, const float *a, const float *q,
                                             const float *k, const float *v, int T, int C,
                                             int C3, int hs, float scale, int causal) {
    float *vT = ws, *ds = ws + (size_t)hs * ATT_LD;
    att_transpose(vT, v, T, hs, C3);
    for (int i = 0; i < T; i += 4) {
        __m512 dp[4][4];
        int nr = T - i < 4 ? T - i : 4;
        att_rows_dot(dp, g + (size_t)i * C, C, nr, vT, hs);
        att_ds_rows(ds + (size_t)i * ATT_LD, dp, a + (size_t)i * T, T, nr, scale);
        att_combine(dq + (size_t)i * C3, C3, ds + (size_t)i * ATT_LD, ATT_LD, 1, k, C3, 0,
                    causal ? i + nr : T, nr, hs, 1);
    }
    for (int j = 0; j < T; j += 4) {
        int nr = T - j < 4 ? T - j : 4, i0 = causal ? j : 0;
        att_combine(dv + (size_t)j * C3, C3, a + j, 1, T, g, C, i0, T, nr, hs, 1);
        att_combine(dk + (size_t)j * C3, C3, ds + j, 1, ATT_LD, q, C3, i0, T, nr, hs, 1);
    }
}
#endif

/* One (example, head): scores a (T, T) = scale q k^T, row softmax (causal: the first i + 1
 * entries of row i, the rest 0), o = a v. q, k, v rows of stride C3; o rows of stride C. */
static void attention_head_forward(float *o, float *a, const float *q, const float *k,
                                   const float *v, int T, int C, int C3, int hs, float scale,
                                   int causal) {
    if (att_use_gemm(T, hs)) {
        memset(a, 0, sizeof(float) * T * T);   /* bf_gemm accumulates */
        bf_gemm(0, 1, T, T, hs, q, C3, k, C3, a, T);
        for (int i = 0; i < T; i++) {
            int n = causal ? i + 1 : T;
            float *ai = a + (size_t)i * T;
            for (int j = 0; j < n; j++) ai[j] *= scale;
            softmax_inplace(ai, n);
            for (int j = n; j < T; j++) ai[j] = 0.0f;
            memset(o + (size_t)i * C, 0, sizeof(float) * hs);
        }
        bf_gemm(0, 0, T, hs, T, a, T, v, C3, o, C);
        return;
    }
    for (int i = 0; i < T; i++) {
        float *ai = a + (size_t)i * T, *oi = o + (size_t)i * C;
        int n = causal ? i + 1 : T;
        for (int j = 0; j < n; j++) ai[j] = scale * dot(q + (size_t)i * C3, k + (size_t)j * C3, hs);
        softmax_inplace(ai, n);
        for (int j = n; j < T; j++) ai[j] = 0.0f;
        memset(oi, 0, sizeof(float) * hs);
        for (int j = 0; j < n; j++)
            for (int d = 0; d < hs; d++) oi[d] += ai[j] * v[(size_t)j * C3 + d];
    }
}

void bf_attention_forward(float *out, float *att, const float *qkv, int B, int T, int C, int NH,
                          int causal) {
    int hs = C / NH, C3 = 3 * C, fused = att_use_fused(T, hs);
    float scale = 1.0f / sqrtf((float)hs);
#pragma omp parallel if ((size_t)B * NH * T * T * (C / NH) >= BF_PAR_MIN)
    {
        float *ws = fused ? bf_malloc(sizeof(float) * att_fused_scratch(T, hs, 0)) : NULL;
        /* nowait: a thread only frees its own scratch after the loop, so the region's closing
         * barrier is the only one (on a loaded machine each barrier waits for a descheduled
         * thread: with two, guided G at batch 1 ran at half speed on 2 threads) */
#pragma omp for collapse(2) schedule(static) nowait
        for (int b = 0; b < B; b++)
            for (int h = 0; h < NH; h++) {
                const float *base = qkv + (size_t)b * T * C3 + h * hs;
                float *o = out + (size_t)b * T * C + h * hs, *a = att + ((size_t)b * NH + h) * T * T;
#ifdef BF_AVX512_FN
                if (fused) {
                    att_fused_forward(o, a, ws, base, base + C, base + 2 * C, T, C, C3, hs, scale, causal);
                    continue;
                }
#endif
                attention_head_forward(o, a, base, base + C, base + 2 * C, T, C, C3, hs, scale, causal);
            }
        free(ws);
    }
}

/* Backward of one head with the saved probabilities a (T, T) (zeros where masked):
 * dv += a^T g, dp = g v^T, ds = a (dp - rowsum(dp a)) scale, dq += ds k, dk += ds^T q.
 * ws: (T, T) scratch. */
static void attention_head_backward(float *dq, float *dk, float *dv, float *ws, const float *g,
                                    const float *a, const float *q, const float *k,
                                    const float *v, int T, int C, int C3, int hs, float scale) {
    bf_gemm(1, 0, T, hs, T, a, T, g, C, dv, C3);
    memset(ws, 0, sizeof(float) * T * T);
    bf_gemm(0, 1, T, T, hs, g, C, v, C3, ws, T);
    for (int i = 0; i < T; i++) {
        float *d = ws + (size_t)i * T;
        const float *ai = a + (size_t)i * T;
        float s = 0.0f;
        for (int j = 0; j < T; j++) s += d[j] * ai[j];
        for (int j = 0; j < T; j++) d[j] = scale * ai[j] * (d[j] - s);
    }
    bf_gemm(0, 0, T, hs, T, ws, T, k, C3, dq, C3);
    bf_gemm(1, 0, T, hs, T, ws, T, q, C3, dk, C3);
}

void bf_attention_backward(float *dqkv, const float *dout, const float *qkv, const float *att,
                           int B, int T, int C, int NH, int causal) {
    int hs = C / NH, C3 = 3 * C, fused = att_use_fused(T, hs);
    float scale = 1.0f / sqrtf((float)hs);
#pragma omp parallel if ((size_t)B * NH * T * T * (C / NH) >= BF_PAR_MIN)
    {
        float *dpre = bf_malloc(sizeof(float) * (fused ? att_fused_scratch(T, hs, 1)
                                                 : (size_t)T * (att_use_gemm(T, hs) ? T : 1)));
#pragma omp for collapse(2) schedule(static) nowait   /* one barrier, as in the forward */
        for (int b = 0; b < B; b++)
            for (int h = 0; h < NH; h++) {
                const float *base = qkv + (size_t)b * T * C3;
                float *dbase = dqkv + (size_t)b * T * C3;
#ifdef BF_AVX512_FN
                if (fused) {
                    att_fused_backward(dbase + h * hs, dbase + C + h * hs, dbase + 2 * C + h * hs,
                                       dpre, dout + (size_t)b * T * C + h * hs,
                                       att + ((size_t)b * NH + h) * T * T, base + h * hs,
                                       base + C + h * hs, base + 2 * C + h * hs, T, C, C3, hs,
                                       scale, causal);
                    continue;
                }
#endif
                if (att_use_gemm(T, hs)) {
                    attention_head_backward(dbase + h * hs, dbase + C + h * hs, dbase + 2 * C + h * hs,
                                            dpre, dout + (size_t)b * T * C + h * hs,
                                            att + ((size_t)b * NH + h) * T * T, base + h * hs,
                                            base + C + h * hs, base + 2 * C + h * hs, T, C, C3, hs, scale);
                    continue;
                }
                for (int i = 0; i < T; i++) {
                    const float *a = att + (((size_t)b * NH + h) * T + i) * T;
                    const float *g = dout + ((size_t)b * T + i) * C + h * hs;
                    int n = causal ? i + 1 : T;
                    float s = 0.0f;
                    for (int j = 0; j < n; j++) {
                        const float *v = base + (size_t)j * C3 + 2 * C + h * hs;
                        float *dv = dbase + (size_t)j * C3 + 2 * C + h * hs;
                        for (int k = 0; k < hs; k++) dv[k] += a[j] * g[k];
                        dpre[j] = dot(g, v, hs);
                        s += dpre[j] * a[j];
                    }
                    const float *q = base + (size_t)i * C3 + h * hs;
                    float *dq = dbase + (size_t)i * C3 + h * hs;
                    for (int j = 0; j < n; j++) {
                        float d = scale * a[j] * (dpre[j] - s);
                        const float *k_ = base + (size_t)j * C3 + C + h * hs;
                        float *dk = dbase + (size_t)j * C3 + C + h * hs;
                        for (int k = 0; k < hs; k++) { dq[k] += d * k_[k]; dk[k] += d * q[k]; }
                    }
                }
            }
        free(dpre);
    }
}

/* Naive reference: double accumulation, libm exp, no parallelism. */
void bf_attention_forward_ref(float *out, float *att, const float *qkv, int B, int T, int C,
                              int NH, int causal) {
    int hs = C / NH, C3 = 3 * C;
    double scale = 1.0 / sqrt((double)hs);
    double *p = bf_malloc(sizeof(double) * T);
    for (int b = 0; b < B; b++)
        for (int h = 0; h < NH; h++)
            for (int i = 0; i < T; i++) {
                const float *q = qkv + ((size_t)b * T + i) * C3 + h * hs;
                double mx = -INFINITY, sum = 0.0;
                for (int j = 0; j < T; j++) {
                    const float *k = qkv + ((size_t)b * T + j) * C3 + C + h * hs;
                    double d = 0.0;
                    for (int c = 0; c < hs; c++) d += (double)q[c] * k[c];
                    p[j] = (causal && j > i) ? -INFINITY : d * scale;
                    if (p[j] > mx) mx = p[j];
                }
                for (int j = 0; j < T; j++) { p[j] = exp(p[j] - mx); sum += p[j]; }
                for (int j = 0; j < T; j++) {
                    p[j] /= sum;
                    att[(((size_t)b * NH + h) * T + i) * T + j] = (float)p[j];
                }
                for (int c = 0; c < hs; c++) {
                    double o = 0.0;
                    for (int j = 0; j < T; j++)
                        o += p[j] * qkv[((size_t)b * T + j) * C3 + 2 * C + h * hs + c];
                    out[((size_t)b * T + i) * C + h * hs + c] = (float)o;
                }
            }
    free(p);
}

/* ------------------------------------------------------------------ GELU, residual */
#if defined(__AVX512F__)
#include <immintrin.h>
/* 16-lane erf (the polynomial of fast_erff); exp16 is defined with the attention kernels. */
static inline __m512 erf16(__m512 x) {
    __m512 xc = _mm512_max_ps(_mm512_min_ps(x, _mm512_set1_ps(4.0f)), _mm512_set1_ps(-4.0f));
    xc = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q), xc, x);
    __m512 x2 = _mm512_mul_ps(xc, xc);
    __m512 p = _mm512_set1_ps(-2.72614225801306e-10f);
    p = _mm512_fmadd_ps(p, x2, _mm512_set1_ps(2.77068142495902e-08f));
    p = _mm512_fmadd_ps(p, x2, _mm512_set1_ps(-2.10102402082508e-06f));
    p = _mm512_fmadd_ps(p, x2, _mm512_set1_ps(-5.69250639462346e-05f));
    p = _mm512_fmadd_ps(p, x2, _mm512_set1_ps(-7.34990630326855e-04f));
    p = _mm512_fmadd_ps(p, x2, _mm512_set1_ps(-2.95459980854025e-03f));
    p = _mm512_fmadd_ps(p, x2, _mm512_set1_ps(-1.60960333262415e-02f));
    __m512 q = _mm512_set1_ps(-1.45660718464996e-05f);
    q = _mm512_fmadd_ps(q, x2, _mm512_set1_ps(-2.13374055278905e-04f));
    q = _mm512_fmadd_ps(q, x2, _mm512_set1_ps(-1.68282697438203e-03f));
    q = _mm512_fmadd_ps(q, x2, _mm512_set1_ps(-7.37332916720468e-03f));
    q = _mm512_fmadd_ps(q, x2, _mm512_set1_ps(-1.42647390514189e-02f));
    return _mm512_div_ps(_mm512_mul_ps(xc, p), q);
}
#endif

static inline float gelu_scalar(float x) {
    return 0.5f * x * (1.0f + fast_erff(x * 0.70710678118654752f));
}
static inline float gelu_grad_scalar(float x) {
    float cdf = 0.5f * (1.0f + fast_erff(x * 0.70710678118654752f));
    return cdf + x * 0.39894228040143268f * fast_expf(-0.5f * x * x);
}

/* Work split in blocks of 1024 so vector loops see whole chunks. */
#define GELU_CHUNK 1024

/* One chunk [i, end) of GELU's forward (out <- gelu(inp); dout unused) or backward
 * (out += dout * gelu'(inp)). */
typedef void gelu_chunk_fn(float *out, const float *inp, const float *dout, size_t i, size_t end);

static void gelu_forward_chunk(float *out, const float *inp, const float *dout, size_t i, size_t end) {
#if defined(__AVX512F__)
    for (; i + 16 <= end; i += 16) {
        __m512 x = _mm512_loadu_ps(inp + i);
        __m512 e = erf16(_mm512_mul_ps(x, _mm512_set1_ps(0.70710678118654752f)));
        _mm512_storeu_ps(out + i, _mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(0.5f), x),
                                                _mm512_add_ps(_mm512_set1_ps(1.0f), e)));
    }
#endif
    for (; i < end; i++) out[i] = gelu_scalar(inp[i]);
}

/* set: dinp = 0 + dout * gelu'(inp), its old values unread (0 + x: the bits of zeroing and
 * accumulating, -0 becoming +0) */
static inline void gelu_backward_body(float *dinp, const float *inp, const float *dout, size_t i,
                                      size_t end, int set) {
#if defined(__AVX512F__)
    for (; i + 16 <= end; i += 16) {
        __m512 x = _mm512_loadu_ps(inp + i);
        __m512 half = _mm512_set1_ps(0.5f);
        __m512 cdf = _mm512_mul_ps(half, _mm512_add_ps(_mm512_set1_ps(1.0f),
                                   erf16(_mm512_mul_ps(x, _mm512_set1_ps(0.70710678118654752f)))));
        __m512 pdf = _mm512_mul_ps(_mm512_set1_ps(0.39894228040143268f),
                                   exp16(_mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(-0.5f), x), x)));
        __m512 g = _mm512_fmadd_ps(x, pdf, cdf);
        __m512 base = set ? _mm512_setzero_ps() : _mm512_loadu_ps(dinp + i);
        _mm512_storeu_ps(dinp + i, _mm512_fmadd_ps(_mm512_loadu_ps(dout + i), g, base));
    }
#endif
    for (; i < end; i++) dinp[i] = (set ? 0.0f : dinp[i]) + dout[i] * gelu_grad_scalar(inp[i]);
}

static void gelu_backward_chunk(float *dinp, const float *inp, const float *dout, size_t i, size_t end) {
    gelu_backward_body(dinp, inp, dout, i, end, 0);
}

static void gelu_backward_set_chunk(float *dinp, const float *inp, const float *dout, size_t i,
                                    size_t end) {
    gelu_backward_body(dinp, inp, dout, i, end, 1);
}

/* chunk over [0, n) in GELU_CHUNK blocks, the blocks in parallel. */
static void gelu_chunks(gelu_chunk_fn *chunk, float *out, const float *inp, const float *dout, size_t n) {
    size_t nchunk = (n + GELU_CHUNK - 1) / GELU_CHUNK;
#pragma omp parallel for schedule(static) if (n >= BF_PAR_MIN)
    for (size_t ch = 0; ch < nchunk; ch++) {
        size_t i = ch * GELU_CHUNK;
        chunk(out, inp, dout, i, i + GELU_CHUNK < n ? i + GELU_CHUNK : n);
    }
}

void bf_gelu_forward(float *out, const float *inp, size_t n) {
    gelu_chunks(gelu_forward_chunk, out, inp, NULL, n);
}

void bf_gelu_backward(float *dinp, const float *inp, const float *dout, size_t n) {
    gelu_chunks(gelu_backward_chunk, dinp, inp, dout, n);
}

void bf_gelu_backward_set(float *dinp, const float *inp, const float *dout, size_t n) {
    gelu_chunks(gelu_backward_set_chunk, dinp, inp, dout, n);
}

void bf_residual_forward(float *out, const float *a, const float *b, size_t n) {
#pragma omp parallel for simd schedule(static) if (n >= BF_PAR_MIN)
    for (size_t i = 0; i < n; i++) out[i] = a[i] + b[i];
}

void bf_residual_backward(float *da, float *db, const float *dout, size_t n) {
#pragma omp parallel for simd schedule(static) if (n >= BF_PAR_MIN)
    for (size_t i = 0; i < n; i++) { da[i] += dout[i]; db[i] += dout[i]; }
}

/* ------------------------------------------------------------------ embeddings */
static void class_mean(float *m, const float *cls, int num_classes, int C) {
    for (int c = 0; c < C; c++) m[c] = 0.0f;
    for (int k = 0; k < num_classes; k++)
        for (int c = 0; c < C; c++) m[c] += cls[(size_t)k * C + c];
    for (int c = 0; c < C; c++) m[c] /= (float)num_classes;
}

void bf_embed_forward(float *out, const float *h, const float *pos, const float *cls,
                      const int *y, int B, int T, int C, int num_classes, int reverse) {
    float *mean = bf_calloc((size_t)C, sizeof(float));
    if (num_classes > 0) class_mean(mean, cls, num_classes, C);
#pragma omp parallel for collapse(2) schedule(static) if ((size_t)B * T * C >= BF_PAR_MIN)
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            int label = y ? y[b] : -1;
            const float *e = num_classes <= 0 ? mean
                             : (label >= 0 ? cls + (size_t)label * C : mean);
            const float *p = pos + (size_t)(reverse ? T - 1 - t : t) * C;
            const float *x = h + ((size_t)b * T + t) * C;
            float *o = out + ((size_t)b * T + t) * C;
            for (int c = 0; c < C; c++) o[c] = x[c] + p[c] + e[c];
        }
    free(mean);
}

void bf_embed_backward(float *dh, float *dpos, float *dcls, const float *dout, const int *y,
                       int B, int T, int C, int num_classes, int reverse) {
    if (dh) bf_residual_forward(dh, dh, dout, (size_t)B * T * C);
    float *tok_sum = bf_calloc((size_t)B * C, sizeof(float));   /* per image, summed over t */
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            const float *g = dout + ((size_t)b * T + t) * C;
            float *dp = dpos + (size_t)(reverse ? T - 1 - t : t) * C;
            for (int c = 0; c < C; c++) { dp[c] += g[c]; tok_sum[(size_t)b * C + c] += g[c]; }
        }
    if (dcls && num_classes > 0)
        for (int b = 0; b < B; b++) {
            int label = y ? y[b] : -1;
            const float *s = tok_sum + (size_t)b * C;
            if (label >= 0) {
                for (int c = 0; c < C; c++) dcls[(size_t)label * C + c] += s[c];
            } else {   /* the mean embedding spreads its gradient over every class */
                for (int k = 0; k < num_classes; k++)
                    for (int c = 0; c < C; c++) dcls[(size_t)k * C + c] += s[c] / (float)num_classes;
            }
        }
    free(tok_sum);
}

/* ------------------------------------------------------------------ bound, flow step, NLL */
static inline float softbound(float v, float c) { return c > 0.0f ? c * tanhf(v / c) : v; }
static inline float softbound_grad(float v, float c) {
    if (c <= 0.0f) return 1.0f;
    float t = tanhf(v / c);
    return 1.0f - t * t;
}

void bf_softbound_forward(float *out, const float *inp, size_t n, float c) {
#pragma omp parallel for schedule(static) if (n >= BF_PAR_MIN)
    for (size_t i = 0; i < n; i++) out[i] = softbound(inp[i], c);
}

void bf_softbound_backward(float *dinp, const float *inp, const float *dout, size_t n, float c) {
#pragma omp parallel for schedule(static) if (n >= BF_PAR_MIN)
    for (size_t i = 0; i < n; i++) dinp[i] += dout[i] * softbound_grad(inp[i], c);
}

void bf_flow_step_forward(float *z, float *alpha_sum, const float *o, const float *u,
                          int B, int T, int D, float c) {
#pragma omp parallel for schedule(static) if ((size_t)B * T * D >= BF_PAR_MIN)
    for (int b = 0; b < B; b++) {
        float asum = 0.0f;
        for (int t = 0; t < T; t++) {
            const float *ut = u + ((size_t)b * T + t) * D;
            float *zt = z + ((size_t)b * T + t) * D;
            if (t == 0) { memcpy(zt, ut, sizeof(float) * D); continue; }
            const float *op = o + ((size_t)b * T + t - 1) * 2 * D;
            for (int d = 0; d < D; d++) {
                float a = softbound(op[d], c), m = softbound(op[D + d], c);
                zt[d] = (ut[d] - m) * expf(-a);
                asum += a;
            }
        }
        alpha_sum[b] += asum;
    }
}

void bf_flow_step_backward(float *do_, float *du, const float *dz, const float *dalpha_sum,
                           const float *o, const float *u, int B, int T, int D, float c) {
#pragma omp parallel for schedule(static) if ((size_t)B * T * D >= BF_PAR_MIN)
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            const float *ut = u + ((size_t)b * T + t) * D, *g = dz + ((size_t)b * T + t) * D;
            float *dut = du ? du + ((size_t)b * T + t) * D : NULL;
            if (t == 0) {
                if (dut) for (int d = 0; d < D; d++) dut[d] += g[d];
                continue;
            }
            const float *op = o + ((size_t)b * T + t - 1) * 2 * D;
            float *dop = do_ + ((size_t)b * T + t - 1) * 2 * D;
            for (int d = 0; d < D; d++) {
                float a = softbound(op[d], c), m = softbound(op[D + d], c);
                float e = expf(-a), zv = (ut[d] - m) * e;
                if (dut) dut[d] += g[d] * e;
                dop[d] += (dalpha_sum[b] - g[d] * zv) * softbound_grad(op[d], c);
                dop[D + d] += -g[d] * e * softbound_grad(op[D + d], c);
            }
        }
}

void bf_gaussian_nll_forward(float *nll, const float *z, int B, int N) {
    for (int b = 0; b < B; b++) {
        double s = 0.0;
        const float *zb = z + (size_t)b * N;
        for (int i = 0; i < N; i++) s += (double)zb[i] * zb[i];
        nll[b] = (float)(0.5 * s / N + 0.5 * log(2.0 * M_PI));
    }
}

void bf_gaussian_nll_backward(float *dz, const float *dnll, const float *z, int B, int N) {
    for (int b = 0; b < B; b++) {
        float k = dnll[b] / (float)N;
        for (int i = 0; i < N; i++) dz[(size_t)b * N + i] += k * z[(size_t)b * N + i];
    }
}

void bf_permute_tokens(float *out, const float *inp, int B, int T, int C, int reverse) {
    BF_ASSERT(out != inp);
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++)
            memcpy(out + ((size_t)b * T + t) * C,
                   inp + ((size_t)b * T + (reverse ? T - 1 - t : t)) * C, sizeof(float) * C);
}

/* ------------------------------------------------------------------ cached decoding */
void bf_attention_decode_step(float *out, float *kcache, float *vcache, const float *qkv,
                              int R, int T, int W, int NH, int pos) {
    int hs = W / NH;
    float scale = 1.0f / sqrtf((float)hs);
#pragma omp parallel if ((size_t)R * (pos + 1) * W >= BF_PAR_MIN)
    {
        float *s = bf_malloc(sizeof(float) * (size_t)T);
#pragma omp for schedule(static)
        for (int r = 0; r < R; r++) {
            const float *row = qkv + (size_t)r * 3 * W;
            float *kc = kcache + (size_t)r * T * W, *vc = vcache + (size_t)r * T * W;
            memcpy(kc + (size_t)pos * W, row + W, sizeof(float) * W);
            memcpy(vc + (size_t)pos * W, row + 2 * W, sizeof(float) * W);
            for (int h = 0; h < NH; h++) {
                const float *q = row + h * hs;
                for (int j = 0; j <= pos; j++) s[j] = scale * dot(q, kc + (size_t)j * W + h * hs, hs);
                softmax_inplace(s, pos + 1);
                float *o = out + (size_t)r * W + h * hs;
                memset(o, 0, sizeof(float) * hs);
                for (int j = 0; j <= pos; j++) {
                    const float *v = vc + (size_t)j * W + h * hs;
                    for (int k = 0; k < hs; k++) o[k] += s[j] * v[k];
                }
            }
        }
        free(s);
    }
}
