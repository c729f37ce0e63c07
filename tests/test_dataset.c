/* Dataset loaders: synthetic IDX (plain and gzip), CIFAR-10 batches and image folders checked
 * byte for byte, the real Fashion-MNIST when installed, rejections with messages, and a
 * deterministic mutation fuzz of the IDX reader. */
#include "test.h"

#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

/* ------------------------------------------------------------------ helpers */
/* Paths are returned by value so that each stays valid as long as the caller keeps it. */
typedef struct { char s[1024]; } path_buf;

static path_buf tmp(const char *rel) {
    path_buf p;
    snprintf(p.s, sizeof p.s, "%s/%s", bf_test_tmpdir(), rel);
    return p;
}

static path_buf tmp_dir(const char *rel) {
    path_buf p = tmp(rel);
    mkdir(p.s, 0755);
    return p;
}

/* Plain or gzip file; plain writes skip fsync to keep the fuzz loop fast. */
static void put_file(const char *path, const void *data, size_t n, int gz) {
    if (gz) {
        gzFile f = gzopen(path, "wb");
        BF_ASSERT(f && gzwrite(f, data, (unsigned)n) == (int)n && gzclose(f) == Z_OK);
        return;
    }
    FILE *fp = fopen(path, "wb");
    BF_ASSERT(fp && fwrite(data, 1, n, fp) == n && fclose(fp) == 0);
}

static void put_be32(uint8_t *b, uint32_t v) {
    b[0] = (uint8_t)(v >> 24); b[1] = (uint8_t)(v >> 16); b[2] = (uint8_t)(v >> 8); b[3] = (uint8_t)v;
}

/* IDX image file bytes for n h x w images, pixel (i, y, x) = 31*i + 7*y + x (mod 256). */
static size_t idx_images(uint8_t *buf, int n, int h, int w) {
    put_be32(buf, 0x803);
    put_be32(buf + 4, (uint32_t)n); put_be32(buf + 8, (uint32_t)h); put_be32(buf + 12, (uint32_t)w);
    for (int i = 0; i < n; i++)
        for (int j = 0; j < h * w; j++) buf[16 + i * h * w + j] = (uint8_t)(31 * i + 7 * (j / w) + j % w);
    return 16 + (size_t)n * h * w;
}

static size_t idx_labels(uint8_t *buf, int n, const uint8_t *labels) {
    put_be32(buf, 0x801);
    put_be32(buf + 4, (uint32_t)n);
    memcpy(buf + 8, labels, (size_t)n);
    return 8 + (size_t)n;
}

static int idx_pixels_ok(const bf_dataset *d, int n, int h, int w) {
    if (d->n != n || d->c != 1 || d->h != h || d->w != w) return 0;
    for (int i = 0; i < n; i++)
        for (int j = 0; j < h * w; j++)
            if (d->pixels[i * h * w + j] != (uint8_t)(31 * i + 7 * (j / w) + j % w)) return 0;
    return 1;
}

/* rc must be -1 and the message must hold both needles (second may be NULL). */
#define CHECK_ERR2(expr, needle, needle2)                                                 \
    do {                                                                                \
        bf_set_error("%s", "");                                                         \
        int rc_ = (expr);                                                               \
        const char *m_ = bf_last_error(), *n2_ = (needle2);                             \
        if (rc_ != -1 || !strstr(m_, needle) || (n2_ && !strstr(m_, n2_))) {            \
            fprintf(stderr, "    %s:%d: expected failure with '%s': rc %d, '%s'\n",       \
                    __FILE__, __LINE__, needle, rc_, m_);                               \
            bf_test_fail_count++;                                                       \
        }                                                                               \
    } while (0)

/* ------------------------------------------------------------------ IDX */
TEST(dataset_idx_dir_plain_and_gz) {
    path_buf dir = tmp_dir("idx1");
    uint8_t buf[4096], lab[5] = {3, 0, 9, 1, 1}, lab2[3] = {7, 2, 5};
    put_file(tmp("idx1/train-images-idx3-ubyte.gz").s, buf, idx_images(buf, 5, 3, 4), 1);
    put_file(tmp("idx1/train-labels-idx1-ubyte").s, buf, idx_labels(buf, 5, lab), 0);
    put_file(tmp("idx1/t10k-images-idx3-ubyte").s, buf, idx_images(buf, 3, 3, 4), 0);
    put_file(tmp("idx1/t10k-labels-idx1-ubyte.gz").s, buf, idx_labels(buf, 3, lab2), 1);

    char spec[1100];
    snprintf(spec, sizeof spec, "idx:%s", dir.s);
    bf_dataset d;
    CHECK(bf_dataset_load(&d, spec, "train") == 0);
    CHECK(idx_pixels_ok(&d, 5, 3, 4));
    for (int i = 0; i < 5 && d.labels; i++) CHECK(d.labels[i] == lab[i]);
    CHECK(d.num_classes == 10 && d.class_names && !strcmp(d.class_names[9], "9"));
    bf_dataset_free(&d);
    CHECK(d.pixels == NULL && d.n == 0);

    CHECK(bf_dataset_load(&d, spec, "test") == 0);
    CHECK(idx_pixels_ok(&d, 3, 3, 4));
    for (int i = 0; i < 3 && d.labels; i++) CHECK(d.labels[i] == lab2[i]);
    bf_dataset_free(&d);
}

TEST(dataset_idx_pair_with_comma_and_many_classes) {
    tmp_dir("idx2");
    uint8_t buf[4096], lab[4] = {12, 0, 3, 4};
    path_buf im = tmp("idx2/a,b-images"), lb = tmp("idx2/labels");
    put_file(im.s, buf, idx_images(buf, 4, 2, 2), 0);
    put_file(lb.s, buf, idx_labels(buf, 4, lab), 1);
    char spec[2100];
    snprintf(spec, sizeof spec, "idx:%s,%s", im.s, lb.s);
    bf_dataset d;
    CHECK(bf_dataset_load(&d, spec, "test") == 0);   /* split is ignored for a pair */
    CHECK(idx_pixels_ok(&d, 4, 2, 2));
    CHECK(d.num_classes == 13 && d.labels && d.labels[0] == 12);
    CHECK(d.class_names && !strcmp(d.class_names[12], "12"));
    bf_dataset_free(&d);
}

TEST(dataset_idx_rejects) {
    tmp_dir("idx3");
    uint8_t img[1024], lab[64], bad[1024], l5[5] = {1, 2, 3, 4, 5};
    size_t ni = idx_images(img, 5, 3, 4), nl = idx_labels(lab, 5, l5);
    path_buf im = tmp("idx3/images"), lb = tmp("idx3/labels");
    bf_dataset d;
    put_file(lb.s, lab, nl, 0);

    put_file(im.s, img, ni - 1, 0);                                         /* truncated */
    CHECK_ERR2(bf_dataset_load_idx(&d, im.s, lb.s), "truncated", im.s);
    put_file(im.s, img, ni - 1, 1);                                         /* truncated, gzip */
    CHECK_ERR2(bf_dataset_load_idx(&d, im.s, lb.s), "truncated", im.s);
    memcpy(bad, img, ni); bad[ni] = 0;
    put_file(im.s, bad, ni + 1, 0);                                         /* trailing data */
    CHECK_ERR2(bf_dataset_load_idx(&d, im.s, lb.s), "more data", im.s);
    memcpy(bad, img, ni); put_be32(bad, 0x801);
    put_file(im.s, bad, ni, 0);                                             /* wrong magic */
    CHECK_ERR2(bf_dataset_load_idx(&d, im.s, lb.s), "dimensions", "0x00000801");
    memcpy(bad, img, ni); put_be32(bad, 0x0d03);
    put_file(im.s, bad, ni, 0);                                             /* float IDX */
    CHECK_ERR2(bf_dataset_load_idx(&d, im.s, lb.s), "unsigned byte", im.s);
    memcpy(bad, img, ni); bad[0] = 0x1f;
    put_file(im.s, bad, ni, 0);                                             /* not IDX at all */
    CHECK_ERR2(bf_dataset_load_idx(&d, im.s, lb.s), "not an IDX file", im.s);
    memcpy(bad, img, ni); put_be32(bad + 8, 0);
    put_file(im.s, bad, ni, 0);                                             /* zero dimension */
    CHECK_ERR2(bf_dataset_load_idx(&d, im.s, lb.s), "dimension 1 is 0", im.s);
    memcpy(bad, img, ni); put_be32(bad + 12, 70000);
    put_file(im.s, bad, ni, 0);                                             /* absurd dimension */
    CHECK_ERR2(bf_dataset_load_idx(&d, im.s, lb.s), "dimension 2 is 70000", im.s);
    memcpy(bad, img, ni); put_be32(bad + 4, 40000); put_be32(bad + 8, 60000); put_be32(bad + 12, 60000);
    put_file(im.s, bad, ni, 0);                                             /* > 2 GiB announced */
    CHECK_ERR2(bf_dataset_load_idx(&d, im.s, lb.s), "2 GiB", im.s);
    put_file(im.s, img, 10, 0);                                             /* header cut short */
    CHECK_ERR2(bf_dataset_load_idx(&d, im.s, lb.s), "too short", im.s);

    put_file(im.s, img, ni, 0);
    put_file(lb.s, lab, idx_labels(lab, 4, l5), 0);                         /* count mismatch */
    CHECK_ERR2(bf_dataset_load_idx(&d, im.s, lb.s), "holds 5 images", "holds 4 labels");
    idx_labels(lab, 5, l5);
    put_file(lb.s, lab, nl - 1, 0);                                         /* label file shorter */
    CHECK_ERR2(bf_dataset_load_idx(&d, im.s, lb.s), "truncated", lb.s);
    CHECK_ERR2(bf_dataset_load_idx(&d, im.s, tmp("idx3/nope").s), "cannot open", "nope");
    CHECK_ERR2(bf_dataset_load_idx(&d, im.s, bf_test_tmpdir()), "not a regular file", "");
    CHECK(d.pixels == NULL && d.labels == NULL && d.n == 0);   /* zeroed after failure */
}

/* ------------------------------------------------------------------ CIFAR-10 */
static void cifar_batch(const char *path, int n, int seed, uint8_t *expect_pix, int32_t *expect_lab) {
    uint8_t *b = bf_malloc((size_t)n * 3073);
    for (int i = 0; i < n; i++) {
        b[i * 3073] = (uint8_t)((seed + i) % 10);
        for (int j = 0; j < 3072; j++) b[i * 3073 + 1 + j] = (uint8_t)(seed * 13 + i * 5 + j);
        if (expect_pix) memcpy(expect_pix + (size_t)i * 3072, b + i * 3073 + 1, 3072);
        if (expect_lab) expect_lab[i] = (seed + i) % 10;
    }
    put_file(path, b, (size_t)n * 3073, 0);
    free(b);
}

TEST(dataset_cifar10) {
    path_buf dir = tmp_dir("cifar");
    uint8_t *pix = bf_malloc(10 * 3072);
    int32_t lab[10];
    char name[64];
    for (int b = 1; b <= 5; b++) {
        snprintf(name, sizeof name, "cifar/data_batch_%d.bin", b);
        cifar_batch(tmp(name).s, 2, b, pix + (b - 1) * 2 * 3072, lab + (b - 1) * 2);
    }
    bf_dataset d;
    CHECK(bf_dataset_load_cifar10(&d, dir.s, "train") == 0);
    CHECK(d.n == 10 && d.c == 3 && d.h == 32 && d.w == 32 && d.num_classes == 10);
    CHECK(d.pixels && !memcmp(d.pixels, pix, 10 * 3072));
    CHECK(d.labels && !memcmp(d.labels, lab, sizeof lab));
    CHECK(d.class_names && !strcmp(d.class_names[0], "airplane"));
    bf_dataset_free(&d);

    cifar_batch(tmp("cifar/test_batch.bin").s, 3, 7, pix, lab);
    const char *meta = "c0\nc1\nc2\r\nc3\nc4\nc5\nc6\nc7\nc8\nc9 \n\n";
    put_file(tmp("cifar/batches.meta.txt").s, meta, strlen(meta), 0);
    char spec[1100];
    snprintf(spec, sizeof spec, "cifar10:%s", dir.s);
    CHECK(bf_dataset_load(&d, spec, "test") == 0);
    CHECK(d.n == 3 && d.pixels && !memcmp(d.pixels, pix, 3 * 3072));
    CHECK(d.labels && !memcmp(d.labels, lab, 3 * sizeof *lab));
    CHECK(d.class_names && !strcmp(d.class_names[2], "c2") && !strcmp(d.class_names[9], "c9"));
    bf_dataset_free(&d);
    free(pix);
}

TEST(dataset_cifar10_rejects) {
    path_buf dir = tmp_dir("cifar_bad");
    cifar_batch(tmp("cifar_bad/test_batch.bin").s, 1, 0, NULL, NULL);
    bf_dataset d;
    CHECK_ERR2(bf_dataset_load_cifar10(&d, dir.s, "train"), "data_batch_1.bin", "cannot open");
    put_file(tmp("cifar_bad/batches.meta.txt").s, "a\nb\n", 4, 0);
    CHECK_ERR2(bf_dataset_load_cifar10(&d, dir.s, "test"), "lists 2 class names", "batches.meta.txt");
    remove(tmp("cifar_bad/batches.meta.txt").s);

    uint8_t rec[3073 * 2 + 1] = {0};
    put_file(tmp("cifar_bad/test_batch.bin").s, rec, sizeof rec, 0);
    CHECK_ERR2(bf_dataset_load_cifar10(&d, dir.s, "test"), "multiple of 3073", "test_batch.bin");
    put_file(tmp("cifar_bad/test_batch.bin").s, rec, 0, 0);
    CHECK_ERR2(bf_dataset_load_cifar10(&d, dir.s, "test"), "multiple of 3073", "test_batch.bin");
    rec[3073] = 10;
    put_file(tmp("cifar_bad/test_batch.bin").s, rec, 2 * 3073, 0);
    CHECK_ERR2(bf_dataset_load_cifar10(&d, dir.s, "test"), "label >= 10", "test_batch.bin");
    CHECK_ERR2(bf_dataset_load_cifar10(&d, dir.s, "val"), "split must be", "val");
    CHECK_ERR2(bf_dataset_load_cifar10(&d, tmp("nowhere").s, "test"), "does not exist", "nowhere");
}

/* ------------------------------------------------------------------ folders */
/* A PNG of h x w with c channels, pixel bytes (y*w + x)*c + k + seed. */
static void png_at(const char *path, int h, int w, int c, int seed) {
    uint8_t px[4096];
    for (int i = 0; i < h * w * c; i++) px[i] = (uint8_t)(i + seed);
    BF_ASSERT(bf_write_png(path, px, h, w, c) == 0);
}

/* Whether CHW image i of d equals png_at's HWC pattern of c channels (d->c <= c: alpha dropped). */
static int chw_matches(const bf_dataset *d, int i, int c, int seed) {
    int h = d->h, w = d->w;
    for (int k = 0; k < d->c; k++)
        for (int p = 0; p < h * w; p++)
            if (d->pixels[((size_t)i * d->c + k) * h * w + p] != (uint8_t)(p * c + k + seed)) return 0;
    return 1;
}

TEST(dataset_folder_flat) {
    path_buf dir = tmp_dir("fl");
    tmp_dir("fl/b_dog");
    tmp_dir("fl/a_cat");
    tmp_dir("fl/.hidden");
    png_at(tmp("fl/b_dog/2.png").s, 3, 4, 1, 20);
    png_at(tmp("fl/b_dog/1.PNG").s, 3, 4, 1, 10);
    png_at(tmp("fl/a_cat/x.png").s, 3, 4, 1, 30);
    png_at(tmp("fl/.hidden/y.png").s, 5, 5, 3, 0);   /* ignored: hidden */
    put_file(tmp("fl/a_cat/notes.txt").s, "hi", 2, 0);  /* ignored: not an image */
    bf_dataset d;
    char spec[1100];
    snprintf(spec, sizeof spec, "folder:%s", dir.s);
    CHECK(bf_dataset_load(&d, spec, "train") == 0);
    CHECK(d.n == 3 && d.c == 1 && d.h == 3 && d.w == 4 && d.num_classes == 2);
    CHECK(d.class_names && !strcmp(d.class_names[0], "a_cat") && !strcmp(d.class_names[1], "b_dog"));
    CHECK(d.labels && d.labels[0] == 0 && d.labels[1] == 1 && d.labels[2] == 1);
    CHECK(d.pixels && chw_matches(&d, 0, 1, 30) && chw_matches(&d, 1, 1, 10) && chw_matches(&d, 2, 1, 20));
    bf_dataset_free(&d);
    CHECK_ERR2(bf_dataset_load(&d, spec, "test"), "no test split", dir.s);

    png_at(tmp("fl/a_cat/y.png").s, 4, 4, 1, 0);   /* size mismatch */
    CHECK_ERR2(bf_dataset_load(&d, spec, "train"), "y.png", "4x4");
    png_at(tmp("fl/a_cat/y.png").s, 3, 4, 3, 0);   /* channel mismatch */
    CHECK_ERR2(bf_dataset_load(&d, spec, "train"), "y.png", "3 channel");
    put_file(tmp("fl/a_cat/y.png").s, "\x89PNG\r\n\x1a\n garbage", 17, 0);
    CHECK_ERR2(bf_dataset_load(&d, spec, "train"), "cannot decode", "y.png");
}

/* A minimal baseline JPEG, 8x8 grey, every pixel 200: all-ones quantisation, one-code Huffman
 * tables, and a single block whose DC is 8 * (200 - 128) = 576 (category 10). Written by hand
 * because stb_image_write's JPEG encoder trips UBSan (a signed left shift). */
static size_t tiny_jpeg(uint8_t *j) {
    static const uint8_t head[] = {0xFF, 0xD8, 0xFF, 0xDB, 0x00, 0x43, 0x00};
    static const uint8_t rest[] = {
        0xFF, 0xC0, 0x00, 0x0B, 0x08, 0x00, 0x08, 0x00, 0x08, 0x01, 0x01, 0x11, 0x00,   /* SOF0 */
        0xFF, 0xC4, 0x00, 0x26, 0x00, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x0A,
        0x10, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x00,                     /* DHT */
        0xFF, 0xDA, 0x00, 0x08, 0x01, 0x01, 0x00, 0x00, 0x3F, 0x00,                     /* SOS */
        0x48, 0x0F, 0xFF, 0xD9};   /* bits 0 1001000000 0, padded with ones; EOI */
    memcpy(j, head, sizeof head);
    memset(j + sizeof head, 1, 64);
    memcpy(j + sizeof head + 64, rest, sizeof rest);
    return sizeof head + 64 + sizeof rest;
}

TEST(dataset_folder_split_alpha_jpeg) {
    path_buf dir = tmp_dir("sp");
    tmp_dir("sp/train"); tmp_dir("sp/test");
    tmp_dir("sp/train/one"); tmp_dir("sp/train/two"); tmp_dir("sp/test/two");
    png_at(tmp("sp/train/one/a.png").s, 2, 3, 4, 1);   /* RGBA -> RGB */
    png_at(tmp("sp/train/two/a.png").s, 2, 3, 4, 2);
    png_at(tmp("sp/test/two/a.png").s, 2, 3, 4, 3);
    bf_dataset d;
    CHECK(bf_dataset_load_folder(&d, dir.s, "train") == 0);
    CHECK(d.n == 2 && d.c == 3 && d.h == 2 && d.w == 3 && d.num_classes == 2);
    CHECK(d.pixels && chw_matches(&d, 0, 4, 1) && chw_matches(&d, 1, 4, 2));
    bf_dataset_free(&d);
    CHECK(bf_dataset_load_folder(&d, dir.s, "test") == 0);   /* class "one" absent from test: fine */
    CHECK(d.n == 1 && d.num_classes == 2 && d.labels && d.labels[0] == 1);   /* same label as train */
    CHECK(d.pixels && chw_matches(&d, 0, 4, 3));
    bf_dataset_free(&d);
    tmp_dir("sp/test/three");
    CHECK_ERR2(bf_dataset_load_folder(&d, dir.s, "test"), "three", "no counterpart");

    path_buf ga = tmp_dir("ga");   /* grey + alpha -> grey, and a JPEG beside it */
    tmp_dir("ga/k");
    png_at(tmp("ga/k/a.png").s, 8, 8, 2, 5);
    uint8_t jpeg[256];
    put_file(tmp("ga/k/b.jpeg").s, jpeg, tiny_jpeg(jpeg), 0);
    CHECK(bf_dataset_load_folder(&d, ga.s, "train") == 0);
    CHECK(d.n == 2 && d.c == 1 && d.h == 8 && d.w == 8 && d.pixels && chw_matches(&d, 0, 2, 5));
    for (int i = 0; d.pixels && i < 64; i++) CHECK(abs((int)d.pixels[64 + i] - 200) <= 1);
    bf_dataset_free(&d);

    path_buf empty = tmp_dir("empty");
    CHECK_ERR2(bf_dataset_load_folder(&d, empty.s, "train"), "no class sub-folders", empty.s);
    tmp_dir("empty/c");
    CHECK_ERR2(bf_dataset_load_folder(&d, empty.s, "train"), "no PNG/JPEG images", empty.s);
}

/* ------------------------------------------------------------------ specs */
TEST(dataset_spec_errors) {
    bf_dataset d;
    CHECK_ERR2(bf_dataset_load(&d, "mnist", "train"), "unknown dataset 'mnist'", "idx:IMAGES,LABELS");
    CHECK_ERR2(bf_dataset_load(&d, "tfds:mnist", "train"), "accepted: fashion-mnist", "folder:DIR");
    CHECK_ERR2(bf_dataset_load(&d, NULL, "train"), "unknown dataset", NULL);
    CHECK_ERR2(bf_dataset_load(&d, "fashion-mnist", "valid"), "split must be 'train' or 'test'", "valid");
    CHECK_ERR2(bf_dataset_load(&d, "fashion-mnist", NULL), "split must be", NULL);
    CHECK_ERR2(bf_dataset_load(&d, "idx:", "train"), "no path", NULL);
    CHECK_ERR2(bf_dataset_load(&d, "idx:/no/such/dir", "train"), "does not exist", "/no/such/dir");
    CHECK_ERR2(bf_dataset_load(&d, "folder:/no/such/dir", "train"), "does not exist", "/no/such/dir");
    CHECK_ERR2(bf_dataset_load(&d, "cifar10:/no/such", "test"), "does not exist", "/no/such");
    path_buf dir = tmp_dir("idx_empty");
    char spec[1100];
    snprintf(spec, sizeof spec, "idx:%s", dir.s);
    CHECK_ERR2(bf_dataset_load(&d, spec, "test"), "no t10k-images-idx3-ubyte", dir.s);
    const char *was = getenv("BF_FASHION_MNIST_DIR");   /* the user's setting is put back */
    char *saved = was ? bf_strdup(was) : NULL;
    setenv("BF_FASHION_MNIST_DIR", "/no/such/fmnist", 1);
    CHECK_ERR2(bf_dataset_load(&d, "fashion-mnist", "train"), "dataset-fashion-mnist", "/no/such/fmnist");
    if (saved) setenv("BF_FASHION_MNIST_DIR", saved, 1);
    else unsetenv("BF_FASHION_MNIST_DIR");
    free(saved);

    bf_dataset z = {0};
    bf_dataset_free(&z);
    bf_dataset_free(&z);
    bf_dataset_free(NULL);
}

TEST(dataset_fashion_mnist) {
    REQUIRE_FASHION_MNIST();
    static const int expect_n[2] = {60000, 10000};
    static const char *const splits[2] = {"train", "test"};
    for (int s = 0; s < 2; s++) {
        bf_dataset d;
        CHECK(bf_dataset_load(&d, "fashion-mnist", splits[s]) == 0);
        CHECK(d.n == expect_n[s] && d.c == 1 && d.h == 28 && d.w == 28 && d.num_classes == 10);
        CHECK(d.class_names && !strcmp(d.class_names[0], "T-shirt/top") && !strcmp(d.class_names[9], "Ankle boot"));
        /* the dataset's own label order: 7 is the sneaker, 8 the bag (they were swapped) */
        CHECK(d.class_names && !strcmp(d.class_names[7], "Sneaker") && !strcmp(d.class_names[8], "Bag"));
        if (s == 0) CHECK(d.labels && d.labels[0] == 9);
        int count[10] = {0}, maxpix = 0;
        for (int i = 0; d.labels && i < d.n; i++) count[d.labels[i]]++;
        for (size_t i = 0; d.pixels && i < (size_t)d.n * 784; i++) maxpix = d.pixels[i] > maxpix ? d.pixels[i] : maxpix;
        for (int k = 0; k < 10; k++) CHECK(count[k] == expect_n[s] / 10);   /* balanced classes */
        CHECK(maxpix == 255);
        bf_dataset_free(&d);
    }
}

/* ------------------------------------------------------------------ mutation fuzz */
/* A scratch file in memory (memfd, reached by path through /proc/self/fd): the fuzz loop
 * rewrites files thousands of times, which takes seconds on some disks. Falls back to tmpdir. */
typedef struct { int fd; path_buf path; } scratch;

static void scratch_open(scratch *f, const char *name) {
    f->fd = memfd_create(name, 0);
    if (f->fd >= 0) snprintf(f->path.s, sizeof f->path.s, "/proc/self/fd/%d", f->fd);
    else f->path = tmp(name);
}

static void scratch_put(scratch *f, const void *data, size_t n) {
    if (f->fd < 0) { put_file(f->path.s, data, n, 0); return; }
    BF_ASSERT(ftruncate(f->fd, 0) == 0 && pwrite(f->fd, data, n, 0) == (ssize_t)n);
}

/* Corrupts buf (length *n, capacity cap) in one of several ways, biased to the header. */
static void mutate(bf_rng *r, uint8_t *buf, size_t *n, size_t cap) {
    static const uint8_t interesting[] = {0, 1, 3, 8, 0x7f, 0x80, 0xff};
    uint32_t op = bf_rng_below(r, 6), at = *n ? bf_rng_below(r, (uint32_t)*n) : 0;
    uint32_t head = *n ? bf_rng_below(r, (uint32_t)(*n < 16 ? *n : 16)) : 0;
    if (!*n) op = 4;
    switch (op) {
    case 0: buf[at] ^= (uint8_t)(1u << bf_rng_below(r, 8)); break;
    case 1: buf[head] = interesting[bf_rng_below(r, sizeof interesting)]; break;
    case 2: buf[head] = (uint8_t)bf_rng_u64(r); break;
    case 3: *n = at; break;                                               /* truncate */
    case 4: {                                                             /* append */
        size_t k = 1 + bf_rng_below(r, 8);
        for (; k && *n < cap; k--) buf[(*n)++] = (uint8_t)bf_rng_u64(r);
        break;
    }
    default: buf[at] = (uint8_t)bf_rng_u64(r); break;
    }
}

static size_t gz_bytes(const uint8_t *data, size_t n, uint8_t *out, size_t cap) {
    const char *p = tmp("fz/gz").s;
    put_file(p, data, n, 1);
    FILE *fp = fopen(p, "rb");
    size_t k = fp ? fread(out, 1, cap, fp) : 0;
    if (fp) fclose(fp);
    return k;
}

TEST(dataset_fuzz_idx_mutations) {
    tmp_dir("fz");
    uint8_t img0[256], lab0[32], img[512], lab[64], l6[6] = {0, 1, 2, 9, 3, 200};
    uint8_t gimg0[512], glab0[128];
    size_t ni0 = idx_images(img0, 6, 3, 5), nl0 = idx_labels(lab0, 6, l6);
    size_t gni0 = gz_bytes(img0, ni0, gimg0, sizeof gimg0), gnl0 = gz_bytes(lab0, nl0, glab0, sizeof glab0);
    scratch im, lb;
    scratch_open(&im, "fz_im");
    scratch_open(&lb, "fz_lb");
    bf_rng r;
    bf_rng_seed(&r, 1234);
    int ok = 0, failed = 0, silent = 0, bad_state = 0;
    double t0 = bf_time();
    for (int it = 0; it < 3000; it++) {
        int gz = bf_rng_below(&r, 4) == 0;   /* a quarter corrupt the compressed bytes */
        size_t ni = gz ? gni0 : ni0, nl = gz ? gnl0 : nl0;
        memcpy(img, gz ? gimg0 : img0, ni);
        memcpy(lab, gz ? glab0 : lab0, nl);
        int which = (int)bf_rng_below(&r, 3), times = 1 + (int)bf_rng_below(&r, 3);
        for (int m = 0; m < times; m++) {
            if (which != 1) mutate(&r, img, &ni, sizeof img);
            if (which != 0) mutate(&r, lab, &nl, sizeof lab);
        }
        scratch_put(&im, img, ni);
        scratch_put(&lb, lab, nl);
        bf_dataset d;
        bf_set_error("%s", "");
        if (bf_dataset_load_idx(&d, im.path.s, lb.path.s) == 0) {
            ok++;
            for (int i = 0; i < d.n; i++) bad_state += d.labels[i] < 0 || d.labels[i] >= d.num_classes;
            bad_state += !gz && (size_t)d.n * d.h * d.w > ni;   /* cannot hold more than the file */
            bf_dataset_free(&d);
        } else {
            failed++;
            silent += !strcmp(bf_last_error(), "no error");
            bad_state += d.pixels != NULL || d.labels != NULL || d.n != 0;
        }
    }
    printf("     3000 mutated IDX pairs: %d loaded, %d rejected, %.2fs\n", ok, failed, bf_time() - t0);
    CHECK(silent == 0);
    CHECK(bad_state == 0);
    CHECK(failed > 1000);   /* the mutations do bite */
    if (im.fd >= 0) close(im.fd);
    if (lb.fd >= 0) close(lb.fd);
}
