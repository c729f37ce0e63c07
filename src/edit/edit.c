/* Editing with the learned inverse (METHOD Section 9): images in, the model pair,
 * reconstruction and interpolation (masks: mask.c; inpainting: inpaint.c; class editing:
 * edit_class.c). Everything is "encode with F,
 * change z, decode with G in one pass"; the pair is checked before any work. */
#include "edit.h"
#include "reverse.h"
#include "core.h"

#include <errno.h>
#include <math.h>
#include <strings.h>

#define MAX_PIXELS ((int64_t)1 << 31)   /* floats in one image set */

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

/* ------------------------------------------------------------------ images in */
static void shape_str(char *buf, size_t cap, int nd, const int64_t *sh) {
    size_t k = (size_t)snprintf(buf, cap, "(");
    for (int i = 0; i < nd && k < cap; i++)
        k += (size_t)snprintf(buf + k, cap - k, "%s%lld", i ? ", " : "", (long long)sh[i]);
    if (k < cap) snprintf(buf + k, cap - k, ")");
}

/* Values of a float array must be images in [-1, 1]; a little slack for rounding. */
static int float_pixels(float *x, const void *data, bf_dtype dt, size_t m, const char *path) {
    for (size_t i = 0; i < m; i++) {
        double v = dt == BF_DT_F32 ? ((const float *)data)[i] : ((const double *)data)[i];
        if (!(v >= -1.001 && v <= 1.001)) {
            bf_set_error("'%s': value %g at flat index %zu is not a pixel in [-1, 1] (float "
                         "images must be scaled to [-1, 1]; or give uint8)", path, v, i);
            return -1;
        }
        x[i] = (float)(v < -1.0 ? -1.0 : v > 1.0 ? 1.0 : v);
    }
    return 0;
}

static int set_alloc(bf_image_set *s, int n, int c, int h, int w, const char *what) {
    if (n < 1 || c < 1 || h < 1 || w < 1 || (int64_t)n * c * h * w > MAX_PIXELS) {
        bf_set_error("%s holds no images or too many (%d of %dx%dx%d)", what, n, w, h, c);
        return -1;
    }
    *s = (bf_image_set){n, c, h, w, bf_malloc(sizeof(float) * n * c * h * w), bf_malloc(sizeof(int) * n)};
    for (int i = 0; i < n; i++) s->y[i] = -1;
    return 0;
}

static int load_npy_set(bf_image_set *s, const char *path, int limit) {
    bf_dtype dt;
    int nd, rc = -1;
    int64_t sh[8];
    void *data;
    if (bf_read_npy(path, &dt, &nd, sh, &data)) return -1;
    char shp[160];
    shape_str(shp, sizeof shp, nd, sh);
    int ok = nd == 3 || nd == 4;
    int64_t n = sh[0], c = nd == 4 ? sh[1] : 1, h = ok ? sh[nd - 2] : 0, w = ok ? sh[nd - 1] : 0;
    if (!ok) {
        bf_set_error("'%s' has shape %s: images must be (n, H, W) or (n, C, H, W)", path, shp);
    } else if (dt != BF_DT_U8 && dt != BF_DT_F32 && dt != BF_DT_F64) {
        bf_set_error("'%s' holds integers wider than a byte: give uint8 pixels or floats in [-1, 1]", path);
    } else if (h > 65536 || w > 65536 || c > 4096) {
        bf_set_error("'%s' has shape %s: not images", path, shp);
    } else {
        if (limit > 0 && n > limit) n = limit;
        if (set_alloc(s, n > INT32_MAX ? -1 : (int)n, (int)c, (int)h, (int)w, path) == 0) {
            size_t m = (size_t)n * c * h * w;
            if (dt == BF_DT_U8)
                for (size_t i = 0; i < m; i++) s->x[i] = ((const uint8_t *)data)[i] / 127.5f - 1.0f;
            rc = dt == BF_DT_U8 ? 0 : float_pixels(s->x, data, dt, m, path);
            if (rc) bf_image_set_free(s);
        }
    }
    free(data);
    return rc;
}

static int load_file_set(bf_image_set *s, const char *path) {
    uint8_t *px;
    int c, h, w;
    if (bf_read_image(&px, &c, &h, &w, path)) return -1;
    int rc = set_alloc(s, 1, c, h, w, path);
    for (size_t i = 0; rc == 0 && i < (size_t)c * h * w; i++) s->x[i] = px[i] / 127.5f - 1.0f;
    free(px);
    return rc;
}

static int load_data_set(bf_image_set *s, const char *spec, int limit) {
    bf_dataset ds;
    if (bf_dataset_load(&ds, spec, "test")) return -1;
    int n = limit > 0 && limit < ds.n ? limit : ds.n;
    int rc = set_alloc(s, n, ds.c, ds.h, ds.w, spec);
    size_t m = (size_t)n * ds.c * ds.h * ds.w;
    for (size_t i = 0; rc == 0 && i < m; i++) s->x[i] = ds.pixels[i] / 127.5f - 1.0f;
    for (int i = 0; rc == 0 && i < n; i++) s->y[i] = ds.labels[i];
    bf_dataset_free(&ds);
    return rc;
}

int bf_image_set_load(bf_image_set *s, const char *spec, int limit) {
    memset(s, 0, sizeof *s);
    if (!spec || !*spec) { bf_set_error("no images given"); return -1; }
    if (bf_edit_ends_with(spec, ".npy")) return load_npy_set(s, spec, limit);
    if (bf_edit_ends_with(spec, ".png") || bf_edit_ends_with(spec, ".jpg") || bf_edit_ends_with(spec, ".jpeg"))
        return load_file_set(s, spec);
    return load_data_set(s, spec, limit);
}

void bf_image_set_free(bf_image_set *s) {
    free(s->x);
    free(s->y);
    memset(s, 0, sizeof *s);
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
