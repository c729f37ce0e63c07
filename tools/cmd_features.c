/* biflow train-features and biflow eval-features: the feature network and the Frechet
 * distance of generated images against the test split. */
#include "biflow.h"
#include "cli.h"
#include "commands.h"
#include "tool_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DEFAULT_FEATURES "models/features-fmnist.safetensors"

/* ------------------------------------------------------------------ train-features */
int cmd_train_features(int argc, char **argv) {
    bf_features_train_opts o;
    bf_features_train_opts_default(&o);
    const char *arch = "fd";
    cli_opt opts[] = {
        CLI_CHOICE("arch", arch, "fd|perceptual", "fd (the evaluation network of the Frechet distance) or "
                   "perceptual (the VGG-like network of G's perceptual loss)"),
        CLI_DATA_OPT(o.data, ""),
        {"out", OPT_STR, &o.out_dir, "run folder (features.safetensors, log.jsonl)"},
        {"epochs", OPT_INT, &o.epochs, "passes over the training split"},
        {"steps", OPT_INT, &o.steps, "training steps (0 = from --epochs)"},
        {"batch", OPT_INT, &o.batch, "images per step"},
        CLI_LR_OPTS(o),
        {"wd", OPT_FLOAT, &o.weight_decay, "AdamW weight decay (weights only)"},
        {"clip", OPT_FLOAT, &o.grad_clip, "gradient-norm clipping (0 = off)"},
        {"shift", OPT_INT, &o.shift, "random shifts by up to N pixels, background padding (0 = off)"},
        {"flip", OPT_ONOFF, &o.flip, "random horizontal flips"},
        {"width1", OPT_INT, &o.model.width1, "channels of the first convolution stage"},
        {"width2", OPT_INT, &o.model.width2, "channels of the second convolution stage"},
        {"feat-dim", OPT_INT, &o.model.feat_dim, "feature dimension F (penultimate layer)"},
        {"seed", OPT_U64, &o.seed, "random seed (weights, data order, augmentation)"},
        CLI_LOG_EVERY_OPT(o.log_every),
        {"eval-n", OPT_INT, &o.eval_limit, "test images for the final accuracy (0 = all, <0 = skip)"},
        CLI_ALIAS("eval-limit", "eval-n"),
        CLI_OWN_THREADS_OPT(o.threads),
        CLI_QUIET_OPT(o.quiet),
        CLI_OVERWRITE_OPT(o.overwrite),
        CLI_END,
    };
    int rc = cli_options(argc, argv, 2, opts);
    if (rc != CLI_GO) return rc;
    o.model.arch = !strcmp(arch, "perceptual") ? BF_FEAT_ARCH_PERCEPTUAL : BF_FEAT_ARCH_FD;
    if (bf_train_features_check_opts(&o)) return cli_usage_fail(NULL);
    double acc, t0 = bf_time();
    if (bf_train_features(&o, &acc)) return cli_fail();
    if (!bf_dist_is_root()) return 0;   /* under mpirun: rank 0 reports */
    printf("trained in %.1f s; wrote %s/features.safetensors\n", bf_time() - t0, o.out_dir);
    if (acc >= 0) printf("test accuracy: %.4f\n", acc);
    return 0;
}

/* ------------------------------------------------------------------ eval-features */
/* Features (n, F) of the first n images of a dataset split; the class accuracy on them in
 * *acc when acc is not NULL. */
static float *split_features(bf_features *fn, const bf_dataset *ds, int n, double *acc) {
    size_t img = (size_t)ds->c * ds->h * ds->w;
    float *x = bf_malloc(sizeof(float) * img * n);
    float *f = bf_malloc(sizeof(float) * (size_t)n * bf_features_dim(fn));
    int *pred = bf_malloc(sizeof(int) * (size_t)n), hits = 0;
    for (size_t i = 0; i < img * n; i++) x[i] = ds->pixels[i] / 127.5f - 1.0f;
    bf_features_extract(fn, f, pred, x, n);
    for (int i = 0; i < n; i++) hits += pred[i] == ds->labels[i];
    if (acc) *acc = (double)hits / n;
    free(x);
    free(pred);
    return f;
}

typedef struct {
    const char *images, *labels, *features, *data;
    int n, floor;
} eval_args;

/* FD of the images in (read and checked before the reference was computed) against the test
 * statistics, and the class accuracy when they have labels. */
static int eval_samples(bf_features *fn, const eval_args *a, const bf_feature_stats *ref,
                        const bf_image_set *in) {
    int F = bf_features_dim(fn), n = in->n;
    float *f = bf_malloc(sizeof(float) * (size_t)n * F);
    int *pred = bf_malloc(sizeof(int) * (size_t)n), rc = -1;
    bf_feature_stats s = {0};
    double fd;
    bf_features_extract(fn, f, pred, in->x, n);
    if (bf_feature_stats_compute(&s, f, n, F) || bf_frechet_distance_stats(&fd, &s, ref)) goto done;
    printf("samples: %s, N = %d\nFD: %.4f\n", a->images, n, fd);
    if (a->labels) {
        int hits = 0;
        for (int i = 0; i < n; i++) hits += pred[i] == in->y[i];
        printf("class accuracy of the feature network on the samples (labels %s): %.4f\n",
               a->labels, (double)hits / n);
    }
    rc = 0;
done:
    bf_feature_stats_free(&s);
    free(f); free(pred);
    return rc;
}

/* The floor: FD of the test split against the first n training images. */
static int eval_floor(bf_features *fn, const eval_args *a, const bf_feature_stats *ref, int n) {
    bf_dataset train = {0};
    bf_feature_stats s = {0};
    double fd;
    int rc = -1;
    if (bf_dataset_load(&train, a->data, "train")) return -1;
    if (n > train.n) n = train.n;
    float *f = split_features(fn, &train, n, NULL);
    if (bf_feature_stats_compute(&s, f, n, bf_features_dim(fn)) == 0 &&
        bf_frechet_distance_stats(&fd, &s, ref) == 0) {
        printf("floor: FD of the test split against N = %d training images: %.4f\n", n, fd);
        rc = 0;
    }
    bf_feature_stats_free(&s);
    free(f);
    bf_dataset_free(&train);
    return rc;
}

static int run_eval(const eval_args *a) {
    bf_features *fn = bf_features_load(a->features);
    if (!fn) return -1;
    bf_dataset test = {0};
    bf_feature_stats ref = {0};
    bf_image_set in = {0};   /* the images first: a wrong file is refused before the long part */
    int rc = -1;
    double t0 = bf_time(), acc;
    if (a->images && images_for_features(&in, a->images, a->labels, a->n, bf_features_get_config(fn)))
        goto done;
    if (bf_dataset_load(&test, a->data, "test")) goto done;
    const bf_features_config *c = bf_features_get_config(fn);
    if (test.c != c->in_channels || test.h != c->height || test.w != c->width) {
        bf_set_error("the %s images are %dx%dx%d but the feature network expects %dx%dx%d",
                     a->data, test.c, test.h, test.w, c->in_channels, c->height, c->width);
        goto done;
    }
    float *f = split_features(fn, &test, test.n, &acc);
    rc = bf_feature_stats_compute(&ref, f, test.n, bf_features_dim(fn));
    free(f);
    if (rc) goto done;
    printf("feature network: %s (%d features; test accuracy %.4f)\nreference: %s test split, "
           "%d images\n", a->features, bf_features_dim(fn), acc, a->data, test.n);
    rc = -1;
    if (a->images && eval_samples(fn, a, &ref, &in)) goto done;
    if (a->floor) {
        int n = a->n > 0 ? a->n : in.n > 0 ? in.n : test.n;
        if (eval_floor(fn, a, &ref, n)) goto done;
    }
    printf("(%.1f s)\n", bf_time() - t0);
    rc = 0;
done:
    bf_image_set_free(&in);
    bf_feature_stats_free(&ref);
    bf_dataset_free(&test);
    bf_features_free(fn);
    return rc;
}

int cmd_eval_features(int argc, char **argv) {
    eval_args a = {NULL, NULL, DEFAULT_FEATURES, "fashion-mnist", 0, 0};
    cli_opt opts[] = {
        {"images", OPT_STR, &a.images, ".npy of images: uint8 pixels or floats in [-1, 1], (n,H,W) or (n,C,H,W)"},
        {"labels", OPT_STR, &a.labels, ".npy of int64 labels (n): also print the class accuracy"},
        CLI_FEATURES_OPT(a.features),
        CLI_DATA_OPT(a.data, ": its test split is the reference"),
        {"n", OPT_INT, &a.n, "use the first N samples (0 = all given; the floor: as many as samples)"},
        {"floor", OPT_FLAG, &a.floor, "also print the FD of the test split against N training images"},
        CLI_THREADS_OPT,
        CLI_END,
    };
    int rc = cli_options(argc, argv, 2, opts);
    if (rc != CLI_GO) return rc;
    if (!a.images && !a.floor) return cli_usage("give --images and/or --floor");
    if (a.labels && !a.images) return cli_usage("--labels needs --images");
    if ((rc = cli_check_int("n", a.n, 0, 1000000000))) return rc;
    return run_eval(&a) ? cli_fail() : 0;
}
