/* Kernels of the convolutional feature network (src/features.c): 2-D convolution, ReLU, 2x2
 * max pooling, softmax cross-entropy. Same conventions as kernels.h: outputs first, gradients
 * prefixed d, every backward ACCUMULATES (+=) into its gradient outputs, a naive *_ref twin for
 * the fast kernel. Images and feature maps are (N, C, H, W) row-major, as PyTorch's NCHW.
 * The kernels run on the calling thread (the network shards its batch over the threads, one
 * parallel region per step); bf_gemm parallelises only when called outside a parallel region. */
#ifndef BF_KERNELS_CONV_H
#define BF_KERNELS_CONV_H

#include <stddef.h>

/* Geometry of a convolution: N images of C channels, H x W, into OC channels through a
 * K x K window moved by stride, with pad zeros on every side. lowp = 1 routes the products
 * through bf_gemm, so they follow the precision setting (the perceptual loss, which only
 * guides training); 0 (the default) keeps them fp32 whatever the setting (evaluation). */
typedef struct { int N, C, H, W, OC, K, stride, pad, lowp; } bf_conv_dims;

int bf_conv_out_h(const bf_conv_dims *d);
int bf_conv_out_w(const bf_conv_dims *d);
/* floats of the col scratch of one image: C K K * OH OW */
size_t bf_conv_col_size(const bf_conv_dims *d);

/* out (N, OC, OH, OW) = inp (N, C, H, W) conv weight (OC, C, K, K) + bias (OC) or NULL.
 * col: scratch of bf_conv_col_size floats (im2col of one image; the product is one GEMM). */
void bf_conv2d_forward(float *out, float *col, const float *inp, const float *weight,
                       const float *bias, const bf_conv_dims *d);
/* dinp (N, C, H, W) or NULL, dweight (OC, C, K, K), dbias (OC) or NULL; dout (N, OC, OH, OW);
 * col, dcol: scratch of bf_conv_col_size floats each. */
void bf_conv2d_backward(float *dinp, float *dweight, float *dbias, float *col, float *dcol,
                        const float *dout, const float *inp, const float *weight,
                        const bf_conv_dims *d);
/* naive twins: direct loops with double sums, no scratch */
void bf_conv2d_forward_ref(float *out, const float *inp, const float *weight, const float *bias,
                           const bf_conv_dims *d);
void bf_conv2d_backward_ref(float *dinp, float *dweight, float *dbias, const float *dout,
                            const float *inp, const float *weight, const bf_conv_dims *d);

/* out = max(inp, 0); out may alias inp */
void bf_relu_forward(float *out, const float *inp, size_t n);
/* dinp (n) += dout where out > 0; out: the forward's output */
void bf_relu_backward(float *dinp, const float *dout, const float *out, size_t n);

/* 2x2 max pooling with stride 2 (odd sizes drop the last row / column):
 * out (N, C, H/2, W/2) from inp (N, C, H, W); NaN propagates. */
void bf_maxpool2_forward(float *out, const float *inp, int N, int C, int H, int W);
/* dinp (N, C, H, W) += dout (N, C, H/2, W/2) at each window's maximum (the first, on ties) */
void bf_maxpool2_backward(float *dinp, const float *dout, const float *inp, int N, int C, int H,
                          int W);

/* Softmax cross-entropy: probs (N, K) = softmax(logits (N, K)); loss (N) = -log probs[y].
 * y (N) in [0, K). */
void bf_softmax_xent_forward(float *loss, float *probs, const float *logits, const int *y,
                             int N, int K);
/* dlogits (N, K) += dloss[i] (probs[i] - onehot(y[i])); dloss (N) */
void bf_softmax_xent_backward(float *dlogits, const float *dloss, const float *probs,
                              const int *y, int N, int K);

#endif
