/* biflow serve: replies and the strict parsing of query parameters (see serve.h). Nothing a
 * request sends is trusted: every number is parsed whole, checked finite and in range, and a
 * parameter an endpoint does not take is refused rather than ignored. */
#include "serve.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void reply_take(serve_reply *out, int status, const char *type, uint8_t *body, size_t size) {
    free(out->body);
    out->status = status;
    out->type = type;
    out->body = body;
    out->size = size;
}

void reply_error(serve_reply *out, int status, const char *fmt, ...) {
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "error", msg);
    char *text = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    size_t n = text ? strlen(text) : 0;
    uint8_t *body = bf_malloc(n + 1);
    memcpy(body, text ? text : "", n + 1);
    cJSON_free(text);
    out->n_headers = 0;   /* an error carries none of the success headers */
    reply_take(out, status, "application/json", body, n);
}

void reply_header(serve_reply *out, const char *name, const char *fmt, ...) {
    if (out->n_headers >= SERVE_MAX_HEADERS) return;
    int k = out->n_headers++;
    snprintf(out->hname[k], sizeof out->hname[k], "%s", name);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(out->hvalue[k], sizeof out->hvalue[k], fmt, ap);
    va_end(ap);
}

int args_only(const serve_req *q, serve_reply *out, const char *const *allowed) {
    if (q->too_many) {
        reply_error(out, 400, "too many query parameters (at most %d)", SERVE_MAX_ARGS);
        return -1;
    }
    for (int i = 0; i < q->n; i++) {
        int ok = 0;
        for (const char *const *a = allowed; *a && !ok; a++) ok = !strcmp(*a, q->key[i]);
        for (int j = 0; j < i && ok; j++)
            if (!strcmp(q->key[j], q->key[i])) {
                reply_error(out, 400, "parameter '%.64s' is given twice", q->key[i]);
                return -1;
            }
        if (ok) continue;
        char list[512] = "";
        for (const char *const *a = allowed; *a; a++)
            snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", a == allowed ? "" : ", ", *a);
        reply_error(out, 400, "unknown parameter '%.64s' (this endpoint takes: %s)", q->key[i],
                    allowed[0] ? list : "none");
        return -1;
    }
    return 0;
}

const char *arg_get(const serve_req *q, const char *name) {
    for (int i = 0; i < q->n; i++)
        if (!strcmp(q->key[i], name)) return q->value[i];
    return NULL;
}

/* The parameter as a number in [lo, hi] (integer: read by strtol, so digits only), def when
 * absent; -1 after a 400 reply when it is not one. */
static int arg_number(const serve_req *q, serve_reply *out, const char *name, double def,
                      double lo, double hi, int integer, double *v) {
    const char *s = arg_get(q, name);
    if (!s) { *v = def; return 0; }
    char *end;
    errno = 0;
    double x = integer ? (double)strtol(s, &end, 10) : strtod(s, &end);
    if (errno || end == s || *end || !isfinite(x) || x < lo || x > hi) {
        if (integer)
            reply_error(out, 400, "parameter '%s' must be an integer in %.0f..%.0f, not '%.64s'",
                        name, lo, hi, s);
        else
            reply_error(out, 400, "parameter '%s' must be a number in [%g, %g], not '%.64s'", name,
                        lo, hi, s);
        return -1;
    }
    *v = x;
    return 0;
}

int arg_int(const serve_req *q, serve_reply *out, const char *name, int def, int lo, int hi,
            int *v) {
    double x;
    if (arg_number(q, out, name, def, lo, hi, 1, &x)) return -1;
    *v = (int)x;
    return 0;
}

int arg_float(const serve_req *q, serve_reply *out, const char *name, float def, float lo,
              float hi, float *v) {
    double x;
    if (arg_number(q, out, name, def, lo, hi, 0, &x)) return -1;
    *v = (float)x;
    return 0;
}

int arg_u64(const serve_req *q, serve_reply *out, const char *name, uint64_t def, uint64_t *v) {
    const char *s = arg_get(q, name);
    if (!s) { *v = def; return 0; }
    char *end;
    errno = 0;
    unsigned long long x = strtoull(s, &end, 10);
    if (errno || end == s || *end || s[0] < '0' || s[0] > '9') {
        reply_error(out, 400, "parameter '%s' must be an integer in 0..%llu, not '%.64s'", name,
                    (unsigned long long)UINT64_MAX, s);
        return -1;
    }
    *v = x;
    return 0;
}

int arg_class(const serve_req *q, serve_reply *out, const char *name, int K, int allow_all,
              int def, int *v) {
    const char *s = arg_get(q, name);
    if (!s) { *v = def; return 0; }
    if (allow_all && !strcmp(s, "all")) { *v = -2; return 0; }
    char *end;
    errno = 0;
    long x = strtol(s, &end, 10);
    if (errno || end == s || *end || x < 0 || x >= K) {
        reply_error(out, 400, "parameter '%s' must be a class in 0..%d%s, not '%.64s'", name,
                    K - 1, allow_all ? " or 'all'" : "", s);
        return -1;
    }
    *v = (int)x;
    return 0;
}

int arg_choice(const serve_req *q, serve_reply *out, const char *name, const char *const *names,
               int *v) {
    const char *s = arg_get(q, name);
    if (!s) { *v = 0; return 0; }
    for (int i = 0; names[i]; i++)
        if (!strcmp(s, names[i])) { *v = i; return 0; }
    char list[256] = "";
    for (int i = 0; names[i]; i++)
        snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", i ? ", " : "", names[i]);
    reply_error(out, 400, "parameter '%s' must be one of %s, not '%.64s'", name, list, s);
    return -1;
}

static uint32_t be32(const uint8_t *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

int png_header_size(const uint8_t *b, size_t n, uint32_t *w, uint32_t *h) {
    static const uint8_t sig[8] = {137, 'P', 'N', 'G', 13, 10, 26, 10};
    /* signature, then the IHDR chunk: length 13, "IHDR", width, height (big-endian) */
    if (n < 24 || memcmp(b, sig, 8) || be32(b + 8) != 13 || memcmp(b + 12, "IHDR", 4)) return -1;
    *w = be32(b + 16);
    *h = be32(b + 20);
    return 0;
}
