/* Image decoding (src/image_read.c, libpng and libjpeg-turbo): PNG round trips of the
 * project's writer in every colour type and channel conversion, JPEGs made here with
 * libjpeg's compressor (grey, RGB, CMYK), and refusals with a message for truncated and
 * garbled files, oversized headers, and the crafted JPEG whose Huffman table overflowed
 * stb_image (v2.27, stbi__build_huffman) through every reader: folder datasets, --images and
 * mask images. */
#include "test.h"
#include "image_read.h"
#include "jpeg_writer.h"

#include <sys/stat.h>
#include <zlib.h>

/* Decoding must fail (NULL) with a message holding needle. */
#define CHECK_DECODE_FAILS(buf, len, needle)                                              \
    do {                                                                                  \
        int w_, h_, c_;                                                                   \
        bf_set_error("%s", "");                                                           \
        uint8_t *p_ = bf_image_decode((buf), (len), 0, &w_, &h_, &c_);                    \
        if (p_ || !strstr(bf_last_error(), needle)) {                                     \
            fprintf(stderr, "    %s:%d: expected a refusal with '%s' (%zu bytes): '%s'\n", \
                    __FILE__, __LINE__, needle, (size_t)(len), bf_last_error());          \
            bf_test_fail_count++;                                                         \
        }                                                                                 \
        free(p_);                                                                         \
    } while (0)

/* A PNG file as the project writes it, in memory. */
static uint8_t *png_bytes(const uint8_t *px, int h, int w, int c, size_t *len) {
    const char *p = bf_test_tmp("enc.png");
    BF_ASSERT(bf_write_png(p, px, h, w, c) == 0);
    uint8_t *buf;
    BF_ASSERT(bf_read_file(p, &buf, len, 1 << 20) == 0);
    return buf;
}

/* A JPEG made by libjpeg's compressor without chroma subsampling (close pixels); progressive or
 * baseline. */
static uint8_t *jpeg_bytes(const uint8_t *px, int h, int w, int c, int quality, int progressive,
                           size_t *len) {
    return bf_test_jpeg(px, h, w, c, quality, BF_JPEG_444 | (progressive ? BF_JPEG_PROGRESSIVE : 0), len);
}

/* Offset of the first marker 0xFF m in a JPEG, or 0. */
static size_t jpeg_marker(const uint8_t *j, size_t len, uint8_t m) {
    for (size_t i = 2; i + 1 < len; i++)
        if (j[i] == 0xFF && j[i + 1] == m) return i;
    return 0;
}

/* A smooth test pattern: channel k of (y, x), at most 237 for 24 x 16 x 3. */
static void pattern(uint8_t *px, int h, int w, int c) {
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            for (int k = 0; k < c; k++)
                px[((size_t)y * w + x) * c + k] = (uint8_t)(20 + 4 * x + 3 * y + 40 * k);
}

TEST(image_read_png_roundtrip_every_channel_count) {
    bf_rng r;
    bf_rng_seed(&r, 11);
    for (int c = 1; c <= 4; c++) {
        int h = 7, w = 5 + c;
        uint8_t px[7 * 9 * 4];
        for (int i = 0; i < h * w * c; i++) px[i] = (uint8_t)bf_rng_u64(&r);
        size_t len;
        uint8_t *png = png_bytes(px, h, w, c, &len);
        int dw, dh, dc;
        uint8_t *back = bf_image_decode(png, len, BF_IMAGE_AS_STORED, &dw, &dh, &dc);
        CHECK(back && dw == w && dh == h && dc == c);
        CHECK(back && !memcmp(back, px, (size_t)h * w * c));
        free(back);
        /* every conversion: colour from the file, alpha dropped or opaque */
        for (int want = BF_IMAGE_NO_ALPHA; want <= 4; want++) {
            if (want == 0) continue;
            int to = want > 0 ? want : c == 2 || c == 4 ? c - 1 : c;
            back = bf_image_decode(png, len, want, &dw, &dh, &dc);
            CHECK(back && dw == w && dh == h && dc == to);
            for (int i = 0; back && i < h * w; i++) {
                const uint8_t *s = px + i * c, *o = back + i * to;
                int grey = c >= 3 ? (s[0] * 77 + s[1] * 150 + s[2] * 29) >> 8 : s[0];
                int alpha = c == 2 || c == 4 ? s[c - 1] : 255;
                if (to <= 2) CHECK(o[0] == grey);
                else if (c >= 3) CHECK(o[0] == s[0] && o[1] == s[1] && o[2] == s[2]);
                else CHECK(o[0] == grey && o[1] == grey && o[2] == grey);
                if (to == 2 || to == 4) CHECK(o[to - 1] == alpha);
            }
            free(back);
        }
        free(png);
    }
    uint8_t one = 9;
    int w, h, c;
    CHECK(bf_image_decode(&one, 1, 7, &w, &h, &c) == NULL && strstr(bf_last_error(), "channels"));
}

/* Every cut of a PNG, from the signature to just before the end of IEND, is refused. */
TEST(image_read_truncated_png_is_refused) {
    uint8_t px[6 * 6 * 3];
    pattern(px, 6, 6, 3);
    size_t len;
    uint8_t *png = png_bytes(px, 6, 6, 3, &len);
    for (size_t cut = 8; cut < len; cut++) CHECK_DECODE_FAILS(png, cut, "PNG:");
    CHECK_DECODE_FAILS(png, 5, "not a PNG or JPEG");
    CHECK_DECODE_FAILS(png, 0, "empty");
    uint8_t *bad = bf_malloc(len);   /* a flipped bit in the image data: the CRC catches it */
    memcpy(bad, png, len);
    bad[len - 20] ^= 0x10;
    CHECK_DECODE_FAILS(bad, len, "PNG:");
    free(bad);
    const char *p = bf_test_tmp("cut.png");   /* through the file reader: the path is named */
    bf_test_write_file(p, png, len - 13);
    uint8_t *pix;
    int c, h, w;
    CHECK_ERR(bf_read_image(&pix, &c, &h, &w, p), "cut.png");
    CHECK(pix == NULL && strstr(bf_last_error(), "cannot decode image") &&
          strstr(bf_last_error(), "truncated"));
    free(png);
}

/* JPEGs from libjpeg's compressor decode close to their pixels; CMYK (Adobe, inverted) comes
 * out as RGB. */
TEST(image_read_jpeg_from_libjpeg) {
    static uint8_t px[16 * 24 * 4];
    for (int c = 1; c <= 3; c += 2)
        for (int prog = 0; prog <= 1; prog++) {
            pattern(px, 16, 24, c);
            size_t len;
            uint8_t *jpg = jpeg_bytes(px, 16, 24, c, 100, prog, &len);
            int w, h, dc;
            uint8_t *back = bf_image_decode(jpg, len, BF_IMAGE_AS_STORED, &w, &h, &dc);
            CHECK(back && w == 24 && h == 16 && dc == c);
            int worst = 0;
            for (int i = 0; back && i < 16 * 24 * c; i++) {
                int d = abs((int)back[i] - (int)px[i]);
                worst = d > worst ? d : worst;
            }
            CHECK(back && worst <= 3);   /* quality 100, no subsampling */
            free(back);
            back = bf_image_decode(jpg, len, 3, &w, &h, &dc);   /* grey -> RGB */
            CHECK(back && dc == 3 && (c == 3 || (back[0] == back[1] && back[1] == back[2])));
            free(back);
            free(jpg);
        }
    for (int i = 0; i < 16 * 24; i++) {   /* CMYK as Adobe stores it (inverted): C * K / 255 */
        uint8_t *q = px + 4 * i;
        q[0] = 255; q[1] = 128; q[2] = 0; q[3] = 255;
    }
    size_t len;
    uint8_t *jpg = jpeg_bytes(px, 16, 24, 4, 100, 0, &len);
    int w, h, c;
    uint8_t *back = bf_image_decode(jpg, len, BF_IMAGE_AS_STORED, &w, &h, &c);
    CHECK(back && w == 24 && h == 16 && c == 3);
    CHECK(back && abs(back[0] - 255) <= 2 && abs(back[1] - 128) <= 2 && back[2] <= 2);
    free(back);
    free(jpg);
}

/* Every cut of a JPEG is refused (libjpeg would fill the rest grey with a warning), and so
 * are a marker inside the entropy-coded data and a bad table. */
TEST(image_read_truncated_or_garbled_jpeg_is_refused) {
    static uint8_t px[16 * 16 * 3];
    pattern(px, 16, 16, 3);
    for (int prog = 0; prog <= 1; prog++) {
        size_t len;
        uint8_t *jpg = jpeg_bytes(px, 16, 16, 3, 90, prog, &len);
        for (size_t cut = 3; cut + 2 < len; cut++) CHECK_DECODE_FAILS(jpg, cut, "JPEG:");
        CHECK_DECODE_FAILS(jpg, 2, "not a PNG or JPEG");
        size_t sos = jpeg_marker(jpg, len, 0xDA);
        CHECK(sos > 0);
        uint8_t *bad = bf_malloc(len);
        memcpy(bad, jpg, len);   /* an RST marker where none belongs, inside the scan */
        size_t at = sos + 2 + (bad[sos + 2] << 8 | bad[sos + 3]) + 4;
        CHECK(at + 2 < len);
        bad[at] = 0xFF;
        bad[at + 1] = 0xD3;
        CHECK_DECODE_FAILS(bad, len, "Corrupt JPEG data");
        memcpy(bad, jpg, len);   /* a quantisation table index beyond the four */
        size_t dqt = jpeg_marker(bad, len, 0xDB);
        CHECK(dqt > 0);
        bad[dqt + 4] = 0x07;
        CHECK_DECODE_FAILS(bad, len, "JPEG:");
        free(bad);
        free(jpg);
    }
}

/* SOI, then a DHT whose 16 code counts are all 255: 4080 codes where a table holds 256. stb_image
 * v2.27 wrote them past its table (stbi__build_huffman); libjpeg refuses the table. */
static size_t crafted_jpeg(uint8_t *j) {
    size_t n = 0;
    j[n++] = 0xFF; j[n++] = 0xD8;
    j[n++] = 0xFF; j[n++] = 0xC4;
    j[n++] = 0x10; j[n++] = 0x13;   /* a length that covers the 4080 values */
    j[n++] = 0x13;                  /* AC table 3 */
    for (int i = 0; i < 16; i++) j[n++] = 0xFF;
    for (int i = 0; i < 4080; i++) j[n++] = (uint8_t)i;
    j[n++] = 0xFF; j[n++] = 0xD9;
    return n;
}

TEST(crafted_jpeg_huffman_overflow_is_refused_by_every_reader) {
    static uint8_t j[4200];
    size_t len = crafted_jpeg(j);
    CHECK_DECODE_FAILS(j, len, "Bogus Huffman table");
    const char *dir = bf_test_tmp("crafted");   /* folder: dataset */
    char sub[1100], file[1200];
    mkdir(dir, 0755);
    snprintf(sub, sizeof sub, "%s/cls", dir);
    mkdir(sub, 0755);
    snprintf(file, sizeof file, "%s/x.jpg", sub);
    bf_test_write_file(file, j, len);
    bf_dataset d;
    char spec[1200];
    snprintf(spec, sizeof spec, "folder:%s", dir);
    CHECK_ERR(bf_dataset_load(&d, spec, "train"), "x.jpg");
    CHECK(strstr(bf_last_error(), "Bogus Huffman table") != NULL);
    bf_image_set s;   /* --images X.jpg */
    CHECK_ERR(bf_image_set_load(&s, file, 0), "Bogus Huffman table");
    uint8_t mask[16];   /* --mask X.jpg, and the same bytes named .png */
    CHECK_ERR(bf_mask_parse(mask, file, 8, 2), "x.jpg");
    const char *png = bf_test_tmp("crafted.png");
    bf_test_write_file(png, j, len);
    CHECK_ERR(bf_mask_parse(mask, png, 8, 2), "Bogus Huffman table");
}

/* Headers announcing more than the limits are refused before any pixel memory is taken. */
static void put_be32(uint8_t *b, uint32_t v) {
    b[0] = (uint8_t)(v >> 24); b[1] = (uint8_t)(v >> 16); b[2] = (uint8_t)(v >> 8); b[3] = (uint8_t)v;
}

TEST(image_read_oversized_headers_are_refused) {
    uint8_t px[4 * 4] = {0};
    size_t len;
    uint8_t *png = png_bytes(px, 4, 4, 1, &len);
    static const struct { uint32_t w, h; const char *needle; } cases[] = {
        {20000, 10, "20000x10 pixels, more than the 16384 per side"},
        {10, 16385, "more than the 16384 per side"},
        {16384, 16384, "more than the 67108864 in all"},
    };
    for (int i = 0; i < NUM(cases); i++) {   /* IHDR at 8: length, "IHDR", w, h, ..., CRC */
        put_be32(png + 16, cases[i].w);
        put_be32(png + 20, cases[i].h);
        put_be32(png + 29, (uint32_t)crc32(0, png + 12, 17));
        CHECK_DECODE_FAILS(png, len, cases[i].needle);
    }
    free(png);
    uint8_t *jpg = jpeg_bytes(px, 4, 4, 1, 90, 0, &len);
    size_t sof = jpeg_marker(jpg, len, 0xC0);
    CHECK(sof > 0);
    jpg[sof + 5] = 0x40; jpg[sof + 6] = 0x10;   /* height 16400 */
    jpg[sof + 7] = 0x00; jpg[sof + 8] = 0x10;   /* width 16 */
    CHECK_DECODE_FAILS(jpg, len, "more than the 16384 per side");
    jpg[sof + 5] = 0x30; jpg[sof + 6] = 0x00;   /* 12288 x 12288 */
    jpg[sof + 7] = 0x30; jpg[sof + 8] = 0x00;
    CHECK_DECODE_FAILS(jpg, len, "in all");
    free(jpg);
}
