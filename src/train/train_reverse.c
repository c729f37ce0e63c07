/* Training the reverse model G against a frozen forward model F (METHOD Sections 5 to 7):
 * each batch is noised, encoded by F (keeping its trajectory), decoded by G under the
 * hidden-alignment loss; AdamW with warmup + cosine, clipping, EMA, JSON-lines log, atomic
 * checkpoints and resume, as for F. */
#include "core.h"
#include "dist.h"
#include "flow.h"
#include "kernels_cond.h"
#include "optim.h"
#include "perceptual.h"
#include "reverse.h"
#include "train_util.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <omp.h>

void bf_reverse_train_opts_default(bf_reverse_train_opts *o) {
    memset(o, 0, sizeof *o);
    o->data = "fashion-mnist";
    o->out_dir = "runs/reverse";
    o->model.denoise_layers = -1;   /* shape fields 0 / -1: G's default for the flow */
    o->batch = 64;
    o->steps = 5000;
    o->warmup = 200;
    o->lr = 1e-3f;
    o->min_lr = 1e-5f;
    o->weight_decay = 0.0f;
    o->beta1 = 0.9f;
    o->beta2 = 0.95f;
    o->eps = 1e-8f;
    o->grad_clip = 1.0f;
    o->ema_decay = 0.999f;
    o->sigma = -1.0f;
    o->label_drop = 0.1f;
    o->inverse = BF_INVERSE_ALIGN;
    o->norm_control = BF_NORM_SAMPLE;   /* measured best: docs/RESULTS-reverse.md */
    o->adapt_p = 1.0f;
    o->adapt_eps = 0.01f;
    o->align_weight = 1.0f;
    o->cfg_train = 1;
    o->w_max = 4.0f;
    o->features = "models/perceptual-fmnist.safetensors";
    o->ckpt_every = 500;
    o->log_every = 10;
    o->eval_every = 500;
}

typedef struct {
    bf_reverse *r;
    bf_flow *f;
    float *grads, *m, *v, *ema;
    unsigned char *decay;
    long step;
    float sigma;
    bf_features *fn;            /* frozen feature network of the perceptual distance */
    bf_perceptual perc;
} run_state;

static const char *inverse_name(bf_inverse_kind k) {
    return k == BF_INVERSE_NAIVE ? "naive" : k == BF_INVERSE_DISTILL ? "distill" : "align";
}

/* ------------------------------------------------------------------ checkpoints */
static char *opts_json(const bf_reverse_train_opts *o, long step, float sigma) {
    cJSON *j = cJSON_CreateObject();
    char buf[64];
#define PUT(key, ...) (snprintf(buf, sizeof buf, __VA_ARGS__), cJSON_AddStringToObject(j, key, buf))
    PUT("step", "%ld", step);
    cJSON_AddStringToObject(j, "data", o->data);
    PUT("sigma", "%g", (double)sigma);
    PUT("label_drop", "%g", (double)o->label_drop);
    cJSON_AddStringToObject(j, "inverse", inverse_name(o->inverse));
    PUT("norm_control", "%d", o->norm_control);
    PUT("adapt_p", "%g", (double)o->adapt_p);
    PUT("adapt_eps", "%g", (double)o->adapt_eps);
    PUT("align_weight", "%g", (double)o->align_weight);
    PUT("cfg_train", "%d", o->cfg_train);
    PUT("w_max", "%g", (double)o->w_max);
    PUT("perceptual", "%g", (double)o->perceptual);
    if (o->perceptual > 0) cJSON_AddStringToObject(j, "features", o->features);
    PUT("class_weight", "%g", (double)o->class_weight);
    if (o->init) cJSON_AddStringToObject(j, "init", o->init);   /* informative */
    PUT("seed", "%llu", (unsigned long long)o->seed);
    PUT("batch", "%d", o->batch);
    PUT("steps", "%d", o->steps);
    /* informative (a resumed run may change it): the products of the last steps */
    cJSON_AddStringToObject(j, "precision", bf_precision_name(bf_precision_effective()));
#undef PUT
    char *s = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    return s;
}

static int alloc_moments(run_state *s) {
    return bf_alloc_train_buffers(s->r->num_params, s->r->params, &s->grads, &s->m, &s->v, &s->ema);
}

static int load_state(run_state *s, const bf_reverse_train_opts *o) {
    char path[4096];
    if (bf_path_join(path, sizeof path, o->out_dir, "reverse.safetensors")) return -1;
    if (!(s->r = bf_reverse_load(path, 0))) return -1;
    if (bf_reverse_check_flow(s->r, s->f, o->flow)) return -1;
    if (bf_path_join(path, sizeof path, o->out_dir, "reverse_state.safetensors") || alloc_moments(s))
        return -1;
    bf_train_state ts = {s->r->params, s->ema, s->m, s->v, s->r->num_params, 0};
    if (bf_train_state_load(&ts, path)) return -1;   /* the state file is authoritative */
    s->step = ts.step;
    s->sigma = s->r->sigma;
    return 0;
}

/* --init: G's weights and shape from a trained G of the same F (its EMA weights when a run
 * folder); shape options and the guidance input must agree with it. */
static int init_from(run_state *s, const bf_reverse_train_opts *o) {
    const bf_reverse_config *m = &o->model;
    if (m->channels > 0 || m->head_dim > 0 || m->layers_per_stage > 0 || m->denoise_layers >= 0 || m->w_freq > 0) {
        bf_set_error("--init takes G's shape from %s: drop the shape options", o->init);
        return -1;
    }
    if (!(s->r = bf_reverse_load(o->init, 1)) || bf_reverse_check_flow(s->r, s->f, o->flow)) return -1;
    if (s->r->cfg.guidance_embed != o->cfg_train || s->r->cfg.distill != (o->inverse == BF_INVERSE_DISTILL)) {
        bf_set_error("%s was trained with guidance %s and inverse %s: train on with the same",
                     o->init, s->r->cfg.guidance_embed ? "on" : "off", s->r->cfg.distill ? "distill" : "align/naive");
        return -1;
    }
    return 0;
}

/* A G of the configured shape with fresh weights (seeded). */
static int fresh_model(run_state *s, const bf_reverse_train_opts *o) {
    bf_reverse_config c;
    bf_reverse_config_for_flow(&c, &s->f->cfg);
    if (o->model.channels > 0) c.channels = o->model.channels;
    if (o->model.head_dim > 0) c.head_dim = o->model.head_dim;
    if (o->model.layers_per_stage > 0) c.layers_per_stage = o->model.layers_per_stage;
    if (o->model.denoise_layers >= 0) c.denoise_layers = o->model.denoise_layers;
    if (o->model.w_freq > 0) c.w_freq = o->model.w_freq;
    c.guidance_embed = o->cfg_train;
    c.distill = o->inverse == BF_INVERSE_DISTILL;
    if (!(s->r = bf_reverse_new(&c))) return -1;
    bf_reverse_init(s->r, o->seed);
    return 0;
}

/* A new run: fresh weights, or a trained G's with --init; step 0, fresh optimiser state. */
static int new_state(run_state *s, const bf_reverse_train_opts *o) {
    if (o->init ? init_from(s, o) : fresh_model(s, o)) return -1;
    s->sigma = o->sigma >= 0 ? o->sigma : s->f->trained_sigma;
    if (bf_reverse_set_flow(s->r, o->flow, s->sigma)) return -1;
    s->step = 0;
    return alloc_moments(s);
}

static const char *const INVERSE_NAMES[] = {"align", "naive", "distill", NULL};   /* by kind */
static const char *const NORM_NAMES[] = {"off", "sample", "token", NULL};        /* BF_NORM_* */
static const char *const ONOFF_NAMES[] = {"off", "on", NULL};
_Static_assert(sizeof(bf_inverse_kind) == sizeof(int), "bf_inverse_kind is read as an int");

int bf_train_reverse_run_opts(bf_reverse_train_opts *o, bf_run_opt *out) {
    const bf_run_opt t[] = {
        {"seed", "--seed", BF_RUN_U64, &o->seed, NULL, 1},
        {"label_drop", "--label-drop", BF_RUN_FLOAT, &o->label_drop, NULL, 1},
        {"batch", "--batch", BF_RUN_INT, &o->batch, NULL, 1},
        {"inverse", "--inverse", BF_RUN_NAME, &o->inverse, INVERSE_NAMES, 1},
        {"norm_control", "--norm-control", BF_RUN_NAME, &o->norm_control, NORM_NAMES, 1},
        {"adapt_p", "--adaptive-p", BF_RUN_FLOAT, &o->adapt_p, NULL, 1},
        {"adapt_eps", "--adaptive-eps", BF_RUN_FLOAT, &o->adapt_eps, NULL, 1},
        {"align_weight", "--align-weight", BF_RUN_FLOAT, &o->align_weight, NULL, 1},
        {"cfg_train", "--cfg-train", BF_RUN_NAME, &o->cfg_train, ONOFF_NAMES, 1},
        {"w_max", "--w-max", BF_RUN_FLOAT, &o->w_max, NULL, 1},
        {"perceptual", "--perceptual", BF_RUN_FLOAT, &o->perceptual, NULL, 1},
        {"features", "--features", BF_RUN_STR, &o->features, NULL, 1},   /* recorded with perceptual > 0 */
        {"class_weight", "--class-weight", BF_RUN_FLOAT, &o->class_weight, NULL, 1},
        {"sigma", "--sigma", BF_RUN_FLOAT, &o->sigma, NULL, 1},          /* the last: see check_resume */
    };
    memcpy(out, t, sizeof t);
    return (int)(sizeof t / sizeof t[0]);
}

/* A resumed run: the options that define it as recorded, and more steps than it has. */
static int check_resume(const bf_reverse_train_opts *o, long step) {
    bf_reverse_train_opts copy = *o;
    bf_run_opt r[BF_RUN_OPTS_MAX];
    int n = bf_train_reverse_run_opts(&copy, r);
    if (o->sigma < 0) n--;   /* sigma < 0: F's, whatever the run recorded */
    return bf_check_resume(r, n, o->out_dir, "reverse.safetensors", o->steps, step);
}

static void free_state(run_state *s) {
    bf_reverse_free(s->r);
    bf_flow_free(s->f);
    free(s->grads); free(s->m); free(s->v); free(s->ema); free(s->decay);
    bf_features_free(s->fn);
    memset(s, 0, sizeof *s);
}

/* ------------------------------------------------------------------ the step */
typedef struct {
    const bf_reverse_train_opts *o;
    const bf_dataset *ds, *test;
    run_state *s;
    int nshards;                 /* this process's shards of the plan */
    bf_shard_plan plan;
    bf_flow_acts *fa;            /* per shard: F's pass and trajectory */
    bf_reverse_acts *ga, *ua;    /* per shard: G conditional (trained), unconditional */
    float **shard_grads;
    bf_reverse_loss_parts *parts;
    bf_feat_acts *pa, *pt;       /* per shard: feature activations of G's output, the target */
    float **pimg, **pdimg, **pdq;   /* per shard: output image, its gradient, in tokens */
    float *clean, *noisy, *tok_clean, *tok_noisy, *w;
    int *y, *idx;
    bf_data_order order;
    bf_divergence div;
    bf_train_data data;
    FILE *log;
} trainer;

/* Clean and noised images, labels with label drop, and a guidance scale per labelled example:
 * 1 + w log-uniform on [1, 1 + w_max] (METHOD Section 7). */
static void make_batch(trainer *t, bf_rng *rng) {
    const bf_reverse_train_opts *o = t->o;
    const bf_dataset *ds = t->ds;
    size_t px = (size_t)ds->c * ds->h * ds->w;
    int r0 = bf_shard_row0(&t->plan), r1 = bf_shard_row1(&t->plan);   /* this process's rows */
    for (int b = 0; b < o->batch; b++) {
        int mine = b >= r0 && b < r1;   /* other rows: the same draws, nothing read */
        const uint8_t *p = ds->pixels + (size_t)t->idx[b] * px;
        for (size_t k = 0; k < px; k++) {
            float e = bf_rng_normal(rng);
            if (!mine) continue;
            float x = bf_pixel_to_unit(p[k]);
            t->clean[b * px + k] = x;
            t->noisy[b * px + k] = x + t->s->sigma * e;
        }
        int labelled = ds->num_classes > 0 && bf_rng_uniform(rng) >= o->label_drop;
        float u = bf_rng_uniform(rng);
        if (!mine) continue;
        t->y[b] = labelled ? ds->labels[t->idx[b]] : -1;
        t->w[b] = o->cfg_train && labelled ? powf(1.0f + o->w_max, u) - 1.0f : 0.0f;
    }
}

/* The perceptual distance between G's output (the implied conditional under training-time
 * guidance) and the clean images; its gradient joins the last stage's in ga->dp. */
static double perceptual_term(trainer *t, int sh, int b0, int m) {
    run_state *s = t->s;
    bf_reverse *r = s->r;
    const bf_reverse_config *c = &r->cfg;
    bf_reverse_acts *a = &t->ga[sh];
    size_t N = (size_t)r->T * r->D, nN = (size_t)m * N;
    int last = r->S - 1, guided = t->o->cfg_train;
    float *q = t->pdq[sh], *img = t->pimg[sh], *dimg = t->pdimg[sh];
    const float *w = t->w + b0;
    if (guided) bf_guidance_combine_forward(q, bf_reverse_head(a, r, last), bf_reverse_head(&t->ua[sh], r, last), w, nN, m);
    else memcpy(q, bf_reverse_head(a, r, last), sizeof(float) * nN);
    bf_unpatchify(img, q, m, c->in_channels, c->img_size, c->img_size, c->patch_size);
    memset(dimg, 0, sizeof(float) * nN);
    double raw, ce;
    double loss = bf_perceptual_loss(&s->perc, &t->pa[sh], &t->pt[sh], dimg, img, t->clean + b0 * N,
                                     t->y + b0, m, &raw, &ce);
    t->parts[sh].perc = raw;
    t->parts[sh].cls = ce;
    bf_patchify(q, dimg, m, c->in_channels, c->img_size, c->img_size, c->patch_size);
    float *dp = a->dp + (size_t)last * a->Bn * N;
    if (guided) bf_guidance_combine_backward(dp, NULL, q, w, nN, m);
    else for (size_t i = 0; i < nN; i++) dp[i] += q[i];
    return loss;
}

static double shard_step(trainer *t, int sh, int b0, int m, float *g) {
    run_state *s = t->s;
    bf_reverse *r = s->r;
    const bf_reverse_train_opts *o = t->o;
    size_t N = (size_t)r->T * r->D;
    bf_flow_acts *fa = &t->fa[sh];
    const int *y = t->y + b0;
    bf_flow_forward(s->f, s->f->params, fa, t->tok_noisy + b0 * N, y, m);
    const float *z = fa->xs + (size_t)s->f->cfg.num_blocks * fa->Bn * N;
    const float *w = t->w + b0;
    bf_reverse_forward(r, r->params, &t->ga[sh], z, y, o->cfg_train ? w : NULL, m);
    if (o->cfg_train) bf_reverse_forward(r, r->params, &t->ua[sh], z, NULL, NULL, m);
    bf_reverse_loss_opts lo = {o->inverse, o->norm_control, o->adapt_p, o->adapt_eps, o->align_weight};
    double loss = bf_reverse_loss(r, &t->ga[sh], o->cfg_train ? &t->ua[sh] : NULL, w, fa->xs,
                                  fa->Bn, t->tok_clean + b0 * N, m, &lo, &t->parts[sh]);
    if (o->perceptual > 0) loss += perceptual_term(t, sh, b0, m);
    memset(g, 0, sizeof(float) * r->num_params);
    bf_reverse_backward(r, r->params, &t->ga[sh], g);
    return loss;
}

/* One parallel region per step: each thread runs F and G on its shard of the batch; the
 * shards' figures and gradients are summed in shard order (over the processes of the job when
 * the plan spreads them over several). */
#define SHARD_FIGURES 5   /* loss x rows, then the alignment, reconstruction, perceptual and class terms */
static double sharded_step(trainer *t, bf_reverse_loss_parts *parts) {
    run_state *s = t->s;
    const bf_shard_plan *p = &t->plan;
    int n = p->n, L = p->s1 - p->s0;
    double *sv = bf_calloc((size_t)p->S * SHARD_FIGURES, sizeof(double));
#pragma omp parallel for num_threads(L) schedule(static, 1)
    for (int k = 0; k < L; k++) {
        int sh = p->s0 + k, b0 = bf_shard_begin(n, p->S, sh), m = bf_shard_begin(n, p->S, sh + 1) - b0;
        double *v = sv + (size_t)SHARD_FIGURES * sh;
        v[0] = shard_step(t, k, b0, m, k == 0 ? s->grads : t->shard_grads[k]) * m;
        v[1] = t->parts[k].align;
        v[2] = t->parts[k].rec;
        v[3] = t->parts[k].perc;
        v[4] = t->parts[k].cls;
    }
    bf_shard_values_gather(sv, SHARD_FIGURES, p);
    double loss_sum = 0.0;
    memset(parts, 0, sizeof *parts);
    for (int sh = 0; sh < p->S; sh++) {
        const double *v = sv + (size_t)SHARD_FIGURES * sh;
        float k = (float)(bf_shard_begin(n, p->S, sh + 1) - bf_shard_begin(n, p->S, sh)) / n;
        loss_sum += v[0];
        parts->align += k * v[1];
        parts->rec += k * v[2];
        parts->perc += k * v[3];
        parts->cls += k * v[4];
    }
    free(sv);
    bf_shard_grads_reduce(s->grads, t->shard_grads, p, s->r->num_params, 1);
    return loss_sum / n;
}

/* metrics: loss, gradient norm, then the unweighted alignment, reconstruction, perceptual and
 * class terms */
static int step_fn(void *ctx, double *metrics) {
    trainer *t = ctx;
    const bf_reverse_train_opts *o = t->o;
    run_state *s = t->s;
    const bf_reverse_config *c = &s->r->cfg;
    bf_data_order_batch(&t->order, t->idx, s->step, o->batch);
    bf_rng rng;
    bf_step_rng(&rng, o->seed, s->step, 3);
    make_batch(t, &rng);
    int r0 = bf_shard_row0(&t->plan), r1 = bf_shard_row1(&t->plan);
    size_t px = (size_t)c->in_channels * c->img_size * c->img_size;
    bf_patchify(t->tok_clean + r0 * px, t->clean + r0 * px, r1 - r0, c->in_channels, c->img_size,
                c->img_size, c->patch_size);
    bf_patchify(t->tok_noisy + r0 * px, t->noisy + r0 * px, r1 - r0, c->in_channels, c->img_size,
                c->img_size, c->patch_size);
    bf_reverse_loss_parts p;
    double loss = sharded_step(t, &p);
    /* adaptive weighting bounds the loss (D / (D + eps) < 1 per term): the raw distances are
     * what grows when G diverges */
    double raw = isfinite(loss) ? p.align + p.rec + p.perc + p.cls : loss;
    bf_optim_bufs b = {s->r->params, s->grads, s->m, s->v, s->ema, s->decay, s->r->num_params};
    bf_optim_opts oo = BF_OPTIM_OPTS(o, o->steps, o->ema_decay);
    metrics[2] = p.align; metrics[3] = p.rec; metrics[4] = p.perc; metrics[5] = p.cls;
    return bf_optim_step(&b, &oo, &s->step, loss, raw, &t->div, metrics);
}

/* ------------------------------------------------------------------ the loop's hooks */
static void log_fn(void *ctx, const double *m, double ips, double eta) {
    trainer *t = ctx;
    const bf_reverse_train_opts *o = t->o;
    long step = t->s->step;
    float lr = bf_lr_schedule(step - 1, o->warmup, o->steps, o->lr, o->min_lr);
    fprintf(t->log, "{\"step\":%ld,\"loss\":%.6f,\"align\":%.6f,\"rec\":%.6f,\"perceptual\":%.6f,"
            "\"class_ce\":%.6f,\"grad_norm\":%.5g,\"lr\":%.4g,\"images_per_s\":%.1f}\n", step, m[0],
            m[2], m[3], m[4], m[5], m[1], lr, ips);
    fflush(t->log);
    if (o->quiet) return;
    char etas[32], perc[80] = "";
    bf_fmt_duration(etas, sizeof etas, eta);
    if (o->perceptual > 0) snprintf(perc, sizeof perc, " | perceptual %.4f", m[4]);
    if (o->class_weight > 0) snprintf(perc + strlen(perc), sizeof perc - strlen(perc), " | class ce %.4f", m[5]);
    fprintf(stderr, "step %6ld/%d | loss %.4f | align %.4f | rec mse %.5f%s | grad %.3g | lr %.2e | "
            "%.0f img/s | ETA %s\n", step, o->steps, m[0], m[2], m[3], perc, m[1], lr, ips, etas);
}

static void eval_fn(void *ctx) {
    trainer *t = ctx;
    run_state *s = t->s;
    if (!t->test) return;
    double mse, psnr;
    float *keep = s->r->params;
    s->r->params = s->ema;
    int rc = bf_reverse_eval_recon(s->r, s->f, t->test, 1000, 0.0f, 1234, &mse, &psnr);
    s->r->params = keep;
    if (rc || !t->log) return;   /* rank 0 logs */
    fprintf(t->log, "{\"step\":%ld,\"eval_mse\":%.6g,\"eval_psnr\":%.4f,\"eval_images\":1000}\n",
            s->step, mse, psnr);
    fflush(t->log);
    if (!t->o->quiet)
        fprintf(stderr, "step %6ld | G(F(x)) vs x on 1000 test images (EMA): mse %.5f, PSNR %.2f dB\n",
                s->step, mse, psnr);
}

/* The checkpoint: the weights, their EMA, then the resume state. */
static int save_fn(void *ctx) {
    const trainer *t = ctx;
    const run_state *s = t->s;
    const bf_reverse_train_opts *o = t->o;
    char path[4096];
    char *meta = opts_json(o, s->step, s->sigma);
    int rc = bf_path_join(path, sizeof path, o->out_dir, "reverse.safetensors") ||
             bf_reverse_save(s->r, s->r->params, path, meta);
    rc = rc || bf_path_join(path, sizeof path, o->out_dir, "reverse_ema.safetensors") ||
         bf_reverse_save(s->r, s->ema, path, meta);
    if (!rc) {   /* the resume file last: it names a step whose weights are already on disk */
        bf_train_state ts = {s->r->params, s->ema, s->m, s->v, s->r->num_params, s->step};
        char sha[96];
        snprintf(sha, sizeof sha, "{\"flow_sha256\":\"%s\"}", s->r->flow_sha256);
        rc = bf_path_join(path, sizeof path, o->out_dir, "reverse_state.safetensors") ||
             bf_train_state_save(&ts, path, "biflow-reverse-train-state", sha);
    }
    free(meta);
    return rc ? -1 : 0;
}

int bf_train_reverse_check_opts(const bf_reverse_train_opts *o) {
    if (!o->flow) { bf_set_error("a forward model is required (--flow)"); return -1; }
    if (o->class_weight > 0 && !(o->perceptual > 0)) {
        bf_set_error("--class-weight uses the perceptual network's classifier: it needs --perceptual > 0");
        return -1;
    }
    const bf_range r[] = {
        {"--batch", o->batch, 1, BF_MAX_BATCH, 0, 0}, {"--steps", o->steps, 1, INT_MAX, 0, 0},
        BF_OPTIM_RANGES(o), {"--ema", o->ema_decay, 0, 1, 0, 1},
        {"--sigma", o->sigma, -INFINITY, 10, 1, 1}, {"--label-drop", o->label_drop, 0, 1, 0, 0},
        {"--w-max", o->w_max, 0, 1e4, 0, 1}, {"--adaptive-p", o->adapt_p, 0, INFINITY, 0, 1},
        {"--adaptive-eps", o->adapt_eps, 0, INFINITY, 1, 1},
        {"--align-weight", o->align_weight, 0, INFINITY, 0, 1},
        {"--perceptual", o->perceptual, 0, INFINITY, 0, 1},
        {"--class-weight", o->class_weight, 0, INFINITY, 0, 1},
        {"--ckpt-every", o->ckpt_every, 0, INT_MAX, 0, 0}, {"--log-every", o->log_every, 0, INT_MAX, 0, 0},
        {"--eval-every", o->eval_every, 0, INT_MAX, 0, 0}, {"--threads", o->threads, 0, 4096, 0, 0},
    };
    return bf_check_ranges(r, (int)(sizeof r / sizeof r[0]));
}

/* Batch buffers (checked: the batch is the user's), data order, per-shard sets. */
static int alloc_batch(trainer *t, const bf_dataset *ds) {
    const bf_reverse_train_opts *o = t->o;
    size_t px = (size_t)ds->c * ds->h * ds->w, B = (size_t)o->batch, bytes = BF_SIZE_PROD(sizeof(float), px, B);
    const char *what = "a batch of images";
    t->y = bf_malloc(sizeof(int) * B);   /* B <= BF_MAX_BATCH */
    t->idx = bf_malloc(sizeof(int) * B);
    t->w = bf_calloc(B, sizeof(float));
    bf_data_order_init(&t->order, ds->n, o->seed, BF_ORDER_SALT_FLOW);
    return !(t->clean = bf_try_malloc(bytes, what)) || !(t->noisy = bf_try_malloc(bytes, what)) ||
           !(t->tok_clean = bf_try_malloc(bytes, what)) || !(t->tok_noisy = bf_try_malloc(bytes, what)) ? -1 : 0;
}

static int alloc_shard(trainer *t, int k, int Bn) {
    const bf_reverse_train_opts *o = t->o;
    run_state *s = t->s;
    if (bf_flow_acts_try_init(&t->fa[k], s->f, Bn) || bf_reverse_acts_try_init(&t->ga[k], s->r, Bn, 1) ||
        (o->cfg_train && bf_reverse_acts_try_init(&t->ua[k], s->r, Bn, 0)))
        return -1;
    if (s->fn) {
        size_t nN = BF_SIZE_PROD((size_t)Bn, (size_t)s->r->T, (size_t)s->r->D, sizeof(float));
        const char *what = "the perceptual term's images";
        if (bf_feat_acts_try_init(&t->pa[k], s->fn, Bn) || bf_feat_acts_try_init(&t->pt[k], s->fn, Bn) ||
            !(t->pimg[k] = bf_try_malloc(nN, what)) || !(t->pdimg[k] = bf_try_malloc(nN, what)) ||
            !(t->pdq[k] = bf_try_malloc(nN, what)))
            return -1;
    }
    return 0;
}

static int alloc_trainer(trainer *t, const bf_dataset *ds) {
    const bf_reverse_train_opts *o = t->o;
    t->nshards = t->plan.s1 - t->plan.s0;
    int Bn = (o->batch + t->plan.S - 1) / t->plan.S;
    size_t k = (size_t)t->nshards;
    t->fa = bf_calloc(k, sizeof *t->fa);
    t->ga = bf_calloc(k, sizeof *t->ga);
    t->ua = bf_calloc(k, sizeof *t->ua);
    t->parts = bf_calloc(k, sizeof *t->parts);
    t->pa = bf_calloc(k, sizeof *t->pa);
    t->pt = bf_calloc(k, sizeof *t->pt);
    t->pimg = bf_calloc(k, sizeof *t->pimg);
    t->pdimg = bf_calloc(k, sizeof *t->pdimg);
    t->pdq = bf_calloc(k, sizeof *t->pdq);
    if (bf_shard_grads_alloc(&t->shard_grads, t->nshards, t->s->r->num_params) || alloc_batch(t, ds))
        return -1;
    for (int i = 0; i < t->nshards; i++)
        if (alloc_shard(t, i, Bn)) return -1;
    return 0;
}

static void teardown(void *ctx) {
    trainer *t = ctx;
    for (int k = 0; k < t->nshards; k++) {
        bf_flow_acts_free(&t->fa[k]);
        bf_reverse_acts_free(&t->ga[k]);
        bf_reverse_acts_free(&t->ua[k]);
        if (t->s->fn) {
            bf_feat_acts_free(&t->pa[k]);
            bf_feat_acts_free(&t->pt[k]);
            free(t->pimg[k]); free(t->pdimg[k]); free(t->pdq[k]);
        }
    }
    bf_shard_grads_free(t->shard_grads, t->nshards);
    free(t->fa); free(t->ga); free(t->ua); free(t->parts);
    free(t->pa); free(t->pt); free(t->pimg); free(t->pdimg); free(t->pdq);
    free(t->clean); free(t->noisy); free(t->tok_clean); free(t->tok_noisy); free(t->w);
    free(t->y); free(t->idx);
    bf_data_order_free(&t->order);
    bf_train_data_free(&t->data);
    free_state(t->s);
}

/* The perceptual network of the perceptual and class terms: a separate network (never the
 * evaluation network, METHOD Section 6) that takes G's images. */
static int load_perceptual(run_state *s, const bf_reverse_train_opts *o) {
    if (!(s->fn = bf_features_load(o->features))) return -1;
    const bf_features_config *fc = bf_features_get_config(s->fn);
    const bf_reverse_config *c = &s->r->cfg;
    if (fc->arch != BF_FEAT_ARCH_PERCEPTUAL) {
        bf_set_error("%s is an evaluation network (arch fd): G's perceptual loss needs a "
                     "separate perceptual network (biflow train-features --arch perceptual), "
                     "since a loss on the yardstick's own features flatters the yardstick",
                     o->features);
        return -1;
    }
    if (fc->in_channels != c->in_channels || fc->height != c->img_size || fc->width != c->img_size) {
        bf_set_error("the feature network %s takes %dx%dx%d images, G makes %dx%dx%d", o->features,
                     fc->in_channels, fc->height, fc->width, c->in_channels, c->img_size, c->img_size);
        return -1;
    }
    bf_perceptual_init(&s->perc, s->fn, o->perceptual, o->adapt_p, o->adapt_eps);
    s->perc.class_weight = o->class_weight;
    return 0;
}

static void banner(void *ctx, const char *layout) {
    const trainer *t = ctx;
    const run_state *s = t->s;
    const bf_reverse_train_opts *o = t->o;
    const char *norm = o->norm_control == BF_NORM_TOKEN ? "token" : o->norm_control ? "sample" : "off";
    fprintf(stderr, "training G (%zu parameters; F has %zu) against %s: inverse %s, %s denoising, "
            "norm control %s, guidance %s, sigma %g; batch %d, %d steps, %s, %s matrix "
            "products\n", s->r->num_params, s->f->num_params, s->r->flow_path,
            inverse_name(o->inverse), s->r->cfg.denoise_layers ? "learned" : "no", norm,
            o->cfg_train ? "trained (1 NFE)" : "at inference (2 NFE)", (double)s->sigma, o->batch,
            o->steps, layout, bf_precision_name(bf_precision_effective()));
}

/* F, G, the perceptual network, data and buffers (each process its own). */
static int setup(void *ctx, bf_train_loop *loop, bf_train_state *ts, const bf_dataset **ds) {
    trainer *t = ctx;
    run_state *s = t->s;
    const bf_reverse_train_opts *o = t->o;
    if (!(s->f = bf_flow_load(o->flow, 1))) return -1;
    if (o->resume ? load_state(s, o) || check_resume(o, s->step) : new_state(s, o)) return -1;
    if (!(s->decay = bf_decay_mask(s->r->info, s->r->n_info, s->r->num_params))) return -1;
    bf_divergence_init(&t->div, s->step, "a lower --lr or more --warmup");
    t->div.quantity = "the unweighted loss (alignment, reconstruction, perceptual and class terms)";
    if (o->perceptual > 0 && load_perceptual(s, o)) return -1;
    const bf_reverse_config *c = &s->r->cfg;
    if (bf_train_data_load(&t->data, o->data, c->in_channels, c->img_size, c->num_classes, o->eval_every > 0))
        return -1;
    *ds = t->ds = &t->data.train;
    t->test = t->data.test;
    *ts = (bf_train_state){s->r->params, s->ema, s->m, s->v, s->r->num_params, s->step};
    return alloc_trainer(t, t->ds);
}

/* The step of bf_train_reverse without the run folder: the same setup (no test split), warmup
 * untimed steps, then steps timed. */
int bf_bench_train_reverse(const bf_reverse_train_opts *o, int steps, int warmup,
                           bf_bench_train_reverse_result *res) {
    if (bf_train_reverse_check_opts(o) || steps < 1 || warmup < 0) {
        if (steps < 1 || warmup < 0) bf_set_error("bench: steps must be >= 1 and warmup >= 0");
        return -1;
    }
    bf_reverse_train_opts own = *o;
    own.resume = 0;
    own.eval_every = 0;
    run_state s = {0};
    trainer t = {.o = &own, .s = &s};
    bf_train_loop loop;
    bf_train_state ts;
    const bf_dataset *ds;
    double m[8];
    int rc = bf_shard_plan_make(&t.plan, own.batch, omp_get_max_threads()) || setup(&t, &loop, &ts, &ds) ? -1 : 0;
    for (int i = 0; !rc && i < warmup; i++) rc = step_fn(&t, m);
    double t0 = bf_time();
    for (int i = 0; !rc && i < steps; i++) rc = step_fn(&t, m);
    if (!rc) {
        res->seconds = bf_time() - t0;
        res->shards = t.plan.S;
        res->params = s.r->num_params;
        res->flow_params = s.f->num_params;
        /* F's forward pass, G's (twice with training-time guidance), G's backward (twice a
         * forward); the perceptual network's convolutions are not counted */
        res->flops_per_step = bf_flow_forward_flops(&s.f->cfg, own.batch) +
                              (3 + own.cfg_train) * bf_reverse_forward_flops(&s.r->cfg, own.batch);
        res->loss = m[0];
    }
    teardown(&t);
    return rc;
}

int bf_train_reverse(const bf_reverse_train_opts *o) {
    if (bf_train_reverse_check_opts(o)) return -1;
    run_state s = {0};
    trainer t = {.o = o, .s = &s};
    bf_train_run R = {{&t, &s.step, o->steps, o->batch, o->log_every, o->eval_every, o->ckpt_every,
                       1, o->quiet, step_fn, log_fn, eval_fn, save_fn, &t.div},
                      &t.plan, o->out_dir, o->resume, &t.log, setup, banner, NULL, teardown};
    return bf_train_locked(&R, o->overwrite, o->threads);
}
