/* Perceptual distance for training G (METHOD Section 6): squared distance between normalised
 * features of G's output and of the clean image at several layers of a feature network (the
 * perceptual network, never the evaluation network), each layer with its own adaptive weight.
 * The network is frozen: gradients reach the images only. */
#ifndef BF_PERCEPTUAL_H
#define BF_PERCEPTUAL_H

#include "feature_net.h"

#define BF_PERC_MAX_LAYERS BF_FEAT_MAX_LAYERS

typedef struct {
    const bf_features *fn;
    int layers[BF_PERC_MAX_LAYERS], n_layers;   /* every convolution and the feature layer */
    float weight, adapt_p, adapt_eps;
    float class_weight;   /* cross-entropy of the network's classifier on pred vs the label */
    int lowp;   /* convolutions follow the precision setting (1 from init: the loss only guides
                 * training, and its term is 1.6x faster in bf16; 0: always fp32) */
} bf_perceptual;

void bf_perceptual_init(bf_perceptual *p, const bf_features *fn, float weight, float adapt_p,
                        float adapt_eps);

/* One shard: pred, target (n, C, H, W) images in [-1, 1]; ap, at: feature activations (Bn >=
 * n) for the prediction and the target. Per image and layer l (every convolution and the
 * feature layer), D_l = mean over positions of |u(pred) - u(target)|^2, u the channel vector
 * at a position scaled to unit length. Returns weight * mean over images and layers of
 * D_l / sg((D_l + eps)^p) (each layer weighted on its own) and accumulates its gradient into
 * dpred (n, C, H, W). *raw (may be NULL): the mean over images of the sum of the D_l.
 * With y (n; may be NULL) and class_weight > 0 it adds class_weight * the mean over the n
 * images of the cross-entropy of the network's classifier on pred against y, rows with
 * y < 0 (the null class) contributing 0; *raw_class (may be NULL) receives that mean. */
double bf_perceptual_loss(const bf_perceptual *p, bf_feat_acts *ap, bf_feat_acts *at,
                          float *dpred, const float *pred, const float *target, const int *y,
                          int n, double *raw, double *raw_class);
/* The distances alone: D (n, n_layers), D[b * n_layers + l] as above. */
void bf_perceptual_distances(const bf_perceptual *p, bf_feat_acts *ap, bf_feat_acts *at,
                             double *D, const float *pred, const float *target, int n);

#endif
