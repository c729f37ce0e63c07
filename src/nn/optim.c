/* AdamW, EMA, gradient clipping and the learning-rate schedule. */
#include "optim.h"
#include "core.h"

#include <math.h>
#include <stdlib.h>

void bf_adamw_step(float *params, float *m, float *v, const float *grads,
                   const unsigned char *decay_mask, size_t n, const bf_adamw_hparams *h, long t) {
    float b1c = 1.0f - powf(h->beta1, (float)t), b2c = 1.0f - powf(h->beta2, (float)t);
    float lr = h->lr, wd = h->weight_decay;
#pragma omp parallel for simd schedule(static)
    for (size_t i = 0; i < n; i++) {
        float g = grads[i];
        float mi = h->beta1 * m[i] + (1.0f - h->beta1) * g;
        float vi = h->beta2 * v[i] + (1.0f - h->beta2) * g * g;
        m[i] = mi;
        v[i] = vi;
        float decay = (!decay_mask || decay_mask[i]) ? wd * params[i] : 0.0f;
        params[i] -= lr * ((mi / b1c) / (sqrtf(vi / b2c) + h->eps) + decay);
    }
}

void bf_ema_update(float *ema, const float *params, size_t n, float decay) {
#pragma omp parallel for simd schedule(static)
    for (size_t i = 0; i < n; i++) ema[i] = decay * ema[i] + (1.0f - decay) * params[i];
}

/* Partial sums over fixed chunks, added in chunk order: the same bits whatever the thread
 * count or timing, so runs (and resumed runs) are reproducible. */
double bf_grad_norm(const float *grads, size_t n) {
    enum { CHUNK = 65536 };
    size_t nchunks = (n + CHUNK - 1) / CHUNK;
    double *part = bf_calloc(nchunks, sizeof(double)), s = 0.0;
#pragma omp parallel for schedule(static)
    for (size_t c = 0; c < nchunks; c++) {
        double acc = 0.0;
        size_t end = (c + 1) * CHUNK < n ? (c + 1) * CHUNK : n;
        for (size_t i = c * CHUNK; i < end; i++) acc += (double)grads[i] * grads[i];
        part[c] = acc;
    }
    for (size_t c = 0; c < nchunks; c++) s += part[c];
    free(part);
    return sqrt(s);
}

void bf_clip_grad(float *grads, size_t n, double norm, float max_norm) {
    if (max_norm <= 0.0f || !(norm > max_norm)) return;
    float k = (float)(max_norm / (norm + 1e-6));
#pragma omp parallel for simd schedule(static)
    for (size_t i = 0; i < n; i++) grads[i] *= k;
}

float bf_lr_schedule(long step, long warmup, long total, float lr, float min_lr) {
    if (warmup > 0 && step < warmup) return lr * (float)(step + 1) / (float)warmup;
    if (total <= warmup) return lr;
    double p = (double)(step - warmup) / (double)(total - warmup);
    if (p > 1.0) p = 1.0;
    return min_lr + (lr - min_lr) * 0.5f * (float)(1.0 + cos(M_PI * p));
}
