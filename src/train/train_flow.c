/* Maximum-likelihood training of the forward model F: batches with noise and label drop,
 * AdamW with warmup + cosine, clipping, EMA, JSON-lines log, atomic checkpoints, resume. */
#include "core.h"
#include "dist.h"
#include "flow.h"
#include "optim.h"
#include "train_util.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <omp.h>

void bf_train_opts_default(bf_train_opts *o) {
    memset(o, 0, sizeof *o);
    bf_flow_config_named(&o->model, "fmnist-small");
    o->data = "fashion-mnist";
    o->out_dir = "runs/flow";
    o->batch = 64;
    o->steps = 1000;
    o->warmup = 100;
    o->lr = 1e-3f;
    o->min_lr = 1e-5f;
    o->weight_decay = 1e-4f;
    o->beta1 = 0.9f;
    o->beta2 = 0.95f;
    o->eps = 1e-8f;
    o->grad_clip = 1.0f;
    o->ema_decay = 0.999f;
    o->noise = BF_NOISE_UNIFORM;
    o->sigma = 0.05f;
    o->label_drop = 0.1f;
    o->seed = 0;
    o->ckpt_every = 500;
    o->log_every = 10;
}

typedef struct {
    bf_flow *f;
    float *grads, *m, *v, *ema;
    unsigned char *decay;
    long step;
} run_state;

/* ------------------------------------------------------------------ checkpoints */
static char *opts_json(const bf_train_opts *o, long step) {
    cJSON *j = cJSON_CreateObject();
    char buf[64];
    snprintf(buf, sizeof buf, "%ld", step);
    cJSON_AddStringToObject(j, "step", buf);
    cJSON_AddStringToObject(j, "data", o->data);
    cJSON_AddStringToObject(j, "noise", o->noise == BF_NOISE_UNIFORM ? "uniform" : "gauss");
    snprintf(buf, sizeof buf, "%g", (double)o->sigma);
    cJSON_AddStringToObject(j, "sigma", buf);
    snprintf(buf, sizeof buf, "%g", (double)o->label_drop);
    cJSON_AddStringToObject(j, "label_drop", buf);
    snprintf(buf, sizeof buf, "%llu", (unsigned long long)o->seed);
    cJSON_AddStringToObject(j, "seed", buf);
    snprintf(buf, sizeof buf, "%d", o->batch);
    cJSON_AddStringToObject(j, "batch", buf);
    snprintf(buf, sizeof buf, "%d", o->steps);
    cJSON_AddStringToObject(j, "steps", buf);
    /* informative (a resumed run may change it): the products of the last steps */
    cJSON_AddStringToObject(j, "precision", bf_precision_name(bf_precision_effective()));
    char *s = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    return s;
}

static int load_state(run_state *s, const bf_train_opts *o) {
    char path[4096];
    if (bf_path_join(path, sizeof path, o->out_dir, "flow.safetensors")) return -1;
    s->f = bf_flow_load(path, 0);
    if (!s->f) return -1;
    if (bf_path_join(path, sizeof path, o->out_dir, "train_state.safetensors")) return -1;
    size_t n = s->f->num_params;
    if (bf_alloc_train_buffers(n, s->f->params, &s->grads, &s->m, &s->v, &s->ema)) return -1;
    /* the state file is authoritative for the weights too */
    bf_train_state ts = {s->f->params, s->ema, s->m, s->v, n, 0};
    if (bf_train_state_load(&ts, path)) return -1;
    s->step = ts.step;
    return 0;
}

static int new_state(run_state *s, const bf_train_opts *o) {
    if (!(s->f = bf_flow_new(&o->model))) return -1;
    bf_flow_init(s->f, o->seed);
    s->step = 0;
    return bf_alloc_train_buffers(s->f->num_params, s->f->params, &s->grads, &s->m, &s->v, &s->ema);
}

static void free_state(run_state *s) {
    bf_flow_free(s->f);
    free(s->grads); free(s->m); free(s->v); free(s->ema); free(s->decay);
    memset(s, 0, sizeof *s);
}

/* ------------------------------------------------------------------ logging */
static double bpd_of(double nll) { return (nll + log(128.0)) / log(2.0); }

/* ------------------------------------------------------------------ the step */
typedef struct {
    const bf_train_opts *o;
    const bf_dataset *ds, *test;
    run_state *s;
    bf_flow_acts *acts;          /* one activation set per shard */
    float **shard_grads;         /* [1..nshards) scratch gradients */
    int nshards;                 /* this process's shards of the plan */
    bf_shard_plan plan;
    float *img, *tok;
    int *y, *idx;
    bf_data_order order;
    bf_divergence div;
    bf_train_data data;
    FILE *log;
} trainer;

/* metrics: loss, gradient norm */
static int step_fn(void *ctx, double *metrics) {
    trainer *t = ctx;
    const bf_train_opts *o = t->o;
    run_state *s = t->s;
    bf_flow *f = s->f;
    const bf_flow_config *c = &f->cfg;
    int B = o->batch;
    bf_data_order_batch(&t->order, t->idx, s->step, B);
    bf_rng rng;
    bf_step_rng(&rng, o->seed, s->step, 1);
    int r0 = bf_shard_row0(&t->plan), r1 = bf_shard_row1(&t->plan);   /* this process's rows */
    size_t px = (size_t)c->in_channels * c->img_size * c->img_size;
    bf_make_batch_rows(t->img, t->y, t->ds, t->idx, B, r0, r1, o->noise, o->sigma, o->label_drop, &rng);
    bf_patchify(t->tok + r0 * px, t->img + r0 * px, r1 - r0, c->in_channels, c->img_size,
                c->img_size, c->patch_size);
    double loss = bf_flow_step_shards(f, f->params, t->acts, t->shard_grads, &t->plan, s->grads,
                                      t->tok, t->y);
    bf_optim_bufs b = {f->params, s->grads, s->m, s->v, s->ema, s->decay, f->num_params};
    bf_optim_opts oo = BF_OPTIM_OPTS(o, o->steps, o->ema_decay);
    return bf_optim_step(&b, &oo, &s->step, loss, loss, &t->div, metrics);
}

/* ------------------------------------------------------------------ the loop's hooks */
static void log_fn(void *ctx, const double *m, double ips, double eta) {
    trainer *t = ctx;
    const bf_train_opts *o = t->o;
    long step = t->s->step;
    int uni = o->noise == BF_NOISE_UNIFORM;
    float lr = bf_lr_schedule(step - 1, o->warmup, o->steps, o->lr, o->min_lr);
    fprintf(t->log, "{\"step\":%ld,\"loss\":%.6f,%s%.6f,\"grad_norm\":%.5g,\"lr\":%.4g,"
            "\"images_per_s\":%.1f}\n", step, m[0], uni ? "\"bpd\":" : "\"nll\":",
            uni ? bpd_of(m[0]) : m[0], m[1], lr, ips);
    fflush(t->log);
    if (o->quiet) return;
    char etas[32];
    bf_fmt_duration(etas, sizeof etas, eta);
    fprintf(stderr, "step %6ld/%d | loss %.4f | %s %.3f | grad %.3g | lr %.2e | %.0f img/s | ETA %s\n",
            step, o->steps, m[0], uni ? "bpd" : "nll", uni ? bpd_of(m[0]) : m[0], m[1], lr, ips, etas);
}

static void eval_fn(void *ctx) {
    trainer *t = ctx;
    run_state *s = t->s;
    if (!t->test) return;
    double bpd;
    float *keep = s->f->params;
    s->f->params = s->ema;
    int rc = bf_eval_bpd(s->f, t->test, 256, 2000, 1234, &bpd, 0);
    s->f->params = keep;
    if (rc || !t->log) return;   /* rank 0 logs */
    fprintf(t->log, "{\"step\":%ld,\"eval_bpd_ema\":%.5f,\"eval_images\":2000}\n", s->step, bpd);
    fflush(t->log);
    if (!t->o->quiet) fprintf(stderr, "step %6ld | test bits/dim (EMA, 2000 images) %.4f\n", s->step, bpd);
}

/* The checkpoint: the weights, their EMA, then the resume state. */
static int save_fn(void *ctx) {
    const trainer *t = ctx;
    const run_state *s = t->s;
    const bf_train_opts *o = t->o;
    char path[4096];
    char *meta = opts_json(o, s->step);
    int rc = 0;
    rc |= bf_path_join(path, sizeof path, o->out_dir, "flow.safetensors") ||
          bf_flow_save(s->f, s->f->params, path, meta);
    rc |= bf_path_join(path, sizeof path, o->out_dir, "flow_ema.safetensors") ||
          bf_flow_save(s->f, s->ema, path, meta);
    if (!rc) {   /* the resume file last: it names a step whose weights are already on disk */
        bf_train_state ts = {s->f->params, s->ema, s->m, s->v, s->f->num_params, s->step};
        rc = bf_path_join(path, sizeof path, o->out_dir, "train_state.safetensors") ||
             bf_train_state_save(&ts, path, "biflow-train-state", meta);
    }
    free(meta);
    return rc ? -1 : 0;
}

static const char *const NOISE_NAMES[] = {"gauss", "uniform", NULL};   /* by bf_noise */
_Static_assert(sizeof(bf_noise) == sizeof(int), "bf_noise is read as an int");

int bf_train_flow_run_opts(bf_train_opts *o, bf_run_opt *out) {
    const bf_run_opt t[] = {
        {"seed", "--seed", BF_RUN_U64, &o->seed, NULL, 1},
        {"noise", "--noise", BF_RUN_NAME, &o->noise, NOISE_NAMES, 1},
        {"sigma", "--sigma", BF_RUN_FLOAT, &o->sigma, NULL, 1},
        {"label_drop", "--label-drop", BF_RUN_FLOAT, &o->label_drop, NULL, 1},
        {"batch", "--batch", BF_RUN_INT, &o->batch, NULL, 1},
    };
    memcpy(out, t, sizeof t);
    return (int)(sizeof t / sizeof t[0]);
}

/* A resumed run: the options that define it as recorded, and more steps than it has. */
static int check_resume(const bf_train_opts *o, long step) {
    bf_train_opts copy = *o;
    bf_run_opt r[BF_RUN_OPTS_MAX];
    int n = bf_train_flow_run_opts(&copy, r);
    return bf_check_resume(r, n, o->out_dir, "train_state.safetensors", o->steps, step);
}

int bf_train_flow_check_opts(const bf_train_opts *o) {
    const bf_range r[] = {
        {"--batch", o->batch, 1, BF_MAX_BATCH, 0, 0}, {"--steps", o->steps, 1, INT_MAX, 0, 0},
        BF_OPTIM_RANGES(o), {"--ema", o->ema_decay, 0, 1, 0, 1}, {"--sigma", o->sigma, 0, 10, 0, 1},
        {"--label-drop", o->label_drop, 0, 1, 0, 0}, {"--ckpt-every", o->ckpt_every, 0, INT_MAX, 0, 0},
        {"--log-every", o->log_every, 0, INT_MAX, 0, 0}, {"--eval-every", o->eval_every, 0, INT_MAX, 0, 0},
        {"--threads", o->threads, 0, 4096, 0, 0},
    };
    if (bf_check_ranges(r, (int)(sizeof r / sizeof r[0]))) return -1;
    if (!o->resume && bf_flow_config_check(&o->model)) return -1;   /* a resumed run keeps its own */
    return 0;
}

/* Batch buffers, data order and one activation set and gradient buffer per shard. */
static int alloc_trainer(trainer *t, const bf_dataset *ds) {
    const bf_train_opts *o = t->o;
    const bf_flow *f = t->s->f;
    size_t px = (size_t)ds->c * ds->h * ds->w, B = (size_t)o->batch;
    bf_data_order_init(&t->order, ds->n, o->seed, BF_ORDER_SALT_FLOW);
    t->nshards = t->plan.s1 - t->plan.s0;
    t->acts = bf_calloc((size_t)t->nshards, sizeof *t->acts);
    if (bf_shard_grads_alloc(&t->shard_grads, t->nshards, f->num_params) ||
        !(t->img = bf_try_malloc(BF_SIZE_PROD(sizeof(float), px, B), "a batch of images")) ||
        !(t->tok = bf_try_malloc(BF_SIZE_PROD(sizeof(float), px, B), "a batch of tokens")) ||
        !(t->y = bf_try_malloc(sizeof(int) * B, "a batch of labels")) ||
        !(t->idx = bf_try_malloc(sizeof(int) * B, "a batch of indices")))
        return -1;
    for (int k = 0; k < t->nshards; k++)
        if (bf_flow_acts_try_init(&t->acts[k], f, (o->batch + t->plan.S - 1) / t->plan.S)) return -1;
    return 0;
}

/* Weights, data and buffers of the run (each process its own). */
static int setup(void *ctx, bf_train_loop *loop, bf_train_state *ts, const bf_dataset **ds) {
    trainer *t = ctx;
    run_state *s = t->s;
    const bf_train_opts *o = t->o;
    if (o->resume ? load_state(s, o) || check_resume(o, s->step) : new_state(s, o)) return -1;
    if (!(s->decay = bf_decay_mask(s->f->info, s->f->n_info, s->f->num_params))) return -1;
    bf_divergence_init(&t->div, s->step, "a lower --lr, a --bound, or more --warmup");
    const bf_flow_config *c = &s->f->cfg;
    if (bf_train_data_load(&t->data, o->data, c->in_channels, c->img_size, c->num_classes, o->eval_every > 0))
        return -1;
    *ds = t->ds = &t->data.train;
    t->test = t->data.test;
    *ts = (bf_train_state){s->f->params, s->ema, s->m, s->v, s->f->num_params, s->step};
    return alloc_trainer(t, t->ds);
}

static void banner(void *ctx, const char *layout) {
    const trainer *t = ctx;
    const bf_train_opts *o = t->o;
    fprintf(stderr, "training %zu parameters on %d images (%s), batch %d, %d steps, %s, "
            "%s matrix products\n", t->s->f->num_params, t->ds->n, o->data, o->batch, o->steps,
            layout, bf_precision_name(bf_precision_effective()));
}

static void teardown(void *ctx) {
    trainer *t = ctx;
    for (int k = 0; k < t->nshards; k++) bf_flow_acts_free(&t->acts[k]);
    free(t->acts);
    bf_shard_grads_free(t->shard_grads, t->nshards);
    free(t->img); free(t->tok); free(t->y); free(t->idx);
    bf_data_order_free(&t->order);
    bf_train_data_free(&t->data);
    free_state(t->s);
}

int bf_train_flow(const bf_train_opts *o) {
    if (bf_train_flow_check_opts(o)) return -1;
    run_state s = {0};
    trainer t = {.o = o, .s = &s};
    bf_train_run R = {{&t, &s.step, o->steps, o->batch, o->log_every, o->eval_every, o->ckpt_every,
                       1, o->quiet, step_fn, log_fn, eval_fn, save_fn, &t.div},
                      &t.plan, o->out_dir, o->resume, &t.log, setup, banner, NULL, teardown};
    return bf_train_locked(&R, o->overwrite, o->threads);
}
