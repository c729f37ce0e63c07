/* Editing with the learned inverse (METHOD Section 9): images in, the model pair,
 * reconstruction and interpolation (masks: mask.c; inpainting: inpaint.c; class editing:
 * edit_class.c). Everything is "encode with F,
 * change z, decode with G in one pass"; the pair is checked before any work. */
#include "edit.h"
#include "reverse.h"
#include "core.h"

#include <math.h>

/* ------------------------------------------------------------------ slerp */
static double angle_between(const float *a, const float *b, size_t m, double *na, double *nb) {
    double dot = 0.0, aa = 0.0, bb = 0.0;
    for (size_t i = 0; i < m; i++) {
        dot += (double)a[i] * b[i];
        aa += (double)a[i] * a[i];
        bb += (double)b[i] * b[i];
    }
    *na = sqrt(aa);
    *nb = sqrt(bb);
    if (!(*na > 0 && *nb > 0)) return 0.0;
    double cs = dot / (*na * *nb);
    return acos(cs > 1.0 ? 1.0 : cs < -1.0 ? -1.0 : cs);
}

void bf_slerp(float *out, const float *a, const float *b, size_t m, double t) {
    double na, nb, om = angle_between(a, b, m, &na, &nb), so = sin(om);
    double wa = 1.0 - t, wb = t;
    if (so > 1e-6) {   /* sin((1 - t) om) / sin(om) is exactly 1 at t = 0: the ends are exact */
        wa = sin((1.0 - t) * om) / so;
        wb = sin(t * om) / so;
    }
    for (size_t i = 0; i < m; i++) out[i] = (float)(wa * a[i] + wb * b[i]);
}

int bf_flow_classify(bf_flow *f, int *y, const float *x, int n) {
    int K = f->cfg.num_classes, N = f->T * f->D;
    for (int i = 0; i < n; i++) y[i] = -1;
    if (K == 0) return 0;
    float *z = bf_malloc(sizeof(float) * n * N), *ld = bf_malloc(sizeof(float) * n);
    int *yk = bf_malloc(sizeof(int) * n);
    double *best = bf_malloc(sizeof(double) * n);
    for (int k = 0; k < K; k++) {
        for (int i = 0; i < n; i++) yk[i] = k;
        bf_flow_encode(f, z, ld, x, yk, n);
        for (int i = 0; i < n; i++) {   /* log p(x | k) per dimension, up to a constant */
            double zz = 0.0;
            for (int j = 0; j < N; j++) zz += (double)z[(size_t)i * N + j] * z[(size_t)i * N + j];
            double lp = -0.5 * zz / N + ld[i];
            if (k == 0 || lp > best[i]) { best[i] = lp; y[i] = k; }
        }
    }
    free(z); free(ld); free(yk); free(best);
    return 0;
}

/* ------------------------------------------------------------------ the model pair */
void bf_editor_init(bf_editor *e, bf_reverse *r, bf_flow *f, const char *flow_path) {
    memset(e, 0, sizeof *e);
    e->reverse = r;
    e->flow = f;
    e->flow_path = flow_path;
    e->denoise = r && r->cfg.denoise_layers > 0;
}

int bf_editor_check(const bf_editor *e, int c, int h, int w) {
    if (!e->reverse || !e->flow || !e->flow_path) {
        bf_set_error("editing needs both models, G and F, and the path F was loaded from");
        return -1;
    }
    if (bf_reverse_check_flow(e->reverse, e->flow, e->flow_path)) return -1;
    const bf_reverse_config *rc = &e->reverse->cfg;
    if (c != rc->in_channels || h != rc->img_size || w != rc->img_size) {
        bf_set_error("the images are %dx%dx%d (W x H x C) but the models take %dx%dx%d", w, h, c,
                     rc->img_size, rc->img_size, rc->in_channels);
        return -1;
    }
    return 0;
}

/* Labels index the class tables: anything else would read outside them. */
int bf_edit_check_labels(const int *y, int n, int K, const char *what) {
    for (int i = 0; y && i < n; i++)
        if (y[i] < -1 || y[i] >= K) {
            bf_set_error("%s %d is %d: labels must be -1 (unconditional) or in [0, %d)", what, i,
                         y[i], K);
            return -1;
        }
    return 0;
}

int bf_edit_check_set(const bf_editor *e, const bf_image_set *in) {
    if (bf_editor_check(e, in->c, in->h, in->w)) return -1;
    if (in->n < 1 || !in->x) { bf_set_error("no images to edit"); return -1; }
    return bf_edit_check_labels(in->y, in->n, e->reverse->cfg.num_classes, "the label of image");
}

/* F^-1 by causal decoding, with score-based denoising at G's recorded sigma when asked. */
static int decode_exact(const bf_editor *e, float *out, const float *z, const int *y, int n) {
    bf_sample_opts o;
    bf_sample_opts_default(&o);
    o.cfg = e->cfg;
    o.denoise = e->denoise;
    o.sigma = bf_reverse_sigma(e->reverse) > 0 ? bf_reverse_sigma(e->reverse) : 0.05f;
    bf_sample_stats st;
    return bf_flow_sample(e->flow, out, z, y, n, &o, &st);
}

int bf_edit_decode(const bf_editor *e, float *out, const float *z, const int *y, int n) {
    if (e->exact) return decode_exact(e, out, z, y, n);
    bf_reverse_sample_opts o;
    bf_reverse_sample_opts_default(&o);
    o.cfg = e->cfg;
    o.output = e->denoise ? BF_REVERSE_OUT_CLEAN : BF_REVERSE_OUT_NOISY;
    return bf_reverse_sample(e->reverse, out, z, y, n, &o, NULL);
}

size_t bf_edit_tokens(const bf_editor *e) { return (size_t)e->flow->T * e->flow->D; }

int bf_reconstruct(const bf_editor *e, float *out, const bf_image_set *in) {
    if (bf_edit_check_set(e, in)) return -1;
    float *z = bf_malloc(sizeof(float) * in->n * bf_edit_tokens(e));
    bf_flow_encode(e->flow, z, NULL, in->x, in->y, in->n);
    int rc = bf_edit_decode(e, out, z, in->y, in->n);
    free(z);
    return rc;
}

int bf_interpolate(const bf_editor *e, float *out, const bf_image_set *in, int ia, int ib,
                   int y, int steps, double *angle) {
    if (bf_edit_check_set(e, in) || bf_edit_check_labels(&y, 1, e->reverse->cfg.num_classes, "interpolation label"))
        return -1;
    if (ia < 0 || ib < 0 || ia >= in->n || ib >= in->n || steps < 2) {
        bf_set_error("interpolation between images %d and %d of %d in %d steps: the indices must "
                     "be images of the set and steps >= 2", ia, ib, in->n, steps);
        return -1;
    }
    size_t px = (size_t)in->c * in->h * in->w, N = bf_edit_tokens(e);
    float *x2 = bf_malloc(sizeof(float) * 2 * px), *z2 = bf_malloc(sizeof(float) * 2 * N);
    float *z = bf_malloc(sizeof(float) * steps * N);
    int y2[2] = {y, y}, *ys = bf_malloc(sizeof(int) * steps);
    memcpy(x2, in->x + ia * px, sizeof(float) * px);
    memcpy(x2 + px, in->x + ib * px, sizeof(float) * px);
    bf_flow_encode(e->flow, z2, NULL, x2, y2, 2);
    double na, nb, om = angle_between(z2, z2 + N, N, &na, &nb);
    if (angle) *angle = om;
    for (int s = 0; s < steps; s++) {
        bf_slerp(z + s * N, z2, z2 + N, N, (double)s / (steps - 1));
        ys[s] = y;
    }
    int rc = bf_edit_decode(e, out, z, ys, steps);
    free(x2); free(z2); free(z); free(ys);
    return rc;
}
