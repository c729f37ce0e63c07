/* biflow sample: images from the exact or Jacobi inverse of F, or from one pass of G. */
#include "biflow.h"
#include "cli.h"
#include "commands.h"
#include "tool_util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* What cmd_sample needs from either kind of model. */
typedef struct {
    const char *flow, *reverse, *sampler, *classes, *out, *denoise;
    int n, raw, scale, cfg_two_pass;
    uint64_t seed;
    float temperature, sigma;
    bf_sample_opts so;
} sample_args;

static int report_sample(const sample_args *a, const float *x, const int *y, int c, int img,
                         int ncols, const bf_sample_stats *st, const char *what) {
    if (write_outputs(a->out, x, y, a->n, c, img, img, ncols, a->scale)) return cli_fail();
    printf("%d images with the %s sampler%s%s in %.2f s (%s products): %.1f images/s, %.2f ms/image\n",
           a->n, a->sampler, a->so.cfg != 0 ? ", guided" : "", what, st->seconds,
           bf_precision_name(bf_precision_effective()), a->n / st->seconds, 1e3 * st->seconds / a->n);
    if (st->nonfinite) printf("warning: %ld output values are NaN or Inf\n", st->nonfinite);
    printf("wrote %s.png, %s.npy, %s_labels.npy\n", a->out, a->out, a->out);
    return 0;
}

/* x (n, img) from z (n, N) and y (n, or NULL) by F's sampler (f) or G's. Under mpirun the
 * images are split over the processes in whole units of `unit` images (the sampler's batches,
 * so that each image is made as one process makes it), gathered on rank 0 with the figures of
 * st summed (collective). 0, or -1 (the error set). */
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
    bf_fill_normal(*z, a->n * N, a->seed, a->temperature);
    return 0;
}

static int sample_exact(sample_args *a) {
    bf_sample_opts *so = &a->so;
    bf_flow *f = bf_flow_load(a->flow, !a->raw);
    if (!f) return cli_fail();
    int rc = flow_denoise(a->denoise, a->sigma, f, &so->denoise, &so->sigma);
    if (rc) { bf_flow_free(f); return rc; }
    const bf_flow_config *c = bf_flow_get_config(f);
    int T = bf_flow_tokens(c), ncols, *y = NULL;
    size_t N = (size_t)T * bf_flow_token_dim(c), img = (size_t)c->in_channels * c->img_size * c->img_size;
    float *z = NULL, *x = bf_malloc(sizeof(float) * a->n * img);
    bf_sample_stats st;
    if (sample_inputs(a, &z, &y, &ncols, N, c->num_classes) ||
        sample_split(f, NULL, so, NULL, x, z, y, a->n, N, img, so->batch, &st))
        rc = cli_fail();
    else if (bf_dist_is_root())   /* under mpirun: rank 0 writes and reports */
        rc = report_sample(a, x, y, c->in_channels, c->img_size, ncols, &st, so->denoise ? ", score-denoised" : "");
    if (rc == 0 && bf_dist_is_root() && so->sampler == BF_SAMPLER_JACOBI)
        printf("Jacobi iterations: %ld in all, %.1f per block and batch (%d tokens per block)\n",
               st.jacobi_iters, (double)st.jacobi_iters / (c->num_blocks * ((a->n + so->batch - 1) / so->batch)), T);
    free(y); free(z); free(x);
    bf_flow_free(f);
    return rc;
}

static int sample_biflow(sample_args *a) {
    bf_reverse *r = bf_reverse_load(a->reverse, !a->raw);
    if (!r) return cli_fail();
    const bf_reverse_config *c = bf_reverse_get_config(r);
    bf_reverse_sample_opts ro;
    bf_reverse_sample_opts_default(&ro);
    ro.cfg = a->so.cfg;
    ro.cfg_two_pass = a->cfg_two_pass;
    int score = !strcmp(a->denoise, "score"), rc = 0, ncols, *y = NULL;
    bf_flow *f = NULL;
    if ((a->flow || score) && !(f = paired_flow(r, a->flow, a->reverse))) rc = cli_fail();
    if (!rc) rc = reverse_denoise(a->denoise, a->sigma, r, f, &ro);
    int T = (c->img_size / c->patch_size) * (c->img_size / c->patch_size);
    size_t N = (size_t)T * c->in_channels * c->patch_size * c->patch_size;
    float *z = NULL, *x = bf_malloc(sizeof(float) * a->n * N);
    bf_sample_stats st;   /* a unit of 64: G's chunks (32) and score-denoising batches (64) */
    if (!rc && (sample_inputs(a, &z, &y, &ncols, N, c->num_classes) ||
                sample_split(NULL, r, NULL, &ro, x, z, y, a->n, N, N, 64, &st)))
        rc = cli_fail();
    if (!rc && bf_dist_is_root()) {   /* under mpirun: rank 0 writes and reports */
        int two = ro.cfg != 0 && (!c->guidance_embed || ro.cfg_two_pass);
        char what[96];
        snprintf(what, sizeof what, " (%d NFE)%s", two ? 2 : 1, score ? ", score-denoised"
                 : ro.output == BF_REVERSE_OUT_CLEAN ? ", learned denoising" : ", no denoising");
        rc = report_sample(a, x, y, c->in_channels, c->img_size, ncols, &st, what);
    }
    free(y); free(z); free(x);
    bf_flow_free(f);
    bf_reverse_free(r);
    return rc;
}

/* Ranges and the options each sampler needs: 0 or a usage error (2). */
static int sample_check(sample_args *a) {
    int rc;
    if ((rc = cli_check_int("n", a->n, 1, CLI_MAX_SAMPLES)) || (rc = cli_check_int("batch", a->so.batch, 1, 1 << 20)) ||
        (rc = cli_check_int("scale", a->scale, 1, 32)) ||
        (rc = cli_check_float("temperature", a->temperature, 0, 1e6)))
        return rc;
    if (a->reverse && !cli_given("sampler")) a->sampler = "biflow";   /* G given: its sampler */
    if (!strcmp(a->sampler, "biflow")) {
        if (!a->reverse) return cli_usage("--sampler biflow needs --reverse");
        return 0;
    }
    a->so.sampler = !strcmp(a->sampler, "jacobi") ? BF_SAMPLER_JACOBI : BF_SAMPLER_EXACT;
    if (a->reverse) return cli_usage("--reverse is G's: --sampler %s inverts F (--sampler biflow samples with G)", a->sampler);
    if (!a->flow) return cli_usage("--flow is required (or --reverse G)");
    return 0;
}

int cmd_sample(int argc, char **argv) {
    sample_args a = {NULL, NULL, "exact", "all", "samples", "auto", 100, 0, 2, 0, 0, 1.0f, -1.0f, {0}};
    bf_sample_opts_default(&a.so);
    cli_opt opts[] = {
        CLI_FLOW_OPT(a.flow),
        {"reverse", OPT_STR, &a.reverse, "reverse model G: file or run folder (the sampler is then biflow)"},
        CLI_RAW_OPT(a.raw),
        CLI_CHOICE("sampler", a.sampler, "exact|jacobi|biflow", "exact (cached causal decoding of F), jacobi (parallel iteration) or biflow (one pass of G)"),
        {"n", OPT_INT, &a.n, "number of images"},
        {"batch", OPT_INT, &a.so.batch, "images per pass"},
        {"class", OPT_STR, &a.classes, "'all' (classes in turn, a grid row each), 'none', or labels 'K[,K...]'"},
        {"seed", OPT_U64, &a.seed, "noise seed (the same seed gives the same noise to every sampler)"},
        {"temperature", OPT_FLOAT, &a.temperature, "scale of the prior noise"},
        {"cfg", OPT_FLOAT, &a.so.cfg, "classifier-free guidance weight w (0 = off)"},
        {"cfg-anneal", OPT_FLAG, &a.so.cfg_anneal, "exact/jacobi: guidance rises linearly over the tokens"},
        {"cfg-two-pass", OPT_FLAG, &a.cfg_two_pass, "biflow: inference-time guidance (2 NFE) even when G takes w as input"},
        CLI_CHOICE("denoise", a.denoise, "auto|score|learned|none", DENOISE_HELP),
        {"sigma", OPT_FLOAT, &a.sigma, "noise level of score denoising (<0: the model's recorded training sigma)"},
        {"jacobi-tol", OPT_FLOAT, &a.so.jacobi_tol, "Jacobi: stop when the largest change is below this"},
        {"jacobi-max-iter", OPT_INT, &a.so.jacobi_max_iter, "Jacobi: iteration cap per block (0 = tokens)"},
        CLI_IMAGES_OUT_OPTS(a.out, a.scale),
        CLI_COMPUTE_OPTS,
        CLI_END,
    };
    int rc = cli_options(argc, argv, 2, opts);
    if (rc != CLI_GO) return rc;
    if ((rc = sample_check(&a))) return rc;
    if (!strcmp(a.sampler, "biflow")) {
        cli_default_bf16(NULL, NULL);   /* one pass of G: bf16 unless asked otherwise */
        return sample_biflow(&a);
    }
    return sample_exact(&a);
}
