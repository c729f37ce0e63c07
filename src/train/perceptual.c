/* Perceptual distance on a frozen feature network; see perceptual.h. */
#include "perceptual.h"
#include "core.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

void bf_perceptual_init(bf_perceptual *p, const bf_features *fn, float weight, float adapt_p,
                        float adapt_eps) {
    memset(p, 0, sizeof *p);
    p->fn = fn;
    p->weight = weight;
    p->adapt_p = adapt_p;
    p->adapt_eps = adapt_eps;
    p->lowp = 1;
    for (int i = 0; i < fn->n_layers; i++)
        if (fn->layer[i].kind == BF_LAYER_CONV || i == fn->feat_layer) p->layers[p->n_layers++] = i;
}

static size_t layer_size(const bf_features *fn, int i) {
    const bf_feat_layer *l = &fn->layer[i];
    return (size_t)l->oc * l->oh * l->ow;
}

/* D of one image at one layer (C channels at P positions, channel-major as the activations):
 * at every position the C-vector of each image is scaled to unit length (as LPIPS does),
 * D = mean over positions of |u - t|^2. When dv != NULL it is SET to scale * dD/dv (its old
 * values are not read: each image and layer is written once): with du = 2 (u - t) / P,
 * dv = (du - u (u . du)) / |v| at each position. Loops run over positions innermost
 * (contiguous), with per-position sums in float scratch. */
static double layer_term(float *dv, const float *v, const float *t, int C, int P, float scale) {
    float *rv = bf_calloc((size_t)3 * P, sizeof(float)), *rt = rv + P, *dot = rt + P;
    for (int c = 0; c < C; c++) {
        const float *vc = v + (size_t)c * P, *tc = t + (size_t)c * P;
        for (int q = 0; q < P; q++) { rv[q] += vc[q] * vc[q]; rt[q] += tc[q] * tc[q]; }
    }
    for (int q = 0; q < P; q++) { rv[q] = 1.0f / (sqrtf(rv[q]) + 1e-8f); rt[q] = 1.0f / (sqrtf(rt[q]) + 1e-8f); }
    double d = 0.0;
    for (int c = 0; c < C; c++) {
        const float *vc = v + (size_t)c * P, *tc = t + (size_t)c * P;
        float part = 0.0f;
#pragma omp simd reduction(+:part)   /* reassociated: float rounding only */
        for (int q = 0; q < P; q++) {
            float u = vc[q] * rv[q], e = u - tc[q] * rt[q];
            part += e * e;
            dot[q] += u * e;
        }
        d += part;
    }
    d /= P;
    if (dv) {
        float k = 2.0f * scale / P;
        for (int c = 0; c < C; c++) {
            const float *vc = v + (size_t)c * P, *tc = t + (size_t)c * P;
            float *dc = dv + (size_t)c * P;
            for (int q = 0; q < P; q++) {
                float u = vc[q] * rv[q];
                dc[q] = k * ((u - tc[q] * rt[q]) - u * dot[q]) * rv[q];
            }
        }
    }
    free(rv);
    return d;
}

static double layer_of(const bf_perceptual *p, float *dv, const bf_feat_acts *ap,
                       const bf_feat_acts *at, int j, int b, float scale) {
    const bf_feat_layer *l = &p->fn->layer[p->layers[j]];
    size_t m = layer_size(p->fn, p->layers[j]);
    return layer_term(dv ? dv + b * m : NULL, ap->act[p->layers[j]] + b * m,
                      at->act[p->layers[j]] + b * m, l->oc, l->oh * l->ow, scale);
}

void bf_perceptual_distances(const bf_perceptual *p, bf_feat_acts *ap, bf_feat_acts *at,
                             double *D, const float *pred, const float *target, int n) {
    const bf_features *fn = p->fn;
    ap->lowp = at->lowp = p->lowp;
    bf_features_forward(fn, fn->params, at, target, n);
    bf_features_forward(fn, fn->params, ap, pred, n);
    for (int b = 0; b < n; b++)
        for (int j = 0; j < p->n_layers; j++)
            D[(size_t)b * p->n_layers + j] = layer_of(p, NULL, ap, at, j, b, 0.0f);
}

/* Mean over the n rows of the cross-entropy of logits (n, K) against y (rows with y < 0
 * skipped); dlogits (n, K) += scale * its gradient, softmax - one-hot over n. */
static double class_term(float *dlogits, const float *logits, const int *y, int n, int K,
                         float scale) {
    double sum = 0.0;
    for (int b = 0; b < n; b++) {
        if (y[b] < 0) continue;
        BF_ASSERT(y[b] < K);
        const float *l = logits + (size_t)b * K;
        double mx = l[0], z = 0.0;
        for (int k = 1; k < K; k++) mx = l[k] > mx ? l[k] : mx;
        for (int k = 0; k < K; k++) z += exp(l[k] - mx);
        sum += log(z) + mx - l[y[b]];
        for (int k = 0; k < K; k++)
            dlogits[(size_t)b * K + k] += scale * (float)((exp(l[k] - mx) / z - (k == y[b])) / n);
    }
    return sum / n;
}

double bf_perceptual_loss(const bf_perceptual *p, bf_feat_acts *ap, bf_feat_acts *at,
                          float *dpred, const float *pred, const float *target, const int *y,
                          int n, double *raw, double *raw_class) {
    const bf_features *fn = p->fn;
    int L = p->n_layers;
    double *D = bf_malloc(sizeof(double) * (size_t)n * L);
    bf_perceptual_distances(p, ap, at, D, pred, target, n);
    float *dact[BF_FEAT_MAX_LAYERS] = {0};
    size_t total = 0;
    for (int j = 0; j < L; j++) total += (size_t)n * layer_size(fn, p->layers[j]);
    /* this thread's buffers, kept between steps (fresh pages every step cost page faults and
     * zeroing in the kernel); layer_term sets every value, so they need no zeroing either */
    float *buf = bf_thread_scratch(BF_SCRATCH_PERCEPTUAL, sizeof(float) * total);
    for (int j = 0; j < L; j++) {   /* every value set below by layer_of */
        dact[p->layers[j]] = buf;
        buf += (size_t)n * layer_size(fn, p->layers[j]);
    }
    double loss = 0.0, sum_raw = 0.0;
    for (int b = 0; b < n; b++)
        for (int j = 0; j < L; j++) {   /* each layer weighted on its own: D_l / sg((D_l + eps)^p) */
            double d = D[(size_t)b * L + j];
            double k = p->adapt_p > 0 ? 1.0 / pow(d + p->adapt_eps, p->adapt_p) : 1.0;
            loss += p->weight * d * k / ((double)n * L);
            sum_raw += d / n;
            layer_of(p, dact[p->layers[j]], ap, at, j, b, (float)(p->weight * k / ((double)n * L)));
        }
    int top = fn->n_layers - 1, K = fn->cfg.num_classes;
    double ce = 0.0;
    float *dlogits = NULL;
    if (y && p->class_weight > 0) {   /* the logits are the last layer, never a distance layer */
        BF_ASSERT(!dact[top]);
        dact[top] = dlogits = bf_calloc((size_t)n * K, sizeof(float));
        ce = class_term(dlogits, ap->act[top], y, n, K, p->class_weight);
        loss += p->class_weight * ce;
    }
    bf_features_backward_acts(fn, fn->params, ap, dact, dpred);
    free(dlogits);
    if (raw_class) *raw_class = ce;
    free(D);
    if (raw) *raw = sum_raw;
    return loss;
}
