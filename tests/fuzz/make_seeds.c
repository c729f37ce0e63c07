/* Writes the seed corpora of the fuzz harnesses: `make fuzz-seeds` (or build/make_seeds DIR)
 * fills DIR/<harness>/ with small valid inputs of each kind, written by the library itself
 * (PNGs, checkpoints, .npy, safetensors) or by libpng and libjpeg for the variants the
 * library does not write (palettes, 16 bits, interlacing, progressive, CMYK, arithmetic and
 * restart-marker JPEGs, tests/jpeg_writer.c). The output is deterministic; the committed copies live in
 * tests/fixtures/fuzz/. */
#include "core.h"
#include "feature_net.h"
#include "flow.h"
#include "reverse.h"
#include "train_util.h"
#include "../jpeg_writer.h"

#include <errno.h>
#include <png.h>
#include <sys/stat.h>
#include <zlib.h>

static const char *root;

/* DIR/harness/name (the folder made), in a buffer the next call overwrites */
static const char *path_of(const char *harness, const char *name) {
    static char p[1024];
    snprintf(p, 1024, "%s/%s", root, harness);
    if (mkdir(p, 0755) != 0 && errno != EEXIST) { perror(p); exit(1); }
    snprintf(p, 1024, "%s/%s/%s", root, harness, name);
    return p;
}

static void put(const char *harness, const char *name, const void *data, size_t n) {
    const char *p = path_of(harness, name);
    FILE *fp = fopen(p, "wb");
    if (!fp || fwrite(data, 1, n, fp) != n || fclose(fp) != 0) { perror(p); exit(1); }
}

static void must(int ok, const char *what) {
    if (!ok) { fprintf(stderr, "make_seeds: %s: %s\n", what, bf_last_error()); exit(1); }
}

static uint8_t *slurp(const char *path, size_t *n) {
    uint8_t *b;
    must(bf_read_file(path, &b, n, 1 << 24) == 0, path);
    return b;
}

static void pattern(uint8_t *px, int h, int w, int c) {
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            for (int k = 0; k < c; k++)
                px[((size_t)y * w + x) * c + k] = (uint8_t)(16 * x + 24 * y + 80 * k + (x ^ y) * 3);
}

/* ------------------------------------------------------------------ PNG (libpng) */
typedef struct { uint8_t *p; size_t n, cap; } membuf;

static void mem_write(png_structp png, png_bytep data, png_size_t n) {
    membuf *b = png_get_io_ptr(png);
    if (b->n + n > b->cap) b->p = bf_realloc(b->p, b->cap = 2 * (b->n + n));
    memcpy(b->p + b->n, data, n);
    b->n += n;
}
static void mem_flush(png_structp png) { (void)png; }

/* A PNG of colour type ct and bit depth bd from rows of bytes as libpng takes them. */
static void png_seed(const char *harness, const char *name, int w, int h, int ct, int bd,
                     int interlace, const uint8_t *rows, size_t rowbytes, int palette) {
    membuf b = {0};
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop info = png_create_info_struct(png);
    if (setjmp(png_jmpbuf(png))) { fprintf(stderr, "libpng failed on %s\n", name); exit(1); }
    png_set_write_fn(png, &b, mem_write, mem_flush);
    png_set_IHDR(png, info, (png_uint_32)w, (png_uint_32)h, bd, ct,
                 interlace ? PNG_INTERLACE_ADAM7 : PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT,
                 PNG_FILTER_TYPE_DEFAULT);
    if (palette) {
        png_color pal[4] = {{0, 0, 0}, {255, 0, 0}, {0, 255, 0}, {255, 255, 255}};
        png_byte trans[2] = {0, 128};
        png_set_PLTE(png, info, pal, 4);
        png_set_tRNS(png, info, trans, 2, NULL);
    }
    png_write_info(png, info);
    png_bytep *rp = bf_malloc(sizeof *rp * (size_t)h);
    for (int y = 0; y < h; y++) rp[y] = (png_bytep)rows + (size_t)y * rowbytes;
    png_write_image(png, rp);
    png_write_end(png, NULL);
    png_destroy_write_struct(&png, &info);
    free(rp);
    put(harness, name, b.p, b.n);
    free(b.p);
}

/* ------------------------------------------------------------------ JPEG (libjpeg) */
static void jpeg_seed(const char *harness, const char *name, int w, int h, int c, int flags) {
    uint8_t *px = bf_malloc((size_t)w * h * c);
    pattern(px, h, w, c);
    size_t n;
    uint8_t *jpg = bf_test_jpeg(px, h, w, c, 75, flags, &n);
    put(harness, name, jpg, n);
    free(jpg);
    free(px);
}

/* ------------------------------------------------------------------ images and masks */
static void image_seeds(void) {
    uint8_t px[16 * 16 * 4];
    char tmp[1024];
    snprintf(tmp, sizeof tmp, "%s", path_of("image", ".tmp.png"));
    for (int c = 1; c <= 4; c++) {   /* the project's own writer */
        char name[32];
        snprintf(name, sizeof name, "writer_c%d.png", c);
        pattern(px, 6, 5, c);
        must(bf_write_png(tmp, px, 6, 5, c) == 0, "bf_write_png");
        size_t n;
        uint8_t *b = slurp(tmp, &n);
        put("image", name, b, n);
        free(b);
    }
    remove(tmp);
    uint8_t rows[16 * 16 * 8];
    pattern(rows, 7, 7, 3);
    png_seed("image", "rgb_interlaced.png", 7, 7, PNG_COLOR_TYPE_RGB, 8, 1, rows, 21, 0);
    for (int i = 0; i < 8; i++) rows[i] = (uint8_t)(0x1B * (i + 1));   /* 2-bit indices */
    png_seed("image", "palette_2bit_trns.png", 8, 4, PNG_COLOR_TYPE_PALETTE, 2, 0, rows, 2, 1);
    for (int i = 0; i < 6 * 2; i++) rows[i] = (uint8_t)(0xA5 ^ (i * 37));   /* 1-bit grey */
    png_seed("image", "grey_1bit.png", 12, 6, PNG_COLOR_TYPE_GRAY, 1, 0, rows, 2, 0);
    for (int i = 0; i < 5 * 5 * 2 * 2; i++) rows[i] = (uint8_t)(i * 29);   /* 16-bit grey+alpha */
    png_seed("image", "grey_alpha_16bit.png", 5, 5, PNG_COLOR_TYPE_GRAY_ALPHA, 16, 0, rows, 20, 0);
    jpeg_seed("image", "grey.jpg", 8, 8, 1, 0);
    jpeg_seed("image", "rgb_420.jpg", 16, 16, 3, 0);
    jpeg_seed("image", "rgb_444_restart.jpg", 9, 7, 3, BF_JPEG_444 | BF_JPEG_RESTART);
    jpeg_seed("image", "rgb_progressive.jpg", 16, 8, 3, BF_JPEG_PROGRESSIVE);
    jpeg_seed("image", "grey_arithmetic.jpg", 8, 8, 1, BF_JPEG_ARITH);
    jpeg_seed("image", "cmyk.jpg", 8, 8, 4, 0);

    uint8_t m[8 * 8 * 3];   /* masks: 8x8, white = known */
    for (int y = 0; y < 8; y++)
        for (int x = 0; x < 8; x++) m[y * 8 + x] = x < 4 ? 255 : 0;
    char mt[1024];
    snprintf(mt, sizeof mt, "%s", path_of("mask", ".tmp.png"));
    must(bf_write_png(mt, m, 8, 8, 1) == 0, "bf_write_png");
    size_t n;
    uint8_t *b = slurp(mt, &n);
    put("mask", "left_half.png", b, n);
    free(b);
    for (int i = 0; i < 64; i++) m[3 * i] = m[3 * i + 1] = m[3 * i + 2] = (i / 8 + i % 8) % 2 ? 255 : 0;
    must(bf_write_png(mt, m, 8, 8, 3) == 0, "bf_write_png");
    b = slurp(mt, &n);
    put("mask", "checker_rgb.png", b, n);
    free(b);
    remove(mt);
    jpeg_seed("mask", "mask.jpg", 8, 8, 1, BF_JPEG_444);
}

/* ------------------------------------------------------------------ datasets */
static void cifar_seeds(void) {
    static uint8_t buf[1 + 200 + 2 * 3073];
    for (int r = 0; r < 2; r++) {
        uint8_t *rec = buf + 1 + 3073 * r;
        rec[0] = (uint8_t)(3 + 4 * r);
        for (int i = 1; i < 3073; i++) rec[i] = (uint8_t)(i * 7 + r);
    }
    buf[0] = 0;   /* one record, the standard names */
    put("cifar10", "one_record", buf, 1 + 3073);
    const char *names = "airplane\nautomobile\nbird\ncat\ndeer\ndog\nfrog\nhorse\nship\ntruck\n";
    size_t k = strlen(names);
    buf[0] = (uint8_t)k;   /* batches.meta.txt, then two records */
    memmove(buf + 1 + k, buf + 1, 2 * 3073);
    memcpy(buf + 1, names, k);
    put("cifar10", "names_two_records", buf, 1 + k + 2 * 3073);
    uLongf zn = compressBound(3073) + 32;   /* gzip of one record */
    uint8_t *z = bf_malloc(1 + zn + 32);
    z_stream s = {0};
    deflateInit2(&s, 9, Z_DEFLATED, 31, 8, Z_DEFAULT_STRATEGY);
    s.next_in = buf + 1 + k;
    s.avail_in = 3073;
    s.next_out = z + 1;
    s.avail_out = (uInt)zn + 31;
    if (deflate(&s, Z_FINISH) != Z_STREAM_END) exit(1);
    deflateEnd(&s);
    z[0] = 0;
    put("cifar10", "gzip_record", z, 1 + s.total_out);
    free(z);
}

static void idx_seeds(void) {
    /* u16 k, k bytes of the image file, then the label file (fuzz_idx.c) */
    static const uint8_t plain[] = {
        0x18, 0x00,
        0x00, 0x00, 0x08, 0x03, 0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0, 2, 'a', 'b', 'c', 'd', 'e', 'f', 'g', 'h',
        0x00, 0x00, 0x08, 0x01, 0, 0, 0, 2, 1, 7};
    put("idx", "two_images", plain, sizeof plain);
    uint8_t src[16 + 3 * 4 * 4], z[256];
    memcpy(src, "\x00\x00\x08\x03\x00\x00\x00\x03\x00\x00\x00\x04\x00\x00\x00\x04", 16);
    for (int i = 0; i < 48; i++) src[16 + i] = (uint8_t)(i * 5);
    z_stream s = {0};
    deflateInit2(&s, 9, Z_DEFLATED, 31, 8, Z_DEFAULT_STRATEGY);
    s.next_in = src;
    s.avail_in = sizeof src;
    s.next_out = z + 2;
    s.avail_out = sizeof z - 2 - 16;
    if (deflate(&s, Z_FINISH) != Z_STREAM_END) exit(1);
    deflateEnd(&s);
    z[0] = (uint8_t)s.total_out;
    z[1] = 0;
    size_t n = 2 + s.total_out;
    memcpy(z + n, "\x00\x00\x08\x01\x00\x00\x00\x03\x00\x09\x04", 11);
    put("idx", "gzip_images", z, n + 11);
}

static void npy_seeds(void) {
    char tmp[1024];
    snprintf(tmp, sizeof tmp, "%s", path_of("npy", ".tmp.npy"));
    uint8_t u8[2 * 3 * 4];
    for (int i = 0; i < 24; i++) u8[i] = (uint8_t)(i * 11);
    int64_t s3[3] = {2, 3, 4}, s2[2] = {2, 2}, s1[1] = {3};
    float f[4] = {-1.0f, 0.5f, 1.0f, 0.0f};
    int32_t i32[3] = {1, -2, 3};
    struct { const char *name; bf_dtype dt; int nd; const int64_t *shape; const void *data; } a[] = {
        {"u8_2x3x4.npy", BF_DT_U8, 3, s3, u8},
        {"f32_2x2.npy", BF_DT_F32, 2, s2, f},
        {"i32_3.npy", BF_DT_I32, 1, s1, i32},
    };
    for (int i = 0; i < (int)(sizeof a / sizeof a[0]); i++) {
        must(bf_write_npy(tmp, a[i].dt, a[i].nd, a[i].shape, a[i].data) == 0, "bf_write_npy");
        size_t n;
        uint8_t *b = slurp(tmp, &n);
        put("npy", a[i].name, b, n);
        free(b);
    }
    remove(tmp);
    /* version 2.0, fortran order false, float64 of shape (2,) */
    char v2[256];
    const char *hdr = "{'descr': '<f8', 'fortran_order': False, 'shape': (2,), }";
    size_t hl = strlen(hdr), pad = 64 - (12 + hl + 1) % 64;
    memcpy(v2, "\x93NUMPY\x02\x00", 8);
    uint32_t total = (uint32_t)(hl + pad + 1);
    memcpy(v2 + 8, &total, 4);
    memcpy(v2 + 12, hdr, hl);
    memset(v2 + 12 + hl, ' ', pad);
    v2[12 + hl + pad] = '\n';
    double d[2] = {0.25, -0.75};
    memcpy(v2 + 12 + total, d, sizeof d);
    put("npy", "f64_v2.npy", v2, 12 + total + sizeof d);
}

/* ------------------------------------------------------------------ safetensors, checkpoints */
static void copy_into(const char *harness, const char *name, const char *tmp) {
    size_t n;
    uint8_t *b = slurp(tmp, &n);
    put(harness, name, b, n);
    free(b);
    remove(tmp);
}

static void checkpoint_seeds(void) {
    char tmp[1024];
    snprintf(tmp, sizeof tmp, "%s", path_of("checkpoint", ".tmp.safetensors"));
    bf_flow_config fc = {4, 1, 2, 8, 1, 1, 8, 2, 2.0f};   /* 4x4 grey, patch 2, width 8 */
    bf_flow *f = bf_flow_new(&fc);
    must(f != NULL, "bf_flow_new");
    bf_flow_init(f, 1);
    must(bf_flow_save(f, f->params, tmp, "{\"noise\":\"gauss\",\"sigma\":\"0.05\",\"seed\":\"7\","
                      "\"batch\":\"4\",\"steps\":\"10\",\"step\":\"10\"}") == 0, "bf_flow_save");
    copy_into("checkpoint", "flow.safetensors", tmp);
    bf_flow_free(f);

    bf_reverse_config rc = {0};
    rc.img_size = 4; rc.in_channels = 1; rc.patch_size = 2; rc.num_classes = 2;
    rc.num_stages = 1; rc.channels = 8; rc.head_dim = 8; rc.layers_per_stage = 1;
    rc.denoise_layers = 1; rc.guidance_embed = 1; rc.w_freq = 2; rc.distill = 0;
    bf_reverse *g = bf_reverse_new(&rc);
    must(g != NULL, "bf_reverse_new");
    snprintf(g->flow_path, sizeof g->flow_path, "runs/flow");
    must(bf_reverse_save(g, g->params, tmp, "{\"inverse\":\"align\",\"norm_control\":\"token\","
                         "\"perceptual\":\"1\",\"features\":\"models/features.safetensors\","
                         "\"seed\":\"3\",\"batch\":\"8\",\"sigma\":\"0.05\"}") == 0, "bf_reverse_save");
    copy_into("checkpoint", "reverse.safetensors", tmp);
    bf_reverse_free(g);

    bf_features_config ec = {1, 4, 4, 1, 1, 2, 2, BF_FEAT_ARCH_FD};
    bf_features *fn = bf_features_new(&ec);
    must(fn != NULL, "bf_features_new");
    must(bf_features_save(fn, tmp, NULL) == 0, "bf_features_save");
    copy_into("checkpoint", "features.safetensors", tmp);
    ec.arch = BF_FEAT_ARCH_PERCEPTUAL;
    bf_features_free(fn);
    fn = bf_features_new(&ec);
    must(fn != NULL, "bf_features_new");
    must(bf_features_save(fn, tmp, NULL) == 0, "bf_features_save");
    copy_into("checkpoint", "features_perceptual.safetensors", tmp);
    bf_features_free(fn);

    float w[4][16];   /* a resume state of 16 parameters (the harness's default size) */
    for (int i = 0; i < 64; i++) w[i / 16][i % 16] = 0.01f * (float)i;
    bf_train_state ts = {w[0], w[1], w[2], w[3], 16, 12};
    must(bf_train_state_save(&ts, tmp, "biflow-train-state",
                             "{\"noise\":\"uniform\",\"seed\":\"7\",\"batch\":\"4\",\"sigma\":\"0\","
                             "\"label_drop\":\"0.1\",\"steps\":\"20\",\"step\":\"12\"}") == 0,
         "bf_train_state_save");
    copy_into("checkpoint", "train_state.safetensors", tmp);

    bf_st_writer *sw = bf_st_writer_new();   /* the plain safetensors harness */
    int64_t shape[2] = {2, 3}, one = 1;
    double d[6] = {1, 2, 3, 4, 5, 6};
    int64_t step = 5;
    bf_st_writer_meta(sw, "format", "pt");
    bf_st_writer_add(sw, "a", BF_DT_F64, 2, shape, d);
    bf_st_writer_add(sw, "step", BF_DT_I64, 1, &one, &step);
    must(bf_st_writer_save(sw, tmp) == 0, "bf_st_writer_save");
    bf_st_writer_free(sw);
    copy_into("safetensors", "small.safetensors", tmp);
}

/* ------------------------------------------------------------------ logs */
static void log_seeds(void) {
    const char *trainer =
        "{\"step\":10,\"loss\":1.25,\"bpd\":3.5,\"lr\":0.0001,\"grad_norm\":2.5,\"img_s\":812}\n"
        "{\"step\":20,\"loss\":1.1,\"bpd\":3.2,\"lr\":0.0002,\"grad_norm\":1.5,\"img_s\":820}\n"
        "{\"step\":20,\"eval_bpd_ema\":3.1,\"eval_mse\":0.05}\n"
        "{\"step\":30,\"loss\":0.9,\"bpd\":3.0,\"lr\":0.0002,\"grad_norm\":1.25,\"img_s\":815}\n";
    put("log", "trainer.jsonl", trainer, strlen(trainer));
    const char *odd =
        "{\"step\":1,\"loss\":nan,\"nll\":-Infinity,\"eval_acc\":null,\"note\":\"nan inf\"}\n"
        "\n"
        "{\"step\":2,\"loss\":-0.5,\"nll\":1e300,\"flag\":true}\n"
        "not json at all\n"
        "{\"step\":3,\"loss\":0.25,\"nll\":-1e-300}\n"
        "{\"loss\":7}\n"
        "{\"step\":\"4\",\"loss\":1}\n"
        "[1,2,3]\n"
        "{\"step\":400,\"loss\":0.125,\"eval_x\":1}";
    put("log", "odd.jsonl", odd, strlen(odd));
    const char *big = "{\"step\":1e308,\"loss\":1}\n{\"step\":-1e308,\"loss\":-1e308}\n"
                      "{\"step\":0,\"loss\":5e-324}\n";
    put("log", "extremes.jsonl", big, strlen(big));
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: make_seeds DIR (the seed corpora go to DIR/<harness>/)\n");
        return 2;
    }
    root = argv[1];
    if (mkdir(root, 0755) != 0 && errno != EEXIST) { perror(root); return 1; }
    image_seeds();
    cifar_seeds();
    idx_seeds();
    npy_seeds();
    checkpoint_seeds();
    log_seeds();
    printf("seed corpora written to %s\n", root);
    return 0;
}
