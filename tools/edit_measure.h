/* What class editing changes and what it keeps, measured by the feature network (biflow edit
 * --features). */
#ifndef BF_EDIT_MEASURE_H
#define BF_EDIT_MEASURE_H

#include "biflow.h"

/* Over the edits out (n, k, C, H, W) of the images in to targets (k) whose target differs from
 * the image's label: how often the feature network at path features recognises the target
 * class, and how close each edit stays to its source (feature distance, pixel mse) beside the
 * same figures for an unrelated image of the target class from the test split of data.
 * Prints the figures; 0, or -1 with the error set. */
int edit_measure(const char *features, const char *data, const bf_image_set *in,
                 const float *out, const int *targets, int k);

#endif
