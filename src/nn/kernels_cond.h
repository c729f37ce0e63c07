/* Conditioning kernels of the reverse model G (METHOD Sections 4 and 7): DiT-style adaLN-Zero
 * modulation and gated residuals, the sinusoidal embedding of the guidance scale w, SiLU, the
 * class embedding with a null class, and the implied conditional output of training-time
 * guidance. Same conventions as kernels.h: outputs first, gradients prefixed d, every
 * backward ACCUMULATES (+=) into its gradient outputs; B examples of T tokens of C channels,
 * activations row-major (B, T, C); per-example vectors (B, C) broadcast over the tokens.
 *
 * DiT's adaLN linear yields shift, scale, gate for attention and MLP in one (B, 6C) output;
 * the kernels take each chunk as a contiguous (B, C) array, so produce them as (6, B, C), one
 * bf_linear_forward per chunk on the weight rows [k C, (k+1) C) (contiguous slices of the
 * (6C, C_cond) weight); the backward of each accumulates into the same dcond. */
#ifndef BF_KERNELS_COND_H
#define BF_KERNELS_COND_H

#include <stddef.h>

/* adaLN modulation of a LayerNorm output (no affine in that LayerNorm):
 * out (B, T, C) = xn (B, T, C) * (1 + scale[b]) + shift[b]; shift, scale (B, C).
 * out may alias xn. */
void bf_adaln_modulate_forward(float *out, const float *xn, const float *shift,
                               const float *scale, int B, int T, int C);
/* dxn (B, T, C), dshift (B, C), dscale (B, C); dout (B, T, C) */
void bf_adaln_modulate_backward(float *dxn, float *dshift, float *dscale, const float *dout,
                                const float *xn, const float *scale, int B, int T, int C);
/* The same with dxn SET (=) rather than accumulated, for a caller that would zero it first
 * (the same bits as zeroing and bf_adaln_modulate_backward, without the zeroing pass). */
void bf_adaln_modulate_backward_set(float *dxn, float *dshift, float *dscale, const float *dout,
                                    const float *xn, const float *scale, int B, int T, int C);
/* naive twin of the backward (double sums, serial) for the tests */
void bf_adaln_modulate_backward_ref(float *dxn, float *dshift, float *dscale, const float *dout,
                                    const float *xn, const float *scale, int B, int T, int C);

/* Gated residual of adaLN-Zero: out (B, T, C) = x (B, T, C) + gate[b] (B, C) * h (B, T, C).
 * With the gates initialised to zero every block starts as the identity. out may alias x. */
void bf_gated_residual_forward(float *out, const float *x, const float *gate, const float *h,
                               int B, int T, int C);
/* dx (B, T, C), dgate (B, C), dh (B, T, C); dout (B, T, C) */
void bf_gated_residual_backward(float *dx, float *dgate, float *dh, const float *dout,
                                const float *gate, const float *h, int B, int T, int C);
/* The same with dx and dh SET (=) rather than accumulated (dgate still accumulates): the same
 * bits as zeroing dx and dh and calling bf_gated_residual_backward. */
void bf_gated_residual_backward_set(float *dx, float *dgate, float *dh, const float *dout,
                                    const float *gate, const float *h, int B, int T, int C);
void bf_gated_residual_backward_ref(float *dx, float *dgate, float *dh, const float *dout,
                                    const float *gate, const float *h, int B, int T, int C);

/* Sinusoidal features of one scalar per example (DiT's TimestepEmbedder, used for the
 * guidance scale w): out (B, F), F even, half = F/2, freq_i = exp(-ln(max_period) i / half),
 * out[b, i] = cos(w[b] freq_i) for i < half, sin(w[b] freq_(i-half)) after; max_period
 * BF_TIMESTEP_MAX_PERIOD. Computed in double and rounded once. No backward: w is an input
 * of G (drawn per example), nothing upstream of it is trained; the MLP that follows
 * (bf_linear, bf_silu) carries the gradients. */
#define BF_TIMESTEP_MAX_PERIOD 10000.0
void bf_timestep_embed_forward(float *out, const float *w, int B, int F);

/* SiLU: out = x sigmoid(x) = x / (1 + exp(-x)), exact to a few ulp; NaN propagates;
 * out may alias inp. */
void bf_silu_forward(float *out, const float *inp, size_t n);
/* dinp (n) += dout * sigmoid(x) (1 + x (1 - sigmoid(x))) */
void bf_silu_backward(float *dinp, const float *inp, const float *dout, size_t n);

/* Class embedding with a learned null class: table (K + 1, C), row K is "unconditional".
 * out (B, C) = table[y[b]] for y[b] in [0, K]; y[b] < 0 (or y == NULL: all) takes row K. */
void bf_class_embed_forward(float *out, const float *table, const int *y, int B, int C, int K);
/* dtable (K + 1, C) scatter-adds dout (B, C) into the rows that were read */
void bf_class_embed_backward(float *dtable, const float *dout, const int *y, int B, int C, int K);

/* Implied conditional output of training-time guidance (METHOD Section 7):
 * out (N) = (c (N) + w[b] u (N)) / (1 + w[b]), examples b of n_per = N / B values each
 * (N % B == 0), w (B) > -1. c is the conditional branch G(z | y, w), u the unconditional one
 * G(z | null, 0). Where w[b] == 0 the example is copied from c exactly and u is not read
 * (dropped-label examples are aligned directly). out may alias c. No gradient wrt w (an
 * input). */
void bf_guidance_combine_forward(float *out, const float *c, const float *u, const float *w,
                                 size_t N, int B);
/* dc (N) += dout / (1 + w); du (N) += dout w / (1 + w), or NULL (the unconditional branch is
 * computed without gradient) */
void bf_guidance_combine_backward(float *dc, float *du, const float *dout, const float *w,
                                  size_t N, int B);

/* Squared distance per example for the alignment and reconstruction terms (METHOD Sections 5
 * and 6): dist (B) = inv_scale[b] * mean over N of (pred - target)^2; pred, target (B, N);
 * inv_scale (B) or NULL (1). Norm control passes 1 / mean(target^2) computed without
 * gradient, so inv_scale is a constant here. Sums in double. */
void bf_sqdist_forward(float *dist, const float *pred, const float *target,
                       const float *inv_scale, int B, int N);
/* dpred (B, N) += ddist[b] * inv_scale[b] * 2 (pred - target) / N; ddist (B) */
void bf_sqdist_backward(float *dpred, const float *ddist, const float *pred,
                        const float *target, const float *inv_scale, int B, int N);
/* ms (B) = mean over N of x^2; x (B, N) (no backward: used under stop-gradient) */
void bf_mean_square(float *ms, const float *x, int B, int N);

#endif
