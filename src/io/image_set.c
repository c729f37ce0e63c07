/* Images in: the one reader of image sets (bf_image_set) for every command that takes images
 * (editing, eval --images, eval-features): a .npy of images (with a .npy of labels), one
 * .png/.jpg image, or a dataset's test split. One rule set for .npy images:
 *   dtype  uint8 pixels (p / 127.5 - 1), or float32/float64 already in [-1, 1] (a little
 *          slack for rounding, clamped); integers wider than a byte are refused;
 *   shape  (n, H, W) (one channel) or (n, C, H, W); channels-last (n, H, W, C) is not read
 *          (no caller wrote it, and (n, H, W, 1) cannot be told from (n, C, H, W));
 *   labels a .npy of int64 or int32 (m) with m >= n: the first n. */
#include "core.h"

#include <strings.h>

#define MAX_PIXELS ((int64_t)1 << 31)   /* floats in one image set */

int bf_ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n > k && !strcasecmp(s + n - k, suffix);
}

int bf_is_image_file(const char *path) {
    return bf_ends_with(path, ".png") || bf_ends_with(path, ".jpg") || bf_ends_with(path, ".jpeg");
}

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

/* s with room for n images of c x h x w, pixels from px (uint8, NULL: none yet), labels -1. */
static int set_alloc(bf_image_set *s, int n, int c, int h, int w, const uint8_t *px, const char *what) {
    if (n < 1 || c < 1 || h < 1 || w < 1 || (int64_t)n * c * h * w > MAX_PIXELS) {
        bf_set_error("%s holds no images or too many (%d of %dx%dx%d)", what, n, w, h, c);
        return -1;
    }
    size_t m = (size_t)n * c * h * w;
    *s = (bf_image_set){n, c, h, w, bf_malloc(sizeof(float) * m), bf_malloc(sizeof(int) * n)};
    for (size_t i = 0; px && i < m; i++) s->x[i] = bf_pixel_to_unit(px[i]);
    for (int i = 0; i < n; i++) s->y[i] = -1;
    return 0;
}

/* The dtype and shape checks of the rule set: uint8 pixels or [-1, 1] floats, (n, H, W) or
 * (n, C, H, W). */
static int npy_images_check(const char *path, bf_dtype dt, int nd, const int64_t *sh) {
    char shp[160];
    shape_str(shp, sizeof shp, nd, sh);
    int ok = nd == 3 || nd == 4;
    int64_t c = nd == 4 ? sh[1] : 1, h = ok ? sh[nd - 2] : 0, w = ok ? sh[nd - 1] : 0;
    if (dt != BF_DT_U8 && dt != BF_DT_F32 && dt != BF_DT_F64)
        bf_set_error("'%s': the array's dtype is %s; images must be uint8 pixels, or float32 or "
                     "float64 in [-1, 1]", path, dt == BF_DT_I64 ? "int64" : "int32");
    else if (!ok)
        bf_set_error("'%s': images must be (n, H, W) or (n, C, H, W), got %s", path, shp);
    else if (h > 65536 || w > 65536 || c > 4096)
        bf_set_error("'%s': images must be (n, H, W) or (n, C, H, W), got %s: not images", path, shp);
    else
        return 0;
    return -1;
}

int bf_image_set_load_npy(bf_image_set *s, const char *path, int limit) {
    bf_dtype dt;
    int nd;
    int64_t sh[8];
    void *data;
    memset(s, 0, sizeof *s);
    if (bf_read_npy(path, &dt, &nd, sh, &data)) return -1;
    int rc = npy_images_check(path, dt, nd, sh);
    if (rc == 0) {
        int64_t n = limit > 0 && sh[0] > limit ? limit : sh[0];
        rc = set_alloc(s, n > INT32_MAX ? -1 : (int)n, nd == 4 ? (int)sh[1] : 1, (int)sh[nd - 2],
                       (int)sh[nd - 1], dt == BF_DT_U8 ? data : NULL, path);
        if (rc == 0 && dt != BF_DT_U8)
            rc = float_pixels(s->x, data, dt, (size_t)s->n * s->c * s->h * s->w, path);
        if (rc) bf_image_set_free(s);
    }
    free(data);
    return rc;
}

int bf_image_set_load_labels(bf_image_set *s, const char *path) {
    bf_dtype dt;
    int nd;
    int64_t sh[8];
    void *data;
    if (bf_read_npy(path, &dt, &nd, sh, &data)) return -1;
    int ok = nd == 1 && sh[0] >= s->n && (dt == BF_DT_I64 || dt == BF_DT_I32);
    if (!ok) bf_set_error("'%s': expected int64 labels of shape (n) with n >= %d", path, s->n);
    for (int i = 0; ok && i < s->n; i++)
        s->y[i] = dt == BF_DT_I64 ? (int)((const int64_t *)data)[i] : ((const int32_t *)data)[i];
    free(data);
    return ok ? 0 : -1;
}

static int load_file_set(bf_image_set *s, const char *path) {
    uint8_t *px;
    int c, h, w;
    if (bf_read_image(&px, &c, &h, &w, path)) return -1;
    int rc = set_alloc(s, 1, c, h, w, px, path);
    free(px);
    return rc;
}

static int load_data_set(bf_image_set *s, const char *spec, int limit) {
    bf_dataset ds;
    if (bf_dataset_load(&ds, spec, "test")) return -1;
    int n = limit > 0 && limit < ds.n ? limit : ds.n;
    int rc = set_alloc(s, n, ds.c, ds.h, ds.w, ds.pixels, spec);
    for (int i = 0; rc == 0 && i < n; i++) s->y[i] = ds.labels[i];
    bf_dataset_free(&ds);
    return rc;
}

int bf_image_set_load(bf_image_set *s, const char *spec, int limit) {
    memset(s, 0, sizeof *s);
    if (!spec || !*spec) { bf_set_error("no images given"); return -1; }
    if (bf_ends_with(spec, ".npy")) return bf_image_set_load_npy(s, spec, limit);
    if (bf_is_image_file(spec)) return load_file_set(s, spec);
    return load_data_set(s, spec, limit);
}

void bf_image_set_free(bf_image_set *s) {
    free(s->x);
    free(s->y);
    memset(s, 0, sizeof *s);
}
