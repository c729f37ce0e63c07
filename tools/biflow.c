/* biflow: the command-line tool. Each command is a function with its own option table. */
#include "biflow.h"
#include "cli.h"
#include "cmd_reverse.h"
#include "cmd_eval.h"
#include "cmd_demo.h"
#include "cmd_edit.h"
#include "cmd_plot.h"
#include "tool_util.h"
#include "commands.h"
#include "../src/core.h"
#include "../src/dist.h"
#include "../src/flow.h"
#include "../src/gemm.h"
#include "../src/train_util.h"

#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <string.h>
#include <unistd.h>

#define POS_MAX 4

static int fail(void) { return cli_fail(); }

/* Model-shape options shared by commands that build a new flow. */
typedef struct { const char *config; int width, blocks, layers, patch, head_dim; float bound; } shape_opts;

static int resolve_shape(bf_flow_config *c, const shape_opts *s) {
    if (bf_flow_config_named(c, s->config)) return -1;
    if (s->width > 0) c->channels = s->width;
    if (s->blocks > 0) c->num_blocks = s->blocks;
    if (s->layers > 0) c->layers_per_block = s->layers;
    if (s->patch > 0) c->patch_size = s->patch;
    if (s->head_dim > 0) c->head_dim = s->head_dim;
    if (s->bound >= 0) c->bound = s->bound;
    return bf_flow_config_check(c);
}

static int parse_noise(const char *s, bf_noise *n) {
    if (!strcmp(s, "gauss")) *n = BF_NOISE_GAUSS;
    else if (!strcmp(s, "uniform")) *n = BF_NOISE_UNIFORM;
    else { bf_set_error("--noise must be 'gauss' or 'uniform', not '%s'", s); return -1; }
    return 0;
}

/* ------------------------------------------------------------------ train-flow */
/* --resume: the options that define the run are its checkpoint's. One given on the command
 * line that differs is refused; one not given (and --steps) takes the recorded value. Returns
 * 0, or -1 with a message (a usage error). A missing or unreadable checkpoint is left to the
 * trainer to report. */
static int adopt_flow_run(bf_train_opts *o, const shape_opts *sh) {
    char path[4096], cfg_names[6][128];
    bf_run_opt r[BF_RUN_OPTS_MAX + 1];
    int n = bf_train_flow_run_opts(o, r);
    for (int i = 0; i < n; i++) r[i].given = cli_given(r[i].option + 2);
    if (!cli_given("steps")) r[n++] = (bf_run_opt){"steps", "--steps", BF_RUN_INT, &o->steps, NULL, 0};
    long step;
    if (bf_path_join(path, sizeof path, o->out_dir, "train_state.safetensors")) return -1;
    int rc = bf_run_opts_reconcile(r, n, path, &step);
    if (rc) return rc == -2 ? 0 : -1;
    if (o->steps < step) {
        bf_set_error("--steps %d is below the step %ld the run in %s has reached: a resumed run "
                     "can only be extended", o->steps, step, o->out_dir);
        return -1;
    }
    bf_flow_config *c = &o->model;   /* the model's shape, recorded in flow.safetensors */
    bf_run_opt m[] = {
        {"channels", "--width", BF_RUN_INT, &c->channels, NULL, 0},
        {"num_blocks", "--blocks", BF_RUN_INT, &c->num_blocks, NULL, 0},
        {"layers_per_block", "--layers", BF_RUN_INT, &c->layers_per_block, NULL, 0},
        {"patch_size", "--patch", BF_RUN_INT, &c->patch_size, NULL, 0},
        {"head_dim", "--head-dim", BF_RUN_INT, &c->head_dim, NULL, 0},
        {"bound", "--bound", BF_RUN_FLOAT, &c->bound, NULL, 0},
    };
    for (int i = 0; i < 6; i++) {
        int own = cli_given(m[i].option + 2);
        m[i].given = own || cli_given("config");
        if (own) continue;
        snprintf(cfg_names[i], sizeof cfg_names[i], "--config %s (its %s)", sh->config, m[i].option);
        m[i].option = cfg_names[i];
    }
    if (bf_path_join(path, sizeof path, o->out_dir, "flow.safetensors")) return -1;
    return bf_run_opts_reconcile(m, 6, path, NULL) == -1 ? -1 : 0;
}

static int cmd_train_flow(int argc, char **argv) {
    bf_train_opts o;
    bf_train_opts_default(&o);
    shape_opts sh = {"fmnist-small", 0, 0, 0, 0, 0, -1.0f};
    const char *noise = "uniform";
    int final_eval = 10000;
    cli_opt opts[] = {
        {"config", OPT_STR, &sh.config, "named model configuration"},
        {"width", OPT_INT, &sh.width, "Transformer width W (0 = from config)"},
        {"blocks", OPT_INT, &sh.blocks, "flow blocks B (0 = from config)"},
        {"layers", OPT_INT, &sh.layers, "layers per block L (0 = from config)"},
        {"patch", OPT_INT, &sh.patch, "patch size P (0 = from config)"},
        {"head-dim", OPT_INT, &sh.head_dim, "attention head size (0 = from config)"},
        {"bound", OPT_FLOAT, &sh.bound, "bound c on alpha, mu: c*tanh(v/c); 0 = off, <0 = from config"},
        {"data", OPT_STR, &o.data, "dataset: fashion-mnist, idx:DIR, cifar10:DIR, folder:DIR"},
        {"out", OPT_STR, &o.out_dir, "run folder (checkpoints, log.jsonl)"},
        CLI_OPTIM_OPTS(o),
        {"noise", OPT_STR, &noise, "training noise: uniform (dequantisation, for bits/dim) or gauss"},
        {"sigma", OPT_FLOAT, &o.sigma, "Gaussian noise std with --noise gauss"},
        {"label-drop", OPT_FLOAT, &o.label_drop, "probability of an unconditional label"},
        {"seed", OPT_U64, &o.seed, "random seed (weights, data order, noise)"},
        {"ckpt-every", OPT_INT, &o.ckpt_every, "checkpoint every N steps (and at the end)"},
        {"log-every", OPT_INT, &o.log_every, "progress line and log record every N steps"},
        {"eval-every", OPT_INT, &o.eval_every, "test bits/dim on 2000 images every N steps (0 = off)"},
        {"final-eval", OPT_INT, &final_eval, "test images for the final bits/dim (0 = skip)"},
        {"resume", OPT_FLAG, &o.resume, "continue the run in --out from its last checkpoint, with its recorded options (--steps may extend it)"},
        {"overwrite", OPT_FLAG, &o.overwrite, "where --out holds a run: delete it and start a new one"},
        {"threads", OPT_INT, &o.threads, "threads (0 = all cores)"},
        CLI_PRECISION_OPT,
        {"quiet", OPT_FLAG, &o.quiet, "no progress lines"},
        {NULL, 0, NULL, NULL},
    };
    const char *pos[POS_MAX];
    int np, rc = cli_parse(argc, argv, 2, opts, "biflow train-flow [options]",
                           "Trains the forward model F (a TARFlow) by maximum likelihood.\n"
                           "Named configurations: fmnist-tiny, fmnist-small, fmnist-base, cifar-small.",
                           pos, 0, &np);
    if (rc) return rc > 0 ? 0 : 2;
    if (parse_noise(noise, &o.noise) || resolve_shape(&o.model, &sh) ||
        (o.resume && adopt_flow_run(&o, &sh)) || bf_train_flow_check_opts(&o))
        return cli_usage_fail("train-flow");
    int trc = bf_train_flow(&o);
    if (trc < 0) return fail();
    if (trc > 0 || final_eval <= 0) return 0;   /* interrupted: no final evaluation */
    bf_flow *f = bf_flow_load(o.out_dir, 1);   /* under mpirun: split over the processes */
    bf_dataset ds = {0};
    double bpd;
    if (bf_dist_check(!f || bf_dataset_load(&ds, o.data, "test")) ||
        bf_eval_bpd(f, &ds, 256, final_eval, 1234, &bpd, !o.quiet && bf_dist_is_root()))
        return fail();
    if (bf_dist_is_root())
        printf("test bits/dim (EMA weights, %d images, uniform dequantisation): %.4f\n",
               final_eval < ds.n ? final_eval : ds.n, bpd);
    bf_dataset_free(&ds);
    bf_flow_free(f);
    return 0;
}

/* ------------------------------------------------------------------ eval-bpd */
static int cmd_eval_bpd(int argc, char **argv) {
    const char *flow = NULL, *data = "fashion-mnist", *split = "test";
    int raw = 0, limit = 0, batch = 256, threads = 0;
    uint64_t seed = 1234;
    cli_opt opts[] = {
        {"flow", OPT_STR, &flow, "forward model: a .safetensors file or a run folder"},
        {"raw", OPT_FLAG, &raw, "use the raw weights of a run folder instead of the EMA"},
        {"data", OPT_STR, &data, "dataset spec"},
        {"split", OPT_STR, &split, "train or test"},
        {"limit", OPT_INT, &limit, "evaluate the first N images only (0 = all)"},
        {"batch", OPT_INT, &batch, "images per pass"},
        {"seed", OPT_U64, &seed, "dequantisation noise seed"},
        {"threads", OPT_INT, &threads, "threads (0 = all cores)"},
        CLI_PRECISION_OPT,
        {NULL, 0, NULL, NULL},
    };
    const char *pos[POS_MAX];
    int np, rc = cli_parse(argc, argv, 2, opts, "biflow eval-bpd --flow MODEL [options]",
                           "Bits per dimension of F with uniform dequantisation: "
                           "(NLL + ln 128) / ln 2.", pos, 1, &np);
    if (rc) return rc > 0 ? 0 : 2;
    if (np == 1 && !flow) flow = pos[0];
    if (!flow) { fprintf(stderr, "biflow eval-bpd: --flow is required (see --help)\n"); return 2; }
    if (threads > 0) omp_set_num_threads(threads);
    bf_flow *f = bf_flow_load(flow, !raw);   /* under mpirun: split over the processes */
    bf_dataset ds = {0};
    double bpd, t0 = bf_time();
    if (bf_dist_check(!f || bf_dataset_load(&ds, data, split)) ||
        bf_eval_bpd(f, &ds, batch, limit, seed, &bpd, bf_dist_is_root()))
        return fail();
    int n = limit > 0 && limit < ds.n ? limit : ds.n;
    if (bf_dist_is_root())
        printf("%s split, %d images, %s weights: %.4f bits/dim (%.1f s)\n", split, n,
           raw ? "raw" : "EMA", bpd, bf_time() - t0);
    bf_dataset_free(&ds);
    bf_flow_free(f);
    return 0;
}

/* ------------------------------------------------------------------ bench */
/* Rate of C += A @ B^T through OpenBLAS (native = 0), biflow's own fp32 kernel (native = 1) or
 * its bf16 kernel (native = 2). */
static double sgemm_gflops(int M, int N, int K, double seconds, int native) {
    float *A = bf_malloc(sizeof(float) * M * K), *B = bf_malloc(sizeof(float) * K * N);
    float *C = bf_malloc(sizeof(float) * M * N);
    for (long i = 0; i < (long)M * K; i++) A[i] = (float)(i % 13) * 0.01f;
    for (long i = 0; i < (long)K * N; i++) B[i] = (float)(i % 7) * 0.01f;
    memset(C, 0, sizeof(float) * M * N);
    void (*gemm)(int, int, int, int, int, const float *, int, const float *, int, float *, int) =
        native == 2 ? bf_gemm_bf16 : native ? bf_gemm_f32 : bf_gemm_blas;
    gemm(0, 1, M, N, K, A, K, B, K, C, N);
    long it = 0;
    double t0 = bf_time(), t;
    do {
        gemm(0, 1, M, N, K, A, K, B, K, C, N);
        it++;
    } while ((t = bf_time() - t0) < seconds);
    free(A); free(B); free(C);
    return 2.0 * M * N * K * it / t / 1e9;
}

/* `steps` timed steps after `warm` untimed ones of the sharded training step planned by p (over
 * the job's processes under mpirun), with the optimiser's memory traffic; red[0]: the time of
 * those steps in the gradient reduction, red[1] the shortest of a step, red[2] the time waiting
 * for the other processes to reach it. Returns their seconds. */
static double bench_timed_steps(bf_flow *f, const bf_shard_plan *p, bf_flow_acts *acts, float **sg,
                                float *grads, float *m, float *v, const float *x, const int *y,
                                int warm, int steps, double red[3]) {
    double t0 = 0.0, r0 = 0.0, w0 = 0.0;
    red[1] = INFINITY;
    for (int s = 0; s < warm + steps; s++) {
        if (s == warm) { t0 = bf_time(); r0 = bf_dist_reduce_seconds(); w0 = bf_dist_wait_seconds(); }
        double rs = bf_dist_reduce_seconds();
        bf_flow_step_shards(f, f->params, acts, sg, p, grads, x, y);
        if (s >= warm) red[1] = fmin(red[1], bf_dist_reduce_seconds() - rs);
        for (size_t i = 0; i < f->num_params; i++) {   /* the optimiser's memory traffic */
            m[i] = 0.9f * m[i] + 0.1f * grads[i];
            v[i] = 0.95f * v[i] + 0.05f * grads[i] * grads[i];
            f->params[i] -= 1e-6f * m[i] / (sqrtf(v[i]) + 1e-8f);
        }
    }
    red[0] = bf_dist_reduce_seconds() - r0;
    red[2] = bf_dist_wait_seconds() - w0;
    return bf_time() - t0;
}

/* bench train under mpirun (several processes): the step over the processes and the time in
 * its gradient reduction (the sgemm baselines are left to a one-process run); rank 0 prints. */
static void bench_train_ranks(bf_flow *f, const char *config, const bf_shard_plan *p, bf_flow_acts *acts,
                              float **sg, float *grads, float *m, float *v, const float *x,
                              const int *y, int warm, int steps) {
    double red[3], dt = bench_timed_steps(f, p, acts, sg, grads, m, v, x, y, warm, steps, red);
    if (!bf_dist_is_root()) return;
    int batch = p->n, bf16 = bf_precision_effective() == BF_PRECISION_BF16;
    double ips = steps * (double)batch / dt, gf = bf_flow_train_flops(&f->cfg, batch) * steps / dt / 1e9;
    double mb = 4.0 * (double)f->num_params / 1e6;
    printf("bench train: config %s, %zu parameters, batch %d, %d processes x %d thread%s (%d shards), "
           "%s matrix products\n", config, f->num_params, batch, p->nranks, omp_get_max_threads(),
           omp_get_max_threads() == 1 ? "" : "s", p->S, bf16 ? "bf16" : "fp32");
    printf("  training:   %.1f images/s, %.1f ms/step, %.1f GFLOP/s achieved (%.3f GFLOP/step)\n",
           ips, 1e3 * dt / steps, gf, bf_flow_train_flops(&f->cfg, batch) / 1e9);
    printf("  reduction:  %.2f ms/step (%.1f%% of the step; fastest step %.2f ms): %.2f MB of "
           "gradients summed in shard order along the %d ranks, then broadcast\n", 1e3 * red[0] / steps,
           100.0 * red[0] / dt, 1e3 * red[1], mb, p->nranks);
    printf("  waiting:    %.2f ms/step (%.1f%% of the step) for the slowest rank to reach the reduction\n",
           1e3 * red[2] / steps, 100.0 * red[2] / dt);
    printf("{\"bench\":\"train\",\"config\":\"%s\",\"batch\":%d,\"images_per_s\":%.2f,\"gflops\":%.2f,"
           "\"processes\":%d,\"threads\":%d,\"reduce_ms_per_step\":%.3f,\"reduce_ms_fastest\":%.3f,"
           "\"wait_ms_per_step\":%.3f,\"reduce_mb\":%.3f,\"precision\":\"%s\"}\n", config, batch, ips,
           gf, p->nranks, omp_get_max_threads(), 1e3 * red[0] / steps, 1e3 * red[1], 1e3 * red[2] / steps,
           mb, bf16 ? "bf16" : "fp32");
}

/* bench train in one process: the sharded step, the step with every kernel parallel over the
 * batch, and the machine's sgemm rates. */
static void bench_train_one(bf_flow *f, const char *config, const bf_shard_plan *p, bf_flow_acts *acts,
                            float **sg, float *grads, float *m, float *v, const float *x,
                            const int *y, int warm, int steps) {
    const bf_flow_config c = f->cfg;
    size_t n = f->num_params;
    int batch = p->n, shards = p->S;
    /* the baseline: the same step with every kernel parallel over the whole batch */
    double t_ops = 0.0, t0 = 0.0;
    for (int s = 0; s < warm + steps; s++) {
        if (s == warm) t0 = bf_time();
        bf_flow_forward(f, f->params, &acts[0], x, y, batch);
        memset(grads, 0, sizeof(float) * n);
        bf_flow_backward(f, f->params, &acts[0], grads, NULL);
    }
    t_ops = bf_time() - t0;
    double red[3], dt = bench_timed_steps(f, p, acts, sg, grads, m, v, x, y, warm, steps, red);
    double ips = steps * (double)batch / dt;
    double gf = bf_flow_train_flops(&c, batch) * steps / dt / 1e9;
    int W = c.channels, rows = batch * f->T;
    double peak = sgemm_gflops(rows, 4 * W, W, 1.0, 0), big = sgemm_gflops(1024, 1024, 1024, 1.0, 0);
    double own = bf_gemm_native() ? sgemm_gflops(rows, 4 * W, W, 1.0, 1) : peak;
    int bf16 = bf_precision_effective() == BF_PRECISION_BF16;
    double own16 = bf16 ? sgemm_gflops(rows, 4 * W, W, 1.0, 2) : 0.0;
    printf("bench train: config %s, %zu parameters, batch %d, %d threads, %s matrix products\n",
           config, n, batch, omp_get_max_threads(), bf16 ? "bf16" : "fp32");
    printf("  training:   %.1f images/s, %.1f ms/step, %.1f GFLOP/s achieved (%.3f GFLOP/step)\n",
           ips, 1e3 * dt / steps, gf, bf_flow_train_flops(&c, batch) / 1e9);
    printf("  reduction:  %.2f ms/step (%.1f%% of the step; fastest step %.2f ms): the %d shards' "
           "gradients (%.2f MB each) summed in shard order\n", 1e3 * red[0] / steps, 100.0 * red[0] / dt,
           1e3 * red[1], shards, 4.0 * (double)n / 1e6);
    printf("  unsharded:  %.1f images/s with every kernel parallel over the batch instead of %d "
           "batch shards (%.2fx)\n", steps * (double)batch / t_ops, shards, t_ops / dt);
    printf("  baseline:   sgemm %dx%dx%d %.1f GFLOP/s, 1024^3 %.1f GFLOP/s (OpenBLAS, this run)\n",
           rows, 4 * W, W, peak, big);
    printf("  own kernel: bf_gemm %dx%dx%d %.1f GFLOP/s (%s), %.2fx OpenBLAS\n", rows, 4 * W, W,
           own, bf_gemm_native() ? "AVX-512" : "OpenBLAS fallback", own / peak);
    if (bf16)
        printf("  bf16:       bf_gemm_bf16 %dx%dx%d %.1f GFLOP/s (AVX512-BF16, fp32 accumulation), "
               "%.2fx the fp32 kernel\n", rows, 4 * W, W, own16, own16 / own);
    printf("  ratio:      the training step achieves %.0f%% of the model-shaped OpenBLAS sgemm rate\n",
           100.0 * gf / peak);
    printf("{\"bench\":\"train\",\"config\":\"%s\",\"batch\":%d,\"images_per_s\":%.2f,"
           "\"gflops\":%.2f,\"sgemm_gflops\":%.2f,\"sgemm_1024_gflops\":%.2f,\"bf_gemm_gflops\":%.2f,"
           "\"unsharded_images_per_s\":%.2f,\"precision\":\"%s\",\"bf16_gemm_gflops\":%.2f,"
           "\"processes\":1,\"threads\":%d,\"reduce_ms_per_step\":%.3f,\"reduce_ms_fastest\":%.3f}\n",
           config, batch, ips, gf, peak, big, own, steps * (double)batch / t_ops,
           bf16 ? "bf16" : "fp32", own16, omp_get_max_threads(), 1e3 * red[0] / steps, 1e3 * red[1]);
}

static int bench_train(int argc, char **argv) {
    shape_opts sh = {"fmnist-small", 0, 0, 0, 0, 0, -1.0f};
    int batch = 64, steps = 20, warm = 3, threads = 0;
    cli_opt opts[] = {
        {"config", OPT_STR, &sh.config, "named model configuration"},
        {"batch", OPT_INT, &batch, "images per step"},
        {"steps", OPT_INT, &steps, "timed steps"},
        {"warmup", OPT_INT, &warm, "untimed steps first"},
        {"threads", OPT_INT, &threads, "threads (0 = all cores)"},
        CLI_PRECISION_OPT,
        {NULL, 0, NULL, NULL},
    };
    const char *pos[POS_MAX];
    int np, rc = cli_parse(argc, argv, 3, opts, "biflow bench train [options]",
                           "Training-step throughput of F (forward + backward + AdamW) on random "
                           "data, with the machine's sgemm rate measured in the same run.\n"
                           "Under mpirun: the step over the processes (the global batch split "
                           "over them) and the time in its gradient reduction.",
                           pos, 0, &np);
    if (rc) return rc > 0 ? 0 : 2;
    if (threads > 0) omp_set_num_threads(threads);
    bf_flow_config c;
    if (resolve_shape(&c, &sh)) return fail();
    bf_flow *f = bf_flow_new(&c);
    if (!f) return fail();
    bf_flow_init(f, 1);
    size_t n = f->num_params, N = (size_t)f->T * f->D;
    float *grads = bf_calloc(n, sizeof(float)), *m = bf_calloc(n, sizeof(float));
    float *v = bf_calloc(n, sizeof(float)), *x = bf_malloc(sizeof(float) * batch * N);
    int *y = bf_malloc(sizeof(int) * batch);
    bf_rng rng;
    bf_rng_seed(&rng, 3);
    for (size_t i = 0; i < batch * N; i++) x[i] = bf_rng_uniform(&rng) * 2 - 1;
    for (int i = 0; i < batch; i++) y[i] = i % 10 - (i % 7 == 0);
    bf_shard_plan plan;   /* over the job's processes under mpirun */
    if (bf_dist_check(bf_shard_plan_make(&plan, batch, omp_get_max_threads()))) return fail();
    int shards = plan.s1 - plan.s0;
    bf_flow_acts *acts = bf_calloc((size_t)shards, sizeof *acts);
    float **sg = bf_calloc((size_t)shards, sizeof *sg);
    for (int k = 0; k < shards; k++) {
        bf_flow_acts_init(&acts[k], f, k == 0 ? batch : (batch + plan.S - 1) / plan.S);
        if (k) sg[k] = bf_malloc(sizeof(float) * n);
    }
    if (plan.nranks > 1) bench_train_ranks(f, sh.config, &plan, acts, sg, grads, m, v, x, y, warm, steps);
    else bench_train_one(f, sh.config, &plan, acts, sg, grads, m, v, x, y, warm, steps);
    for (int k = 0; k < shards; k++) {
        bf_flow_acts_free(&acts[k]);
        free(sg[k]);
    }
    free(acts); free(sg);
    free(grads); free(m); free(v); free(x); free(y);
    bf_flow_free(f);
    return 0;
}

/* ------------------------------------------------------------------ bench sample */
typedef struct { const char *name; bf_sampler s; int batch; float cfg; int denoise; } sample_case;

static double bench_sample_case(bf_flow *f, const sample_case *k, int n, double min_s) {
    size_t N = (size_t)f->T * f->D, img = (size_t)f->cfg.in_channels * f->cfg.img_size * f->cfg.img_size;
    float *z = bf_malloc(sizeof(float) * n * N), *x = bf_malloc(sizeof(float) * n * img);
    int *y = bf_malloc(sizeof(int) * n);
    bf_rng rng;
    bf_rng_seed(&rng, 5);
    for (size_t i = 0; i < n * N; i++) z[i] = bf_rng_normal(&rng);
    for (int i = 0; i < n; i++) y[i] = f->cfg.num_classes ? i % f->cfg.num_classes : -1;
    bf_sample_opts o;
    bf_sample_opts_default(&o);
    o.sampler = k->s;
    o.batch = k->batch;
    o.cfg = k->cfg;
    o.denoise = k->denoise;
    o.sigma = 0.05f;
    bf_sample_stats st;
    long images = 0, iters = 0;
    double t = 0.0;
    while (t < min_s) {   /* whole calls until the time is long enough to trust */
        bf_flow_sample(f, x, z, y, n, &o, &st);
        t += st.seconds;
        images += n;
        iters += st.jacobi_iters;
    }
    double per = bf_flow_forward_flops(&f->cfg, 1) * (k->cfg != 0 ? 2 : 1);
    double passes = k->s == BF_SAMPLER_JACOBI ? (double)iters / f->cfg.num_blocks / ((double)images / k->batch) : 1.0;
    double flops = images * (per * passes + (k->denoise ? 3 * bf_flow_forward_flops(&f->cfg, 1) : 0));
    printf("  %-26s batch %3d: %8.1f images/s %9.3f ms/image %7.1f GFLOP/s", k->name, k->batch,
           images / t, 1e3 * t / images, flops / t / 1e9);
    if (k->s == BF_SAMPLER_JACOBI) printf("  (%.1f iterations per block)", passes);
    printf("\n");
    printf("{\"bench\":\"sample\",\"case\":\"%s\",\"batch\":%d,\"images_per_s\":%.2f,"
           "\"ms_per_image\":%.4f,\"gflops\":%.2f}\n", k->name, k->batch, images / t, 1e3 * t / images,
           flops / t / 1e9);
    free(z); free(x); free(y);
    return images / t;
}

/* One-pass sampling with G: 1 NFE (w as input) or 2 NFE (inference-time guidance). */
static double bench_biflow_case(bf_reverse *r, const char *name, int batch, float cfg, int two_pass,
                                int n, double min_s) {
    const bf_reverse_config *c = bf_reverse_get_config(r);
    size_t N = (size_t)c->img_size * c->img_size * c->in_channels;
    float *z = bf_malloc(sizeof(float) * n * N), *x = bf_malloc(sizeof(float) * n * N);
    int *y = bf_malloc(sizeof(int) * n);
    bf_rng rng;
    bf_rng_seed(&rng, 5);
    for (size_t i = 0; i < n * N; i++) z[i] = bf_rng_normal(&rng);
    for (int i = 0; i < n; i++) y[i] = c->num_classes ? i % c->num_classes : -1;
    bf_reverse_sample_opts o;
    bf_reverse_sample_opts_default(&o);
    o.cfg = cfg;
    o.cfg_two_pass = two_pass;
    if (!c->denoise_layers) o.output = BF_REVERSE_OUT_NOISY;
    long images = 0;
    double t = 0.0;
    bf_sample_stats st;
    while (t < min_s) {
        for (int s = 0; s < n; s += batch) {   /* calls of `batch` images, as a user makes them */
            bf_reverse_sample(r, x + s * N, z + s * N, y + s, n - s < batch ? n - s : batch, &o, &st);
            t += st.seconds;
            images += n - s < batch ? n - s : batch;
        }
    }
    int nfe = cfg != 0 && (two_pass || !c->guidance_embed) ? 2 : 1;
    double flops = images * nfe * bf_reverse_forward_flops(c, 1);
    printf("  %-26s batch %3d: %8.1f images/s %9.3f ms/image %7.1f GFLOP/s  (%d NFE)\n", name, batch,
           images / t, 1e3 * t / images, flops / t / 1e9, nfe);
    printf("{\"bench\":\"sample\",\"case\":\"%s\",\"batch\":%d,\"images_per_s\":%.2f,"
           "\"ms_per_image\":%.4f,\"gflops\":%.2f,\"nfe\":%d}\n", name, batch, images / t,
           1e3 * t / images, flops / t / 1e9, nfe);
    free(z); free(x); free(y);
    return images / t;
}

static int bench_sample(int argc, char **argv) {
    shape_opts sh = {"fmnist-small", 0, 0, 0, 0, 0, -1.0f};
    const char *flow = NULL, *reverse = NULL;
    int threads = 0, jacobi = 1;
    float seconds = 2.0f, cfg = 2.0f;
    cli_opt opts[] = {
        {"config", OPT_STR, &sh.config, "named configuration (random weights) when no --flow"},
        {"flow", OPT_STR, &flow, "a trained model (Jacobi's iteration count depends on the weights)"},
        {"reverse", OPT_STR, &reverse, "a reverse model G: adds the one-pass sampler (F defaults to G's)"},
        {"cfg", OPT_FLOAT, &cfg, "guidance weight of the guided cases"},
        {"seconds", OPT_FLOAT, &seconds, "minimum timed seconds per case"},
        {"jacobi", OPT_INT, &jacobi, "include the Jacobi sampler (1) or not (0)"},
        {"threads", OPT_INT, &threads, "threads (0 = all cores)"},
        CLI_PRECISION_OPT,
        {NULL, 0, NULL, NULL},
    };
    const char *pos[POS_MAX];
    int np, rc = cli_parse(argc, argv, 3, opts, "biflow bench sample [options]",
                           "Sampling speed of each sampler at batch 1 and 64, with and without guidance.",
                           pos, 0, &np);
    if (rc) return rc > 0 ? 0 : 2;
    if (threads > 0) omp_set_num_threads(threads);
    bf_flow *f;
    bf_reverse *r = NULL;
    if (reverse) {
        if (!(r = bf_reverse_load(reverse, 1))) return fail();
        if (!flow) flow = bf_reverse_flow_path(r);
    }
    if (flow) {
        f = bf_flow_load(flow, 1);
        if (!f) return fail();
    } else {
        bf_flow_config c;
        if (resolve_shape(&c, &sh)) return fail();
        if (c.bound == 0.0f) c.bound = 2.0f;   /* random blocks need a bound to stay finite */
        if (!(f = bf_flow_new(&c))) return fail();
        bf_flow_init(f, 1);
        bf_rng r;
        bf_rng_seed(&r, 2);
        for (int b = 0; b < c.num_blocks; b++)
            for (int i = 0; i < 2 * f->D * f->W; i++) f->params[f->blocks[b].out_w + i] = 0.02f * bf_rng_normal(&r);
    }
    printf("bench sample: %s, %zu parameters, %d threads, %s matrix products\n",
           flow ? flow : sh.config, f->num_params, omp_get_max_threads(),
           bf_precision_name(bf_precision_effective()));
    sample_case cases[] = {
        {"exact", BF_SAMPLER_EXACT, 1, 0, 0}, {"exact", BF_SAMPLER_EXACT, 64, 0, 0},
        {"exact+cfg", BF_SAMPLER_EXACT, 1, cfg, 0}, {"exact+cfg", BF_SAMPLER_EXACT, 64, cfg, 0},
        {"exact+cfg+score-denoise", BF_SAMPLER_EXACT, 1, cfg, 1},
        {"exact+cfg+score-denoise", BF_SAMPLER_EXACT, 64, cfg, 1},
        {"jacobi", BF_SAMPLER_JACOBI, 1, 0, 0}, {"jacobi", BF_SAMPLER_JACOBI, 64, 0, 0},
        {"jacobi+cfg", BF_SAMPLER_JACOBI, 64, cfg, 0},
    };
    double ips[sizeof cases / sizeof cases[0]] = {0};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        if (cases[i].s == BF_SAMPLER_JACOBI && !jacobi) continue;
        ips[i] = bench_sample_case(f, &cases[i], cases[i].batch == 1 ? 8 : 128, seconds);
    }
    if (r) {
        if (bf_reverse_check_flow(r, f, flow)) return fail();
        printf("reverse model G: %s, %zu parameters (F: %zu)\n", reverse, bf_reverse_num_params(r),
               f->num_params);
        double b1 = bench_biflow_case(r, "biflow+cfg", 1, cfg, 0, 8, seconds);
        double b64 = bench_biflow_case(r, "biflow+cfg", 64, cfg, 0, 128, seconds);
        bench_biflow_case(r, "biflow", 64, 0.0f, 0, 128, seconds);
        bench_biflow_case(r, "biflow+cfg two-pass", 64, cfg, 1, 128, seconds);
        printf("speed-up of one-pass G (guided) over exact+cfg+score-denoise: %.1fx at batch 64, "
               "%.1fx at batch 1; over exact+cfg: %.1fx at batch 64\n", b64 / ips[5], b1 / ips[4],
               b64 / ips[3]);
        bf_reverse_free(r);
    }
    bf_flow_free(f);
    return 0;
}

static int cmd_bench(int argc, char **argv) {
    if (argc >= 3 && !strcmp(argv[2], "train")) return bench_train(argc, argv);
    if (argc >= 3 && !strcmp(argv[2], "sample")) return bench_sample(argc, argv);
    printf("usage: biflow bench train|sample [options]\n\n"
           "Benchmarks; each reports achieved GFLOP/s (train: beside a baseline measured in the same run).\n"
           "  train    training-step throughput of the forward model\n"
           "  sample   images/s and ms/image of each sampler at batch 1 and 64\n");
    return argc >= 3 && (!strcmp(argv[2], "--help") || !strcmp(argv[2], "-h")) ? 0 : 2;
}

/* ------------------------------------------------------------------ sample */
/* What cmd_sample needs from either kind of model. */
typedef struct {
    const char *flow, *reverse, *sampler, *classes, *out, *denoise;
    int n, raw, scale, threads, cfg_two_pass;
    uint64_t seed;
    float temperature, sigma;
    bf_sample_opts so;
} sample_args;

static int report_sample(const sample_args *a, const float *x, const int *y, int c, int img,
                         int ncols, const bf_sample_stats *st, const char *what) {
    if (write_outputs(a->out, x, y, a->n, c, img, img, ncols, a->scale)) return fail();
    printf("%d images with the %s sampler%s%s in %.2f s: %.1f images/s, %.2f ms/image\n", a->n,
           a->sampler, a->so.cfg != 0 ? ", guided" : "", what, st->seconds, a->n / st->seconds,
           1e3 * st->seconds / a->n);
    if (st->nonfinite) printf("warning: %ld output values are NaN or Inf\n", st->nonfinite);
    printf("wrote %s.png, %s.npy, %s_labels.npy\n", a->out, a->out, a->out);
    return 0;
}

/* x (n, img) from z (n, N) and y (n, or NULL) by F's sampler (f) or G's. Under mpirun the
 * images are split over the processes in whole units of `unit` images (the sampler's batches,
 * so that each image is made as one process makes it), gathered on rank 0 with the figures of
 * st summed (collective). */
static int sample_split(bf_flow *f, bf_reverse *r, const bf_sample_opts *so, const bf_reverse_sample_opts *ro,
                        float *x, const float *z, const int *y, int n, size_t N, size_t img, int unit,
                        bf_sample_stats *st) {
    int i0, i1, size = bf_dist_size();
    bf_dist_span(n, unit, bf_dist_rank(), &i0, &i1);
    memset(st, 0, sizeof *st);
    double t0 = bf_time();
    const int *ys = y ? y + i0 : NULL;
    int rc = i1 == i0 ? 0 : f ? bf_flow_sample(f, x + i0 * img, z + i0 * N, ys, i1 - i0, so, st)
                              : bf_reverse_sample(r, x + i0 * img, z + i0 * N, ys, i1 - i0, ro, st);
    if (bf_dist_check(rc)) return -1;
    if (size == 1) return 0;
    bf_dist_gather_root(x, n, unit, sizeof(float) * img);
    double *v = bf_calloc((size_t)size * 2, sizeof(double));   /* per rank: iterations, non-finite */
    v[2 * bf_dist_rank()] = (double)st->jacobi_iters;
    v[2 * bf_dist_rank() + 1] = (double)st->nonfinite;
    bf_dist_gather_rows(v, size, 2);
    st->jacobi_iters = st->nonfinite = 0;
    for (int k = 0; k < size; k++) {
        st->jacobi_iters += (long)v[2 * k];
        st->nonfinite += (long)v[2 * k + 1];
    }
    free(v);
    st->seconds = bf_time() - t0;
    return 0;
}

/* z (n, T, D) of the prior scaled by the temperature, and the labels of --class. */
static int sample_inputs(const sample_args *a, float **z, int **y, int *ncols, size_t N, int K) {
    *y = bf_malloc(sizeof(int) * a->n);
    *z = bf_malloc(sizeof(float) * a->n * N);
    if (parse_classes(*y, a->n, a->classes, K, ncols)) return -1;
    bf_rng rng;
    bf_rng_seed(&rng, a->seed);
    for (size_t i = 0; i < a->n * N; i++) (*z)[i] = a->temperature * bf_rng_normal(&rng);
    return 0;
}

static int sample_exact(sample_args *a) {
    bf_sample_opts *so = &a->so;
    bf_flow *f = bf_flow_load(a->flow, !a->raw);
    if (!f) return fail();
    const bf_flow_config *c = &f->cfg;
    if (!strcmp(a->denoise, "auto")) so->denoise = f->trained_gauss;
    else if (!strcmp(a->denoise, "score")) so->denoise = 1;
    else if (!strcmp(a->denoise, "none")) so->denoise = 0;
    else { fprintf(stderr, "biflow sample: --denoise must be score, none or auto for this sampler\n"); return 2; }
    so->sigma = a->sigma >= 0 ? a->sigma : f->trained_sigma;
    if (so->denoise && !(so->sigma > 0)) {
        fprintf(stderr, "biflow sample: score denoising needs --sigma (the model does not record one)\n");
        return 2;
    }
    size_t N = (size_t)f->T * f->D, img = (size_t)c->in_channels * c->img_size * c->img_size;
    int *y, ncols;
    float *z, *x = bf_malloc(sizeof(float) * a->n * img);
    if (sample_inputs(a, &z, &y, &ncols, N, c->num_classes)) return fail();
    bf_sample_stats st;
    if (sample_split(f, NULL, so, NULL, x, z, y, a->n, N, img, so->batch, &st)) return fail();
    if (!bf_dist_is_root()) a->out = NULL;   /* under mpirun: rank 0 writes and reports */
    int rc = !a->out ? 0 : report_sample(a, x, y, c->in_channels, c->img_size, ncols, &st,
                           so->denoise ? ", score-denoised" : "");
    if (rc == 0 && a->out && so->sampler == BF_SAMPLER_JACOBI)
        printf("Jacobi iterations: %ld in all, %.1f per block and batch (%d tokens per block)\n",
               st.jacobi_iters, (double)st.jacobi_iters / (c->num_blocks * ((a->n + so->batch - 1) / so->batch)), f->T);
    free(y); free(z); free(x);
    bf_flow_free(f);
    return rc;
}

static int sample_biflow(sample_args *a) {
    bf_reverse *r = bf_reverse_load(a->reverse, !a->raw);
    if (!r) return fail();
    const bf_reverse_config *c = bf_reverse_get_config(r);
    bf_reverse_sample_opts ro;
    bf_reverse_sample_opts_default(&ro);
    ro.cfg = a->so.cfg;
    ro.cfg_two_pass = a->cfg_two_pass;
    int score = !strcmp(a->denoise, "score");
    if (!strcmp(a->denoise, "auto")) ro.output = c->denoise_layers ? BF_REVERSE_OUT_CLEAN : BF_REVERSE_OUT_NOISY;
    else if (!strcmp(a->denoise, "learned")) ro.output = BF_REVERSE_OUT_CLEAN;
    else if (!strcmp(a->denoise, "none") || score) ro.output = BF_REVERSE_OUT_NOISY;
    else { fprintf(stderr, "biflow sample: --denoise must be learned, score, none or auto\n"); return 2; }
    bf_flow *f = NULL;
    if ((a->flow || score) && !(f = paired_flow(r, a->flow))) return fail();
    if (score) {
        ro.score_flow = f;
        ro.sigma = a->sigma >= 0 ? a->sigma : bf_reverse_sigma(r);
        if (!(ro.sigma > 0)) { fprintf(stderr, "biflow sample: score denoising needs --sigma\n"); return 2; }
    }
    int T = (c->img_size / c->patch_size) * (c->img_size / c->patch_size);
    size_t N = (size_t)T * c->in_channels * c->patch_size * c->patch_size;
    int *y, ncols;
    float *z, *x = bf_malloc(sizeof(float) * a->n * N);
    if (sample_inputs(a, &z, &y, &ncols, N, c->num_classes)) return fail();
    bf_sample_stats st;   /* a unit of 64: G's chunks (32) and score-denoising batches (64) */
    if (sample_split(NULL, r, NULL, &ro, x, z, y, a->n, N, N, 64, &st)) return fail();
    if (!bf_dist_is_root()) a->out = NULL;   /* under mpirun: rank 0 writes and reports */
    int two = ro.cfg != 0 && (!c->guidance_embed || ro.cfg_two_pass);
    char what[96];
    snprintf(what, sizeof what, " (%d NFE)%s", two ? 2 : 1,
             score ? ", score-denoised" : ro.output == BF_REVERSE_OUT_CLEAN ? ", learned denoising" : ", no denoising");
    int rc = !a->out ? 0 : report_sample(a, x, y, c->in_channels, c->img_size, ncols, &st, what);
    free(y); free(z); free(x);
    bf_flow_free(f);
    bf_reverse_free(r);
    return rc;
}

static int cmd_sample(int argc, char **argv) {
    sample_args a = {NULL, NULL, "exact", "all", "samples", "auto", 100, 0, 2, 0, 0, 0, 1.0f, -1.0f, {0}};
    bf_sample_opts_default(&a.so);
    cli_opt opts[] = {
        {"flow", OPT_STR, &a.flow, "forward model: .safetensors file or run folder"},
        {"reverse", OPT_STR, &a.reverse, "reverse model G (for --sampler biflow): file or run folder"},
        {"raw", OPT_FLAG, &a.raw, "raw weights of a run folder instead of the EMA"},
        {"sampler", OPT_STR, &a.sampler, "exact (cached causal decoding of F), jacobi (parallel iteration) or biflow (one pass of G)"},
        {"n", OPT_INT, &a.n, "number of images"},
        {"batch", OPT_INT, &a.so.batch, "images per pass"},
        {"class", OPT_STR, &a.classes, "'all' (classes in turn, a grid row each), 'none', or labels 'K[,K...]'"},
        {"seed", OPT_U64, &a.seed, "noise seed (the same seed gives the same noise to every sampler)"},
        {"temperature", OPT_FLOAT, &a.temperature, "scale of the prior noise"},
        {"cfg", OPT_FLOAT, &a.so.cfg, "classifier-free guidance weight w (0 = off)"},
        {"cfg-anneal", OPT_FLAG, &a.so.cfg_anneal, "exact/jacobi: guidance rises linearly over the tokens"},
        {"cfg-two-pass", OPT_FLAG, &a.cfg_two_pass, "biflow: inference-time guidance (2 NFE) even when G takes w as input"},
        {"denoise", OPT_STR, &a.denoise, "exact/jacobi: score, none; biflow: learned, score, none; auto: the model's own"},
        {"sigma", OPT_FLOAT, &a.sigma, "noise level for score denoising (<0: the model's training sigma)"},
        {"jacobi-tol", OPT_FLOAT, &a.so.jacobi_tol, "Jacobi: stop when the largest change is below this"},
        {"jacobi-max-iter", OPT_INT, &a.so.jacobi_max_iter, "Jacobi: iteration cap per block (0 = tokens)"},
        {"out", OPT_STR, &a.out, "output prefix: PREFIX.png, PREFIX.npy, PREFIX_labels.npy"},
        {"scale", OPT_INT, &a.scale, "grid scale-up factor"},
        {"threads", OPT_INT, &a.threads, "threads (0 = all cores)"},
        CLI_PRECISION_OPT,
        {NULL, 0, NULL, NULL},
    };
    const char *pos[POS_MAX];
    int np, rc = cli_parse(argc, argv, 2, opts, "biflow sample --flow MODEL | --sampler biflow --reverse G [options]",
                           "Samples images: by inverting the forward model F (exact, jacobi) or in one\n"
                           "pass of the learned reverse model G (biflow).", pos, 0, &np);
    if (rc) return rc > 0 ? 0 : 2;
    if (a.n <= 0 || a.n > CLI_MAX_SAMPLES || a.scale <= 0 || a.scale > 32 || !(a.temperature >= 0) ||
        !isfinite(a.temperature) || a.so.batch <= 0) {
        fprintf(stderr, "biflow sample: --n in 1..%d, --batch > 0, --scale in 1..32, "
                "--temperature finite and >= 0\n", CLI_MAX_SAMPLES);
        return 2;
    }
    if (a.threads > 0) omp_set_num_threads(a.threads);
    if (!strcmp(a.sampler, "biflow")) {
        if (!a.reverse) { fprintf(stderr, "biflow sample: --sampler biflow needs --reverse (see --help)\n"); return 2; }
        return sample_biflow(&a);
    }
    if (!strcmp(a.sampler, "exact")) a.so.sampler = BF_SAMPLER_EXACT;
    else if (!strcmp(a.sampler, "jacobi")) a.so.sampler = BF_SAMPLER_JACOBI;
    else { fprintf(stderr, "biflow sample: --sampler must be exact, jacobi or biflow\n"); return 2; }
    if (!a.flow) { fprintf(stderr, "biflow sample: --flow is required (see --help)\n"); return 2; }
    return sample_exact(&a);
}

/* ------------------------------------------------------------------ encode */
static int cmd_encode(int argc, char **argv) {
    const char *flow = NULL, *data = "fashion-mnist", *split = "test", *out = "encoded.safetensors";
    int n = 16, raw = 0, uncond = 0;
    cli_opt opts[] = {
        {"flow", OPT_STR, &flow, "forward model: .safetensors file or run folder"},
        {"raw", OPT_FLAG, &raw, "raw weights of a run folder instead of the EMA"},
        {"data", OPT_STR, &data, "dataset spec"},
        {"split", OPT_STR, &split, "train or test"},
        {"n", OPT_INT, &n, "the first N images of the split"},
        {"uncond", OPT_FLAG, &uncond, "encode with the unconditional label"},
        {"out", OPT_STR, &out, "output: safetensors with x, y, z, logdet"},
        CLI_PRECISION_OPT,
        {NULL, 0, NULL, NULL},
    };
    const char *pos[POS_MAX];
    int np, rc = cli_parse(argc, argv, 2, opts, "biflow encode --flow MODEL [options]",
                           "Encodes images with F: writes x (n,C,H,W), y (n), z (n,T,D) and the\n"
                           "log-determinant per dimension (n), e.g. to compare with PyTorch\n"
                           "(dev/check_roundtrip.py).", pos, 0, &np);
    if (rc) return rc > 0 ? 0 : 2;
    if (!flow) { fprintf(stderr, "biflow encode: --flow is required (see --help)\n"); return 2; }
    bf_flow *f = bf_flow_load(flow, !raw);
    bf_dataset ds = {0};
    if (!f || bf_dataset_load(&ds, data, split)) return fail();
    const bf_flow_config *c = &f->cfg;
    if (ds.c != c->in_channels || ds.h != c->img_size || ds.w != c->img_size) {
        fprintf(stderr, "biflow encode: the data do not have the model's image size\n");
        return 2;
    }
    if (n <= 0 || n > ds.n) n = ds.n;
    size_t img = (size_t)ds.c * ds.h * ds.w, N = (size_t)f->T * f->D;
    float *x = bf_malloc(sizeof(float) * n * img), *z = bf_malloc(sizeof(float) * n * N);
    float *ld = bf_malloc(sizeof(float) * n);
    int *y = bf_malloc(sizeof(int) * n);
    int64_t *y64 = bf_malloc(sizeof(int64_t) * n);
    for (size_t i = 0; i < n * img; i++) x[i] = ds.pixels[i] / 127.5f - 1.0f;
    for (int i = 0; i < n; i++) y64[i] = y[i] = uncond || !c->num_classes ? -1 : ds.labels[i];
    bf_flow_encode(f, z, ld, x, y, n);
    bf_st_writer *w = bf_st_writer_new();
    int64_t sx[4] = {n, c->in_channels, c->img_size, c->img_size}, sz[3] = {n, f->T, f->D}, sn = n;
    bf_st_writer_meta(w, "note", "biflow encode: z = F(x | y), logdet = sum over blocks of -mean(alpha)");
    bf_st_writer_add(w, "x", BF_DT_F32, 4, sx, x);
    bf_st_writer_add(w, "y", BF_DT_I64, 1, &sn, y64);
    bf_st_writer_add(w, "z", BF_DT_F32, 3, sz, z);
    bf_st_writer_add(w, "logdet", BF_DT_F32, 1, &sn, ld);
    rc = bf_st_writer_save(w, out);
    bf_st_writer_free(w);
    if (rc) return fail();
    printf("encoded %d images: mean logdet %.4f per dimension; wrote %s\n", n, ld[0], out);
    free(x); free(z); free(ld); free(y); free(y64);
    bf_dataset_free(&ds);
    bf_flow_free(f);
    return 0;
}

/* ------------------------------------------------------------------ info */
static int info_reverse(const char *path) {
    bf_reverse *r = bf_reverse_load(path, 1);
    if (!r) return fail();
    const bf_reverse_config *c = bf_reverse_get_config(r);
    printf("reverse model G (BiFlow): %dx%dx%d images, patch %d, %d classes\n"
           "  width %d, head size %d, %d alignment stages x %d layers, denoising stage %d layers\n"
           "  guidance input %s, hidden distillation %s\n  %zu parameters\n"
           "  trained against %s (SHA-256 %s), sigma %g\n",
           c->img_size, c->img_size, c->in_channels, c->patch_size, c->num_classes, c->channels,
           c->head_dim, c->num_stages, c->layers_per_stage, c->denoise_layers,
           c->guidance_embed ? "yes (1 NFE)" : "no (2 NFE guidance)", c->distill ? "yes" : "no",
           bf_reverse_num_params(r), bf_reverse_flow_path(r), bf_reverse_flow_sha256(r),
           (double)bf_reverse_sigma(r));
    bf_reverse_free(r);
    return 0;
}

static int cmd_info(int argc, char **argv) {
    cli_opt opts[] = {{NULL, 0, NULL, NULL}};
    const char *pos[POS_MAX];
    int np, rc = cli_parse(argc, argv, 2, opts, "biflow info MODEL.safetensors|RUN_DIR",
                           "Prints a model's configuration and size (forward or reverse model).",
                           pos, 1, &np);
    if (rc) return rc > 0 ? 0 : 2;
    if (np != 1) { fprintf(stderr, "biflow info: give one model file or run folder\n"); return 2; }
    char path[4096];
    bf_safetensors st;
    if (bf_resolve_model_path(path, sizeof path, pos[0], "flow_ema.safetensors", "flow.safetensors", 1))
        return fail();
    if (access(path, R_OK) != 0 &&   /* a reverse model's run folder */
        bf_resolve_model_path(path, sizeof path, pos[0], "reverse_ema.safetensors", "reverse.safetensors", 1))
        return fail();
    if (bf_st_load(&st, path)) return fail();
    const char *fmt = bf_st_meta(&st, "format");
    int is_reverse = fmt && !strcmp(fmt, "biflow-reverse");
    bf_st_free(&st);
    if (is_reverse) return info_reverse(path);
    bf_flow *f = bf_flow_load(path, 1);
    if (!f) return fail();
    const bf_flow_config *c = &f->cfg;
    printf("forward model (TARFlow): %dx%dx%d images, patch %d -> %d tokens of %d\n"
           "  width %d, %d blocks x %d layers, head size %d, %d classes, bound %g\n"
           "  %zu parameters\n", c->img_size, c->img_size, c->in_channels, c->patch_size, f->T,
           f->D, c->channels, c->num_blocks, c->layers_per_block, c->head_dim, c->num_classes,
           (double)c->bound, f->num_params);
    bf_flow_free(f);
    return 0;
}

/* ------------------------------------------------------------------ main */
typedef struct { const char *name; int (*fn)(int, char **); const char *help; } command;

static const command COMMANDS[] = {
    {"demo", cmd_demo, "a one-minute tour with the shipped models: both samplers, inpainting, editing"},
    {"train-flow", cmd_train_flow, "train the forward model F (TARFlow) by maximum likelihood"},
    {"train-reverse", cmd_train_reverse, "train the reverse model G (one-pass inverse) against a frozen F"},
    {"eval-reverse", cmd_eval_reverse, "fidelity of G: G(F(x)) vs x, G(z) vs the exact inverse"},
    {"export-reverse", cmd_export_reverse, "write G as one file pointing at its forward model's new place"},
    {"eval", cmd_eval, "sample quality: FD and class accuracy of N samples, speed, bits/dim, fidelity"},
    {"eval-bpd", cmd_eval_bpd, "bits per dimension of F on a dataset split"},
    {"sample", cmd_sample, "sample images: exact or Jacobi inverse of F, or one pass of G; PNG grid + .npy"},
    {"bench", cmd_bench, "benchmarks: bench train, bench sample"},
    {"inpaint", cmd_inpaint, "inpainting with G: keep the known tokens' encoding, fresh noise elsewhere"},
    {"edit", cmd_edit, "class editing: x' = G(F(x | y) | y') for target classes y'"},
    {"reconstruct", cmd_reconstruct, "x -> F -> G -> x' with the error per image"},
    {"interpolate", cmd_interpolate, "decode the great-circle path between two images' encodings"},
    {"encode", cmd_encode, "encode images with F to noise (x, y, z, logdet as safetensors)"},
    {"info", cmd_info, "show a model file's configuration"},
    {"plot", cmd_plot, "draw training curves from log.jsonl files to a PNG"},
    {"train-features", cmd_train_features, "train the feature network (classifier for the FD)"},
    {"eval-features", cmd_eval_features, "Frechet distance of images against the test split"},
};

static void usage(void) {
    printf("biflow %s: Bidirectional Normalizing Flows in C\n\nusage: biflow COMMAND [options]\n\n"
           "commands:\n", BF_VERSION);
    for (size_t i = 0; i < sizeof COMMANDS / sizeof COMMANDS[0]; i++)
        printf("  %-15s %s\n", COMMANDS[i].name, COMMANDS[i].help);
    printf("\n'biflow COMMAND --help' describes each command's options.\n");
}

static int run_command(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage();
        return argc < 2 ? 2 : 0;
    }
    if (!strcmp(argv[1], "--version")) { printf("biflow %s\n", BF_VERSION); return 0; }
    for (size_t i = 0; i < sizeof COMMANDS / sizeof COMMANDS[0]; i++)
        if (!strcmp(argv[1], COMMANDS[i].name)) return COMMANDS[i].fn(argc, argv);
    fprintf(stderr, "biflow: unknown command '%s'\n", argv[1]);
    usage();
    return 2;
}

/* Under mpirun (or srun) every process runs the command; the trainers, eval and bench train
 * split their work over them (src/dist.h). */
int main(int argc, char **argv) {
    if (bf_dist_init(&argc, &argv)) {
        fprintf(stderr, "biflow: %s\n", bf_last_error());
        return 1;
    }
    int rc = run_command(argc, argv);
    bf_dist_finalize();
    return rc;
}
