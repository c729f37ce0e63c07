/* Training of the feature network: softmax cross-entropy on augmented batches (random shifts
 * with background padding, horizontal flips), AdamW with warmup + cosine, clipping; a
 * progress line, log.jsonl, an atomic checkpoint at the end of every epoch, and the test
 * accuracy at the end. */
#include "core.h"
#include "dist.h"
#include "feature_net.h"
#include "optim.h"
#include "train_util.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <omp.h>

void bf_features_train_opts_default(bf_features_train_opts *o) {
    memset(o, 0, sizeof *o);
    bf_features_config_default(&o->model);
    o->data = "fashion-mnist";
    o->out_dir = "runs/features";
    o->epochs = 4;
    o->batch = 64;
    o->warmup = 100;
    o->lr = 2e-3f;
    o->min_lr = 2e-5f;
    o->weight_decay = 0.05f;
    o->beta1 = 0.9f;
    o->beta2 = 0.999f;
    o->eps = 1e-8f;
    o->grad_clip = 5.0f;
    o->shift = 2;
    o->flip = 1;
    o->log_every = 50;
}

typedef struct {
    const bf_features_train_opts *o;
    const bf_dataset *ds;
    bf_features *fn;
    float *grads, *m, *v;
    unsigned char *decay;
    bf_feat_acts *acts;          /* one activation set per shard */
    float **shard_grads;         /* [1..nshards) scratch gradients */
    int nshards;                 /* this process's shards of the plan */
    bf_shard_plan plan;
    float *img;
    int *y, *idx;
    bf_data_order order;
    bf_divergence div;
    long step, steps, steps_per_epoch;
    double t_start;
    FILE *log;
    char path[4096];             /* the checkpoint */
    bf_dataset data;             /* the training split */
    double *test_accuracy;       /* may be NULL */
} trainer;

/* ------------------------------------------------------------------ data */
/* dst (C, H, W) in [-1, 1] from src (C, H, W) pixels, moved by (dx, dy) and mirrored when
 * flip; pixels moved in from outside are background (pixel 0, i.e. -1). */
static void augment(float *dst, const uint8_t *src, int C, int H, int W, int dx, int dy,
                    int flip) {
    for (int c = 0; c < C; c++)
        for (int y = 0; y < H; y++)
            for (int x = 0; x < W; x++) {
                int sy = y - dy, sx = flip ? W - 1 - (x - dx) : x - dx;
                int inside = sy >= 0 && sy < H && sx >= 0 && sx < W;
                dst[((size_t)c * H + y) * W + x] =
                    inside ? bf_pixel_to_unit(src[((size_t)c * H + sy) * W + sx]) : -1.0f;
            }
}

static void make_batch(trainer *t) {
    const bf_features_train_opts *o = t->o;
    const bf_dataset *ds = t->ds;
    int S = o->shift;
    size_t px = (size_t)ds->c * ds->h * ds->w;
    bf_rng rng;
    bf_rng_seed(&rng, o->seed * 7919ull + (uint64_t)t->step * 104729ull + 3);
    bf_data_order_batch(&t->order, t->idx, t->step, o->batch);
    int r0 = bf_shard_row0(&t->plan), r1 = bf_shard_row1(&t->plan);   /* this process's rows */
    for (int b = 0; b < o->batch; b++) {
        int i = t->idx[b];
        int dx = S ? (int)bf_rng_below(&rng, 2 * S + 1) - S : 0;
        int dy = S ? (int)bf_rng_below(&rng, 2 * S + 1) - S : 0;
        int flip = o->flip && (bf_rng_u64(&rng) >> 63);
        if (b < r0 || b >= r1) continue;   /* other rows: the same draws, nothing read */
        augment(t->img + b * px, ds->pixels + (size_t)i * px, ds->c, ds->h, ds->w, dx, dy, flip);
        t->y[b] = ds->labels[i];
    }
}

/* ------------------------------------------------------------------ checkpoints, log */
static char *meta_json(const trainer *t, double test_acc) {
    const bf_features_train_opts *o = t->o;
    cJSON *j = cJSON_CreateObject();
    char buf[64];
#define PUT(key, ...) (snprintf(buf, sizeof buf, __VA_ARGS__), cJSON_AddStringToObject(j, key, buf))
    PUT("step", "%ld", t->step);
    PUT("steps", "%ld", t->steps);
    PUT("batch", "%d", o->batch);
    PUT("seed", "%llu", (unsigned long long)o->seed);
    PUT("shift", "%d", o->shift);
    PUT("flip", "%d", o->flip);
    PUT("lr", "%g", (double)o->lr);
    PUT("train_seconds", "%.0f", bf_time() - t->t_start);
    if (test_acc >= 0) PUT("test_accuracy", "%.4f", test_acc);
#undef PUT
    cJSON_AddStringToObject(j, "data", o->data);
    char *s = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    return s;
}

static int save(void *ctx, double test_acc) {
    const trainer *t = ctx;
    char *meta = meta_json(t, test_acc);
    int rc = bf_features_save(t->fn, t->path, meta);
    free(meta);
    return rc;
}

static void log_fn(void *ctx, const double *m, double ips, double eta) {
    trainer *t = ctx;
    const bf_features_train_opts *o = t->o;
    double epoch = (double)t->step / t->steps_per_epoch;
    float lr = bf_lr_schedule(t->step - 1, o->warmup, t->steps, o->lr, o->min_lr);
    fprintf(t->log, "{\"step\":%ld,\"epoch\":%.3f,\"loss\":%.6f,\"train_accuracy\":%.4f,"
            "\"grad_norm\":%.5g,\"lr\":%.4g,\"images_per_s\":%.1f}\n", t->step, epoch, m[0], m[2],
            m[1], lr, ips);
    fflush(t->log);
    if (o->quiet) return;
    char etas[32];
    bf_fmt_duration(etas, sizeof etas, eta);
    fprintf(stderr, "step %5ld/%ld | epoch %.2f | loss %.4f | acc %.3f | grad %.3g | lr %.2e | "
            "%.0f img/s | ETA %s\n", t->step, t->steps, epoch, m[0], m[2], m[1], lr, ips, etas);
}

/* ------------------------------------------------------------------ the step */
/* metrics: loss, gradient norm, training accuracy */
static int step_fn(void *ctx, double *metrics) {
    trainer *t = ctx;
    const bf_features_train_opts *o = t->o;
    bf_features *fn = t->fn;
    int correct;
    make_batch(t);
    double loss = bf_features_step_shards(fn, fn->params, t->acts, t->shard_grads, &t->plan,
                                          t->grads, t->img, t->y, &correct);
    bf_optim_bufs b = {fn->params, t->grads, t->m, t->v, NULL, t->decay, fn->num_params};
    bf_optim_opts oo = BF_OPTIM_OPTS(o, t->steps, 0.0f);
    metrics[2] = (double)correct / o->batch;
    return bf_optim_step(&b, &oo, &t->step, loss, loss, &t->div, metrics);
}

static int save_fn(void *ctx) { return save(ctx, -1.0); }

/* ------------------------------------------------------------------ setup */
int bf_train_features_check_opts(const bf_features_train_opts *o) {
    const bf_range r[] = {
        {"--batch", o->batch, 1, BF_MAX_BATCH, 0, 0}, {"--steps", o->steps, 0, INT_MAX, 0, 0},
        {"--epochs", o->epochs, 0, 100000, 0, 0}, BF_OPTIM_RANGES(o),
        {"--shift", o->shift, 0, 1024, 0, 0}, {"--flip", o->flip, 0, 1, 0, 0},
        {"--log-every", o->log_every, 0, INT_MAX, 0, 0}, {"--threads", o->threads, 0, 4096, 0, 0},
    };
    if (bf_check_ranges(r, (int)(sizeof r / sizeof r[0]))) return -1;
    if (o->steps <= 0 && o->epochs <= 0) {
        bf_set_error("--steps or --epochs must be positive");
        return -1;
    }
    return 0;
}

static int trainer_alloc(trainer *t, const bf_dataset *ds) {
    const bf_features_train_opts *o = t->o;
    size_t P = t->fn->num_params, px = (size_t)ds->c * ds->h * ds->w;
    const char *what = "the optimiser's state (gradients, moments)";
    bf_data_order_init(&t->order, ds->n, o->seed, BF_ORDER_SALT_FEATURES);
    t->nshards = t->plan.s1 - t->plan.s0;
    t->acts = bf_calloc((size_t)t->nshards, sizeof *t->acts);
    t->y = bf_malloc(sizeof(int) * o->batch);   /* batch <= BF_MAX_BATCH */
    t->idx = bf_malloc(sizeof(int) * o->batch);
    if (!(t->grads = bf_try_calloc(P, sizeof(float), what)) || !(t->m = bf_try_calloc(P, sizeof(float), what)) ||
        !(t->v = bf_try_calloc(P, sizeof(float), what)) ||
        !(t->decay = bf_decay_mask(t->fn->info, t->fn->n_info, P)) ||
        !(t->img = bf_try_malloc(BF_SIZE_PROD(sizeof(float), px, (size_t)o->batch), "a batch of images")) ||
        bf_shard_grads_alloc(&t->shard_grads, t->nshards, P))
        return -1;
    for (int k = 0; k < t->nshards; k++)
        if (bf_feat_acts_try_init(&t->acts[k], t->fn, (o->batch + t->plan.S - 1) / t->plan.S)) return -1;
    return 0;
}

static void teardown(void *ctx) {
    trainer *t = ctx;
    for (int k = 0; k < t->nshards; k++) bf_feat_acts_free(&t->acts[k]);
    free(t->acts);
    bf_shard_grads_free(t->shard_grads, t->nshards);
    free(t->grads); free(t->m); free(t->v); free(t->decay);
    free(t->img); free(t->y); free(t->idx);
    bf_data_order_free(&t->order);
    bf_features_free(t->fn);
    bf_dataset_free(&t->data);
}

/* The test accuracy, logged and written into the checkpoint's metadata (by rank 0). */
static int final_eval(void *ctx) {
    trainer *t = ctx;
    const bf_features_train_opts *o = t->o;
    if (o->eval_limit < 0) return 0;
    bf_dataset test = {0};
    double acc = -1.0;
    int rc = bf_dataset_load(&test, o->data, "test") || bf_features_accuracy(t->fn, &test, o->eval_limit, &acc);
    int n = o->eval_limit > 0 && o->eval_limit < test.n ? o->eval_limit : test.n;
    bf_dataset_free(&test);
    if (bf_dist_check(rc)) return -1;
    if (t->log) {
        fprintf(t->log, "{\"step\":%ld,\"test_accuracy\":%.4f,\"test_images\":%d}\n", t->step, acc, n);
        fflush(t->log);
    }
    if (bf_dist_check(bf_dist_is_root() ? save(t, acc) : 0)) return -1;
    if (t->test_accuracy) *t->test_accuracy = acc;
    return 0;
}

/* The network, data and buffers (each process its own). */
static int setup(void *ctx, bf_train_loop *loop, bf_train_state *ts, const bf_dataset **ds) {
    trainer *t = ctx;
    const bf_features_train_opts *o = t->o;
    t->t_start = bf_time();
    if (bf_dataset_load(&t->data, o->data, "train")) return -1;
    *ds = t->ds = &t->data;
    bf_features_config c = o->model;
    c.in_channels = t->ds->c; c.height = t->ds->h; c.width = t->ds->w; c.num_classes = t->ds->num_classes;
    if (!(t->fn = bf_features_new(&c))) return -1;
    bf_features_init(t->fn, o->seed);
    bf_divergence_init(&t->div, 0, "a lower --lr or more --warmup");
    if (trainer_alloc(t, t->ds)) return -1;
    t->steps_per_epoch = (t->ds->n + o->batch - 1) / o->batch;
    t->steps = o->steps > 0 ? o->steps : o->epochs * t->steps_per_epoch;
    loop->steps = t->steps;
    loop->ckpt_every = (int)t->steps_per_epoch;
    snprintf(t->path, sizeof t->path, "%s/features.safetensors", o->out_dir);
    *ts = (bf_train_state){t->fn->params, NULL, t->m, t->v, t->fn->num_params, 0};
    return 0;
}

static void banner(void *ctx, const char *layout) {
    const trainer *t = ctx;
    const bf_features_train_opts *o = t->o;
    fprintf(stderr, "training the feature network (%zu parameters) on %d images (%s), batch %d, "
            "%ld steps (%.2f epochs), %s\n", t->fn->num_params, t->ds->n, o->data, o->batch,
            t->steps, (double)t->steps / t->steps_per_epoch, layout);
}

/* A checkpoint at the end of every epoch; no resume (a few minutes' run). The loop's steps and
 * checkpoint interval are known once setup has seen the data. */
int bf_train_features(const bf_features_train_opts *o, double *test_accuracy) {
    if (test_accuracy) *test_accuracy = -1.0;
    if (bf_train_features_check_opts(o)) return -1;
    trainer t = {.o = o, .test_accuracy = test_accuracy};
    bf_train_run R = {{&t, &t.step, 0, o->batch, o->log_every, 0, 0, 0, o->quiet, step_fn, log_fn,
                       NULL, save_fn, &t.div},
                      &t.plan, o->out_dir, 0, &t.log, setup, banner, final_eval, teardown};
    return bf_train_locked(&R, o->overwrite, o->threads);
}
