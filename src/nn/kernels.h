/* Kernels: paired *_forward / *_backward per operation, llm.c style.
 * Outputs first, then inputs; gradients are prefixed d; every backward ACCUMULATES (+=)
 * into its gradient outputs. Activations are row-major (rows, channels); "N" counts rows
 * (batch * tokens). Each fast kernel has a naive *_ref twin used by the tests. */
#ifndef BF_KERNELS_H
#define BF_KERNELS_H

#include <stddef.h>

/* out (N, OC) = inp (N, IC) @ weight^T + bias; weight (OC, IC) as PyTorch; bias (OC) or NULL.
 * The products follow the precision setting (bf_set_precision) */
void bf_linear_forward(float *out, const float *inp, const float *weight, const float *bias,
                       int N, int IC, int OC);
/* The same through out filled with the bias and bf_gemm accumulating into it (the fast form
 * has the product set out itself): the same bits. */
void bf_linear_forward_ref(float *out, const float *inp, const float *weight, const float *bias,
                           int N, int IC, int OC);
/* dinp (N, IC) or NULL, dweight (OC, IC) or NULL, dbias (OC) or NULL; dout (N, OC) */
void bf_linear_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                        const float *inp, const float *weight, int N, int IC, int OC);
/* bf_linear_backward with dinp (not NULL) SET (=) to dout @ weight rather than accumulated,
 * for a caller that would zero it first: the same bits, without the zeroing pass. */
void bf_linear_backward_set(float *dinp, float *dweight, float *dbias, const float *dout,
                            const float *inp, const float *weight, int N, int IC, int OC);
/* The same, always fp32 (the feature network's linear layers) */
void bf_linear_forward_f32(float *out, const float *inp, const float *weight, const float *bias,
                           int N, int IC, int OC);
void bf_linear_backward_f32(float *dinp, float *dweight, float *dbias, const float *dout,
                            const float *inp, const float *weight, int N, int IC, int OC);

/* out (N, C), mean (N), rstd (N) saved for backward; weight, bias (C); eps 1e-5 */
void bf_layernorm_forward(float *out, float *mean, float *rstd, const float *inp,
                          const float *weight, const float *bias, int N, int C);
/* dweight, dbias may be NULL (frozen parameters) */
void bf_layernorm_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                           const float *inp, const float *weight, const float *mean,
                           const float *rstd, int N, int C);

/* Multi-head self-attention core (no projections).
 * qkv (B, T, 3C): per token all q heads, then all k heads, then all v heads (head size C/NH);
 * out (B, T, C) heads concatenated; att (B, NH, T, T) softmax probabilities (saved);
 * scale 1/sqrt(C/NH); causal: token i attends to tokens <= i. */
void bf_attention_forward(float *out, float *att, const float *qkv, int B, int T, int C, int NH,
                          int causal);
void bf_attention_backward(float *dqkv, const float *dout, const float *qkv, const float *att,
                           int B, int T, int C, int NH, int causal);
void bf_attention_forward_ref(float *out, float *att, const float *qkv, int B, int T, int C,
                              int NH, int causal);
/* Tests: on, attention that would take the fused short-sequence kernel (T <= 64, head size a
 * multiple of 16, a CPU with AVX-512F) takes the bf_gemm path instead; off restores it. */
void bf_attention_test_force_gemm(int on);
/* Whether attention with T tokens and heads of hs takes the fused kernel now. */
int bf_attention_fused_active(int T, int hs);

/* exact GELU: x * Phi(x) = 0.5 x (1 + erf(x / sqrt 2)) */
void bf_gelu_forward(float *out, const float *inp, size_t n);
void bf_gelu_backward(float *dinp, const float *inp, const float *dout, size_t n);
/* dinp SET (=) to dout * gelu'(inp): the same bits as zeroing dinp and bf_gelu_backward */
void bf_gelu_backward_set(float *dinp, const float *inp, const float *dout, size_t n);

/* out = a + b */
void bf_residual_forward(float *out, const float *a, const float *b, size_t n);
void bf_residual_backward(float *da, float *db, const float *dout, size_t n);

/* Token, position and class embedding sum for one flow block (after proj_in):
 * out (B, T, C) = h (B, T, C) + pos[perm(t)] + class_embed[y[b]] (mean of the table when
 * y[b] < 0 or y == NULL; no class term when num_classes == 0).
 * pos (T, C) in natural token order; reverse: perm(t) = T-1-t, else t. cls (num_classes, C). */
void bf_embed_forward(float *out, const float *h, const float *pos, const float *cls,
                      const int *y, int B, int T, int C, int num_classes, int reverse);
/* dh (B,T,C) or NULL, dpos (T,C), dcls (num_classes,C) or NULL; dout (B,T,C) */
void bf_embed_backward(float *dh, float *dpos, float *dcls, const float *dout, const int *y,
                       int B, int T, int C, int num_classes, int reverse);

/* Smooth bound out = c tanh(v / c); c <= 0: identity. */
void bf_softbound_forward(float *out, const float *inp, size_t n, float c);
void bf_softbound_backward(float *dinp, const float *inp, const float *dout, size_t n, float c);

/* The affine autoregressive step of one flow block, fused with the shift and the bound:
 * o (B, T, 2D) raw head outputs (first D channels alpha, next D mu), u (B, T, D) block input
 * (permuted order). For token t > 0: alpha_t = bound(o_{t-1}[:D]), mu_t = bound(o_{t-1}[D:]);
 * token 0 has alpha = mu = 0.  z (B, T, D) = (u - mu) * exp(-alpha);
 * alpha_sum (B) += sum over tokens and channels of alpha (the block's -log|det|). */
void bf_flow_step_forward(float *z, float *alpha_sum, const float *o, const float *u,
                          int B, int T, int D, float c);
/* do_ (B,T,2D), du (B,T,D) or NULL; dz (B,T,D); dalpha_sum (B): gradient wrt alpha_sum */
void bf_flow_step_backward(float *do_, float *du, const float *dz, const float *dalpha_sum,
                           const float *o, const float *u, int B, int T, int D, float c);

/* Gaussian prior NLL per image and dimension, N = T*D values per image:
 * nll (B) = 0.5 mean(z^2) + 0.5 log(2 pi); dz (B, N) += dnll[b] * z / N */
void bf_gaussian_nll_forward(float *nll, const float *z, int B, int N);
void bf_gaussian_nll_backward(float *dz, const float *dnll, const float *z, int B, int N);

/* Token permutation of a block: reverse token order of (B, T, C) when reverse, else copy. */
void bf_permute_tokens(float *out, const float *inp, int B, int T, int C, int reverse);

/* One decoding step of cached causal attention (inference only, no backward).
 * qkv (R, 3W) for the new token at position pos of every row; the new k, v are written into
 * kcache, vcache (R, T, W) at pos; out (R, W) attends over positions 0..pos. */
void bf_attention_decode_step(float *out, float *kcache, float *vcache, const float *qkv,
                              int R, int T, int W, int NH, int pos);

#endif
