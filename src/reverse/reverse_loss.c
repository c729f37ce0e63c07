/* The training loss of G (METHOD Sections 5 to 7): hidden alignment of every stage's head with
 * F's trajectory read from the noise end, reconstruction of the clean image by the denoising
 * stage, norm control, adaptive weighting, and the implied conditional of training-time
 * guidance. Works on one shard; the gradient lands in a->dp. */
#include "reverse.h"
#include "core.h"
#include "kernels_cond.h"

#include <math.h>
#include <string.h>

/* What stage s is trained towards: its target tokens and whether it is an alignment term
 * (normalised, weighted by lambda) or the reconstruction term; NULL: no term. */
static const float *stage_target(const bf_reverse *r, int s, const float *traj, int Bn_f,
                                 const float *clean, const bf_reverse_loss_opts *o, int *align) {
    int B = r->cfg.num_stages, last = r->S - 1;
    size_t state = (size_t)Bn_f * r->T * r->D;
    *align = s != last;
    if (o->inverse == BF_INVERSE_NAIVE && s != last) return NULL;
    if (s < B) return traj + (size_t)(B - 1 - s) * state;   /* stage s reaches x^(B-1-s) */
    return clean;                                            /* the denoising stage */
}

/* The normalisers of the target: 1 / mean square per image (SAMPLE) or per token (TOKEN, a
 * floor keeps near-empty tokens from dominating), into inv (n or n T). Returns the number of
 * rows the distance is split into: n, or n T. */
#define BF_TOKEN_MS_FLOOR 1e-2f
static int target_scales(float *inv, const float *target, int n, int T, int D, int mode) {
    int rows = mode == BF_NORM_TOKEN ? n * T : n, len = mode == BF_NORM_TOKEN ? D : T * D;
    if (mode == BF_NORM_OFF) return n;
    bf_mean_square(inv, target, rows, len);
    for (int i = 0; i < rows; i++)
        inv[i] = 1.0f / fmaxf(inv[i], mode == BF_NORM_TOKEN ? BF_TOKEN_MS_FLOOR : 1e-8f);
    return rows;
}

double bf_reverse_loss(const bf_reverse *r, bf_reverse_acts *a, const bf_reverse_acts *unc,
                       const float *w, const float *traj, int Bn_f, const float *clean, int n,
                       const bf_reverse_loss_opts *o, bf_reverse_loss_parts *parts) {
    BF_ASSERT(a->train && n == a->n && (!unc || (w && unc->n == n)));
    int N = r->T * r->D;
    size_t nN = (size_t)n * N;
    float *q = bf_malloc(sizeof(float) * nN), *dq = bf_malloc(sizeof(float) * nN);
    size_t nT = (size_t)n * r->T;   /* per-token scratch: the finest split of a distance */
    float *inv = bf_malloc(sizeof(float) * 3 * nT), *dist = inv + nT, *ddist = dist + nT;
    double total = 0.0;
    if (parts) memset(parts, 0, sizeof *parts);
    memset(a->dp, 0, sizeof(float) * (size_t)r->S * a->Bn * N);
    for (int s = 0; s < r->S; s++) {
        int align;
        const float *target = stage_target(r, s, traj, Bn_f, clean, o, &align);
        if (!target) continue;
        const float *pred = bf_reverse_head(a, r, s);
        if (unc) bf_guidance_combine_forward(q, pred, bf_reverse_head(unc, r, s), w, nN, n);
        else memcpy(q, pred, sizeof(float) * nN);
        int mode = align ? o->norm_control : BF_NORM_OFF;
        int rows = target_scales(inv, target, n, r->T, r->D, mode), per = rows / n;
        bf_sqdist_forward(dist, q, target, mode ? inv : NULL, rows, N / per);
        for (int b = 0; b < n && per > 1; b++) {   /* token distances -> the image's mean */
            double s = 0.0;
            for (int t = 0; t < per; t++) s += dist[b * per + t];
            dist[b] = (float)(s / per);
        }
        float lambda = align ? o->align_weight : 1.0f;
        double raw = 0.0, term = 0.0;
        for (int b = 0; b < n; b++) {   /* adaptive weighting D / sg((D + eps)^p) */
            float k = o->adapt_p > 0 ? 1.0f / powf(dist[b] + o->adapt_eps, o->adapt_p) : 1.0f;
            term += (double)lambda * dist[b] * k / n;
            ddist[b] = lambda * k / (float)n;
            raw += dist[b] / n;
        }
        total += term;
        memset(dq, 0, sizeof(float) * nN);
        for (int b = n - 1; b >= 0 && per > 1; b--)   /* the mean spreads back over the tokens */
            for (int t = per - 1; t >= 0; t--) ddist[b * per + t] = ddist[b] / per;
        bf_sqdist_backward(dq, ddist, q, target, mode ? inv : NULL, rows, N / per);
        float *dp = bf_reverse_head(a, r, s) - a->p + a->dp;
        if (unc) bf_guidance_combine_backward(dp, NULL, dq, w, nN, n);   /* u: no gradient */
        else for (size_t i = 0; i < nN; i++) dp[i] += dq[i];
        if (parts) {
            if (align) parts->align += raw;
            else parts->rec = raw;
            if (s < 64) parts->align_raw[s] = raw;
        }
    }
    if (parts) parts->total = total;
    free(q); free(dq); free(inv);
    return total;
}
