/* Optimiser pieces as flat loops over one contiguous parameter block. */
#ifndef BF_OPTIM_H
#define BF_OPTIM_H

#include <stddef.h>

typedef struct {
    float lr, beta1, beta2, eps, weight_decay;
} bf_adamw_hparams;

/* One AdamW step (decoupled weight decay, bias correction; t counts from 1).
 * decay_mask (n) or NULL: 1 where weight decay applies. */
void bf_adamw_step(float *params, float *m, float *v, const float *grads,
                   const unsigned char *decay_mask, size_t n, const bf_adamw_hparams *h, long t);
/* ema = d * ema + (1 - d) * params */
void bf_ema_update(float *ema, const float *params, size_t n, float decay);
/* L2 norm of the gradient, in double; NaN/Inf if any entry is not finite. */
double bf_grad_norm(const float *grads, size_t n);
/* Scales the gradient so that its norm is at most max_norm (max_norm <= 0: no clipping). */
void bf_clip_grad(float *grads, size_t n, double norm, float max_norm);
/* Linear warmup to lr over warmup steps, then cosine decay to min_lr at total steps. */
float bf_lr_schedule(long step, long warmup, long total, float lr, float min_lr);

#endif
