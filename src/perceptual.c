/* Perceptual distance on the feature network; see perceptual.h. */
#include "perceptual.h"
#include "core.h"

#include <math.h>
#include <string.h>

void bf_perceptual_init(bf_perceptual *p, const bf_features *fn, float weight, float adapt_p,
                        float adapt_eps) {
    memset(p, 0, sizeof *p);
    p->fn = fn;
    p->weight = weight;
    p->adapt_p = adapt_p;
    p->adapt_eps = adapt_eps;
    for (int i = 0; i < fn->n_layers; i++)
        if (fn->layer[i].kind == BF_LAYER_CONV || i == fn->feat_layer) p->layers[p->n_layers++] = i;
}

static size_t layer_size(const bf_features *fn, int i) {
    const bf_feat_layer *l = &fn->layer[i];
    return (size_t)l->oc * l->oh * l->ow;
}

static double norm_of(const float *v, size_t m) {
    double s = 0.0;
    for (size_t k = 0; k < m; k++) s += (double)v[k] * v[k];
    return sqrt(s) + 1e-8;
}

/* D of one image at one layer, and (when dv != NULL) the gradient of scale * D wrt the raw
 * prediction features: with u = v / |v|, dD/du = 2 (u - t), dv = (du - u (u . du)) / |v|. */
static double layer_term(float *dv, const float *v, const float *t, size_t m, float scale) {
    double rv = norm_of(v, m), rt = norm_of(t, m), d = 0.0, dot = 0.0;
    for (size_t k = 0; k < m; k++) {
        double e = v[k] / rv - t[k] / rt;
        d += e * e;
        dot += (v[k] / rv) * 2.0 * e;
    }
    if (dv)
        for (size_t k = 0; k < m; k++) {
            double u = v[k] / rv, du = 2.0 * (u - t[k] / rt);
            dv[k] += (float)(scale * (du - u * dot) / rv);
        }
    return d;
}

double bf_perceptual_loss(const bf_perceptual *p, bf_feat_acts *ap, bf_feat_acts *at,
                          float *dpred, const float *pred, const float *target, int n,
                          double *raw) {
    const bf_features *fn = p->fn;
    bf_features_forward(fn, fn->params, at, target, n);
    bf_features_forward(fn, fn->params, ap, pred, n);
    float *dact[BF_FEAT_MAX_LAYERS] = {0};
    for (int j = 0; j < p->n_layers; j++)
        dact[p->layers[j]] = bf_calloc((size_t)n * layer_size(fn, p->layers[j]), sizeof(float));
    double total = 0.0, sum_raw = 0.0;
    for (int b = 0; b < n; b++) {
        double D = 0.0;
        for (int j = 0; j < p->n_layers; j++) {
            size_t m = layer_size(fn, p->layers[j]);
            D += layer_term(NULL, ap->act[p->layers[j]] + b * m, at->act[p->layers[j]] + b * m, m, 0.0f);
        }
        double k = p->adapt_p > 0 ? 1.0 / pow(D + p->adapt_eps, p->adapt_p) : 1.0;
        total += p->weight * D * k / n;
        sum_raw += D / n;
        for (int j = 0; j < p->n_layers; j++) {
            int i = p->layers[j];
            size_t m = layer_size(fn, i);
            layer_term(dact[i] + b * m, ap->act[i] + b * m, at->act[i] + b * m, m,
                       (float)(p->weight * k / n));
        }
    }
    bf_features_backward_acts(fn, fn->params, ap, dact, dpred);
    for (int j = 0; j < p->n_layers; j++) free(dact[p->layers[j]]);
    if (raw) *raw = sum_raw;
    return total;
}
