/* Helpers shared by the biflow commands: labels from --class, writing results, and the
 * forward model that goes with a reverse model. */
#ifndef BF_TOOL_UTIL_H
#define BF_TOOL_UTIL_H

#include "biflow.h"

/* Labels from --class: "all" (classes in turn, rows of the grid), "none", "K", or
 * "K1,K2,..." (cycled over the n entries). y: (n). An unconditional model (num_classes 0)
 * gets -1 everywhere. */
int parse_classes(int *y, int n, const char *spec, int num_classes, int *ncols);

/* PREFIX.npy (uint8 images (n, c, h, w)) and PREFIX_labels.npy (int64 (n)); x: (n, c, h, w)
 * in [-1, 1]. */
int write_arrays(const char *prefix, const float *x, const int *y, int n, int c, int h, int w);
/* write_arrays plus PREFIX.png, a grid of the same images, ncols per row. */
int write_outputs(const char *prefix, const float *x, const int *y, int n, int c, int h, int w,
                  int ncols, int scale);

/* The forward model paired with a reverse model loaded from reverse_path: flow (checked
 * against the SHA-256 G recorded) or, when NULL, the one G records (also looked for beside
 * G). NULL with the error set on a mismatch (bf_reverse_load_flow). */
bf_flow *paired_flow(const bf_reverse *r, const char *flow, const char *reverse_path);

/* Model-shape options of the commands that build a new F (train-flow, bench). */
typedef struct { const char *config; int width, blocks, layers, patch, head_dim; float bound; } shape_opts;
#define SHAPE_OPTS_DEFAULT {"fmnist-small", 0, 0, 0, 0, 0, -1.0f}
/* The named configuration with the options given (> 0; bound >= 0) in its place; checked. */
int resolve_shape(bf_flow_config *c, const shape_opts *s);
/* The options of shape_opts, as resolve_shape reads them: --config (every command that builds
 * an F), then the sizes that override it (train-flow). */
#define SHAPE_CONFIG_OPT(sh) {"config", OPT_STR, &(sh).config, "named model configuration of F " \
    "(fmnist-tiny, fmnist-small, fmnist-base, cifar-small)"}
#define SHAPE_SIZE_OPTS(sh)                                                                   \
    {"width", OPT_INT, &(sh).width, "Transformer width W (0 = from config)"},                 \
    {"blocks", OPT_INT, &(sh).blocks, "flow blocks B (0 = from config)"},                     \
    {"layers", OPT_INT, &(sh).layers, "layers per block L (0 = from config)"},                \
    {"patch", OPT_INT, &(sh).patch, "patch size P (0 = from config)"},                        \
    {"head-dim", OPT_INT, &(sh).head_dim, "attention head size (0 = from config)"},           \
    {"bound", OPT_FLOAT, &(sh).bound, "bound c on alpha, mu: c*tanh(v/c); 0 = off, <0 = from config"}

/* --denoise and --sigma for F's samplers: denoise "auto" (score denoising exactly when F
 * records the Gaussian noise it was trained with: bf_flow_trained_sigma > 0), "score" or
 * "none"; sigma < 0: F's recorded sigma. Sets *on and *level; 0, or a usage error (exit
 * status 2, message printed) for "learned" (G's) or score denoising without a sigma. */
int flow_denoise(const char *denoise, float sigma, const bf_flow *f, int *on, float *level);
/* The same for G: "auto" (its learned denoising stage when it has one, else none), "learned",
 * "none" or "score" (score denoising with F, the flow given, at --sigma or G's recorded
 * sigma). Sets o->output, o->score_flow and o->sigma. 0, or a usage error (2, printed). */
int reverse_denoise(const char *denoise, float sigma, const bf_reverse *r, bf_flow *f,
                    bf_reverse_sample_opts *o);
#define DENOISE_HELP "auto: the model's own (F: score denoising at its recorded training " \
    "sigma when it was trained with Gaussian noise, else none; G: its learned denoising stage " \
    "when it has one, else none); score: x + sigma^2 grad log p(x) with F; learned: G's stage; none"

/* Frechet distance *fd of the features of x (n, C, H, W) against those of the test split of
 * data, by the feature network at path features, and the fraction *acc of x it classifies as
 * y (n) (entries < 0 skipped; NAN when none is labelled; y may be NULL). */
int feature_quality(const char *features, const char *data, const float *x, const int *y, int n,
                    double *fd, double *acc);

/* The images a feature network scores: --images X.npy (bf_image_set_load_npy, its first limit
 * images when limit > 0) with their labels from --labels L.npy (NULL: none, -1), of the
 * network's image size; 0, or -1 with the error set. */
int images_for_features(bf_image_set *s, const char *images, const char *labels, int limit,
                        const bf_features_config *fc);

/* Value of the unknown region in displayed masked inputs: light grey, apart from the black
 * background of the images and the mid-grey gaps of the grids. */
#define BF_MASK_SHOW 0.6f

/* Defaults of class editing (biflow edit, the demo): see docs/RESULTS-edit.md. */
#define BF_EDIT_STRENGTH 4.0f          /* the ladder's top, with the verifier */
#define BF_EDIT_STRENGTH_ALONE 2.0f    /* without one */
#define BF_EDIT_MIN_STRENGTH 1.0f
#define BF_EDIT_VERIFY "models/perceptual-fmnist.safetensors"

#endif
