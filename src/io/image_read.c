/* Image decoding with libpng and libjpeg-turbo; see image_read.h. Both libraries report errors
 * by a callback that must not return: here it records the message and longjmps back to the
 * function that set the jump buffer, which holds no local state of its own (everything it
 * allocates lives in a decoder struct its caller frees), so nothing is clobbered or lost. */
#include "image_read.h"
#include "core.h"

#include <setjmp.h>
#include <stdio.h>

#include <jerror.h>
#include <jpeglib.h>
#include <png.h>

/* The pixel count of a w x h image, checked against the limits; -1 with msg filled in. */
static int check_size(char *msg, size_t cap, const char *fmt, size_t w, size_t h) {
    if (w < 1 || h < 1)
        snprintf(msg, cap, "%s: the image is %zux%zu pixels", fmt, w, h);
    else if (w > BF_IMAGE_MAX_SIDE || h > BF_IMAGE_MAX_SIDE)
        snprintf(msg, cap, "%s: the image is %zux%zu pixels, more than the %d per side this "
                 "reader accepts", fmt, w, h, BF_IMAGE_MAX_SIDE);
    else if (w * h > BF_IMAGE_MAX_PIXELS)
        snprintf(msg, cap, "%s: the image is %zux%zu pixels, more than the %zu in all this "
                 "reader accepts", fmt, w, h, BF_IMAGE_MAX_PIXELS);
    else
        return 0;
    return -1;
}

/* ------------------------------------------------------------------ PNG */
typedef struct {
    const uint8_t *buf;
    size_t len, pos;
    uint8_t *pixels;
    png_bytep *rows;
    int w, h, c;
    char msg[256];
} png_dec;

static void png_fail(png_structp png, png_const_charp msg) {
    png_dec *d = png_get_error_ptr(png);
    if (msg != d->msg) snprintf(d->msg, sizeof d->msg, "PNG: %s", msg);
    png_longjmp(png, 1);
}

static void png_warn(png_structp png, png_const_charp msg) {
    (void)png;   /* benign (an unknown chunk, a colour profile): the pixels are sound */
    (void)msg;
}

static void png_read_mem(png_structp png, png_bytep out, png_size_t n) {
    png_dec *d = png_get_io_ptr(png);
    if (n > d->len - d->pos) png_error(png, "the file is truncated");
    memcpy(out, d->buf + d->pos, n);
    d->pos += n;
}

/* Everything that may fail, behind the jump buffer. */
static int png_run(png_structp png, png_infop info, png_dec *d) {
    if (setjmp(png_jmpbuf(png))) return -1;
    png_set_read_fn(png, d, png_read_mem);
    png_read_info(png, info);   /* up to the image data: nothing is allocated for pixels yet */
    size_t w = png_get_image_width(png, info), h = png_get_image_height(png, info);
    if (check_size(d->msg, sizeof d->msg, "PNG", w, h)) png_error(png, d->msg);
    png_set_expand(png);      /* palette -> RGB, grey of 1, 2, 4 bits -> 8, tRNS -> alpha */
    png_set_strip_16(png);    /* 16-bit samples: their high byte */
    png_set_interlace_handling(png);
    png_read_update_info(png, info);
    int c = png_get_channels(png, info);
    if (c < 1 || c > 4 || png_get_bit_depth(png, info) != 8 || png_get_rowbytes(png, info) != w * c)
        png_error(png, "unexpected layout after expansion");
    d->w = (int)w;
    d->h = (int)h;
    d->c = c;
    if (!(d->pixels = malloc(w * h * c)) || !(d->rows = malloc(h * sizeof *d->rows)))
        png_error(png, "out of memory");
    for (size_t y = 0; y < h; y++) d->rows[y] = d->pixels + y * w * c;
    png_read_image(png, d->rows);
    png_read_end(png, NULL);   /* the chunks after the image, up to IEND, with their CRCs */
    return 0;
}

static uint8_t *decode_png(const uint8_t *buf, size_t len, int *w, int *h, int *c) {
    png_dec d = {.buf = buf, .len = len};
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &d, png_fail, png_warn);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    int rc = info ? png_run(png, info, &d) : -1;
    if (!info) snprintf(d.msg, sizeof d.msg, "PNG: out of memory");
    png_destroy_read_struct(png ? &png : NULL, info ? &info : NULL, NULL);
    free(d.rows);
    if (rc) {
        free(d.pixels);
        bf_set_error("%s", d.msg);
        return NULL;
    }
    *w = d.w;
    *h = d.h;
    *c = d.c;
    return d.pixels;
}

/* ------------------------------------------------------------------ JPEG */
typedef struct {
    struct jpeg_error_mgr pub;
    jmp_buf jump;
    char msg[JMSG_LENGTH_MAX + 16];
} jpeg_fail_mgr;

typedef struct {
    struct jpeg_decompress_struct ci;
    jpeg_fail_mgr err;
    struct jpeg_progress_mgr progress;
    uint8_t *pixels, *cmyk;
    int w, h, c, created;
} jpeg_dec;

static void jpeg_fail(j_common_ptr ci) {
    jpeg_fail_mgr *e = (jpeg_fail_mgr *)ci->err;
    char text[JMSG_LENGTH_MAX];
    ci->err->format_message(ci, text);
    snprintf(e->msg, sizeof e->msg, "JPEG: %s", text);
    longjmp(e->jump, 1);
}

/* Warnings (level -1) are corrupt data, except three that leave the pixels sound; traces
 * (level >= 0) are ignored. Nothing is printed. */
static void jpeg_message(j_common_ptr ci, int level) {
    int code = ci->err->msg_code;
    if (level < 0 && code != JWRN_JFIF_MAJOR && code != JWRN_ADOBE_XFORM && code != JWRN_BOGUS_ICC)
        jpeg_fail(ci);
}

static void jpeg_quiet(j_common_ptr ci) { (void)ci; }

/* A progressive file can hold any number of scans, each a pass over the whole image. */
static void jpeg_progress(j_common_ptr ci) {
    jpeg_fail_mgr *e = (jpeg_fail_mgr *)ci->err;
    if (ci->is_decompressor && ((j_decompress_ptr)ci)->input_scan_number > BF_IMAGE_MAX_SCANS) {
        snprintf(e->msg, sizeof e->msg, "JPEG: more than %d scans", BF_IMAGE_MAX_SCANS);
        longjmp(e->jump, 1);
    }
}

static int jpeg_run(jpeg_dec *d, const uint8_t *buf, size_t len) {
    j_decompress_ptr ci = &d->ci;
    if (setjmp(d->err.jump)) return -1;
    jpeg_create_decompress(ci);
    d->created = 1;
    ci->progress = &d->progress;
    jpeg_mem_src(ci, buf, (unsigned long)len);
    jpeg_read_header(ci, TRUE);
    if (check_size(d->err.msg, sizeof d->err.msg, "JPEG", ci->image_width, ci->image_height))
        longjmp(d->err.jump, 1);
    int cmyk = ci->jpeg_color_space == JCS_CMYK || ci->jpeg_color_space == JCS_YCCK;
    ci->out_color_space = cmyk ? JCS_CMYK : ci->num_components == 1 ? JCS_GRAYSCALE : JCS_RGB;
    jpeg_start_decompress(ci);
    int oc = ci->output_components, c = cmyk ? 3 : oc;
    size_t w = ci->output_width, h = ci->output_height;
    if (oc != (cmyk ? 4 : ci->out_color_space == JCS_GRAYSCALE ? 1 : 3) || w != ci->image_width ||
        h != ci->image_height) {
        snprintf(d->err.msg, sizeof d->err.msg, "JPEG: unexpected output layout");
        longjmp(d->err.jump, 1);
    }
    d->w = (int)w;
    d->h = (int)h;
    d->c = c;
    if (!(d->pixels = malloc(w * h * c)) || (cmyk && !(d->cmyk = malloc(w * 4)))) {
        snprintf(d->err.msg, sizeof d->err.msg, "JPEG: out of memory");
        longjmp(d->err.jump, 1);
    }
    while (ci->output_scanline < h) {
        size_t y = ci->output_scanline;
        JSAMPROW row = cmyk ? d->cmyk : d->pixels + y * w * c;
        if (jpeg_read_scanlines(ci, &row, 1) != 1) {
            snprintf(d->err.msg, sizeof d->err.msg, "JPEG: no data for row %zu", y);
            longjmp(d->err.jump, 1);
        }
        /* Adobe writes CMYK inverted (what most CMYK JPEGs are); others store ink amounts */
        for (size_t x = 0; cmyk && x < w; x++) {
            const uint8_t *s = d->cmyk + 4 * x;
            uint8_t *o = d->pixels + (y * w + x) * 3;
            for (int k = 0; k < 3; k++)
                o[k] = ci->saw_Adobe_marker ? (uint8_t)((s[k] * s[3] + 127) / 255)
                                            : (uint8_t)(((255 - s[k]) * (255 - s[3]) + 127) / 255);
        }
    }
    jpeg_finish_decompress(ci);
    return 0;
}

static uint8_t *decode_jpeg(const uint8_t *buf, size_t len, int *w, int *h, int *c) {
    jpeg_dec *d = calloc(1, sizeof *d);
    if (!d) { bf_set_error("JPEG: out of memory"); return NULL; }
    d->ci.err = jpeg_std_error(&d->err.pub);
    d->err.pub.error_exit = jpeg_fail;
    d->err.pub.emit_message = jpeg_message;
    d->err.pub.output_message = jpeg_quiet;
    d->progress.progress_monitor = jpeg_progress;
    int rc = jpeg_run(d, buf, len);
    if (d->created) jpeg_destroy_decompress(&d->ci);
    uint8_t *px = d->pixels;
    if (rc) {
        bf_set_error("%s", d->err.msg);
        free(px);
        px = NULL;
    } else {
        *w = d->w;
        *h = d->h;
        *c = d->c;
    }
    free(d->cmyk);
    free(d);
    return px;
}

/* ------------------------------------------------------------------ channels */
/* px (n pixels of `from` channels) as `to` channels; px is freed. */
static uint8_t *convert(uint8_t *px, size_t n, int from, int to) {
    if (from == to) return px;
    uint8_t *out = bf_try_malloc(BF_SIZE_PROD(n, (size_t)to), "a decoded image");
    if (!out) { free(px); return NULL; }
    int colour = from >= 3, alpha = from == 2 || from == 4;
    for (size_t i = 0; i < n; i++) {
        const uint8_t *s = px + i * from;
        uint8_t *o = out + i * to;
        uint8_t grey = colour ? (uint8_t)((s[0] * 77 + s[1] * 150 + s[2] * 29) >> 8) : s[0];
        uint8_t a = alpha ? s[from - 1] : 255;
        if (to <= 2) o[0] = grey;
        else if (colour) memcpy(o, s, 3);
        else o[0] = o[1] = o[2] = grey;
        if (to == 2 || to == 4) o[to - 1] = a;
    }
    free(px);
    return out;
}

/* ------------------------------------------------------------------ entry points */
uint8_t *bf_image_decode(const uint8_t *buf, size_t len, int want_channels, int *w, int *h,
                         int *c) {
    static const uint8_t png_sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    if (want_channels < BF_IMAGE_NO_ALPHA || want_channels > 4) {
        bf_set_error("image decoder: %d channels asked for (1 to 4, or as stored)", want_channels);
        return NULL;
    }
    if (!buf || len == 0) {
        bf_set_error("the file is empty");
        return NULL;
    }
    int iw = 0, ih = 0, ic = 0;
    uint8_t *px;
    if (len >= 8 && !memcmp(buf, png_sig, 8)) {
        px = decode_png(buf, len, &iw, &ih, &ic);
    } else if (len >= 3 && buf[0] == 0xFF && buf[1] == 0xD8 && buf[2] == 0xFF) {
        px = decode_jpeg(buf, len, &iw, &ih, &ic);
    } else {
        bf_set_error("not a PNG or JPEG file (it starts with %02x %02x %02x %02x)", buf[0],
                     len > 1 ? buf[1] : 0, len > 2 ? buf[2] : 0, len > 3 ? buf[3] : 0);
        return NULL;
    }
    if (!px) return NULL;
    int to = want_channels > 0 ? want_channels
           : want_channels == BF_IMAGE_NO_ALPHA && (ic == 2 || ic == 4) ? ic - 1 : ic;
    if (!(px = convert(px, (size_t)iw * ih, ic, to))) return NULL;
    *w = iw;
    *h = ih;
    *c = to;
    return px;
}

uint8_t *bf_image_read_file(const char *path, int want_channels, int *w, int *h, int *c) {
    uint8_t *buf;
    size_t size;
    if (bf_read_file(path, &buf, &size, BF_IMAGE_MAX_FILE)) return NULL;
    uint8_t *px = bf_image_decode(buf, size, want_channels, w, h, c);
    free(buf);
    if (!px) {
        char why[1024];
        snprintf(why, sizeof why, "%s", bf_last_error());
        bf_set_error("cannot decode image '%s': %s", path, why);
    }
    return px;
}

/* Interleaved (h, w, c) pixels to planes (c, h, w) in *pixels; img is freed. */
static int to_planes(uint8_t **pixels, uint8_t *img, int c, int h, int w) {
    size_t hw = (size_t)h * w;
    *pixels = bf_try_malloc(hw * c, "an image");
    if (*pixels)
        for (int k = 0; k < c; k++)   /* HWC -> CHW, the layout of every image array here */
            for (size_t i = 0; i < hw; i++) (*pixels)[k * hw + i] = img[i * c + k];
    free(img);
    return *pixels ? 0 : -1;
}

int bf_read_image(uint8_t **pixels, int *c, int *h, int *w, const char *path) {
    *pixels = NULL;
    uint8_t *img = bf_image_read_file(path, BF_IMAGE_NO_ALPHA, w, h, c);
    return img ? to_planes(pixels, img, *c, *h, *w) : -1;
}

int bf_decode_image(uint8_t **pixels, int channels, int *h, int *w, const uint8_t *buf,
                    size_t len) {
    *pixels = NULL;
    if (channels != 1 && channels != 3) {
        bf_set_error("images are decoded to 1 or 3 channels, not %d", channels);
        return -1;
    }
    if (!buf) {
        bf_set_error("no image data");
        return -1;
    }
    int c;
    uint8_t *img = bf_image_decode(buf, len, channels, w, h, &c);
    return img ? to_planes(pixels, img, c, *h, *w) : -1;
}
