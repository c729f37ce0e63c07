/* Editing with the learned inverse (METHOD Section 9): token masks, noise-space mixing,
 * inpainting, class editing, reconstruction and interpolation. Everything is "encode with F,
 * change z, decode with G in one pass"; the pair is checked before any work. */
#include "reverse.h"
#include "core.h"

#include <errno.h>
#include <math.h>
#include <strings.h>

#define MASK_CHOICES "left-half, right-half, top-half, bottom-half, center, border, " \
                     "random-patches[:FRACTION[:SEED]] or a .png/.jpg file of the image size"
#define MAX_PIXELS ((int64_t)1 << 31)   /* floats in one image set */

/* ------------------------------------------------------------------ masks */
static int token_grid(int img_size, int patch_size) {
    if (img_size <= 0 || patch_size <= 0 || img_size % patch_size) {
        bf_set_error("mask: an image side of %d is not a whole number of %d-pixel patches",
                     img_size, patch_size);
        return -1;
    }
    return img_size / patch_size;
}

static int ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n > k && !strcasecmp(s + n - k, suffix);
}

/* The central square: about half the side, with as many tokens on either side of it (so
 * its side has the grid's parity: 3 of 7, 4 of 8). */
static void center_square(int g, int *lo, int *hi) {
    int s = g / 2;
    if ((g - s) % 2 && s + 1 < g) s++;
    *lo = (g - s) / 2;
    *hi = *lo + s;
}

typedef enum { M_LEFT, M_RIGHT, M_TOP, M_BOTTOM, M_CENTER, M_BORDER } mask_shape;
static const char *const SHAPE_NAMES[] = {"left-half", "right-half", "top-half", "bottom-half",
                                          "center", "border"};

static int shape_known(mask_shape s, int r, int c, int g) {
    int h = g / 2, lo, hi;
    center_square(g, &lo, &hi);
    int in_center = r >= lo && r < hi && c >= lo && c < hi;
    switch (s) {
    case M_LEFT: return c < h;
    case M_RIGHT: return c >= g - h;
    case M_TOP: return r < h;
    case M_BOTTOM: return r >= g - h;
    case M_CENTER: return in_center;
    case M_BORDER: return !in_center;
    }
    return 0;
}

/* args: what follows "random-patches": "" or ":FRACTION[:SEED]". Exactly round(FRACTION T)
 * tokens are known, drawn by a seeded shuffle, so the same seed gives the same mask. */
static int random_mask(uint8_t *m, const char *args, int T) {
    double frac = 0.5;
    uint64_t seed = 0;
    if (*args) {
        char *end;
        errno = 0;
        frac = strtod(args + 1, &end);
        if (end == args + 1 || errno || !(frac >= 0.0 && frac <= 1.0) || (*end && *end != ':')) {
            bf_set_error("mask random-patches%s: FRACTION must be a number in [0, 1]", args);
            return -1;
        }
        if (*end == ':') {
            const char *s = end + 1;
            seed = strtoull(s, &end, 10);
            if (end == s || *end || errno || *s == '-') {
                bf_set_error("mask random-patches%s: SEED must be a non-negative integer", args);
                return -1;
            }
        }
    }
    int k = (int)lround(frac * T), *perm = bf_malloc(sizeof(int) * T);
    for (int i = 0; i < T; i++) perm[i] = i;
    bf_rng rng;
    bf_rng_seed(&rng, seed);
    memset(m, 0, (size_t)T);
    for (int i = 0; i < k; i++) {   /* the first k places of a Fisher-Yates shuffle */
        int j = i + (int)bf_rng_below(&rng, (uint32_t)(T - i)), t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
        m[perm[i]] = 1;
    }
    free(perm);
    return 0;
}

static int image_mask(uint8_t *m, const char *path, int img, int p) {
    uint8_t *px;
    int c, h, w, g = img / p;
    if (bf_read_image(&px, &c, &h, &w, path)) return -1;
    if (h != img || w != img) {
        bf_set_error("mask '%s' is %dx%d but the images are %dx%d", path, w, h, img, img);
        free(px);
        return -1;
    }
    size_t hw = (size_t)h * w;
    for (int tr = 0; tr < g; tr++)
        for (int tc = 0; tc < g; tc++) {
            int white = 0;
            for (int i = tr * p; i < (tr + 1) * p; i++)
                for (int j = tc * p; j < (tc + 1) * p; j++) {
                    int sum = 0;
                    for (int k = 0; k < c; k++) sum += px[k * hw + (size_t)i * w + j];
                    white += sum >= 128 * c;
                }
            m[tr * g + tc] = 2 * white > p * p;   /* most of its pixels */
        }
    free(px);
    return 0;
}

int bf_mask_parse(uint8_t *mask, const char *spec, int img_size, int patch_size) {
    int g = token_grid(img_size, patch_size);
    if (g < 0) return -1;
    if (!spec) spec = "";
    for (int s = 0; s < (int)(sizeof SHAPE_NAMES / sizeof SHAPE_NAMES[0]); s++)
        if (!strcmp(spec, SHAPE_NAMES[s])) {
            for (int r = 0; r < g; r++)
                for (int c = 0; c < g; c++) mask[r * g + c] = (uint8_t)shape_known((mask_shape)s, r, c, g);
            return 0;
        }
    const char *rp = "random-patches";
    if (!strncmp(spec, rp, strlen(rp)) && (!spec[strlen(rp)] || spec[strlen(rp)] == ':'))
        return random_mask(mask, spec + strlen(rp), g * g);
    if (ends_with(spec, ".png") || ends_with(spec, ".jpg") || ends_with(spec, ".jpeg"))
        return image_mask(mask, spec, img_size, patch_size);
    bf_set_error("unknown mask '%s': give " MASK_CHOICES, spec);
    return -1;
}

void bf_mask_pixels(uint8_t *pix, const uint8_t *mask, int img_size, int patch_size) {
    int g = img_size / patch_size;
    for (int i = 0; i < img_size; i++)
        for (int j = 0; j < img_size; j++) pix[i * img_size + j] = mask[(i / patch_size) * g + j / patch_size];
}

void bf_mask_fill(float *x, const uint8_t *mask, float fill, int n, int c, int img_size,
                  int patch_size) {
    size_t hw = (size_t)img_size * img_size;
    uint8_t *pix = bf_malloc(hw);
    bf_mask_pixels(pix, mask, img_size, patch_size);
    for (size_t k = 0; k < (size_t)n * c; k++)
        for (size_t i = 0; i < hw; i++)
            if (!pix[i]) x[k * hw + i] = fill;
    free(pix);
}

void bf_inpaint_mix(float *z, const float *zx, const float *eps, const uint8_t *mask, int n,
                    int T, int D) {
    for (size_t t = 0; t < (size_t)n * T; t++) {
        const float *src = mask[t % T] ? zx + t * D : eps + t * D;
        if (src != z + t * D) memcpy(z + t * D, src, sizeof(float) * D);   /* z may be eps */
    }
}

void bf_mask_mse(double *known, double *unknown, const float *a, const float *b,
                 const uint8_t *mask, int n, int c, int img_size, int patch_size) {
    size_t hw = (size_t)img_size * img_size;
    uint8_t *pix = bf_malloc(hw);
    bf_mask_pixels(pix, mask, img_size, patch_size);
    double s[2] = {0.0, 0.0};
    size_t cnt[2] = {0, 0};
    for (size_t k = 0; k < (size_t)n * c; k++)
        for (size_t i = 0; i < hw; i++) {
            double d = (double)a[k * hw + i] - b[k * hw + i];
            s[pix[i]] += d * d;
            cnt[pix[i]]++;
        }
    free(pix);
    *known = cnt[1] ? s[1] / (double)cnt[1] : NAN;
    *unknown = cnt[0] ? s[0] / (double)cnt[0] : NAN;
}

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
    if (ends_with(spec, ".npy")) return load_npy_set(s, spec, limit);
    if (ends_with(spec, ".png") || ends_with(spec, ".jpg") || ends_with(spec, ".jpeg"))
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
static int check_labels(const int *y, int n, int K, const char *what) {
    for (int i = 0; y && i < n; i++)
        if (y[i] < -1 || y[i] >= K) {
            bf_set_error("%s %d is %d: labels must be -1 (unconditional) or in [0, %d)", what, i,
                         y[i], K);
            return -1;
        }
    return 0;
}

static int check_set(const bf_editor *e, const bf_image_set *in) {
    if (bf_editor_check(e, in->c, in->h, in->w)) return -1;
    if (in->n < 1 || !in->x) { bf_set_error("no images to edit"); return -1; }
    return check_labels(in->y, in->n, e->reverse->cfg.num_classes, "the label of image");
}

static int decode(const bf_editor *e, float *out, const float *z, const int *y, int n) {
    bf_reverse_sample_opts o;
    bf_reverse_sample_opts_default(&o);
    o.cfg = e->cfg;
    o.output = e->denoise ? BF_REVERSE_OUT_CLEAN : BF_REVERSE_OUT_NOISY;
    return bf_reverse_sample(e->reverse, out, z, y, n, &o, NULL);
}

static size_t tokens_of(const bf_editor *e) { return (size_t)e->flow->T * e->flow->D; }

int bf_inpaint(const bf_editor *e, float *out, const bf_image_set *in, const uint8_t *mask,
               int encode_full, uint64_t seed) {
    if (check_set(e, in)) return -1;
    const bf_reverse_config *c = &e->reverse->cfg;
    size_t px = (size_t)in->c * in->h * in->w, N = tokens_of(e);
    float *xe = bf_malloc(sizeof(float) * in->n * px), *zx = bf_malloc(sizeof(float) * in->n * N);
    float *z = bf_malloc(sizeof(float) * in->n * N);
    memcpy(xe, in->x, sizeof(float) * in->n * px);
    if (!encode_full) bf_mask_fill(xe, mask, 0.0f, in->n, in->c, c->img_size, c->patch_size);
    bf_flow_encode(e->flow, zx, NULL, xe, in->y, in->n);
    bf_rng rng;
    bf_rng_seed(&rng, seed);
    for (size_t i = 0; i < in->n * N; i++) z[i] = bf_rng_normal(&rng);
    bf_inpaint_mix(z, zx, z, mask, in->n, e->flow->T, e->flow->D);
    int rc = decode(e, out, z, in->y, in->n);
    free(xe); free(zx); free(z);
    return rc;
}

int bf_edit_class(const bf_editor *e, float *out, const bf_image_set *in, const int *targets,
                  int k) {
    if (check_set(e, in) || check_labels(targets, k, e->reverse->cfg.num_classes, "target")) return -1;
    if (k < 1) { bf_set_error("class editing needs at least one target class"); return -1; }
    size_t px = (size_t)in->c * in->h * in->w, N = tokens_of(e);
    float *z = bf_malloc(sizeof(float) * in->n * N), *x = bf_malloc(sizeof(float) * in->n * px);
    int *yt = bf_malloc(sizeof(int) * in->n), rc = 0;
    bf_flow_encode(e->flow, z, NULL, in->x, in->y, in->n);
    for (int j = 0; j < k && rc == 0; j++) {
        for (int i = 0; i < in->n; i++) yt[i] = targets[j];
        rc = decode(e, x, z, yt, in->n);
        for (int i = 0; rc == 0 && i < in->n; i++)   /* image i's row holds its k edits */
            memcpy(out + ((size_t)i * k + j) * px, x + i * px, sizeof(float) * px);
    }
    free(z); free(x); free(yt);
    return rc;
}

int bf_reconstruct(const bf_editor *e, float *out, const bf_image_set *in) {
    if (check_set(e, in)) return -1;
    float *z = bf_malloc(sizeof(float) * in->n * tokens_of(e));
    bf_flow_encode(e->flow, z, NULL, in->x, in->y, in->n);
    int rc = decode(e, out, z, in->y, in->n);
    free(z);
    return rc;
}

int bf_interpolate(const bf_editor *e, float *out, const bf_image_set *in, int ia, int ib,
                   int y, int steps, double *angle) {
    if (check_set(e, in) || check_labels(&y, 1, e->reverse->cfg.num_classes, "interpolation label"))
        return -1;
    if (ia < 0 || ib < 0 || ia >= in->n || ib >= in->n || steps < 2) {
        bf_set_error("interpolation between images %d and %d of %d in %d steps: the indices must "
                     "be images of the set and steps >= 2", ia, ib, in->n, steps);
        return -1;
    }
    size_t px = (size_t)in->c * in->h * in->w, N = tokens_of(e);
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
    int rc = decode(e, out, z, ys, steps);
    free(x2); free(z2); free(z); free(ys);
    return rc;
}
