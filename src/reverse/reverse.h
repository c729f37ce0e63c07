/* Internal view of the reverse model G: parameter layout, activations, passes. */
#ifndef BF_REVERSE_H
#define BF_REVERSE_H

#include "biflow.h"
#include "flow.h"
#include <stddef.h>

/* Offsets (in floats) of one layer's tensors in any buffer laid out like the parameters. */
typedef struct {
    size_t ada_w, ada_b;      /* adaLN: (6W, W), (6W): shift, scale, gate for attention, MLP */
    size_t qkv_w, qkv_b, proj_w, proj_b, fc1_w, fc1_b, fc2_w, fc2_b;
} bf_rlayer_offsets;

/* Each stage ends in a head LayerNorm + Linear(W -> D); in hidden distillation every stage
 * after the first starts by re-embedding the previous head's output, Linear(D -> W) plus a
 * learned positional embedding of its own (T, W), as the first stage's embedding has: without
 * it the stage would be permutation-equivariant in the tokens and could not invert F's
 * position-dependent blocks. */
typedef struct {
    int first_layer, num_layers;
    size_t head_ln_w, head_ln_b, head_w, head_b;
    size_t re_w, re_b, re_pos;   /* distill only, stages > 0 */
} bf_rstage_offsets;

struct bf_reverse {
    bf_reverse_config cfg;
    int T, D, W, NH, S, NL;   /* S stages (alignment + denoising), NL layers */
    size_t num_params;
    float *params;
    size_t embed_w, embed_b, pos, cls, wm1_w, wm1_b, wm2_w, wm2_b;
    bf_rlayer_offsets *layers;     /* (NL) */
    bf_rstage_offsets *stages;     /* (S) */
    bf_param_info *info;
    int n_info;
    float *ones, *zeros;           /* (W): the affine of the modulated LayerNorms */
    char flow_path[1024], flow_sha256[65];
    float sigma;
    /* inference activation sets kept between sampling calls (fresh ones cost page faults) */
    bf_acts_cache cache;   /* of bf_reverse_acts */
};

/* Activations of one pass over up to Bn images; the backward scratch is allocated only when
 * train is set. */
typedef struct bf_reverse_acts_s {
    int Bn, train, n;
    float *mem;
    /* conditioning (Bn, .) */
    float *wfeat;             /* (Bn, F) sinusoidal features of w */
    float *wh, *whs;          /* (Bn, W) first MLP layer, after SiLU */
    float *c, *cs;            /* (Bn, W) conditioning vector, after SiLU */
    float *mod;               /* (NL, 6, Bn, W) */
    /* stream */
    float *h0;                /* (Bn, T, W) embedding output */
    float *reemb;             /* (S, Bn, T, W) distill: re-embedded inputs of stages > 0 (+ positions) */
    float *out;               /* (NL, Bn, T, W) layer outputs */
    float *ln1, *m1, *qkv, *atty, *ao, *mid, *ln2, *m2, *fch, *fcg, *mo;   /* per layer */
    float *ln1_mean, *ln1_rstd, *ln2_mean, *ln2_rstd;   /* (NL, Bn, T) */
    float *att;               /* (NL, Bn, NH, T, T) */
    float *hn, *hmean, *hrstd;   /* (S, Bn, T, W), (S, Bn, T): head LayerNorms */
    float *p;                 /* (S, Bn, T, D) head outputs */
    /* backward */
    float *dp;                /* (S, Bn, T, D) loss gradient wrt the head outputs */
    float *dpw;               /* (S, Bn, T, D) working copy (distillation adds to it) */
    float *da, *db, *dt1, *dt2, *dqkv, *dfch, *dfcg, *dhn;
    float *dmod;              /* (6, Bn, W) */
    float *dcs, *dc, *dwhs, *dwh;   /* (Bn, W) */
    const int *y;
    const float *w;
} bf_reverse_acts;

void bf_reverse_acts_init(bf_reverse_acts *a, const bf_reverse *r, int Bn, int train);
/* The same, -1 with a message when the sizes overflow or the memory cannot be had. */
int bf_reverse_acts_try_init(bf_reverse_acts *a, const bf_reverse *r, int Bn, int train);
/* Parameters of a configuration (exact up to 2^53), without building the model. */
double bf_reverse_param_count(const bf_reverse_config *c);
void bf_reverse_acts_free(bf_reverse_acts *a);
/* count inference activation sets of at least Bn images each, kept in r */
bf_reverse_acts *bf_reverse_cached_acts(bf_reverse *r, int count, int Bn);

/* Forward on n <= Bn images: z (n, T, D) tokens, y (n) labels (-1 or NULL: null class),
 * w (n) guidance scales (NULL: 0). Head outputs land in a->p (stage s at s * Bn * T * D). */
void bf_reverse_forward(const bf_reverse *r, const float *params, bf_reverse_acts *a,
                        const float *z, const int *y, const float *w, int n);
/* Backward from a->dp (filled by the loss); grads (num_params) accumulates (+=). */
void bf_reverse_backward(const bf_reverse *r, const float *params, bf_reverse_acts *a,
                         float *grads);
static inline float *bf_reverse_head(const bf_reverse_acts *a, const bf_reverse *r, int s) {
    return a->p + (size_t)s * a->Bn * r->T * r->D;
}

/* ---- the loss of METHOD Sections 5 to 7 on one shard */
typedef struct {
    bf_inverse_kind inverse;
    int norm_control;
    float adapt_p, adapt_eps, align_weight;
} bf_reverse_loss_opts;

/* Per-term means over the shard, for the log. */
typedef struct { double total, align, rec, perc, cls, align_raw[64]; } bf_reverse_loss_parts;

/* Targets: traj (B+1, Bn_f, T, D) F's states x^0..x^B (natural order) with stride Bn_f
 * images per state; clean (n, T, D) the clean tokens. With unc (an activation set holding
 * the unconditional branch's forward) and w, every head output is first combined into the
 * implied conditional (c + w u) / (1 + w). Fills a->dp with the gradient of the shard's
 * mean loss and returns that loss (parts may be NULL). */
double bf_reverse_loss(const bf_reverse *r, bf_reverse_acts *a, const bf_reverse_acts *unc,
                       const float *w, const float *traj, int Bn_f, const float *clean, int n,
                       const bf_reverse_loss_opts *o, bf_reverse_loss_parts *parts);

#endif
