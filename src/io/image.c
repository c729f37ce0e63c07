/* Images and arrays out: PNG files and sample grids (via stb_image_write), NumPy .npy files
 * (write version 1.0; read 1.0 and 2.0), and the float -> uint8 pixel mapping. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "core.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <sys/stat.h>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "biflow's .npy and safetensors I/O assume a little-endian host"
#endif

#include <stb/stb_image_write.h>   /* compiled once, in stb_impl.c; files go through memory
                                        * so that they can be written atomically */

#define MAX_SIDE 65536

/* ------------------------------------------------------------------ PNG */
typedef struct { uint8_t *p; size_t n, cap; } membuf;

static void membuf_put(void *ctx, void *data, int size) {
    membuf *b = ctx;
    if (b->n + (size_t)size > b->cap) {
        b->cap = 2 * (b->n + (size_t)size);
        b->p = bf_realloc(b->p, b->cap);
    }
    memcpy(b->p + b->n, data, (size_t)size);
    b->n += (size_t)size;
}

int bf_png_encode(uint8_t **out, size_t *size, const uint8_t *pixels, int h, int w, int c) {
    *out = NULL;
    *size = 0;
    if (h < 1 || w < 1 || h > MAX_SIDE || w > MAX_SIDE || c < 1 || c > 4 || !pixels ||
        (int64_t)h * w * c > INT_MAX) {
        bf_set_error("cannot encode PNG: bad image %dx%d with %d channels", w, h, c);
        return -1;
    }
    membuf b = {0};
    if (!stbi_write_png_to_func(membuf_put, &b, w, h, c, pixels, w * c)) {
        bf_set_error("cannot encode PNG of %dx%d with %d channels", w, h, c);
        free(b.p);
        return -1;
    }
    *out = b.p;
    *size = b.n;
    return 0;
}

/* Writes the n bytes of an encoded image to path (atomically) and frees them; encode_rc != 0:
 * the encoder failed, and its message becomes "cannot write WHAT 'path': why". */
static int write_encoded(const char *path, const char *what, int encode_rc, uint8_t *bytes, size_t n) {
    if (encode_rc) {
        char why[512];
        snprintf(why, sizeof why, "%s", bf_last_error());
        bf_set_error("cannot write %s '%s': %s", what, path, why);
        return -1;
    }
    int rc = bf_write_file_atomic(path, bytes, n);
    free(bytes);
    return rc;
}

int bf_write_png(const char *path, const uint8_t *pixels, int h, int w, int c) {
    uint8_t *png;
    size_t n;
    int rc = bf_png_encode(&png, &n, pixels, h, w, c);
    return write_encoded(path, "PNG", rc, png, n);
}

/* ------------------------------------------------------------------ float pixels */
static inline uint8_t to_u8(float x) {
    if (!(x > -1.0f)) return 0;        /* also NaN */
    if (x >= 1.0f) return 255;
    return (uint8_t)((x + 1.0f) * 127.5f + 0.5f);
}

void bf_images_to_u8(uint8_t *out, const float *x, size_t n) {
    for (size_t i = 0; i < n; i++) out[i] = to_u8(x[i]);
}

#define GRID_GAP 2
#define GRID_BG 128

/* Draws image k (CHW floats) into the HWC grid at (y0, x0), each pixel as a scale x scale block.
 * A pixel with any NaN channel is drawn pure red in RGB (0 in grey) so that it stands out. */
static void grid_draw(uint8_t *grid, int gw, const float *img, int c, int h, int w, int scale,
                      int y0, int x0) {
    for (int y = 0; y < h * scale; y++)
        for (int x = 0; x < w * scale; x++) {
            size_t src = (size_t)(y / scale) * w + (size_t)(x / scale);
            uint8_t *dst = grid + ((size_t)(y0 + y) * gw + (size_t)(x0 + x)) * c;
            int nan = 0;
            for (int k = 0; k < c; k++) nan |= isnan(img[(size_t)k * h * w + src]);
            for (int k = 0; k < c; k++)
                dst[k] = nan ? (c == 3 && k == 0 ? 255 : 0) : to_u8(img[(size_t)k * h * w + src]);
        }
}

/* Layout as torchvision's make_grid: a GRID_GAP border around and between the images; cells of
 * an incomplete last row stay background. ncols <= 0 picks ceil(sqrt(n)). */
int bf_image_grid_png(uint8_t **out, size_t *size, const float *images, int n, int c, int h,
                      int w, int ncols, int scale) {
    *out = NULL;
    *size = 0;
    if (ncols <= 0) ncols = (int)ceil(sqrt((double)(n > 0 ? n : 1)));
    if (ncols > n) ncols = n;
    int64_t rows = n > 0 ? (n + ncols - 1) / ncols : 0;
    int64_t gw = (int64_t)ncols * ((int64_t)w * scale + GRID_GAP) + GRID_GAP;
    int64_t gh = rows * ((int64_t)h * scale + GRID_GAP) + GRID_GAP;
    if (n < 1 || (c != 1 && c != 3) || h < 1 || w < 1 || scale < 1 || !images ||
        (int64_t)h * scale > MAX_SIDE || (int64_t)w * scale > MAX_SIDE || gw > MAX_SIDE ||
        gh > MAX_SIDE || gw * gh * c > INT_MAX) {
        bf_set_error("%d images of %dx%dx%d at scale %d in %d columns is not a valid grid (c must "
                     "be 1 or 3, at most %d pixels a side)", n, c, h, w, scale, ncols, MAX_SIDE);
        return -1;
    }
    uint8_t *grid = bf_malloc((size_t)(gw * gh * c));
    memset(grid, GRID_BG, (size_t)(gw * gh * c));
    for (int i = 0; i < n; i++) {
        int y0 = GRID_GAP + (i / ncols) * (h * scale + GRID_GAP);
        int x0 = GRID_GAP + (i % ncols) * (w * scale + GRID_GAP);
        grid_draw(grid, (int)gw, images + (size_t)i * c * h * w, c, h, w, scale, y0, x0);
    }
    int rc = bf_png_encode(out, size, grid, (int)gh, (int)gw, c);
    free(grid);
    return rc;
}

int bf_write_image_grid(const char *path, const float *images, int n, int c, int h, int w,
                        int ncols, int scale) {
    uint8_t *png;
    size_t size;
    int rc = bf_image_grid_png(&png, &size, images, n, c, h, w, ncols, scale);
    return write_encoded(path, "image grid", rc, png, size);
}

/* ------------------------------------------------------------------ .npy */
static const struct { bf_dtype dt; const char *descr; size_t size; } npy_types[] = {
    {BF_DT_F32, "<f4", 4}, {BF_DT_F64, "<f8", 8}, {BF_DT_I64, "<i8", 8},
    {BF_DT_I32, "<i4", 4}, {BF_DT_U8, "|u1", 1},
};
#define N_NPY_TYPES (int)(sizeof npy_types / sizeof npy_types[0])
#define NPY_MAX_HEADER 65536   /* NumPy itself refuses headers over 10000 bytes by default */

static int npy_type_index(bf_dtype dt) {
    for (int i = 0; i < N_NPY_TYPES; i++)
        if (npy_types[i].dt == dt) return i;
    return -1;
}

/* numel * elsize with overflow checks; -1 when it does not fit. */
static int64_t npy_data_bytes(int ndim, const int64_t *shape, size_t elsize) {
    int64_t total = (int64_t)elsize;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0) return -1;
        if (shape[i] && total > INT64_MAX / shape[i]) return -1;
        total *= shape[i];
    }
    return total;
}

/* The header dict in NumPy's own spelling: "(3,)" for one dimension, "()" for a scalar. */
static int npy_format_dict(char *buf, size_t cap, const char *descr, int ndim, const int64_t *shape) {
    int len = snprintf(buf, cap, "{'descr': '%s', 'fortran_order': False, 'shape': (", descr);
    for (int i = 0; i < ndim; i++)
        len += snprintf(buf + len, cap - (size_t)len, "%s%" PRId64, i ? ", " : "", shape[i]);
    len += snprintf(buf + len, cap - (size_t)len, "%s), }", ndim == 1 ? "," : "");
    return len;
}

int bf_write_npy(const char *path, bf_dtype dt, int ndim, const int64_t *shape, const void *data) {
    int t = npy_type_index(dt);
    int64_t bytes = ndim >= 0 && ndim <= 8 && t >= 0 ? npy_data_bytes(ndim, shape, npy_types[t].size) : -1;
    if (bytes < 0 || (bytes > 0 && !data)) {
        bf_set_error("cannot write '%s': bad dtype %d, ndim %d or shape", path, (int)dt, ndim);
        return -1;
    }
    char dict[512];
    int dlen = npy_format_dict(dict, sizeof dict, npy_types[t].descr, ndim, shape);
    size_t hlen = ((size_t)10 + (size_t)dlen + 1 + 63) / 64 * 64 - 10;   /* dict + pad + '\n' */
    size_t total = 10 + hlen + (size_t)bytes;
    uint8_t *buf = bf_malloc(total);
    memcpy(buf, "\x93NUMPY\x01\x00", 8);
    buf[8] = (uint8_t)(hlen & 0xff);
    buf[9] = (uint8_t)(hlen >> 8);
    memcpy(buf + 10, dict, (size_t)dlen);
    memset(buf + 10 + dlen, ' ', hlen - (size_t)dlen - 1);
    buf[10 + hlen - 1] = '\n';
    if (bytes) memcpy(buf + 10 + hlen, data, (size_t)bytes);
    int rc = bf_write_file_atomic(path, buf, total);
    free(buf);
    return rc;
}

/* ---- a small parser for the header: a Python dict literal with exactly the three keys */
typedef struct { const char *s, *end; } cursor;

static void skip_ws(cursor *c) {
    while (c->s < c->end && (*c->s == ' ' || *c->s == '\t' || *c->s == '\n' || *c->s == '\r')) c->s++;
}

static int eat(cursor *c, char ch) {
    skip_ws(c);
    if (c->s < c->end && *c->s == ch) { c->s++; return 1; }
    return 0;
}

/* A '...' or "..." string without escapes into out (cap bytes). */
static int parse_str(cursor *c, char *out, size_t cap) {
    skip_ws(c);
    if (c->s >= c->end || (*c->s != '\'' && *c->s != '"')) return -1;
    char q = *c->s++;
    size_t n = 0;
    while (c->s < c->end && *c->s != q) {
        if (n + 1 >= cap || *c->s == '\\') return -1;
        out[n++] = *c->s++;
    }
    if (c->s >= c->end) return -1;
    c->s++;
    out[n] = 0;
    return 0;
}

static int parse_bool(cursor *c, int *v) {
    skip_ws(c);
    size_t left = (size_t)(c->end - c->s);
    if (left >= 4 && !memcmp(c->s, "True", 4)) { *v = 1; c->s += 4; return 0; }
    if (left >= 5 && !memcmp(c->s, "False", 5)) { *v = 0; c->s += 5; return 0; }
    return -1;
}

/* "(a, b, ...)" with an optional trailing comma; Python 2 files may write "3L". */
static int parse_shape(cursor *c, int *ndim, int64_t *shape) {
    if (!eat(c, '(')) return -1;
    for (*ndim = 0; !eat(c, ')');) {
        skip_ws(c);
        if (*ndim == 8 || c->s >= c->end || *c->s < '0' || *c->s > '9') return -1;
        int64_t v = 0;
        for (; c->s < c->end && *c->s >= '0' && *c->s <= '9'; c->s++) {
            if (v > (INT64_MAX - 9) / 10) return -1;
            v = v * 10 + (*c->s - '0');
        }
        if (c->s < c->end && *c->s == 'L') c->s++;
        shape[(*ndim)++] = v;
        if (!eat(c, ',')) {
            if (!eat(c, ')')) return -1;
            break;
        }
    }
    return 0;
}

static const char *npy_descr_error(const char *descr, int *t) {
    const char *d = !strcmp(descr, "<u1") ? "|u1" : descr;   /* both spellings mean uint8 */
    for (*t = 0; *t < N_NPY_TYPES; (*t)++)
        if (!strcmp(d, npy_types[*t].descr)) return NULL;
    if (descr[0] == '>') return "big-endian data is not supported (save it with .astype('<...'))";
    return "unsupported dtype (accepted: <f4, <f8, <i8, <i4, |u1)";
}

/* Parses the header dict; on error returns a description of the problem. */
static const char *npy_parse_header(const char *h, size_t len, int *t, int *ndim, int64_t *shape) {
    cursor c = {h, h + len};
    char key[32], descr[32];
    int seen = 0, fortran = 0;   /* bits: 1 descr, 2 fortran_order, 4 shape */
    if (!eat(&c, '{')) return "header is not a dict";
    while (!eat(&c, '}')) {
        if (parse_str(&c, key, sizeof key) || !eat(&c, ':')) return "malformed header dict";
        int bit = !strcmp(key, "descr") ? 1 : !strcmp(key, "fortran_order") ? 2 : !strcmp(key, "shape") ? 4 : 0;
        if (!bit) return "unexpected key in header (expected descr, fortran_order, shape)";
        if (seen & bit) return "repeated key in header";
        seen |= bit;
        int bad = bit == 1 ? parse_str(&c, descr, sizeof descr)
                : bit == 2 ? parse_bool(&c, &fortran) : parse_shape(&c, ndim, shape);
        if (bad) return bit == 1 ? "'descr' is not a plain dtype string (accepted: <f4, <f8, <i8, <i4, |u1)" : bit == 2 ? "malformed 'fortran_order'"
                                                                  : "malformed 'shape' (at most 8 dims)";
        if (!eat(&c, ',')) {
            if (!eat(&c, '}')) return "malformed header dict";
            break;
        }
    }
    skip_ws(&c);
    if (c.s != c.end) return "trailing characters after the header dict";
    if (seen != 7) return "header lacks one of descr, fortran_order, shape";
    if (fortran) return "Fortran-order arrays are not supported (save with np.ascontiguousarray)";
    return npy_descr_error(descr, t);
}

/* Reads and checks the preamble and header; leaves fp at the start of the data. */
static int npy_read_header(FILE *fp, const char *path, int *t, int *ndim, int64_t *shape, size_t *hend) {
    uint8_t pre[12];
    if (fread(pre, 1, 10, fp) != 10 || memcmp(pre, "\x93NUMPY", 6)) {
        bf_set_error("'%s' is not a .npy file (bad magic)", path);
        return -1;
    }
    if ((pre[6] != 1 && pre[6] != 2) || pre[7] != 0) {
        bf_set_error("'%s': unsupported .npy version %d.%d (1.0 and 2.0 are read)", path, pre[6], pre[7]);
        return -1;
    }
    size_t hlen = (size_t)pre[8] | (size_t)pre[9] << 8, pos = 10;
    if (pre[6] == 2) {
        if (fread(pre + 10, 1, 2, fp) != 2) { bf_set_error("'%s': truncated .npy preamble", path); return -1; }
        hlen |= (size_t)pre[10] << 16 | (size_t)pre[11] << 24;
        pos = 12;
    }
    if (hlen > NPY_MAX_HEADER) {
        bf_set_error("'%s': .npy header of %zu bytes is implausibly large", path, hlen);
        return -1;
    }
    char *h = bf_malloc(hlen + 1);
    const char *err = fread(h, 1, hlen, fp) != hlen ? "file ends inside the header"
                                                     : npy_parse_header(h, hlen, t, ndim, shape);
    if (err) bf_set_error("'%s': %s", path, err);
    free(h);
    *hend = pos + hlen;
    return err ? -1 : 0;
}

int bf_read_npy(const char *path, bf_dtype *dt, int *ndim, int64_t shape[8], void **data) {
    *data = NULL;
    FILE *fp = fopen(path, "rb");
    if (!fp) { bf_set_error("cannot open '%s': %s", path, strerror(errno)); return -1; }
    struct stat st;
    int t, nd = 0, rc = -1;
    int64_t sh[8], bytes;
    size_t hend;
    if (fstat(fileno(fp), &st) || !S_ISREG(st.st_mode)) {
        bf_set_error("'%s' is not a regular file", path);
    } else if (!npy_read_header(fp, path, &t, &nd, sh, &hend)) {
        bytes = npy_data_bytes(nd, sh, npy_types[t].size);
        int64_t have = (int64_t)st.st_size - (int64_t)hend;
        if (bytes < 0) {
            bf_set_error("'%s': shape too large", path);
        } else if (bytes != have) {
            bf_set_error("'%s': the shape needs %" PRId64 " data bytes but the file holds %" PRId64,
                         path, bytes, have);
        } else {
            uint8_t *buf = bf_malloc((size_t)bytes);
            if (fread(buf, 1, (size_t)bytes, fp) != (size_t)bytes) {
                bf_set_error("read error on '%s'", path);
                free(buf);
            } else {
                *data = buf;
                rc = 0;
            }
        }
    }
    fclose(fp);
    if (rc) return -1;
    *dt = npy_types[t].dt;
    *ndim = nd;
    memcpy(shape, sh, sizeof(int64_t) * (size_t)nd);
    return 0;
}
