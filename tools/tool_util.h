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

/* The forward model paired with a reverse model: flow (checked against the SHA-256 G
 * recorded) or, when NULL, the one G recorded. NULL with the error set on a mismatch. */
bf_flow *paired_flow(const bf_reverse *r, const char *flow);

/* Frechet distance *fd of the features of x (n, C, H, W) against those of the test split of
 * data, by the feature network at path features, and the fraction *acc of x it classifies as
 * y (n) (entries < 0 skipped; NAN when none is labelled; y may be NULL). */
int feature_quality(const char *features, const char *data, const float *x, const int *y, int n,
                    double *fd, double *acc);

/* Value of the unknown region in displayed masked inputs: light grey, apart from the black
 * background of the images and the mid-grey gaps of the grids. */
#define BF_MASK_SHOW 0.6f

/* Defaults of class editing (biflow edit, the demo): see docs/RESULTS-edit.md. */
#define BF_EDIT_STRENGTH 4.0f          /* the ladder's top, with the verifier */
#define BF_EDIT_STRENGTH_ALONE 2.0f    /* without one */
#define BF_EDIT_MIN_STRENGTH 1.0f
#define BF_EDIT_VERIFY "models/perceptual-fmnist.safetensors"

#endif
