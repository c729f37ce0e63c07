/* safetensors reader and writer.
 *
 * Layout: u64 little-endian header length N, N bytes of JSON, then the data section. The JSON
 * object maps tensor name -> {"dtype", "shape", "data_offsets": [begin, end]} (offsets relative
 * to the data section) plus an optional "__metadata__" object of string -> string.
 *
 * The reader keeps the whole file in memory and trusts nothing in it: every size, offset and
 * name is checked before a view is handed out, so a hostile file yields an error, not a crash.
 * bf_tensor_view.data points into the file buffer and need not be aligned (a U8 tensor of odd
 * length shifts everything packed after it), so callers must memcpy rather than cast. */
#include "core.h"

#include <cjson/cJSON.h>
#include <inttypes.h>
#include <stdarg.h>

#define ST_MAX_HEADER 100000000ull           /* the Python library's limit on N */
#define ST_MAX_FILE ((uint64_t)8 << 30)       /* 8 GiB */
#define ST_MAX_NDIM 8
#define ST_MAX_EXACT 9007199254740992.0       /* 2^53: largest range a JSON double holds exactly */
#define ST_NDTYPES 5

static const char *const dtype_names[ST_NDTYPES] = {"F32", "F64", "I64", "I32", "U8"};
static const size_t dtype_sizes[ST_NDTYPES] = {4, 8, 8, 4, 1};

static int dtype_ok(bf_dtype dt) { return (unsigned)dt < ST_NDTYPES; }
static const char *dtype_name(bf_dtype dt) { return dtype_ok(dt) ? dtype_names[dt] : "?"; }

/* "(128, 32)"; "()" for a scalar. Truncates safely if out is too small. */
static void format_shape(char *out, size_t size, int ndim, const int64_t *shape) {
    size_t k = (size_t)snprintf(out, size, "(");
    for (int i = 0; i < ndim && k < size; i++)
        k += (size_t)snprintf(out + k, size - k, "%s%" PRId64, i ? ", " : "", shape[i]);
    if (k < size) snprintf(out + k, size - k, ")");
}

static const char *st_path(const bf_safetensors *st) { return st->path ? st->path : "safetensors"; }

/* ------------------------------------------------------------------ reader: small checks */

/* A JSON number that is a non-negative integer a double represents exactly. */
static int json_uint(const cJSON *v, uint64_t *out) {
    if (!cJSON_IsNumber(v)) return -1;
    double d = v->valuedouble;
    if (!(d >= 0 && d <= ST_MAX_EXACT)) return -1;   /* also rejects NaN */
    uint64_t u = (uint64_t)d;
    if ((double)u != d) return -1;                   /* fractional */
    *out = u;
    return 0;
}

static int parse_dtype(const char *path, const char *name, const cJSON *v, bf_dtype *dt) {
    if (!cJSON_IsString(v)) {
        bf_set_error("%s: tensor '%s' has no \"dtype\" string", path, name);
        return -1;
    }
    for (int i = 0; i < ST_NDTYPES; i++)
        if (strcmp(v->valuestring, dtype_names[i]) == 0) { *dt = (bf_dtype)i; return 0; }
    bf_set_error("%s: tensor '%s' has dtype '%s', which biflow does not support "
                 "(supported: F32, F64, I64, I32, U8)", path, name, v->valuestring);
    return -1;
}

/* Shape: an array of 0..8 non-negative integers; numel is their product (1 for a scalar). */
static int parse_shape(const char *path, bf_tensor_view *t, const cJSON *v) {
    if (!cJSON_IsArray(v)) {
        bf_set_error("%s: tensor '%s' has no \"shape\" array", path, t->name);
        return -1;
    }
    uint64_t numel = 1;
    int overflow = 0, has_zero = 0;
    const cJSON *d;
    t->ndim = 0;
    cJSON_ArrayForEach(d, v) {
        uint64_t n;
        if (t->ndim == ST_MAX_NDIM) {
            bf_set_error("%s: tensor '%s' has more than %d dimensions", path, t->name, ST_MAX_NDIM);
            return -1;
        }
        if (json_uint(d, &n) != 0) {
            bf_set_error("%s: tensor '%s' has a shape entry that is not a non-negative integer",
                         path, t->name);
            return -1;
        }
        t->shape[t->ndim++] = (int64_t)n;
        if (n && numel > UINT64_MAX / n) overflow = 1;
        has_zero |= n == 0;
        numel *= n;
    }
    /* A zero dimension makes the product 0 whatever overflowed on the way. */
    if (!has_zero && (overflow || numel > (uint64_t)INT64_MAX)) {
        bf_set_error("%s: tensor '%s' has a shape with too many elements", path, t->name);
        return -1;
    }
    t->numel = (int64_t)numel;
    return 0;
}

/* data_offsets [begin, end] within the data section, and end - begin == numel * itemsize. */
static int parse_offsets(const char *path, bf_tensor_view *t, const cJSON *v,
                         const uint8_t *data, uint64_t data_size) {
    uint64_t b, e;
    if (!cJSON_IsArray(v) || cJSON_GetArraySize(v) != 2 || json_uint(v->child, &b) != 0 ||
        json_uint(v->child->next, &e) != 0) {
        bf_set_error("%s: tensor '%s' needs \"data_offsets\" as two non-negative integers",
                     path, t->name);
        return -1;
    }
    if (b > e || e > data_size) {
        bf_set_error("%s: tensor '%s' has data_offsets [%" PRIu64 ", %" PRIu64 "] out of range "
                     "for a data section of %" PRIu64 " bytes%s", path, t->name, b, e, data_size,
                     e > data_size ? " (truncated file?)" : "");
        return -1;
    }
    size_t item = dtype_sizes[t->dtype];
    uint64_t numel = (uint64_t)t->numel;
    if (numel > UINT64_MAX / item || numel * item != e - b) {
        char shp[256];
        format_shape(shp, sizeof shp, t->ndim, t->shape);
        bf_set_error("%s: tensor '%s': size mismatch: shape %s of %s needs %" PRIu64 " elements "
                     "of %zu bytes, but data_offsets [%" PRIu64 ", %" PRIu64 "] hold %" PRIu64
                     " bytes", path, t->name, shp, dtype_names[t->dtype], numel, item, b, e, e - b);
        return -1;
    }
    t->data = data + b;
    return 0;
}

static int parse_tensor(const char *path, bf_tensor_view *t, const cJSON *entry,
                        const uint8_t *data, uint64_t data_size) {
    const char *name = entry->string ? entry->string : "";
    size_t len = strlen(name);
    if (len == 0 || len >= sizeof t->name) {
        bf_set_error("%s: tensor name '%.40s%s' is %s (names need 1 to %zu bytes)", path, name,
                     len > 40 ? "..." : "", len ? "too long" : "empty", sizeof t->name - 1);
        return -1;
    }
    memcpy(t->name, name, len + 1);
    if (!cJSON_IsObject(entry)) {
        bf_set_error("%s: entry for tensor '%s' is not a JSON object", path, name);
        return -1;
    }
    if (parse_dtype(path, name, cJSON_GetObjectItemCaseSensitive(entry, "dtype"), &t->dtype))
        return -1;
    if (parse_shape(path, t, cJSON_GetObjectItemCaseSensitive(entry, "shape"))) return -1;
    return parse_offsets(path, t, cJSON_GetObjectItemCaseSensitive(entry, "data_offsets"), data,
                         data_size);
}

/* "__metadata__": an object of string -> string (null counts as empty, like Python's None). */
static int parse_meta(bf_safetensors *st, const char *path, const cJSON *m) {
    if (st->meta_keys) {
        bf_set_error("%s: \"__metadata__\" appears twice (duplicate key)", path);
        return -1;
    }
    if (cJSON_IsNull(m)) return 0;
    if (!cJSON_IsObject(m)) {
        bf_set_error("%s: \"__metadata__\" is not a JSON object", path);
        return -1;
    }
    int n = cJSON_GetArraySize(m);
    st->meta_keys = bf_calloc((size_t)n + 1, sizeof(char *));
    st->meta_values = bf_calloc((size_t)n + 1, sizeof(char *));
    const cJSON *kv;
    cJSON_ArrayForEach(kv, m) {
        const char *key = kv->string ? kv->string : "";
        if (!cJSON_IsString(kv)) {
            bf_set_error("%s: __metadata__ value for '%.100s' is not a string", path, key);
            return -1;
        }
        st->meta_keys[st->n_meta] = bf_strdup(key);
        st->meta_values[st->n_meta++] = bf_strdup(kv->valuestring);
    }
    return 0;
}

/* ------------------------------------------------------------------ reader: whole-file checks */

static int cmp_str_ptr(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Sorting keeps this O(n log n): a 100 MB header may hold a million names. */
static const char *find_duplicate(const char **names, int n) {
    qsort(names, (size_t)n, sizeof *names, cmp_str_ptr);
    for (int i = 1; i < n; i++)
        if (strcmp(names[i - 1], names[i]) == 0) return names[i];
    return NULL;
}

static int check_unique(const bf_safetensors *st, const char *path) {
    int n = st->n > st->n_meta ? st->n : st->n_meta;
    const char **names = bf_malloc((size_t)n * sizeof *names + 1);
    for (int i = 0; i < st->n; i++) names[i] = st->tensors[i].name;
    const char *dup = find_duplicate(names, st->n);
    if (dup) bf_set_error("%s: duplicate tensor name '%s'", path, dup);
    if (!dup) {
        for (int i = 0; i < st->n_meta; i++) names[i] = st->meta_keys[i];
        dup = find_duplicate(names, st->n_meta);
        if (dup) bf_set_error("%s: duplicate __metadata__ key '%.100s'", path, dup);
    }
    free(names);
    return dup ? -1 : 0;
}

static size_t view_bytes(const bf_tensor_view *t) {
    return (size_t)t->numel * dtype_sizes[t->dtype];
}

static int cmp_view_start(const void *a, const void *b) {
    const uint8_t *x = (*(const bf_tensor_view *const *)a)->data;
    const uint8_t *y = (*(const bf_tensor_view *const *)b)->data;
    return x < y ? -1 : x > y;
}

/* No two tensors may share a byte; empty tensors occupy nothing and are skipped. */
static int check_overlap(const bf_safetensors *st, const char *path) {
    const bf_tensor_view **v = bf_malloc((size_t)st->n * sizeof *v + 1);
    int m = 0, rc = 0;
    for (int i = 0; i < st->n; i++)
        if (view_bytes(&st->tensors[i]) > 0) v[m++] = &st->tensors[i];
    qsort(v, (size_t)m, sizeof *v, cmp_view_start);
    for (int i = 1; i < m && rc == 0; i++) {
        const uint8_t *prev_end = (const uint8_t *)v[i - 1]->data + view_bytes(v[i - 1]);
        if ((const uint8_t *)v[i]->data < prev_end) {
            bf_set_error("%s: tensors '%s' and '%s' overlap in the data section", path,
                         v[i - 1]->name, v[i]->name);
            rc = -1;
        }
    }
    free(v);
    return rc;
}

/* ------------------------------------------------------------------ reader: load */

/* Reads the file and keeps its path for messages; checks the length field. Sets *hlen. */
static int read_and_frame(bf_safetensors *st, const char *path, uint64_t *hlen) {
    size_t cap = ST_MAX_FILE < SIZE_MAX ? (size_t)ST_MAX_FILE : SIZE_MAX;
    if (bf_read_file(path, &st->file, &st->file_size, cap) != 0) return -1;
    st->path = bf_strdup(path);
    if (st->file_size < 8) {
        bf_set_error("%s: file has only %zu bytes, too short for the 8-byte header length "
                     "(truncated file?)", path, st->file_size);
        return -1;
    }
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = (n << 8) | st->file[i];   /* little-endian */
    if (n > ST_MAX_HEADER) {
        bf_set_error("%s: header length %" PRIu64 " exceeds the limit of %llu bytes (not a "
                     "safetensors file?)", path, n, ST_MAX_HEADER);
        return -1;
    }
    if (n > st->file_size - 8) {
        bf_set_error("%s: header length %" PRIu64 " is larger than the %zu bytes that follow "
                     "(truncated file?)", path, n, st->file_size - 8);
        return -1;
    }
    *hlen = n;
    return 0;
}

/* Parses the header in place; only JSON whitespace may follow the object. */
static cJSON *parse_header(const char *path, const char *text, size_t len) {
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(text, len, &end, 0);
    if (!root) {
        const char *at = cJSON_GetErrorPtr();
        long pos = at && at >= text && at <= text + len ? (long)(at - text) : -1;
        bf_set_error("%s: header is not valid JSON (error near byte %ld of %zu)", path, pos, len);
        return NULL;
    }
    for (const char *p = end; p && p < text + len; p++) {
        if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r') {
            bf_set_error("%s: header is not valid JSON (trailing bytes after the object)", path);
            cJSON_Delete(root);
            return NULL;
        }
    }
    if (!cJSON_IsObject(root)) {
        bf_set_error("%s: header JSON is not an object", path);
        cJSON_Delete(root);
        return NULL;
    }
    return root;
}

static int load_entries(bf_safetensors *st, const char *path, const cJSON *root,
                        const uint8_t *data, uint64_t data_size) {
    st->tensors = bf_calloc((size_t)cJSON_GetArraySize(root) + 1, sizeof *st->tensors);
    const cJSON *e;
    cJSON_ArrayForEach(e, root) {
        int rc = e->string && strcmp(e->string, "__metadata__") == 0
                     ? parse_meta(st, path, e)
                     : parse_tensor(path, &st->tensors[st->n++], e, data, data_size);
        if (rc != 0) return -1;
    }
    return 0;
}

int bf_st_load(bf_safetensors *st, const char *path) {
    memset(st, 0, sizeof *st);
    uint64_t hlen = 0;
    if (read_and_frame(st, path, &hlen) != 0) goto fail;
    cJSON *root = parse_header(path, (const char *)st->file + 8, (size_t)hlen);
    if (!root) goto fail;
    int rc = load_entries(st, path, root, st->file + 8 + hlen, st->file_size - 8 - hlen);
    cJSON_Delete(root);
    if (rc != 0 || check_unique(st, path) != 0 || check_overlap(st, path) != 0) goto fail;
    return 0;
fail:
    bf_st_free(st);
    return -1;
}

/* n metadata keys and values, and their arrays. */
static void free_meta(char **keys, char **values, int n) {
    for (int i = 0; i < n; i++) {
        free(keys[i]);
        free(values[i]);
    }
    free(keys);
    free(values);
}

void bf_st_free(bf_safetensors *st) {
    if (!st) return;
    free_meta(st->meta_keys, st->meta_values, st->n_meta);
    free(st->tensors);
    free(st->file);
    free(st->path);
    memset(st, 0, sizeof *st);
}

/* ------------------------------------------------------------------ reader: lookups */

const bf_tensor_view *bf_st_get(const bf_safetensors *st, const char *name) {
    if (!st || !name) return NULL;
    for (int i = 0; i < st->n; i++)
        if (strcmp(st->tensors[i].name, name) == 0) return &st->tensors[i];
    return NULL;
}

static int same_shape(const bf_tensor_view *t, int ndim, const int64_t *shape) {
    if (t->ndim != ndim) return 0;
    for (int i = 0; i < ndim; i++)
        if (t->shape[i] != shape[i]) return 0;
    return 1;
}

const bf_tensor_view *bf_st_expect(const bf_safetensors *st, const char *name, bf_dtype dt,
                                   int ndim, const int64_t *shape) {
    const bf_tensor_view *t = bf_st_get(st, name);
    if (!t) {
        bf_set_error("%s: tensor '%s' is missing (the file has %d tensors)", st_path(st),
                     name ? name : "(null)", st->n);
        return NULL;
    }
    if (t->dtype == dt && same_shape(t, ndim, shape)) return t;
    char have[256], want[256];
    format_shape(have, sizeof have, t->ndim, t->shape);
    format_shape(want, sizeof want, ndim, shape);
    if (t->dtype == dt)
        bf_set_error("%s: tensor '%s' has shape %s, expected %s", st_path(st), name, have, want);
    else
        bf_set_error("%s: tensor '%s' has dtype %s and shape %s, expected dtype %s and shape %s",
                     st_path(st), name, dtype_name(t->dtype), have, dtype_name(dt), want);
    return NULL;
}

const char *bf_st_meta(const bf_safetensors *st, const char *key) {
    if (!st || !key) return NULL;
    for (int i = 0; i < st->n_meta; i++)
        if (strcmp(st->meta_keys[i], key) == 0) return st->meta_values[i];
    return NULL;
}

/* ------------------------------------------------------------------ writer */

typedef struct {
    char *name;
    bf_dtype dt;
    int ndim;
    int64_t shape[ST_MAX_NDIM];
    size_t nbytes;
    uint8_t *data;
} st_wtensor;

struct bf_st_writer {
    int n, cap;
    st_wtensor *t;
    int n_meta, meta_cap;
    char **keys, **values;
    char error[512];           /* first misuse of add/meta; reported by save */
};

bf_st_writer *bf_st_writer_new(void) { return bf_calloc(1, sizeof(bf_st_writer)); }

/* add/meta return void, so a bad argument is remembered and makes save fail with a message. */
__attribute__((format(printf, 2, 3))) static void writer_fail(bf_st_writer *w,
                                                              const char *fmt, ...) {
    if (w->error[0]) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(w->error, sizeof w->error, fmt, ap);
    va_end(ap);
}

/* Setting a key twice keeps the last value. */
void bf_st_writer_meta(bf_st_writer *w, const char *key, const char *value) {
    if (!key || !value) { writer_fail(w, "metadata key or value is NULL"); return; }
    for (int i = 0; i < w->n_meta; i++) {
        if (strcmp(w->keys[i], key) == 0) {
            free(w->values[i]);
            w->values[i] = bf_strdup(value);
            return;
        }
    }
    if (w->n_meta == w->meta_cap) {
        w->meta_cap = w->meta_cap ? 2 * w->meta_cap : 8;
        w->keys = bf_realloc(w->keys, (size_t)w->meta_cap * sizeof(char *));
        w->values = bf_realloc(w->values, (size_t)w->meta_cap * sizeof(char *));
    }
    w->keys[w->n_meta] = bf_strdup(key);
    w->values[w->n_meta++] = bf_strdup(value);
}

/* Byte size of a tensor, or -1 (with the writer's error set) if the arguments are unusable. */
static int writer_size(bf_st_writer *w, const char *name, bf_dtype dt, int ndim,
                       const int64_t *shape, size_t *nbytes) {
    if (!dtype_ok(dt)) { writer_fail(w, "tensor '%s' has an invalid dtype", name); return -1; }
    if (ndim < 0 || ndim > ST_MAX_NDIM || (ndim > 0 && !shape)) {
        writer_fail(w, "tensor '%s' needs 0 to 8 dimensions", name);
        return -1;
    }
    size_t n = dtype_sizes[dt];
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0 || (double)shape[i] > ST_MAX_EXACT ||
            (shape[i] && n > SIZE_MAX / (uint64_t)shape[i])) {
            writer_fail(w, "tensor '%s' has a negative or too large dimension", name);
            return -1;
        }
        n *= (size_t)shape[i];
    }
    *nbytes = n;
    return 0;
}

static int writer_check_name(bf_st_writer *w, const char *name) {
    if (!name || !name[0] || strlen(name) >= 256 || strcmp(name, "__metadata__") == 0) {
        writer_fail(w, "tensor name '%.100s' is empty, too long or reserved", name ? name : "");
        return -1;
    }
    for (int i = 0; i < w->n; i++) {
        if (strcmp(w->t[i].name, name) == 0) {
            writer_fail(w, "duplicate tensor name '%s'", name);
            return -1;
        }
    }
    return 0;
}

void bf_st_writer_add(bf_st_writer *w, const char *name, bf_dtype dt, int ndim,
                      const int64_t *shape, const void *data) {
    size_t nbytes;
    if (writer_check_name(w, name) || writer_size(w, name, dt, ndim, shape, &nbytes)) return;
    if (nbytes && !data) { writer_fail(w, "tensor '%s' has no data", name); return; }
    if (w->n == w->cap) {
        w->cap = w->cap ? 2 * w->cap : 16;
        w->t = bf_realloc(w->t, (size_t)w->cap * sizeof *w->t);
    }
    st_wtensor *t = &w->t[w->n++];
    memset(t, 0, sizeof *t);
    t->name = bf_strdup(name);
    t->dt = dt;
    t->ndim = ndim;
    if (ndim) memcpy(t->shape, shape, (size_t)ndim * sizeof *shape);
    t->nbytes = nbytes;
    t->data = bf_malloc(nbytes);
    if (nbytes) memcpy(t->data, data, nbytes);
}

/* Integers go in as raw JSON text so that they print exactly, not through a double. */
static cJSON *json_u64(uint64_t v) {
    char buf[32];
    snprintf(buf, sizeof buf, "%" PRIu64, v);
    return cJSON_CreateRaw(buf);
}

/* Header object: "__metadata__" first, then tensors in insertion order, packed offsets. */
static cJSON *writer_header(const bf_st_writer *w) {
    cJSON *root = cJSON_CreateObject();
    if (w->n_meta) {
        cJSON *m = cJSON_AddObjectToObject(root, "__metadata__");
        for (int i = 0; i < w->n_meta; i++) cJSON_AddStringToObject(m, w->keys[i], w->values[i]);
    }
    uint64_t off = 0;
    for (int i = 0; i < w->n; i++) {
        const st_wtensor *t = &w->t[i];
        cJSON *e = cJSON_AddObjectToObject(root, t->name);
        cJSON_AddStringToObject(e, "dtype", dtype_names[t->dt]);
        cJSON *shape = cJSON_AddArrayToObject(e, "shape");
        for (int d = 0; d < t->ndim; d++) cJSON_AddItemToArray(shape, json_u64((uint64_t)t->shape[d]));
        cJSON *offs = cJSON_AddArrayToObject(e, "data_offsets");
        cJSON_AddItemToArray(offs, json_u64(off));
        cJSON_AddItemToArray(offs, json_u64(off + t->nbytes));
        off += t->nbytes;
    }
    return root;
}

/* Assembles length + header (space-padded to a multiple of 8, as Python does) + data. */
static uint8_t *writer_assemble(const bf_st_writer *w, const char *json, size_t *size) {
    size_t jlen = strlen(json), hlen = (jlen + 7) / 8 * 8, total = 8 + hlen;
    for (int i = 0; i < w->n; i++) total += w->t[i].nbytes;
    uint8_t *buf = bf_malloc(total);
    for (int i = 0; i < 8; i++) buf[i] = (uint8_t)((uint64_t)hlen >> (8 * i));
    memcpy(buf + 8, json, jlen);
    memset(buf + 8 + jlen, ' ', hlen - jlen);
    size_t off = 8 + hlen;
    for (int i = 0; i < w->n; i++) {
        if (w->t[i].nbytes) memcpy(buf + off, w->t[i].data, w->t[i].nbytes);
        off += w->t[i].nbytes;
    }
    *size = total;
    return buf;
}

int bf_st_writer_save(bf_st_writer *w, const char *path) {
    if (w->error[0]) { bf_set_error("%s: %s", path, w->error); return -1; }
    cJSON *root = writer_header(w);
    char *json = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    if (!json) { bf_set_error("%s: could not format the safetensors header", path); return -1; }
    size_t size;
    uint8_t *buf = writer_assemble(w, json, &size);
    cJSON_free(json);
    int rc = bf_write_file_atomic(path, buf, size);
    free(buf);
    return rc;
}

void bf_st_writer_free(bf_st_writer *w) {
    if (!w) return;
    for (int i = 0; i < w->n; i++) {
        free(w->t[i].name);
        free(w->t[i].data);
    }
    free_meta(w->keys, w->values, w->n_meta);
    free(w->t);
    free(w);
}
