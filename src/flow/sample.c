/* Sampling from the forward model: the exact (cached causal) inverse, a parallel Jacobi
 * fixed-point decoder, and score-based denoising through F's input gradient. */
#include "core.h"
#include "flow.h"
#include "kernels.h"

#include <math.h>
#include <omp.h>

void bf_sample_opts_default(bf_sample_opts *o) {
    memset(o, 0, sizeof *o);
    o->sampler = BF_SAMPLER_EXACT;
    o->jacobi_tol = 1e-5f;
    o->batch = 64;
}

/* Each thread takes a slice of the images with its own activations (one parallel region). */
int bf_flow_score(bf_flow *f, float *score, const float *x, const int *y, int n) {
    int N = f->T * f->D, nt = omp_get_max_threads() < n ? omp_get_max_threads() : n;
    int bad = 0;
    memset(score, 0, sizeof(float) * (size_t)n * N);
    bf_flow_acts *cache = bf_flow_cached_acts(f, nt, (n + nt - 1) / nt);
    /* slices are fixed by nt, whatever team size the runtime grants */
#pragma omp parallel for num_threads(nt) schedule(static, 1) reduction(| : bad)
    for (int t = 0; t < nt; t++) {
        int b0 = (int)((long)n * t / nt), m = (int)((long)n * (t + 1) / nt) - b0;
        if (m > 0) {
            bf_flow_acts *a = &cache[t];
            float loss = bf_flow_forward(f, f->params, a, x + (size_t)b0 * N, y ? y + b0 : NULL, m);
            if (isfinite(loss)) bf_flow_backward(f, f->params, a, NULL, score + (size_t)b0 * N);
            else bad = 1;
            /* backward gives d(mean over the slice of nll_b)/dx, nll per dimension;
             * log p(x_b) = -N nll_b */
            float scale = -(float)N * (float)m;
            for (size_t i = (size_t)b0 * N; i < (size_t)(b0 + m) * N; i++) score[i] *= scale;
        }
    }
    if (bad) {
        bf_set_error("score: the likelihood of the batch is not finite");
        return -1;
    }
    return 0;
}

int bf_flow_score_denoise(bf_flow *f, float *x, const int *y, int n, float sigma) {
    size_t m = (size_t)n * f->T * f->D;
    float *g = bf_malloc(sizeof(float) * m);
    int rc = bf_flow_score(f, g, x, y, n);
    if (rc == 0)
        for (size_t i = 0; i < m; i++) x[i] += sigma * sigma * g[i];
    free(g);
    return rc;
}

/* One block by fixed-point iteration: all tokens updated at once from the previous iterate.
 * u (n, T, D) holds the block's z on entry and its inverse on exit (block order). */
static int jacobi_block(const bf_flow *f, bf_flow_acts *a, float *u, const int *y2, int n,
                        int b, const bf_sample_opts *o) {
    int T = f->T, D = f->D, guided = o->cfg != 0.0f, R = guided ? 2 * n : n;
    size_t nd = (size_t)n * T * D;
    float *z = bf_malloc(sizeof(float) * nd), *in = bf_malloc(sizeof(float) * 2 * nd);
    memcpy(z, u, sizeof(float) * nd);
    int max_it = o->jacobi_max_iter > 0 ? o->jacobi_max_iter : T, it = 0;
    for (; it < max_it; it++) {
        memcpy(in, u, sizeof(float) * nd);
        if (guided) memcpy(in + nd, u, sizeof(float) * nd);   /* uncond rows see the same u */
        const float *out = bf_flow_block_head(f, f->params, a, b, in, y2, R);
        float delta = 0.0f;
        for (int r = 0; r < n; r++)
            for (int t = 1; t < T; t++) {
                const float *oc = out + ((size_t)r * T + t - 1) * 2 * D;
                const float *ou = guided ? out + ((size_t)(r + n) * T + t - 1) * 2 * D : NULL;
                float g = o->cfg_anneal ? o->cfg * (float)t / (float)(T - 1) : o->cfg;
                for (int d = 0; d < D; d++) {
                    float al, mu;
                    bf_guided_params(&al, &mu, oc, ou, D, d, f->cfg.bound, g);
                    size_t k = ((size_t)r * T + t) * D + d;
                    float v = z[k] * expf(al) + mu, ch = fabsf(v - u[k]);
                    if (!(ch <= delta)) delta = ch;
                    u[k] = v;
                }
            }
        if (delta < o->jacobi_tol) { it++; break; }
    }
    free(z);
    free(in);
    return it;
}

static long decode_jacobi(bf_flow *f, float *x, const float *z, const int *y, int n,
                          const bf_sample_opts *o) {
    int T = f->T, D = f->D, guided = o->cfg != 0.0f;
    size_t nd = (size_t)n * T * D;
    bf_flow_acts a;
    bf_flow_acts_init(&a, f, guided ? 2 * n : n);
    int *y2 = bf_malloc(sizeof(int) * 2 * n);
    for (int i = 0; i < 2 * n; i++) y2[i] = i < n && y ? y[i] : -1;
    float *cur = bf_malloc(sizeof(float) * nd), *u = bf_malloc(sizeof(float) * nd);
    for (size_t i = 0; i < nd; i++) cur[i] = z[i] * sqrtf(f->var[i % ((size_t)T * D)]);
    long iters = 0;
    for (int b = f->cfg.num_blocks - 1; b >= 0; b--) {
        bf_permute_tokens(u, cur, n, T, D, b & 1);
        iters += jacobi_block(f, &a, u, y2, n, b, o);
        bf_permute_tokens(cur, u, n, T, D, b & 1);
    }
    memcpy(x, cur, sizeof(float) * nd);
    free(cur); free(u); free(y2);
    bf_flow_acts_free(&a);
    return iters;
}

int bf_flow_sample(bf_flow *f, float *x, const float *z, const int *y, int n,
                   const bf_sample_opts *o, bf_sample_stats *st) {
    const bf_flow_config *c = &f->cfg;
    size_t N = (size_t)f->T * f->D, img = (size_t)c->in_channels * c->img_size * c->img_size;
    if (!isfinite(o->cfg) || !(o->sigma >= 0.0f) || !(o->jacobi_tol > 0.0f)) {
        bf_set_error("sampling options: guidance, sigma and tolerance must be finite (sigma >= 0, tol > 0)");
        return -1;
    }
    if (bf_labels_check(y, n, c->num_classes)) return -1;
    int batch = o->batch > 0 ? o->batch : n;
    float *tok = bf_malloc(sizeof(float) * batch * N);
    memset(st, 0, sizeof *st);
    double t0 = bf_time();
    int rc = 0;
    for (int s = 0; s < n && rc == 0; s += batch) {
        int m = n - s < batch ? n - s : batch;
        const int *ys = y ? y + s : NULL;
        if (o->sampler == BF_SAMPLER_JACOBI) st->jacobi_iters += decode_jacobi(f, tok, z + s * N, ys, m, o);
        else rc = bf_flow_decode_tokens(f, f->params, tok, z + s * N, ys, m, o->cfg, o->cfg_anneal);
        if (rc == 0 && o->denoise && o->sigma > 0.0f) rc = bf_flow_score_denoise(f, tok, ys, m, o->sigma);
        bf_unpatchify(x + s * img, tok, m, c->in_channels, c->img_size, c->img_size, c->patch_size);
    }
    st->seconds = bf_time() - t0;
    for (size_t i = 0; i < (size_t)n * img; i++) st->nonfinite += !isfinite(x[i]);
    free(tok);
    return rc;
}
