/* biflow commands that edit images through a model pair (METHOD Section 9): inpaint, edit,
 * reconstruct, interpolate. Each loads G, the F it was trained against (refusing another),
 * and the images (refusing another size), then calls one library entry point of src/edit.c. */
#include "biflow.h"
#include "cli.h"
#include "commands.h"
#include "edit_measure.h"
#include "tool_util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define LIST_MAX 8   /* per-image error lines printed before the summary */

/* Options every editing command shares. */
typedef struct {
    const char *reverse, *flow, *images, *data, *classes, *out, *denoise;
    int n, raw, show, scale;
    float cfg;
} edit_args;

#define EDIT_ARGS_DEFAULT(out) {NULL, NULL, NULL, "fashion-mnist", "auto", out, "auto", 8, 0, 16, 2, 0.0f}

#define EDIT_COMMON_OPTS(a)                                                                      \
    CLI_PAIR_OPTS((a).reverse, (a).flow),                                                        \
    CLI_RAW_OPT((a).raw),                                                                        \
    {"images", OPT_STR, &(a).images, "input images: X.npy (uint8 (n,H,W) or (n,C,H,W), or floats in [-1,1]) or X.png"}, \
    CLI_DATA_OPT((a).data, ": without --images, its test split (with labels)"),                  \
    CLI_FIRST_N_OPT((a).n),                                                                      \
    {"class", OPT_STR, &(a).classes, "labels: auto (the data's; else the class under which F finds each image likeliest), none, K or K,K,.."}, \
    {"cfg", OPT_FLOAT, &(a).cfg, "guidance weight w of G"},                                      \
    CLI_CHOICE("denoise", (a).denoise, "auto|learned|none", "learned (G's denoising stage), none (its noisy-data estimate) or auto (learned when G has the stage)"), \
    CLI_IMAGES_OUT_OPTS((a).out, (a).scale),                                                     \
    {"show", OPT_INT, &(a).show, "images (grid rows) in the PNG"},                               \
    CLI_COMPUTE_OPTS

/* The loaded pair and images of one command. */
typedef struct {
    bf_reverse *r;
    bf_flow *f;
    bf_editor e;
    bf_image_set in;
    int img, patch, T, K;
    size_t px;                 /* floats per image */
    char flow_path[4096];      /* where F was loaded from */
} edit_env;

static void edit_close(edit_env *v) {
    bf_image_set_free(&v->in);
    bf_flow_free(v->f);
    bf_reverse_free(v->r);
}

/* Labels of --class; "auto" keeps the data's and asks F for the others. */
static int set_labels(edit_env *v, const char *spec) {
    bf_image_set *in = &v->in;
    int has = 0, ncols;
    for (int i = 0; i < in->n; i++) has |= in->y[i] >= 0;
    if (v->K == 0 || strcmp(spec, "auto")) return parse_classes(in->y, in->n, spec, v->K, &ncols);
    if (has) return 0;
    double t0 = bf_time();
    if (bf_flow_classify(v->f, in->y, in->x, in->n)) return -1;
    printf("labels: the class under which F finds each image likeliest (%d encodings per image, "
           "%.2f s)\n", v->K, bf_time() - t0);
    return 0;
}

/* Two image files given as arguments become images 0 and 1 of one set. */
static int load_pair(edit_env *v, const char *b) {
    bf_image_set s;
    if (bf_image_set_load(&s, b, 1)) return -1;
    if (s.c != v->in.c || s.h != v->in.h || s.w != v->in.w) {
        bf_set_error("'%s' is %dx%dx%d but the first image is %dx%dx%d", b, s.w, s.h, s.c,
                     v->in.w, v->in.h, v->in.c);
        bf_image_set_free(&s);
        return -1;
    }
    size_t px = (size_t)s.c * s.h * s.w;
    v->in.x = bf_realloc(v->in.x, sizeof(float) * 2 * px);
    v->in.y = bf_realloc(v->in.y, sizeof(int) * 2);
    memcpy(v->in.x + px, s.x, sizeof(float) * px);
    v->in.y[1] = s.y[0];
    v->in.n = 2;
    bf_image_set_free(&s);
    return 0;
}

static int check_common(const edit_args *a, const char *cmd) {
    int rc;
    if (!a->reverse) return cli_usage("--reverse is required");
    if ((rc = cli_check_int("n", a->n, 0, 1000000000)) || (rc = cli_check_int("show", a->show, 0, 1000000)) ||
        (rc = cli_check_int("scale", a->scale, 1, 32)) || (rc = cli_check_float("cfg", a->cfg, 0, 1e6)))
        return rc;
    return 0;
}

/* Checks the common options, loads G, its F and the images (spec, limit; second: a file
 * whose image is appended, or NULL). 0 when ready; otherwise the exit status (2 usage,
 * 1 failure, message printed). */
static int edit_open(edit_env *v, const edit_args *a, const char *cmd, const char *spec, int limit,
                     const char *second) {
    memset(v, 0, sizeof *v);
    int rc = check_common(a, cmd);
    if (rc) return rc;
    if (!(v->r = bf_reverse_load(a->reverse, !a->raw)) || !(v->f = paired_flow(v->r, a->flow, a->reverse)) ||
        bf_image_set_load(&v->in, spec, limit)) {
        edit_close(v);
        return cli_fail();
    }
    const bf_reverse_config *c = bf_reverse_get_config(v->r);
    v->img = c->img_size;
    v->patch = c->patch_size;
    v->T = (v->img / v->patch) * (v->img / v->patch);
    v->K = c->num_classes;
    v->px = (size_t)c->in_channels * v->img * v->img;
    if (second && load_pair(v, second)) {
        edit_close(v);
        return cli_fail();
    }
    snprintf(v->flow_path, sizeof v->flow_path, "%s", a->flow ? a->flow : "");
    if (!a->flow && bf_reverse_find_flow(v->r, a->reverse, v->flow_path, sizeof v->flow_path)) {
        edit_close(v);
        return cli_fail();
    }
    bf_editor_init(&v->e, v->r, v->f, v->flow_path);
    v->e.cfg = a->cfg;
    if (strcmp(a->denoise, "auto")) v->e.denoise = !strcmp(a->denoise, "learned");
    if (bf_editor_check(&v->e, v->in.c, v->in.h, v->in.w) || set_labels(v, a->classes)) {
        edit_close(v);
        return cli_fail();
    }
    return 0;
}

static const char *decoding(const edit_env *v) {
    if (v->e.exact) return v->e.denoise ? "score-based denoising" : "no denoising";
    return v->e.denoise ? "learned denoising" : "no denoising";
}

/* Grid cell (row, col) of a grid ncols wide, images of px floats. */
static void put(float *grid, int row, int col, int ncols, const float *img, size_t px) {
    memcpy(grid + ((size_t)row * ncols + col) * px, img, sizeof(float) * px);
}

static int write_grid(const char *prefix, const float *grid, int rows, int ncols,
                      const edit_env *v, int scale) {
    char path[4096];
    snprintf(path, sizeof path, "%s.png", prefix);
    return bf_write_image_grid(path, grid, rows * ncols, v->in.c, v->img, v->img, ncols, scale);
}

static int rows_shown(const edit_args *a, int n) { return a->show < n ? a->show : n; }

/* ------------------------------------------------------------------ inpaint */
static double cpu_seconds(void) { return (double)clock() / CLOCKS_PER_SEC; }

/* Errors of out (and of the decoder's own output raw, before the paste) against the input. */
static void report_inpaint(const edit_env *v, const float *out, const float *raw,
                           const uint8_t *pix, double sec, double cpu) {
    const bf_image_set *in = &v->in;
    double k, u, kr, ur, k0, u0;
    bf_pixmask_mse(&k, &u, out, in->x, pix, in->n, in->c, v->img);
    bf_pixmask_mse(&kr, &ur, raw, in->x, pix, in->n, in->c, v->img);
    float *grey = bf_malloc(sizeof(float) * in->n * v->px);
    memcpy(grey, in->x, sizeof(float) * in->n * v->px);
    bf_pixmask_fill(grey, pix, 0.0f, in->n, in->c, v->img);
    bf_pixmask_mse(&k0, &u0, grey, in->x, pix, in->n, in->c, v->img);
    free(grey);
    printf("  mse in the known region   %.5f (the input's pixels pasted back; the decoder's own "
           "output there: %.5f, PSNR %.2f dB)\n", k, kr, 10.0 * log10(4.0 / kr));
    printf("  mse in the unknown region %.5f (PSNR %.2f dB; grey fill: %.5f)\n", u,
           10.0 * log10(4.0 / u), u0);
    printf("  %.2f s for %d images: %.2f ms/image wall, %.2f ms/image CPU (all threads)\n", sec,
           in->n, 1e3 * sec / in->n, 1e3 * cpu / in->n);
}

/* The PNG (input | masked input | result per row) and the arrays. */
static int write_inpaint(const edit_env *v, const edit_args *a, const float *out,
                         const uint8_t *pix) {
    int rows = rows_shown(a, v->in.n), rc = 0;
    float *grid = bf_malloc(sizeof(float) * 3 * (rows ? rows : 1) * v->px);
    for (int i = 0; i < rows; i++) {
        put(grid, i, 0, 3, v->in.x + i * v->px, v->px);
        put(grid, i, 1, 3, v->in.x + i * v->px, v->px);   /* shows what the decoder was not given */
        bf_pixmask_fill(grid + (3 * i + 1) * v->px, pix, BF_MASK_SHOW, 1, v->in.c, v->img);
        put(grid, i, 2, 3, out + i * v->px, v->px);
    }
    if (rows && write_grid(a->out, grid, rows, 3, v, a->scale)) rc = -1;
    else if (write_arrays(a->out, out, v->in.y, v->in.n, v->in.c, v->img, v->img)) rc = -1;
    else printf("wrote %s.png (input | masked input | result, %d rows), %s.npy, %s_labels.npy\n",
                a->out, rows, a->out, a->out);
    free(grid);
    return rc;
}

/* Images as saved: clamped to [-1, 1]. */
static void clamp_images(float *x, size_t m) {
    for (size_t i = 0; i < m; i++) x[i] = x[i] < -1.0f ? -1.0f : x[i] > 1.0f ? 1.0f : x[i];
}

/* The completion by the chosen decoder, or by grey fill (the reference without a model). */
static int inpaint_by(edit_env *v, float *out, float *raw, const uint8_t *pix,
                      const bf_inpaint_opts *o, int grey) {
    if (!grey) return bf_inpaint(&v->e, out, raw, &v->in, pix, o);
    memcpy(out, v->in.x, sizeof(float) * v->in.n * v->px);
    bf_pixmask_fill(out, pix, 0.0f, v->in.n, v->in.c, v->img);
    memcpy(raw, out, sizeof(float) * v->in.n * v->px);
    return 0;
}

static void describe_inpaint(const edit_env *v, const edit_args *a, const char *mask_spec,
                             const uint8_t *pix, const bf_inpaint_opts *o, int grey) {
    int known = 0;
    for (int i = 0; i < v->img * v->img; i++) known += pix[i];
    printf("inpainted %d images: mask %s (%d of %d pixels known), ", v->in.n, mask_spec, known,
           v->img * v->img);
    if (grey) {
        printf("grey fill (no model)\n");
        return;
    }
    printf("%s, %d round%s after the first (renoise %g, soft %g, %d candidate%s); %s with %s, "
           "guidance %g\n", o->encode_full ? "encoded from the whole input" :
           "encoded with the unknown region grey", o->iters, o->iters == 1 ? "" : "s",
           (double)o->renoise, (double)o->soft, o->candidates > 1 ? o->candidates : 1,
           o->candidates > 1 ? "s" : "",
           v->e.exact ? "exact inverse of F" : "G", decoding(v), (double)a->cfg);
}

static int inpaint_run(edit_env *v, const edit_args *a, const char *mask_spec,
                       const bf_inpaint_opts *o, int grey, const char *features) {
    uint8_t *pix = bf_malloc((size_t)v->img * v->img);
    float *out = bf_malloc(sizeof(float) * v->in.n * v->px);
    float *raw = bf_malloc(sizeof(float) * v->in.n * v->px);
    double t0 = bf_time(), c0 = cpu_seconds(), fd, acc;
    int rc = bf_mask_parse_pixels(pix, mask_spec, v->img, v->patch) ||
             inpaint_by(v, out, raw, pix, o, grey);
    double sec = bf_time() - t0, cpu = cpu_seconds() - c0;
    clamp_images(out, v->in.n * v->px);   /* measured as saved */
    clamp_images(raw, v->in.n * v->px);
    if (rc == 0) {
        describe_inpaint(v, a, mask_spec, pix, o, grey);
        report_inpaint(v, out, raw, pix, sec, cpu);
    }
    if (rc == 0 && features) {
        rc = feature_quality(features, a->data, out, v->in.y, v->in.n, &fd, &acc);
        if (rc == 0)
            printf("  completions: FD %.2f against the test split, class accuracy %.1f%% (label: "
                   "the source's; %d images)\n", fd, 100.0 * acc, v->in.n);
    }
    if (rc == 0) rc = write_inpaint(v, a, out, pix);
    free(pix); free(out); free(raw);
    return rc ? cli_fail() : 0;
}

int cmd_inpaint(int argc, char **argv) {
    edit_args a = EDIT_ARGS_DEFAULT("inpaint");
    const char *mask_spec = NULL, *encode = "masked", *decoder = "g", *features = NULL;
    bf_inpaint_opts o;
    bf_inpaint_opts_default(&o);
    cli_opt opts[] = {
        EDIT_COMMON_OPTS(a),
        {"mask", OPT_STR, &mask_spec, "the KNOWN region: left-half, right-half, top-half, bottom-half, center, border, random-patches[:FRACTION[:SEED]], or a PNG of the image size (white = known, pixel for pixel)"},
        {"iters", OPT_INT, &o.iters, "K: rounds of paste the known pixels, re-encode, renoise the unknown tokens, decode (0 = one pass)"},
        {"renoise", OPT_FLOAT, &o.renoise, "fresh noise in the unknown tokens in those rounds, 0..1"},
        {"candidates", OPT_INT, &o.candidates, "noise draws decoded per round; each image keeps the decode closest to its known pixels"},
        {"soft", OPT_FLOAT, &o.soft, "soft boundary: token weights blurred over the token grid by this much, 0..1"},
        CLI_CHOICE("decoder", decoder, "g|exact|grey", "g (one pass of G), exact (the exact inverse of F: the slow baseline; --denoise: score) or grey (grey fill, no model: the reference)"),
        CLI_CHOICE("encode", encode, "masked|full", "masked: F sees the unknown region grey (no information leaks from it); full: F sees the whole input"),
        {"seed", OPT_U64, &o.seed, "seed of the fresh noise"},
        {"features", OPT_STR, &features, "feature network: also print the completions' FD against the test split and class accuracy"},
        CLI_END,
    };
    int rc = cli_options(argc, argv, 2, opts);
    if (rc != CLI_GO) return rc;
    if (!mask_spec) return cli_usage("--mask is required");
    if ((rc = cli_check_int("iters", o.iters, 0, 1000)) || (rc = cli_check_int("candidates", o.candidates, 0, 1000)) ||
        (rc = cli_check_float("renoise", o.renoise, 0, 1)) || (rc = cli_check_float("soft", o.soft, 0, 1)))
        return rc;
    o.encode_full = !strcmp(encode, "full");
    edit_env v;
    if ((rc = edit_open(&v, &a, "inpaint", a.images ? a.images : a.data, a.n, NULL))) return rc;
    v.e.exact = !strcmp(decoder, "exact");
    rc = inpaint_run(&v, &a, mask_spec, &o, !strcmp(decoder, "grey"), features);
    edit_close(&v);
    return rc;
}

/* ------------------------------------------------------------------ edit */
/* Number of entries of a --to list ("all": every class). */
static int count_targets(const char *spec, int K) {
    if (!strcmp(spec, "all")) return K;
    int k = 1;
    for (const char *p = spec; *p; p++) k += *p == ',';
    return k;
}

/* Keeps the images whose label is in the list spec ("all": every image). */
static int keep_classes(edit_env *v, const char *spec) {
    if (!strcmp(spec, "all")) return 0;
    int k = count_targets(spec, v->K), ncols, *from = bf_malloc(sizeof(int) * k), m = 0;
    if (parse_classes(from, k, spec, v->K, &ncols)) {
        free(from);
        return -1;
    }
    for (int i = 0; i < v->in.n; i++) {
        int keep = 0;
        for (int j = 0; j < k; j++) keep |= v->in.y[i] == from[j];
        if (!keep) continue;
        memmove(v->in.x + m * v->px, v->in.x + i * v->px, sizeof(float) * v->px);
        v->in.y[m++] = v->in.y[i];
    }
    free(from);
    if (m == 0) {
        bf_set_error("--from %s: none of the images has one of these labels", spec);
        return -1;
    }
    v->in.n = m;
    return 0;
}

/* The PNG (input, then a column per target) and the arrays. */
static int write_edits(const edit_env *v, const edit_args *a, const float *out,
                       const int *targets, int k) {
    int n = v->in.n, rows = rows_shown(a, n), rc = 0;
    float *grid = bf_malloc(sizeof(float) * (rows ? rows : 1) * (k + 1) * v->px);
    int *labels = bf_malloc(sizeof(int) * n * k);
    for (int i = 0; i < rows; i++) {
        put(grid, i, 0, k + 1, v->in.x + i * v->px, v->px);
        for (int j = 0; j < k; j++) put(grid, i, j + 1, k + 1, out + ((size_t)i * k + j) * v->px, v->px);
    }
    for (int i = 0; i < n * k; i++) labels[i] = targets[i % k];
    if (rows && write_grid(a->out, grid, rows, k + 1, v, a->scale)) rc = -1;
    else if (write_arrays(a->out, out, labels, n * k, v->in.c, v->img, v->img)) rc = -1;
    else printf("wrote %s.png (%d rows), %s.npy (%d images: image-major, a target each), %s_labels.npy\n",
                a->out, rows, a->out, n * k, a->out);
    free(grid); free(labels);
    return rc;
}

static int edit_run(edit_env *v, const edit_args *a, const char *to, const bf_edit_opts *o,
                    const char *features) {
    int k = count_targets(to, v->K), ncols, n = v->in.n, rc = 0;
    int *targets = bf_malloc(sizeof(int) * k);
    float *out = bf_malloc(sizeof(float) * n * k * v->px);
    double t0 = bf_time(), c0 = cpu_seconds();
    if (parse_classes(targets, k, to, v->K, &ncols)) {
        rc = cli_usage("--to: '%s' is not 'all' or a list of classes in [0, %d)", to, v->K);
    } else if (bf_edit_class(&v->e, out, &v->in, targets, k, o) == 0) {
        double sec = bf_time() - t0, cpu = cpu_seconds() - c0;
        printf("edited %d images to %d classes in %.2f s: %.2f ms/edit wall, %.2f ms/edit CPU (all "
               "threads); ", n, k, sec, 1e3 * sec / (n * k), 1e3 * cpu / (n * k));
        if (o->verify) printf("strength %g..%g, the first the verifier reads as the target", (double)o->min_strength, (double)o->strength);
        else printf("strength %g", (double)o->strength);
        printf("; %s with %s, guidance %g; columns: input, then classes",
               v->e.exact ? "exact inverse of F" : "G", decoding(v), (double)a->cfg);
        for (int j = 0; j < k; j++) printf(" %d", targets[j]);
        printf("\n");
        if ((features && edit_measure(features, a->data, &v->in, out, targets, k)) ||
            write_edits(v, a, out, targets, k))
            rc = cli_fail();
    } else {
        rc = cli_fail();
    }
    free(targets); free(out);
    return rc;
}

/* The verifier of --verify ("none": NULL, *rc 0); NULL with *rc set when it cannot be loaded. */
static bf_features *load_verifier(const char *path, int *rc) {
    *rc = 0;
    if (!strcmp(path, "none")) return NULL;
    bf_features *fn = bf_features_load(path);
    if (!fn) {
        char why[1024];
        snprintf(why, sizeof why, "%s", bf_last_error());
        bf_set_error("--verify: %s (give the perceptual network's file, or --verify none)", why);
        *rc = cli_fail();
    }
    return fn;
}

int cmd_edit(int argc, char **argv) {
    edit_args a = EDIT_ARGS_DEFAULT("edit");
    const char *to = NULL, *features = NULL, *from = "all", *verify = BF_EDIT_VERIFY;
    bf_edit_opts o;
    bf_edit_opts_default(&o);
    o.strength = -1.0f;   /* unset: BF_EDIT_STRENGTH with a verifier, BF_EDIT_STRENGTH_ALONE without */
    o.min_strength = BF_EDIT_MIN_STRENGTH;
    int exact = 0;
    cli_opt opts[] = {
        EDIT_COMMON_OPTS(a),
        {"to", OPT_STR, &to, "target classes: K[,K...] or all"},
        {"strength", OPT_FLOAT, &o.strength, "0..16: 1 decodes F(x | y) as the target (one pass); below, a noise-space mix with F(x | target) that keeps more of the input; above, more passes (2.5: two passes and a half). With --verify: the ladder's top (default 4; without a verifier 2)"},
        {"min-strength", OPT_FLOAT, &o.min_strength, "with --verify: the ladder's first rung (then steps of 0.25)"},
        {"verify", OPT_STR, &verify, "a classifier (not the evaluation network): each edit takes the first strength of the ladder it reads as the target; none: --strength itself"},
        {"from", OPT_STR, &from, "edit only the images whose label is in K[,K...] (default all)"},
        {"exact", OPT_FLAG, &exact, "decode with the exact inverse of F instead of G (the slow baseline)"},
        {"features", OPT_STR, &features, "feature network: also print how often it recognises the target class and how much of the source the edits keep"},
        CLI_END,
    };
    int rc = cli_options(argc, argv, 2, opts);
    if (rc != CLI_GO) return rc;
    if (!to) return cli_usage("--to is required");
    edit_env v;
    if ((rc = edit_open(&v, &a, "edit", a.images ? a.images : a.data, a.n, NULL))) return rc;
    v.e.exact = exact;
    o.verify = load_verifier(verify, &rc);
    if (o.strength < 0.0f) o.strength = o.verify ? BF_EDIT_STRENGTH : BF_EDIT_STRENGTH_ALONE;
    if (!rc && v.K == 0) {
        bf_set_error("the models are unconditional: there is no class to edit to");
        rc = cli_fail();
    } else if (!rc) {
        rc = keep_classes(&v, from) ? cli_fail() : edit_run(&v, &a, to, &o, features);
    }
    bf_features_free(o.verify);
    edit_close(&v);
    return rc;
}

/* ------------------------------------------------------------------ reconstruct */
static double psnr_of(double mse) { return 10.0 * log10(4.0 / mse); }

static void report_reconstruction(const edit_env *v, const float *out) {
    int n = v->in.n, worst = 0;
    double sum = 0.0, psum = 0.0, *mse = bf_malloc(sizeof(double) * n);
    for (int i = 0; i < n; i++) {
        double s = 0.0;
        for (size_t j = 0; j < v->px; j++) {
            double d = (double)out[i * v->px + j] - v->in.x[i * v->px + j];
            s += d * d;
        }
        mse[i] = s / (double)v->px;
        sum += mse[i];
        psum += psnr_of(mse[i]);
        if (mse[i] > mse[worst]) worst = i;
        if (i < LIST_MAX)
            printf("  image %4d (label %2d): mse %.6f  PSNR %6.2f dB\n", i, v->in.y[i], mse[i], psnr_of(mse[i]));
    }
    printf("all %d images: mean mse %.6f (PSNR %.2f dB), mean PSNR %.2f dB; worst: image %d, mse "
           "%.6f (PSNR %.2f dB)\n", n, sum / n, psnr_of(sum / n), psum / n, worst, mse[worst],
           psnr_of(mse[worst]));
    free(mse);
}

int cmd_reconstruct(int argc, char **argv) {
    edit_args a = EDIT_ARGS_DEFAULT("reconstruct");
    cli_opt opts[] = {EDIT_COMMON_OPTS(a), CLI_END};
    int rc = cli_options(argc, argv, 2, opts);
    if (rc != CLI_GO) return rc;
    edit_env v;
    if ((rc = edit_open(&v, &a, "reconstruct", a.images ? a.images : a.data, a.n, NULL))) return rc;
    int n = v.in.n, rows = rows_shown(&a, n);
    float *out = bf_malloc(sizeof(float) * n * v.px), *grid = NULL;
    double t0 = bf_time();
    if (bf_reconstruct(&v.e, out, &v.in)) {
        rc = cli_fail();
        goto done;
    }
    printf("reconstructed %d images in %.2f s (G with %s, guidance %g):\n", n, bf_time() - t0,
           decoding(&v), (double)a.cfg);
    report_reconstruction(&v, out);
    grid = bf_malloc(sizeof(float) * rows * 2 * v.px);
    for (int i = 0; i < rows; i++) {
        put(grid, i, 0, 2, v.in.x + i * v.px, v.px);
        put(grid, i, 1, 2, out + i * v.px, v.px);
    }
    if (rows && write_grid(a.out, grid, rows, 2, &v, a.scale)) rc = cli_fail();
    else if (write_arrays(a.out, out, v.in.y, n, v.in.c, v.img, v.img)) rc = cli_fail();
    else printf("wrote %s.png (input | reconstruction, %d rows), %s.npy, %s_labels.npy\n", a.out,
                rows, a.out, a.out);
done:
    free(out); free(grid);
    edit_close(&v);
    return rc;
}

/* ------------------------------------------------------------------ interpolate */
/* One label for both ends: theirs when they agree, else the unconditional one. */
static int common_label(const edit_env *v, int ia, int ib) {
    int ya = v->in.y[ia], yb = v->in.y[ib];
    if (ya == yb) return ya;
    printf("the two images have labels %d and %d: encoding and decoding unconditionally "
           "(--class K to choose one)\n", ya, yb);
    return -1;
}

int cmd_interpolate(int argc, char **argv) {
    edit_args a = EDIT_ARGS_DEFAULT("interpolate");
    const char *index = "0,1";
    int steps = 8;
    cli_opt opts[] = {
        EDIT_COMMON_OPTS(a),
        {"index", OPT_STR, &index, "I,J: the two images of --images/--data to join"},
        {"steps", OPT_INT, &steps, "points on the path, both ends included"},
        CLI_END,
    };
    const char *pos[2];
    int np, rc = cli_parse(argc, argv, 2, opts, pos, 2, &np);
    if (rc != CLI_GO) return rc;
    int ia = 0, ib = 1;
    if (np == 1 || steps < 2 || steps > 1024 ||
        (np == 0 && (sscanf(index, "%d,%d", &ia, &ib) != 2 || ia < 0 || ib < 0))) {
        return cli_usage("give two image files or --index I,J (I, J >= 0), and --steps in 2..1024");
    }
    edit_env v;
    const char *spec = np == 2 ? pos[0] : a.images ? a.images : a.data;
    if ((rc = edit_open(&v, &a, "interpolate", spec, np == 2 ? 1 : (ia > ib ? ia : ib) + 1,
                        np == 2 ? pos[1] : NULL)))
        return rc;
    float *out = bf_malloc(sizeof(float) * steps * v.px);
    int *labels = bf_malloc(sizeof(int) * steps);
    double angle, t0 = bf_time();
    if (ia >= v.in.n || ib >= v.in.n) {
        bf_set_error("--index %d,%d: the images hold only %d", ia, ib, v.in.n);
        rc = cli_fail();
        goto done;
    }
    int y = common_label(&v, ia, ib);
    if (bf_interpolate(&v.e, out, &v.in, ia, ib, y, steps, &angle)) {
        rc = cli_fail();
        goto done;
    }
    for (int s = 0; s < steps; s++) labels[s] = y;
    printf("interpolated images %d and %d in %d steps in %.2f s: the encodings are %.1f degrees "
           "apart (G with %s, guidance %g)\n", ia, ib, steps, bf_time() - t0, angle * 180.0 / M_PI,
           decoding(&v), (double)a.cfg);
    if (write_outputs(a.out, out, labels, steps, v.in.c, v.img, v.img, steps, a.scale)) rc = cli_fail();
    else printf("wrote %s.png (one row), %s.npy, %s_labels.npy\n", a.out, a.out, a.out);
done:
    free(out); free(labels);
    edit_close(&v);
    return rc;
}
