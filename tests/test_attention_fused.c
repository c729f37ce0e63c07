/* The fused short-sequence attention kernel (src/nn/kernels.c: T <= 64, heads of whole
 * 16-float vectors) against the naive references, forward and backward, and against the
 * bf_gemm path it replaces. The tolerances are error bounds derived from fp32 rounding, entry by
 * entry (u = 2^-24 per operation, n u for a sum of n products), computed in double beside the
 * reference values, with a factor of 2 to spare: a kernel that drops a term, reads a wrong
 * row or rounds through bf16 leaves them. */
#include "test.h"
#include "gradcheck.h"
#include "kernels.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define U (0.5 * FLT_EPSILON)

typedef struct {
    int B, NH, T, hs, causal, C, C3;
    size_t nq, no, na;
    float *qkv, *g, *dinit;   /* inputs, upstream gradient, dqkv before the backward (+=) */
    float *out, *att;         /* bf_attention_forward_ref */
    double *out_bound, *att_bound, *dqkv, *dqkv_bound;
} fa_ref;

/* Row i of one head: the relative error bound of each probability from the fp32 score (a dot
 * of hs products, the scale, the max subtracted: |s| + |m| in the exponent) and exp (2 ulp),
 * plus the worst of them through the normalising sum of n terms. */
static void fa_prob_bounds(fa_ref *r, const float *q, const float *kb, const float *a, int n,
                           double *ep) {
    double scale = 1.0 / sqrt((double)r->hs), m = -INFINITY, s[64], epmax = 0.0;
    for (int j = 0; j < n; j++) {
        const float *k = kb + (size_t)j * r->C3;
        double d = 0.0, ad = 0.0;
        for (int c = 0; c < r->hs; c++) { d += (double)q[c] * k[c]; ad += fabs((double)q[c] * k[c]); }
        s[j] = scale * d;
        ep[j] = 2.0 * scale * (r->hs + 2) * U * ad;
        m = s[j] > m ? s[j] : m;
    }
    for (int j = 0; j < n; j++) {
        ep[j] += U * (2.0 * fabs(s[j]) + 2.0 * fabs(m) + n + 8);
        epmax = ep[j] > epmax ? ep[j] : epmax;
    }
    for (int j = 0; j < n; j++) ep[j] = (ep[j] + epmax) * a[j];   /* absolute */
}

/* Bounds of out and att of the fp32 forward: att by fa_prob_bounds, out_d = sum_j p_j v_jd
 * from the perturbed p plus a sum of n products, and the reference's own rounding. */
static void fa_forward_bounds(fa_ref *r) {
    double ep[64];
    for (int b = 0; b < r->B; b++)
        for (int h = 0; h < r->NH; h++)
            for (int i = 0; i < r->T; i++) {
                const float *base = r->qkv + (size_t)b * r->T * r->C3 + h * r->hs;
                size_t arow = (((size_t)b * r->NH + h) * r->T + i) * r->T;
                int n = r->causal ? i + 1 : r->T;
                fa_prob_bounds(r, base + (size_t)i * r->C3, base + r->C, r->att + arow, n, ep);
                for (int j = 0; j < r->T; j++)
                    r->att_bound[arow + j] = (j < n ? ep[j] : 0.0) + U * r->att[arow + j];
                for (int d = 0; d < r->hs; d++) {
                    double bnd = 0.0;
                    for (int j = 0; j < n; j++) {
                        double v = fabs(base[(size_t)j * r->C3 + 2 * r->C + d]);
                        bnd += ep[j] * v + (n + 1) * U * r->att[arow + j] * v;
                    }
                    size_t o = ((size_t)b * r->T + i) * r->C + h * r->hs + d;
                    r->out_bound[o] = bnd + U * fabs(r->out[o]);
                }
            }
}

/* Row i of one head's backward in double: dp_j = g_i . v_j with its bound (a sum of hs
 * products), ds_j = scale p_j (dp_j - sum_j' p_j' dp_j') with its bound (the row sum's
 * products and sum, the subtraction and two multiplications). */
static void fa_ds_row(const fa_ref *r, const float *g, const float *vb, const float *a, int n,
                      double *ds, double *eds) {
    double scale = 1.0 / sqrt((double)r->hs), dp[64], edp[64], rs = 0.0, ers = 0.0;
    for (int j = 0; j < n; j++) {
        const float *v = vb + (size_t)j * r->C3;
        double d = 0.0, ad = 0.0;
        for (int c = 0; c < r->hs; c++) { d += (double)g[c] * v[c]; ad += fabs((double)g[c] * v[c]); }
        dp[j] = d;
        edp[j] = (r->hs + 1) * U * ad;
        rs += a[j] * d;
        ers += a[j] * (edp[j] + (n + 1) * U * fabs(d));
    }
    for (int j = 0; j < n; j++) {
        ds[j] = scale * a[j] * (dp[j] - rs);
        eds[j] = scale * a[j] * (edp[j] + ers + 3.0 * U * (fabs(dp[j]) + fabs(rs)));
    }
}

/* dqkv = dinit + the exact gradient of sum(out g) from the saved att, and the fp32 bound of
 * each entry: sums of n products over the perturbed ds (dq, dk) or exact p (dv), then the
 * addition into dqkv. */
static void fa_backward_ref(fa_ref *r) {
    double ds[64], eds[64];
    for (size_t e = 0; e < r->nq; e++) { r->dqkv[e] = r->dinit[e]; r->dqkv_bound[e] = 0.0; }
    for (int b = 0; b < r->B; b++)
        for (int h = 0; h < r->NH; h++)
            for (int i = 0; i < r->T; i++) {
                size_t qoff = (size_t)b * r->T * r->C3 + h * r->hs;
                const float *base = r->qkv + qoff, *gi = r->g + ((size_t)b * r->T + i) * r->C + h * r->hs;
                const float *a = r->att + (((size_t)b * r->NH + h) * r->T + i) * r->T;
                int n = r->causal ? i + 1 : r->T, nk = r->T;   /* the kernel sums full columns */
                fa_ds_row(r, gi, base + 2 * r->C, a, n, ds, eds);
                for (int j = 0; j < n; j++)
                    for (int d = 0; d < r->hs; d++) {
                        size_t qi = qoff + (size_t)i * r->C3 + d, kj = qoff + (size_t)j * r->C3 + r->C + d;
                        size_t vj = kj + r->C;
                        double k = r->qkv[kj], q = r->qkv[qi];
                        r->dqkv[qi] += ds[j] * k;
                        r->dqkv_bound[qi] += eds[j] * fabs(k) + (n + 1) * U * fabs(ds[j] * k);
                        r->dqkv[kj] += ds[j] * q;
                        r->dqkv_bound[kj] += eds[j] * fabs(q) + (nk + 1) * U * fabs(ds[j] * q);
                        r->dqkv[vj] += a[j] * gi[d];
                        r->dqkv_bound[vj] += (nk + 1) * U * fabs(a[j] * gi[d]);
                    }
            }
    for (size_t e = 0; e < r->nq; e++)
        r->dqkv_bound[e] += U * (fabs(r->dinit[e]) + 2.0 * fabs(r->dqkv[e]));
}

static fa_ref fa_make(int B, int NH, int T, int hs, int causal, uint64_t seed) {
    fa_ref r = {.B = B, .NH = NH, .T = T, .hs = hs, .causal = causal, .C = NH * hs, .C3 = 3 * NH * hs};
    r.nq = (size_t)B * T * r.C3; r.no = (size_t)B * T * r.C; r.na = (size_t)B * NH * T * T;
    r.qkv = bf_gc_randn(seed, r.nq, 0.0f, 1.0f);
    r.g = bf_gc_randn(seed + 1, r.no, 0.0f, 1.0f);
    r.dinit = bf_gc_randn(seed + 2, r.nq, 0.0f, 0.5f);
    r.out = bf_gc_zeros(r.no); r.att = bf_gc_zeros(r.na);
    r.out_bound = bf_calloc(r.no, sizeof(double)); r.att_bound = bf_calloc(r.na, sizeof(double));
    r.dqkv = bf_calloc(r.nq, sizeof(double)); r.dqkv_bound = bf_calloc(r.nq, sizeof(double));
    bf_attention_forward_ref(r.out, r.att, r.qkv, B, T, r.C, NH, causal);
    fa_forward_bounds(&r);
    fa_backward_ref(&r);
    return r;
}

static void fa_free(fa_ref *r) {
    free(r->qkv); free(r->g); free(r->dinit); free(r->out); free(r->att);
    free(r->out_bound); free(r->att_bound); free(r->dqkv); free(r->dqkv_bound);
}

/* Entries of got outside slack times the bound around want (NaN counts), the worst ratio
 * printed when any are. */
static size_t fa_outside(const char *what, const float *got, const float *want_f,
                         const double *want_d, const double *bound, size_t n, double slack) {
    size_t bad = 0;
    double worst = 0.0;
    for (size_t e = 0; e < n; e++) {
        double want = want_f ? want_f[e] : want_d[e], diff = fabs(got[e] - want);
        double lim = slack * bound[e] + FLT_MIN, ratio = diff / lim;
        bad += !(diff <= lim);
        if (!(ratio <= worst)) worst = ratio;
    }
    if (bad) fprintf(stderr, "    %s: %zu of %zu entries outside the bound (worst %.3g x)\n", what, bad, n, worst);
    return bad;
}

/* The fused forward and backward on r's inputs (att NaN first: every entry must be written). */
static void fa_run(const fa_ref *r, float *out, float *att, float *dqkv) {
    for (size_t e = 0; e < r->na; e++) att[e] = NAN;
    bf_attention_forward(out, att, r->qkv, r->B, r->T, r->C, r->NH, r->causal);
    memcpy(dqkv, r->dinit, sizeof(float) * r->nq);
    bf_attention_backward(dqkv, r->g, r->qkv, r->att, r->B, r->T, r->C, r->NH, r->causal);
}

static const int fa_T[] = {1, 15, 16, 17, 31, 48, 49, 64}, fa_hs[] = {16, 32, 64};

/* Every length from one token to the kernel's limit (whole, partial and single vectors of
 * scores), every head size of one to four vectors, causal and not: forward and backward
 * within the fp32 bounds. Runs in either precision: the fused kernel stays fp32. */
TEST(attention_fused_matches_ref_table) {
    if (!bf_attention_fused_active(64, 16)) SKIP("no AVX-512F: the fused attention kernel is off");
    int cases = 0;
    for (int t = 0; t < NUM(fa_T); t++)
        for (int s = 0; s < NUM(fa_hs); s++)
            for (int causal = 0; causal <= 1; causal++) {
                int T = fa_T[t], hs = fa_hs[s];
                CHECK(bf_attention_fused_active(T, hs));
                fa_ref r = fa_make(2, 2, T, hs, causal, 3000 + 16 * (uint64_t)cases++);
                float *out = bf_gc_zeros(r.no), *att = bf_gc_zeros(r.na), *dqkv = bf_gc_zeros(r.nq);
                fa_run(&r, out, att, dqkv);
                char what[96];
                snprintf(what, sizeof what, "fused T=%d hs=%d causal=%d out", T, hs, causal);
                CHECK(fa_outside(what, out, r.out, NULL, r.out_bound, r.no, 2.0) == 0);
                snprintf(what, sizeof what, "fused T=%d hs=%d causal=%d att", T, hs, causal);
                CHECK(fa_outside(what, att, r.att, NULL, r.att_bound, r.na, 2.0) == 0);
                snprintf(what, sizeof what, "fused T=%d hs=%d causal=%d dqkv", T, hs, causal);
                CHECK(fa_outside(what, dqkv, NULL, r.dqkv, r.dqkv_bound, r.nq, 2.0) == 0);
                free(out); free(att); free(dqkv);
                fa_free(&r);
            }
}

/* The fused kernel and the bf_gemm path it replaces (fp32) agree on the shipped models' shape
 * (49 tokens, heads of 64) and on a short odd one: each is within twice the bound of the exact
 * values, so they are within four times it of each other. */
TEST_FP32(attention_fused_agrees_with_gemm_path) {
    if (!bf_attention_fused_active(49, 64)) SKIP("no AVX-512F: the fused attention kernel is off");
    static const int shapes[][4] = {{4, 2, 49, 64}, {3, 3, 17, 16}};   /* B NH T hs */
    for (int k = 0; k < 2; k++)
        for (int causal = 0; causal <= 1; causal++) {
            const int *sh = shapes[k];
            fa_ref r = fa_make(sh[0], sh[1], sh[2], sh[3], causal, 4000 + 8 * (uint64_t)k + causal);
            float *o1 = bf_gc_zeros(r.no), *a1 = bf_gc_zeros(r.na), *d1 = bf_gc_zeros(r.nq);
            float *o2 = bf_gc_zeros(r.no), *a2 = bf_gc_zeros(r.na), *d2 = bf_gc_zeros(r.nq);
            fa_run(&r, o1, a1, d1);
            bf_attention_test_force_gemm(1);
            CHECK(!bf_attention_fused_active(sh[2], sh[3]));
            fa_run(&r, o2, a2, d2);
            bf_attention_test_force_gemm(0);
            char what[96];
            snprintf(what, sizeof what, "fused vs gemm T=%d hs=%d causal=%d", sh[2], sh[3], causal);
            CHECK(fa_outside(what, o1, o2, NULL, r.out_bound, r.no, 4.0) == 0);
            CHECK(fa_outside(what, a1, a2, NULL, r.att_bound, r.na, 4.0) == 0);
            CHECK(fa_outside(what, d1, d2, NULL, r.dqkv_bound, r.nq, 4.0) == 0);
            CHECK(memcmp(o1, o2, sizeof(float) * r.no) != 0);   /* two different paths ran */
            free(o1); free(a1); free(d1); free(o2); free(a2); free(d2);
            fa_free(&r);
        }
}
