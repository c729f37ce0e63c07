/* Internal view of the forward flow F (TARFlow): parameter layout, activations, passes. */
#ifndef BF_FLOW_H
#define BF_FLOW_H

#include "biflow.h"
#include "core.h"
#include <math.h>
#include <stddef.h>

#define BF_MAX_LAYERS 64

/* Offsets (in floats) of one block's tensors inside any buffer laid out like the parameters
 * (parameters, gradients, AdamW moments and EMA all share this layout). */
typedef struct {
    size_t ln1_w, ln1_b, qkv_w, qkv_b, proj_w, proj_b, ln2_w, ln2_b, fc1_w, fc1_b, fc2_w, fc2_b;
} bf_layer_offsets;

typedef struct {
    size_t pos, cls, in_w, in_b, out_w, out_b;
    bf_layer_offsets layer[BF_MAX_LAYERS];
} bf_block_offsets;


/* Activations of one training (or encoding) pass for up to Bn images. */
typedef struct {
    int Bn;
    float *mem;
    float *xs;        /* (B+1, Bn, T, D) states x^0..x^B in natural token order */
    float *u;         /* (B, Bn, T, D) block inputs in the block's token order */
    float *zp;        /* (B, Bn, T, D) block outputs in the block's token order */
    float *resid;     /* (B, L+1, Bn, T, W) residual stream before each layer and after last */
    float *resid_mid; /* (B, L, Bn, T, W) after attention */
    float *ln1, *ln2; /* (B, L, Bn, T, W) */
    float *ln1_mean, *ln1_rstd, *ln2_mean, *ln2_rstd;   /* (B, L, Bn, T) */
    float *qkv;       /* (B, L, Bn, T, 3W) */
    float *att;       /* (B, L, Bn, NH, T, T) */
    float *atty;      /* (B, L, Bn, T, W) */
    float *fch, *fch_gelu;  /* (B, L, Bn, T, 4W) */
    float *o;         /* (B, Bn, T, 2D) */
    float *alpha_sum; /* (Bn) */
    float *nll;       /* (Bn) per-dimension NLL of each image (nats) */
    /* backward scratch */
    float *dresid, *dln, *datty;   /* (Bn, T, W) */
    float *dqkv;                   /* (Bn, T, 3W) */
    float *dfch, *dfch_gelu;       /* (Bn, T, 4W) */
    float *do_;                    /* (Bn, T, 2D) */
    float *du, *dx, *dzp;          /* (Bn, T, D) */
    const int *y;     /* labels of the last forward (not owned) */
    int n;            /* images in the last forward */
} bf_flow_acts;

struct bf_flow {
    bf_flow_config cfg;
    int T, D, W, NH;
    size_t num_params;
    float *params;            /* (num_params) */
    float *var;               /* (T, D) prior variance buffer of the public code, ones */
    bf_block_offsets *blocks; /* (num_blocks) */
    bf_param_info *info;      /* (n_info) tensors in checkpoint order, var excluded */
    int n_info;
    /* activation sets kept between calls of the score (one per thread, Bn each): fresh
     * ones would cost a page fault per 4 KiB on every call */
    bf_acts_cache score_cache;   /* of bf_flow_acts */
    /* how the checkpoint was trained (metadata "noise", "sigma"); sampling defaults follow */
    int trained_gauss;
    float trained_sigma;
};

void bf_flow_acts_init(bf_flow_acts *a, const bf_flow *f, int Bn);   /* aborts without memory */
/* The same, -1 with a message when the sizes overflow or the memory cannot be had. */
int bf_flow_acts_try_init(bf_flow_acts *a, const bf_flow *f, int Bn);
/* Parameters of a configuration (exact up to 2^53), without building the model. */
double bf_flow_param_count(const bf_flow_config *c);
/* Tokens, token size and parameters of an otherwise valid configuration within the limits. */
int bf_flow_config_check_size(const bf_flow_config *c);
/* count activation sets of at least Bn images each, kept in f between calls */
bf_flow_acts *bf_flow_cached_acts(bf_flow *f, int count, int Bn);
void bf_flow_acts_free(bf_flow_acts *a);

/* Forward pass on n <= Bn images of patch tokens x (n, T, D); y (n) or NULL.
 * params: a buffer laid out like f->params (the raw weights or an EMA copy).
 * Fills the activations; returns the mean NLL per dimension (nats) over the batch. */
float bf_flow_forward(const bf_flow *f, const float *params, bf_flow_acts *a, const float *x,
                      const int *y, int n);
/* Backward of the mean NLL of the last forward. grads (num_params) accumulates (+=);
 * may be NULL. dx (n, T, D) accumulates the input gradient when not NULL. */
void bf_flow_backward(const bf_flow *f, const float *params, bf_flow_acts *a, float *grads,
                      float *dx);

/* Exact inverse on patch tokens: z, x (n, T, D); y (n) or NULL; cfg = guidance weight. */
int bf_flow_decode_tokens(const bf_flow *f, const float *params, float *x, const float *z,
                          const int *y, int n, float cfg, int cfg_anneal);

/* Head outputs o (n, T, 2D) of block b for its input u (n, T, D) in the block's token order
 * (before the shift and the bound); returns a pointer into the activations. */
const float *bf_flow_block_head(const bf_flow *f, const float *params, bf_flow_acts *a, int b,
                                const float *u, const int *y, int n);

/* One training step's forward + backward with the batch split over nshards threads.
 * acts: nshards activation sets (each Bn >= n / nshards rounded up); shard_grads[1..]:
 * scratch gradient buffers; grads (num_params) is OVERWRITTEN with the gradient of the
 * batch-mean NLL (a step's gradient buffer starts from zero anyway). Returns the mean NLL. */
float bf_flow_step_sharded(const bf_flow *f, const float *params, bf_flow_acts *acts,
                           float **shard_grads, int nshards, float *grads, const float *x,
                           const int *y, int n);
/* The same step for the shards [p->s0, p->s1) of a batch planned by p (core.h): acts and
 * shard_grads hold one per local shard; x (n, T, D) and y (n) hold the batch's rows (only this
 * process's rows are read). Collective when the plan spans several processes (dist.h). */
float bf_flow_step_shards(const bf_flow *f, const float *params, bf_flow_acts *acts,
                          float **shard_grads, const bf_shard_plan *p, float *grads,
                          const float *x, const int *y);

/* alpha, mu of one channel from the head outputs of the previous token: bound c (0 = off),
 * then guidance a = a_c + g (a_c - a_u) when the unconditional row ou is given. */
static inline void bf_guided_params(float *alpha, float *mu, const float *oc, const float *ou,
                                    int D, int d, float c, float g) {
    float ac = oc[d], mc = oc[D + d];
    if (c > 0.0f) { ac = c * tanhf(ac / c); mc = c * tanhf(mc / c); }
    if (ou) {
        float au = ou[d], muu = ou[D + d];
        if (c > 0.0f) { au = c * tanhf(au / c); muu = c * tanhf(muu / c); }
        ac += g * (ac - au);
        mc += g * (mc - muu);
    }
    *alpha = ac;
    *mu = mc;
}

const char *bf_flow_named_configs(void);


#endif
