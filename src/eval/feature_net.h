/* Internal view of the feature network: a small sequential convolutional classifier whose
 * penultimate activations are the features of the Frechet distance. Layers, parameter
 * layout (a table of named tensors over one flat block; gradients and AdamW moments share
 * the layout), activations, forward and backward passes. (Not "features.h": with -Isrc that
 * name would shadow glibc's <features.h>.) */
#ifndef BF_FEATURE_NET_H
#define BF_FEATURE_NET_H

#include "biflow.h"
#include "core.h"
#include "kernels_conv.h"

#include <stddef.h>

#define BF_FEAT_MAX_LAYERS 12
#define BF_FEAT_MAX_TENSORS (2 * BF_FEAT_MAX_LAYERS)

typedef enum { BF_LAYER_CONV, BF_LAYER_POOL, BF_LAYER_LINEAR } bf_layer_kind;

typedef struct {
    bf_layer_kind kind;
    int relu;                 /* a ReLU follows, applied in place to the output */
    int c, h, w;              /* input per image (a linear layer sees c = h w c flattened) */
    int oc, oh, ow;           /* output per image (linear: oc features, oh = ow = 1) */
    bf_conv_dims conv;        /* convolution geometry for one image (N = 1) */
    size_t w_off, b_off;      /* weight and bias in the parameter layout (conv, linear) */
} bf_feat_layer;


/* Activations of one pass over up to Bn images (one set per thread). */
typedef struct {
    int Bn, n;                /* capacity, images of the last forward */
    float *mem;
    float *act[BF_FEAT_MAX_LAYERS];   /* (Bn, oc, oh, ow) output of each layer (after ReLU) */
    float *probs;             /* (Bn, K) softmax of the logits */
    float *loss;              /* (Bn) cross-entropy per image */
    float *dloss;             /* (Bn) backward scratch */
    float *col, *dcol;        /* im2col scratch of one image, the largest layer */
    float *g[2];              /* (Bn, largest layer) gradient ping-pong buffers */
    const float *x;           /* input of the last forward (not owned) */
    int lowp;                 /* convolutions follow the precision setting (bf_conv_dims) */
} bf_feat_acts;

struct bf_features {
    bf_features_config cfg;
    bf_feat_layer layer[BF_FEAT_MAX_LAYERS];
    int n_layers;
    int feat_layer;           /* index of the layer whose output are the features */
    bf_param_info info[BF_FEAT_MAX_TENSORS];
    int n_info;
    size_t num_params;
    float *params;
    /* activation sets kept between calls of bf_features_extract (one per thread) */
    bf_acts_cache cache;   /* of bf_feat_acts */
};

int bf_features_config_check(const bf_features_config *c);
bf_features *bf_features_new(const bf_features_config *c);
/* He-normal weights (std sqrt(2 / fan_in); the last layer sqrt(1 / fan_in)), zero biases */
void bf_features_init(bf_features *fn, uint64_t seed);

void bf_feat_acts_init(bf_feat_acts *a, const bf_features *fn, int Bn);
/* The same, -1 with a message when the sizes overflow or the memory cannot be had. */
int bf_feat_acts_try_init(bf_feat_acts *a, const bf_features *fn, int Bn);
/* Parameters of a configuration that passed bf_features_config_check, nothing allocated. */
size_t bf_features_param_count(const bf_features_config *c);
void bf_feat_acts_free(bf_feat_acts *a);

/* Forward of n <= Bn images x (n, C, H, W); params laid out as fn->params. Returns the
 * logits (n, K) inside the activations. */
const float *bf_features_forward(const bf_features *fn, const float *params, bf_feat_acts *a,
                                 const float *x, int n);
/* Cross-entropy of the last forward against y (n): fills probs and loss; returns the sum
 * over the images; *correct (may be NULL) counts argmax hits. */
double bf_features_xent(const bf_features *fn, bf_feat_acts *a, const int *y, int *correct);
/* Backward of scale * (sum of the per-image losses) of the last forward and bf_features_xent;
 * grads (num_params) accumulates (+=); dx (n, C, H, W) accumulates when not NULL. */
void bf_features_backward(const bf_features *fn, const float *params, bf_feat_acts *a,
                          const int *y, float scale, float *grads, float *dx);
/* Backward of a loss on the activations of the last forward, the network frozen: dact[i]
 * (n, layer i's output) or NULL is dL/d(output of layer i after its ReLU); dx (n, C, H, W)
 * accumulates dL/dx. */
void bf_features_backward_acts(const bf_features *fn, const float *params, bf_feat_acts *a,
                               float *const *dact, float *dx);

/* One training step's forward + backward with the batch split over nshards threads.
 * acts: nshards sets (Bn >= n / nshards rounded up); shard_grads[1..]: scratch buffers;
 * grads is OVERWRITTEN with the gradient of the batch-mean loss. Returns the mean loss;
 * *correct counts argmax hits. */
double bf_features_step_sharded(const bf_features *fn, const float *params, bf_feat_acts *acts,
                                float **shard_grads, int nshards, float *grads, const float *x,
                                const int *y, int n, int *correct);
/* The same step for the shards [p->s0, p->s1) of a batch planned by p (core.h); x and y hold
 * the batch's rows (only this process's are read). Collective when the plan spans several
 * processes (dist.h). */
double bf_features_step_shards(const bf_features *fn, const float *params, bf_feat_acts *acts,
                               float **shard_grads, const bf_shard_plan *p, float *grads,
                               const float *x, const int *y, int *correct);

#endif
