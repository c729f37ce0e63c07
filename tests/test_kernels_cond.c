/* Tests of the conditioning kernels (src/kernels_cond.h): forwards against hand-written
 * double-precision loops, backwards against the naive *_ref twins and against central finite
 * differences of L = sum(out * R) through bf_gradcheck (which also checks that a second
 * backward accumulates). Small sizes plus one case per kernel past the serial threshold
 * (32768 elements) so the threaded paths run too. */
#include "test.h"
#include "gradcheck.h"
#include "kernels_cond.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ helpers */
#define LARGE_WORK 40000

/* (B, T, C) cases shared by the two modulations: C = 70 spans a full and a partial channel
 * block of the backward (64), C = 1 and T = 1 the degenerate shapes, the last is large. */
typedef struct { int B, T, C; } btc_case;
static const btc_case btc_cases[] = {
    {2, 3, 5}, {3, 4, 70}, {1, 1, 1}, {2, 1, 130}, {8, 40, 128},
};

/* ================================================================== the two modulations */
/* adaLN modulation, out = xn (1 + scale) + shift, and the gated residual, out = x + gate h:
 * a (B, T, C) tensor modulated by (B, C) vectors of each example's channels. Their kernels
 * take the same arguments, so one context and one pair of checks serve both: in[] and d[] in
 * the kernels' argument order, and the op says which of them are (B, T, C) and which inputs
 * the backward reads. */
typedef struct mod_op mod_op;
typedef struct {
    const mod_op *op;
    const btc_case *c;
    float *in[3], *out, *R, *d[3];
} mod_ctx;

struct mod_op {
    const char *name, *in_names[3];
    int per_token[3];   /* input i is (B, T, C); else (B, C) */
    float std[3];       /* of the random inputs */
    int exact_d0;       /* d[0] is dout itself: compared with the naive twin bit for bit */
    void (*forward)(float *out, const float *, const float *, const float *, int B, int T, int C);
    /* the kernel and its naive twin: d[0..2], dout, then in[bwd_in[0]], in[bwd_in[1]] */
    void (*backward[2])(float *, float *, float *, const float *dout, const float *,
                        const float *, int B, int T, int C);
    int bwd_in[2];
    double (*want)(float *const *in, size_t i, size_t e);   /* out[i], e = (b, channel) */
};

static double ada_want(float *const *in, size_t i, size_t e) {
    return (double)in[0][i] * (1.0 + in[2][e]) + in[1][e];
}
static const mod_op adaln_op = {
    "adaln", {"xn", "shift", "scale"}, {1, 0, 0}, {1.0f, 0.7f, 0.5f}, 0, bf_adaln_modulate_forward,
    {bf_adaln_modulate_backward, bf_adaln_modulate_backward_ref}, {0, 2}, ada_want};

static double gr_want(float *const *in, size_t i, size_t e) {
    return (double)in[0][i] + (double)in[1][e] * in[2][i];
}
static const mod_op gated_op = {
    "gated_residual", {"x", "gate", "h"}, {1, 0, 1}, {1.0f, 0.7f, 1.0f}, 1, bf_gated_residual_forward,
    {bf_gated_residual_backward, bf_gated_residual_backward_ref}, {1, 2}, gr_want};

static size_t mod_size(const mod_ctx *x, int i) {   /* i = -1: the output */
    const btc_case *c = x->c;
    return (size_t)c->B * c->C * (i < 0 || x->op->per_token[i] ? c->T : 1);
}
static void mod_forward(const mod_ctx *x, float *out, const float *in0) {
    x->op->forward(out, in0, x->in[1], x->in[2], x->c->B, x->c->T, x->c->C);
}
static void mod_backward(const mod_ctx *x, float *const *d, int ref) {
    const mod_op *op = x->op;
    op->backward[ref](d[0], d[1], d[2], x->R, x->in[op->bwd_in[0]], x->in[op->bwd_in[1]], x->c->B,
                      x->c->T, x->c->C);
}
static double mod_loss(void *p) {
    mod_ctx *x = p;
    mod_forward(x, x->out, x->in[0]);
    return bf_gc_dot(x->out, x->R, mod_size(x, -1));
}
static void mod_bwd(void *p) { mod_backward(p, ((mod_ctx *)p)->d, 0); }
/* inputs from seed .. seed + 2, R from seed + 3 */
static mod_ctx mod_make(const mod_op *op, const btc_case *c, uint64_t seed) {
    mod_ctx x = {.op = op, .c = c};
    for (int i = 0; i < 3; i++) {
        x.in[i] = bf_gc_randn_shifted(seed + (uint64_t)i, mod_size(&x, i), op->std[i]);
        x.d[i] = bf_gc_zeros(mod_size(&x, i));
    }
    x.out = bf_gc_nans(mod_size(&x, -1));
    x.R = bf_gc_randn_shifted(seed + 3, mod_size(&x, -1), 1.0f);
    return x;
}
static void mod_free(mod_ctx *x) {
    for (int i = 0; i < 3; i++) {
        free(x->in[i]);
        free(x->d[i]);
    }
    free(x->out); free(x->R);
}

/* Case k: the output against the op's formula in double, and in place (out == in[0]) the same
 * floats. Returns the context, forward run, for the op's own checks. */
static mod_ctx mod_forward_check(const mod_op *op, int k, uint64_t seed) {
    const btc_case *c = &btc_cases[k];
    mod_ctx x = mod_make(op, c, seed);
    size_t n = mod_size(&x, -1);
    double *want = bf_malloc(n * sizeof *want);
    for (int b = 0; b < c->B; b++)
        for (int t = 0; t < c->T; t++)
            for (int j = 0; j < c->C; j++) {
                size_t i = ((size_t)b * c->T + t) * c->C + j;
                want[i] = op->want(x.in, i, (size_t)b * c->C + j);
            }
    (void)mod_loss(&x);
    CHECK(bf_gc_close(bf_gc_label("%s case %d out", op->name, k), x.out, want, n, 1e-6, 1e-6) == 0);
    float *inplace = bf_malloc(n * sizeof *inplace);
    memcpy(inplace, x.in[0], n * sizeof *inplace);
    mod_forward(&x, inplace, inplace);
    CHECK(bf_gc_same_floats(bf_gc_label("%s in place", op->name), inplace, x.out, n) == 0);
    free(inplace); free(want);
    return x;
}

/* Case k: finite differences, and the naive twin (double sums): float sums over T tokens round
 * by ~T eps in the (B, C) gradients. */
static void mod_backward_check(const mod_op *op, int k, uint64_t seed) {
    const btc_case *c = &btc_cases[k];
    mod_ctx x = mod_make(op, c, seed);
    bf_gc_tensor t[3];
    for (int i = 0; i < 3; i++) t[i] = (bf_gc_tensor){op->in_names[i], x.in[i], x.d[i], mod_size(&x, i)};
    bf_gc_problem p = bf_gc_case_problem(mod_loss, mod_bwd, &x, k, mod_size(&x, -1), 64);
    CHECK(bf_gradcheck(bf_gc_label("%s B=%d T=%d C=%d", op->name, c->B, c->T, c->C), &p, t, 3) == 0);
    float *ref[3];
    for (int i = 0; i < 3; i++) ref[i] = bf_gc_zeros(mod_size(&x, i));
    mod_backward(&x, ref, 1);
    for (int i = 0; i < 3; i++) {
        const char *what = bf_gc_label("%s d%s vs ref", op->name, op->in_names[i]);
        double atol = op->per_token[i] ? 1e-6 : 1e-6 * c->T;
        if (i == 0 && op->exact_d0) CHECK(bf_gc_same_floats(what, x.d[i], ref[i], t[i].n) == 0);
        else CHECK(bf_gc_close_f(what, x.d[i], ref[i], t[i].n, atol, 1e-6) == 0);
        free(ref[i]);
    }
    mod_free(&x);
}

TEST(cond_adaln_forward_matches_double) {
    for (int k = 0; k < NUM(btc_cases); k++) {
        mod_ctx x = mod_forward_check(&adaln_op, k, 3000 + 10 * (uint64_t)k);
        mod_free(&x);
    }
}

TEST(cond_adaln_backward_gradcheck) {
    for (int k = 0; k < NUM(btc_cases); k++) mod_backward_check(&adaln_op, k, 3100 + 10 * (uint64_t)k);
}

TEST(cond_gated_residual_forward_matches_double) {
    for (int k = 0; k < NUM(btc_cases); k++) {
        mod_ctx x = mod_forward_check(&gated_op, k, 3200 + 10 * (uint64_t)k);
        size_t n = mod_size(&x, -1);
        /* zero gates (adaLN-Zero init): the block is exactly the identity, also in place */
        memset(x.in[1], 0, mod_size(&x, 1) * sizeof(float));
        (void)mod_loss(&x);
        CHECK(bf_gc_same_floats("gated_residual gate 0", x.out, x.in[0], n) == 0);
        memcpy(x.out, x.in[0], n * sizeof(float));
        mod_forward(&x, x.out, x.out);
        CHECK(bf_gc_same_floats("gated_residual gate 0 in place", x.out, x.in[0], n) == 0);
        mod_free(&x);
    }
}

TEST(cond_gated_residual_backward_gradcheck) {
    for (int k = 0; k < NUM(btc_cases); k++) mod_backward_check(&gated_op, k, 3300 + 10 * (uint64_t)k);
}

/* ================================================================== timestep embedding */
TEST(cond_timestep_embed_matches_double) {
    /* w = 0 (dropped labels), the guidance range, a negative and a large value (args of
     * hundreds of radians in the first frequencies) */
    static const float ws[] = {0.0f, 0.5f, 1.0f, 3.7f, 7.25f, -2.0f, 1000.0f, 1e-4f};
    static const int Fs[] = {2, 8, 256};
    int B = NUM(ws);
    for (int k = 0; k < NUM(Fs); k++) {
        int F = Fs[k], half = F / 2;
        size_t n = (size_t)B * F;
        float *out = bf_gc_nans(n);
        double *want = bf_malloc(n * sizeof *want);
        for (int b = 0; b < B; b++)
            for (int i = 0; i < half; i++) {   /* freq_i = max_period^(-i / half) */
                double f = pow(10000.0, -(double)i / half);
                want[(size_t)b * F + i] = cos((double)ws[b] * f);
                want[(size_t)b * F + half + i] = sin((double)ws[b] * f);
            }
        bf_timestep_embed_forward(out, ws, B, F);
        /* one float rounding of values in [-1, 1]: 6e-8 */
        CHECK(bf_gc_close(bf_gc_label("timestep_embed F=%d", F), out, want, n, 1e-7, 0.0) == 0);
        for (int i = 0; i < half; i++) {   /* w = 0: exactly cos 0 = 1, sin 0 = 0 */
            CHECK(out[i] == 1.0f);
            CHECK(out[half + i] == 0.0f);
        }
        free(out); free(want);
    }
    /* F = 2 is the single frequency 1: (cos w, sin w) */
    float w = 0.75f, o[2];
    bf_timestep_embed_forward(o, &w, 1, 2);
    CHECK_NEAR(o[0], cos(0.75), 1e-7);
    CHECK_NEAR(o[1], sin(0.75), 1e-7);
    /* large: B F past the serial threshold */
    int BL = 160, FL = 256;
    float *wl = bf_gc_randn_shifted(3400, (size_t)BL, 3.0f), *ol = bf_gc_nans((size_t)BL * FL);
    double *wantl = bf_malloc((size_t)BL * FL * sizeof *wantl);
    for (int b = 0; b < BL; b++)
        for (int i = 0; i < FL / 2; i++) {
            double f = pow(10000.0, -(double)i / (FL / 2));
            wantl[(size_t)b * FL + i] = cos((double)wl[b] * f);
            wantl[(size_t)b * FL + FL / 2 + i] = sin((double)wl[b] * f);
        }
    bf_timestep_embed_forward(ol, wl, BL, FL);
    CHECK(bf_gc_close("timestep_embed large", ol, wantl, (size_t)BL * FL, 1e-7, 0.0) == 0);
    free(wl); free(ol); free(wantl);
}

/* ================================================================== SiLU */
static double silu_ref(double x) { return x / (1.0 + exp(-x)); }
static double silu_grad_ref(double x) {
    double s = 1.0 / (1.0 + exp(-x));
    return s * (1.0 + x * (1.0 - s));
}
static const float silu_special[] = {0.0f, 1e-3f, -1e-3f, 0.5f, -0.5f, 1.0f, -1.0f, 2.5f, -2.5f,
                                     5.0f, -5.0f, 10.0f, -10.0f, 20.0f, -20.0f, 40.0f, -40.0f,
                                     87.0f, -87.0f, 89.0f, -89.0f, 100.0f, -100.0f, 1e-20f,
                                     -1e-20f};

TEST(cond_silu_forward_matches_double) {
    size_t ns = (size_t)NUM(silu_special), n = 2100 + ns;   /* vectors and a tail */
    float *inp = bf_gc_randn_shifted(3500, n, 4.0f), *out = bf_gc_nans(n), *dinp = bf_gc_zeros(n), *ones = bf_gc_zeros(n);
    memcpy(inp, silu_special, sizeof silu_special);
    double *want = bf_malloc(n * sizeof *want), *wantg = bf_malloc(n * sizeof *wantg);
    for (size_t i = 0; i < n; i++) {
        want[i] = silu_ref(inp[i]);
        wantg[i] = silu_grad_ref(inp[i]);
        ones[i] = 1.0f;
    }
    bf_silu_forward(out, inp, n);
    /* a few ulp relative; the absolute floor covers x < -87 where exp(-x) saturates and
     * the true value (|x| e^x < 1e-36) is flushed to 0 */
    CHECK(bf_gc_close("silu", out, want, n, 1e-30, 1e-6) == 0);
    bf_silu_backward(dinp, inp, ones, n);   /* dout = 1: the derivative itself */
    /* absolute floor: the derivative crosses 0 near x = -1.28, where 1 + x (1 - s) cancels */
    CHECK(bf_gc_close("silu derivative", dinp, wantg, n, 1e-7, 2e-6) == 0);
    /* in place */
    float *inplace = bf_malloc(n * sizeof *inplace);
    memcpy(inplace, inp, n * sizeof *inplace);
    bf_silu_forward(inplace, inplace, n);
    CHECK(bf_gc_same_floats("silu in place", inplace, out, n) == 0);
    /* NaN propagates through both; +Inf stays +Inf */
    float sp[3] = {NAN, INFINITY, 1.0f}, so[3], sd[3] = {0, 0, 0}, g1[3] = {1, 1, 1};
    bf_silu_forward(so, sp, 3);
    bf_silu_backward(sd, sp, g1, 1);
    CHECK(isnan(so[0]));
    CHECK(isnan(sd[0]));
    CHECK(so[1] == INFINITY);
    free(inp); free(out); free(dinp); free(ones); free(want); free(wantg); free(inplace);
}

TEST(cond_silu_backward_gradcheck) {
    static const size_t sizes[] = {101, LARGE_WORK + 5};
    for (int k = 0; k < NUM(sizes); k++)   /* the first 17: the moderate special values */
        CHECK(bf_gc_pointwise_check("silu", bf_silu_forward, bf_silu_backward, sizes[k],
                                    3600 + 10 * k, 3.0f, silu_special, 17, k) == 0);
}

/* ================================================================== class embedding */
typedef struct { int B, C, K, y_null; int y[8]; } ce_case;
static const ce_case ce_cases[] = {
    {5, 6, 4, 0, {2, -1, 4, 0, 2}},   /* -1 and K both null; class 2 twice (scatter adds) */
    {3, 6, 4, 1, {0}},                /* y == NULL: all null */
    {4, 17, 1, 0, {0, -3, 1, 0}},     /* one class */
    {64, 640, 9, 0, {0}},             /* large: y filled below */
};

typedef struct { const ce_case *c; int *y; float *table, *out, *R, *dtable; } ce_ctx;

static const int *ce_y(const ce_ctx *x) { return x->c->y_null ? NULL : x->y; }
static double ce_loss(void *p) {
    ce_ctx *x = p;
    const ce_case *c = x->c;
    bf_class_embed_forward(x->out, x->table, ce_y(x), c->B, c->C, c->K);
    return bf_gc_dot(x->out, x->R, (size_t)c->B * c->C);
}
static void ce_bwd(void *p) {
    ce_ctx *x = p;
    const ce_case *c = x->c;
    bf_class_embed_backward(x->dtable, x->R, ce_y(x), c->B, c->C, c->K);
}

TEST(cond_class_embed_forward_and_gradcheck) {
    for (int k = 0; k < NUM(ce_cases); k++) {
        const ce_case *c = &ce_cases[k];
        size_t no = (size_t)c->B * c->C, nt = (size_t)(c->K + 1) * c->C;
        int *y = bf_malloc(sizeof(int) * c->B);
        for (int b = 0; b < c->B; b++)   /* large case: labels -1 .. K-1, skipping class 3 */
            y[b] = c->B > 8 ? ((b * 7) % (c->K + 1)) - 1 : c->y[b];
        if (c->B > 8) for (int b = 0; b < c->B; b++) if (y[b] == 3) y[b] = 4;
        ce_ctx x = {c, y, bf_gc_randn_shifted(3700 + 10 * k, nt, 1.0f), bf_gc_nans(no), bf_gc_randn_shifted(3701 + 10 * k, no, 1.0f),
                    bf_gc_zeros(nt)};
        (void)ce_loss(&x);
        int used[64] = {0};   /* rows read, by hand */
        for (int b = 0; b < c->B; b++) {
            int row = (c->y_null || y[b] < 0) ? c->K : y[b];
            used[row] = 1;
            CHECK(bf_gc_same_floats("class_embed row", x.out + (size_t)b * c->C,
                              x.table + (size_t)row * c->C, (size_t)c->C) == 0);
        }
        bf_gc_tensor t[] = {{"table", x.table, x.dtable, nt}};
        bf_gc_problem p = bf_gc_case_problem(ce_loss, ce_bwd, &x, k, no, 64);
        CHECK(bf_gradcheck(bf_gc_label("class_embed B=%d C=%d K=%d y=%s", c->B, c->C, c->K,
                                       c->y_null ? "NULL" : "given"),
                           &p, t, 1) == 0);
        /* the scatter by hand: each row gets the sum of its examples' dout; unused rows 0 */
        double *want = bf_calloc(nt, sizeof *want);
        for (int b = 0; b < c->B; b++) {
            int row = (c->y_null || y[b] < 0) ? c->K : y[b];
            for (int j = 0; j < c->C; j++) want[(size_t)row * c->C + j] += x.R[(size_t)b * c->C + j];
        }
        CHECK(bf_gc_close("class_embed dtable", x.dtable, want, nt, 1e-6, 1e-6) == 0);
        for (int r = 0; r <= c->K; r++)
            if (!used[r])
                for (int j = 0; j < c->C; j++) CHECK(x.dtable[(size_t)r * c->C + j] == 0.0f);
        free(want); free(y); free(x.table); free(x.out); free(x.R); free(x.dtable);
    }
}

/* ================================================================== guidance combine */
typedef struct { int B, n_per, du; } gc_case;
static const gc_case gc_cases[] = {
    {4, 7, 1}, {4, 7, 0},        /* du NULL: the unconditional branch has no gradient */
    {1, 33, 1}, {3, 1, 1},
    {4, 10250, 1},               /* large; n_per spans chunks of 1024 and a partial one */
};
static const float gc_w[] = {0.0f, 0.5f, 3.0f, 1e-3f};   /* w = 0 first: a dropped label */

typedef struct { const gc_case *c; float *cc, *u, *w, *out, *R, *dc, *du; } gc_ctx;

static size_t gc_n(const gc_case *c) { return (size_t)c->B * c->n_per; }
static double gc_loss(void *p) {
    gc_ctx *x = p;
    bf_guidance_combine_forward(x->out, x->cc, x->u, x->w, gc_n(x->c), x->c->B);
    return bf_gc_dot(x->out, x->R, gc_n(x->c));
}
static void gc_bwd(void *p) {
    gc_ctx *x = p;
    bf_guidance_combine_backward(x->dc, x->c->du ? x->du : NULL, x->R, x->w, gc_n(x->c), x->c->B);
}
static gc_ctx gc_make(const gc_case *c, uint64_t seed) {
    size_t n = gc_n(c);
    gc_ctx x = {c, bf_gc_randn_shifted(seed, n, 1.0f), bf_gc_randn_shifted(seed + 1, n, 1.0f), bf_gc_zeros((size_t)c->B), bf_gc_nans(n),
                bf_gc_randn_shifted(seed + 2, n, 1.0f), bf_gc_zeros(n), bf_gc_zeros(n)};
    for (int b = 0; b < c->B; b++) x.w[b] = gc_w[(b + (c->B == 1)) % NUM(gc_w)];
    return x;
}
static void gc_free(gc_ctx *x) {
    free(x->cc); free(x->u); free(x->w); free(x->out); free(x->R); free(x->dc); free(x->du);
}

TEST(cond_guidance_combine_forward_matches_double) {
    for (int k = 0; k < NUM(gc_cases); k++) {
        const gc_case *c = &gc_cases[k];
        gc_ctx x = gc_make(c, 3800 + 10 * (uint64_t)k);
        size_t n = gc_n(c), np = (size_t)c->n_per;
        double *want = bf_malloc(n * sizeof *want);
        for (size_t i = 0; i < n; i++) {
            double w = x.w[i / np];
            want[i] = ((double)x.cc[i] + w * x.u[i]) / (1.0 + w);
        }
        (void)gc_loss(&x);
        CHECK(bf_gc_close(bf_gc_label("guidance_combine case %d out", k), x.out, want, n, 1e-6,
                          1e-6) == 0);
        /* w = 0: out == c exactly, even where u is not finite (never read) */
        for (int b = 0; b < c->B; b++)
            if (x.w[b] == 0.0f) {
                for (size_t i = 0; i < np; i++) x.u[b * np + i] = NAN;
                (void)gc_loss(&x);
                CHECK(bf_gc_same_floats("guidance_combine w=0", x.out + b * np, x.cc + b * np, np) == 0);
            }
        /* in place (out == c) */
        float *inplace = bf_malloc(n * sizeof *inplace);
        memcpy(inplace, x.cc, n * sizeof *inplace);
        bf_guidance_combine_forward(inplace, inplace, x.u, x.w, n, c->B);
        CHECK(bf_gc_same_floats("guidance_combine in place", inplace, x.out, n) == 0);
        free(inplace); free(want);
        gc_free(&x);
    }
}

TEST(cond_guidance_combine_backward_gradcheck) {
    for (int k = 0; k < NUM(gc_cases); k++) {
        const gc_case *c = &gc_cases[k];
        gc_ctx x = gc_make(c, 3900 + 10 * (uint64_t)k);
        size_t n = gc_n(c), np = (size_t)c->n_per;
        bf_gc_tensor t[] = {{"c", x.cc, x.dc, n}, {"u", x.u, x.du, n}};
        bf_gc_problem p = bf_gc_case_problem(gc_loss, gc_bwd, &x, k, n, 64);
        CHECK(bf_gradcheck(bf_gc_label("guidance_combine B=%d n_per=%d du=%s", c->B, c->n_per,
                                       c->du ? "yes" : "NULL"),
                           &p, t, c->du ? 2 : 1) == 0);
        /* by hand: dc = dout / (1 + w), du = dout w / (1 + w); w = 0 passes dout through */
        double *wc = bf_malloc(n * sizeof *wc), *wu = bf_malloc(n * sizeof *wu);
        for (size_t i = 0; i < n; i++) {
            double w = x.w[i / np];
            wc[i] = x.R[i] / (1.0 + w);
            wu[i] = c->du ? x.R[i] * w / (1.0 + w) : 0.0;
        }
        CHECK(bf_gc_close("guidance_combine dc", x.dc, wc, n, 1e-7, 1e-6) == 0);
        CHECK(bf_gc_close("guidance_combine du", x.du, wu, n, 1e-7, 1e-6) == 0);
        for (int b = 0; b < c->B; b++)
            if (x.w[b] == 0.0f) CHECK(bf_gc_same_floats("guidance_combine dc at w=0", x.dc + b * np,
                                                  x.R + b * np, np) == 0);
        free(wc); free(wu);
        gc_free(&x);
    }
}

/* ================================================================== distances */
typedef struct { int B, N, scaled; } sd_case;
static const sd_case sd_cases[] = {{3, 17, 1}, {3, 17, 0}, {1, 784, 1}, {5, 1, 1}};

typedef struct { const sd_case *c; float *p, *t, *inv, *dist, *R, *dp; } sd_ctx;

static double sd_loss(void *q) {
    sd_ctx *x = q;
    bf_sqdist_forward(x->dist, x->p, x->t, x->c->scaled ? x->inv : NULL, x->c->B, x->c->N);
    return bf_gc_dot(x->dist, x->R, (size_t)x->c->B);
}
static void sd_bwd(void *q) {
    sd_ctx *x = q;
    bf_sqdist_backward(x->dp, x->R, x->p, x->t, x->c->scaled ? x->inv : NULL, x->c->B, x->c->N);
}

/* The alignment distance inv_scale * mean((p - t)^2) per example, against double sums and
 * finite differences; bf_mean_square against double. */
TEST(cond_sqdist_forward_backward) {
    for (int k = 0; k < NUM(sd_cases); k++) {
        const sd_case *c = &sd_cases[k];
        size_t n = (size_t)c->B * c->N;
        sd_ctx x = {c, bf_gc_randn_shifted(4100 + k, n, 1.0f), bf_gc_randn_shifted(4200 + k, n, 1.0f), bf_gc_zeros((size_t)c->B),
                    bf_gc_zeros((size_t)c->B), bf_gc_randn_shifted(4300 + k, (size_t)c->B, 1.0f), bf_gc_zeros(n)};
        bf_mean_square(x.inv, x.t, c->B, c->N);
        double *want = bf_malloc(sizeof(double) * c->B), *ms = bf_malloc(sizeof(double) * c->B);
        for (int b = 0; b < c->B; b++) {
            double s = 0.0, m = 0.0;
            for (int i = 0; i < c->N; i++) {
                double d = (double)x.p[b * c->N + i] - x.t[b * c->N + i];
                s += d * d;
                m += (double)x.t[b * c->N + i] * x.t[b * c->N + i];
            }
            ms[b] = m / c->N;
            x.inv[b] = 1.0f / x.inv[b];
            want[b] = s / c->N * (c->scaled ? x.inv[b] : 1.0);
        }
        for (int b = 0; b < c->B; b++) CHECK_NEAR(1.0 / x.inv[b], ms[b], 1e-5 * ms[b]);
        (void)sd_loss(&x);
        CHECK(bf_gc_close("sqdist", x.dist, want, (size_t)c->B, 1e-7, 1e-5) == 0);
        bf_gc_tensor t[] = {{"pred", x.p, x.dp, n}};
        bf_gc_problem p = bf_gc_case_problem(sd_loss, sd_bwd, &x, k, n, 64);
        CHECK(bf_gradcheck("sqdist", &p, t, 1) == 0);
        free(want); free(ms);
        free(x.p); free(x.t); free(x.inv); free(x.dist); free(x.R); free(x.dp);
    }
}
