/* biflow serve: the state shared by the HTTP server (tools/cmd_serve.c) and its API handlers
 * (tools/serve_api.c, tools/serve_args.c). The handlers never see libmicrohttpd: a request is
 * its query parameters and its body, an answer a status, a content type, a body and a few
 * headers. */
#ifndef BF_SERVE_H
#define BF_SERVE_H

#include "biflow.h"

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

typedef struct {
    int max_batch;             /* images one request may generate */
    int max_steps;             /* points of an interpolation */
    size_t max_body;           /* bytes of a request body (an uploaded PNG) */
} serve_limits;

/* The model pair, the test images and the limits; read-only once serving, apart from the
 * activation caches inside G and F (bf_reverse_sample, bf_flow_encode and score denoising use
 * them; the exact decoder has its own per-call workspace). The server runs the handlers that
 * use the models on one thread; `lock` also keeps them safe when called from any other. */
typedef struct {
    bf_reverse *r;
    bf_flow *f;
    char flow_path[4096];      /* F's file (the editing calls check it against G's record) */
    const char *reverse_name, *flow_name;   /* file names for /api/info (no directories) */
    bf_dataset test;           /* test split with labels; n = 0 when it could not be loaded */
    char test_error[512];      /* why not */
    pthread_mutex_t lock;
    serve_limits lim;
    int img, C, patch, T, D, K;
    size_t px, N;              /* floats per image, per noise tensor (T x D) */
} serve_ctx;

#define SERVE_MAX_ARGS 16
#define SERVE_MAX_HEADERS 4

typedef struct {
    int n;                     /* query parameters, URL-decoded; value "" when none given */
    const char *key[SERVE_MAX_ARGS], *value[SERVE_MAX_ARGS];
    int too_many;              /* more than SERVE_MAX_ARGS were sent */
    const uint8_t *body;
    size_t body_size;
} serve_req;

typedef struct {
    int status;
    const char *type;          /* Content-Type */
    uint8_t *body;             /* malloc'ed; passed to the HTTP library, which frees it */
    size_t size;
    int n_headers;
    char hname[SERVE_MAX_HEADERS][32], hvalue[SERVE_MAX_HEADERS][64];
} serve_reply;

typedef void (*serve_handler)(serve_ctx *s, const serve_req *q, serve_reply *out);

/* Handlers (tools/serve_api.c), one per route. */
void serve_page(serve_ctx *s, const serve_req *q, serve_reply *out);
void api_info(serve_ctx *s, const serve_req *q, serve_reply *out);
void api_sample(serve_ctx *s, const serve_req *q, serve_reply *out);
void api_interpolate(serve_ctx *s, const serve_req *q, serve_reply *out);
void api_testimage(serve_ctx *s, const serve_req *q, serve_reply *out);
void api_inpaint(serve_ctx *s, const serve_req *q, serve_reply *out);
void api_edit(serve_ctx *s, const serve_req *q, serve_reply *out);

/* Replies (tools/serve_args.c). An error is {"error": message} as JSON with a 4xx/5xx status. */
void reply_error(serve_reply *out, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void reply_take(serve_reply *out, int status, const char *type, uint8_t *body, size_t size);
void reply_header(serve_reply *out, const char *name, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Query parameters (tools/serve_args.c). Each returns 0, or -1 with a 400 reply that names
 * the parameter, what it takes and what it got. A parameter not given takes the default. */
int args_only(const serve_req *q, serve_reply *out, const char *const *allowed);
const char *arg_get(const serve_req *q, const char *name);
int arg_int(const serve_req *q, serve_reply *out, const char *name, int def, int lo, int hi,
            int *v);
int arg_float(const serve_req *q, serve_reply *out, const char *name, float def, float lo,
              float hi, float *v);
int arg_u64(const serve_req *q, serve_reply *out, const char *name, uint64_t def, uint64_t *v);
/* A class label in [0, K); allow_all: "all" is -2 as well; def: the default (-2, -1 or a label). */
int arg_class(const serve_req *q, serve_reply *out, const char *name, int K, int allow_all,
              int def, int *v);
/* One of the names (NULL-terminated); *v its index. */
int arg_choice(const serve_req *q, serve_reply *out, const char *name, const char *const *names,
               int *v);
/* The width and height a PNG's header declares, before any decoding; -1 if not a PNG. */
int png_header_size(const uint8_t *b, size_t n, uint32_t *w, uint32_t *h);

#endif
