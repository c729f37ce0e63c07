/* Tests of the samplers of F: cached decoding against full-prefix recomputation, guidance
 * with w = 0, the score (input gradient of log p) against finite differences, and the
 * Jacobi decoder against the exact one. */
#include "test.h"
#include "flow.h"
#include "gradcheck.h"
#include "kernels.h"

static bf_flow *test_flow(int classes, float bound, uint64_t seed) {
    bf_flow_config c = {8, 1, 2, 32, 3, 2, 16, classes, bound};   /* T = 16, D = 4 */
    bf_flow *f = bf_flow_new(&c);
    bf_flow_init(f, seed);
    bf_rng r;
    bf_rng_seed(&r, seed + 9);
    for (int b = 0; b < c.num_blocks; b++) {
        for (int i = 0; i < 2 * f->D * f->W; i++) f->params[f->blocks[b].out_w + i] = 0.1f * bf_rng_normal(&r);
        for (int i = 0; i < 2 * f->D; i++) f->params[f->blocks[b].out_b + i] = 0.1f * bf_rng_normal(&r);
    }
    return f;
}

/* Reference inverse: every token step recomputes the whole block on the current sequence. */
static void decode_recompute(bf_flow *f, float *x, const float *z, const int *y, int n) {
    int T = f->T, D = f->D;
    size_t nd = (size_t)n * T * D;
    bf_flow_acts a;
    bf_flow_acts_init(&a, f, n);
    float *cur = bf_malloc(sizeof(float) * nd), *u = bf_malloc(sizeof(float) * nd);
    memcpy(cur, z, sizeof(float) * nd);
    for (int b = f->cfg.num_blocks - 1; b >= 0; b--) {
        bf_permute_tokens(u, cur, n, T, D, b & 1);
        for (int t = 1; t < T; t++) {
            const float *o = bf_flow_block_head(f, f->params, &a, b, u, y, n);
            for (int r = 0; r < n; r++)
                for (int d = 0; d < D; d++) {
                    const float *op = o + ((size_t)r * T + t - 1) * 2 * D;
                    float al = op[d], mu = op[D + d], c = f->cfg.bound;
                    if (c > 0) { al = c * tanhf(al / c); mu = c * tanhf(mu / c); }
                    float *ut = u + ((size_t)r * T + t) * D + d;
                    *ut = *ut * expf(al) + mu;
                }
        }
        bf_permute_tokens(cur, u, n, T, D, b & 1);
    }
    memcpy(x, cur, sizeof(float) * nd);
    free(cur); free(u);
    bf_flow_acts_free(&a);
}

static float max_diff(const float *a, const float *b, size_t n) {
    float m = 0.0f;
    for (size_t i = 0; i < n; i++) {
        float d = fabsf(a[i] - b[i]);
        if (!(d <= m)) m = d;
    }
    return m;
}

TEST_FP32(sample_cached_decoder_equals_prefix_recomputation) {
    bf_flow *f = test_flow(5, 1.5f, 3);
    int n = 5, y[5] = {0, 4, -1, 2, 1};
    size_t nd = (size_t)n * f->T * f->D;
    float *z = bf_gc_randn(8, nd, 0.0f, 1.0f), *x1 = bf_malloc(sizeof(float) * nd);
    float *x2 = bf_malloc(sizeof(float) * nd);
    bf_flow_decode_tokens(f, f->params, x1, z, y, n, 0.0f, 0);
    decode_recompute(f, x2, z, y, n);
    CHECK(max_diff(x1, x2, nd) <= 1e-5f);
    CHECK(max_diff(x1, z, nd) > 1e-2f);   /* the blocks do change the sequence */
    free(z); free(x1); free(x2);
    bf_flow_free(f);
}

TEST(sample_guidance_zero_is_unguided) {
    bf_flow *f = test_flow(5, 1.5f, 4);   /* bounded: unbounded random blocks overflow */
    int n = 4, y[4] = {0, 1, 2, 3};
    size_t nd = (size_t)n * f->T * f->D;
    float *z = bf_gc_randn(2, nd, 0.0f, 1.0f);
    float *a = bf_malloc(sizeof(float) * nd), *b = bf_malloc(sizeof(float) * nd);
    float *c = bf_malloc(sizeof(float) * nd);
    bf_flow_decode_tokens(f, f->params, a, z, y, n, 0.0f, 0);
    bf_flow_decode_tokens(f, f->params, b, z, y, n, 0.0f, 1);   /* annealing w = 0 */
    CHECK(memcmp(a, b, sizeof(float) * nd) == 0);
    /* the guided path (extra unconditional rows) with a vanishing weight agrees too */
    bf_flow_decode_tokens(f, f->params, c, z, y, n, 1e-30f, 0);
    /* relative: the guided pass runs twice the rows, so its products may round differently */
    float scale = 1.0f;
    for (size_t i = 0; i < nd; i++) scale = fmaxf(scale, fabsf(a[i]));
    if (max_diff(a, c, nd) > 2e-6f * scale) fprintf(stderr, "    w=1e-30 vs unguided: %g (scale %g)\n", max_diff(a, c, nd), scale);
    CHECK(max_diff(a, c, nd) <= 2e-6f * scale);
    /* and a real weight changes the samples */
    bf_flow_decode_tokens(f, f->params, c, z, y, n, 2.0f, 0);
    CHECK(max_diff(a, c, nd) > 1e-3f);
    free(z); free(a); free(b); free(c);
    bf_flow_free(f);
}

TEST_FP32(sample_score_matches_finite_differences) {
    bf_flow *f = test_flow(3, 1.0f, 5);
    int n = 2, y[2] = {1, -1}, N = f->T * f->D;
    float *x = bf_gc_randn(6, (size_t)n * N, 0.0f, 0.5f), *g = bf_malloc(sizeof(float) * n * N);
    CHECK(bf_flow_score(f, g, x, y, n) == 0);
    bf_flow_acts a;
    bf_flow_acts_init(&a, f, n);
    bf_rng r;
    bf_rng_seed(&r, 1);
    int bad = 0;
    for (int k = 0; k < 24; k++) {
        int i = (int)bf_rng_below(&r, (uint32_t)(n * N)), img = i / N;
        float keep = x[i], h = 1e-2f;
        double lp[2];
        for (int s = 0; s < 2; s++) {
            x[i] = keep + (s ? -h : h);
            bf_flow_forward(f, f->params, &a, x, y, n);
            lp[s] = -(double)N * a.nll[img];   /* log p of that image, nats */
        }
        x[i] = keep;
        double num = (lp[0] - lp[1]) / (2.0 * h);
        if (fabs(num - g[i]) > 2e-2 + 2e-2 * fabs(num)) {
            fprintf(stderr, "    score[%d]: analytic %g, numeric %g\n", i, g[i], num);
            bad++;
        }
    }
    CHECK(bad == 0);
    bf_flow_acts_free(&a);
    free(x); free(g);
    bf_flow_free(f);
}

TEST_FP32(sample_jacobi_converges_to_exact) {
    bf_flow *f = test_flow(4, 1.5f, 6);
    int n = 3, y[3] = {3, 0, -1};
    size_t nd = (size_t)n * f->T * f->D, img = 64;
    float *z = bf_gc_randn(3, nd, 0.0f, 1.0f);
    float *xe = bf_malloc(sizeof(float) * n * img), *xj = bf_malloc(sizeof(float) * n * img);
    for (int guided = 0; guided <= 1; guided++) {
        bf_sample_opts o;
        bf_sample_opts_default(&o);
        o.cfg = guided ? 1.5f : 0.0f;
        o.jacobi_tol = 1e-7f;
        bf_sample_stats se, sj;
        CHECK(bf_flow_sample(f, xe, z, y, n, &o, &se) == 0);
        o.sampler = BF_SAMPLER_JACOBI;
        CHECK(bf_flow_sample(f, xj, z, y, n, &o, &sj) == 0);
        CHECK(max_diff(xe, xj, n * img) <= 1e-4f);
        CHECK(sj.jacobi_iters >= f->cfg.num_blocks && sj.jacobi_iters <= f->cfg.num_blocks * (f->T + 1));
        /* capped at one iteration it has not converged */
        o.jacobi_max_iter = 1;
        CHECK(bf_flow_sample(f, xj, z, y, n, &o, &sj) == 0);
        CHECK(max_diff(xe, xj, n * img) > 1e-3f);
    }
    free(z); free(xe); free(xj);
    bf_flow_free(f);
}

TEST(sample_score_denoise_moves_along_the_score) {
    bf_flow *f = test_flow(0, 0.0f, 7);
    int n = 2, N = f->T * f->D;
    float *x = bf_gc_randn(4, (size_t)n * N, 0.0f, 0.5f), *x0 = bf_malloc(sizeof(float) * n * N);
    float *g = bf_malloc(sizeof(float) * n * N);
    memcpy(x0, x, sizeof(float) * n * N);
    bf_flow_score(f, g, x, NULL, n);
    CHECK(bf_flow_score_denoise(f, x, NULL, n, 0.1f) == 0);
    float worst = 0.0f;
    for (int i = 0; i < n * N; i++) worst = fmaxf(worst, fabsf(x[i] - (x0[i] + 0.01f * g[i])));
    CHECK(worst <= 1e-6f);
    free(x); free(x0); free(g);
    bf_flow_free(f);
}
