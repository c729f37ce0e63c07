/* Images and arrays out: the float -> byte mapping, PNG round trips through the decoder, the
 * sample grid layout, .npy round trips and rejections, and a mutation fuzz of the .npy reader. */
#include "test.h"

#include "image_read.h"
#include <sys/mman.h>
#include <unistd.h>

/* Loads a PNG back with the library's decoder (libpng), keeping its channel count. */
static uint8_t *load_png(const char *path, int *h, int *w, int *c) {
    uint8_t *buf;
    size_t size;
    if (bf_read_file(path, &buf, &size, 1 << 26)) return NULL;
    uint8_t *img = bf_image_decode(buf, size, BF_IMAGE_AS_STORED, w, h, c);
    free(buf);
    return img;
}

TEST(image_to_u8) {
    const float x[] = {-1.0f, 1.0f, 0.0f, -0.5f, 0.5f, 7.0f, -7.0f, NAN, INFINITY, -INFINITY,
                       1.0f / 127.5f - 1.0f};
    const uint8_t want[] = {0, 255, 128, 64, 191, 255, 0, 0, 255, 0, 1};
    uint8_t out[sizeof want];
    bf_images_to_u8(out, x, sizeof want);
    for (size_t i = 0; i < sizeof want; i++) CHECK(out[i] == want[i]);
    for (int v = 0; v < 256; v++) {   /* exact inverse of v -> v / 127.5 - 1 */
        float f = (float)v / 127.5f - 1.0f;
        uint8_t b;
        bf_images_to_u8(&b, &f, 1);
        CHECK(b == v);
    }
}

TEST(image_png_roundtrip) {
    bf_rng r;
    bf_rng_seed(&r, 7);
    for (int c = 1; c <= 4; c++) {
        int h = 5 + c, w = 9 - c;
        uint8_t px[512];
        for (int i = 0; i < h * w * c; i++) px[i] = (uint8_t)bf_rng_u64(&r);
        const char *p = bf_test_tmp("rt.png");
        CHECK(bf_write_png(p, px, h, w, c) == 0);
        int lh, lw, lc;
        uint8_t *back = load_png(p, &lh, &lw, &lc);
        CHECK(back && lh == h && lw == w && lc == c);
        CHECK(back && !memcmp(back, px, (size_t)h * w * c));
        free(back);
    }
    uint8_t px[4] = {0};
    CHECK_ERR(bf_write_png(bf_test_tmp("x.png"), px, 0, 2, 1), "bad image");
    CHECK_ERR(bf_write_png(bf_test_tmp("x.png"), px, 2, 2, 5), "bad image");
    CHECK_ERR(bf_write_png("/no/such/dir/x.png", px, 1, 1, 1), "/no/such/dir/x.png");
}

/* 3 RGB images of 2x2 at scale 2 in 2 columns: 2 rows, 14 x 14 pixels with 2-pixel gaps. */
TEST(image_grid_layout) {
    float img[3][3][2][2];
    for (int i = 0; i < 3; i++)
        for (int k = 0; k < 3; k++)
            for (int p = 0; p < 4; p++) img[i][k][p / 2][p % 2] = -1.0f + 0.25f * (float)(i + k + p);
    img[1][2][0][1] = NAN;    /* image 1, pixel (0, 1): red */
    img[2][0][1][1] = 9.0f;   /* clipped to 255 */
    const char *p = bf_test_tmp("grid.png");
    CHECK(bf_write_image_grid(p, &img[0][0][0][0], 3, 3, 2, 2, 2, 2) == 0);
    int h, w, c;
    uint8_t *g = load_png(p, &h, &w, &c);
    CHECK(g && h == 14 && w == 14 && c == 3);
    if (!g || h != 14 || w != 14 || c != 3) { free(g); return; }
#define PX(y, x, k) g[((y) * 14 + (x)) * 3 + (k)]
    CHECK(PX(0, 0, 0) == 128 && PX(1, 13, 2) == 128 && PX(7, 7, 1) == 128);   /* gaps */
    CHECK(PX(10, 10, 0) == 128 && PX(12, 12, 2) == 128);                      /* empty cell */
    for (int i = 0; i < 3; i++) {
        int y0 = 2 + (i / 2) * 6, x0 = 2 + (i % 2) * 6;
        for (int y = 0; y < 4; y++)
            for (int x = 0; x < 4; x++)
                for (int k = 0; k < 3; k++) {
                    float v = img[i][k][y / 2][x / 2];
                    int want = i == 1 && y / 2 == 0 && x / 2 == 1 ? (k == 0 ? 255 : 0)
                             : v >= 1.0f ? 255 : (int)((v + 1.0f) * 127.5f + 0.5f);
                    CHECK(PX(y0 + y, x0 + x, k) == want);
                }
    }
#undef PX
    free(g);

    float grey[4] = {NAN, 1.0f, -1.0f, 0.0f};   /* grey: NaN is drawn black */
    CHECK(bf_write_image_grid(p, grey, 1, 1, 2, 2, 0, 1) == 0);
    g = load_png(p, &h, &w, &c);
    CHECK(g && h == 6 && w == 6 && c == 1);
    CHECK(g && g[0] == 128 && g[2 * 6 + 2] == 0 && g[2 * 6 + 3] == 255 && g[3 * 6 + 3] == 128);
    free(g);
    CHECK_ERR(bf_write_image_grid(p, grey, 1, 2, 1, 2, 1, 1), "c must be 1 or 3");
    CHECK_ERR(bf_write_image_grid(p, grey, 1, 1, 2, 2, 1, 0), "not a valid grid");
    CHECK_ERR(bf_write_image_grid(p, grey, 0, 1, 2, 2, 1, 1), "not a valid grid");
    CHECK_ERR(bf_write_image_grid(p, grey, 1, 1, 2, 2, 1, 40000), "not a valid grid");
}

/* In memory: the bytes bf_write_png and bf_write_image_grid store, and they decode back. */
TEST(image_png_in_memory) {
    float img[2][1][3][3];
    for (int i = 0; i < 18; i++) (&img[0][0][0][0])[i] = -1.0f + (float)i / 9.0f;
    uint8_t *png = NULL, *file = NULL;
    size_t n = 0, fn = 0;
    CHECK(bf_image_grid_png(&png, &n, &img[0][0][0][0], 2, 1, 3, 3, 2, 1) == 0);
    const char *p = bf_test_tmp("mem.png");
    CHECK(bf_write_image_grid(p, &img[0][0][0][0], 2, 1, 3, 3, 2, 1) == 0);
    CHECK(bf_read_file(p, &file, &fn, 1 << 20) == 0);
    CHECK(png && n > 8 && n == fn && !memcmp(png, file, n));
    int w, h, c;
    uint8_t *px = png ? bf_image_decode(png, n, BF_IMAGE_AS_STORED, &w, &h, &c) : NULL;
    CHECK(px && w == 12 && h == 7 && c == 1);       /* 2 x (3 + 2) + 2 by 3 + 4 */
    CHECK(px && px[2 * 12 + 2] == 0 && px[2 * 12 + 7] == 128);
    free(px); free(png); free(file);
    uint8_t *enc = NULL, pix[6] = {0, 50, 100, 150, 200, 250};
    CHECK(bf_png_encode(&enc, &n, pix, 2, 3, 1) == 0);
    px = enc ? bf_image_decode(enc, n, BF_IMAGE_AS_STORED, &w, &h, &c) : NULL;
    CHECK(px && w == 3 && h == 2 && c == 1 && !memcmp(px, pix, 6));
    free(px); free(enc);
    /* the public decoder from memory: planes, converted to the channels asked for */
    CHECK(bf_png_encode(&enc, &n, pix, 2, 3, 1) == 0);
    uint8_t *planes = NULL;
    CHECK(enc && bf_decode_image(&planes, 3, &h, &w, enc, n) == 0);
    CHECK(planes && h == 2 && w == 3);
    for (int k = 0; planes && k < 3; k++) CHECK(!memcmp(planes + 6 * k, pix, 6));
    free(planes);
    CHECK_ERR(bf_decode_image(&planes, 1, &h, &w, enc, n / 2), "");   /* truncated */
    CHECK(planes == NULL);
    CHECK_ERR(bf_decode_image(&planes, 2, &h, &w, enc, n), "1 or 3 channels");
    CHECK_ERR(bf_decode_image(&planes, 1, &h, &w, (const uint8_t *)"GIF89a..", 8), "");
    free(enc);
    CHECK_ERR(bf_png_encode(&enc, &n, pix, 0, 3, 1), "bad image");
    CHECK(enc == NULL && n == 0);
    CHECK_ERR(bf_image_grid_png(&enc, &n, &img[0][0][0][0], 1, 2, 3, 3, 1, 1), "c must be 1 or 3");
}

/* ------------------------------------------------------------------ .npy */
TEST(image_npy_roundtrip) {
    static const bf_dtype dts[5] = {BF_DT_F32, BF_DT_F64, BF_DT_I64, BF_DT_I32, BF_DT_U8};
    static const size_t sizes[5] = {4, 8, 8, 4, 1};
    const char *p = bf_test_tmp("a.npy");
    uint8_t src[24 * 8];
    for (size_t i = 0; i < sizeof src; i++) src[i] = (uint8_t)(i * 37 + 11);
    const int64_t shapes[4][3] = {{2, 3, 4}, {24, 0, 0}, {0, 3, 0}, {0, 0, 0}};
    const int ndims[4] = {3, 1, 2, 0}, numel[4] = {24, 24, 0, 1};
    for (int t = 0; t < 5; t++)
        for (int s = 0; s < 4; s++) {
            CHECK(bf_write_npy(p, dts[t], ndims[s], shapes[s], src) == 0);
            bf_dtype dt = (bf_dtype)-1;
            int nd = -1;
            int64_t sh[8] = {0};
            void *data = NULL;
            CHECK(bf_read_npy(p, &dt, &nd, sh, &data) == 0);
            CHECK(dt == dts[t] && nd == ndims[s]);
            for (int i = 0; i < nd; i++) CHECK(sh[i] == shapes[s][i]);
            CHECK(data && !memcmp(data, src, (size_t)numel[s] * sizes[t]));
            free(data);
        }
    /* NumPy's exact header bytes for float32 (2, 3) */
    const char dict[] = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }";
    CHECK(bf_write_npy(p, BF_DT_F32, 2, (const int64_t[]){2, 3}, src) == 0);
    uint8_t *f;
    size_t n;
    CHECK(bf_read_file(p, &f, &n, 1 << 20) == 0);
    size_t hl = (size_t)f[8] | (size_t)f[9] << 8;
    CHECK(!memcmp(f, "\x93NUMPY\x01\x00", 8) && (10 + hl) % 64 == 0 && n == 10 + hl + 24);
    CHECK(!memcmp(f + 10, dict, sizeof dict - 1) && f[10 + hl - 1] == '\n' && f[10 + hl - 2] == ' ');
    free(f);
    CHECK(bf_write_npy(p, BF_DT_U8, 1, (const int64_t[]){5}, src) == 0);
    CHECK(bf_read_file(p, &f, &n, 1 << 20) == 0);
    CHECK(strstr((char *)f + 10, "'descr': '|u1'") && strstr((char *)f + 10, "'shape': (5,), }"));
    free(f);
    CHECK_ERR(bf_write_npy(p, BF_DT_F32, 9, shapes[0], src), "bad dtype");
    CHECK_ERR(bf_write_npy(p, BF_DT_F32, 1, (const int64_t[]){-2}, src), "bad dtype");
}

/* A .npy file with the given version, header dict (padded as NumPy does) and data bytes. */
static void npy_raw(const char *path, int version, const char *dict, size_t data_bytes) {
    uint8_t buf[4096] = {0};
    size_t pre = version == 1 ? 10 : 12, dl = strlen(dict);
    size_t hl = (pre + dl + 1 + 63) / 64 * 64 - pre;
    memcpy(buf, "\x93NUMPY", 6);
    buf[6] = (uint8_t)version;
    buf[8] = (uint8_t)hl;
    buf[9] = (uint8_t)(hl >> 8);
    memcpy(buf + pre, dict, dl);
    memset(buf + pre + dl, ' ', hl - dl - 1);
    buf[pre + hl - 1] = '\n';
    for (size_t i = 0; i < data_bytes; i++) buf[pre + hl + i] = (uint8_t)i;
    bf_test_write_file(path, buf, pre + hl + data_bytes);
}

static int read_npy_ok(const char *p, bf_dtype want_dt, int want_nd, int64_t want0) {
    bf_dtype dt;
    int nd;
    int64_t sh[8];
    void *data;
    int rc = bf_read_npy(p, &dt, &nd, sh, &data);
    if (rc) return 0;
    free(data);
    return dt == want_dt && nd == want_nd && (nd == 0 || sh[0] == want0);
}

TEST(image_npy_reader_accepts_and_rejects) {
    const char *p = bf_test_tmp("r.npy");
    bf_dtype dt;
    int nd;
    int64_t sh[8];
    void *data = (void *)1;
#define READ bf_read_npy(p, &dt, &nd, sh, &data)
    npy_raw(p, 2, "{'descr': '<i4', 'fortran_order': False, 'shape': (3,), }", 12);   /* v2.0 */
    CHECK(read_npy_ok(p, BF_DT_I32, 1, 3));
    npy_raw(p, 1, "{\"shape\":(2L,3L),\"fortran_order\":False,\"descr\":\"<u1\"}", 6);  /* py2 */
    CHECK(read_npy_ok(p, BF_DT_U8, 2, 2));
    npy_raw(p, 1, "{'descr': '<f8', 'fortran_order': False, 'shape': (), }", 8);
    CHECK(read_npy_ok(p, BF_DT_F64, 0, 0));

    npy_raw(p, 3, "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }", 4);
    CHECK_ERR(READ, "version 3.0");
    npy_raw(p, 1, "{'descr': '>f4', 'fortran_order': False, 'shape': (1,), }", 4);
    CHECK_ERR(READ, "big-endian");
    npy_raw(p, 1, "{'descr': '<c8', 'fortran_order': False, 'shape': (1,), }", 8);
    CHECK_ERR(READ, "unsupported dtype");
    npy_raw(p, 1, "{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (1,), }", 4);
    CHECK_ERR(READ, "not a plain dtype");
    npy_raw(p, 1, "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 2), }", 16);
    CHECK_ERR(READ, "Fortran");
    npy_raw(p, 1, "{'descr': '<f4', 'fortran_order': False, }", 4);
    CHECK_ERR(READ, "lacks");
    npy_raw(p, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), 'x': 1}", 4);
    CHECK_ERR(READ, "unexpected key");
    npy_raw(p, 1, "{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (1,)}", 4);
    CHECK_ERR(READ, "repeated key");
    npy_raw(p, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (1,1,1,1,1,1,1,1,1), }", 4);
    CHECK_ERR(READ, "malformed 'shape'");
    npy_raw(p, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (-1,), }", 4);
    CHECK_ERR(READ, "malformed 'shape'");
    npy_raw(p, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999, 99999999999), }", 4);
    CHECK_ERR(READ, "shape too large");
    npy_raw(p, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (3,), } x", 12);
    CHECK_ERR(READ, "trailing characters");
    npy_raw(p, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }", 11);
    CHECK_ERR(READ, "needs 12 data bytes but the file holds 11");
    npy_raw(p, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }", 13);
    CHECK_ERR(READ, "needs 12 data bytes but the file holds 13");
    bf_test_write_file(p, "\x93NUMPY\x01\x00\xff\x00{'descr'", 18);
    CHECK_ERR(READ, "file ends inside the header");
    bf_test_write_file(p, "\x93NUMPZ\x01\x00", 8);
    CHECK_ERR(READ, "bad magic");
    CHECK_ERR(bf_read_npy("/no/such.npy", &dt, &nd, sh, &data), "cannot open '/no/such.npy'");
    CHECK(data == NULL);
#undef READ
}

/* The mutated file lives in memory (memfd via /proc/self/fd): thousands of rewrites cost
 * seconds on some disks. Falls back to a file in the tmpdir. */
static int scratch_fd(char *path, size_t cap) {
    int fd = memfd_create("npy_fuzz", 0);
    if (fd >= 0) snprintf(path, cap, "/proc/self/fd/%d", fd);
    else snprintf(path, cap, "%s", bf_test_tmp("m.npy"));
    return fd;
}

static void scratch_write(int fd, const char *path, const void *data, size_t n) {
    if (fd < 0) { bf_test_write_file(path, data, n); return; }
    BF_ASSERT(ftruncate(fd, 0) == 0 && pwrite(fd, data, n, 0) == (ssize_t)n);
}

/* Mutates a few bytes of valid .npy files (mostly in the header) and reads them back. */
TEST(image_fuzz_npy_mutations) {
    const char *base = bf_test_tmp("base.npy");
    char p[1100];
    int fd = scratch_fd(p, sizeof p);
    uint8_t src[96], *orig[2];
    size_t on[2];
    for (int i = 0; i < 96; i++) src[i] = (uint8_t)i;
    CHECK(bf_write_npy(base, BF_DT_I32, 2, (const int64_t[]){4, 6}, src) == 0);
    CHECK(bf_read_file(base, &orig[0], &on[0], 1 << 20) == 0);
    CHECK(bf_write_npy(base, BF_DT_U8, 3, (const int64_t[]){2, 3, 5}, src) == 0);
    CHECK(bf_read_file(base, &orig[1], &on[1], 1 << 20) == 0);
    bf_rng r;
    bf_rng_seed(&r, 99);
    int ok = 0, failed = 0, silent = 0, wrong = 0;
    uint8_t buf[512];
    double t0 = bf_time();
    for (int it = 0; it < 3000; it++) {
        int which = (int)bf_rng_below(&r, 2);
        size_t n = on[which];
        memcpy(buf, orig[which], n);
        for (int m = 1 + (int)bf_rng_below(&r, 3); m > 0 && n > 0; m--) {
            uint32_t op = bf_rng_below(&r, 4);
            uint32_t at = bf_rng_below(&r, 4) ? bf_rng_below(&r, 128) : bf_rng_below(&r, (uint32_t)n);
            if (at >= n) at = (uint32_t)n - 1;
            if (op == 0) buf[at] ^= (uint8_t)(1u << bf_rng_below(&r, 8));
            else if (op == 1) buf[at] = "0123456789(),' {}:<|>TrueFals\n\x93"[bf_rng_below(&r, 32)];
            else if (op == 2) n = at;
            else buf[at] = (uint8_t)bf_rng_u64(&r);
        }
        scratch_write(fd, p, buf, n);
        bf_dtype dt;
        int nd;
        int64_t sh[8];
        void *data;
        bf_set_error("%s", "");
        if (bf_read_npy(p, &dt, &nd, sh, &data) == 0) {
            ok++;
            wrong += nd < 0 || nd > 8;
            free(data);
        } else {
            failed++;
            silent += !strcmp(bf_last_error(), "no error");
            wrong += data != NULL;
        }
    }
    printf("     3000 mutated .npy files: %d read, %d rejected, %.2fs\n", ok, failed, bf_time() - t0);
    CHECK(silent == 0 && wrong == 0 && failed > 1000);
    free(orig[0]);
    free(orig[1]);
    if (fd >= 0) close(fd);
}
