/* Masks of the known region for inpainting (METHOD Section 9), in two resolutions: pixel masks
 * (H, W), which say exactly which pixels the output keeps from the input, and token masks
 * (T), what the noise-space mix works on. A pixel mask maps to token weights in [0, 1] (the
 * fraction of each token's pixels that are known, optionally blurred over the token grid: the
 * soft boundary), and to a hard token mask by majority. */
#include "edit.h"
#include "core.h"

#include <errno.h>
#include <math.h>

#define MASK_CHOICES "left-half, right-half, top-half, bottom-half, center, border, " \
                     "random-patches[:FRACTION[:SEED]] or a .png/.jpg file of the image size"

/* ------------------------------------------------------------------ masks */
static int token_grid(int img_size, int patch_size) {
    if (img_size <= 0 || patch_size <= 0 || img_size % patch_size) {
        bf_set_error("mask: an image side of %d is not a whole number of %d-pixel patches",
                     img_size, patch_size);
        return -1;
    }
    return img_size / patch_size;
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

/* pix (H, W) of a PNG/JPEG file: white (channel mean >= 128) = known. */
static int image_pixel_mask(uint8_t *pix, const char *path, int img) {
    uint8_t *px;
    int c, h, w;
    if (bf_read_image(&px, &c, &h, &w, path)) return -1;
    if (h != img || w != img) {
        bf_set_error("mask '%s' is %dx%d but the images are %dx%d", path, w, h, img, img);
        free(px);
        return -1;
    }
    size_t hw = (size_t)h * w;
    for (size_t i = 0; i < hw; i++) {
        int sum = 0;
        for (int k = 0; k < c; k++) sum += px[k * hw + i];
        pix[i] = sum >= 128 * c;
    }
    free(px);
    return 0;
}

/* m (T) of a PNG/JPEG file: a token is known when most of its pixels are. */
static int image_mask(uint8_t *m, const char *path, int img, int p) {
    int g = img / p;
    uint8_t *pix = bf_malloc((size_t)img * img);
    float *known = bf_malloc(sizeof(float) * g * g);
    int rc = image_pixel_mask(pix, path, img);
    if (rc == 0) {
        bf_mask_token_weights(known, pix, img, p, 0.0f);
        for (int t = 0; t < g * g; t++) m[t] = known[t] > 0.5f;
    }
    free(pix);
    free(known);
    return rc;
}

/* The named shape spec (a mask_shape), or -1. */
static int shape_of(const char *spec) {
    for (int s = 0; s < (int)(sizeof SHAPE_NAMES / sizeof SHAPE_NAMES[0]); s++)
        if (!strcmp(spec, SHAPE_NAMES[s])) return s;
    return -1;
}

/* grid (n, n) <- where the shape s is known, on an n x n grid (tokens or pixels). */
static void shape_fill(uint8_t *grid, int s, int n) {
    for (int r = 0; r < n; r++)
        for (int c = 0; c < n; c++) grid[r * n + c] = (uint8_t)shape_known((mask_shape)s, r, c, n);
}

int bf_mask_parse(uint8_t *mask, const char *spec, int img_size, int patch_size) {
    int g = token_grid(img_size, patch_size);
    if (g < 0) return -1;
    if (!spec) spec = "";
    int shape = shape_of(spec);
    if (shape >= 0) {
        shape_fill(mask, shape, g);
        return 0;
    }
    const char *rp = "random-patches";
    if (!strncmp(spec, rp, strlen(rp)) && (!spec[strlen(rp)] || spec[strlen(rp)] == ':'))
        return random_mask(mask, spec + strlen(rp), g * g);
    if (bf_is_image_file(spec))
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
    uint8_t *pix = bf_malloc((size_t)img_size * img_size);
    bf_mask_pixels(pix, mask, img_size, patch_size);
    bf_pixmask_fill(x, pix, fill, n, c, img_size);
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
    uint8_t *pix = bf_malloc((size_t)img_size * img_size);
    bf_mask_pixels(pix, mask, img_size, patch_size);
    bf_pixmask_mse(known, unknown, a, b, pix, n, c, img_size);
    free(pix);
}


/* ------------------------------------------------------------------ pixel masks */
int bf_mask_parse_pixels(uint8_t *pix, const char *spec, int img_size, int patch_size) {
    int g = token_grid(img_size, patch_size);
    if (g < 0) return -1;
    if (!spec) spec = "";
    int shape = shape_of(spec);
    if (shape >= 0) {   /* the same shapes, on the pixel grid */
        shape_fill(pix, shape, img_size);
        return 0;
    }
    if (bf_is_image_file(spec))
        return image_pixel_mask(pix, spec, img_size);
    uint8_t *tok = bf_malloc((size_t)g * g);   /* random-patches: whole tokens */
    int rc = bf_mask_parse(tok, spec, img_size, patch_size);
    if (rc == 0) bf_mask_pixels(pix, tok, img_size, patch_size);
    free(tok);
    return rc;
}

/* m (g, g) <- (1 - soft) m + soft * (mean of m over each token's 3 x 3 neighbourhood). */
static void blur_tokens(float *m, int g, float soft) {
    float *b = bf_malloc(sizeof(float) * g * g);
    for (int r = 0; r < g; r++)
        for (int c = 0; c < g; c++) {
            double s = 0.0;
            int cnt = 0;
            for (int dr = -1; dr <= 1; dr++)
                for (int dc = -1; dc <= 1; dc++) {
                    int rr = r + dr, cc = c + dc;
                    if (rr < 0 || cc < 0 || rr >= g || cc >= g) continue;
                    s += m[rr * g + cc];
                    cnt++;
                }
            b[r * g + c] = (float)((1.0 - soft) * m[r * g + c] + soft * s / cnt);
        }
    memcpy(m, b, sizeof(float) * g * g);
    free(b);
}

void bf_mask_token_weights(float *m, const uint8_t *pix, int img_size, int patch_size,
                           float soft) {
    int g = img_size / patch_size, p = patch_size;
    for (int tr = 0; tr < g; tr++)
        for (int tc = 0; tc < g; tc++) {
            int known = 0;
            for (int i = tr * p; i < (tr + 1) * p; i++)
                for (int j = tc * p; j < (tc + 1) * p; j++) known += pix[i * img_size + j];
            m[tr * g + tc] = (float)known / (float)(p * p);
        }
    if (soft > 0.0f) blur_tokens(m, g, soft > 1.0f ? 1.0f : soft);
}

void bf_pixmask_fill(float *x, const uint8_t *pix, float fill, int n, int c, int img_size) {
    size_t hw = (size_t)img_size * img_size;
    for (size_t k = 0; k < (size_t)n * c; k++)
        for (size_t i = 0; i < hw; i++)
            if (!pix[i]) x[k * hw + i] = fill;
}

void bf_pixmask_paste(float *x, const float *src, const uint8_t *pix, int n, int c,
                      int img_size) {
    size_t hw = (size_t)img_size * img_size;
    for (size_t k = 0; k < (size_t)n * c; k++)
        for (size_t i = 0; i < hw; i++)
            if (pix[i]) x[k * hw + i] = src[k * hw + i];
}

void bf_pixmask_mse(double *known, double *unknown, const float *a, const float *b,
                    const uint8_t *pix, int n, int c, int img_size) {
    size_t hw = (size_t)img_size * img_size, cnt[2] = {0, 0};
    double s[2] = {0.0, 0.0};
    for (size_t k = 0; k < (size_t)n * c; k++)
        for (size_t i = 0; i < hw; i++) {
            double d = (double)a[k * hw + i] - b[k * hw + i];
            s[pix[i] != 0] += d * d;
            cnt[pix[i] != 0]++;
        }
    *known = cnt[1] ? s[1] / (double)cnt[1] : NAN;
    *unknown = cnt[0] ? s[0] / (double)cnt[0] : NAN;
}

void bf_inpaint_mix_soft(float *z, const float *zx, const float *eps, const float *m, float r,
                         int n, int T, int D) {
    for (size_t t = 0; t < (size_t)n * T; t++) {
        float q = (1.0f - m[t % T]) * r, a = sqrtf(1.0f - q * q);
        for (size_t d = t * D; d < (t + 1) * D; d++) z[d] = a * zx[d] + q * eps[d];
    }
}
