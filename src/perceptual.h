/* Perceptual distance for training G (METHOD Section 6): squared distance between normalised
 * features of G's output and of the clean image at several layers of the project's feature
 * network, with adaptive weighting. The network is frozen: gradients reach the images only. */
#ifndef BF_PERCEPTUAL_H
#define BF_PERCEPTUAL_H

#include "feature_net.h"

#define BF_PERC_MAX_LAYERS BF_FEAT_MAX_LAYERS

typedef struct {
    const bf_features *fn;
    int layers[BF_PERC_MAX_LAYERS], n_layers;   /* every convolution and the feature layer */
    float weight, adapt_p, adapt_eps;
} bf_perceptual;

void bf_perceptual_init(bf_perceptual *p, const bf_features *fn, float weight, float adapt_p,
                        float adapt_eps);

/* One shard: pred, target (n, C, H, W) images in [-1, 1]; ap, at: feature activations (Bn >=
 * n) for the prediction and the target. Per image D = sum over layers of |v(pred) / |v(pred)|
 * - v(target) / |v(target)||^2; returns weight * mean over images of D / sg((D + eps)^p) and
 * accumulates its gradient into dpred (n, C, H, W). *raw (may be NULL): the mean of D. */
double bf_perceptual_loss(const bf_perceptual *p, bf_feat_acts *ap, bf_feat_acts *at,
                          float *dpred, const float *pred, const float *target, int n,
                          double *raw);

#endif
