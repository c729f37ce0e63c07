/* biflow demo: what the project does, in about a minute on 2 cores, with the shipped models:
 * both samplers on the same noise, an inpainting and a class-editing example, the measured
 * speed-up and evaluation figures. `biflow demo --train` reproduces the shipped models. */
#include "biflow.h"
#include "cli.h"
#include "commands.h"
#include "tool_util.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

typedef struct {
    const char *flow, *reverse, *features, *perceptual, *out;
    float cfg_exact, cfg_biflow;   /* each sampler at its best guidance (docs/RESULTS.md) */
    int eval_n;
} demo_args;

static int path_in(char *buf, size_t n, const char *dir, const char *name) {
    if ((size_t)snprintf(buf, n, "%s/%s", dir, name) >= n) {
        bf_set_error("path too long: %s/%s", dir, name);
        return -1;
    }
    return 0;
}

/* 100 class-conditional samples (a row per class) from each sampler on the same noise;
 * seconds of each in t_exact, t_biflow. */
static int demo_samples(const demo_args *a, bf_flow *f, bf_reverse *r, double *t_exact,
                        double *t_biflow) {
    const bf_flow_config *c = bf_flow_get_config(f);
    int n = 100, K = c->num_classes ? c->num_classes : 1;
    size_t N = (size_t)bf_flow_tokens(c) * bf_flow_token_dim(c);
    float *z = bf_malloc(sizeof(float) * n * N), *x = bf_malloc(sizeof(float) * n * N);
    int *y = bf_malloc(sizeof(int) * n);
    bf_rng rng;
    bf_rng_seed(&rng, 0);
    for (size_t i = 0; i < n * N; i++) z[i] = bf_rng_normal(&rng);
    for (int i = 0; i < n; i++) y[i] = c->num_classes ? i / (n / K) : -1;
    char path[4096];
    bf_sample_opts so;
    bf_sample_opts_default(&so);
    so.cfg = a->cfg_exact;
    so.denoise = 1;
    so.sigma = bf_reverse_sigma(r) > 0 ? bf_reverse_sigma(r) : 0.05f;
    bf_sample_stats st;
    int rc = bf_flow_sample(f, x, z, y, n, &so, &st);
    *t_exact = st.seconds;
    rc = rc || path_in(path, sizeof path, a->out, "samples_exact.png") ||
         bf_write_image_grid(path, x, n, c->in_channels, c->img_size, c->img_size, n / K, 2);
    bf_reverse_sample_opts ro;
    bf_reverse_sample_opts_default(&ro);
    ro.cfg = a->cfg_biflow;
    rc = rc || bf_reverse_sample(r, x, z, y, n, &ro, &st);
    *t_biflow = st.seconds;
    rc = rc || path_in(path, sizeof path, a->out, "samples_biflow.png") ||
         bf_write_image_grid(path, x, n, c->in_channels, c->img_size, c->img_size, n / K, 2);
    free(z); free(x); free(y);
    return rc ? -1 : 0;
}

/* Inpainting of test images with the left half known; rows: input | masked input | one pass
 * of G | the default scheme (rounds and candidates). */
static int demo_inpaint(const demo_args *a, bf_editor *e, const bf_image_set *in) {
    const bf_reverse_config *c = bf_reverse_get_config(e->reverse);
    int n = in->n;
    size_t img = (size_t)in->c * in->h * in->w;
    uint8_t *pix = bf_malloc((size_t)in->h * in->w);
    float *grid = bf_malloc(sizeof(float) * img * n * 4), *out = bf_malloc(sizeof(float) * img * n);
    float *one = bf_malloc(sizeof(float) * img * n);
    char path[4096];
    bf_inpaint_opts io, o1;
    bf_inpaint_opts_default(&io);
    o1 = io;
    o1.iters = 0;
    o1.candidates = 1;
    int rc = bf_mask_parse_pixels(pix, "left-half", c->img_size, c->patch_size) ||
             bf_inpaint(e, one, NULL, in, pix, &o1) || bf_inpaint(e, out, NULL, in, pix, &io);
    for (int i = 0; !rc && i < n; i++) {
        memcpy(grid + (4 * i) * img, in->x + i * img, sizeof(float) * img);
        memcpy(grid + (4 * i + 1) * img, in->x + i * img, sizeof(float) * img);
        bf_pixmask_fill(grid + (4 * i + 1) * img, pix, BF_MASK_SHOW, 1, in->c, c->img_size);
        memcpy(grid + (4 * i + 2) * img, one + i * img, sizeof(float) * img);
        memcpy(grid + (4 * i + 3) * img, out + i * img, sizeof(float) * img);
    }
    rc = rc || path_in(path, sizeof path, a->out, "inpaint.png") ||
         bf_write_image_grid(path, grid, 4 * n, in->c, in->h, in->w, 4, 2);
    if (!rc)
        printf("inpainting (left half known): one pass of G, and %d rounds with %d candidates; the "
               "known pixels are the input's\n", io.iters, io.candidates);
    free(pix); free(grid); free(out); free(one);
    return rc ? -1 : 0;
}

/* Class editing of test images to every class, each edit the gentlest strength of the ladder
 * that the perceptual network (not the evaluation network) reads as the target. */
static int demo_edit(const demo_args *a, bf_editor *e, const bf_image_set *in) {
    int n = in->n, K = bf_reverse_get_config(e->reverse)->num_classes;
    if (K < 2) return 0;
    size_t img = (size_t)in->c * in->h * in->w;
    float *grid = bf_malloc(sizeof(float) * img * n * (K + 1)), *out = bf_malloc(sizeof(float) * img * n * K);
    int *targets = bf_malloc(sizeof(int) * K), rc = 0;
    for (int k = 0; k < K; k++) targets[k] = k;
    char path[4096];
    bf_edit_opts eo;
    bf_edit_opts_default(&eo);
    eo.strength = BF_EDIT_STRENGTH;
    eo.min_strength = BF_EDIT_MIN_STRENGTH;
    if (!(eo.verify = bf_features_load(a->perceptual))) rc = -1;
    rc = rc || bf_edit_class(e, out, in, targets, K, &eo);
    for (int i = 0; !rc && i < n; i++) {   /* rows: input, then the image edited to each class */
        memcpy(grid + (size_t)i * (K + 1) * img, in->x + i * img, sizeof(float) * img);
        memcpy(grid + ((size_t)i * (K + 1) + 1) * img, out + (size_t)i * K * img, sizeof(float) * img * K);
    }
    rc = rc || path_in(path, sizeof path, a->out, "edit.png") ||
         bf_write_image_grid(path, grid, n * (K + 1), in->c, in->h, in->w, K + 1, 2);
    if (!rc)
        printf("class editing: strengths %g..%g, each edit the first the perceptual network reads as "
               "the target\n", (double)eo.min_strength, (double)eo.strength);
    bf_features_free(eo.verify);
    free(grid); free(out); free(targets);
    return rc ? -1 : 0;
}

static int demo_edits(const demo_args *a, bf_editor *e) {
    bf_image_set in = {0};
    if (bf_image_set_load(&in, "fashion-mnist", 10)) return -1;
    int rc = demo_inpaint(a, e, &in) || demo_edit(a, e, &in);
    bf_image_set_free(&in);
    return rc ? -1 : 0;
}

/* FD and class accuracy of eval_n samples of each sampler, G's fidelity on test images. */
static int demo_eval(const demo_args *a, bf_flow *f, bf_reverse *r) {
    bf_features *fn = bf_features_load(a->features);
    bf_dataset test = {0};
    if (!fn || bf_dataset_load(&test, "fashion-mnist", "test")) return -1;
    const bf_flow_config *c = bf_flow_get_config(f);
    int n = a->eval_n, F = bf_features_dim(fn), K = c->num_classes;
    size_t img = (size_t)c->in_channels * c->img_size * c->img_size;
    float *x = bf_malloc(sizeof(float) * img * (test.n > n ? test.n : n));
    float *z = bf_malloc(sizeof(float) * img * n), *feats = bf_malloc(sizeof(float) * F * test.n);
    int *y = bf_malloc(sizeof(int) * n), *pred = bf_malloc(sizeof(int) * test.n);
    for (size_t i = 0; i < img * test.n; i++) x[i] = test.pixels[i] / 127.5f - 1.0f;
    bf_feature_stats ref = {0}, s = {0};
    int rc = bf_features_extract(fn, feats, NULL, x, test.n) ||
             bf_feature_stats_compute(&ref, feats, test.n, F);
    bf_rng rng;
    bf_rng_seed(&rng, 7);
    for (size_t i = 0; i < img * n; i++) z[i] = bf_rng_normal(&rng);
    for (int i = 0; i < n; i++) y[i] = K ? i % K : -1;
    for (int which = 0; !rc && which < 2; which++) {
        bf_sample_stats st;
        if (which == 0) {
            bf_reverse_sample_opts ro;
            bf_reverse_sample_opts_default(&ro);
            ro.cfg = a->cfg_biflow;
            rc = bf_reverse_sample(r, x, z, y, n, &ro, &st);
        } else {
            bf_sample_opts so;
            bf_sample_opts_default(&so);
            so.cfg = a->cfg_exact;
            so.denoise = 1;
            so.sigma = bf_reverse_sigma(r) > 0 ? bf_reverse_sigma(r) : 0.05f;
            rc = bf_flow_sample(f, x, z, y, n, &so, &st);
        }
        double fd = 0;
        int hits = 0;
        rc = rc || bf_features_extract(fn, feats, pred, x, n) ||
             bf_feature_stats_compute(&s, feats, n, F) || bf_frechet_distance_stats(&fd, &s, &ref);
        for (int i = 0; i < n; i++) hits += pred[i] == y[i];
        bf_feature_stats_free(&s);
        if (!rc)
            printf("  %-38s FD %7.2f, class accuracy %5.1f%% (%d samples, guidance %g)\n",
                   which == 0 ? "BiFlow, one pass of G (1 NFE):" : "exact inverse of F + score denoising:",
                   fd, 100.0 * hits / n, n, (double)(which == 0 ? a->cfg_biflow : a->cfg_exact));
    }
    double mse, psnr;
    rc = rc || bf_reverse_eval_recon(r, f, &test, 1000, 0.0f, 1, &mse, &psnr);
    if (!rc) printf("  %-38s mse %.4f, PSNR %.2f dB\n", "G(F(x)) vs x on 1000 test images:", mse, psnr);
    bf_feature_stats_free(&ref);
    free(x); free(z); free(feats); free(y); free(pred);
    bf_dataset_free(&test);
    bf_features_free(fn);
    return rc ? -1 : 0;
}

static int demo_train(void) {
    printf("Reproducing the shipped models (commands and seeds of models/README.md); each trainer\n"
           "prints its progress with images/s and ETA. About 4 hours on 2 cores.\n");
    const char *cmds[] = {
        "./biflow train-features --out runs/demo/features",
        "./biflow train-features --arch perceptual --width1 32 --width2 64 --feat-dim 256 --seed 1 "
        "--epochs 3 --out runs/demo/perceptual",
        "./biflow train-flow --config fmnist-small --noise gauss --sigma 0.05 --steps 11000 --warmup 200 "
        "--eval-every 1000 --out runs/demo/flow",
        "./biflow train-reverse --flow runs/demo/flow --features runs/demo/perceptual --steps 6000 "
        "--warmup 200 --eval-every 1000 --out runs/demo/reverse1",
        "./biflow train-reverse --flow runs/demo/flow --features runs/demo/perceptual --init runs/demo/reverse1 "
        "--class-weight 2 --steps 7000 --warmup 200 --lr 5e-4 --eval-every 1000 --out runs/demo/reverse",
    };
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++) {
        printf("\n[%zu/%zu] %s\n", i + 1, sizeof cmds / sizeof cmds[0], cmds[i]);
        fflush(stdout);
        if (system(cmds[i]) != 0) {
            fprintf(stderr, "biflow: demo --train: step %zu failed (rerun it with --resume to continue)\n", i + 1);
            return 1;
        }
    }
    printf("\ndone: runs/demo/{features,perceptual,flow,reverse}; run `biflow demo --flow "
           "runs/demo/flow --reverse runs/demo/reverse --features runs/demo/features`\n");
    return 0;
}

int cmd_demo(int argc, char **argv) {
    demo_args a = {"models/flow-fmnist.safetensors", "models/reverse-fmnist.safetensors",
                   "models/features-fmnist.safetensors", "models/perceptual-fmnist.safetensors",
                   "demo", 1.5f, 2.0f, 1000};
    int train = 0;
    cli_opt opts[] = {
        CLI_FLOW_OPT(a.flow),
        CLI_REVERSE_OPT(a.reverse),
        CLI_FEATURES_OPT(a.features),
        {"perceptual", OPT_STR, &a.perceptual, "the perceptual network: verifies the class edits (never the evaluation network)"},
        {"out", OPT_STR, &a.out, "folder for the images"},
        {"cfg-exact", OPT_FLOAT, &a.cfg_exact, "guidance w of the exact sampler (its best FD at N = 10000: 1.5)"},
        {"cfg-biflow", OPT_FLOAT, &a.cfg_biflow, "guidance w of G (its best FD at N = 10000: 2)"},
        {"eval-n", OPT_INT, &a.eval_n, "samples per sampler for the Frechet distance"},
        CLI_ALIAS("n-eval", "eval-n"),
        {"train", OPT_FLAG, &train, "reproduce the shipped models from scratch instead (hours)"},
        CLI_COMPUTE_OPTS,
        CLI_END,
    };
    int rc = cli_options(argc, argv, 2, opts);
    if (rc != CLI_GO) return rc;
    if (train) return demo_train();
    if ((rc = cli_check_int("eval-n", a.eval_n, 2, CLI_MAX_SAMPLES))) return rc;
    double t0 = bf_time(), t_exact, t_biflow;
    bf_flow *f = bf_flow_load(a.flow, 1);
    bf_reverse *r = f ? bf_reverse_load(a.reverse, 1) : NULL;
    if (!r || bf_reverse_check_flow(r, f, a.flow)) return cli_fail();
    if (mkdir(a.out, 0755) && errno != EEXIST) {
        bf_set_error("cannot create the folder %s: %s", a.out, strerror(errno));
        return cli_fail();
    }
    printf("biflow demo: F %s (%zu parameters), G %s (%zu parameters)\n", a.flow,
           bf_flow_num_params(f), a.reverse, bf_reverse_num_params(r));
    bf_editor e;
    bf_editor_init(&e, r, f, a.flow);
    e.cfg = 0.0f;
    if (demo_samples(&a, f, r, &t_exact, &t_biflow) || demo_edits(&a, &e)) return cli_fail();
    printf("wrote %s/samples_exact.png and %s/samples_biflow.png (the same noise), %s/inpaint.png (input | masked | one pass | rounds), %s/edit.png\n",
           a.out, a.out, a.out, a.out);
    printf("speed, 100 guided samples: exact inverse + score denoising %.2f s, BiFlow %.3f s: %.1fx faster\n",
           t_exact, t_biflow, t_exact / t_biflow);
    printf("evaluation:\n");
    if (demo_eval(&a, f, r)) return cli_fail();
    printf("demo done in %.0f s\n", bf_time() - t0);
    bf_reverse_free(r);
    bf_flow_free(f);
    return 0;
}
