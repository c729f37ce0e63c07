/* The reverse model G (METHOD Section 4): a bidirectional Transformer with DiT-style adaLN-Zero
 * conditioning on the class and the guidance scale, grouped into alignment stages with a
 * projection head each, then a denoising stage. Layout, initialisation, forward, backward. */
#include "reverse.h"
#include "core.h"
#include "kernels.h"
#include "kernels_cond.h"

#include <math.h>
#include <stdarg.h>
#include <string.h>

/* ------------------------------------------------------------------ configuration */
/* G's default shape for a forward model: F's width and head size, one layer per alignment
 * stage where F has two per block, and a two-layer denoising stage. For fmnist-small that is
 * 6 layers (with adaLN) and 1.83M parameters against F's 1.64M. */
void bf_reverse_config_for_flow(bf_reverse_config *rc, const bf_flow_config *fc) {
    memset(rc, 0, sizeof *rc);
    rc->img_size = fc->img_size;
    rc->in_channels = fc->in_channels;
    rc->patch_size = fc->patch_size;
    rc->num_classes = fc->num_classes;
    rc->num_stages = fc->num_blocks;
    rc->channels = fc->channels;
    rc->head_dim = fc->head_dim;
    rc->layers_per_stage = (fc->layers_per_block + 1) / 2;
    rc->denoise_layers = 2;
    rc->guidance_embed = 1;
    rc->w_freq = 64;
    rc->distill = 0;
}

int bf_reverse_config_check(const bf_reverse_config *c) {
    if (c->img_size <= 0 || c->in_channels <= 0 || c->patch_size <= 0 || c->channels <= 0 ||
        c->head_dim <= 0 || c->num_stages <= 0 || c->layers_per_stage <= 0 ||
        c->denoise_layers < 0 || c->num_classes < 0 || c->w_freq <= 0 || c->w_freq % 2) {
        bf_set_error("reverse configuration: sizes must be positive (denoising layers and "
                     "classes may be 0; w features even)");
        return -1;
    }
    if (c->img_size % c->patch_size || c->channels % c->head_dim) {
        bf_set_error("reverse configuration: image size %d must be a multiple of patch %d and "
                     "width %d of head size %d", c->img_size, c->patch_size, c->channels, c->head_dim);
        return -1;
    }
    /* in 64 bits: layers_per_stage = 2^31 - 1 must not wrap the layer count */
    long long layers = (long long)c->num_stages * c->layers_per_stage + c->denoise_layers;
    if (c->img_size > 4096 || c->channels > 65536 || c->in_channels > 64 || c->w_freq > 4096 ||
        c->num_stages > 64 || c->num_classes > 1000000 || c->guidance_embed < 0 ||
        c->guidance_embed > 1 || c->distill < 0 || c->distill > 1 || layers > 1024) {
        bf_set_error("reverse configuration: sizes out of the supported range (image <= 4096, "
                     "width <= 65536, channels <= 64, w features <= 4096, stages <= 64, classes "
                     "<= 10^6, layers in all <= 1024 (here %lld), guidance and distill 0 or 1)", layers);
        return -1;
    }
    double g = (double)(c->img_size / c->patch_size), T = g * g;
    double D = (double)c->in_channels * c->patch_size * c->patch_size, P = bf_reverse_param_count(c);
    if (T > BF_MAX_TOKENS || D > BF_MAX_TOKEN_DIM || P >= (double)BF_MAX_PARAMS) {
        bf_set_error("reverse configuration: %.0f tokens of %.0f values and %.3g parameters: at "
                     "most %d tokens of %d values and %zu parameters", T, D, P, BF_MAX_TOKENS,
                     BF_MAX_TOKEN_DIM, BF_MAX_PARAMS - 1);
        return -1;
    }
    return 0;
}

/* The parameter count of build_layout, computed without building it (in double: no overflow). */
double bf_reverse_param_count(const bf_reverse_config *c) {
    double g = (double)(c->img_size / c->patch_size), T = g * g;
    double D = (double)c->in_channels * c->patch_size * c->patch_size, W = c->channels;
    double S = (double)c->num_stages + (c->denoise_layers > 0);
    double NL = (double)c->num_stages * c->layers_per_stage + c->denoise_layers;
    double p = W * D + W + T * W + ((double)c->num_classes + 1) * W;
    if (c->guidance_embed) p += W * c->w_freq + W + W * W + W;
    if (c->distill) p += (S - 1) * (W * D + W + T * W);
    return p + NL * (18.0 * W * W + 15.0 * W) + S * (2.0 * W + D * W + D);
}

/* ------------------------------------------------------------------ layout */
static size_t add(bf_reverse *r, size_t *off, int ndim, int64_t d0, int64_t d1, int no_decay,
                  const char *fmt, ...) __attribute__((format(printf, 7, 8)));
static size_t add(bf_reverse *r, size_t *off, int ndim, int64_t d0, int64_t d1, int no_decay,
                  const char *fmt, ...) {
    bf_param_info *p = &r->info[r->n_info++];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p->name, sizeof p->name, fmt, ap);
    va_end(ap);
    p->ndim = ndim;
    p->shape[0] = d0;
    p->shape[1] = ndim > 1 ? d1 : 0;
    p->shape[2] = 0;
    p->numel = (size_t)d0 * (ndim > 1 ? (size_t)d1 : 1);
    p->offset = *off;
    p->no_decay = no_decay;
    *off += p->numel;
    return p->offset;
}

static void layout_layer(bf_reverse *r, size_t *off, bf_rlayer_offsets *lo, int s, int l) {
    int W = r->W;
    const char *pre = "stages";
    lo->ada_w = add(r, off, 2, 6 * W, W, 0, "%s.%d.layers.%d.adaLN.weight", pre, s, l);
    lo->ada_b = add(r, off, 1, 6 * W, 0, 1, "%s.%d.layers.%d.adaLN.bias", pre, s, l);
    lo->qkv_w = add(r, off, 2, 3 * W, W, 0, "%s.%d.layers.%d.attn.qkv.weight", pre, s, l);
    lo->qkv_b = add(r, off, 1, 3 * W, 0, 1, "%s.%d.layers.%d.attn.qkv.bias", pre, s, l);
    lo->proj_w = add(r, off, 2, W, W, 0, "%s.%d.layers.%d.attn.proj.weight", pre, s, l);
    lo->proj_b = add(r, off, 1, W, 0, 1, "%s.%d.layers.%d.attn.proj.bias", pre, s, l);
    lo->fc1_w = add(r, off, 2, 4 * W, W, 0, "%s.%d.layers.%d.mlp.fc1.weight", pre, s, l);
    lo->fc1_b = add(r, off, 1, 4 * W, 0, 1, "%s.%d.layers.%d.mlp.fc1.bias", pre, s, l);
    lo->fc2_w = add(r, off, 2, W, 4 * W, 0, "%s.%d.layers.%d.mlp.fc2.weight", pre, s, l);
    lo->fc2_b = add(r, off, 1, W, 0, 1, "%s.%d.layers.%d.mlp.fc2.bias", pre, s, l);
}

static void build_layout(bf_reverse *r) {
    const bf_reverse_config *c = &r->cfg;
    int W = r->W, D = r->D, T = r->T;
    size_t off = 0;
    r->embed_w = add(r, &off, 2, W, D, 0, "embed.weight");
    r->embed_b = add(r, &off, 1, W, 0, 1, "embed.bias");
    r->pos = add(r, &off, 2, T, W, 1, "pos_embed");
    r->cls = add(r, &off, 2, c->num_classes + 1, W, 1, "class_embed");
    if (c->guidance_embed) {
        r->wm1_w = add(r, &off, 2, W, c->w_freq, 0, "w_embed.mlp.0.weight");
        r->wm1_b = add(r, &off, 1, W, 0, 1, "w_embed.mlp.0.bias");
        r->wm2_w = add(r, &off, 2, W, W, 0, "w_embed.mlp.2.weight");
        r->wm2_b = add(r, &off, 1, W, 0, 1, "w_embed.mlp.2.bias");
    }
    int l = 0;
    for (int s = 0; s < r->S; s++) {
        bf_rstage_offsets *so = &r->stages[s];
        so->first_layer = l;
        so->num_layers = s < c->num_stages ? c->layers_per_stage : c->denoise_layers;
        if (c->distill && s > 0) {
            so->re_w = add(r, &off, 2, W, D, 0, "stages.%d.reembed.weight", s);
            so->re_b = add(r, &off, 1, W, 0, 1, "stages.%d.reembed.bias", s);
            so->re_pos = add(r, &off, 2, T, W, 1, "stages.%d.reembed.pos_embed", s);
        }
        for (int k = 0; k < so->num_layers; k++, l++) layout_layer(r, &off, &r->layers[l], s, k);
        so->head_ln_w = add(r, &off, 1, W, 0, 1, "stages.%d.head.norm.weight", s);
        so->head_ln_b = add(r, &off, 1, W, 0, 1, "stages.%d.head.norm.bias", s);
        so->head_w = add(r, &off, 2, D, W, 0, "stages.%d.head.proj.weight", s);
        so->head_b = add(r, &off, 1, D, 0, 1, "stages.%d.head.proj.bias", s);
    }
    r->num_params = off;
}

bf_reverse *bf_reverse_new(const bf_reverse_config *cfg) {
    if (bf_reverse_config_check(cfg)) return NULL;
    bf_reverse *r = bf_calloc(1, sizeof *r);
    r->cfg = *cfg;
    int g = cfg->img_size / cfg->patch_size;
    r->T = g * g;
    r->D = cfg->in_channels * cfg->patch_size * cfg->patch_size;
    r->W = cfg->channels;
    r->NH = cfg->channels / cfg->head_dim;
    r->S = cfg->num_stages + (cfg->denoise_layers > 0);
    r->NL = cfg->num_stages * cfg->layers_per_stage + cfg->denoise_layers;
    r->layers = bf_calloc((size_t)r->NL, sizeof *r->layers);
    r->stages = bf_calloc((size_t)r->S, sizeof *r->stages);
    r->info = bf_calloc(8 + (size_t)r->S * 7 + (size_t)r->NL * 10, sizeof *r->info);
    build_layout(r);
    BF_ASSERT((double)r->num_params == bf_reverse_param_count(cfg));
    r->params = bf_try_calloc(r->num_params, sizeof(float), "the reverse model's parameters");
    if (!r->params) { bf_reverse_free(r); return NULL; }
    r->ones = bf_malloc(sizeof(float) * r->W);
    r->zeros = bf_calloc((size_t)r->W, sizeof(float));
    for (int i = 0; i < r->W; i++) r->ones[i] = 1.0f;
    return r;
}

/* the inference sets (no training activations) */
static void cached_init(void *set, const void *r, int Bn) { bf_reverse_acts_init(set, r, Bn, 0); }
static void cached_free(void *set) { bf_reverse_acts_free(set); }
static const bf_acts_kind CACHED = {sizeof(bf_reverse_acts), cached_init, cached_free};

bf_reverse_acts *bf_reverse_cached_acts(bf_reverse *r, int count, int Bn) {
    return bf_acts_cache_get(&r->cache, &CACHED, r, count, Bn);
}

void bf_reverse_free(bf_reverse *r) {
    if (!r) return;
    bf_acts_cache_free(&r->cache, &CACHED);
    free(r->params); free(r->layers); free(r->stages); free(r->info);
    free(r->ones); free(r->zeros);
    free(r);
}

const bf_reverse_config *bf_reverse_get_config(const bf_reverse *r) { return &r->cfg; }
size_t bf_reverse_num_params(const bf_reverse *r) { return r->num_params; }
float *bf_reverse_params(bf_reverse *r) { return r->params; }
const char *bf_reverse_flow_path(const bf_reverse *r) { return r->flow_path; }
const char *bf_reverse_flow_sha256(const bf_reverse *r) { return r->flow_sha256; }
float bf_reverse_sigma(const bf_reverse *r) { return r->sigma; }

/* DiT's initialisation: Xavier-uniform matrices, zero biases, N(0, 0.02^2) embeddings and
 * w-MLP, and zero adaLN so every layer starts as the identity (its gates are zero). */
static bf_init_kind init_rule(const bf_param_info *info, int i, float *scale) {
    const bf_param_info *p = &info[i];
    const char *nm = p->name;
    if (strstr(nm, "adaLN") || (p->ndim == 1 && !strstr(nm, "norm.weight"))) return BF_INIT_ZERO;
    if (strstr(nm, "norm.weight")) return BF_INIT_ONE;
    if (strstr(nm, "pos_embed") || strstr(nm, "class_embed") || strstr(nm, "w_embed")) {
        *scale = 0.02f;
        return BF_INIT_NORMAL;
    }
    *scale = sqrtf(6.0f / (float)(p->shape[0] + p->shape[1]));
    return BF_INIT_UNIFORM;
}

void bf_reverse_init(bf_reverse *r, uint64_t seed) {
    bf_init_params(r->params, r->info, r->n_info, seed, init_rule);
}

/* ------------------------------------------------------------------ activations */
void bf_reverse_acts_init(bf_reverse_acts *a, const bf_reverse *r, int Bn, int train) {
    if (bf_reverse_acts_try_init(a, r, Bn, train)) bf_die();
}

int bf_reverse_acts_try_init(bf_reverse_acts *a, const bf_reverse *r, int Bn, int train) {
    memset(a, 0, sizeof *a);
    size_t n = (size_t)Bn, T = (size_t)r->T, W = (size_t)r->W, D = (size_t)r->D;
    size_t NL = train ? (size_t)r->NL : 1, S = (size_t)r->S, tw = n * T * W, tt = n * T, tr = train ? 1 : 0;
    size_t F = (size_t)r->cfg.w_freq;
    const bf_arena_part parts[] = {
        {&a->wfeat, n * F}, {&a->wh, n * W}, {&a->whs, n * W}, {&a->c, n * W}, {&a->cs, n * W},
        {&a->mod, NL * 6 * n * W}, {&a->h0, tw + n * T * D}, {&a->reemb, BF_SIZE_PROD(S, tw)},
        {&a->out, BF_SIZE_PROD(NL, tw)}, {&a->ln1, BF_SIZE_PROD(NL, tw)},
        {&a->m1, BF_SIZE_PROD(NL, tw)}, {&a->qkv, BF_SIZE_PROD(NL, 3, tw)},
        {&a->atty, BF_SIZE_PROD(NL, tw)}, {&a->ao, BF_SIZE_PROD(NL, tw)},
        {&a->mid, BF_SIZE_PROD(NL, tw)}, {&a->ln2, BF_SIZE_PROD(NL, tw)},
        {&a->m2, BF_SIZE_PROD(NL, tw)}, {&a->fch, BF_SIZE_PROD(NL, 4, tw)},
        {&a->fcg, BF_SIZE_PROD(NL, 4, tw)}, {&a->mo, BF_SIZE_PROD(NL, tw)},
        {&a->ln1_mean, NL * tt}, {&a->ln1_rstd, NL * tt}, {&a->ln2_mean, NL * tt},
        {&a->ln2_rstd, NL * tt}, {&a->att, BF_SIZE_PROD(NL, n, (size_t)r->NH, T, T)},
        {&a->hn, BF_SIZE_PROD(S, tw)}, {&a->hmean, S * tt}, {&a->hrstd, S * tt},
        {&a->p, S * n * T * D}, {&a->dp, tr * S * n * T * D}, {&a->dpw, tr * S * n * T * D},
        {&a->da, tr * tw}, {&a->db, tr * tw}, {&a->dt1, tr * tw},
        {&a->dt2, tr * tw}, {&a->dqkv, tr * 3 * tw}, {&a->dfch, tr * 4 * tw},
        {&a->dfcg, tr * 4 * tw}, {&a->dhn, tr * tw}, {&a->dmod, tr * 6 * n * W},
        {&a->dcs, tr * n * W}, {&a->dc, tr * n * W}, {&a->dwhs, tr * n * W}, {&a->dwh, tr * n * W},
    };
    char what[96];
    snprintf(what, sizeof what, "the reverse model's activations for %d images", Bn);
    if (!(a->mem = bf_arena_alloc(parts, sizeof parts / sizeof parts[0], what))) return -1;
    a->Bn = Bn;
    a->train = train;
    return 0;
}

void bf_reverse_acts_free(bf_reverse_acts *a) {
    free(a->mem);
    memset(a, 0, sizeof *a);
}

/* ------------------------------------------------------------------ forward */
#define SL(arr, idx, size) ((arr) + (size_t)(idx) * (size))
/* Inference keeps one layer's activations, reused by every layer (nothing is read back). */
#define LYR(a, l) ((a)->train ? (l) : 0)
#define ZIN(a, r) ((a)->h0 + (size_t)(a)->Bn * (r)->T * (r)->W)   /* copy of z (Bn, T, D) */

/* conditioning vector c = class[y] + MLP(features(w)); cs = SiLU(c) feeds every adaLN */
static void cond_forward(const bf_reverse *r, const float *P, bf_reverse_acts *a, int n) {
    int W = r->W, F = r->cfg.w_freq;
    bf_class_embed_forward(a->c, P + r->cls, a->y, n, W, r->cfg.num_classes);
    if (r->cfg.guidance_embed) {
        float *wz = a->w ? NULL : bf_calloc((size_t)n, sizeof(float));
        bf_timestep_embed_forward(a->wfeat, a->w ? a->w : wz, n, F);
        free(wz);
        bf_linear_forward(a->wh, a->wfeat, P + r->wm1_w, P + r->wm1_b, n, F, W);
        bf_silu_forward(a->whs, a->wh, (size_t)n * W);
        bf_linear_forward(a->cs, a->whs, P + r->wm2_w, P + r->wm2_b, n, W, W);
        for (size_t i = 0; i < (size_t)n * W; i++) a->c[i] += a->cs[i];
    }
    bf_silu_forward(a->cs, a->c, (size_t)n * W);
}

static void layer_forward(const bf_reverse *r, const float *P, bf_reverse_acts *a, int l,
                          const float *in, int n) {
    const bf_rlayer_offsets *lo = &r->layers[l];
    int T = r->T, W = r->W, N = n * T;
    size_t tw = (size_t)a->Bn * T * W, tt = (size_t)a->Bn * T, bw = (size_t)a->Bn * W;
    l = LYR(a, l);   /* activation slot (lo already points at the weights) */
    float *mod = SL(a->mod, (size_t)l * 6, bw);
    for (int k = 0; k < 6; k++)
        bf_linear_forward(mod + k * bw, a->cs, P + lo->ada_w + (size_t)k * W * W,
                          P + lo->ada_b + (size_t)k * W, n, W, W);
    float *ln1 = SL(a->ln1, l, tw), *m1 = SL(a->m1, l, tw), *qkv = SL(a->qkv, l, 3 * tw);
    float *atty = SL(a->atty, l, tw), *ao = SL(a->ao, l, tw), *mid = SL(a->mid, l, tw);
    float *ln2 = SL(a->ln2, l, tw), *m2 = SL(a->m2, l, tw), *fch = SL(a->fch, l, 4 * tw);
    float *fcg = SL(a->fcg, l, 4 * tw), *mo = SL(a->mo, l, tw), *out = SL(a->out, l, tw);
    bf_layernorm_forward(ln1, SL(a->ln1_mean, l, tt), SL(a->ln1_rstd, l, tt), in, r->ones,
                         r->zeros, N, W);
    bf_adaln_modulate_forward(m1, ln1, mod, mod + bw, n, T, W);
    bf_linear_forward(qkv, m1, P + lo->qkv_w, P + lo->qkv_b, N, W, 3 * W);
    bf_attention_forward(atty, SL(a->att, l, (size_t)a->Bn * r->NH * T * T), qkv, n, T, W, r->NH, 0);
    bf_linear_forward(ao, atty, P + lo->proj_w, P + lo->proj_b, N, W, W);
    bf_gated_residual_forward(mid, in, mod + 2 * bw, ao, n, T, W);
    bf_layernorm_forward(ln2, SL(a->ln2_mean, l, tt), SL(a->ln2_rstd, l, tt), mid, r->ones,
                         r->zeros, N, W);
    bf_adaln_modulate_forward(m2, ln2, mod + 3 * bw, mod + 4 * bw, n, T, W);
    bf_linear_forward(fch, m2, P + lo->fc1_w, P + lo->fc1_b, N, W, 4 * W);
    bf_gelu_forward(fcg, fch, (size_t)N * 4 * W);
    bf_linear_forward(mo, fcg, P + lo->fc2_w, P + lo->fc2_b, N, 4 * W, W);
    bf_gated_residual_forward(out, mid, mod + 5 * bw, mo, n, T, W);
}

/* The stream entering stage s: the embedding, the previous stage's last layer output, or in
 * hidden distillation the re-embedding of the previous head (with the stage's positions). */
static float *stage_input(const bf_reverse *r, const bf_reverse_acts *a, int s) {
    size_t tw = (size_t)a->Bn * r->T * r->W;
    if (s == 0) return a->h0;
    if (r->cfg.distill) return SL(a->reemb, s, tw);
    const bf_rstage_offsets *prev = &r->stages[s - 1];
    return SL(a->out, LYR(a, prev->first_layer + prev->num_layers - 1), tw);
}

static const float *stage_output(const bf_reverse *r, const bf_reverse_acts *a, int s) {
    const bf_rstage_offsets *so = &r->stages[s];
    return SL(a->out, LYR(a, so->first_layer + so->num_layers - 1), (size_t)a->Bn * r->T * r->W);
}

void bf_reverse_forward(const bf_reverse *r, const float *P, bf_reverse_acts *a,
                        const float *z, const int *y, const float *w, int n) {
    BF_ASSERT(n > 0 && n <= a->Bn);
    int T = r->T, W = r->W, D = r->D, N = n * T;
    size_t tw = (size_t)a->Bn * T * W, td = (size_t)a->Bn * T * D, tt = (size_t)a->Bn * T;
    a->y = y;
    a->w = w;
    a->n = n;
    memcpy(ZIN(a, r), z, sizeof(float) * (size_t)N * D);
    cond_forward(r, P, a, n);
    bf_linear_forward(a->h0, z, P + r->embed_w, P + r->embed_b, N, D, W);
    bf_embed_forward(a->h0, a->h0, P + r->pos, NULL, NULL, n, T, W, 0, 0);
    for (int s = 0; s < r->S; s++) {
        const bf_rstage_offsets *so = &r->stages[s];
        if (r->cfg.distill && s > 0) {   /* re-embedded with positions, as the first stage */
            bf_linear_forward(SL(a->reemb, s, tw), SL(a->p, s - 1, td), P + so->re_w,
                              P + so->re_b, N, D, W);
            bf_embed_forward(SL(a->reemb, s, tw), SL(a->reemb, s, tw), P + so->re_pos, NULL,
                             NULL, n, T, W, 0, 0);
        }
        for (int k = 0; k < so->num_layers; k++) {
            int l = so->first_layer + k;
            layer_forward(r, P, a, l, k == 0 ? stage_input(r, a, s) : SL(a->out, LYR(a, l - 1), tw), n);
        }
        bf_layernorm_forward(SL(a->hn, s, tw), SL(a->hmean, s, tt), SL(a->hrstd, s, tt),
                             stage_output(r, a, s), P + so->head_ln_w, P + so->head_ln_b, N, W);
        bf_linear_forward(SL(a->p, s, td), SL(a->hn, s, tw), P + so->head_w, P + so->head_b, N, W, D);
    }
}

/* ------------------------------------------------------------------ backward */
static void zero(float *p, size_t n) { memset(p, 0, sizeof(float) * n); }

/* On entry a->da holds dL/d(layer output); on exit dL/d(layer input). dmod and dcs of the
 * conditioning accumulate. */
static void layer_backward(const bf_reverse *r, const float *P, float *G, bf_reverse_acts *a,
                           int l, const float *in) {
    const bf_rlayer_offsets *lo = &r->layers[l];
    int n = a->n, T = r->T, W = r->W, N = n * T;
    size_t tw = (size_t)a->Bn * T * W, tt = (size_t)a->Bn * T, bw = (size_t)a->Bn * W;
    size_t nw = (size_t)N * W;
    const float *mod = SL(a->mod, (size_t)l * 6, bw);
    float *dmod = a->dmod;
    zero(dmod, 6 * bw);
    /* The *_set kernels write their input gradient instead of adding to it: the same bits as
     * zeroing the buffer first, without the pass (dt1, dt2, db and the MLP's are scratch). */
    /* MLP half: out = mid + gate2 * fc2(gelu(fc1(modulate(LN(mid))))) */
    bf_gated_residual_backward_set(a->db, dmod + 5 * bw, a->dt1, a->da, mod + 5 * bw,
                                   SL(a->mo, l, tw), n, T, W);
    bf_linear_backward_set(a->dfcg, G + lo->fc2_w, G + lo->fc2_b, a->dt1, SL(a->fcg, l, 4 * tw),
                           P + lo->fc2_w, N, 4 * W, W);
    bf_gelu_backward_set(a->dfch, SL(a->fch, l, 4 * tw), a->dfcg, 4 * nw);
    bf_linear_backward_set(a->dt1, G + lo->fc1_w, G + lo->fc1_b, a->dfch, SL(a->m2, l, tw),
                           P + lo->fc1_w, N, W, 4 * W);
    bf_adaln_modulate_backward_set(a->dt2, dmod + 3 * bw, dmod + 4 * bw, a->dt1,
                                   SL(a->ln2, l, tw), mod + 4 * bw, n, T, W);
    bf_layernorm_backward(a->db, NULL, NULL, a->dt2, SL(a->mid, l, tw), r->ones,
                          SL(a->ln2_mean, l, tt), SL(a->ln2_rstd, l, tt), N, W);
    /* attention half: mid = in + gate1 * proj(attn(qkv(modulate(LN(in))))) */
    bf_gated_residual_backward_set(a->da, dmod + 2 * bw, a->dt1, a->db, mod + 2 * bw,
                                   SL(a->ao, l, tw), n, T, W);
    bf_linear_backward_set(a->dt2, G + lo->proj_w, G + lo->proj_b, a->dt1, SL(a->atty, l, tw),
                           P + lo->proj_w, N, W, W);
    zero(a->dqkv, 3 * nw);
    bf_attention_backward(a->dqkv, a->dt2, SL(a->qkv, l, 3 * tw),
                          SL(a->att, l, (size_t)a->Bn * r->NH * T * T), n, T, W, r->NH, 0);
    bf_linear_backward_set(a->dt1, G + lo->qkv_w, G + lo->qkv_b, a->dqkv, SL(a->m1, l, tw),
                           P + lo->qkv_w, N, W, 3 * W);
    bf_adaln_modulate_backward_set(a->dt2, dmod, dmod + bw, a->dt1, SL(a->ln1, l, tw), mod + bw,
                                   n, T, W);
    bf_layernorm_backward(a->da, NULL, NULL, a->dt2, in, r->ones, SL(a->ln1_mean, l, tt),
                          SL(a->ln1_rstd, l, tt), N, W);
    for (int k = 0; k < 6; k++)
        bf_linear_backward(a->dcs, G + lo->ada_w + (size_t)k * W * W, G + lo->ada_b + (size_t)k * W,
                           dmod + k * bw, a->cs, P + lo->ada_w + (size_t)k * W * W, n, W, W);
}

static void cond_backward(const bf_reverse *r, const float *P, float *G, bf_reverse_acts *a) {
    int n = a->n, W = r->W;
    size_t nw = (size_t)n * W;
    zero(a->dc, nw);
    bf_silu_backward(a->dc, a->c, a->dcs, nw);
    bf_class_embed_backward(G + r->cls, a->dc, a->y, n, W, r->cfg.num_classes);
    if (!r->cfg.guidance_embed) return;
    zero(a->dwhs, nw);
    bf_linear_backward(a->dwhs, G + r->wm2_w, G + r->wm2_b, a->dc, a->whs, P + r->wm2_w, n, W, W);
    zero(a->dwh, nw);
    bf_silu_backward(a->dwh, a->wh, a->dwhs, nw);
    bf_linear_backward(NULL, G + r->wm1_w, G + r->wm1_b, a->dwh, a->wfeat, P + r->wm1_w, n,
                       r->cfg.w_freq, W);
}

void bf_reverse_backward(const bf_reverse *r, const float *P, bf_reverse_acts *a, float *G) {
    BF_ASSERT(a->train && G);
    int n = a->n, T = r->T, W = r->W, D = r->D, N = n * T;
    size_t tw = (size_t)a->Bn * T * W, td = (size_t)a->Bn * T * D, tt = (size_t)a->Bn * T;
    zero(a->da, (size_t)N * W);
    zero(a->dcs, (size_t)n * W);
    memcpy(a->dpw, a->dp, sizeof(float) * r->S * td);
    for (int s = r->S - 1; s >= 0; s--) {
        const bf_rstage_offsets *so = &r->stages[s];
        bf_linear_backward_set(a->dhn, G + so->head_w, G + so->head_b, SL(a->dpw, s, td),
                               SL(a->hn, s, tw), P + so->head_w, N, W, D);
        bf_layernorm_backward(a->da, G + so->head_ln_w, G + so->head_ln_b, a->dhn,
                              stage_output(r, a, s), P + so->head_ln_w, SL(a->hmean, s, tt),
                              SL(a->hrstd, s, tt), N, W);
        for (int k = so->num_layers - 1; k >= 0; k--) {
            int l = so->first_layer + k;
            layer_backward(r, P, G, a, l, k == 0 ? stage_input(r, a, s) : SL(a->out, l - 1, tw));
        }
        if (s > 0 && r->cfg.distill) {   /* the stream restarts from the previous head */
            bf_embed_backward(NULL, G + so->re_pos, NULL, a->da, NULL, n, T, W, 0, 0);
            bf_linear_backward(SL(a->dpw, s - 1, td), G + so->re_w, G + so->re_b, a->da,
                               SL(a->p, s - 1, td), P + so->re_w, N, D, W);
            zero(a->da, (size_t)N * W);
        }
    }
    bf_embed_backward(NULL, G + r->pos, NULL, a->da, NULL, n, T, W, 0, 0);
    bf_linear_backward(NULL, G + r->embed_w, G + r->embed_b, a->da, ZIN(a, r), P + r->embed_w,
                       N, D, W);
    cond_backward(r, P, G, a);
}

/* ------------------------------------------------------------------ FLOPs */
double bf_reverse_forward_flops(const bf_reverse_config *c, int n) {
    double T = (double)(c->img_size / c->patch_size) * (c->img_size / c->patch_size);
    double W = c->channels, D = (double)c->in_channels * c->patch_size * c->patch_size;
    double NL = (double)c->num_stages * c->layers_per_stage + c->denoise_layers;
    double S = c->num_stages + (c->denoise_layers > 0);
    double per_layer = 2.0 * T * (3 * W * W + W * W + 8 * W * W) + 4.0 * T * T * W + 2.0 * 6 * W * W;
    double heads = S * 2.0 * T * W * D + (c->distill ? (S - 1) * 2.0 * T * D * W : 0.0);
    return n * (NL * per_layer + heads + 2.0 * T * D * W);
}
