/* biflow eval: sample quality (Frechet distance on the feature network, class accuracy),
 * likelihood, inverse fidelity and speed of a sampler, or of a .npy of images (METHOD
 * Section 8). One command, so that every row of a results table is measured the same way. */
#include "biflow.h"
#include "cli.h"
#include "commands.h"
#include "tool_util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const char *reverse, *flow, *images, *labels, *features, *data, *sampler, *denoise;
    const char *row, *md, *json, *save;
    int n, bpd_n, fid_n, floor_n, raw, cfg_two_pass, cfg_anneal, batch;
    float cfg, sigma;
    uint64_t seed;
} eval_args;

typedef struct {
    int n, nfe;
    double fd, acc, ms_per_image, images_per_s, bpd, mse, psnr, mse_exact, floor_fd;
} eval_result;

/* ------------------------------------------------------------------ generation */
/* The sampling options of --denoise and --sigma (tools/tool_util.h): 0 or a usage error (2). */
static int eval_denoise(const eval_args *a, bf_flow *f, bf_reverse *r, bf_reverse_sample_opts *ro,
                        bf_sample_opts *so) {
    bf_reverse_sample_opts_default(ro);
    bf_sample_opts_default(so);
    if (r) return reverse_denoise(a->denoise, a->sigma, r, f, ro);
    return flow_denoise(a->denoise, a->sigma, f, &so->denoise, &so->sigma);
}

/* n samples x (n, C, H, W) of prior noise z (n, N) and labels y (n) with the sampling options
 * ro, so of eval_denoise; res->nfe set. 0, or -1 (the error set). */
static int sample_rows(const eval_args *a, bf_flow *f, bf_reverse *r, bf_reverse_sample_opts *ro,
                       bf_sample_opts *so, float *x, const float *z, const int *y, int n,
                       eval_result *res) {
    const bf_flow_config *fc = bf_flow_get_config(f);
    bf_sample_stats st;
    if (r) {
        ro->cfg = a->cfg;
        ro->cfg_two_pass = a->cfg_two_pass;
        const bf_reverse_config *c = bf_reverse_get_config(r);
        res->nfe = (a->cfg != 0 && (a->cfg_two_pass || !c->guidance_embed) ? 2 : 1) + (ro->score_flow ? 2 : 0);
        return n ? bf_reverse_sample(r, x, z, y, n, ro, &st) : 0;
    }
    so->sampler = !strcmp(a->sampler, "jacobi") ? BF_SAMPLER_JACOBI : BF_SAMPLER_EXACT;
    so->cfg = a->cfg;
    so->cfg_anneal = a->cfg_anneal;
    so->batch = a->batch;
    res->nfe = fc->num_blocks * bf_flow_tokens(fc) * (a->cfg != 0 ? 2 : 1) + (so->denoise ? 2 : 0);
    return n ? bf_flow_sample(f, x, z, y, n, so, &st) : 0;
}

/* n samples x (n, C, H, W) with labels y cycling over the classes, timed; ro, so: the
 * sampling options of eval_denoise. Under mpirun the images are split over the processes in
 * whole sampler batches (G: 64 = its chunks and its score-denoising batches; F: --batch), so
 * that each image is made as one process makes it, and gathered on rank 0 (collective).
 * 0 or -1 (the error set). */
static int generate(const eval_args *a, bf_flow *f, bf_reverse *r, bf_reverse_sample_opts *ro,
                    bf_sample_opts *so, float *x, int *y, int n, eval_result *res) {
    const bf_flow_config *fc = bf_flow_get_config(f);
    size_t N = (size_t)bf_flow_tokens(fc) * bf_flow_token_dim(fc);
    size_t img = (size_t)fc->in_channels * fc->img_size * fc->img_size;
    float *z = bf_malloc(sizeof(float) * n * N);
    bf_rng rng;
    bf_rng_seed(&rng, a->seed);
    for (size_t i = 0; i < n * N; i++) z[i] = bf_rng_normal(&rng);
    for (int i = 0; i < n; i++) y[i] = fc->num_classes ? i % fc->num_classes : -1;
    int unit = r ? 64 : a->batch, i0, i1;
    bf_dist_span(n, unit, bf_dist_rank(), &i0, &i1);
    double t0 = bf_time();
    int rc = sample_rows(a, f, r, ro, so, x + i0 * img, z + i0 * N, y + i0, i1 - i0, res);
    free(z);
    if (bf_dist_check(rc)) return -1;
    bf_dist_gather_root(x, n, unit, sizeof(float) * img);
    double seconds = bf_time() - t0;
    long nonfinite = 0;
    for (size_t i = 0; !r && i < (size_t)n * img; i++) nonfinite += !isfinite(x[i]);
    if (nonfinite && bf_dist_is_root()) printf("warning: %ld sampled values are NaN or Inf\n", nonfinite);
    res->images_per_s = n / seconds;
    res->ms_per_image = 1e3 * seconds / n;
    return 0;
}

/* ------------------------------------------------------------------ measures */
static int dataset_floats(float **x, const bf_dataset *ds, int n) {
    size_t px = (size_t)ds->c * ds->h * ds->w;
    *x = bf_malloc(sizeof(float) * n * px);
    for (size_t i = 0; i < n * px; i++) (*x)[i] = ds->pixels[i] / 127.5f - 1.0f;
    return 0;
}

/* FD of x (n images) against the features of the reference images, and class accuracy. */
static int quality(bf_features *fn, const bf_feature_stats *ref, const float *x, const int *y,
                   int n, eval_result *res) {
    int F = bf_features_dim(fn), *pred = bf_malloc(sizeof(int) * n);
    float *feats = bf_malloc(sizeof(float) * n * F);
    int rc = bf_features_extract(fn, feats, pred, x, n);
    bf_feature_stats s = {0};
    if (!rc) rc = bf_feature_stats_compute(&s, feats, n, F);
    if (!rc) rc = bf_frechet_distance_stats(&res->fd, &s, ref);
    int hits = 0, labelled = 0;
    for (int i = 0; y && i < n; i++)
        if (y[i] >= 0) { labelled++; hits += pred[i] == y[i]; }
    res->acc = labelled ? (double)hits / labelled : NAN;
    bf_feature_stats_free(&s);
    free(feats); free(pred);
    return rc;
}

static int split_stats(bf_feature_stats *s, bf_features *fn, const bf_dataset *ds, int n) {
    if (n <= 0 || n > ds->n) n = ds->n;
    int F = bf_features_dim(fn);
    float *x, *feats = bf_malloc(sizeof(float) * n * F);
    dataset_floats(&x, ds, n);
    int rc = bf_features_extract(fn, feats, NULL, x, n) || bf_feature_stats_compute(s, feats, n, F);
    free(x); free(feats);
    return rc ? -1 : 0;
}

/* ------------------------------------------------------------------ output */
static void print_result(const eval_args *a, const eval_result *r, int have_f, int have_g) {
    printf("samples:           %d (%s)\n", r->n, a->images ? a->images : a->reverse ? "biflow sampler" : a->sampler);
    printf("FD (test split):   %.3f   [features of %s]\n", r->fd, a->features);
    if (!isnan(r->acc)) printf("class accuracy:    %.2f%% of class-conditional samples recognised\n", 100 * r->acc);
    if (!a->images)
        printf("speed:             %.1f images/s, %.3f ms/image, %d NFE, %s matrix products\n",
               r->images_per_s, r->ms_per_image, r->nfe, bf_precision_name(bf_precision_effective()));
    if (r->floor_fd >= 0) printf("FD floor:          %.3f (test split against %d training images)\n", r->floor_fd, a->floor_n);
    if (have_f && a->bpd_n > 0) printf("bits/dim of F:     %.4f (%d test images)\n", r->bpd, a->bpd_n);
    if (have_g && a->fid_n > 0)
        printf("G(F(x)) vs x:      mse %.6f, PSNR %.2f dB (%d test images)\n", r->mse, r->psnr, a->fid_n);
}

static int append_row(const eval_args *a, const eval_result *r) {
    FILE *fp;
    if (a->md) {
        if (!(fp = fopen(a->md, "a"))) { bf_set_error("cannot append to %s", a->md); return -1; }
        fprintf(fp, "| %s | %.2f | %.1f%% | %d | %.3f | %d |\n", a->row ? a->row : "-", r->fd,
                100 * r->acc, r->nfe, r->ms_per_image, r->n);
        fclose(fp);
    }
    if (a->json) {
        if (!(fp = fopen(a->json, "a"))) { bf_set_error("cannot append to %s", a->json); return -1; }
        fprintf(fp, "{\"row\":\"%s\",\"fd\":%.4f,\"accuracy\":%.4f,\"nfe\":%d,\"ms_per_image\":%.4f,"
                "\"images_per_s\":%.2f,\"n\":%d,\"cfg\":%g,\"cfg_anneal\":%d,\"seed\":%llu,"
                "\"precision\":\"%s\"}\n",
                a->row ? a->row : "", r->fd, r->acc, r->nfe, r->ms_per_image, r->images_per_s, r->n,
                (double)a->cfg, a->cfg_anneal, (unsigned long long)a->seed,
                bf_precision_name(bf_precision_effective()));
        fclose(fp);
    }
    return 0;
}

/* The samples as scored (uint8, clamped and quantised) and their labels, for re-scoring. */
static int save_samples(const char *prefix, const float *x, const int *y, int n,
                        const bf_features_config *fc) {
    char path[4096];
    size_t px = (size_t)fc->in_channels * fc->height * fc->width;
    uint8_t *u = bf_malloc(px * n);
    int64_t *l = bf_malloc(sizeof(int64_t) * n);
    bf_images_to_u8(u, x, px * n);
    for (int i = 0; i < n; i++) l[i] = y[i];
    int64_t ish[4] = {n, fc->in_channels, fc->height, fc->width}, lsh[1] = {n};
    snprintf(path, sizeof path, "%s_images.npy", prefix);
    int rc = bf_write_npy(path, BF_DT_U8, 4, ish, u);
    snprintf(path, sizeof path, "%s_labels.npy", prefix);
    rc = rc || bf_write_npy(path, BF_DT_I64, 1, lsh, l);
    free(u); free(l);
    return rc ? -1 : 0;
}

/* ------------------------------------------------------------------ the command */
/* What one evaluation holds. */
typedef struct {
    bf_reverse *r;
    bf_flow *f;
    bf_reverse_sample_opts ro;
    bf_sample_opts so;
    bf_features *fn;
    bf_dataset test;
    bf_feature_stats ref;
    float *x;
    int *y;
} eval_env;

static void eval_close(eval_env *v) {
    free(v->x); free(v->y);
    bf_feature_stats_free(&v->ref);
    bf_dataset_free(&v->test);
    bf_features_free(v->fn);
    bf_reverse_free(v->r);
    bf_flow_free(v->f);
}

/* G and F (checked as a pair) and their sampling options, unless images are scored: 0, -1
 * (the error set) or a usage error (2, message printed). */
static int eval_models(const eval_args *a, eval_env *v) {
    if (a->images) return 0;
    if (a->reverse && !(v->r = bf_reverse_load(a->reverse, !a->raw))) return -1;
    const char *fpath = a->flow ? a->flow : v->r ? bf_reverse_flow_path(v->r) : NULL;
    if (!(v->f = bf_flow_load(fpath, !a->raw)) || (v->r && bf_reverse_check_flow(v->r, v->f, fpath)))
        return -1;
    return eval_denoise(a, v->f, v->r, &v->ro, &v->so);
}

/* The FD floor and fidelity of G, as asked for (bits/dim, collective, is in run_eval). */
static int eval_extras(const eval_args *a, eval_env *v, eval_result *res) {
    if (a->floor_n > 0) {
        bf_dataset train = {0};
        bf_feature_stats tr = {0};
        int rc = bf_dataset_load(&train, a->data, "train") || split_stats(&tr, v->fn, &train, a->floor_n) ||
                 bf_frechet_distance_stats(&res->floor_fd, &tr, &v->ref);
        bf_feature_stats_free(&tr);
        bf_dataset_free(&train);
        if (rc) return -1;
    }
    if (v->r && a->fid_n > 0 &&
        bf_reverse_eval_recon(v->r, v->f, &v->test, a->fid_n, 0.0f, 1234, &res->mse, &res->psnr))
        return -1;
    return 0;
}

/* The models first (a usage error before the long part), then the reference statistics, the
 * samples or images, and their scores. Under mpirun every process loads the models and the
 * test split, the sampling and bits/dim are split over the processes, and rank 0 measures the
 * gathered samples and reports (scored --images: rank 0 alone). */
static int run_eval(eval_args *a) {
    eval_result res = {0};
    res.floor_fd = -1;
    eval_env v = {0};
    int rc = eval_models(a, &v), root = bf_dist_is_root();
    if (bf_dist_check(rc == -1 ? -1 : 0)) goto done;
    if (rc) { eval_close(&v); return rc; }
    rc = -1;
    if (bf_dist_check(!(v.fn = bf_features_load(a->features)) || bf_dataset_load(&v.test, a->data, "test")))
        goto done;
    if (a->images) {   /* nothing to split: rank 0 alone */
        if (!root) { rc = 0; goto done; }
        bf_image_set in;
        if (images_for_features(&in, a->images, a->labels, 0, bf_features_get_config(v.fn))) goto done;
        v.x = in.x;   /* eval_close frees them */
        v.y = in.y;
        res.n = in.n;
    } else {
        const bf_flow_config *fc = bf_flow_get_config(v.f);
        res.n = a->n;
        v.x = bf_malloc(sizeof(float) * a->n * fc->in_channels * fc->img_size * fc->img_size);
        v.y = bf_malloc(sizeof(int) * a->n);
        if (generate(a, v.f, v.r, &v.ro, &v.so, v.x, v.y, a->n, &res)) goto done;
        if (a->bpd_n > 0 && bf_eval_bpd(v.f, &v.test, 256, a->bpd_n, 1234, &res.bpd, 0)) goto done;
    }
    if (!root) { rc = 0; goto done; }
    if (split_stats(&v.ref, v.fn, &v.test, 0) || quality(v.fn, &v.ref, v.x, v.y, res.n, &res) ||
        (a->save && !a->images && save_samples(a->save, v.x, v.y, res.n, bf_features_get_config(v.fn))) ||
        eval_extras(a, &v, &res))
        goto done;
    print_result(a, &res, v.f != NULL, v.r != NULL);
    rc = append_row(a, &res);
done:
    eval_close(&v);
    return rc ? cli_fail() : 0;
}

int cmd_eval(int argc, char **argv) {
    eval_args a = {0};
    a.features = "models/features-fmnist.safetensors";
    a.data = "fashion-mnist";
    a.sampler = "exact";
    a.denoise = "auto";
    a.n = 10000;
    a.bpd_n = 0;
    a.fid_n = 1000;
    a.batch = 64;
    a.sigma = -1.0f;
    cli_opt opts[] = {
        {"reverse", OPT_STR, &a.reverse, "evaluate the one-pass sampler of this reverse model G"},
        {"flow", OPT_STR, &a.flow, "forward model (default: G's); alone: evaluate its --sampler"},
        {"images", OPT_STR, &a.images, "evaluate a .npy of images instead: uint8 pixels or floats in [-1, 1], (n,H,W) or (n,C,H,W)"},
        {"labels", OPT_STR, &a.labels, "with --images: a .npy of their int64 labels (for the accuracy)"},
        CLI_CHOICE("sampler", a.sampler, "exact|jacobi", "with --flow only: F's sampler"),
        CLI_FEATURES_OPT(a.features),
        CLI_DATA_OPT(a.data, ": its test split is the reference"),
        {"n", OPT_INT, &a.n, "samples to generate (always printed)"},
        {"cfg", OPT_FLOAT, &a.cfg, "guidance w"},
        {"cfg-two-pass", OPT_FLAG, &a.cfg_two_pass, "G: inference-time guidance (2 NFE)"},
        {"cfg-anneal", OPT_FLAG, &a.cfg_anneal, "F's samplers: guidance rises linearly over the tokens"},
        {"save", OPT_STR, &a.save, "also write the scored samples: PREFIX_images.npy (uint8, as scored) and PREFIX_labels.npy"},
        CLI_CHOICE("denoise", a.denoise, "auto|score|learned|none", DENOISE_HELP),
        {"sigma", OPT_FLOAT, &a.sigma, "noise level of score denoising (<0: the model's recorded training sigma)"},
        {"batch", OPT_INT, &a.batch, "exact sampler: images per pass"},
        {"bpd-n", OPT_INT, &a.bpd_n, "also bits/dim of F on N test images (0 = skip)"},
        {"fidelity-n", OPT_INT, &a.fid_n, "G(F(x)) vs x on N test images (0 = skip)"},
        {"floor-n", OPT_INT, &a.floor_n, "FD of N training images against the test split (0 = skip)"},
        CLI_ALIAS("bpd", "bpd-n"), CLI_ALIAS("fidelity", "fidelity-n"), CLI_ALIAS("floor", "floor-n"),
        {"seed", OPT_U64, &a.seed, "noise seed"},
        CLI_RAW_OPT(a.raw),
        {"row", OPT_STR, &a.row, "name of this configuration in --md / --json"},
        {"md", OPT_STR, &a.md, "append a Markdown table row: name | FD | accuracy | NFE | ms/image | N"},
        {"json", OPT_STR, &a.json, "append a JSON line with the figures"},
        CLI_COMPUTE_OPTS,
        CLI_END,
    };
    int rc = cli_options(argc, argv, 2, opts);
    if (rc != CLI_GO) return rc;
    if ((rc = cli_check_int("n", a.n, 2, CLI_MAX_SAMPLES)) || (rc = cli_check_float("cfg", a.cfg, 0, 1e6)) ||
        (rc = cli_check_int("batch", a.batch, 1, 1 << 20)) || (rc = cli_check_int("bpd-n", a.bpd_n, 0, 1000000000)) ||
        (rc = cli_check_int("fidelity-n", a.fid_n, 0, 1000000000)) ||
        (rc = cli_check_int("floor-n", a.floor_n, 0, 1000000000)))
        return rc;
    if (!a.reverse && !a.flow && !a.images) return cli_usage("give --reverse, --flow or --images");
    if (a.reverse && cli_given("sampler")) return cli_usage("--sampler is F's: with --reverse the sampler is G");
    return run_eval(&a);
}
