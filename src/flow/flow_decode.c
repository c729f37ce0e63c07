/* Exact inverse of F by causal decoding with a key/value cache per layer: each step runs one
 * token per image through the block, so a whole decode costs about one forward pass.
 * With guidance the unconditional branch runs as extra rows of the same matrix products. */
#include "flow.h"
#include "core.h"
#include "kernels.h"

#include <math.h>
#include <omp.h>
#include <string.h>

typedef struct {
    int R;                       /* rows: n, or 2n with guidance (cond rows, then uncond) */
    float *h, *ln, *qkv, *atty, *tmp, *fch, *o;
    float *kc, *vc;              /* (L, R, T, W) */
    int *labels;                 /* (R) */
    float *mean_cls;             /* (W) */
} decode_ws;

static void ws_init(decode_ws *w, const bf_flow *f, int R) {
    size_t W = (size_t)f->W, T = (size_t)f->T, L = (size_t)f->cfg.layers_per_block;
    w->R = R;
    w->h = bf_malloc(sizeof(float) * R * W);
    w->ln = bf_malloc(sizeof(float) * R * W);
    w->qkv = bf_malloc(sizeof(float) * R * 3 * W);
    w->atty = bf_malloc(sizeof(float) * R * W);
    w->tmp = bf_malloc(sizeof(float) * R * W);
    w->fch = bf_malloc(sizeof(float) * R * 4 * W);
    w->o = bf_malloc(sizeof(float) * R * 2 * (size_t)f->D);
    w->kc = bf_malloc(sizeof(float) * L * R * T * W);
    w->vc = bf_malloc(sizeof(float) * L * R * T * W);
    w->labels = bf_malloc(sizeof(int) * R);
    w->mean_cls = bf_malloc(sizeof(float) * W);
}

static void ws_free(decode_ws *w) {
    free(w->h); free(w->ln); free(w->qkv); free(w->atty); free(w->tmp); free(w->fch);
    free(w->o); free(w->kc); free(w->vc); free(w->labels); free(w->mean_cls);
}

/* Hidden state of token t (block order) for every row: proj_in + position + class. */
static void embed_token(const bf_flow *f, const float *P, const bf_block_offsets *bo,
                        decode_ws *w, const float *u, int t, int rev, int n) {
    int W = f->W, D = f->D, T = f->T, K = f->cfg.num_classes;
    for (int r = 0; r < w->R; r++)   /* uncond rows read the same decoded token as cond rows */
        memcpy(w->tmp + (size_t)r * D, u + ((size_t)(r % n) * T + t) * D, sizeof(float) * D);
    bf_linear_forward(w->h, w->tmp, P + bo->in_w, P + bo->in_b, w->R, D, W);
    const float *pos = P + bo->pos + (size_t)(rev ? T - 1 - t : t) * W;
    for (int r = 0; r < w->R; r++) {
        int lab = w->labels[r];
        const float *e = K && lab >= 0 ? P + bo->cls + (size_t)lab * W : w->mean_cls;
        float *h = w->h + (size_t)r * W;
        for (int c = 0; c < W; c++) h[c] += pos[c] + (K ? e[c] : 0.0f);
    }
}

static void layer_step(const bf_flow *f, const float *P, const bf_layer_offsets *lo,
                       decode_ws *w, int l, int t) {
    int W = f->W, R = w->R, T = f->T;
    size_t cache = (size_t)l * R * T * W;
    float *mean = w->o, *rstd = w->o + R;   /* o is free here and holds >= 2R floats */
    bf_layernorm_forward(w->ln, mean, rstd, w->h, P + lo->ln1_w, P + lo->ln1_b, R, W);
    bf_linear_forward(w->qkv, w->ln, P + lo->qkv_w, P + lo->qkv_b, R, W, 3 * W);
    bf_attention_decode_step(w->atty, w->kc + cache, w->vc + cache, w->qkv, R, T, W, f->NH, t);
    bf_linear_forward(w->tmp, w->atty, P + lo->proj_w, P + lo->proj_b, R, W, W);
    bf_residual_forward(w->h, w->h, w->tmp, (size_t)R * W);
    bf_layernorm_forward(w->ln, mean, rstd, w->h, P + lo->ln2_w, P + lo->ln2_b, R, W);
    bf_linear_forward(w->fch, w->ln, P + lo->fc1_w, P + lo->fc1_b, R, W, 4 * W);
    bf_gelu_forward(w->fch, w->fch, (size_t)R * 4 * W);
    bf_linear_forward(w->tmp, w->fch, P + lo->fc2_w, P + lo->fc2_b, R, 4 * W, W);
    bf_residual_forward(w->h, w->h, w->tmp, (size_t)R * W);
}

/* Inverts token t+1 of every image from the head outputs of token t. */
static void invert_next(const bf_flow *f, decode_ws *w, float *u, int t, int n, float g) {
    int D = f->D, T = f->T;
    for (int r = 0; r < n; r++) {
        const float *oc = w->o + (size_t)r * 2 * D;
        const float *ou = w->R > n ? w->o + (size_t)(r + n) * 2 * D : NULL;
        float *ut = u + ((size_t)r * T + t + 1) * D;
        for (int d = 0; d < D; d++) {
            float a, m;
            bf_guided_params(&a, &m, oc, ou, D, d, f->cfg.bound, g);
            ut[d] = ut[d] * expf(a) + m;
        }
    }
}

static void decode_block(const bf_flow *f, const float *P, decode_ws *w, float *u, int b, int n,
                         float cfg, int anneal) {
    const bf_block_offsets *bo = &f->blocks[b];
    int T = f->T, W = f->W, L = f->cfg.layers_per_block, K = f->cfg.num_classes;
    if (K) {
        memset(w->mean_cls, 0, sizeof(float) * W);
        for (int k = 0; k < K; k++)
            for (int c = 0; c < W; c++) w->mean_cls[c] += P[bo->cls + (size_t)k * W + c] / (float)K;
    }
    for (int t = 0; t < T - 1; t++) {
        embed_token(f, P, bo, w, u, t, b & 1, n);
        for (int l = 0; l < L; l++) layer_step(f, P, &bo->layer[l], w, l, t);
        bf_linear_forward(w->o, w->h, P + bo->out_w, P + bo->out_b, w->R, W, 2 * f->D);
        float g = anneal ? cfg * (float)(t + 1) / (float)(T - 1) : cfg;
        invert_next(f, w, u, t, n, g);
    }
}

/* Decodes images [0, n) of z into x, all (n, T, D), with one workspace. */
static void decode_chunk(const bf_flow *f, const float *params, float *x, const float *z,
                         const int *y, int n, float cfg, int cfg_anneal) {
    int T = f->T, D = f->D;
    size_t nd = (size_t)n * T * D;
    decode_ws w;
    ws_init(&w, f, cfg != 0.0f ? 2 * n : n);
    for (int r = 0; r < w.R; r++) w.labels[r] = r < n && y ? y[r] : -1;
    float *cur = bf_malloc(sizeof(float) * nd), *u = bf_malloc(sizeof(float) * nd);
    for (size_t i = 0; i < nd; i++) cur[i] = z[i] * sqrtf(f->var[i % ((size_t)T * D)]);
    for (int b = f->cfg.num_blocks - 1; b >= 0; b--) {
        bf_permute_tokens(u, cur, n, T, D, b & 1);
        decode_block(f, params, &w, u, b, n, cfg, cfg_anneal);
        bf_permute_tokens(cur, u, n, T, D, b & 1);
    }
    memcpy(x, cur, sizeof(float) * nd);
    free(cur);
    free(u);
    ws_free(&w);
}

/* z, x: (n, T, D) tokens. Each thread decodes its own share of the images: one parallel
 * region per call instead of one per operation of every token step. */
int bf_flow_decode_tokens(const bf_flow *f, const float *params, float *x, const float *z,
                          const int *y, int n, float cfg, int cfg_anneal) {
    if (!isfinite(cfg)) { bf_set_error("guidance weight must be finite"); return -1; }
    if (bf_labels_check(y, n, f->cfg.num_classes)) return -1;
    if (n == 0) return 0;
    size_t N = (size_t)f->T * f->D;
    int teams = omp_get_max_threads();
    if (teams > n) teams = n;
#pragma omp parallel num_threads(teams) if (teams > 1)
    {
        int k = omp_get_num_threads(), t = omp_get_thread_num();
        int s = (int)((long)n * t / k), e = (int)((long)n * (t + 1) / k);
        if (e > s)
            decode_chunk(f, params, x + s * N, z + s * N, y ? y + s : NULL, e - s, cfg, cfg_anneal);
    }
    return 0;
}

int bf_flow_decode(bf_flow *f, float *x, const float *z, const int *y, int n, float cfg,
                   int cfg_anneal) {
    const bf_flow_config *c = &f->cfg;
    size_t N = (size_t)f->T * f->D;
    float *tok = bf_malloc(sizeof(float) * n * N);
    int rc = bf_flow_decode_tokens(f, f->params, tok, z, y, n, cfg, cfg_anneal);
    if (rc == 0) bf_unpatchify(x, tok, n, c->in_channels, c->img_size, c->img_size, c->patch_size);
    free(tok);
    return rc;
}
