/* The forward model F: a TARFlow. Parameter layout, initialisation, the training forward and
 * backward passes, encoding. Tensor names and shapes follow the public PyTorch
 * transformer_flow.Model so checkpoints move between the two. Decoding is in flow_decode.c. */
#include "flow.h"
#include "core.h"
#include "dist.h"
#include "kernels.h"

#include <math.h>
#include <omp.h>
#include <string.h>

/* ------------------------------------------------------------------ configuration */
typedef struct { const char *name; bf_flow_config cfg; } named_config;

static const named_config NAMED[] = {
    /* The bound c = 4 keeps the exact inverse finite (unbounded, a model trained 1000 steps
     * here gave 3.5% non-finite pixels when sampled) while 4 blocks still reach log-scales
     * of -16 per dimension, so the likelihood is barely affected (docs/RESULTS-flow.md).
     *                 img C  P  W    B  L  hd  K   bound */
    {"fmnist-tiny",   {28, 1, 4, 64,  2, 1, 32, 10, 4.0f}},
    {"fmnist-small",  {28, 1, 4, 128, 4, 2, 64, 10, 4.0f}},
    {"fmnist-base",   {28, 1, 4, 256, 4, 4, 64, 10, 4.0f}},
    {"cifar-small",   {32, 3, 4, 256, 4, 2, 64, 10, 4.0f}},
};

const char *bf_flow_named_configs(void) {
    return "fmnist-tiny, fmnist-small, fmnist-base, cifar-small";
}

int bf_flow_config_named(bf_flow_config *cfg, const char *name) {
    for (size_t i = 0; i < sizeof NAMED / sizeof NAMED[0]; i++)
        if (!strcmp(NAMED[i].name, name)) { *cfg = NAMED[i].cfg; return 0; }
    bf_set_error("unknown configuration '%s' (known: %s)", name, bf_flow_named_configs());
    return -1;
}

int bf_flow_config_check(const bf_flow_config *c) {
    if (c->img_size <= 0 || c->in_channels <= 0 || c->patch_size <= 0 || c->channels <= 0 ||
        c->num_blocks <= 0 || c->layers_per_block <= 0 || c->head_dim <= 0 || c->num_classes < 0) {
        bf_set_error("flow configuration: every size must be positive (classes may be 0)");
        return -1;
    }
    if (c->img_size % c->patch_size) {
        bf_set_error("flow configuration: image size %d is not a multiple of patch size %d",
                     c->img_size, c->patch_size);
        return -1;
    }
    if (c->channels % c->head_dim) {
        bf_set_error("flow configuration: width %d is not a multiple of head size %d",
                     c->channels, c->head_dim);
        return -1;
    }
    if (c->layers_per_block > BF_MAX_LAYERS || c->img_size > 4096 || c->channels > 65536 ||
        c->num_blocks > 1024 || c->num_classes > 1000000 || c->in_channels > 64) {
        bf_set_error("flow configuration: sizes out of the supported range (layers per block "
                     "<= %d, image <= 4096, width <= 65536, blocks <= 1024, classes <= 10^6, "
                     "channels <= 64)", BF_MAX_LAYERS);
        return -1;
    }
    if (!(c->bound >= 0.0f) || !isfinite(c->bound)) {
        bf_set_error("flow configuration: bound must be a finite number >= 0 (0 = off)");
        return -1;
    }
    return bf_flow_config_check_size(c);
}

/* Tokens, token size and parameter count, in double (no overflow), against the limits. */
int bf_flow_config_check_size(const bf_flow_config *c) {
    double g = (double)(c->img_size / c->patch_size), T = g * g;
    double D = (double)c->in_channels * c->patch_size * c->patch_size, P = bf_flow_param_count(c);
    if (T > BF_MAX_TOKENS || D > BF_MAX_TOKEN_DIM) {
        bf_set_error("flow configuration: %.0f tokens of %.0f values: at most %d tokens (image / "
                     "patch squared) of %d values (channels x patch squared)", T, D, BF_MAX_TOKENS,
                     BF_MAX_TOKEN_DIM);
        return -1;
    }
    if (P >= (double)BF_MAX_PARAMS) {
        bf_set_error("flow configuration: width %d, %d blocks of %d layers make %.3g parameters, "
                     "more than the %zu supported", c->channels, c->num_blocks,
                     c->layers_per_block, P, BF_MAX_PARAMS - 1);
        return -1;
    }
    return 0;
}

/* The parameter count of build_layout, computed without building it. */
double bf_flow_param_count(const bf_flow_config *c) {
    double g = (double)(c->img_size / c->patch_size), T = g * g;
    double D = (double)c->in_channels * c->patch_size * c->patch_size, W = c->channels;
    double layer = 12.0 * W * W + 13.0 * W;
    double block = T * W + (double)c->num_classes * W + W * D + W +
                   (double)c->layers_per_block * layer + 2.0 * D * W + 2.0 * D;
    return (double)c->num_blocks * block;
}

int bf_flow_tokens(const bf_flow_config *c) {
    int s = c->img_size / c->patch_size;
    return s * s;
}
int bf_flow_token_dim(const bf_flow_config *c) {
    return c->in_channels * c->patch_size * c->patch_size;
}

/* ------------------------------------------------------------------ layout */
static size_t add_tensor(bf_flow *f, size_t *off, const char *name, int ndim, int64_t d0,
                         int64_t d1, int64_t d2, int no_decay) {
    bf_param_info *p = &f->info[f->n_info++];
    snprintf(p->name, sizeof p->name, "%s", name);
    p->ndim = ndim;
    p->shape[0] = d0; p->shape[1] = d1; p->shape[2] = d2;
    p->numel = (size_t)d0 * (ndim > 1 ? (size_t)d1 : 1) * (ndim > 2 ? (size_t)d2 : 1);
    p->offset = *off;
    p->no_decay = no_decay;
    *off += p->numel;
    return p->offset;
}

/* Lays out every tensor in the order of the public state dict. */
static void build_layout(bf_flow *f) {
    const bf_flow_config *c = &f->cfg;
    int W = f->W, D = f->D, T = f->T;
    size_t off = 0;
    char nm[112];
    for (int b = 0; b < c->num_blocks; b++) {
        bf_block_offsets *bo = &f->blocks[b];
#define NAME(...) (snprintf(nm, sizeof nm, __VA_ARGS__), nm)
        bo->pos = add_tensor(f, &off, NAME("blocks.%d.pos_embed", b), 2, T, W, 0, 1);
        bo->cls = c->num_classes
                      ? add_tensor(f, &off, NAME("blocks.%d.class_embed", b), 3, c->num_classes, 1, W, 1)
                      : 0;
        bo->in_w = add_tensor(f, &off, NAME("blocks.%d.proj_in.weight", b), 2, W, D, 0, 0);
        bo->in_b = add_tensor(f, &off, NAME("blocks.%d.proj_in.bias", b), 1, W, 0, 0, 1);
        for (int l = 0; l < c->layers_per_block; l++) {
            bf_layer_offsets *lo = &bo->layer[l];
            char p[64];
            snprintf(p, sizeof p, "blocks.%d.attn_blocks.%d", b, l);
            lo->ln1_w = add_tensor(f, &off, NAME("%s.attention.norm.weight", p), 1, W, 0, 0, 1);
            lo->ln1_b = add_tensor(f, &off, NAME("%s.attention.norm.bias", p), 1, W, 0, 0, 1);
            lo->qkv_w = add_tensor(f, &off, NAME("%s.attention.qkv.weight", p), 2, 3 * W, W, 0, 0);
            lo->qkv_b = add_tensor(f, &off, NAME("%s.attention.qkv.bias", p), 1, 3 * W, 0, 0, 1);
            lo->proj_w = add_tensor(f, &off, NAME("%s.attention.proj.weight", p), 2, W, W, 0, 0);
            lo->proj_b = add_tensor(f, &off, NAME("%s.attention.proj.bias", p), 1, W, 0, 0, 1);
            lo->ln2_w = add_tensor(f, &off, NAME("%s.mlp.norm.weight", p), 1, W, 0, 0, 1);
            lo->ln2_b = add_tensor(f, &off, NAME("%s.mlp.norm.bias", p), 1, W, 0, 0, 1);
            lo->fc1_w = add_tensor(f, &off, NAME("%s.mlp.main.0.weight", p), 2, 4 * W, W, 0, 0);
            lo->fc1_b = add_tensor(f, &off, NAME("%s.mlp.main.0.bias", p), 1, 4 * W, 0, 0, 1);
            lo->fc2_w = add_tensor(f, &off, NAME("%s.mlp.main.2.weight", p), 2, W, 4 * W, 0, 0);
            lo->fc2_b = add_tensor(f, &off, NAME("%s.mlp.main.2.bias", p), 1, W, 0, 0, 1);
        }
        bo->out_w = add_tensor(f, &off, NAME("blocks.%d.proj_out.weight", b), 2, 2 * D, W, 0, 0);
        bo->out_b = add_tensor(f, &off, NAME("blocks.%d.proj_out.bias", b), 1, 2 * D, 0, 0, 1);
#undef NAME
    }
    f->num_params = off;
}

bf_flow *bf_flow_new(const bf_flow_config *cfg) {
    if (bf_flow_config_check(cfg)) return NULL;
    bf_flow *f = bf_calloc(1, sizeof *f);
    f->cfg = *cfg;
    f->T = bf_flow_tokens(cfg);
    f->D = bf_flow_token_dim(cfg);
    f->W = cfg->channels;
    f->NH = cfg->channels / cfg->head_dim;
    f->blocks = bf_calloc((size_t)cfg->num_blocks, sizeof *f->blocks);
    f->info = bf_calloc((size_t)cfg->num_blocks * (6 + 12 * (size_t)cfg->layers_per_block),
                        sizeof *f->info);
    build_layout(f);
    BF_ASSERT((double)f->num_params == bf_flow_param_count(cfg));
    f->params = bf_try_calloc(f->num_params, sizeof(float), "the forward model's parameters");
    f->var = bf_try_calloc((size_t)f->T * f->D, sizeof(float), "the forward model's prior");
    if (!f->params || !f->var) { bf_flow_free(f); return NULL; }
    for (int i = 0; i < f->T * f->D; i++) f->var[i] = 1.0f;
    return f;
}

static void free_cache(bf_flow *f);

void bf_flow_free(bf_flow *f) {
    if (!f) return;
    free_cache(f);
    free(f->params);
    free(f->var);
    free(f->blocks);
    free(f->info);
    free(f);
}

const bf_flow_config *bf_flow_get_config(const bf_flow *f) { return &f->cfg; }
size_t bf_flow_num_params(const bf_flow *f) { return f->num_params; }
float *bf_flow_params(bf_flow *f) { return f->params; }

/* PyTorch defaults (Linear: U(+-1/sqrt(fan_in)), LayerNorm 1/0, embeddings N(0, 0.01^2)),
 * with the output projection zero so that every block starts as the identity map. */
static bf_init_kind init_rule(const bf_param_info *info, int i, float *scale) {
    const char *nm = info[i].name;
    int is_bias = strstr(nm, ".bias") != NULL;
    if (strstr(nm, "norm.")) return is_bias ? BF_INIT_ZERO : BF_INIT_ONE;
    if (strstr(nm, "pos_embed") || strstr(nm, "class_embed")) {
        *scale = 0.01f;
        return BF_INIT_NORMAL;
    }
    if (strstr(nm, "proj_out")) return BF_INIT_ZERO;
    /* Linear weight (out, in) or its bias: fan_in from the weight before it */
    int64_t fan_in = is_bias ? info[i - 1].shape[1] : info[i].shape[1];
    *scale = 1.0f / sqrtf((float)fan_in);
    return BF_INIT_UNIFORM;
}

void bf_flow_init(bf_flow *f, uint64_t seed) {
    bf_init_params(f->params, f->info, f->n_info, seed, init_rule);
}

/* ------------------------------------------------------------------ activations */
void bf_flow_acts_init(bf_flow_acts *a, const bf_flow *f, int Bn) {
    if (bf_flow_acts_try_init(a, f, Bn)) bf_die();
}

int bf_flow_acts_try_init(bf_flow_acts *a, const bf_flow *f, int Bn) {
    memset(a, 0, sizeof *a);
    size_t B = (size_t)f->cfg.num_blocks, L = (size_t)f->cfg.layers_per_block;
    size_t T = (size_t)f->T, D = (size_t)f->D, W = (size_t)f->W, NH = (size_t)f->NH;
    size_t n = (size_t)Bn, tok = n * T;
    const bf_arena_part parts[] = {
        {&a->xs, BF_SIZE_PROD(B + 1, tok, D)}, {&a->u, BF_SIZE_PROD(B, tok, D)},
        {&a->zp, BF_SIZE_PROD(B, tok, D)}, {&a->resid, BF_SIZE_PROD(B, L + 1, tok, W)},
        {&a->resid_mid, BF_SIZE_PROD(B, L, tok, W)},
        {&a->ln1, BF_SIZE_PROD(B, L, tok, W)}, {&a->ln2, BF_SIZE_PROD(B, L, tok, W)},
        {&a->ln1_mean, BF_SIZE_PROD(B, L, tok)}, {&a->ln1_rstd, BF_SIZE_PROD(B, L, tok)},
        {&a->ln2_mean, BF_SIZE_PROD(B, L, tok)}, {&a->ln2_rstd, BF_SIZE_PROD(B, L, tok)},
        {&a->qkv, BF_SIZE_PROD(B, L, tok, 3 * W)}, {&a->att, BF_SIZE_PROD(B, L, n, NH, T, T)},
        {&a->atty, BF_SIZE_PROD(B, L, tok, W)}, {&a->fch, BF_SIZE_PROD(B, L, tok, 4 * W)},
        {&a->fch_gelu, BF_SIZE_PROD(B, L, tok, 4 * W)}, {&a->o, BF_SIZE_PROD(B, tok, 2 * D)},
        {&a->alpha_sum, n}, {&a->nll, n},
        {&a->dresid, tok * W}, {&a->dln, tok * W}, {&a->datty, tok * W},
        {&a->dqkv, tok * 3 * W}, {&a->dfch, tok * 4 * W}, {&a->dfch_gelu, tok * 4 * W},
        {&a->do_, tok * 2 * D}, {&a->du, tok * D}, {&a->dx, tok * D}, {&a->dzp, tok * D},
    };
    char what[96];
    snprintf(what, sizeof what, "the forward model's activations for %d images", Bn);
    if (!(a->mem = bf_arena_alloc(parts, sizeof parts / sizeof parts[0], what))) return -1;
    a->Bn = Bn;
    return 0;
}

void bf_flow_acts_free(bf_flow_acts *a) {
    free(a->mem);
    memset(a, 0, sizeof *a);
}

static void cached_init(void *set, const void *f, int Bn) { bf_flow_acts_init(set, f, Bn); }
static void cached_free(void *set) { bf_flow_acts_free(set); }
static const bf_acts_kind CACHED = {sizeof(bf_flow_acts), cached_init, cached_free};

static void free_cache(bf_flow *f) { bf_acts_cache_free(&f->score_cache, &CACHED); }

bf_flow_acts *bf_flow_cached_acts(bf_flow *f, int count, int Bn) {
    return bf_acts_cache_get(&f->score_cache, &CACHED, f, count, Bn);
}

/* ------------------------------------------------------------------ forward */
/* Index helpers: per-(block, layer) slices of the activation arrays. */
#define SLICE(arr, idx, size) ((arr) + (size_t)(idx) * (size))

static void layer_forward(const bf_flow *f, const float *P, const bf_layer_offsets *lo,
                          bf_flow_acts *a, int bl, float *out, const float *in, int n) {
    int T = f->T, W = f->W, N = n * T;
    size_t tw = (size_t)a->Bn * T * W, tt = (size_t)a->Bn * T;
    float *ln1 = SLICE(a->ln1, bl, tw), *ln2 = SLICE(a->ln2, bl, tw);
    float *qkv = SLICE(a->qkv, bl, 3 * tw), *atty = SLICE(a->atty, bl, tw);
    float *mid = SLICE(a->resid_mid, bl, tw);
    float *fch = SLICE(a->fch, bl, 4 * tw), *fcg = SLICE(a->fch_gelu, bl, 4 * tw);
    float *att = SLICE(a->att, bl, (size_t)a->Bn * f->NH * T * T);
    bf_layernorm_forward(ln1, SLICE(a->ln1_mean, bl, tt), SLICE(a->ln1_rstd, bl, tt), in,
                         P + lo->ln1_w, P + lo->ln1_b, N, W);
    bf_linear_forward(qkv, ln1, P + lo->qkv_w, P + lo->qkv_b, N, W, 3 * W);
    bf_attention_forward(atty, att, qkv, n, T, W, f->NH, 1);
    bf_linear_forward(mid, atty, P + lo->proj_w, P + lo->proj_b, N, W, W);
    bf_residual_forward(mid, mid, in, (size_t)N * W);
    bf_layernorm_forward(ln2, SLICE(a->ln2_mean, bl, tt), SLICE(a->ln2_rstd, bl, tt), mid,
                         P + lo->ln2_w, P + lo->ln2_b, N, W);
    bf_linear_forward(fch, ln2, P + lo->fc1_w, P + lo->fc1_b, N, W, 4 * W);
    bf_gelu_forward(fcg, fch, (size_t)N * 4 * W);
    bf_linear_forward(out, fcg, P + lo->fc2_w, P + lo->fc2_b, N, 4 * W, W);
    bf_residual_forward(out, out, mid, (size_t)N * W);
}

/* The block's head outputs o (n, T, 2D) from its permuted input, already in a->u[b]. */
static void block_head(const bf_flow *f, const float *P, bf_flow_acts *a, int b, int n) {
    const bf_block_offsets *bo = &f->blocks[b];
    int T = f->T, D = f->D, W = f->W, L = f->cfg.layers_per_block, rev = b & 1;
    size_t td = (size_t)a->Bn * T * D, tw = (size_t)a->Bn * T * W;
    float *resid = SLICE(a->resid, (size_t)b * (L + 1), tw);
    bf_linear_forward(resid, SLICE(a->u, b, td), P + bo->in_w, P + bo->in_b, n * T, D, W);
    bf_embed_forward(resid, resid, P + bo->pos, f->cfg.num_classes ? P + bo->cls : NULL, a->y,
                     n, T, W, f->cfg.num_classes, rev);
    for (int l = 0; l < L; l++)
        layer_forward(f, P, &bo->layer[l], a, b * L + l, resid + (size_t)(l + 1) * tw,
                      resid + (size_t)l * tw, n);
    bf_linear_forward(SLICE(a->o, b, 2 * td), resid + (size_t)L * tw, P + bo->out_w,
                      P + bo->out_b, n * T, W, 2 * D);
}

static void block_forward(const bf_flow *f, const float *P, bf_flow_acts *a, int b, int n) {
    int T = f->T, D = f->D, rev = b & 1;
    size_t td = (size_t)a->Bn * T * D;
    float *u = SLICE(a->u, b, td), *zp = SLICE(a->zp, b, td);
    bf_permute_tokens(u, SLICE(a->xs, b, td), n, T, D, rev);
    block_head(f, P, a, b, n);
    bf_flow_step_forward(zp, a->alpha_sum, SLICE(a->o, b, 2 * td), u, n, T, D, f->cfg.bound);
    bf_permute_tokens(SLICE(a->xs, b + 1, td), zp, n, T, D, rev);
}

const float *bf_flow_block_head(const bf_flow *f, const float *params, bf_flow_acts *a, int b,
                                const float *u, const int *y, int n) {
    BF_ASSERT(n > 0 && n <= a->Bn && b >= 0 && b < f->cfg.num_blocks);
    size_t td = (size_t)a->Bn * f->T * f->D;
    a->y = y;
    a->n = n;
    memcpy(SLICE(a->u, b, td), u, sizeof(float) * (size_t)n * f->T * f->D);
    block_head(f, params, a, b, n);
    return SLICE(a->o, b, 2 * td);
}

float bf_flow_forward(const bf_flow *f, const float *params, bf_flow_acts *a, const float *x,
                      const int *y, int n) {
    BF_ASSERT(n > 0 && n <= a->Bn);
    int T = f->T, D = f->D, N = T * D;
    a->y = y;
    a->n = n;
    memcpy(a->xs, x, sizeof(float) * (size_t)n * N);
    memset(a->alpha_sum, 0, sizeof(float) * (size_t)n);
    for (int b = 0; b < f->cfg.num_blocks; b++) block_forward(f, params, a, b, n);
    const float *z = a->xs + (size_t)f->cfg.num_blocks * a->Bn * N;
    bf_gaussian_nll_forward(a->nll, z, n, N);
    double mean = 0.0;
    for (int i = 0; i < n; i++) {
        a->nll[i] += a->alpha_sum[i] / (float)N;
        mean += a->nll[i];
    }
    return (float)(mean / n);
}

/* ------------------------------------------------------------------ backward */
static void zero(float *p, size_t n) { memset(p, 0, sizeof(float) * n); }

/* dx = the input gradient of the linear layer whose weight and bias stand at offsets w and b
 * of the parameters P (dx is zeroed first: backward accumulates); the weight and bias
 * gradients accumulate into G when it is not NULL. dx: (N, in), dy: (N, out), x: (N, in). */
static void linear_backward_new(float *dx, const float *P, float *G, size_t w, size_t b,
                                const float *dy, const float *x, int N, int in, int out) {
    zero(dx, (size_t)N * in);
    bf_linear_backward(dx, G ? G + w : NULL, G ? G + b : NULL, dy, x, P + w, N, in, out);
}

/* On entry a->dresid holds dL/d(layer output); on exit dL/d(layer input). */
static void layer_backward(const bf_flow *f, const float *P, float *G, const bf_layer_offsets *lo,
                           bf_flow_acts *a, int bl, const float *in, int n) {
    int T = f->T, W = f->W, N = n * T;
    size_t tw = (size_t)a->Bn * T * W, tt = (size_t)a->Bn * T, nw = (size_t)N * W;
    const float *ln1 = SLICE(a->ln1, bl, tw), *ln2 = SLICE(a->ln2, bl, tw);
    const float *qkv = SLICE(a->qkv, bl, 3 * tw), *atty = SLICE(a->atty, bl, tw);
    const float *mid = SLICE(a->resid_mid, bl, tw);
    const float *fch = SLICE(a->fch, bl, 4 * tw), *fcg = SLICE(a->fch_gelu, bl, 4 * tw);
    const float *att = SLICE(a->att, bl, (size_t)a->Bn * f->NH * T * T);
    float *dr = a->dresid;
    linear_backward_new(a->dfch_gelu, P, G, lo->fc2_w, lo->fc2_b, dr, fcg, N, 4 * W, W);
    zero(a->dfch, 4 * nw);
    bf_gelu_backward(a->dfch, fch, a->dfch_gelu, 4 * nw);
    linear_backward_new(a->dln, P, G, lo->fc1_w, lo->fc1_b, a->dfch, ln2, N, W, 4 * W);
    bf_layernorm_backward(dr, G ? G + lo->ln2_w : NULL, G ? G + lo->ln2_b : NULL,
                          a->dln, mid, P + lo->ln2_w, SLICE(a->ln2_mean, bl, tt),
                          SLICE(a->ln2_rstd, bl, tt), N, W);
    linear_backward_new(a->datty, P, G, lo->proj_w, lo->proj_b, dr, atty, N, W, W);
    zero(a->dqkv, 3 * nw);
    bf_attention_backward(a->dqkv, a->datty, qkv, att, n, T, W, f->NH, 1);
    linear_backward_new(a->dln, P, G, lo->qkv_w, lo->qkv_b, a->dqkv, ln1, N, W, 3 * W);
    bf_layernorm_backward(dr, G ? G + lo->ln1_w : NULL, G ? G + lo->ln1_b : NULL,
                          a->dln, in, P + lo->ln1_w, SLICE(a->ln1_mean, bl, tt),
                          SLICE(a->ln1_rstd, bl, tt), N, W);
}

/* On entry a->dx holds dL/d(block output, natural order); on exit dL/d(block input). */
static void block_backward(const bf_flow *f, const float *P, float *G, bf_flow_acts *a, int b,
                           const float *dalpha, int n) {
    const bf_block_offsets *bo = &f->blocks[b];
    int T = f->T, D = f->D, W = f->W, L = f->cfg.layers_per_block, rev = b & 1, N = n * T;
    size_t td = (size_t)a->Bn * T * D, tw = (size_t)a->Bn * T * W;
    const float *u = SLICE(a->u, b, td), *o = SLICE(a->o, b, 2 * td);
    const float *resid = SLICE(a->resid, (size_t)b * (L + 1), tw);
    bf_permute_tokens(a->dzp, a->dx, n, T, D, rev);
    zero(a->du, (size_t)N * D);
    zero(a->do_, (size_t)N * 2 * D);
    bf_flow_step_backward(a->do_, a->du, a->dzp, dalpha, o, u, n, T, D, f->cfg.bound);
    linear_backward_new(a->dresid, P, G, bo->out_w, bo->out_b, a->do_, resid + (size_t)L * tw, N, W, 2 * D);
    for (int l = L - 1; l >= 0; l--)
        layer_backward(f, P, G, &bo->layer[l], a, b * L + l, resid + (size_t)l * tw, n);
    if (G)
        bf_embed_backward(NULL, G + bo->pos, f->cfg.num_classes ? G + bo->cls : NULL, a->dresid,
                          a->y, n, T, W, f->cfg.num_classes, rev);
    bf_linear_backward(a->du, G ? G + bo->in_w : NULL, G ? G + bo->in_b : NULL, a->dresid, u,
                       P + bo->in_w, N, D, W);
    bf_permute_tokens(a->dx, a->du, n, T, D, rev);
}

void bf_flow_backward(const bf_flow *f, const float *params, bf_flow_acts *a, float *grads,
                      float *dx) {
    int n = a->n, T = f->T, D = f->D, N = T * D;
    float *dnll = bf_malloc(sizeof(float) * 2 * (size_t)n), *dalpha = dnll + n;
    for (int i = 0; i < n; i++) {
        dnll[i] = 1.0f / (float)n;             /* loss = mean over the batch */
        dalpha[i] = 1.0f / ((float)n * (float)N);
    }
    zero(a->dx, (size_t)n * N);
    const float *z = a->xs + (size_t)f->cfg.num_blocks * a->Bn * N;
    bf_gaussian_nll_backward(a->dx, dnll, z, n, N);
    for (int b = f->cfg.num_blocks - 1; b >= 0; b--) block_backward(f, params, grads, a, b, dalpha, n);
    if (dx)
        for (size_t i = 0; i < (size_t)n * N; i++) dx[i] += a->dx[i];
    free(dnll);
}

/* ------------------------------------------------------------------ patches, encoding */
void bf_patchify(float *tok, const float *img, int n, int c, int h, int w, int p) {
    int gh = h / p, gw = w / p, D = c * p * p;
    for (int b = 0; b < n; b++)
        for (int ty = 0; ty < gh; ty++)
            for (int tx = 0; tx < gw; tx++) {
                float *t = tok + (((size_t)b * gh + ty) * gw + tx) * D;
                for (int ch = 0; ch < c; ch++)
                    for (int py = 0; py < p; py++)
                        for (int px = 0; px < p; px++)
                            *t++ = img[(((size_t)b * c + ch) * h + ty * p + py) * w + tx * p + px];
            }
}

void bf_unpatchify(float *img, const float *tok, int n, int c, int h, int w, int p) {
    int gh = h / p, gw = w / p, D = c * p * p;
    for (int b = 0; b < n; b++)
        for (int ty = 0; ty < gh; ty++)
            for (int tx = 0; tx < gw; tx++) {
                const float *t = tok + (((size_t)b * gh + ty) * gw + tx) * D;
                for (int ch = 0; ch < c; ch++)
                    for (int py = 0; py < p; py++)
                        for (int px = 0; px < p; px++)
                            img[(((size_t)b * c + ch) * h + ty * p + py) * w + tx * p + px] = *t++;
            }
}

/* Chunks of up to 32 images are spread over the threads, each with its own activations. */
/* F's forward pass over x (n, C, H, W) in chunks spread over the threads; each output may be
 * NULL: z (n, T, D), logdet (n), nll (n) per-dimension negative log-likelihood. */
static int forward_chunks(bf_flow *f, float *z, float *logdet, float *nll, const float *x,
                          const int *y, int n) {
    const bf_flow_config *c = &f->cfg;
    if (bf_labels_check(y, n, c->num_classes)) return -1;
    if (n == 0) return 0;
    int chunk = n < 32 ? n : 32, N = f->T * f->D, nchunks = (n + chunk - 1) / chunk;
    int nt = omp_get_max_threads() < nchunks ? omp_get_max_threads() : nchunks;
    size_t img = (size_t)c->in_channels * c->img_size * c->img_size;
    /* activations kept in f between calls: fresh ones cost more in page faults than the pass */
    bf_flow_acts *cache = bf_flow_cached_acts(f, nt, chunk);
#pragma omp parallel num_threads(nt) if (nt > 1)
    {
        bf_flow_acts *a = &cache[omp_get_thread_num()];
        float *tok = bf_malloc(sizeof(float) * (size_t)chunk * N);
#pragma omp for schedule(dynamic, 1)
        for (int k = 0; k < nchunks; k++) {
            int s = k * chunk, m = n - s < chunk ? n - s : chunk;
            bf_patchify(tok, x + s * img, m, c->in_channels, c->img_size, c->img_size, c->patch_size);
            bf_flow_forward(f, f->params, a, tok, y ? y + s : NULL, m);
            if (z)
                memcpy(z + (size_t)s * N, a->xs + (size_t)c->num_blocks * a->Bn * N,
                       sizeof(float) * (size_t)m * N);
            for (int i = 0; logdet && i < m; i++) logdet[s + i] = -a->alpha_sum[i] / (float)N;
            for (int i = 0; nll && i < m; i++) nll[s + i] = a->nll[i];
        }
        free(tok);
    }
    return 0;
}

int bf_flow_encode(bf_flow *f, float *z, float *logdet, const float *x, const int *y, int n) {
    return forward_chunks(f, z, logdet, NULL, x, y, n);
}

int bf_flow_nll(bf_flow *f, float *nll, const float *x, const int *y, int n) {
    return forward_chunks(f, NULL, NULL, nll, x, y, n);
}

/* ------------------------------------------------------------------ sharded step */
/* Each thread runs forward and backward on its own shard of the batch with its own
 * activations and gradient buffer; the kernels inside then run serially, so a step has
 * one parallel region instead of hundreds (each a barrier, costly on a loaded machine). The
 * shards' losses and gradients are summed in shard order, over the job's processes when the
 * plan spreads the shards over several (dist.h). */
float bf_flow_step_shards(const bf_flow *f, const float *params, bf_flow_acts *acts,
                          float **shard_grads, const bf_shard_plan *p, float *grads,
                          const float *x, const int *y) {
    size_t N = (size_t)f->T * f->D, P = f->num_params;
    int L = p->s1 - p->s0, n = p->n;
    double *sv = bf_calloc((size_t)p->S, sizeof(double));   /* each shard's loss x rows */
#pragma omp parallel for num_threads(L) schedule(static, 1)
    for (int k = 0; k < L; k++) {
        int s = p->s0 + k, b0 = bf_shard_begin(n, p->S, s), m = bf_shard_begin(n, p->S, s + 1) - b0;
        float *g = k == 0 ? grads : shard_grads[k];
        memset(g, 0, sizeof(float) * P);
        float loss = bf_flow_forward(f, params, &acts[k], x + b0 * N, y ? y + b0 : NULL, m);
        bf_flow_backward(f, params, &acts[k], g, NULL);
        sv[s] = (double)loss * m;
    }
    bf_shard_values_gather(sv, 1, p);
    double loss_sum = 0.0;
    for (int s = 0; s < p->S; s++) loss_sum += sv[s];
    free(sv);
    bf_shard_grads_reduce(grads, shard_grads, p, P, 1);   /* means of the shards */
    return (float)(loss_sum / n);
}

float bf_flow_step_sharded(const bf_flow *f, const float *params, bf_flow_acts *acts,
                           float **shard_grads, int nshards, float *grads, const float *x,
                           const int *y, int n) {
    bf_shard_plan p = bf_shard_plan_local(n, nshards);
    return bf_flow_step_shards(f, params, acts, shard_grads, &p, grads, x, y);
}

/* ------------------------------------------------------------------ FLOP counts */
double bf_flow_forward_flops(const bf_flow_config *c, int n) {
    double T = bf_flow_tokens(c), D = bf_flow_token_dim(c), W = c->channels;
    double rows = (double)n * T;
    double per_layer = 2 * rows * W * (3 * W + W + 4 * W + 4 * W)   /* qkv, proj, fc1, fc2 */
                       + 2.0 * n * W * T * (T + 1);                 /* causal QK^T and AV */
    double per_block = 2 * rows * D * W + 2 * rows * W * 2 * D + c->layers_per_block * per_layer;
    return c->num_blocks * per_block;
}

/* backward costs two products per forward product (input and weight gradients) */
double bf_flow_train_flops(const bf_flow_config *c, int n) { return 3.0 * bf_flow_forward_flops(c, n); }
