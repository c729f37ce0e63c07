/* biflow bench train and bench sample: throughput of training steps and of each sampler, with
 * achieved GFLOP/s (training: beside the machine's sgemm rate measured in the same run). */
#include "biflow.h"
#include "cli.h"
#include "commands.h"
#include "tool_util.h"

#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ bench train */
typedef struct { double peak, big, own, own16; int bf16; } gemm_rates;

/* The sgemm rates the training step is compared with, at the model's (rows, 4W, W) shape. */
static void measure_gemm(gemm_rates *g, int rows, int W) {
    g->peak = bf_bench_gemm(BF_BENCH_GEMM_BLAS, rows, 4 * W, W, 1.0);
    g->big = bf_bench_gemm(BF_BENCH_GEMM_BLAS, 1024, 1024, 1024, 1.0);
    g->own = bf_gemm_native() ? bf_bench_gemm(BF_BENCH_GEMM_F32, rows, 4 * W, W, 1.0) : g->peak;
    g->bf16 = bf_precision_effective() == BF_PRECISION_BF16;
    g->own16 = g->bf16 ? bf_bench_gemm(BF_BENCH_GEMM_BF16, rows, 4 * W, W, 1.0) : 0.0;
}

static void print_train(const char *config, const bf_flow *f, int batch, int steps,
                        const bf_bench_train_result *r, const double red[3], const gemm_rates *g) {
    const bf_flow_config *c = bf_flow_get_config(f);
    int W = c->channels, rows = batch * bf_flow_tokens(c);
    double dt = r->seconds, ips = steps * (double)batch / dt, flop = bf_flow_train_flops(c, batch);
    double gf = flop * steps / dt / 1e9, ips1 = steps * (double)batch / r->unsharded_seconds;
    printf("bench train: config %s, %zu parameters, batch %d, %d threads, %s matrix products\n",
           config, bf_flow_num_params(f), batch, omp_get_max_threads(), g->bf16 ? "bf16" : "fp32");
    printf("  training:   %.1f images/s, %.1f ms/step, %.1f GFLOP/s achieved (%.3f GFLOP/step)\n",
           ips, 1e3 * dt / steps, gf, flop / 1e9);
    printf("  reduction:  %.2f ms/step (%.1f%% of the step; fastest step %.2f ms): the %d shards' "
           "gradients (%.2f MB each) summed in shard order\n", 1e3 * red[0] / steps,
           100.0 * red[0] / dt, 1e3 * red[1], r->shards,
           4.0 * (double)bf_flow_num_params(f) / 1e6);
    printf("  unsharded:  %.1f images/s with every kernel parallel over the batch instead of %d "
           "batch shards (%.2fx)\n", ips1, r->shards, r->unsharded_seconds / dt);
    printf("  baseline:   sgemm %dx%dx%d %.1f GFLOP/s, 1024^3 %.1f GFLOP/s (OpenBLAS, this run)\n",
           rows, 4 * W, W, g->peak, g->big);
    printf("  own kernel: bf_gemm %dx%dx%d %.1f GFLOP/s (%s), %.2fx OpenBLAS\n", rows, 4 * W, W,
           g->own, bf_gemm_native() ? "AVX-512" : "OpenBLAS fallback", g->own / g->peak);
    if (g->bf16)
        printf("  bf16:       bf_gemm_bf16 %dx%dx%d %.1f GFLOP/s (%s, fp32 accumulation), "
               "%.2fx the fp32 kernel\n", rows, 4 * W, W, g->own16, bf_gemm_amx() ? "AMX-BF16" : "AVX512-BF16",
               g->own16 / g->own);
    printf("  ratio:      the training step achieves %.0f%% of the model-shaped OpenBLAS sgemm rate\n",
           100.0 * gf / g->peak);
    printf("{\"bench\":\"train\",\"config\":\"%s\",\"batch\":%d,\"images_per_s\":%.2f,"
           "\"gflops\":%.2f,\"sgemm_gflops\":%.2f,\"sgemm_1024_gflops\":%.2f,\"bf_gemm_gflops\":%.2f,"
           "\"unsharded_images_per_s\":%.2f,\"precision\":\"%s\",\"bf16_gemm_gflops\":%.2f,"
           "\"processes\":1,\"threads\":%d,\"reduce_ms_per_step\":%.3f,\"reduce_ms_fastest\":%.3f}\n",
           config, batch, ips, gf, g->peak, g->big, g->own, ips1, g->bf16 ? "bf16" : "fp32", g->own16,
           omp_get_max_threads(), 1e3 * red[0] / steps, 1e3 * red[1]);
}

/* bench train under mpirun (several processes): the step over the processes and the time in
 * its gradient reduction (the sgemm baselines are left to a one-process run); rank 0 prints. */
static void print_train_ranks(const char *config, const bf_flow *f, int batch, int steps,
                              const bf_bench_train_result *r, const double red[3]) {
    const bf_flow_config *c = bf_flow_get_config(f);
    int bf16 = bf_precision_effective() == BF_PRECISION_BF16, threads = omp_get_max_threads();
    double dt = r->seconds, ips = steps * (double)batch / dt, flop = bf_flow_train_flops(c, batch);
    double gf = flop * steps / dt / 1e9, mb = 4.0 * (double)bf_flow_num_params(f) / 1e6;
    printf("bench train: config %s, %zu parameters, batch %d, %d processes x %d thread%s (%d shards), "
           "%s matrix products\n", config, bf_flow_num_params(f), batch, bf_dist_size(), threads,
           threads == 1 ? "" : "s", r->shards, bf16 ? "bf16" : "fp32");
    printf("  training:   %.1f images/s, %.1f ms/step, %.1f GFLOP/s achieved (%.3f GFLOP/step)\n",
           ips, 1e3 * dt / steps, gf, flop / 1e9);
    printf("  reduction:  %.2f ms/step (%.1f%% of the step; fastest step %.2f ms): %.2f MB of "
           "gradients summed in shard order along the %d ranks, then broadcast\n",
           1e3 * red[0] / steps, 100.0 * red[0] / dt, 1e3 * red[1], mb,
           bf_dist_size());
    printf("  waiting:    %.2f ms/step (%.1f%% of the step) for the slowest rank to reach the reduction\n",
           1e3 * red[2] / steps, 100.0 * red[2] / dt);
    printf("{\"bench\":\"train\",\"config\":\"%s\",\"batch\":%d,\"images_per_s\":%.2f,\"gflops\":%.2f,"
           "\"processes\":%d,\"threads\":%d,\"reduce_ms_per_step\":%.3f,\"reduce_ms_fastest\":%.3f,"
           "\"wait_ms_per_step\":%.3f,\"reduce_mb\":%.3f,\"precision\":\"%s\"}\n", config, batch, ips,
           gf, bf_dist_size(), threads, 1e3 * red[0] / steps, 1e3 * red[1],
           1e3 * red[2] / steps, mb, bf16 ? "bf16" : "fp32");
}

/* G's training step (bench train --model reverse): images/s of the step train-reverse takes. */
static int bench_train_reverse(bf_reverse_train_opts *o, int steps, int warm) {
    bf_bench_train_reverse_result r;
    if (bf_bench_train_reverse(o, steps, warm, &r)) return cli_fail();
    double ips = steps * (double)o->batch / r.seconds, gf = r.flops_per_step * steps / r.seconds / 1e9;
    const char *prec = bf_precision_name(bf_precision_effective());
    printf("bench train: model reverse (G, %zu parameters) against %s (F, %zu parameters), batch %d, "
           "%d threads (%d shards), %s matrix products%s\n", r.params, o->flow, r.flow_params, o->batch,
           omp_get_max_threads(), r.shards, prec, bf_precision_effective() == BF_PRECISION_BF16 &&
           bf_gemm_amx() ? " (AMX-BF16)" : "");
    printf("  training:   %.1f images/s, %.1f ms/step, %.1f GFLOP/s achieved (%.3f GFLOP/step: F's "
           "forward, G's forward%s and backward; perceptual weight %g, class weight %g)\n", ips,
           1e3 * r.seconds / steps, gf, r.flops_per_step / 1e9, o->cfg_train ? " x2" : "",
           (double)o->perceptual, (double)o->class_weight);
    printf("{\"bench\":\"train\",\"model\":\"reverse\",\"batch\":%d,\"images_per_s\":%.2f,"
           "\"ms_per_step\":%.3f,\"gflops\":%.2f,\"precision\":\"%s\",\"threads\":%d,\"loss\":%.5f}\n",
           o->batch, ips, 1e3 * r.seconds / steps, gf, prec, omp_get_max_threads(), r.loss);
    return 0;
}

static int bench_train(int argc, char **argv) {
    shape_opts sh = SHAPE_OPTS_DEFAULT;
    int batch = 64, steps = 20, warm = 3;
    const char *model = "forward";
    bf_reverse_train_opts ro;
    bf_reverse_train_opts_default(&ro);
    ro.flow = "models/flow-fmnist.safetensors";
    ro.perceptual = 1.0f;   /* train-reverse's default recipe */
    cli_opt opts[] = {
        CLI_CHOICE("model", model, "forward|reverse", "the step of train-flow (F) or of train-reverse (G)"),
        SHAPE_CONFIG_OPT(sh),
        {"flow", OPT_STR, &ro.flow, "--model reverse: the frozen F that G trains against"},
        CLI_PERCEPTUAL_OPTS(ro),   /* --model reverse */
        {"batch", OPT_INT, &batch, "images per step"},
        {"steps", OPT_INT, &steps, "timed steps"},
        {"warmup", OPT_INT, &warm, "untimed steps first"},
        CLI_COMPUTE_OPTS,
        CLI_END,
    };
    int rc = cli_options(argc, argv, 3, opts);
    if (rc != CLI_GO) return rc;
    if ((rc = cli_check_int("batch", batch, 1, 65536)) || (rc = cli_check_int("steps", steps, 1, 1000000)) ||
        (rc = cli_check_int("warmup", warm, 0, 1000000)))
        return rc;
    cli_default_bf16(NULL, NULL);   /* the trainers' default */
    if (!strcmp(model, "reverse")) {
        ro.batch = batch;
        return bench_train_reverse(&ro, steps, warm);
    }
    bf_flow_config c;
    if (resolve_shape(&c, &sh)) return cli_usage_fail(NULL);
    bf_flow *f = bf_flow_new(&c);
    bf_bench_train_result r;
    if (!f) return cli_fail();
    bf_flow_init(f, 1);
    double red[3];   /* the gradient reduction: over the processes under mpirun */
    if (bf_bench_train_steps_reduce(f, batch, steps, warm, &r, red)) {
        bf_flow_free(f);
        return cli_fail();
    }
    if (bf_dist_size() > 1) {   /* under mpirun: rank 0 reports */
        if (bf_dist_is_root()) print_train_ranks(sh.config, f, batch, steps, &r, red);
    } else {
        gemm_rates g;
        measure_gemm(&g, batch * bf_flow_tokens(&c), c.channels);
        print_train(sh.config, f, batch, steps, &r, red, &g);
    }
    bf_flow_free(f);
    return 0;
}

/* ------------------------------------------------------------------ bench sample */
typedef struct {
    const char *name;
    bf_sampler s;
    int batch, guided, denoise;
    double *ips;               /* where its images/s goes (a named field), or NULL */
} sample_case;

/* The images/s the speed-up lines compare, by name. */
typedef struct { double exact_cfg_64, exact_cfg_denoise_1, exact_cfg_denoise_64; } sample_rates;

static void print_rate(const char *name, int batch, long images, double t, double flops, const char *tail) {
    printf("  %-26s batch %3d: %8.1f images/s %9.3f ms/image %7.1f GFLOP/s%s\n", name, batch,
           images / t, 1e3 * t / images, flops / t / 1e9, tail);
}

/* The prior noise of every case: n standard normal draws, seed 5. */
static float *bench_noise(size_t n) {
    float *z = bf_malloc(sizeof(float) * n);
    bf_rng rng;
    bf_rng_seed(&rng, 5);
    for (size_t i = 0; i < n; i++) z[i] = bf_rng_normal(&rng);
    return z;
}

/* n labels cycling over the classes (-1, unconditional, without classes). */
static int *bench_labels(int n, int num_classes) {
    int *y = bf_malloc(sizeof(int) * n);
    for (int i = 0; i < n; i++) y[i] = num_classes ? i % num_classes : -1;
    return y;
}

static double bench_sample_case(bf_flow *f, const sample_case *k, float cfg, int n, double min_s) {
    const bf_flow_config *c = bf_flow_get_config(f);
    size_t N = (size_t)bf_flow_tokens(c) * bf_flow_token_dim(c), img = (size_t)c->in_channels * c->img_size * c->img_size;
    float *z = bench_noise(n * N), *x = bf_malloc(sizeof(float) * n * img);
    int *y = bench_labels(n, c->num_classes);
    bf_sample_opts o;
    bf_sample_opts_default(&o);
    o.sampler = k->s;
    o.batch = k->batch;
    o.cfg = k->guided ? cfg : 0.0f;
    o.denoise = k->denoise;
    o.sigma = bf_flow_trained_sigma(f) > 0 ? bf_flow_trained_sigma(f) : 0.05f;   /* random F: 0.05 */
    bf_sample_stats st;
    long images = 0, iters = 0;
    double t = 0.0;
    do {   /* whole calls until the time is long enough to trust (at least one) */
        bf_flow_sample(f, x, z, y, n, &o, &st);
        t += st.seconds;
        images += n;
        iters += st.jacobi_iters;
    } while (t < min_s);
    double per = bf_flow_forward_flops(c, 1) * (k->guided ? 2 : 1);
    double passes = k->s == BF_SAMPLER_JACOBI ? (double)iters / c->num_blocks / ((double)images / k->batch) : 1.0;
    double flops = images * (per * passes + (k->denoise ? 3 * bf_flow_forward_flops(c, 1) : 0));
    char tail[64] = "";
    if (k->s == BF_SAMPLER_JACOBI) snprintf(tail, sizeof tail, "  (%.1f iterations per block)", passes);
    print_rate(k->name, k->batch, images, t, flops, tail);
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
    float *z = bench_noise(n * N), *x = bf_malloc(sizeof(float) * n * N);
    int *y = bench_labels(n, c->num_classes);
    bf_reverse_sample_opts o;
    bf_reverse_sample_opts_default(&o);
    o.cfg = cfg;
    o.cfg_two_pass = two_pass;
    if (!c->denoise_layers) o.output = BF_REVERSE_OUT_NOISY;
    long images = 0;
    double t = 0.0;
    bf_sample_stats st;
    do {
        for (int s = 0; s < n; s += batch) {   /* calls of `batch` images, as a user makes them */
            bf_reverse_sample(r, x + s * N, z + s * N, y + s, n - s < batch ? n - s : batch, &o, &st);
            t += st.seconds;
            images += n - s < batch ? n - s : batch;
        }
    } while (t < min_s);
    int nfe = cfg != 0 && (two_pass || !c->guidance_embed) ? 2 : 1;
    char tail[32];
    snprintf(tail, sizeof tail, "  (%d NFE)", nfe);
    print_rate(name, batch, images, t, images * nfe * bf_reverse_forward_flops(c, 1), tail);
    printf("{\"bench\":\"sample\",\"case\":\"%s\",\"batch\":%d,\"images_per_s\":%.2f,"
           "\"ms_per_image\":%.4f,\"gflops\":%.2f,\"nfe\":%d}\n", name, batch, images / t,
           1e3 * t / images, images * nfe * bf_reverse_forward_flops(c, 1) / t / 1e9, nfe);
    free(z); free(x); free(y);
    return images / t;
}

/* F from --flow, or a random F of the named configuration (non-zero heads, bounded). */
static bf_flow *bench_flow(const char *flow, const shape_opts *sh) {
    if (flow) return bf_flow_load(flow, 1);
    bf_flow_config c;
    if (resolve_shape(&c, sh)) return NULL;
    if (c.bound == 0.0f) c.bound = 2.0f;   /* random blocks need a bound to stay finite */
    bf_flow *f = bf_flow_new(&c);
    if (!f) return NULL;
    bf_flow_init(f, 1);
    bf_flow_randomize_heads(f, 2, 0.02f);
    return f;
}

static void bench_flow_cases(bf_flow *f, float cfg, int jacobi, int exact, double seconds,
                             sample_rates *rates) {
    sample_case cases[] = {
        {"exact", BF_SAMPLER_EXACT, 1, 0, 0, NULL}, {"exact", BF_SAMPLER_EXACT, 64, 0, 0, NULL},
        {"exact+cfg", BF_SAMPLER_EXACT, 1, 1, 0, NULL},
        {"exact+cfg", BF_SAMPLER_EXACT, 64, 1, 0, &rates->exact_cfg_64},
        {"exact+cfg+score-denoise", BF_SAMPLER_EXACT, 1, 1, 1, &rates->exact_cfg_denoise_1},
        {"exact+cfg+score-denoise", BF_SAMPLER_EXACT, 64, 1, 1, &rates->exact_cfg_denoise_64},
        {"jacobi", BF_SAMPLER_JACOBI, 1, 0, 0, NULL}, {"jacobi", BF_SAMPLER_JACOBI, 64, 0, 0, NULL},
        {"jacobi+cfg", BF_SAMPLER_JACOBI, 64, 1, 0, NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        if ((cases[i].s == BF_SAMPLER_JACOBI && !jacobi) || (cases[i].s == BF_SAMPLER_EXACT && !exact))
            continue;
        double ips = bench_sample_case(f, &cases[i], cfg, cases[i].batch == 1 ? 8 : 128, seconds);
        if (cases[i].ips) *cases[i].ips = ips;
    }
}

static void bench_reverse_cases(bf_reverse *r, const bf_flow *f, const char *reverse, float cfg,
                                double seconds, const sample_rates *rates) {
    printf("reverse model G: %s, %zu parameters (F: %zu)\n", reverse, bf_reverse_num_params(r),
           bf_flow_num_params(f));
    double b1 = bench_biflow_case(r, "biflow+cfg", 1, cfg, 0, 8, seconds);
    double b64 = bench_biflow_case(r, "biflow+cfg", 64, cfg, 0, 128, seconds);
    bench_biflow_case(r, "biflow", 64, 0.0f, 0, 128, seconds);
    bench_biflow_case(r, "biflow+cfg two-pass", 64, cfg, 1, 128, seconds);
    if (rates->exact_cfg_64 > 0)   /* measured (not with --exact off) */
        printf("speed-up of one-pass G (guided) over exact+cfg+score-denoise: %.1fx at batch 64, "
               "%.1fx at batch 1; over exact+cfg: %.1fx at batch 64\n", b64 / rates->exact_cfg_denoise_64,
               b1 / rates->exact_cfg_denoise_1, b64 / rates->exact_cfg_64);
}

static int bench_sample(int argc, char **argv) {
    shape_opts sh = SHAPE_OPTS_DEFAULT;
    const char *flow = NULL, *reverse = NULL;
    int jacobi = 1, exact = 1;
    float seconds = 2.0f, cfg = 2.0f;
    cli_opt opts[] = {
        SHAPE_CONFIG_OPT(sh),   /* random weights, when no --flow */
        {"flow", OPT_STR, &flow, "a trained model (Jacobi's iteration count depends on the weights)"},
        {"reverse", OPT_STR, &reverse, "a reverse model G: adds the one-pass sampler (F defaults to G's)"},
        {"cfg", OPT_FLOAT, &cfg, "guidance weight of the guided cases"},
        CLI_SECONDS_OPT(seconds),
        {"jacobi", OPT_ONOFF, &jacobi, "include the Jacobi sampler"},
        {"exact", OPT_ONOFF, &exact, "include the exact sampler (off, with --reverse: G alone)"},
        CLI_COMPUTE_OPTS,
        CLI_END,
    };
    int rc = cli_options(argc, argv, 3, opts);
    if (rc != CLI_GO) return rc;
    if ((rc = cli_check_float("seconds", seconds, 0, 3600))) return rc;
    bf_reverse *r = NULL;
    if (reverse && !(r = bf_reverse_load(reverse, 1))) return cli_fail();
    if (r && !flow) flow = bf_reverse_flow_path(r);
    bf_flow *f = bench_flow(flow, &sh);
    if (!f || (r && bf_reverse_check_flow(r, f, flow))) rc = cli_fail();
    if (!rc) {
        printf("bench sample: %s, %zu parameters, %d threads, %s matrix products\n",
               flow ? flow : sh.config, bf_flow_num_params(f), omp_get_max_threads(),
               bf_precision_name(bf_precision_effective()));
        sample_rates rates = {0};
        bench_flow_cases(f, cfg, jacobi, exact, seconds, &rates);
        if (r) bench_reverse_cases(r, f, reverse, cfg, seconds, &rates);
    }
    bf_reverse_free(r);
    bf_flow_free(f);
    return rc;
}

/* ------------------------------------------------------------------ bench gemm */
typedef struct { const char *name; int ta, tb, M, N, K; } gemm_case;

/* The products of one layer of F at rows = batch x T tokens (linear layers forward and
 * backward, attention of one image and head), then a large square product for the peak. */
static int gemm_cases(gemm_case *k, const bf_flow_config *c, int batch) {
    int T = bf_flow_tokens(c), W = c->channels, D = bf_flow_token_dim(c), hd = c->head_dim, R = batch * T, n = 0;
    k[n++] = (gemm_case){"qkv  x W^T", 0, 1, R, 3 * W, W};
    k[n++] = (gemm_case){"proj x W^T", 0, 1, R, W, W};
    k[n++] = (gemm_case){"fc1  x W^T", 0, 1, R, 4 * W, W};
    k[n++] = (gemm_case){"fc2  x W^T", 0, 1, R, W, 4 * W};
    k[n++] = (gemm_case){"fc2  dY W", 0, 0, R, 4 * W, W};
    k[n++] = (gemm_case){"fc1  dY^T x", 1, 0, 4 * W, W, R};
    k[n++] = (gemm_case){"in   x W^T", 0, 1, R, W, D};
    k[n++] = (gemm_case){"head x W^T", 0, 1, R, 2 * D, W};
    k[n++] = (gemm_case){"attn q k^T", 0, 1, T, T, hd};
    k[n++] = (gemm_case){"attn p v", 0, 0, T, hd, T};
    k[n++] = (gemm_case){"square", 0, 1, 1024, 1024, 1024};
    return n;
}

static void bench_gemm_case(const gemm_case *k, int amx, double seconds) {
    double f = bf_bench_gemm_t(BF_BENCH_GEMM_F32, k->ta, k->tb, k->M, k->N, k->K, seconds);
    double b = bf_bench_gemm_t(BF_BENCH_GEMM_BF16_AVX512, k->ta, k->tb, k->M, k->N, k->K, seconds);
    double a = amx ? bf_bench_gemm_t(BF_BENCH_GEMM_BF16_AMX, k->ta, k->tb, k->M, k->N, k->K, seconds) : 0.0;
    double r = bf_bench_gemm_t(BF_BENCH_GEMM_BF16, k->ta, k->tb, k->M, k->N, k->K, seconds);
    printf("  %-12s %5d x %4d x %4d  %7.1f  %7.1f (%4.2fx)  ", k->name, k->M, k->N, k->K, f, b, b / f);
    if (amx) printf("%7.1f (%4.2fx)", a, a / f);
    else printf("%15s", "-");
    printf("  %7.1f (%4.2fx)\n", r, r / f);
    printf("{\"bench\":\"gemm\",\"case\":\"%s\",\"ta\":%d,\"tb\":%d,\"M\":%d,\"N\":%d,\"K\":%d,"
           "\"fp32_gflops\":%.2f,\"avx512bf16_gflops\":%.2f,\"amx_gflops\":%.2f,\"bf16_gflops\":%.2f}\n",
           k->name, k->ta, k->tb, k->M, k->N, k->K, f, b, a, r);
}

static int bench_gemm(int argc, char **argv) {
    shape_opts sh = SHAPE_OPTS_DEFAULT;
    int batch = 32;
    float seconds = 0.5f;
    cli_opt opts[] = {
        SHAPE_CONFIG_OPT(sh),   /* whose products are timed */
        {"batch", OPT_INT, &batch, "images per product (rows = batch x tokens; a training step's shard per thread)"},
        CLI_SECONDS_OPT(seconds),   /* per kernel and case */
        CLI_THREADS_OPT,
        CLI_END,
    };
    int rc = cli_options(argc, argv, 3, opts);
    if (rc != CLI_GO) return rc;
    if ((rc = cli_check_int("batch", batch, 1, 65536)) || (rc = cli_check_float("seconds", seconds, 0, 3600)))
        return rc;
    bf_flow_config c;
    if (resolve_shape(&c, &sh)) return cli_usage_fail(NULL);
    if (!bf_bf16_supported()) return cli_usage("this CPU lacks AVX512-BF16: there is no bf16 kernel to time");
    int amx = bf_gemm_amx();
    gemm_case k[16];
    int n = gemm_cases(k, &c, batch);
    printf("bench gemm: config %s, batch %d (%d rows), %d threads; GFLOP/s (ratio to fp32)%s\n",
           sh.config, batch, batch * bf_flow_tokens(&c), omp_get_max_threads(),
           amx ? "" : "; no AMX-BF16 on this CPU (or BF_AMX=off)");
    printf("  %-12s %-20s  %7s  %-15s  %-15s  %s\n", "product", "M x N x K", "fp32", "AVX512-BF16",
           "AMX-BF16", "bf16 routed");
    for (int i = 0; i < n; i++) bench_gemm_case(&k[i], amx, seconds);
    return 0;
}

/* The benchmarks, with their --help (bench is a command of commands). */
static const cli_command BENCH[] = {
    {"train", bench_train, "training-step throughput of the forward model (--model reverse: of G)",
     "[options]",
     "Training-step throughput of F (forward + backward + AdamW, as training takes\n"
     "them) on random data, with the machine's sgemm rate measured in the same run.\n"
     "Under mpirun: the step over the processes (the global batch split over them)\n"
     "and the time in its gradient reduction. --model reverse: the step of G as\n"
     "train-reverse takes it (Fashion-MNIST batches, F's encoding, G's passes, loss,\n"
     "perceptual term, AdamW), one process; --flow, --perceptual, --features and\n"
     "--class-weight apply to it only."},
    {"sample", bench_sample, "images/s and ms/image of each sampler at batch 1 and 64",
     "[options]",
     "Sampling speed of each sampler at batch 1 and 64, with and without guidance."},
    {"gemm", bench_gemm, "GFLOP/s of the fp32, AVX512-BF16 and AMX-BF16 matrix products on the model's shapes",
     "[options]",
     "GFLOP/s of the matrix-product kernels on the model's shapes, measured in the\n"
     "same run: biflow's fp32 kernel, its AVX512-BF16 kernel, its AMX-BF16 kernel\n"
     "(CPUs with AMX) and bf16 as --precision bf16 routes it, each with its ratio\n"
     "to fp32. Rows: the linear layers of a block (forward, input and weight\n"
     "gradients), the token embedding and head, attention of one image and head,\n"
     "and a 1024^3 product (near the kernels' peak)."},
};

int cmd_bench(int argc, char **argv) {
    size_t n = sizeof BENCH / sizeof BENCH[0];
    int rc = argc >= 3 ? cli_dispatch(BENCH, n, argc, argv, 2) : -1;
    if (rc >= 0) return rc;
    if (argc >= 3 && (!strcmp(argv[2], "--help") || !strcmp(argv[2], "-h"))) {
        cli_help_commands(BENCH, n);
        return 0;
    }
    fprintf(stderr, "biflow bench: give train, sample or gemm%s%s%s (see --help)\n",
            argc >= 3 ? ", not '" : "", argc >= 3 ? argv[2] : "", argc >= 3 ? "'" : "");
    return 2;
}
