/* safetensors: round trips, shape/dtype checks, rejection of broken files, the reference
 * fixture, and a deterministic mutation fuzz test. */
#include "test.h"

#include <stdint.h>
#include <string.h>

/* ------------------------------------------------------------------ helpers */

/* Removes the file first: truncating a file with data makes ext4 flush it on close
 * (auto_da_alloc), which costs a millisecond per write in the fuzz loop. */
static uint8_t *read_bytes(const char *path, size_t *n) {
    uint8_t *data;
    BF_ASSERT(bf_read_file(path, &data, n, (size_t)1 << 30) == 0);
    return data;
}

/* A file with the given header text (length field = hlen_override if non-zero) and data. */
static void write_raw(const char *path, const char *json, const void *data, size_t data_len,
                      uint64_t hlen_override) {
    size_t jlen = strlen(json), total = 8 + jlen + data_len;
    uint64_t hlen = hlen_override ? hlen_override : jlen;
    uint8_t *buf = bf_malloc(total);
    for (int i = 0; i < 8; i++) buf[i] = (uint8_t)(hlen >> (8 * i));
    memcpy(buf + 8, json, jlen);
    if (data_len) memcpy(buf + 8 + jlen, data, data_len);
    bf_test_write_file(path, buf, total);
    free(buf);
}

static int is_zeroed(const bf_safetensors *st) {
    static const bf_safetensors zero;
    return memcmp(st, &zero, sizeof zero) == 0;
}

/* Loading must fail, leave st zeroed, and explain itself with `word` and the file's name. */
static void check_rejects(const char *path, const char *word) {
    bf_safetensors st;
    bf_set_error("%s", "");
    int rc = bf_st_load(&st, path);
    const char *msg = bf_last_error();
    CHECK(rc == -1);
    CHECK(is_zeroed(&st));
    CHECK(strstr(msg, path) != NULL);
    if (!strstr(msg, word)) {
        fprintf(stderr, "    expected '%s' in: %s\n", word, msg);
        CHECK(strstr(msg, word) != NULL);
    }
    if (rc == 0) bf_st_free(&st);
}

static void reject_json(const char *name, const char *json, size_t data_len, const char *word) {
    static uint8_t zeros[4096];
    BF_ASSERT(data_len <= sizeof zeros);
    const char *path = bf_test_tmp(name);
    write_raw(path, json, zeros, data_len, 0);
    check_rejects(path, word);
}

/* A small valid file: every dtype, a scalar, an empty tensor, an odd-sized U8, metadata. */
static void write_sample(const char *path) {
    float f32[6] = {1.5f, -2.0f, 3.25f, 0.0f, -0.0f, 1e-30f};
    double f64[4] = {3.141592653589793, -1e300, 2.5, 0.1};
    int64_t i64 = -1234567890123ll;
    int32_t i32[8] = {1, -2, 3, -4, 5, -6, 7, INT32_MIN};
    uint8_t u8[5] = {0, 1, 127, 128, 255};
    int64_t s_f32[2] = {2, 3}, s_f64[1] = {4}, s_i32[3] = {2, 2, 2}, s_u8[1] = {5}, s_empty[2] = {0, 3};
    bf_st_writer *w = bf_st_writer_new();
    bf_st_writer_meta(w, "format", "test");
    bf_st_writer_meta(w, "note", "quote \" backslash \\ newline \n unicode \xc3\xa9");
    bf_st_writer_add(w, "a.f32", BF_DT_F32, 2, s_f32, f32);
    bf_st_writer_add(w, "b.u8", BF_DT_U8, 1, s_u8, u8);          /* odd size: unaligns the rest */
    bf_st_writer_add(w, "c.f64", BF_DT_F64, 1, s_f64, f64);
    bf_st_writer_add(w, "d.scalar", BF_DT_I64, 0, NULL, &i64);
    bf_st_writer_add(w, "e.i32", BF_DT_I32, 3, s_i32, i32);
    bf_st_writer_add(w, "f.empty", BF_DT_F32, 2, s_empty, NULL);
    BF_ASSERT(bf_st_writer_save(w, path) == 0);
    bf_st_writer_free(w);
}

/* ------------------------------------------------------------------ round trip */

TEST(st_roundtrip_dtypes_shapes_meta) {
    const char *path = bf_test_tmp("sample.safetensors");
    write_sample(path);
    bf_safetensors st;
    CHECK(bf_st_load(&st, path) == 0);
    CHECK(st.n == 6);
    CHECK(st.n_meta == 2);
    CHECK(bf_st_meta(&st, "format") && strcmp(bf_st_meta(&st, "format"), "test") == 0);
    CHECK(bf_st_meta(&st, "note") &&
          strcmp(bf_st_meta(&st, "note"), "quote \" backslash \\ newline \n unicode \xc3\xa9") == 0);
    CHECK(bf_st_meta(&st, "absent") == NULL);

    const char *names[6] = {"a.f32", "b.u8", "c.f64", "d.scalar", "e.i32", "f.empty"};
    for (int i = 0; i < 6 && i < st.n; i++) CHECK(strcmp(st.tensors[i].name, names[i]) == 0);

    int64_t s_f32[2] = {2, 3};
    const bf_tensor_view *t = bf_st_expect(&st, "a.f32", BF_DT_F32, 2, s_f32);
    CHECK(t && t->numel == 6);
    float f[6];
    if (t) memcpy(f, t->data, sizeof f);
    CHECK(t && f[0] == 1.5f && f[2] == 3.25f && f[5] == 1e-30f);

    int64_t s_f64[1] = {4};
    t = bf_st_expect(&st, "c.f64", BF_DT_F64, 1, s_f64);
    double d[4];
    if (t) memcpy(d, t->data, sizeof d);   /* unaligned after the 5-byte U8 tensor */
    CHECK(t && d[0] == 3.141592653589793 && d[1] == -1e300);

    t = bf_st_expect(&st, "d.scalar", BF_DT_I64, 0, NULL);
    int64_t i64 = 0;
    if (t) memcpy(&i64, t->data, 8);
    CHECK(t && t->ndim == 0 && t->numel == 1 && i64 == -1234567890123ll);

    int64_t s_i32[3] = {2, 2, 2};
    t = bf_st_expect(&st, "e.i32", BF_DT_I32, 3, s_i32);
    int32_t i32[8];
    if (t) memcpy(i32, t->data, sizeof i32);
    CHECK(t && i32[1] == -2 && i32[7] == INT32_MIN);

    int64_t s_u8[1] = {5}, s_empty[2] = {0, 3};
    t = bf_st_expect(&st, "b.u8", BF_DT_U8, 1, s_u8);
    CHECK(t && ((const uint8_t *)t->data)[4] == 255 && ((const uint8_t *)t->data)[3] == 128);
    t = bf_st_expect(&st, "f.empty", BF_DT_F32, 2, s_empty);
    CHECK(t && t->numel == 0);

    bf_set_error("%s", "sentinel");
    CHECK(bf_st_get(&st, "nope") == NULL);
    CHECK(strcmp(bf_last_error(), "sentinel") == 0);   /* absence is not an error */
    bf_st_free(&st);
    CHECK(is_zeroed(&st));
    bf_st_free(&st);                                   /* twice is harmless */
}

/* The sample file written to path and read back: its n bytes, and its header's length field. */
static uint8_t *sample_bytes(const char *path, size_t *n, uint64_t *hlen) {
    write_sample(path);
    uint8_t *b = read_bytes(path, n);
    *hlen = 0;
    for (int i = 7; i >= 0; i--) *hlen = (*hlen << 8) | b[i];
    return b;
}

/* Layout as the Python library writes it: header padded with spaces to 8 bytes, metadata first,
 * offsets packed in insertion order. */
TEST(st_writer_layout) {
    const char *path = bf_test_tmp("layout.safetensors");
    size_t n;
    uint64_t hlen;
    uint8_t *b = sample_bytes(path, &n, &hlen);
    CHECK(hlen % 8 == 0 && 8 + hlen <= n);
    CHECK(memcmp(b + 8, "{\"__metadata__\":{\"format\":\"test\"", 32) == 0);
    size_t end = 8 + hlen;
    while (end > 8 && b[end - 1] == ' ') end--;
    CHECK(end > 8 && b[end - 1] == '}' && 8 + hlen - end < 8);
    CHECK(strstr((const char *)b + 8, "\"a.f32\":{\"dtype\":\"F32\",\"shape\":[2,3],"
                                      "\"data_offsets\":[0,24]}") != NULL);
    CHECK(strstr((const char *)b + 8, "\"b.u8\":{\"dtype\":\"U8\",\"shape\":[5],"
                                      "\"data_offsets\":[24,29]}") != NULL);
    CHECK(strstr((const char *)b + 8, "\"d.scalar\":{\"dtype\":\"I64\",\"shape\":[],"
                                      "\"data_offsets\":[61,69]}") != NULL);
    CHECK(n == 8 + hlen + 24 + 5 + 32 + 8 + 32 + 0);
    free(b);
}

TEST(st_writer_rejects_bad_arguments) {
    int64_t shape[9] = {1, 1, 1, 1, 1, 1, 1, 1, 1}, neg[1] = {-3};
    float x = 1;
    struct { const char *name; int ndim; const int64_t *shape; const char *word; } cases[] = {
        {"", 1, shape, "empty"},
        {"__metadata__", 1, shape, "reserved"},
        {"nine", 9, shape, "dimensions"},
        {"neg", 1, neg, "negative"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        bf_st_writer *w = bf_st_writer_new();
        bf_st_writer_add(w, cases[i].name, BF_DT_F32, cases[i].ndim, cases[i].shape, &x);
        const char *path = bf_test_tmp("bad-writer.safetensors");
        CHECK(bf_st_writer_save(w, path) == -1);
        CHECK(strstr(bf_last_error(), cases[i].word) != NULL);
        bf_st_writer_free(w);
    }
    bf_st_writer *w = bf_st_writer_new();
    bf_st_writer_add(w, "x", BF_DT_F32, 1, shape, &x);
    bf_st_writer_add(w, "x", BF_DT_F32, 1, shape, &x);
    CHECK(bf_st_writer_save(w, bf_test_tmp("dup-writer.safetensors")) == -1);
    CHECK(strstr(bf_last_error(), "duplicate") != NULL);
    bf_st_writer_free(w);
    FILE *fp = fopen(bf_test_tmp("dup-writer.safetensors"), "rb");
    CHECK(fp == NULL);                                 /* nothing written on error */
    if (fp) fclose(fp);
}

/* ------------------------------------------------------------------ expect messages */

TEST(st_expect_messages) {
    const char *path = bf_test_tmp("expect.safetensors");
    write_sample(path);
    bf_safetensors st;
    BF_ASSERT(bf_st_load(&st, path) == 0);
    int64_t wrong[2] = {2, 4};
    CHECK(bf_st_expect(&st, "a.f32", BF_DT_F32, 2, wrong) == NULL);
    const char *m = bf_last_error();
    CHECK(strstr(m, path) && strstr(m, "'a.f32'") && strstr(m, "has shape (2, 3), expected (2, 4)"));

    int64_t right[2] = {2, 3};
    CHECK(bf_st_expect(&st, "a.f32", BF_DT_F64, 2, right) == NULL);
    m = bf_last_error();
    CHECK(strstr(m, "'a.f32'") && strstr(m, "dtype F32") && strstr(m, "expected dtype F64"));

    CHECK(bf_st_expect(&st, "a.f32", BF_DT_F32, 1, right) == NULL);
    CHECK(strstr(bf_last_error(), "expected (2)") != NULL);

    CHECK(bf_st_expect(&st, "d.scalar", BF_DT_I64, 1, right) == NULL);
    CHECK(strstr(bf_last_error(), "has shape (), expected (2)") != NULL);

    CHECK(bf_st_expect(&st, "missing.weight", BF_DT_F32, 2, right) == NULL);
    m = bf_last_error();
    CHECK(strstr(m, path) && strstr(m, "'missing.weight'") && strstr(m, "missing"));
    bf_st_free(&st);
}

/* ------------------------------------------------------------------ rejection */

TEST(st_reject_truncated) {
    const char *src = bf_test_tmp("whole.safetensors");
    size_t n;
    uint64_t hlen;
    uint8_t *b = sample_bytes(src, &n, &hlen);
    size_t cuts[] = {0, 1, 7, 8, 9, 8 + hlen / 2, 8 + hlen - 1, 8 + hlen, 8 + hlen + 1, n - 1};
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
        const char *path = bf_test_tmp("cut.safetensors");
        bf_test_write_file(path, b, cuts[i]);
        check_rejects(path, "truncated");
    }
    free(b);
}

TEST(st_reject_bad_header_length) {
    const char *path = bf_test_tmp("hlen.safetensors");
    write_raw(path, "{}", NULL, 0, 1000);                  /* claims more than the file has */
    check_rejects(path, "larger than");
    write_raw(path, "{}", NULL, 0, 200000000);             /* over the 100 MB limit */
    check_rejects(path, "limit");
    write_raw(path, "{}", NULL, 0, UINT64_MAX);
    check_rejects(path, "limit");
}

TEST(st_reject_bad_json) {
    reject_json("notjson.safetensors", "this is not json", 0, "JSON");
    reject_json("partial.safetensors", "{\"a\":{\"dtype\":\"F32\"", 0, "JSON");
    reject_json("trailing.safetensors", "{} x", 0, "trailing");
    reject_json("array.safetensors", "[1, 2, 3]", 0, "not an object");
    reject_json("empty.safetensors", "", 0, "JSON");
    reject_json("entry.safetensors", "{\"a\": 5}", 0, "not a JSON object");
}

TEST(st_reject_bad_dtype) {
    reject_json("bf16.safetensors",
                "{\"w\":{\"dtype\":\"BF16\",\"shape\":[2],\"data_offsets\":[0,4]}}", 4, "'BF16'");
    reject_json("f16.safetensors",
                "{\"w\":{\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[0,4]}}", 4, "not support");
    reject_json("nodtype.safetensors", "{\"w\":{\"shape\":[2],\"data_offsets\":[0,8]}}", 8,
                "dtype");
    reject_json("numdtype.safetensors",
                "{\"w\":{\"dtype\":4,\"shape\":[2],\"data_offsets\":[0,8]}}", 8, "dtype");
}

TEST(st_reject_bad_shape) {
    reject_json("negdim.safetensors",
                "{\"w\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}", 8,
                "non-negative");
    reject_json("fracdim.safetensors",
                "{\"w\":{\"dtype\":\"F32\",\"shape\":[2.5],\"data_offsets\":[0,8]}}", 8,
                "non-negative");
    reject_json("ninedim.safetensors",
                "{\"w\":{\"dtype\":\"U8\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,1]}}",
                1, "dimensions");
    reject_json("noshape.safetensors", "{\"w\":{\"dtype\":\"U8\",\"data_offsets\":[0,1]}}", 1,
                "shape");
    reject_json("hugeshape.safetensors",
                "{\"w\":{\"dtype\":\"F64\",\"shape\":[4294967296,4294967296,4294967296],"
                "\"data_offsets\":[0,8]}}", 8, "too many elements");
    reject_json("wrapshape.safetensors",     /* 2^32 * 2^30 * 8 bytes wraps to 0 in 64 bits */
                "{\"w\":{\"dtype\":\"F64\",\"shape\":[4294967296,1073741824],"
                "\"data_offsets\":[0,0]}}", 0, "size mismatch");
}

TEST(st_reject_bad_offsets) {
    reject_json("beyond.safetensors",
                "{\"w\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", 8,
                "out of range");
    reject_json("reversed.safetensors",
                "{\"w\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[8,4]}}", 8,
                "out of range");
    reject_json("oneoffset.safetensors",
                "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}", 8, "data_offsets");
    reject_json("stroffset.safetensors",
                "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[\"0\",4]}}", 8,
                "data_offsets");
    reject_json("bigoffset.safetensors",
                "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[1e300,1e301]}}", 8,
                "data_offsets");
    reject_json("mismatch.safetensors",
                "{\"w\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,20]}}", 32,
                "size mismatch");
    reject_json("overlap.safetensors",
                "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 16, "overlap");
    reject_json("same.safetensors",
                "{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]},"
                "\"b\":{\"dtype\":\"I32\",\"shape\":[],\"data_offsets\":[0,4]}}", 4, "overlap");
}

TEST(st_reject_bad_names_and_meta) {
    reject_json("dup.safetensors",
                "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},"
                "\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[1,2]}}", 2, "duplicate");
    reject_json("emptyname.safetensors",
                "{\"\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1, "empty");
    char json[1024], name[300];
    memset(name, 'n', 256);
    name[256] = 0;
    snprintf(json, sizeof json, "{\"%s\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}",
             name);
    reject_json("longname.safetensors", json, 1, "too long");
    reject_json("metanum.safetensors", "{\"__metadata__\":{\"channels\":128}}", 0, "not a string");
    reject_json("metaarr.safetensors", "{\"__metadata__\":[\"a\"]}", 0, "__metadata__");
    reject_json("metadup.safetensors", "{\"__metadata__\":{\"k\":\"1\",\"k\":\"2\"}}", 0,
                "duplicate");
    reject_json("metatwice.safetensors", "{\"__metadata__\":{},\"__metadata__\":{}}", 0,
                "twice");
}

/* Edge cases that are valid: empty header object, null metadata, a 255-byte name, gaps. */
TEST(st_accepts_edge_cases) {
    const char *path = bf_test_tmp("edge.safetensors");
    bf_safetensors st;
    write_raw(path, "{}", NULL, 0, 0);
    CHECK(bf_st_load(&st, path) == 0 && st.n == 0 && st.n_meta == 0);
    bf_st_free(&st);
    write_raw(path, "{\"__metadata__\":null}  \n ", NULL, 0, 0);
    CHECK(bf_st_load(&st, path) == 0 && st.n == 0);
    bf_st_free(&st);
    char json[1024], name[300];
    memset(name, 'n', 255);
    name[255] = 0;
    snprintf(json, sizeof json,
             "{\"%s\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[3,4]},"
             "\"z\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[3,3]}}", name);
    write_raw(path, json, "abcd", 4, 0);
    CHECK(bf_st_load(&st, path) == 0 && st.n == 2);
    const bf_tensor_view *t = bf_st_get(&st, name);
    CHECK(t && *(const char *)t->data == 'd');
    bf_st_free(&st);
}

/* ------------------------------------------------------------------ reference fixture */

TEST(st_fixture_model) {
    const char *path = bf_test_shared("fixtures/tarflow-ref/model.safetensors");
    bf_safetensors st;
    if (bf_st_load(&st, path) != 0) {
        fprintf(stderr, "    %s\n", bf_last_error());
        CHECK(0);
        return;
    }
    CHECK(st.n == 37);
    CHECK(bf_st_meta(&st, "channels") && strcmp(bf_st_meta(&st, "channels"), "128") == 0);
    int64_t pos[2] = {49, 128}, cls[3] = {10, 1, 128};
    CHECK(bf_st_expect(&st, "blocks.0.pos_embed", BF_DT_F32, 2, pos) != NULL);
    CHECK(bf_st_expect(&st, "blocks.0.class_embed", BF_DT_F32, 3, cls) != NULL);

    /* Re-writing every tensor and metadata pair in file order must reproduce the file byte for
     * byte: our writer follows the same conventions as the one that made the fixture. */
    bf_st_writer *w = bf_st_writer_new();
    for (int i = 0; i < st.n_meta; i++) bf_st_writer_meta(w, st.meta_keys[i], st.meta_values[i]);
    for (int i = 0; i < st.n; i++) {
        const bf_tensor_view *t = &st.tensors[i];
        bf_st_writer_add(w, t->name, t->dtype, t->ndim, t->shape, t->data);
    }
    const char *copy = bf_test_tmp("model-copy.safetensors");
    CHECK(bf_st_writer_save(w, copy) == 0);
    bf_st_writer_free(w);
    size_t n;
    uint8_t *b = read_bytes(copy, &n);
    CHECK(n == st.file_size && memcmp(b, st.file, n) == 0);
    free(b);
    bf_st_free(&st);
}

/* ------------------------------------------------------------------ mutation fuzz */

/* One random edit: overwrite, JSON-ish overwrite in the header, truncate, insert, delete, or
 * nudge the length field. buf has room for cap bytes. */
static size_t mutate(bf_rng *r, uint8_t *buf, size_t n, size_t cap) {
    static const char alphabet[] = "{}[],:\"0123456789-.eE \\_FIU";
    uint32_t kind = bf_rng_below(r, 6);
    size_t at = n ? bf_rng_below(r, (uint32_t)n) : 0;
    if (kind == 0 && n) buf[at] = (uint8_t)bf_rng_u64(r);
    else if (kind == 1 && n > 8)
        buf[8 + bf_rng_below(r, (uint32_t)(n - 8))] = (uint8_t)alphabet[bf_rng_below(r, sizeof alphabet - 1)];
    else if (kind == 2) n = at;
    else if (kind == 3 && n < cap) {
        size_t k = 1 + bf_rng_below(r, 8);
        if (k > cap - n) k = cap - n;
        memmove(buf + at + k, buf + at, n - at);
        for (size_t i = 0; i < k; i++) buf[at + i] = (uint8_t)bf_rng_u64(r);
        n += k;
    } else if (kind == 4 && n) {
        size_t k = 1 + bf_rng_below(r, 8);
        if (k > n - at) k = n - at;
        memmove(buf + at, buf + at + k, n - at - k);
        n -= k;
    } else if (kind == 5 && n >= 8) buf[bf_rng_below(r, 2)] += (uint8_t)(bf_rng_below(r, 17) - 8);
    return n;
}

/* A successful load must give views inside the file; a failed one must explain itself. */
static int check_loaded(const char *path) {
    bf_safetensors st;
    bf_set_error("%s", "");
    if (bf_st_load(&st, path) != 0) {
        CHECK(strcmp(bf_last_error(), "no error") != 0 && strstr(bf_last_error(), path));
        CHECK(is_zeroed(&st));
        return 0;
    }
    static const size_t item[] = {4, 8, 8, 4, 1};
    unsigned sum = 0;
    for (int i = 0; i < st.n; i++) {
        const bf_tensor_view *t = &st.tensors[i];
        const uint8_t *p = t->data;
        size_t bytes = (size_t)t->numel * item[t->dtype];
        CHECK(p >= st.file + 8 && p + bytes <= st.file + st.file_size);
        for (size_t k = 0; k < bytes; k++) sum += p[k];   /* ASan flags any stray view */
    }
    (void)sum;
    int64_t shape[2] = {2, 3};
    if (!bf_st_expect(&st, "a.f32", BF_DT_F32, 2, shape)) CHECK(strlen(bf_last_error()) > 0);
    bf_st_meta(&st, "format");
    bf_st_free(&st);
    return 1;
}

TEST(st_fuzz_mutations) {
    const char *src = bf_test_tmp("fuzz-src.safetensors"), *path = bf_test_tmp("fuzz.safetensors");
    write_sample(src);
    size_t n0;
    uint8_t *orig = read_bytes(src, &n0);
    size_t cap = n0 + 256;
    uint8_t *buf = bf_malloc(cap);
    bf_rng r;
    bf_rng_seed(&r, 12345);
    int ok = 0, iters = 3000;
    for (int it = 0; it < iters; it++) {
        memcpy(buf, orig, n0);
        size_t n = n0;
        int edits = 1 + (int)bf_rng_below(&r, 4);
        for (int e = 0; e < edits; e++) n = mutate(&r, buf, n, cap);
        bf_test_write_file(path, buf, n);
        ok += check_loaded(path);
    }
    CHECK(ok > 0 && ok < iters);   /* the mutations exercised both outcomes */
    free(buf);
    free(orig);
}
