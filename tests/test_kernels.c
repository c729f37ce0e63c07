/* Kernel tests: forwards against naive double-precision loops, and every backward against
 * central finite differences of L = sum(out * R) (see gradcheck.h), including the check that
 * a second backward call accumulates (the gradients double). Small sizes: the file runs in
 * well under a second. */
#include "test.h"
#include "gradcheck.h"
#include "kernels.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ helpers */
#define BF_TEST_PI 3.14159265358979323846

static float *randn_mean(uint64_t seed, size_t n, float mean, float std) {
    return bf_gc_randn(seed + bf_gc_seed_shift(), n, mean, std);
}

/* Kernels run serially below some work size (src/kernels.c: 32768 elements); the "large"
 * cases below are past it so that the threaded paths (partitions, reductions) are checked
 * too. On those only a few entries per tensor get finite differences. */
#define LARGE_WORK 40000

/* ================================================================== linear */
typedef struct { int N, IC, OC, bias, dinp, dweight, dbias; } linear_case;
static const linear_case linear_cases[] = {
    {10, 8, 12, 1, 1, 1, 1},
    {10, 8, 12, 0, 1, 1, 0},     /* no bias */
    {10, 8, 12, 1, 0, 1, 1},     /* dinp NULL (first layer) */
    {7, 5, 3, 1, 1, 1, 1},       /* all sizes distinct: transposed indices show */
    {7, 5, 3, 0, 1, 0, 0},       /* only dinp (frozen weights) */
    {1, 3, 9, 1, 1, 1, 1},
    {33, 20, 17, 1, 1, 1, 1},    /* past one SIMD width */
    /* past the blocking of a packed GEMM (12 x 32 tiles, K slices of 256): K = IC = 260 in
     * the forward, K = N = 260 in dweight, edge tiles everywhere */
    {25, 260, 33, 1, 1, 1, 1},
    {260, 40, 33, 1, 1, 1, 1},
    {640, 16, 64, 1, 1, 1, 1},   /* large: N * OC = 40960 */
};

typedef struct {
    const linear_case *c;
    float *inp, *w, *b, *out, *R, *dinp, *dw, *db;
} linear_ctx;

static double linear_loss(void *p) {
    linear_ctx *x = p;
    const linear_case *c = x->c;
    bf_linear_forward(x->out, x->inp, x->w, c->bias ? x->b : NULL, c->N, c->IC, c->OC);
    return bf_gc_dot(x->out, x->R, (size_t)c->N * c->OC);
}

static void linear_bwd(void *p) {
    linear_ctx *x = p;
    const linear_case *c = x->c;
    bf_linear_backward(c->dinp ? x->dinp : NULL, c->dweight ? x->dw : NULL,
                       c->bias && c->dbias ? x->db : NULL, x->R, x->inp, x->w, c->N, c->IC, c->OC);
}

TEST_FP32(linear_forward_matches_naive) {
    for (int k = 0; k < NUM(linear_cases); k++) {
        const linear_case *c = &linear_cases[k];
        int N = c->N, IC = c->IC, OC = c->OC;
        float *inp = bf_gc_randn_shifted(100 + k, (size_t)N * IC, 1.0f), *w = bf_gc_randn_shifted(200 + k, (size_t)OC * IC, 0.5f);
        float *b = bf_gc_randn_shifted(300 + k, (size_t)OC, 1.0f), *out = bf_gc_zeros((size_t)N * OC);
        double *want = bf_malloc(sizeof(double) * N * OC);
        for (int i = 0; i < N; i++)
            for (int o = 0; o < OC; o++) {
                double s = c->bias ? b[o] : 0.0;
                for (int j = 0; j < IC; j++) s += (double)inp[i * IC + j] * w[o * IC + j];
                want[i * OC + o] = s;
            }
        for (int i = 0; i < N * OC; i++) out[i] = NAN;   /* must be overwritten, not added to */
        bf_linear_forward(out, inp, w, c->bias ? b : NULL, N, IC, OC);
        CHECK(bf_gc_close(bf_gc_label("linear case %d out", k), out, want, (size_t)N * OC, 1e-5,
                          1e-5) == 0);
        free(inp); free(w); free(b); free(out); free(want);
    }
}

TEST_FP32(linear_backward_gradcheck) {
    for (int k = 0; k < NUM(linear_cases); k++) {
        const linear_case *c = &linear_cases[k];
        size_t ni = (size_t)c->N * c->IC, nw = (size_t)c->OC * c->IC, no = (size_t)c->N * c->OC;
        linear_ctx x = {c, bf_gc_randn_shifted(10 + k, ni, 1.0f), bf_gc_randn_shifted(20 + k, nw, 0.5f),
                        bf_gc_randn_shifted(30 + k, (size_t)c->OC, 1.0f), bf_gc_zeros(no), bf_gc_randn_shifted(40 + k, no, 1.0f),
                        bf_gc_zeros(ni), bf_gc_zeros(nw), bf_gc_zeros((size_t)c->OC)};
        bf_gc_tensor t[3];
        int nt = 0;
        if (c->dinp) t[nt++] = (bf_gc_tensor){"inp", x.inp, x.dinp, ni};
        if (c->dweight) t[nt++] = (bf_gc_tensor){"weight", x.w, x.dw, nw};
        if (c->bias && c->dbias) t[nt++] = (bf_gc_tensor){"bias", x.b, x.db, (size_t)c->OC};
        bf_gc_problem p = bf_gc_case_problem(linear_loss, linear_bwd, &x, k, no, 64);
        CHECK(bf_gradcheck(bf_gc_label("linear N=%d IC=%d OC=%d bias=%d dinp=%s", c->N, c->IC,
                                       c->OC, c->bias, c->dinp ? "yes" : "NULL"),
                           &p, t, nt) == 0);
        free(x.inp); free(x.w); free(x.b); free(x.out); free(x.R);
        free(x.dinp); free(x.dw); free(x.db);
    }
}

/* ================================================================== layernorm */
typedef struct { int N, C; float offset, scale; int dparams; } ln_case;
/* (C = 2 is left out on purpose: there xhat = +-|d|/sqrt(d^2 + eps) and both the forward
 * and the finite differences are ill-conditioned whenever the two inputs nearly agree.) */
static const ln_case ln_cases[] = {
    {10, 8, 0.0f, 1.0f, 1}, {7, 33, 3.0f, 2.0f, 1}, {3, 4, -1.0f, 1.0f, 1},
    {5, 8, 0.5f, 1.0f, 0},   /* dweight, dbias NULL (frozen parameters) */
    {1000, 48, 0.0f, 1.0f, 1},   /* large */
};

typedef struct {
    const ln_case *c;
    float *inp, *w, *b, *out, *mean, *rstd, *R, *dinp, *dw, *db;
} ln_ctx;

static double ln_loss(void *p) {
    ln_ctx *x = p;
    bf_layernorm_forward(x->out, x->mean, x->rstd, x->inp, x->w, x->b, x->c->N, x->c->C);
    return bf_gc_dot(x->out, x->R, (size_t)x->c->N * x->c->C);
}
static void ln_bwd(void *p) {
    ln_ctx *x = p;
    int dp = x->c->dparams;
    bf_layernorm_backward(x->dinp, dp ? x->dw : NULL, dp ? x->db : NULL, x->R, x->inp, x->w,
                          x->mean, x->rstd, x->c->N, x->c->C);
}

static ln_ctx ln_make(const ln_case *c, uint64_t seed) {
    size_t n = (size_t)c->N * c->C;
    ln_ctx x = {c, randn_mean(seed, n, c->offset, c->scale), randn_mean(seed + 1, (size_t)c->C, 1.0f, 0.3f),
                bf_gc_randn_shifted(seed + 2, (size_t)c->C, 0.5f), bf_gc_zeros(n), bf_gc_zeros((size_t)c->N),
                bf_gc_zeros((size_t)c->N), bf_gc_randn_shifted(seed + 3, n, 1.0f), bf_gc_zeros(n), bf_gc_zeros((size_t)c->C),
                bf_gc_zeros((size_t)c->C)};
    return x;
}
static void ln_free(ln_ctx *x) {
    free(x->inp); free(x->w); free(x->b); free(x->out); free(x->mean); free(x->rstd);
    free(x->R); free(x->dinp); free(x->dw); free(x->db);
}

TEST(layernorm_forward_matches_naive) {
    for (int k = 0; k < NUM(ln_cases); k++) {
        const ln_case *c = &ln_cases[k];
        ln_ctx x = ln_make(c, 500 + 10 * (uint64_t)k);
        int N = c->N, C = c->C;
        double *want = bf_malloc(sizeof(double) * N * C), *wm = bf_malloc(sizeof(double) * N),
               *wr = bf_malloc(sizeof(double) * N);
        for (int i = 0; i < N; i++) {
            double m = 0, v = 0;
            for (int j = 0; j < C; j++) m += x.inp[i * C + j];
            m /= C;
            for (int j = 0; j < C; j++) v += (x.inp[i * C + j] - m) * (x.inp[i * C + j] - m);
            double s = 1.0 / sqrt(v / C + 1e-5);
            for (int j = 0; j < C; j++) want[i * C + j] = (x.inp[i * C + j] - m) * s * x.w[j] + x.b[j];
            wm[i] = m;
            wr[i] = s;
        }
        (void)ln_loss(&x);
        CHECK(bf_gc_close("layernorm out", x.out, want, (size_t)N * C, 1e-5, 1e-5) == 0);
        CHECK(bf_gc_close("layernorm mean", x.mean, wm, (size_t)N, 1e-6, 1e-6) == 0);
        CHECK(bf_gc_close("layernorm rstd", x.rstd, wr, (size_t)N, 1e-6, 1e-5) == 0);
        ln_free(&x);
        free(want); free(wm); free(wr);
    }
}

TEST(layernorm_backward_gradcheck) {
    for (int k = 0; k < NUM(ln_cases); k++) {
        const ln_case *c = &ln_cases[k];
        ln_ctx x = ln_make(c, 600 + 10 * (uint64_t)k);
        size_t n = (size_t)c->N * c->C;
        bf_gc_tensor t[] = {{"inp", x.inp, x.dinp, n}, {"weight", x.w, x.dw, (size_t)c->C},
                            {"bias", x.b, x.db, (size_t)c->C}};
        bf_gc_problem p = bf_gc_case_problem(ln_loss, ln_bwd, &x, k, n, 64);
        CHECK(bf_gradcheck(bf_gc_label("layernorm N=%d C=%d dweight,dbias=%s", c->N, c->C,
                                       c->dparams ? "yes" : "NULL"),
                           &p, t, c->dparams ? NUM(t) : 1) == 0);
        ln_free(&x);
    }
}

/* ================================================================== attention */
typedef struct { int B, T, C, NH, causal; } att_case;
static const att_case att_cases[] = {
    {2, 5, 8, 2, 1}, {2, 5, 8, 2, 0}, {1, 7, 12, 3, 1}, {1, 7, 12, 3, 0},
    {2, 1, 4, 1, 1}, {1, 4, 6, 1, 0},
    {1, 9, 64, 2, 1}, {1, 9, 40, 2, 0},   /* head sizes 32 and 20: whole and partial vectors */
    {4, 32, 64, 2, 1}, {4, 32, 64, 2, 0}, /* large: B NH T T hs = 262144 */
    {2, 17, 48, 3, 1}, {2, 17, 48, 3, 0}, /* the sgemm path at its smallest, odd length */
};

typedef struct {
    const att_case *c;
    float *qkv, *out, *att, *R, *dqkv;
} att_ctx;

static double att_loss(void *p) {
    att_ctx *x = p;
    const att_case *c = x->c;
    bf_attention_forward(x->out, x->att, x->qkv, c->B, c->T, c->C, c->NH, c->causal);
    return bf_gc_dot(x->out, x->R, (size_t)c->B * c->T * c->C);
}
static void att_bwd(void *p) {
    att_ctx *x = p;
    const att_case *c = x->c;
    bf_attention_backward(x->dqkv, x->R, x->qkv, x->att, c->B, c->T, c->C, c->NH, c->causal);
}

TEST_FP32(attention_forward_matches_ref) {
    for (int k = 0; k < NUM(att_cases); k++) {
        const att_case *c = &att_cases[k];
        int B = c->B, T = c->T, C = c->C, NH = c->NH;
        size_t nq = (size_t)B * T * 3 * C, no = (size_t)B * T * C, na = (size_t)B * NH * T * T;
        float *qkv = bf_gc_randn_shifted(700 + k, nq, 1.0f), *out = bf_gc_zeros(no), *att = bf_gc_zeros(na);
        float *oref = bf_gc_zeros(no), *aref = bf_gc_zeros(na);
        for (size_t i = 0; i < na; i++) att[i] = NAN;   /* every entry must be written */
        bf_attention_forward(out, att, qkv, B, T, C, NH, c->causal);
        bf_attention_forward_ref(oref, aref, qkv, B, T, C, NH, c->causal);
        double *wo = bf_malloc(sizeof(double) * no), *wa = bf_malloc(sizeof(double) * na);
        for (size_t i = 0; i < no; i++) wo[i] = oref[i];
        for (size_t i = 0; i < na; i++) wa[i] = aref[i];
        CHECK(bf_gc_close(bf_gc_label("attention case %d out", k), out, wo, no, 1e-5, 1e-5) == 0);
        CHECK(bf_gc_close(bf_gc_label("attention case %d att", k), att, wa, na, 1e-6, 1e-5) == 0);
        /* probabilities: rows sum to one, zero above the diagonal when causal */
        size_t masked = 0, negative = 0, unnormalised = 0;
        for (int r = 0; r < B * NH * T; r++) {
            int i = r % T;
            double s = 0.0;
            for (int j = 0; j < T; j++) {
                s += att[(size_t)r * T + j];
                masked += c->causal && j > i && att[(size_t)r * T + j] != 0.0f;
                negative += !(att[(size_t)r * T + j] >= 0.0f);
            }
            unnormalised += !(fabs(s - 1.0) <= 1e-5);
        }
        CHECK(masked == 0);
        CHECK(negative == 0);
        CHECK(unnormalised == 0);
        free(qkv); free(out); free(att); free(oref); free(aref); free(wo); free(wa);
    }
}

/* Hand-computed tiny case for the reference itself: one head, hs = 1, T = 2. */
TEST(attention_ref_hand_computed) {
    /* token layout (q, k, v) with C = 1 */
    float qkv[] = {1.0f, 0.0f, 2.0f,     /* token 0: q=1 k=0 v=2 */
                   0.5f, 1.0f, -1.0f};   /* token 1: q=.5 k=1 v=-1 */
    float out[2], att[4];
    for (int causal = 0; causal <= 1; causal++) {
        bf_attention_forward_ref(out, att, qkv, 1, 2, 1, 1, causal);
        /* scale = 1; token 0 scores: q0*k0 = 0, q0*k1 = 1 */
        double p01 = causal ? 0.0 : exp(1.0) / (1.0 + exp(1.0));
        CHECK_NEAR(att[0], 1.0 - p01, 1e-6);
        CHECK_NEAR(att[1], p01, 1e-6);
        CHECK_NEAR(out[0], (1.0 - p01) * 2.0 + p01 * -1.0, 1e-6);
        /* token 1 scores: 0, 0.5 */
        double p11 = exp(0.5) / (1.0 + exp(0.5));
        CHECK_NEAR(att[2], 1.0 - p11, 1e-6);
        CHECK_NEAR(att[3], p11, 1e-6);
        CHECK_NEAR(out[1], (1.0 - p11) * 2.0 + p11 * -1.0, 1e-6);
        float out2[2], att2[4];
        bf_attention_forward(out2, att2, qkv, 1, 2, 1, 1, causal);
        CHECK_NEAR(out2[0], out[0], 1e-6);
        CHECK_NEAR(out2[1], out[1], 1e-6);
    }
}

/* Causal: outputs and attention rows of tokens <= i do not change when tokens > i change.
 * Bidirectional: they do. */
TEST(attention_causal_ignores_future) {
    int B = 2, T = 6, C = 8, NH = 2;
    size_t nq = (size_t)B * T * 3 * C, no = (size_t)B * T * C, na = (size_t)B * NH * T * T;
    float *qkv = bf_gc_randn_shifted(800, nq, 1.0f), *out = bf_gc_zeros(no), *att = bf_gc_zeros(na);
    float *qkv2 = bf_gc_zeros(nq), *out2 = bf_gc_zeros(no), *att2 = bf_gc_zeros(na);
    bf_rng rng;
    bf_rng_seed(&rng, 801);
    for (int causal = 1; causal >= 0; causal--) {
        bf_attention_forward(out, att, qkv, B, T, C, NH, causal);
        for (int i = 0; i < T - 1; i++) {
            memcpy(qkv2, qkv, nq * sizeof(float));
            for (int b = 0; b < B; b++)
                for (int t = i + 1; t < T; t++)
                    for (int j = 0; j < 3 * C; j++)
                        qkv2[((size_t)b * T + t) * 3 * C + j] = 3.0f * bf_rng_normal(&rng);
            bf_attention_forward(out2, att2, qkv2, B, T, C, NH, causal);
            double maxdiff = 0.0;
            for (int b = 0; b < B; b++)
                for (int t = 0; t <= i; t++)
                    for (int j = 0; j < C; j++) {
                        size_t o = ((size_t)b * T + t) * C + j;
                        maxdiff = fmax(maxdiff, fabs((double)out[o] - out2[o]));
                    }
            if (causal) {
                if (maxdiff > 1e-6)
                    fprintf(stderr, "    causal attention: token %d output changed by %.3g when "
                            "tokens > %d changed\n", i, maxdiff, i);
                CHECK(maxdiff <= 1e-6);
                for (int r = 0; r < B * NH; r++)
                    for (int t = 0; t <= i; t++)
                        CHECK(bf_gc_same_floats("causal att row", att + ((size_t)r * T + t) * T,
                                          att2 + ((size_t)r * T + t) * T, (size_t)T) == 0);
            } else {
                CHECK(maxdiff > 1e-3);   /* bidirectional: the past sees the future */
            }
        }
    }
    free(qkv); free(out); free(att); free(qkv2); free(out2); free(att2);
}

/* Cached decoding, one token at a time, equals causal attention over the whole sequence. */
TEST(attention_decode_step_matches_causal_forward) {
    int B = 3, T = 6, C = 8, NH = 2;
    size_t nq = (size_t)B * T * 3 * C, no = (size_t)B * T * C;
    float *qkv = bf_gc_randn_shifted(850, nq, 1.0f), *out = bf_gc_zeros(no), *att = bf_gc_zeros((size_t)B * NH * T * T);
    float *kc = bf_gc_zeros((size_t)B * T * C), *vc = bf_gc_zeros((size_t)B * T * C);
    float *row = bf_gc_zeros((size_t)B * 3 * C), *o = bf_gc_zeros((size_t)B * C);
    double *want = bf_malloc(sizeof(double) * B * C);
    bf_attention_forward(out, att, qkv, B, T, C, NH, 1);
    for (int pos = 0; pos < T; pos++) {
        for (int b = 0; b < B; b++) {
            memcpy(row + (size_t)b * 3 * C, qkv + ((size_t)b * T + pos) * 3 * C, sizeof(float) * 3 * C);
            for (int j = 0; j < C; j++) want[b * C + j] = out[((size_t)b * T + pos) * C + j];
        }
        bf_attention_decode_step(o, kc, vc, row, B, T, C, NH, pos);
        CHECK(bf_gc_close(bf_gc_label("decode step pos %d", pos), o, want, (size_t)B * C, 1e-5,
                          1e-5) == 0);
    }
    free(qkv); free(out); free(att); free(kc); free(vc); free(row); free(o); free(want);
}

TEST_FP32(attention_backward_gradcheck) {
    for (int k = 0; k < NUM(att_cases); k++) {
        const att_case *c = &att_cases[k];
        size_t nq = (size_t)c->B * c->T * 3 * c->C, no = (size_t)c->B * c->T * c->C;
        att_ctx x = {c, bf_gc_randn_shifted(900 + k, nq, 1.0f), bf_gc_zeros(no),
                     bf_gc_zeros((size_t)c->B * c->NH * c->T * c->T), bf_gc_randn_shifted(950 + k, no, 1.0f), bf_gc_zeros(nq)};
        bf_gc_tensor t[] = {{"qkv", x.qkv, x.dqkv, nq}};
        /* a 240-entry qkv: check them all in the first case, else a random 64 */
        bf_gc_problem p = bf_gc_case_problem(att_loss, att_bwd, &x, k,
                                             (size_t)c->B * c->NH * c->T * c->T * (c->C / c->NH),
                                             k == 0 ? 1000 : 64);
        const char *label = bf_gc_label("attention B=%d T=%d C=%d NH=%d causal=%d", c->B, c->T,
                                        c->C, c->NH, c->causal);
        CHECK(bf_gradcheck(label, &p, t, 1) == 0);
        CHECK(bf_gradcheck_direction(label, &p, t, 1) == 0);
        if (c->causal) {   /* token 0's q only sees key 0 (a00 = 1): its gradient is zero */
            for (int b = 0; b < c->B; b++)
                for (int j = 0; j < c->C; j++)
                    CHECK_NEAR(x.dqkv[(size_t)b * c->T * 3 * c->C + j], 0.0, 1e-6);
        }
        free(x.qkv); free(x.out); free(x.att); free(x.R); free(x.dqkv);
    }
}

/* ================================================================== gelu */
static double gelu_ref(double x) { return 0.5 * x * (1.0 + erf(x / sqrt(2.0))); }
static double gelu_grad_ref(double x) {
    return 0.5 * (1.0 + erf(x / sqrt(2.0))) + x * exp(-0.5 * x * x) / sqrt(2.0 * BF_TEST_PI);
}
static const float gelu_special[] = {0.0f, 1e-3f, -1e-3f, 0.5f, -0.5f, 1.0f, -1.0f, 2.5f, -2.5f,
                                     3.0f, -3.0f, 4.5f, -4.5f, 6.0f, -6.0f, 10.0f, -10.0f, 30.0f,
                                     -30.0f, 1e-20f, -1e-20f};

TEST(gelu_forward_matches_erf_in_double) {
    size_t ns = (size_t)NUM(gelu_special), n = 2100 + ns;   /* chunks, vectors and tails */
    float *inp = bf_gc_randn_shifted(1000, n, 2.5f), *out = bf_gc_zeros(n), *dinp = bf_gc_zeros(n), *ones = bf_gc_zeros(n);
    memcpy(inp, gelu_special, sizeof gelu_special);
    double *want = bf_malloc(sizeof(double) * n), *wantg = bf_malloc(sizeof(double) * n);
    for (size_t i = 0; i < n; i++) {
        want[i] = gelu_ref(inp[i]);
        wantg[i] = gelu_grad_ref(inp[i]);
        ones[i] = 1.0f;
    }
    bf_gelu_forward(out, inp, n);
    /* float accuracy: a few ulp of |x| (the result is x * Phi(x)) */
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) {
        double tol = 1e-7 + 5e-7 * fabs((double)inp[i]);
        if (!(isfinite(out[i]) && fabs(out[i] - want[i]) <= tol)) {
            if (bad++ < 5)
                fprintf(stderr, "    gelu(%.9g) = %.9g, want %.9g\n", (double)inp[i], (double)out[i], want[i]);
        }
    }
    CHECK(bad == 0);
    bf_gelu_backward(dinp, inp, ones, n);   /* dout = 1: the derivative itself */
    CHECK(bf_gc_close("gelu derivative", dinp, wantg, n, 1e-6, 1e-5) == 0);
    /* NaN propagates */
    float nan_in = NAN, nan_out = 0.0f;
    bf_gelu_forward(&nan_out, &nan_in, 1);
    CHECK(isnan(nan_out));
    free(inp); free(out); free(dinp); free(ones); free(want); free(wantg);
}

TEST(gelu_backward_gradcheck) {
    static const size_t sizes[] = {101, LARGE_WORK + 5};   /* vectors and a scalar tail */
    for (int k = 0; k < NUM(sizes); k++)   /* the first 13: the moderate special values */
        CHECK(bf_gc_pointwise_check("gelu", bf_gelu_forward, bf_gelu_backward, sizes[k],
                                    1100 + 10 * k, 2.0f, gelu_special, 13, k) == 0);
}

/* ================================================================== residual */
typedef struct { size_t n; float *a, *b, *out, *R, *da, *db; } res_ctx;
static double res_loss(void *p) {
    res_ctx *x = p;
    bf_residual_forward(x->out, x->a, x->b, x->n);
    return bf_gc_dot(x->out, x->R, x->n);
}
static void res_bwd(void *p) {
    res_ctx *x = p;
    bf_residual_backward(x->da, x->db, x->R, x->n);
}

TEST(residual_forward_and_gradcheck) {
    static const size_t sizes[] = {37, LARGE_WORK + 3};
    for (int k = 0; k < NUM(sizes); k++) {
        size_t n = sizes[k];
        res_ctx x = {n, bf_gc_randn_shifted(1200 + 10 * k, n, 1.0f), bf_gc_randn_shifted(1201 + 10 * k, n, 1.0f), bf_gc_zeros(n),
                     bf_gc_randn_shifted(1202 + 10 * k, n, 1.0f), bf_gc_zeros(n), bf_gc_zeros(n)};
        (void)res_loss(&x);
        size_t bad = 0;
        for (size_t i = 0; i < n; i++) bad += !(x.out[i] == x.a[i] + x.b[i]);
        CHECK(bad == 0);
        bf_gc_tensor t[] = {{"a", x.a, x.da, n}, {"b", x.b, x.db, n}};
        bf_gc_problem p = bf_gc_case_problem(res_loss, res_bwd, &x, k, n, 64);
        CHECK(bf_gradcheck(bf_gc_label("residual n=%zu", n), &p, t, 2) == 0);
        free(x.a); free(x.b); free(x.out); free(x.R); free(x.da); free(x.db);
    }
}

/* ================================================================== embed */
typedef struct {
    int B, T, C, K, reverse;
    int y[16];
    int y_null, dh, dcls;
} embed_case;
static const embed_case embed_cases[] = {
    {3, 5, 8, 4, 0, {2, -1, 0}, 0, 1, 1},
    {3, 5, 8, 4, 1, {2, -1, 0}, 0, 1, 1},
    {3, 5, 8, 4, 1, {0}, 1, 1, 1},           /* y == NULL: mean embedding for all */
    {3, 5, 8, 4, 0, {-1, -1, -1}, 0, 1, 1},  /* all unconditional */
    {3, 5, 8, 0, 0, {0}, 1, 1, 1},           /* num_classes 0, y NULL */
    {3, 5, 8, 0, 1, {-1, -1, -1}, 0, 1, 1},  /* num_classes 0, y given */
    {3, 4, 6, 3, 1, {1, -1, 2}, 0, 0, 1},    /* dh NULL */
    {3, 4, 6, 3, 0, {1, 1, -1}, 0, 1, 0},    /* dcls NULL (frozen class table) */
    {2, 3, 20, 3, 1, {-1, 2}, 0, 1, 1},      /* C past one SIMD width */
    {16, 64, 40, 5, 1, {4, -1, 0, 2, 1, -1, 3, 3, 0, -1, 2, 4, 1, 0, -1, 2}, 0, 1, 1},   /* large */
};

typedef struct {
    const embed_case *c;
    float *h, *pos, *cls, *out, *R, *dh, *dpos, *dcls;
} embed_ctx;

static const int *embed_y(const embed_case *c) { return c->y_null ? NULL : c->y; }

static double embed_loss(void *p) {
    embed_ctx *x = p;
    const embed_case *c = x->c;
    bf_embed_forward(x->out, x->h, x->pos, c->K > 0 ? x->cls : NULL, embed_y(c), c->B, c->T, c->C,
                     c->K, c->reverse);
    return bf_gc_dot(x->out, x->R, (size_t)c->B * c->T * c->C);
}
static void embed_bwd(void *p) {
    embed_ctx *x = p;
    const embed_case *c = x->c;
    bf_embed_backward(c->dh ? x->dh : NULL, x->dpos, c->dcls && c->K > 0 ? x->dcls : NULL, x->R,
                      embed_y(c), c->B, c->T, c->C, c->K, c->reverse);
}

static embed_ctx embed_make(const embed_case *c, uint64_t seed) {
    size_t n = (size_t)c->B * c->T * c->C;
    size_t nc = (size_t)(c->K > 0 ? c->K : 1) * c->C;
    embed_ctx x = {c, bf_gc_randn_shifted(seed, n, 1.0f), bf_gc_randn_shifted(seed + 1, (size_t)c->T * c->C, 1.0f),
                   bf_gc_randn_shifted(seed + 2, nc, 1.0f), bf_gc_zeros(n), bf_gc_randn_shifted(seed + 3, n, 1.0f), bf_gc_zeros(n),
                   bf_gc_zeros((size_t)c->T * c->C), bf_gc_zeros(nc)};
    return x;
}
static void embed_free(embed_ctx *x) {
    free(x->h); free(x->pos); free(x->cls); free(x->out); free(x->R); free(x->dh);
    free(x->dpos); free(x->dcls);
}

TEST(embed_forward_matches_naive) {
    for (int k = 0; k < NUM(embed_cases); k++) {
        const embed_case *c = &embed_cases[k];
        embed_ctx x = embed_make(c, 1300 + 10 * (uint64_t)k);
        int B = c->B, T = c->T, C = c->C, K = c->K;
        const int *y = embed_y(c);
        size_t n = (size_t)B * T * C;
        double *want = bf_malloc(sizeof(double) * n);
        for (int b = 0; b < B; b++)
            for (int t = 0; t < T; t++)
                for (int j = 0; j < C; j++) {
                    int pt = c->reverse ? T - 1 - t : t;
                    double e = 0.0;
                    if (K > 0) {
                        int label = y ? y[b] : -1;
                        if (label >= 0) e = x.cls[label * C + j];
                        else {
                            for (int q = 0; q < K; q++) e += x.cls[q * C + j];
                            e /= K;
                        }
                    }
                    want[((size_t)b * T + t) * C + j] =
                        (double)x.h[((size_t)b * T + t) * C + j] + x.pos[pt * C + j] + e;
                }
        for (size_t i = 0; i < n; i++) x.out[i] = NAN;
        (void)embed_loss(&x);
        CHECK(bf_gc_close(bf_gc_label("embed case %d out", k), x.out, want, n, 1e-5, 1e-5) == 0);
        embed_free(&x);
        free(want);
    }
}

TEST(embed_backward_gradcheck) {
    for (int k = 0; k < NUM(embed_cases); k++) {
        const embed_case *c = &embed_cases[k];
        embed_ctx x = embed_make(c, 1400 + 10 * (uint64_t)k);
        size_t n = (size_t)c->B * c->T * c->C;
        bf_gc_tensor t[3];
        int nt = 0;
        if (c->dh) t[nt++] = (bf_gc_tensor){"h", x.h, x.dh, n};
        t[nt++] = (bf_gc_tensor){"pos", x.pos, x.dpos, (size_t)c->T * c->C};
        if (c->K > 0 && c->dcls) t[nt++] = (bf_gc_tensor){"cls", x.cls, x.dcls, (size_t)c->K * c->C};
        bf_gc_problem p = bf_gc_case_problem(embed_loss, embed_bwd, &x, k, n, 64);
        CHECK(bf_gradcheck(bf_gc_label("embed case %d (K=%d reverse=%d y=%s dh=%s dcls=%s)", k,
                                       c->K, c->reverse, c->y_null ? "NULL" : "given",
                                       c->dh ? "yes" : "NULL", c->dcls ? "yes" : "NULL"),
                           &p, t, nt) == 0);
        embed_free(&x);
    }
}

/* ================================================================== softbound */
static const float softbound_cs[] = {0.0f, 2.0f, -1.0f, 0.5f};

typedef struct { size_t n; float c; float *inp, *out, *R, *dinp; } sb_ctx;
static double sb_loss(void *p) {
    sb_ctx *x = p;
    bf_softbound_forward(x->out, x->inp, x->n, x->c);
    return bf_gc_dot(x->out, x->R, x->n);
}
static void sb_bwd(void *p) {
    sb_ctx *x = p;
    bf_softbound_backward(x->dinp, x->inp, x->R, x->n, x->c);
}

TEST(softbound_forward_and_gradcheck) {
    for (int k = 0; k <= NUM(softbound_cs); k++) {   /* the last: large, c = 2 */
        size_t n = k < NUM(softbound_cs) ? 70 : LARGE_WORK + 7;
        float c = k < NUM(softbound_cs) ? softbound_cs[k] : 2.0f;
        sb_ctx x = {n, c, bf_gc_randn_shifted(1500 + k, n, 3.0f), bf_gc_zeros(n), bf_gc_randn_shifted(1550 + k, n, 1.0f), bf_gc_zeros(n)};
        double *want = bf_malloc(sizeof(double) * n);
        for (size_t i = 0; i < n; i++) want[i] = c > 0 ? c * tanh((double)x.inp[i] / c) : x.inp[i];
        (void)sb_loss(&x);
        const char *label = bf_gc_label("softbound n=%zu c=%g", n, (double)c);
        CHECK(bf_gc_close(label, x.out, want, n, 1e-6, 1e-6) == 0);
        if (c > 0) {
            size_t bad = 0;
            for (size_t i = 0; i < n; i++) bad += !(fabsf(x.out[i]) <= c);
            CHECK(bad == 0);
        }
        bf_gc_tensor t[] = {{"inp", x.inp, x.dinp, n}};
        bf_gc_problem p = bf_gc_case_problem(sb_loss, sb_bwd, &x, k, n, 64);
        CHECK(bf_gradcheck(label, &p, t, 1) == 0);
        free(x.inp); free(x.out); free(x.R); free(x.dinp); free(want);
    }
}

/* ================================================================== flow step */
typedef struct { int B, T, D; float c; int du; float ra; } fs_case;   /* ra: scale of dalpha_sum, 0: 1 */
static const fs_case fs_cases[] = {
    {2, 5, 4, 0.0f, 1, 0}, {2, 5, 4, 1.5f, 1, 0}, {2, 5, 4, 1.5f, 0, 0}, {3, 3, 2, 0.5f, 1, 0},
    {2, 1, 3, 0.0f, 1, 0},    /* one token: nothing but the copy */
    {2, 4, 19, 1.5f, 1, 0},   /* D past one SIMD width */
    /* large; alpha_sum is a float sum over (T-1) D terms whose rounding moves with every
     * perturbed entry, so its weight in the loss is kept small here */
    {64, 16, 32, 1.5f, 1, 0.1f},
};

typedef struct {
    const fs_case *c;
    float *o, *u, *z, *asum, *Rz, *Ra, *do_, *du;
} fs_ctx;

static double fs_loss(void *p) {
    fs_ctx *x = p;
    const fs_case *c = x->c;
    memset(x->asum, 0, sizeof(float) * c->B);
    bf_flow_step_forward(x->z, x->asum, x->o, x->u, c->B, c->T, c->D, c->c);
    return bf_gc_dot(x->z, x->Rz, (size_t)c->B * c->T * c->D) + bf_gc_dot(x->asum, x->Ra, (size_t)c->B);
}
static void fs_bwd(void *p) {
    fs_ctx *x = p;
    const fs_case *c = x->c;
    bf_flow_step_backward(x->do_, c->du ? x->du : NULL, x->Rz, x->Ra, x->o, x->u, c->B, c->T, c->D, c->c);
}

static fs_ctx fs_make(const fs_case *c, uint64_t seed) {
    size_t nz = (size_t)c->B * c->T * c->D;
    fs_ctx x = {c, bf_gc_randn_shifted(seed, 2 * nz, c->c > 0 ? 1.5f : 0.5f), bf_gc_randn_shifted(seed + 1, nz, 1.0f),
                bf_gc_zeros(nz), bf_gc_zeros((size_t)c->B), bf_gc_randn_shifted(seed + 2, nz, 1.0f),
                bf_gc_randn_shifted(seed + 3, (size_t)c->B, c->ra > 0 ? c->ra : 1.0f), bf_gc_zeros(2 * nz), bf_gc_zeros(nz)};
    return x;
}
static void fs_free(fs_ctx *x) {
    free(x->o); free(x->u); free(x->z); free(x->asum); free(x->Rz); free(x->Ra);
    free(x->do_); free(x->du);
}

static double bound_d(double v, double c) { return c > 0 ? c * tanh(v / c) : v; }

TEST(flow_step_forward_matches_naive) {
    for (int k = 0; k < NUM(fs_cases); k++) {
        const fs_case *c = &fs_cases[k];
        fs_ctx x = fs_make(c, 1600 + 10 * (uint64_t)k);
        int B = c->B, T = c->T, D = c->D;
        size_t nz = (size_t)B * T * D;
        double *want = bf_malloc(sizeof(double) * nz), *wa = bf_malloc(sizeof(double) * B);
        float *prefill = bf_gc_randn_shifted(1690 + k, (size_t)B, 1.0f);
        double abs_sum = 0.0;   /* largest sum |alpha| of an image: scale of the rounding */
        for (int b = 0; b < B; b++) {
            double s = prefill[b], sa = fabs(prefill[b]);
            for (int t = 0; t < T; t++)
                for (int d = 0; d < D; d++) {
                    double a = 0.0, m = 0.0;   /* token 0: alpha = mu = 0 */
                    if (t > 0) {
                        const float *op = x.o + ((size_t)b * T + t - 1) * 2 * D;   /* shift by one */
                        a = bound_d(op[d], c->c);
                        m = bound_d(op[D + d], c->c);
                    }
                    want[((size_t)b * T + t) * D + d] = (x.u[((size_t)b * T + t) * D + d] - m) * exp(-a);
                    s += a;
                    sa += fabs(a);
                }
            wa[b] = s;
            abs_sum = fmax(abs_sum, sa);
        }
        for (size_t i = 0; i < nz; i++) x.z[i] = NAN;
        memcpy(x.asum, prefill, sizeof(float) * B);   /* alpha_sum accumulates */
        bf_flow_step_forward(x.z, x.asum, x.o, x.u, B, T, D, c->c);
        CHECK(bf_gc_close(bf_gc_label("flow_step case %d z", k), x.z, want, nz, 1e-5, 1e-5) == 0);
        /* a float sum over T D terms: rounding ~ eps sqrt(T D) |partial sums|, bounded here
         * by 2e-7 sum|alpha| (a wrong term is off by O(1)) */
        CHECK(bf_gc_close(bf_gc_label("flow_step case %d alpha_sum (+= prefill)", k), x.asum, wa,
                          (size_t)B, 1e-5 + 2e-7 * abs_sum, 1e-5) == 0);
        for (int b = 0; b < B; b++)   /* token 0 is copied exactly */
            CHECK(bf_gc_same_floats("flow_step token 0", x.z + (size_t)b * T * D, x.u + (size_t)b * T * D,
                              (size_t)D) == 0);
        fs_free(&x);
        free(want); free(wa); free(prefill);
    }
}

TEST(flow_step_backward_gradcheck) {
    for (int k = 0; k < NUM(fs_cases); k++) {
        const fs_case *c = &fs_cases[k];
        fs_ctx x = fs_make(c, 1700 + 10 * (uint64_t)k);
        size_t nz = (size_t)c->B * c->T * c->D;
        bf_gc_tensor t[2];
        int nt = 0;
        t[nt++] = (bf_gc_tensor){"o", x.o, x.do_, 2 * nz};
        if (c->du) t[nt++] = (bf_gc_tensor){"u", x.u, x.du, nz};
        bf_gc_problem p = bf_gc_case_problem(fs_loss, fs_bwd, &x, k, nz, 1000);
        CHECK(bf_gradcheck(bf_gc_label("flow_step B=%d T=%d D=%d c=%g du=%s", c->B, c->T, c->D,
                                       (double)c->c, c->du ? "yes" : "NULL"),
                           &p, t, nt) == 0);
        /* the last token's head outputs are never used: exactly zero gradient */
        for (int b = 0; b < c->B; b++)
            for (int d = 0; d < 2 * c->D; d++)
                CHECK(x.do_[((size_t)b * c->T + c->T - 1) * 2 * c->D + d] == 0.0f);
        fs_free(&x);
    }
}

/* ================================================================== gaussian NLL */
typedef struct { int B, N; float *z, *nll, *R, *dz; } nll_ctx;
static double nll_loss(void *p) {
    nll_ctx *x = p;
    bf_gaussian_nll_forward(x->nll, x->z, x->B, x->N);
    return bf_gc_dot(x->nll, x->R, (size_t)x->B);
}
static void nll_bwd(void *p) {
    nll_ctx *x = p;
    bf_gaussian_nll_backward(x->dz, x->R, x->z, x->B, x->N);
}

TEST(gaussian_nll_forward_and_gradcheck) {
    int B = 3, N = 20;
    nll_ctx x = {B, N, bf_gc_randn_shifted(1800, (size_t)B * N, 1.3f), bf_gc_zeros((size_t)B), bf_gc_randn_shifted(1801, (size_t)B, 5.0f),
                 bf_gc_zeros((size_t)B * N)};
    double want[3];
    for (int b = 0; b < B; b++) {
        double s = 0.0;
        for (int i = 0; i < N; i++) s += (double)x.z[b * N + i] * x.z[b * N + i];
        want[b] = 0.5 * s / N + 0.5 * log(2.0 * BF_TEST_PI);
    }
    (void)nll_loss(&x);
    CHECK(bf_gc_close("gaussian_nll", x.nll, want, (size_t)B, 1e-6, 1e-6) == 0);
    bf_gc_tensor t[] = {{"z", x.z, x.dz, (size_t)B * N}};
    /* quadratic loss: the central difference is exact up to rounding, so a larger step */
    bf_gc_problem p = {.loss = nll_loss, .backward = nll_bwd, .ctx = &x, .h = 1e-2};
    CHECK(bf_gradcheck("gaussian_nll", &p, t, 1) == 0);
    free(x.z); free(x.nll); free(x.R); free(x.dz);
}

/* ================================================================== permute */
TEST(permute_tokens_reverse_and_copy) {
    int B = 2, T = 5, C = 3;
    size_t n = (size_t)B * T * C;
    float *a = bf_gc_randn_shifted(1900, n, 1.0f), *r = bf_gc_zeros(n), *rr = bf_gc_zeros(n), *cp = bf_gc_zeros(n);
    bf_permute_tokens(r, a, B, T, C, 1);
    bf_permute_tokens(rr, r, B, T, C, 1);
    bf_permute_tokens(cp, a, B, T, C, 0);
    CHECK(bf_gc_same_floats("permute copy", cp, a, n) == 0);
    CHECK(bf_gc_same_floats("permute reverse twice", rr, a, n) == 0);
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++)
            CHECK(bf_gc_same_floats("permute reverse", r + ((size_t)b * T + t) * C,
                              a + ((size_t)b * T + T - 1 - t) * C, (size_t)C) == 0);
    free(a); free(r); free(rr); free(cp);
}

/* ================================================================== the checker itself */
/* A gradient that is wrong by a factor 2, by a missing term, or that overwrites instead of
 * accumulating must be caught by bf_gradcheck (guards the tolerances above). */
typedef struct { int mode; size_t n; float *a, *b, *out, *R, *da, *db; } bad_ctx;
static double bad_loss(void *p) {   /* out = a * b + a */
    bad_ctx *x = p;
    for (size_t i = 0; i < x->n; i++) x->out[i] = x->a[i] * x->b[i] + x->a[i];
    return bf_gc_dot(x->out, x->R, x->n);
}
static void bad_bwd(void *p) {
    bad_ctx *x = p;
    for (size_t i = 0; i < x->n; i++) {
        float g = x->R[i];
        float da = g * (x->b[i] + 1.0f), db = g * x->a[i];
        if (x->mode == 1) da *= 2.0f;                     /* factor 2 */
        if (x->mode == 2) da = g * x->b[i];               /* missing term */
        if (x->mode == 3) { x->da[i] += da; x->db[i] = db; continue; }   /* overwrites db */
        if (x->mode == 4) db = g * x->a[x->n - 1 - i];    /* wrong index */
        x->da[i] += da;
        x->db[i] += db;
    }
}

TEST(gradcheck_catches_wrong_gradients) {
    size_t n = 16;
    for (int mode = 0; mode <= 4; mode++) {
        /* fixed inputs (no BF_TEST_SEED): the directional check is one random projection */
        bad_ctx x = {mode, n, bf_gc_randn(2000, n, 0.0f, 1.0f), bf_gc_randn(2001, n, 0.0f, 1.0f),
                     bf_gc_zeros(n), bf_gc_randn(2002, n, 0.0f, 1.0f), bf_gc_zeros(n), bf_gc_zeros(n)};
        bf_gc_tensor t[] = {{"a", x.a, x.da, n}, {"b", x.b, x.db, n}};
        bf_gc_problem p = {.loss = bad_loss, .backward = bad_bwd, .ctx = &x};
        p.quiet = mode != 0;   /* the failures of modes 1-4 are expected */
        int fails = bf_gradcheck("deliberately wrong", &p, t, 2);
        int dfails = bf_gradcheck_direction("deliberately wrong", &p, t, 2);
        if (mode == 0) { CHECK(fails == 0); CHECK(dfails == 0); }
        else CHECK(fails > 0);
        if (mode == 1 || mode == 2) CHECK(dfails == 1);
        free(x.a); free(x.b); free(x.out); free(x.R); free(x.da); free(x.db);
    }
}
