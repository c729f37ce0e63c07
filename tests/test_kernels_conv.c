/* Tests of the feature network's kernels (src/kernels_conv.h): the convolution against its
 * naive twin (forward and backward, strides, padding, odd sizes), every backward against
 * central finite differences of L = sum(out * R) through bf_gradcheck (which also checks
 * that a second backward accumulates), pooling and cross-entropy against hand-written loops. */
#include "test.h"
#include "gradcheck.h"
#include "kernels_conv.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>


/* ================================================================== convolution */
/* N, C, H, W, OC, K, stride, pad, lowp: 3x3 "same", strided with odd sizes (edge windows that
 * only partly cover the image), 1x1, 5x5 with pad 2, no padding, and a layer of the network */
static const bf_conv_dims conv_cases[] = {
    {2, 3, 5, 6, 4, 3, 1, 1, 0}, {1, 2, 7, 5, 3, 3, 2, 1, 0}, {2, 1, 6, 6, 5, 1, 1, 0, 0},
    {1, 4, 8, 7, 6, 5, 1, 2, 0}, {2, 2, 9, 7, 3, 3, 2, 0, 0}, {1, 3, 4, 4, 2, 3, 3, 1, 0},
    {2, 32, 14, 14, 16, 3, 1, 1, 0},
};

typedef struct {
    const bf_conv_dims *d;
    size_t ni, nw, no;
    float *inp, *w, *b, *out, *R, *dinp, *dw, *db, *col, *dcol;
} conv_ctx;

static conv_ctx conv_make(const bf_conv_dims *d, uint64_t seed) {
    conv_ctx x = {.d = d};
    x.ni = (size_t)d->N * d->C * d->H * d->W;
    x.nw = (size_t)d->OC * d->C * d->K * d->K;
    x.no = (size_t)d->N * d->OC * bf_conv_out_h(d) * bf_conv_out_w(d);
    x.inp = bf_gc_randn_shifted(seed, x.ni, 1.0f);
    x.w = bf_gc_randn_shifted(seed + 1, x.nw, 0.5f);
    x.b = bf_gc_randn_shifted(seed + 2, (size_t)d->OC, 1.0f);
    x.out = bf_gc_nans(x.no);
    x.R = bf_gc_randn_shifted(seed + 3, x.no, 1.0f);
    x.dinp = bf_gc_zeros(x.ni); x.dw = bf_gc_zeros(x.nw); x.db = bf_gc_zeros((size_t)d->OC);
    x.col = bf_gc_nans(bf_conv_col_size(d)); x.dcol = bf_gc_nans(bf_conv_col_size(d));
    return x;
}
static void conv_free(conv_ctx *x) {
    free(x->inp); free(x->w); free(x->b); free(x->out); free(x->R);
    free(x->dinp); free(x->dw); free(x->db); free(x->col); free(x->dcol);
}
static double conv_loss(void *p) {
    conv_ctx *x = p;
    bf_conv2d_forward(x->out, x->col, x->inp, x->w, x->b, x->d);
    return bf_gc_dot(x->out, x->R, x->no);
}
static void conv_bwd(void *p) {
    conv_ctx *x = p;
    bf_conv2d_backward(x->dinp, x->dw, x->db, x->col, x->dcol, x->R, x->inp, x->w, x->d);
}

TEST(conv2d_output_size) {
    bf_conv_dims d = {1, 1, 28, 28, 1, 3, 1, 1, 0};
    CHECK(bf_conv_out_h(&d) == 28 && bf_conv_out_w(&d) == 28);
    d = (bf_conv_dims){1, 1, 7, 5, 1, 3, 2, 1, 0};
    CHECK(bf_conv_out_h(&d) == 4 && bf_conv_out_w(&d) == 3);
    d = (bf_conv_dims){1, 2, 9, 7, 1, 3, 2, 0, 0};
    CHECK(bf_conv_out_h(&d) == 4 && bf_conv_out_w(&d) == 3);
    CHECK(bf_conv_col_size(&d) == (size_t)2 * 9 * 4 * 3);
}

/* The naive twin itself on a case small enough to write out: one 3x3 image, a 2x2 kernel. */
TEST(conv2d_ref_hand_computed) {
    float img[9] = {1, 2, 3, 4, 5, 6, 7, 8, 9}, w[4] = {1, 0, 0, -1}, b = 0.5f, out[16];
    bf_conv_dims d = {1, 1, 3, 3, 1, 2, 1, 0, 0};
    bf_conv2d_forward_ref(out, img, w, &b, &d);   /* x[i][j] - x[i+1][j+1] + 0.5 */
    for (int i = 0; i < 4; i++) CHECK_NEAR(out[i], -4.0 + 0.5, 1e-6);
    d.pad = 1;                                     /* 4x4 output over the zero-padded image */
    bf_conv2d_forward_ref(out, img, w, &b, &d);
    CHECK_NEAR(out[0], -1.0 + 0.5, 1e-6);          /* window at (-1,-1): only x[0][0] under -1 */
    CHECK_NEAR(out[15], 9.0 + 0.5, 1e-6);          /* window at (2,2): only x[2][2] under +1 */
    CHECK_NEAR(out[5], 1.0 - 5.0 + 0.5, 1e-6);
}

TEST(conv2d_forward_matches_ref) {
    for (int k = 0; k < NUM(conv_cases); k++) {
        const bf_conv_dims *d = &conv_cases[k];
        conv_ctx x = conv_make(d, 9000 + 10 * (uint64_t)k);
        float *ref = bf_gc_nans(x.no);
        bf_conv2d_forward_ref(ref, x.inp, x.w, x.b, d);
        (void)conv_loss(&x);
        char what[64];
        snprintf(what, sizeof what, "conv2d case %d out", k);
        CHECK(bf_gc_close_f(what, x.out, ref, x.no, 1e-5, 1e-5) == 0);
        bf_conv2d_forward(x.out, x.col, x.inp, x.w, NULL, d);   /* no bias */
        bf_conv2d_forward_ref(ref, x.inp, x.w, NULL, d);
        CHECK(bf_gc_close_f("conv2d without bias", x.out, ref, x.no, 1e-5, 1e-5) == 0);
        free(ref);
        conv_free(&x);
    }
}

TEST(conv2d_backward_matches_ref) {
    for (int k = 0; k < NUM(conv_cases); k++) {
        const bf_conv_dims *d = &conv_cases[k];
        conv_ctx x = conv_make(d, 9100 + 10 * (uint64_t)k);
        /* both start from the same non-zero buffers: they must add, not overwrite */
        float *ri = bf_gc_randn_shifted(77, x.ni, 1.0f), *rw = bf_gc_randn_shifted(78, x.nw, 1.0f), *rb = bf_gc_randn_shifted(79, (size_t)d->OC, 1.0f);
        memcpy(x.dinp, ri, x.ni * sizeof(float));
        memcpy(x.dw, rw, x.nw * sizeof(float));
        memcpy(x.db, rb, (size_t)d->OC * sizeof(float));
        conv_bwd(&x);
        bf_conv2d_backward_ref(ri, rw, rb, x.R, x.inp, x.w, d);
        int P = bf_conv_out_h(d) * bf_conv_out_w(d);   /* float sums over positions and images */
        CHECK(bf_gc_close_f("conv2d dinp vs ref", x.dinp, ri, x.ni, 1e-5, 1e-5) == 0);
        CHECK(bf_gc_close_f("conv2d dweight vs ref", x.dw, rw, x.nw, 1e-6 * P * d->N, 1e-5) == 0);
        CHECK(bf_gc_close_f("conv2d dbias vs ref", x.db, rb, (size_t)d->OC, 1e-6 * P * d->N, 1e-5) == 0);
        /* dinp NULL (the first layer) leaves the other gradients as they were */
        bf_conv2d_backward(NULL, x.dw, NULL, x.col, x.dcol, x.R, x.inp, x.w, d);
        bf_conv2d_backward_ref(NULL, rw, NULL, x.R, x.inp, x.w, d);
        CHECK(bf_gc_close_f("conv2d dweight (dinp NULL)", x.dw, rw, x.nw, 2e-6 * P * d->N, 1e-5) == 0);
        free(ri); free(rw); free(rb);
        conv_free(&x);
    }
}

TEST(conv2d_backward_gradcheck) {
    for (int k = 0; k < NUM(conv_cases); k++) {
        const bf_conv_dims *d = &conv_cases[k];
        conv_ctx x = conv_make(d, 9200 + 10 * (uint64_t)k);
        bf_gc_tensor t[] = {{"inp", x.inp, x.dinp, x.ni}, {"weight", x.w, x.dw, x.nw},
                            {"bias", x.b, x.db, (size_t)d->OC}};
        bf_gc_problem p = {.loss = conv_loss, .backward = conv_bwd, .ctx = &x,
                           .seed = (uint64_t)k + bf_gc_seed_shift(), .max_entries = x.no > 3000 ? 12 : 48};
        char label[96];
        snprintf(label, sizeof label, "conv2d N=%d C=%d %dx%d OC=%d K=%d stride %d pad %d", d->N,
                 d->C, d->H, d->W, d->OC, d->K, d->stride, d->pad);
        CHECK(bf_gradcheck(label, &p, t, NUM(t)) == 0);
        conv_free(&x);
    }
}

/* ================================================================== ReLU */
/* bf_relu_backward in bf_gc_pointwise's order: the output before the gradient. */
static void relu_backward(float *dinp, const float *out, const float *dout, size_t n) {
    bf_relu_backward(dinp, dout, out, n);
}

TEST(relu_forward_backward) {
    size_t n = 300;
    bf_gc_pointwise x = {n, bf_gc_randn_shifted(9300, n, 1.0f), bf_gc_nans(n), bf_gc_randn_shifted(9301, n, 1.0f), bf_gc_zeros(n),
                         bf_relu_forward, relu_backward, 1};
    for (size_t i = 0; i < n; i++)   /* away from the kink, where finite differences lie */
        x.inp[i] += x.inp[i] < 0 ? -0.05f : 0.05f;
    (void)bf_gc_pointwise_loss(&x);
    int bad = 0;
    for (size_t i = 0; i < n; i++) bad += x.out[i] != (x.inp[i] > 0 ? x.inp[i] : 0.0f);
    CHECK(bad == 0);
    bf_gc_tensor t[] = {{"inp", x.inp, x.dinp, n}};
    bf_gc_problem p = {.loss = bf_gc_pointwise_loss, .backward = bf_gc_pointwise_backward, .ctx = &x, .seed = bf_gc_seed_shift()};
    CHECK(bf_gradcheck("relu", &p, t, 1) == 0);
    float v[3] = {NAN, -1.0f, 2.0f}, o[3];
    bf_relu_forward(o, v, 3);
    CHECK(isnan(o[0]) && o[1] == 0.0f && o[2] == 2.0f);
    bf_relu_forward(v, v, 3);   /* in place */
    CHECK(isnan(v[0]) && v[1] == 0.0f && v[2] == 2.0f);
    free(x.inp); free(x.out); free(x.R); free(x.dinp);
}

/* ================================================================== max pooling */
typedef struct { int N, C, H, W; } pool_case;
static const pool_case pool_cases[] = {{2, 3, 4, 6}, {1, 2, 5, 7}, {3, 1, 2, 2}, {2, 4, 28, 28}};

typedef struct {
    const pool_case *c;
    size_t ni, no;
    float *inp, *out, *R, *dinp;
} pool_ctx;

static double pool_loss(void *p) {
    pool_ctx *x = p;
    const pool_case *c = x->c;
    bf_maxpool2_forward(x->out, x->inp, c->N, c->C, c->H, c->W);
    return bf_gc_dot(x->out, x->R, x->no);
}
static void pool_bwd(void *p) {
    pool_ctx *x = p;
    const pool_case *c = x->c;
    bf_maxpool2_backward(x->dinp, x->R, x->inp, c->N, c->C, c->H, c->W);
}

/* Inputs whose pooling windows hold 4 entries 0.25 apart around a random level: a
 * finite-difference step cannot reorder a window (the maximum has no derivative at a tie). */
static float *window_values(uint64_t seed, const pool_case *c) {
    size_t n = (size_t)c->N * c->C * c->H * c->W;
    float *x = bf_gc_randn_shifted(seed, n, 1.0f);
    bf_rng rng;
    bf_rng_seed(&rng, seed + 1 + bf_gc_seed_shift());
    for (int m = 0; m < c->N * c->C; m++)
        for (int oy = 0; oy < c->H / 2; oy++)
            for (int ox = 0; ox < c->W / 2; ox++) {
                float level = bf_rng_normal(&rng), rank[4] = {0, 1, 2, 3};
                for (int i = 3; i > 0; i--) {
                    int j = (int)bf_rng_below(&rng, (uint32_t)(i + 1));
                    float t = rank[i]; rank[i] = rank[j]; rank[j] = t;
                }
                for (int k = 0; k < 4; k++)
                    x[((size_t)m * c->H + 2 * oy + k / 2) * c->W + 2 * ox + k % 2] = level + 0.25f * rank[k];
            }
    return x;
}

TEST(maxpool2_forward_backward) {
    for (int k = 0; k < NUM(pool_cases); k++) {
        const pool_case *c = &pool_cases[k];
        int OH = c->H / 2, OW = c->W / 2;
        pool_ctx x = {.c = c, .ni = (size_t)c->N * c->C * c->H * c->W, .no = (size_t)c->N * c->C * OH * OW};
        x.inp = window_values(9400 + 10 * (uint64_t)k, c);
        x.out = bf_gc_nans(x.no); x.R = bf_gc_randn_shifted(9410 + k, x.no, 1.0f); x.dinp = bf_gc_zeros(x.ni);
        (void)pool_loss(&x);
        double *want = bf_malloc(x.no * sizeof *want);
        for (int m = 0; m < c->N * c->C; m++)
            for (int oy = 0; oy < OH; oy++)
                for (int ox = 0; ox < OW; ox++) {
                    double best = -INFINITY;
                    for (int dy = 0; dy < 2; dy++)
                        for (int dx = 0; dx < 2; dx++)
                            best = fmax(best, x.inp[((size_t)m * c->H + 2 * oy + dy) * c->W + 2 * ox + dx]);
                    want[((size_t)m * OH + oy) * OW + ox] = best;
                }
        CHECK(bf_gc_close("maxpool2 out", x.out, want, x.no, 0.0, 0.0) == 0);
        bf_gc_tensor t[] = {{"inp", x.inp, x.dinp, x.ni}};
        bf_gc_problem p = {.loss = pool_loss, .backward = pool_bwd, .ctx = &x,
                           .seed = (uint64_t)k + bf_gc_seed_shift(), .max_entries = 96};
        char label[64];
        snprintf(label, sizeof label, "maxpool2 N=%d C=%d %dx%d", c->N, c->C, c->H, c->W);
        CHECK(bf_gradcheck(label, &p, t, 1) == 0);
        free(want); free(x.inp); free(x.out); free(x.R); free(x.dinp);
    }
    /* ties go to the first entry of the window; NaN propagates */
    float v[4] = {1, 1, 1, 1}, o, g = 1.0f, dv[4] = {0};
    bf_maxpool2_backward(dv, &g, v, 1, 1, 2, 2);
    CHECK(dv[0] == 1.0f && dv[1] == 0.0f && dv[2] == 0.0f && dv[3] == 0.0f);
    v[2] = NAN;
    bf_maxpool2_forward(&o, v, 1, 1, 2, 2);
    CHECK(isnan(o));
}

/* ================================================================== softmax cross-entropy */
typedef struct { int N, K; float *logits, *probs, *loss, *R, *dlogits; int *y; } xent_ctx;

static double xent_loss(void *p) {
    xent_ctx *x = p;
    bf_softmax_xent_forward(x->loss, x->probs, x->logits, x->y, x->N, x->K);
    return bf_gc_dot(x->loss, x->R, (size_t)x->N);
}
static void xent_bwd(void *p) {
    xent_ctx *x = p;
    bf_softmax_xent_backward(x->dlogits, x->R, x->probs, x->y, x->N, x->K);
}

TEST(softmax_xent_forward_backward) {
    int N = 7, K = 10;
    size_t nk = (size_t)N * K;
    xent_ctx x = {N, K, bf_gc_randn_shifted(9500, nk, 3.0f), bf_gc_nans(nk), bf_gc_nans((size_t)N), bf_gc_randn_shifted(9501, (size_t)N, 1.0f),
                  bf_gc_zeros(nk), bf_malloc(sizeof(int) * N)};
    for (int i = 0; i < N; i++) x.y[i] = (i * 3) % K;
    x.logits[5] = 80.0f;   /* large logits must not overflow */
    (void)xent_loss(&x);
    double *wl = bf_malloc(sizeof(double) * N), *wp = bf_malloc(sizeof(double) * nk);
    for (int i = 0; i < N; i++) {
        double m = -INFINITY, s = 0.0;
        for (int k = 0; k < K; k++) m = fmax(m, x.logits[i * K + k]);
        for (int k = 0; k < K; k++) s += exp(x.logits[i * K + k] - m);
        for (int k = 0; k < K; k++) wp[i * K + k] = exp(x.logits[i * K + k] - m) / s;
        wl[i] = -log(wp[i * K + x.y[i]]);
    }
    CHECK(bf_gc_close("xent loss", x.loss, wl, (size_t)N, 1e-5, 1e-5) == 0);
    CHECK(bf_gc_close("xent probs", x.probs, wp, nk, 1e-7, 1e-5) == 0);
    bf_gc_tensor t[] = {{"logits", x.logits, x.dlogits, nk}};
    bf_gc_problem p = {.loss = xent_loss, .backward = xent_bwd, .ctx = &x, .seed = bf_gc_seed_shift()};
    CHECK(bf_gradcheck("softmax_xent", &p, t, 1) == 0);
    /* uniform logits: loss ln K whatever the label */
    float u[10] = {0}, pr[10], l;
    int y = 4;
    bf_softmax_xent_forward(&l, pr, u, &y, 1, 10);
    CHECK_NEAR(l, log(10.0), 1e-6);
    free(wl); free(wp);
    free(x.logits); free(x.probs); free(x.loss); free(x.R); free(x.dlogits); free(x.y);
}
