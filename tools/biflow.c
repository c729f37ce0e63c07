/* biflow: the command-line tool. Each command is a function with its own option table. */
#include "biflow.h"
#include "cli.h"
#include "commands.h"
#include "../src/core.h"
#include "../src/flow.h"
#include "../src/gemm.h"

#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <string.h>

#define POS_MAX 4

static int fail(void) {
    fprintf(stderr, "biflow: %s\n", bf_last_error());
    return 1;
}

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
        {"steps", OPT_INT, &o.steps, "training steps"},
        {"batch", OPT_INT, &o.batch, "images per step"},
        {"lr", OPT_FLOAT, &o.lr, "peak learning rate"},
        {"min-lr", OPT_FLOAT, &o.min_lr, "learning rate at the end of the cosine"},
        {"warmup", OPT_INT, &o.warmup, "linear warmup steps"},
        {"wd", OPT_FLOAT, &o.weight_decay, "AdamW weight decay (matrices only)"},
        {"beta1", OPT_FLOAT, &o.beta1, "AdamW beta1"},
        {"beta2", OPT_FLOAT, &o.beta2, "AdamW beta2"},
        {"clip", OPT_FLOAT, &o.grad_clip, "gradient-norm clipping (0 = off)"},
        {"ema", OPT_FLOAT, &o.ema_decay, "EMA decay of the weights"},
        {"noise", OPT_STR, &noise, "training noise: uniform (dequantisation, for bits/dim) or gauss"},
        {"sigma", OPT_FLOAT, &o.sigma, "Gaussian noise std with --noise gauss"},
        {"label-drop", OPT_FLOAT, &o.label_drop, "probability of an unconditional label"},
        {"seed", OPT_U64, &o.seed, "random seed (weights, data order, noise)"},
        {"ckpt-every", OPT_INT, &o.ckpt_every, "checkpoint every N steps (and at the end)"},
        {"log-every", OPT_INT, &o.log_every, "progress line and log record every N steps"},
        {"eval-every", OPT_INT, &o.eval_every, "test bits/dim on 2000 images every N steps (0 = off)"},
        {"final-eval", OPT_INT, &final_eval, "test images for the final bits/dim (0 = skip)"},
        {"resume", OPT_FLAG, &o.resume, "continue the run in --out from its last checkpoint"},
        {"threads", OPT_INT, &o.threads, "threads (0 = all cores)"},
        {"quiet", OPT_FLAG, &o.quiet, "no progress lines"},
        {NULL, 0, NULL, NULL},
    };
    const char *pos[POS_MAX];
    int np, rc = cli_parse(argc, argv, 2, opts, "biflow train-flow [options]",
                           "Trains the forward model F (a TARFlow) by maximum likelihood.\n"
                           "Named configurations: fmnist-tiny, fmnist-small, fmnist-base, cifar-small.",
                           pos, 0, &np);
    if (rc) return rc > 0 ? 0 : 2;
    if (parse_noise(noise, &o.noise) || resolve_shape(&o.model, &sh)) return fail();
    if (bf_train_flow(&o)) return fail();
    if (final_eval <= 0) return 0;
    bf_flow *f = bf_flow_load(o.out_dir, 1);
    bf_dataset ds = {0};
    double bpd;
    if (!f || bf_dataset_load(&ds, o.data, "test") ||
        bf_eval_bpd(f, &ds, 256, final_eval, 1234, &bpd, !o.quiet))
        return fail();
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
    bf_flow *f = bf_flow_load(flow, !raw);
    bf_dataset ds = {0};
    double bpd, t0 = bf_time();
    if (!f || bf_dataset_load(&ds, data, split) || bf_eval_bpd(f, &ds, batch, limit, seed, &bpd, 1))
        return fail();
    int n = limit > 0 && limit < ds.n ? limit : ds.n;
    printf("%s split, %d images, %s weights: %.4f bits/dim (%.1f s)\n", split, n,
           raw ? "raw" : "EMA", bpd, bf_time() - t0);
    bf_dataset_free(&ds);
    bf_flow_free(f);
    return 0;
}

/* ------------------------------------------------------------------ bench */
/* Rate of C += A @ B^T through OpenBLAS (native = 0) or biflow's own kernel (native = 1). */
static double sgemm_gflops(int M, int N, int K, double seconds, int native) {
    float *A = bf_malloc(sizeof(float) * M * K), *B = bf_malloc(sizeof(float) * K * N);
    float *C = bf_malloc(sizeof(float) * M * N);
    for (long i = 0; i < (long)M * K; i++) A[i] = (float)(i % 13) * 0.01f;
    for (long i = 0; i < (long)K * N; i++) B[i] = (float)(i % 7) * 0.01f;
    memset(C, 0, sizeof(float) * M * N);
    void (*gemm)(int, int, int, int, int, const float *, int, const float *, int, float *, int) =
        native ? bf_gemm : bf_gemm_blas;
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

static int bench_train(int argc, char **argv) {
    shape_opts sh = {"fmnist-small", 0, 0, 0, 0, 0, -1.0f};
    int batch = 64, steps = 20, warm = 3, threads = 0;
    cli_opt opts[] = {
        {"config", OPT_STR, &sh.config, "named model configuration"},
        {"batch", OPT_INT, &batch, "images per step"},
        {"steps", OPT_INT, &steps, "timed steps"},
        {"warmup", OPT_INT, &warm, "untimed steps first"},
        {"threads", OPT_INT, &threads, "threads (0 = all cores)"},
        {NULL, 0, NULL, NULL},
    };
    const char *pos[POS_MAX];
    int np, rc = cli_parse(argc, argv, 3, opts, "biflow bench train [options]",
                           "Training-step throughput of F (forward + backward + AdamW) on random "
                           "data, with the machine's sgemm rate measured in the same run.",
                           pos, 0, &np);
    if (rc) return rc > 0 ? 0 : 2;
    if (threads > 0) omp_set_num_threads(threads);
    bf_flow_config c;
    if (resolve_shape(&c, &sh)) return fail();
    bf_flow *f = bf_flow_new(&c);
    bf_flow_init(f, 1);
    size_t n = f->num_params, N = (size_t)f->T * f->D;
    float *grads = bf_calloc(n, sizeof(float)), *m = bf_calloc(n, sizeof(float));
    float *v = bf_calloc(n, sizeof(float)), *x = bf_malloc(sizeof(float) * batch * N);
    int *y = bf_malloc(sizeof(int) * batch);
    bf_rng rng;
    bf_rng_seed(&rng, 3);
    for (size_t i = 0; i < batch * N; i++) x[i] = bf_rng_uniform(&rng) * 2 - 1;
    for (int i = 0; i < batch; i++) y[i] = i % 10 - (i % 7 == 0);
    int shards = omp_get_max_threads() < batch ? omp_get_max_threads() : batch;
    bf_flow_acts *acts = bf_calloc((size_t)shards, sizeof *acts);
    float **sg = bf_calloc((size_t)shards, sizeof *sg);
    for (int k = 0; k < shards; k++) {
        bf_flow_acts_init(&acts[k], f, k == 0 ? batch : (batch + shards - 1) / shards);
        if (k) sg[k] = bf_malloc(sizeof(float) * n);
    }
    /* the baseline: the same step with every kernel parallel over the whole batch */
    double t_ops = 0.0, t0 = 0.0;
    for (int s = 0; s < warm + steps; s++) {
        if (s == warm) t0 = bf_time();
        bf_flow_forward(f, f->params, &acts[0], x, y, batch);
        memset(grads, 0, sizeof(float) * n);
        bf_flow_backward(f, f->params, &acts[0], grads, NULL);
    }
    t_ops = bf_time() - t0;
    for (int s = 0; s < warm + steps; s++) {
        if (s == warm) t0 = bf_time();
        bf_flow_step_sharded(f, f->params, acts, sg, shards, grads, x, y, batch);
        for (size_t i = 0; i < n; i++) {   /* the optimiser's memory traffic, as in training */
            m[i] = 0.9f * m[i] + 0.1f * grads[i];
            v[i] = 0.95f * v[i] + 0.05f * grads[i] * grads[i];
            f->params[i] -= 1e-6f * m[i] / (sqrtf(v[i]) + 1e-8f);
        }
    }
    double dt = bf_time() - t0, ips = steps * (double)batch / dt;
    double gf = bf_flow_train_flops(&c, batch) * steps / dt / 1e9;
    int W = c.channels, rows = batch * f->T;
    double peak = sgemm_gflops(rows, 4 * W, W, 1.0, 0), big = sgemm_gflops(1024, 1024, 1024, 1.0, 0);
    double own = bf_gemm_native() ? sgemm_gflops(rows, 4 * W, W, 1.0, 1) : peak;
    printf("bench train: config %s, %zu parameters, batch %d, %d threads\n", sh.config, n, batch,
           omp_get_max_threads());
    printf("  training:   %.1f images/s, %.1f ms/step, %.1f GFLOP/s achieved (%.3f GFLOP/step)\n",
           ips, 1e3 * dt / steps, gf, bf_flow_train_flops(&c, batch) / 1e9);
    printf("  unsharded:  %.1f images/s with every kernel parallel over the batch instead of %d "
           "batch shards (%.2fx)\n", steps * (double)batch / t_ops, shards, t_ops / dt);
    printf("  baseline:   sgemm %dx%dx%d %.1f GFLOP/s, 1024^3 %.1f GFLOP/s (OpenBLAS, this run)\n",
           rows, 4 * W, W, peak, big);
    printf("  own kernel: bf_gemm %dx%dx%d %.1f GFLOP/s (%s), %.2fx OpenBLAS\n", rows, 4 * W, W,
           own, bf_gemm_native() ? "AVX-512" : "OpenBLAS fallback", own / peak);
    printf("  ratio:      the training step achieves %.0f%% of the model-shaped OpenBLAS sgemm rate\n",
           100.0 * gf / peak);
    printf("{\"bench\":\"train\",\"config\":\"%s\",\"batch\":%d,\"images_per_s\":%.2f,"
           "\"gflops\":%.2f,\"sgemm_gflops\":%.2f,\"sgemm_1024_gflops\":%.2f,\"bf_gemm_gflops\":%.2f,"
           "\"unsharded_images_per_s\":%.2f}\n", sh.config, batch, ips, gf, peak, big, own,
           steps * (double)batch / t_ops);
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

static void bench_sample_case(bf_flow *f, const sample_case *k, int n, double min_s) {
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
}

static int bench_sample(int argc, char **argv) {
    shape_opts sh = {"fmnist-small", 0, 0, 0, 0, 0, -1.0f};
    const char *flow = NULL;
    int threads = 0, jacobi = 1;
    float seconds = 2.0f, cfg = 2.0f;
    cli_opt opts[] = {
        {"config", OPT_STR, &sh.config, "named configuration (random weights) when no --flow"},
        {"flow", OPT_STR, &flow, "a trained model (Jacobi's iteration count depends on the weights)"},
        {"cfg", OPT_FLOAT, &cfg, "guidance weight of the guided cases"},
        {"seconds", OPT_FLOAT, &seconds, "minimum timed seconds per case"},
        {"jacobi", OPT_INT, &jacobi, "include the Jacobi sampler (1) or not (0)"},
        {"threads", OPT_INT, &threads, "threads (0 = all cores)"},
        {NULL, 0, NULL, NULL},
    };
    const char *pos[POS_MAX];
    int np, rc = cli_parse(argc, argv, 3, opts, "biflow bench sample [options]",
                           "Sampling speed of each sampler at batch 1 and 64, with and without guidance.",
                           pos, 0, &np);
    if (rc) return rc > 0 ? 0 : 2;
    if (threads > 0) omp_set_num_threads(threads);
    bf_flow *f;
    if (flow) {
        f = bf_flow_load(flow, 1);
        if (!f) return fail();
    } else {
        bf_flow_config c;
        if (resolve_shape(&c, &sh)) return fail();
        if (c.bound == 0.0f) c.bound = 2.0f;   /* random blocks need a bound to stay finite */
        f = bf_flow_new(&c);
        bf_flow_init(f, 1);
        bf_rng r;
        bf_rng_seed(&r, 2);
        for (int b = 0; b < c.num_blocks; b++)
            for (int i = 0; i < 2 * f->D * f->W; i++) f->params[f->blocks[b].out_w + i] = 0.02f * bf_rng_normal(&r);
    }
    printf("bench sample: %s, %zu parameters, %d threads\n", flow ? flow : sh.config,
           f->num_params, omp_get_max_threads());
    sample_case cases[] = {
        {"exact", BF_SAMPLER_EXACT, 1, 0, 0}, {"exact", BF_SAMPLER_EXACT, 64, 0, 0},
        {"exact+cfg", BF_SAMPLER_EXACT, 1, cfg, 0}, {"exact+cfg", BF_SAMPLER_EXACT, 64, cfg, 0},
        {"exact+cfg+score-denoise", BF_SAMPLER_EXACT, 1, cfg, 1},
        {"exact+cfg+score-denoise", BF_SAMPLER_EXACT, 64, cfg, 1},
        {"jacobi", BF_SAMPLER_JACOBI, 1, 0, 0}, {"jacobi", BF_SAMPLER_JACOBI, 64, 0, 0},
        {"jacobi+cfg", BF_SAMPLER_JACOBI, 64, cfg, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        if (cases[i].s == BF_SAMPLER_JACOBI && !jacobi) continue;
        bench_sample_case(f, &cases[i], cases[i].batch == 1 ? 8 : 128, seconds);
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
/* Labels from --class: "all" (classes in turn, rows of the grid), "K", or "K1,K2,...". */
static int parse_classes(int *y, int n, const char *spec, int num_classes, int *ncols) {
    *ncols = 0;
    if (num_classes == 0) {
        for (int i = 0; i < n; i++) y[i] = -1;
        return 0;
    }
    if (!strcmp(spec, "all")) {
        int per = (n + num_classes - 1) / num_classes;
        for (int i = 0; i < n; i++) y[i] = i / per;
        *ncols = per;
        return 0;
    }
    if (!strcmp(spec, "none")) {
        for (int i = 0; i < n; i++) y[i] = -1;
        return 0;
    }
    int list[1024], k = 0;
    const char *p = spec;
    while (*p && k < 1024) {
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p || v < 0 || v >= num_classes || (*end && *end != ',')) {
            bf_set_error("--class: '%s' is not 'all', 'none' or a list of labels in [0, %d)", spec,
                         num_classes);
            return -1;
        }
        list[k++] = (int)v;
        p = *end ? end + 1 : end;
    }
    for (int i = 0; i < n; i++) y[i] = list[i % k];
    return 0;
}

static int write_outputs(const char *prefix, const float *x, const int *y, int n, int c, int h,
                         int w, int ncols, int scale) {
    char path[4096];
    size_t m = (size_t)n * c * h * w;
    uint8_t *u8 = bf_malloc(m);
    bf_images_to_u8(u8, x, m);
    int64_t shape[4] = {n, c, h, w}, ns = n;
    int64_t *lab = bf_malloc(sizeof(int64_t) * n);
    for (int i = 0; i < n; i++) lab[i] = y[i];
    int rc = 0;
    snprintf(path, sizeof path, "%s.png", prefix);
    rc |= bf_write_image_grid(path, x, n, c, h, w, ncols, scale);
    snprintf(path, sizeof path, "%s.npy", prefix);
    rc |= bf_write_npy(path, BF_DT_U8, 4, shape, u8);
    snprintf(path, sizeof path, "%s_labels.npy", prefix);
    rc |= bf_write_npy(path, BF_DT_I64, 1, &ns, lab);
    free(u8);
    free(lab);
    return rc ? -1 : 0;
}

static int cmd_sample(int argc, char **argv) {
    const char *flow = NULL, *sampler = "exact", *classes = "all", *out = "samples", *denoise = "auto";
    int n = 100, raw = 0, scale = 2, threads = 0;
    uint64_t seed = 0;
    float temperature = 1.0f, sigma = -1.0f;
    bf_sample_opts so;
    bf_sample_opts_default(&so);
    cli_opt opts[] = {
        {"flow", OPT_STR, &flow, "forward model: .safetensors file or run folder"},
        {"raw", OPT_FLAG, &raw, "raw weights of a run folder instead of the EMA"},
        {"sampler", OPT_STR, &sampler, "exact (cached causal decoding) or jacobi (parallel iteration)"},
        {"n", OPT_INT, &n, "number of images"},
        {"batch", OPT_INT, &so.batch, "images per pass"},
        {"class", OPT_STR, &classes, "'all' (classes in turn, a grid row each), 'none', or labels 'K[,K...]'"},
        {"seed", OPT_U64, &seed, "noise seed"},
        {"temperature", OPT_FLOAT, &temperature, "scale of the prior noise"},
        {"cfg", OPT_FLOAT, &so.cfg, "classifier-free guidance weight w (0 = off)"},
        {"cfg-anneal", OPT_FLAG, &so.cfg_anneal, "guidance rises linearly over the tokens"},
        {"denoise", OPT_STR, &denoise, "score, none, or auto (score when the model was trained with Gaussian noise)"},
        {"sigma", OPT_FLOAT, &sigma, "noise level for denoising (<0: the model's training sigma)"},
        {"jacobi-tol", OPT_FLOAT, &so.jacobi_tol, "Jacobi: stop when the largest change is below this"},
        {"jacobi-max-iter", OPT_INT, &so.jacobi_max_iter, "Jacobi: iteration cap per block (0 = tokens)"},
        {"out", OPT_STR, &out, "output prefix: PREFIX.png, PREFIX.npy, PREFIX_labels.npy"},
        {"scale", OPT_INT, &scale, "grid scale-up factor"},
        {"threads", OPT_INT, &threads, "threads (0 = all cores)"},
        {NULL, 0, NULL, NULL},
    };
    const char *pos[POS_MAX];
    int np, rc = cli_parse(argc, argv, 2, opts, "biflow sample --flow MODEL [options]",
                           "Samples images from the forward model by inverting it.", pos, 0, &np);
    if (rc) return rc > 0 ? 0 : 2;
    if (!flow) { fprintf(stderr, "biflow sample: --flow is required (see --help)\n"); return 2; }
    if (n <= 0 || scale <= 0 || scale > 32 || !(temperature >= 0)) {
        fprintf(stderr, "biflow sample: --n must be > 0, --scale in 1..32, --temperature >= 0\n");
        return 2;
    }
    if (!strcmp(sampler, "exact")) so.sampler = BF_SAMPLER_EXACT;
    else if (!strcmp(sampler, "jacobi")) so.sampler = BF_SAMPLER_JACOBI;
    else { fprintf(stderr, "biflow sample: --sampler must be exact or jacobi\n"); return 2; }
    if (threads > 0) omp_set_num_threads(threads);
    bf_flow *f = bf_flow_load(flow, !raw);
    if (!f) return fail();
    const bf_flow_config *c = &f->cfg;
    if (!strcmp(denoise, "auto")) so.denoise = f->trained_gauss;
    else if (!strcmp(denoise, "score")) so.denoise = 1;
    else if (!strcmp(denoise, "none")) so.denoise = 0;
    else { fprintf(stderr, "biflow sample: --denoise must be score, none or auto\n"); return 2; }
    so.sigma = sigma >= 0 ? sigma : f->trained_sigma;
    if (so.denoise && !(so.sigma > 0)) {
        fprintf(stderr, "biflow sample: score denoising needs --sigma (the model does not record one)\n");
        return 2;
    }
    size_t N = (size_t)f->T * f->D, img = (size_t)c->in_channels * c->img_size * c->img_size;
    int *y = bf_malloc(sizeof(int) * n), ncols;
    float *z = bf_malloc(sizeof(float) * n * N), *x = bf_malloc(sizeof(float) * n * img);
    if (parse_classes(y, n, classes, c->num_classes, &ncols)) return fail();
    bf_rng rng;
    bf_rng_seed(&rng, seed);
    for (size_t i = 0; i < n * N; i++) z[i] = temperature * bf_rng_normal(&rng);
    bf_sample_stats st;
    if (bf_flow_sample(f, x, z, y, n, &so, &st)) return fail();
    if (write_outputs(out, x, y, n, c->in_channels, c->img_size, c->img_size, ncols, scale)) return fail();
    printf("%d images with the %s sampler%s%s in %.2f s: %.1f images/s, %.2f ms/image\n", n, sampler,
           so.cfg != 0 ? ", guided" : "", so.denoise ? ", score-denoised" : "", st.seconds,
           n / st.seconds, 1e3 * st.seconds / n);
    if (so.sampler == BF_SAMPLER_JACOBI)
        printf("Jacobi iterations: %ld in all, %.1f per block and batch (%d tokens per block)\n",
               st.jacobi_iters, (double)st.jacobi_iters / (c->num_blocks * ((n + so.batch - 1) / so.batch)), f->T);
    if (st.nonfinite) printf("warning: %ld output values are NaN or Inf\n", st.nonfinite);
    printf("wrote %s.png, %s.npy, %s_labels.npy\n", out, out, out);
    free(y); free(z); free(x);
    bf_flow_free(f);
    return 0;
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
static int cmd_info(int argc, char **argv) {
    cli_opt opts[] = {{NULL, 0, NULL, NULL}};
    const char *pos[POS_MAX];
    int np, rc = cli_parse(argc, argv, 2, opts, "biflow info MODEL.safetensors|RUN_DIR",
                           "Prints a forward model's configuration and size.", pos, 1, &np);
    if (rc) return rc > 0 ? 0 : 2;
    if (np != 1) { fprintf(stderr, "biflow info: give one model file or run folder\n"); return 2; }
    bf_flow *f = bf_flow_load(pos[0], 1);
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
    {"train-flow", cmd_train_flow, "train the forward model F (TARFlow) by maximum likelihood"},
    {"eval-bpd", cmd_eval_bpd, "bits per dimension of F on a dataset split"},
    {"sample", cmd_sample, "sample images by inverting F (exact or Jacobi), PNG grid + .npy"},
    {"bench", cmd_bench, "benchmarks: bench train, bench sample"},
    {"encode", cmd_encode, "encode images with F to noise (x, y, z, logdet as safetensors)"},
    {"info", cmd_info, "show a model file's configuration"},
    {"train-features", cmd_train_features, "train the feature network (classifier for the FD)"},
    {"eval-features", cmd_eval_features, "Frechet distance of images against the test split"},
};

static void usage(void) {
    printf("biflow %s: Bidirectional Normalizing Flows in C\n\nusage: biflow COMMAND [options]\n\n"
           "commands:\n", BF_VERSION);
    for (size_t i = 0; i < sizeof COMMANDS / sizeof COMMANDS[0]; i++)
        printf("  %-12s %s\n", COMMANDS[i].name, COMMANDS[i].help);
    printf("\n'biflow COMMAND --help' describes each command's options.\n");
}

int main(int argc, char **argv) {
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
