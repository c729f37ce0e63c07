/* The feature network: layer table and parameter layout built from the configuration,
 * initialisation, forward and backward passes, the sharded training step, extraction.
 * Checkpoints are in features_io.c, training in train_features.c. */
#include "feature_net.h"
#include "core.h"
#include "dist.h"
#include "kernels.h"

#include <math.h>
#include <omp.h>
#include <string.h>

/* ------------------------------------------------------------------ configuration */
void bf_features_config_default(bf_features_config *c) {
    *c = (bf_features_config){1, 28, 28, 32, 64, 128, 10, BF_FEAT_ARCH_FD};
}

static int check_size(const bf_features_config *c);

int bf_features_config_check(const bf_features_config *c) {
    if (c->in_channels <= 0 || c->height < 4 || c->width < 4 || c->width1 <= 0 ||
        c->width2 <= 0 || c->feat_dim <= 0 || c->num_classes < 2 ||
        (c->arch != BF_FEAT_ARCH_FD && c->arch != BF_FEAT_ARCH_PERCEPTUAL)) {
        bf_set_error("feature network: sizes must be positive, images at least 4x4, "
                     "classes at least 2, arch 0 (fd) or 1 (perceptual)");
        return -1;
    }
    if (c->in_channels > 64 || c->height > 1024 || c->width > 1024 || c->width1 > 4096 ||
        c->width2 > 4096 || c->feat_dim > 65536 || c->num_classes > 100000) {
        bf_set_error("feature network: sizes out of the supported range (channels <= 64, "
                     "images <= 1024 x 1024, widths <= 4096, features <= 65536, classes <= 10^5)");
        return -1;
    }
    return check_size(c);
}

/* ------------------------------------------------------------------ layout */
static size_t add_tensor(bf_features *fn, size_t *off, const char *name, int ndim,
                         const int64_t *shape, int no_decay) {
    bf_param_info *t = &fn->info[fn->n_info++];
    snprintf(t->name, sizeof t->name, "%s", name);
    t->ndim = ndim;
    t->numel = 1;
    for (int i = 0; i < ndim; i++) {
        t->shape[i] = shape[i];
        t->numel *= (size_t)shape[i];
    }
    t->offset = *off;
    t->no_decay = no_decay;
    *off += t->numel;
    return t->offset;
}

/* Appends a layer reading the previous layer's output; conv and linear get NAME.weight
 * (PyTorch's shapes: (OC, C, K, K) and (OUT, IN)) and NAME.bias. */
static void add_layer(bf_features *fn, size_t *off, bf_layer_kind kind, const char *name,
                      int oc, int relu) {
    const bf_feat_layer *prev = fn->n_layers ? &fn->layer[fn->n_layers - 1] : NULL;
    bf_feat_layer *l = &fn->layer[fn->n_layers++];
    l->kind = kind;
    l->relu = relu;
    l->c = prev ? prev->oc : fn->cfg.in_channels;
    l->h = prev ? prev->oh : fn->cfg.height;
    l->w = prev ? prev->ow : fn->cfg.width;
    char nm[32];
    if (kind == BF_LAYER_POOL) {
        l->oc = l->c; l->oh = l->h / 2; l->ow = l->w / 2;
        return;
    }
    if (kind == BF_LAYER_LINEAR) {   /* flattens (c, h, w) */
        l->c = l->c * l->h * l->w; l->h = l->w = 1;
        l->oc = oc; l->oh = l->ow = 1;
        int64_t ws[2] = {oc, l->c};
        snprintf(nm, sizeof nm, "%s.weight", name);
        l->w_off = add_tensor(fn, off, nm, 2, ws, 0);
    } else {
        l->conv = (bf_conv_dims){1, l->c, l->h, l->w, oc, 3, 1, 1, 0};
        l->oc = oc; l->oh = bf_conv_out_h(&l->conv); l->ow = bf_conv_out_w(&l->conv);
        int64_t ws[4] = {oc, l->c, 3, 3};
        snprintf(nm, sizeof nm, "%s.weight", name);
        l->w_off = add_tensor(fn, off, nm, 4, ws, 0);
    }
    int64_t bs[1] = {oc};
    snprintf(nm, sizeof nm, "%s.bias", name);
    l->b_off = add_tensor(fn, off, nm, 1, bs, 1);
}

/* The convolutional stage of each network, then both networks' fc1 (the features) and fc2
 * (the classifier).
 * The perceptual network: two convolutions at full resolution (fine detail matters to a
 * perceptual distance), two at half, one at quarter, wider features.
 * The evaluation network pools right after the first convolution: 16 MFLOP per 28x28 image
 * instead of 38 with both first-stage convolutions at full size, so training is about 2.5
 * times faster (4 epochs in about 5 minutes on 2 cores reach 0.917 test accuracy,
 * models/README.md). */
typedef struct { bf_layer_kind kind; const char *name; int wide; } conv_stage;   /* wide: width2 */
#define CONV(name, wide) {BF_LAYER_CONV, name, wide}
#define POOL(name) {BF_LAYER_POOL, name, 0}
static const conv_stage PERCEPTUAL[] = {
    CONV("conv1", 0), CONV("conv2", 0), POOL("pool1"), CONV("conv3", 1), CONV("conv4", 1),
    POOL("pool2"), CONV("conv5", 1),
};
static const conv_stage EVALUATION[] = {
    CONV("conv1", 0), POOL("pool1"), CONV("conv2", 0), CONV("conv3", 1), POOL("pool2"),
    CONV("conv4", 1),
};
#undef CONV
#undef POOL

static void build_layers(bf_features *fn) {
    const bf_features_config *c = &fn->cfg;
    int perc = c->arch == BF_FEAT_ARCH_PERCEPTUAL;
    const conv_stage *t = perc ? PERCEPTUAL : EVALUATION;
    int n = perc ? (int)(sizeof PERCEPTUAL / sizeof *t) : (int)(sizeof EVALUATION / sizeof *t);
    size_t off = 0;
    for (int i = 0; i < n; i++) {
        int conv = t[i].kind == BF_LAYER_CONV;
        add_layer(fn, &off, t[i].kind, t[i].name, conv ? (t[i].wide ? c->width2 : c->width1) : 0, conv);
    }
    add_layer(fn, &off, BF_LAYER_LINEAR, "fc1", c->feat_dim, 1);
    fn->feat_layer = fn->n_layers - 1;
    add_layer(fn, &off, BF_LAYER_LINEAR, "fc2", c->num_classes, 0);
    fn->num_params = off;
}

/* The layer table of an in-range configuration, built without allocating: parameters and the
 * largest per-image activation (and convolution scratch) against the limits. */
#define FEAT_MAX_PER_IMAGE ((size_t)1 << 28)
static int check_size(const bf_features_config *c) {
    bf_features fn;
    memset(&fn, 0, sizeof fn);
    fn.cfg = *c;
    build_layers(&fn);   /* fixed arrays in the struct: nothing is allocated */
    size_t biggest = 0;
    for (int i = 0; i < fn.n_layers; i++) {
        const bf_feat_layer *l = &fn.layer[i];
        size_t in = (size_t)l->c * l->h * l->w, out = (size_t)l->oc * l->oh * l->ow;
        size_t col = l->kind == BF_LAYER_CONV ? bf_conv_col_size(&l->conv) : 0;
        biggest = in > biggest ? in : biggest;
        biggest = out > biggest ? out : biggest;
        biggest = col > biggest ? col : biggest;
    }
    if (fn.num_params >= BF_MAX_PARAMS || biggest > FEAT_MAX_PER_IMAGE) {
        bf_set_error("feature network: %zu parameters and %zu values per image in its largest "
                     "layer: at most %zu and %zu", fn.num_params, biggest, BF_MAX_PARAMS - 1,
                     FEAT_MAX_PER_IMAGE);
        return -1;
    }
    return 0;
}

size_t bf_features_param_count(const bf_features_config *c) {
    bf_features fn;
    memset(&fn, 0, sizeof fn);
    fn.cfg = *c;
    build_layers(&fn);
    return fn.num_params;
}

bf_features *bf_features_new(const bf_features_config *c) {
    if (bf_features_config_check(c)) return NULL;
    bf_features *fn = bf_calloc(1, sizeof *fn);
    fn->cfg = *c;
    build_layers(fn);
    fn->params = bf_try_calloc(fn->num_params, sizeof(float), "the feature network's parameters");
    if (!fn->params) { free(fn); return NULL; }
    return fn;
}

/* the extraction's activation sets */
static void cached_init(void *set, const void *fn, int Bn) { bf_feat_acts_init(set, fn, Bn); }
static void cached_free(void *set) { bf_feat_acts_free(set); }
static const bf_acts_kind CACHED = {sizeof(bf_feat_acts), cached_init, cached_free};

void bf_features_free(bf_features *fn) {
    if (!fn) return;
    bf_acts_cache_free(&fn->cache, &CACHED);
    free(fn->params);
    free(fn);
}

const bf_features_config *bf_features_get_config(const bf_features *fn) { return &fn->cfg; }
int bf_features_dim(const bf_features *fn) { return fn->cfg.feat_dim; }
size_t bf_features_num_params(const bf_features *fn) { return fn->num_params; }

void bf_features_init(bf_features *fn, uint64_t seed) {
    bf_rng rng;
    bf_rng_seed(&rng, seed);
    memset(fn->params, 0, sizeof(float) * fn->num_params);
    for (int i = 0; i < fn->n_layers; i++) {
        const bf_feat_layer *l = &fn->layer[i];
        if (l->kind == BF_LAYER_POOL) continue;
        size_t fan_in = (size_t)l->c * (l->kind == BF_LAYER_CONV ? l->conv.K * l->conv.K : 1);
        float std = sqrtf((l->relu ? 2.0f : 1.0f) / (float)fan_in);
        float *w = fn->params + l->w_off;
        for (size_t k = 0; k < (size_t)l->oc * fan_in; k++) w[k] = std * bf_rng_normal(&rng);
    }
}

/* ------------------------------------------------------------------ activations */
static size_t out_size(const bf_feat_layer *l) { return (size_t)l->oc * l->oh * l->ow; }

void bf_feat_acts_init(bf_feat_acts *a, const bf_features *fn, int Bn) {
    if (bf_feat_acts_try_init(a, fn, Bn)) bf_die();
}

int bf_feat_acts_try_init(bf_feat_acts *a, const bf_features *fn, int Bn) {
    memset(a, 0, sizeof *a);
    size_t biggest = 0, col = 0, total = 0, K = (size_t)fn->cfg.num_classes;
    for (int i = 0; i < fn->n_layers; i++) {
        const bf_feat_layer *l = &fn->layer[i];
        size_t in = (size_t)l->c * l->h * l->w;
        biggest = in > biggest ? in : biggest;
        biggest = out_size(l) > biggest ? out_size(l) : biggest;
        if (l->kind == BF_LAYER_CONV && bf_conv_col_size(&l->conv) > col) col = bf_conv_col_size(&l->conv);
        total = bf_size_add(total, BF_SIZE_PROD((size_t)Bn, out_size(l)));
    }
    total = bf_size_add(total, (size_t)Bn * (K + 2) + 2 * col);
    total = bf_size_add(total, BF_SIZE_PROD(2, (size_t)Bn, biggest));
    char what[96];
    snprintf(what, sizeof what, "the feature network's activations for %d images", Bn);
    float *p = a->mem = bf_try_calloc(total, sizeof(float), what);
    if (!p) return -1;
    for (int i = 0; i < fn->n_layers; i++) { a->act[i] = p; p += (size_t)Bn * out_size(&fn->layer[i]); }
    a->probs = p; p += (size_t)Bn * K;
    a->loss = p; p += Bn;
    a->dloss = p; p += Bn;
    a->col = p; p += col;
    a->dcol = p; p += col;
    a->g[0] = p; p += (size_t)Bn * biggest;
    a->g[1] = p;
    a->Bn = Bn;
    return 0;
}

void bf_feat_acts_free(bf_feat_acts *a) {
    free(a->mem);
    memset(a, 0, sizeof *a);
}

/* ------------------------------------------------------------------ forward, backward */
static void layer_forward(const bf_feat_layer *l, const float *P, bf_feat_acts *a, float *out,
                          const float *in, int n) {
    if (l->kind == BF_LAYER_CONV) {
        bf_conv_dims d = l->conv;
        d.N = n;
        d.lowp = a->lowp;
        bf_conv2d_forward(out, a->col, in, P + l->w_off, P + l->b_off, &d);
    } else if (l->kind == BF_LAYER_POOL) {
        bf_maxpool2_forward(out, in, n, l->c, l->h, l->w);
    } else {
        bf_linear_forward_f32(out, in, P + l->w_off, P + l->b_off, n, l->c, l->oc);
    }
    if (l->relu) bf_relu_forward(out, out, (size_t)n * out_size(l));
}

const float *bf_features_forward(const bf_features *fn, const float *params, bf_feat_acts *a,
                                 const float *x, int n) {
    BF_ASSERT(n > 0 && n <= a->Bn);
    a->x = x;
    a->n = n;
    for (int i = 0; i < fn->n_layers; i++)
        layer_forward(&fn->layer[i], params, a, a->act[i], i ? a->act[i - 1] : x, n);
    return a->act[fn->n_layers - 1];
}

double bf_features_xent(const bf_features *fn, bf_feat_acts *a, const int *y, int *correct) {
    int n = a->n, K = fn->cfg.num_classes;
    const float *logits = a->act[fn->n_layers - 1];
    bf_softmax_xent_forward(a->loss, a->probs, logits, y, n, K);
    double sum = 0.0;
    int hits = 0;
    for (int i = 0; i < n; i++) {
        sum += a->loss[i];
        int best = 0;
        for (int k = 1; k < K; k++) best = logits[(size_t)i * K + k] > logits[(size_t)i * K + best] ? k : best;
        hits += best == y[i];
    }
    if (correct) *correct = hits;
    return sum;
}

/* dinp (zeroed by the caller) += gradient through layer l of dout, w.r.t. its pre-ReLU output */
static void layer_backward(const bf_feat_layer *l, const float *P, float *G, bf_feat_acts *a,
                           float *dinp, const float *dout, const float *in, int n) {
    if (l->kind == BF_LAYER_CONV) {
        bf_conv_dims d = l->conv;
        d.N = n;
        d.lowp = a->lowp;
        bf_conv2d_backward(dinp, G ? G + l->w_off : NULL, G ? G + l->b_off : NULL, a->col,
                           a->dcol, dout, in, P + l->w_off, &d);
    } else if (l->kind == BF_LAYER_POOL) {
        bf_maxpool2_backward(dinp, dout, in, n, l->c, l->h, l->w);
    } else {
        bf_linear_backward_f32(dinp, G ? G + l->w_off : NULL, G ? G + l->b_off : NULL, dout, in,
                           P + l->w_off, n, l->c, l->oc);
    }
}

/* Walks the layers down from `top` with cur holding dL/d(output of layer top); dact[i] (or
 * NULL) is added to the gradient at the output of layer i on the way (after its ReLU). */
static void backward_layers(const bf_features *fn, const float *params, bf_feat_acts *a,
                            float *cur, float *other, int top, float *const *dact, float *grads,
                            float *dx) {
    int n = a->n;
    float *t;
    for (int i = top; i >= 0; i--) {   /* cur: gradient w.r.t. the output of layer i */
        const bf_feat_layer *l = &fn->layer[i];
        size_t nout = (size_t)n * out_size(l), nin = (size_t)n * l->c * l->h * l->w;
        if (dact && dact[i])
            for (size_t k = 0; k < nout; k++) cur[k] += dact[i][k];
        if (l->relu) {
            memset(other, 0, sizeof(float) * nout);
            bf_relu_backward(other, cur, a->act[i], nout);
            t = cur; cur = other; other = t;
        }
        float *dinp = i ? other : dx ? other : NULL;
        if (dinp) memset(dinp, 0, sizeof(float) * nin);
        layer_backward(l, params, grads, a, dinp, cur, i ? a->act[i - 1] : a->x, n);
        t = cur; cur = other; other = t;
    }
    if (dx)
        for (size_t i = 0; i < (size_t)n * fn->cfg.in_channels * fn->cfg.height * fn->cfg.width; i++)
            dx[i] += cur[i];
}

void bf_features_backward(const bf_features *fn, const float *params, bf_feat_acts *a,
                          const int *y, float scale, float *grads, float *dx) {
    int n = a->n, K = fn->cfg.num_classes;
    for (int i = 0; i < n; i++) a->dloss[i] = scale;
    memset(a->g[0], 0, sizeof(float) * (size_t)n * K);
    bf_softmax_xent_backward(a->g[0], a->dloss, a->probs, y, n, K);
    backward_layers(fn, params, a, a->g[0], a->g[1], fn->n_layers - 1, NULL, grads, dx);
}

void bf_features_backward_acts(const bf_features *fn, const float *params, bf_feat_acts *a,
                               float *const *dact, float *dx) {
    int top = -1;
    for (int i = 0; i < fn->n_layers; i++)
        if (dact[i]) top = i;
    if (top < 0) return;
    memset(a->g[0], 0, sizeof(float) * (size_t)a->n * out_size(&fn->layer[top]));
    backward_layers(fn, params, a, a->g[0], a->g[1], top, dact, NULL, dx);
}

/* ------------------------------------------------------------------ sharded step */
/* Each thread runs forward and backward on its shard with its own activations and gradient
 * buffer; the kernels inside run serially (one parallel region per step, as the flow's). */
double bf_features_step_shards(const bf_features *fn, const float *params, bf_feat_acts *acts,
                               float **shard_grads, const bf_shard_plan *p, float *grads,
                               const float *x, const int *y, int *correct) {
    size_t img = (size_t)fn->cfg.in_channels * fn->cfg.height * fn->cfg.width, P = fn->num_params;
    int L = p->s1 - p->s0, n = p->n;
    double *sv = bf_calloc((size_t)p->S * 2, sizeof(double));   /* per shard: loss sum, hits */
#pragma omp parallel for num_threads(L) schedule(static, 1)
    for (int k = 0; k < L; k++) {
        int s = p->s0 + k, b0 = bf_shard_begin(n, p->S, s), b1 = bf_shard_begin(n, p->S, s + 1), h;
        float *g = k == 0 ? grads : shard_grads[k];
        memset(g, 0, sizeof(float) * P);
        bf_features_forward(fn, params, &acts[k], x + b0 * img, b1 - b0);
        sv[2 * s] = bf_features_xent(fn, &acts[k], y + b0, &h);
        bf_features_backward(fn, params, &acts[k], y + b0, 1.0f / (float)n, g, NULL);
        sv[2 * s + 1] = h;
    }
    bf_shard_values_gather(sv, 2, p);
    double loss_sum = 0.0, hits = 0.0;
    for (int s = 0; s < p->S; s++) {
        loss_sum += sv[2 * s];
        hits += sv[2 * s + 1];
    }
    free(sv);
    bf_shard_grads_reduce(grads, shard_grads, p, P, 0);   /* parts of the batch mean */
    if (correct) *correct = (int)hits;
    return loss_sum / n;
}

double bf_features_step_sharded(const bf_features *fn, const float *params, bf_feat_acts *acts,
                                float **shard_grads, int nshards, float *grads, const float *x,
                                const int *y, int n, int *correct) {
    bf_shard_plan p = bf_shard_plan_local(n, nshards);
    return bf_features_step_shards(fn, params, acts, shard_grads, &p, grads, x, y, correct);
}

/* ------------------------------------------------------------------ extraction */
static bf_feat_acts *cached_acts(bf_features *fn, int count, int Bn) {
    return bf_acts_cache_get(&fn->cache, &CACHED, fn, count, Bn);
}

static int argmax(const float *v, int K) {
    int best = 0;
    for (int k = 1; k < K; k++) best = v[k] > v[best] ? k : best;
    return best;
}

/* x as a user gets it: clamped to [-1, 1] and quantised to 8 bits, as the PNG and uint8
 * .npy writers do (NaN -> -1). Scoring raw float outputs would rate pixels nobody sees. */
static void quantise_as_saved(float *out, const float *x, size_t m) {
    for (size_t i = 0; i < m; i++) {
        uint8_t p;
        bf_images_to_u8(&p, x + i, 1);
        out[i] = bf_pixel_to_unit(p);
    }
}

/* Chunks of up to 32 images are spread over the threads, each with its own activations. */
int bf_features_extract(bf_features *fn, float *feats, int *pred, const float *x, int n) {
    if (n < 0) { bf_set_error("bf_features_extract: negative image count %d", n); return -1; }
    if (n == 0) return 0;
    const bf_features_config *c = &fn->cfg;
    int chunk = n < 32 ? n : 32, nchunks = (n + chunk - 1) / chunk, F = c->feat_dim, K = c->num_classes;
    int threads = omp_get_max_threads() < nchunks ? omp_get_max_threads() : nchunks;
    size_t img = (size_t)c->in_channels * c->height * c->width;
    bf_feat_acts *acts = cached_acts(fn, threads, chunk);
#pragma omp parallel for num_threads(threads) schedule(dynamic, 1)
    for (int k = 0; k < nchunks; k++) {
        bf_feat_acts *a = &acts[omp_get_thread_num()];
        int s = k * chunk, m = n - s < chunk ? n - s : chunk;
        float *xq = bf_malloc(sizeof(float) * img * m);
        quantise_as_saved(xq, x + s * img, img * m);
        const float *logits = bf_features_forward(fn, fn->params, a, xq, m);
        if (feats) memcpy(feats + (size_t)s * F, a->act[fn->feat_layer], sizeof(float) * (size_t)m * F);
        if (pred)
            for (int i = 0; i < m; i++) pred[s + i] = argmax(logits + (size_t)i * K, K);
        free(xq);
    }
    return 0;
}

int bf_features_accuracy(bf_features *fn, const bf_dataset *ds, int limit, double *acc) {
    const bf_features_config *c = &fn->cfg;
    if (ds->c != c->in_channels || ds->h != c->height || ds->w != c->width) {
        bf_set_error("the data are %dx%dx%d images but the feature network expects %dx%dx%d",
                     ds->c, ds->h, ds->w, c->in_channels, c->height, c->width);
        return -1;
    }
    int n = limit > 0 && limit < ds->n ? limit : ds->n, hits = 0, chunk = 1024;
    size_t img = (size_t)ds->c * ds->h * ds->w;
    float *x = bf_malloc(sizeof(float) * img * chunk);
    int *pred = bf_malloc(sizeof(int) * chunk);
    for (int s = 0; s < n; s += chunk) {   /* in pieces: the whole split in float is large */
        int m = n - s < chunk ? n - s : chunk;
        for (size_t i = 0; i < (size_t)m * img; i++) x[i] = bf_pixel_to_unit(ds->pixels[s * img + i]);
        bf_features_extract(fn, NULL, pred, x, m);
        for (int i = 0; i < m; i++) hits += pred[i] == ds->labels[s + i];
    }
    free(x);
    free(pred);
    *acc = n ? (double)hits / n : 0.0;
    return 0;
}
