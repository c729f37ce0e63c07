/* biflow serve: a page to play with a model pair, and its JSON/PNG API, over HTTP with
 * libmicrohttpd. Its thread pool reads and answers the connections; requests for the models
 * wait in a queue, their connections suspended, and one compute thread runs them in arrival
 * order (G and F keep activation caches: they must never run on two threads at once).
 *
 * Safe by default: it binds to 127.0.0.1 unless --host says otherwise, and while bound to a
 * loopback address it refuses requests whose Host header names another host (a page on
 * another site cannot reach it through DNS rebinding). Each request is checked before its
 * body is read: a known path and method, the client's request rate (a token bucket per
 * address), the declared body size; a body sent in chunks past the limit closes the
 * connection. Connections, their memory and their idle time are bounded. SIGINT or SIGTERM
 * stops it: the queued requests are computed and answered, then everything is freed. */
#include "biflow.h"
#include "cli.h"
#include "commands.h"
#include "serve.h"
#include "tool_util.h"

#include <arpa/inet.h>
#include <microhttpd.h>
#include <math.h>
#include <netdb.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ------------------------------------------------------------------ rate limit */
#define RATE_CLIENTS 256   /* addresses remembered; the least recently seen is forgotten */

typedef struct { uint8_t addr[16]; int used; double tokens, last; } rate_slot;
typedef struct {
    pthread_mutex_t lock;
    double rate, burst;        /* requests per second and the bucket's size; rate 0: no limit */
    rate_slot slot[RATE_CLIENTS];
} rate_table;

static void addr_key(uint8_t key[16], const struct sockaddr *sa) {
    memset(key, 0, 16);
    if (sa && sa->sa_family == AF_INET) memcpy(key, &((const struct sockaddr_in *)sa)->sin_addr, 4);
    else if (sa && sa->sa_family == AF_INET6) memcpy(key, &((const struct sockaddr_in6 *)sa)->sin6_addr, 16);
}

/* 1 when the client may make a request now (and it is counted), 0 when over its rate. */
static int rate_allow(rate_table *t, const struct sockaddr *sa) {
    if (t->rate <= 0) return 1;
    uint8_t key[16];
    addr_key(key, sa);
    double now = bf_time();
    pthread_mutex_lock(&t->lock);
    rate_slot *s = NULL, *oldest = &t->slot[0];
    for (int i = 0; i < RATE_CLIENTS && !s; i++) {
        rate_slot *c = &t->slot[i];
        if (c->used && !memcmp(c->addr, key, 16)) s = c;
        else if (!c->used || (oldest->used && c->last < oldest->last)) oldest = c;
    }
    if (!s) {
        s = oldest;
        *s = (rate_slot){.used = 1, .tokens = t->burst, .last = now};
        memcpy(s->addr, key, 16);
    }
    s->tokens += (now - s->last) * t->rate;
    if (s->tokens > t->burst) s->tokens = t->burst;
    s->last = now;
    int ok = s->tokens >= 1.0;
    if (ok) s->tokens -= 1.0;
    pthread_mutex_unlock(&t->lock);
    return ok;
}

/* ------------------------------------------------------------------ routes */
enum { M_GET = 1, M_POST = 2 };
/* compute: the handler runs the models, on the compute thread; the others answer at once. */
typedef struct { const char *path; int methods; serve_handler fn; int api, compute; } route;

static const route ROUTES[] = {
    {"/", M_GET, serve_page, 0, 0},
    {"/index.html", M_GET, serve_page, 0, 0},
    {"/api/info", M_GET, api_info, 1, 0},
    {"/api/testimage", M_GET, api_testimage, 1, 0},
    {"/api/sample", M_GET, api_sample, 1, 1},
    {"/api/interpolate", M_GET, api_interpolate, 1, 1},
    {"/api/inpaint", M_GET | M_POST, api_inpaint, 1, 1},
    {"/api/edit", M_GET | M_POST, api_edit, 1, 1},
};

static const route *find_route(const char *url) {
    for (size_t i = 0; i < sizeof ROUTES / sizeof ROUTES[0]; i++)
        if (!strcmp(url, ROUTES[i].path)) return &ROUTES[i];
    return NULL;
}

static int method_bit(const char *m) {
    return !strcmp(m, "GET") || !strcmp(m, "HEAD") ? M_GET : !strcmp(m, "POST") ? M_POST : 0;
}

/* ------------------------------------------------------------------ the server */
#define HOSTS_MAX 8

/* One request: its body and parameters (copied), then its answer. A request for the models
 * waits, its connection suspended (no timeout runs meanwhile), in the compute queue. */
typedef struct conn_state {
    const route *r;
    uint8_t *body;
    size_t n, cap;
    double t0;
    serve_req q;               /* parameters: strings owned here */
    serve_reply reply;
    int queued, done;
    struct MHD_Connection *conn;
    struct conn_state *next;
} conn_state;

/* The models run on one thread, in arrival order: the HTTP threads never wait for them. */
typedef struct {
    pthread_mutex_t lock;
    pthread_cond_t wake;
    conn_state *head, *tail;
    int stopping;              /* no new jobs; the thread ends once the queue is empty */
    pthread_t thread;
    int threads;               /* OpenMP threads of its computations (0: all cores) */
} job_queue;

typedef struct {
    serve_ctx ctx;
    rate_table rate;
    job_queue jobs;
    int log;
    /* Host header values accepted on a loopback address. The port is known only once the
     * daemon listens: until the list is published (host_check 2, release), requests are
     * refused; host_check 0: any Host (not on loopback). */
    atomic_int host_check;
    int n_hosts;
    char hosts[HOSTS_MAX][300];
    atomic_long requests, client_errors, server_errors;
    atomic_int unfinished;     /* queued requests whose connection has not completed */
} server;

static void add_security_headers(struct MHD_Response *resp, const char *type) {
    MHD_add_response_header(resp, "Content-Type", type);
    MHD_add_response_header(resp, "Cache-Control", "no-store");
    MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff");
    MHD_add_response_header(resp, "Referrer-Policy", "no-referrer");
    MHD_add_response_header(resp, "X-Frame-Options", "DENY");
    if (!strncmp(type, "text/html", 9))   /* the page's script and style are inline */
        MHD_add_response_header(resp, "Content-Security-Policy",
                                "default-src 'none'; img-src 'self' blob: data:; "
                                "style-src 'unsafe-inline'; script-src 'unsafe-inline'; "
                                "connect-src 'self'; base-uri 'none'; form-action 'none'; "
                                "frame-ancestors 'none'");
}

/* Queues the answer; its body passes to libmicrohttpd (out->body is NULL afterwards). */
static enum MHD_Result send_reply(server *sv, struct MHD_Connection *c, serve_reply *out,
                                  const char *method, const char *url, double t0) {
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(out->size, out->body, MHD_RESPMEM_MUST_FREE);
    if (!resp) { free(out->body); out->body = NULL; return MHD_NO; }
    out->body = NULL;
    add_security_headers(resp, out->type ? out->type : "application/octet-stream");
    for (int i = 0; i < out->n_headers; i++)
        MHD_add_response_header(resp, out->hname[i], out->hvalue[i]);
    enum MHD_Result rc = MHD_queue_response(c, (unsigned)out->status, resp);
    MHD_destroy_response(resp);
    atomic_fetch_add(&sv->requests, 1);
    if (out->status >= 500) atomic_fetch_add(&sv->server_errors, 1);
    else if (out->status >= 400) atomic_fetch_add(&sv->client_errors, 1);
    if (sv->log)
        fprintf(stderr, "%s %.200s %d %zu bytes %.1f ms\n", method, url, out->status, out->size,
                1e3 * (bf_time() - t0));
    return rc;
}

/* The Host header, when bound to loopback: one of the names of this address and port (1),
 * another (0), or not known yet (-1). */
static int host_ok(server *sv, struct MHD_Connection *c) {
    int check = atomic_load_explicit(&sv->host_check, memory_order_acquire);
    const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_HOST);
    if (check == 0) return 1;
    if (check == 1) return -1;  /* not yet published: a request before the address is printed */
    if (!h) return 1;           /* HTTP/1.0 without Host: not a browser */
    for (int i = 0; i < sv->n_hosts; i++)
        if (!strcasecmp(h, sv->hosts[i])) return 1;
    return 0;
}

/* Checks made from the headers alone, before any body is read: 0, or an error reply. */
static int check_headers(server *sv, struct MHD_Connection *c, const route *r, const char *method,
                         const char *url, serve_reply *out) {
    const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    int host = host_ok(sv, c);
    if (host < 0) reply_error(out, 503, "the server is starting");
    else if (!host)
        reply_error(out, 403, "the Host header names another server: open http://%s/ instead",
                    sv->hosts[0]);
    else if (!r) reply_error(out, 404, "no such page: %.100s", url);
    else if (!(method_bit(method) & r->methods)) {
        reply_error(out, 405, "%s takes %s, not %.16s", r->path,
                    r->methods & M_POST ? "GET or POST" : "GET", method);
        reply_header(out, "Allow", "%s", r->methods & M_POST ? "GET, HEAD, POST" : "GET, HEAD");
    } else if (r->api && !rate_allow(&sv->rate, ci ? ci->client_addr : NULL))
        reply_error(out, 429, "too many requests: at most %g a second from one client (bursts "
                    "of %g)", sv->rate.rate, sv->rate.burst);
    else if (cl && strtoull(cl, NULL, 10) > sv->ctx.lim.max_body)
        reply_error(out, 413, "the request body is %.20s bytes; at most %zu are taken", cl,
                    sv->ctx.lim.max_body);
    return out->status ? -1 : 0;
}

static char *copy_str(const char *s) {
    size_t n = strlen(s) + 1;
    return memcpy(bf_malloc(n), s, n);
}

static enum MHD_Result collect_arg(void *cls, enum MHD_ValueKind kind, const char *key,
                                   const char *value) {
    serve_req *q = cls;
    if (q->n >= SERVE_MAX_ARGS) { q->too_many = 1; return MHD_NO; }
    q->key[q->n] = copy_str(key);
    q->value[q->n++] = copy_str(value ? value : "");
    return MHD_YES;
}

static enum MHD_Result take_body(server *sv, conn_state *cs, const char *data, size_t *size) {
    if (*size > sv->ctx.lim.max_body - cs->n) return MHD_NO;   /* chunked past the limit */
    if (cs->n + *size > cs->cap) {
        cs->cap = cs->n + *size > 2 * cs->cap ? cs->n + *size : 2 * cs->cap;
        cs->body = bf_realloc(cs->body, cs->cap);
    }
    memcpy(cs->body + cs->n, data, *size);
    cs->n += *size;
    *size = 0;
    return MHD_YES;
}

static void run_handler(server *sv, conn_state *cs) {
    cs->q.body = cs->body;
    cs->q.body_size = cs->n;
    cs->r->fn(&sv->ctx, &cs->q, &cs->reply);
    if (!cs->reply.status) reply_error(&cs->reply, 500, "internal error: the handler gave no answer");
}

static void *compute_main(void *arg) {
    server *sv = arg;
    job_queue *jq = &sv->jobs;
    bf_set_threads(jq->threads);   /* this thread's own setting (0: every core) */
    for (;;) {
        pthread_mutex_lock(&jq->lock);
        while (!jq->head && !jq->stopping) pthread_cond_wait(&jq->wake, &jq->lock);
        conn_state *cs = jq->head;
        if (cs && !(jq->head = cs->next)) jq->tail = NULL;
        pthread_mutex_unlock(&jq->lock);
        if (!cs) return NULL;   /* stopping, and every job done */
        run_handler(sv, cs);
        pthread_mutex_lock(&jq->lock);
        cs->done = 1;
        pthread_mutex_unlock(&jq->lock);
        MHD_resume_connection(cs->conn);   /* cs is not touched after this */
    }
}

/* Suspends the connection (from its access handler, as libmicrohttpd requires) and queues the
 * request; -1 once the server is stopping. */
static int enqueue(server *sv, conn_state *cs, struct MHD_Connection *c) {
    job_queue *jq = &sv->jobs;
    pthread_mutex_lock(&jq->lock);
    int ok = !jq->stopping;
    if (ok) {
        cs->conn = c;
        cs->queued = 1;
        atomic_fetch_add(&sv->unfinished, 1);
        MHD_suspend_connection(c);   /* before the compute thread can resume it */
        if (jq->tail) jq->tail->next = cs;
        else jq->head = cs;
        jq->tail = cs;
        pthread_cond_signal(&jq->wake);
    }
    pthread_mutex_unlock(&jq->lock);
    return ok ? 0 : -1;
}

/* The whole request is in: answer now, or queue it for the models. */
static enum MHD_Result dispatch(server *sv, struct MHD_Connection *c, conn_state *cs,
                                const char *url, const char *method) {
    MHD_get_connection_values(c, MHD_GET_ARGUMENT_KIND, collect_arg, &cs->q);
    if (cs->n && !(cs->r->methods & M_POST))
        reply_error(&cs->reply, 400, "%s takes no request body", cs->r->path);
    else if (!cs->r->compute)
        run_handler(sv, cs);
    else if (enqueue(sv, cs, c) == 0)
        return MHD_YES;
    else
        reply_error(&cs->reply, 503, "the server is stopping");
    return send_reply(sv, c, &cs->reply, method, url, cs->t0);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *data,
                                  size_t *size, void **state) {
    server *sv = cls;
    conn_state *cs = *state;
    if (cs && cs->queued) {   /* resumed: the answer is ready */
        pthread_mutex_lock(&sv->jobs.lock);
        int done = cs->done;
        pthread_mutex_unlock(&sv->jobs.lock);
        return done ? send_reply(sv, c, &cs->reply, method, url, cs->t0) : MHD_YES;
    }
    if (cs && *size) return take_body(sv, cs, data, size);
    if (cs) return dispatch(sv, c, cs, url, method);
    const route *r = find_route(url);
    serve_reply out = {0};
    double t0 = bf_time();
    if (check_headers(sv, c, r, method, url, &out))   /* answered now: the body is discarded */
        return send_reply(sv, c, &out, method, url, t0);
    cs = bf_calloc(1, sizeof *cs);
    cs->r = r;
    cs->t0 = t0;
    *state = cs;
    return MHD_YES;
}

static void on_completed(void *cls, struct MHD_Connection *c, void **state,
                         enum MHD_RequestTerminationCode code) {
    server *sv = cls;
    conn_state *cs = *state;
    if (!cs) return;
    if (cs->queued) atomic_fetch_sub(&sv->unfinished, 1);
    for (int i = 0; i < cs->q.n; i++) {
        free((char *)cs->q.key[i]);
        free((char *)cs->q.value[i]);
    }
    free(cs->reply.body);
    free(cs->body);
    free(cs);
    *state = NULL;
}

static void mhd_log(void *cls, const char *fmt, va_list ap) {
    fprintf(stderr, "biflow serve (libmicrohttpd): ");
    vfprintf(stderr, fmt, ap);
}

/* ------------------------------------------------------------------ setup */
typedef struct {
    const char *reverse, *flow, *host, *data;
    int port, max_batch, max_steps, max_body, max_conn, http_threads, timeout, threads, log;
    float rate, burst;
} serve_args;

/* 0, or a usage error (message printed, exit status 2) naming the option and its range. */
static int check_args(const serve_args *a) {
    if (cli_check_int("port", a->port, 0, 65535) || cli_check_int("max-batch", a->max_batch, 1, 1024) ||
        cli_check_int("max-steps", a->max_steps, 2, 64) ||
        cli_check_int("max-body", a->max_body, 1024, 64 << 20) ||
        cli_check_int("max-connections", a->max_conn, 1, 4096) ||
        cli_check_int("http-threads", a->http_threads, 1, 64) ||
        cli_check_int("timeout", a->timeout, 1, 3600) || cli_check_float("rate", a->rate, 0, 1e6) ||
        cli_check_float("burst", a->burst, 1, 1e6))
        return 2;
    return 0;
}

static const char *base_name(const char *p) {
    const char *s = strrchr(p, '/');
    return s ? s + 1 : p;
}

/* The test split the page offers; the server runs without it (a message says why). */
static void load_test_images(serve_ctx *s, const char *data) {
    if (bf_dataset_load(&s->test, data, "test")) {
        snprintf(s->test_error, sizeof s->test_error, "%s", bf_last_error());
        memset(&s->test, 0, sizeof s->test);
    } else if (s->test.c != s->C || s->test.h != s->img || s->test.w != s->img) {
        snprintf(s->test_error, sizeof s->test_error, "the test images of %s are %dx%dx%d, the "
                 "models take %dx%dx%d", data, s->test.w, s->test.h, s->test.c, s->img, s->img, s->C);
        bf_dataset_free(&s->test);
        memset(&s->test, 0, sizeof s->test);
    }
    if (!s->test.n) fprintf(stderr, "biflow serve: no test images: %s\n", s->test_error);
}

static int load_models(serve_ctx *s, const serve_args *a) {
    if (!(s->r = bf_reverse_load(a->reverse, 1)) || !(s->f = paired_flow(s->r, a->flow, a->reverse)))
        return -1;
    const bf_reverse_config *c = bf_reverse_get_config(s->r);
    /* the file the editing calls check F against: given, or the one G records (or beside G) */
    if (a->flow) snprintf(s->flow_path, sizeof s->flow_path, "%s", a->flow);
    else if (bf_reverse_find_flow(s->r, a->reverse, s->flow_path, sizeof s->flow_path)) return -1;
    s->reverse_name = base_name(a->reverse);
    s->flow_name = base_name(s->flow_path);
    s->img = c->img_size;
    s->C = c->in_channels;
    s->patch = c->patch_size;
    s->K = c->num_classes;
    s->T = (s->img / s->patch) * (s->img / s->patch);
    s->D = s->C * s->patch * s->patch;
    s->px = (size_t)s->C * s->img * s->img;
    s->N = (size_t)s->T * s->D;
    s->lim = (serve_limits){a->max_batch, a->max_steps, (size_t)a->max_body};
    load_test_images(s, a->data);
    pthread_mutex_init(&s->lock, NULL);
    return 0;
}

static void free_models(serve_ctx *s) {
    bf_dataset_free(&s->test);
    bf_flow_free(s->f);
    bf_reverse_free(s->r);
}

/* The listening address of --host and --port (a name or a numeric IPv4/IPv6 address). */
static int resolve_host(struct sockaddr_storage *ss, socklen_t *len, const char *host, int port) {
    struct addrinfo hints = {0}, *res = NULL;
    char ps[16];
    snprintf(ps, sizeof ps, "%d", port);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    int rc = getaddrinfo(host, ps, &hints, &res);
    if (rc || !res) {
        bf_set_error("--host %s: %s", host, rc ? gai_strerror(rc) : "no address");
        return -1;
    }
    memcpy(ss, res->ai_addr, res->ai_addrlen);
    *len = res->ai_addrlen;
    freeaddrinfo(res);
    return 0;
}

static int is_loopback(const struct sockaddr_storage *ss) {
    if (ss->ss_family == AF_INET)
        return (ntohl(((const struct sockaddr_in *)ss)->sin_addr.s_addr) >> 24) == 127;
    return ss->ss_family == AF_INET6 &&
           IN6_IS_ADDR_LOOPBACK(&((const struct sockaddr_in6 *)ss)->sin6_addr);
}

/* Host header values of a loopback server on port: its own address first (for messages). */
static void set_hosts(server *sv, const struct sockaddr_storage *ss, const char *host, int port) {
    char own[INET6_ADDRSTRLEN] = "127.0.0.1";
    if (ss->ss_family == AF_INET6) inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)ss)->sin6_addr, own, sizeof own);
    else inet_ntop(AF_INET, &((const struct sockaddr_in *)ss)->sin_addr, own, sizeof own);
    const char *names[4] = {own, host, "localhost", "127.0.0.1"};
    sv->n_hosts = 0;
    for (int i = 0; i < 5 && sv->n_hosts + 2 <= HOSTS_MAX; i++) {
        const char *n = i < 4 ? names[i] : "::1";
        int v6 = strchr(n, ':') != NULL;
        snprintf(sv->hosts[sv->n_hosts++], sizeof sv->hosts[0], v6 ? "[%s]:%d" : "%s:%d", n, port);
        if (port == 80) snprintf(sv->hosts[sv->n_hosts++], sizeof sv->hosts[0], v6 ? "[%s]" : "%s", n);
    }
}

static struct MHD_Daemon *start_daemon(server *sv, const serve_args *a,
                                       const struct sockaddr_storage *ss) {
    unsigned flags = MHD_USE_AUTO_INTERNAL_THREAD | MHD_USE_ERROR_LOG | MHD_ALLOW_SUSPEND_RESUME;
    if (ss->ss_family == AF_INET6) flags |= MHD_USE_IPv6;
    return MHD_start_daemon(
        flags, (uint16_t)a->port, NULL, NULL, on_request, sv,
        MHD_OPTION_EXTERNAL_LOGGER, mhd_log, sv,   /* first, so that it logs everything */
        MHD_OPTION_SOCK_ADDR, (const struct sockaddr *)ss,
        MHD_OPTION_THREAD_POOL_SIZE, (unsigned)a->http_threads,
        MHD_OPTION_CONNECTION_LIMIT, (unsigned)a->max_conn,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)a->timeout,
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)64 * 1024,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, sv,
        MHD_OPTION_END);
}

static int jobs_start(server *sv, int threads) {
    job_queue *jq = &sv->jobs;
    pthread_mutex_init(&jq->lock, NULL);
    pthread_cond_init(&jq->wake, NULL);
    jq->threads = threads;
    if (pthread_create(&jq->thread, NULL, compute_main, sv)) {
        bf_set_error("cannot start the compute thread");
        return -1;
    }
    return 0;
}

/* Graceful stop: no new jobs; those queued are computed and answered (their connections
 * complete, for at most 30 s), then the HTTP threads stop. */
static void stop_serving(server *sv, struct MHD_Daemon *d) {
    job_queue *jq = &sv->jobs;
    pthread_mutex_lock(&jq->lock);
    jq->stopping = 1;
    pthread_cond_broadcast(&jq->wake);
    pthread_mutex_unlock(&jq->lock);
    pthread_join(jq->thread, NULL);
    for (double t0 = bf_time(); d && atomic_load(&sv->unfinished) > 0 && bf_time() - t0 < 30.0;)
        nanosleep(&(struct timespec){0, 10 * 1000 * 1000}, NULL);
    if (d) MHD_stop_daemon(d);
    pthread_cond_destroy(&jq->wake);
    pthread_mutex_destroy(&jq->lock);
}

/* Serves until SIGINT or SIGTERM (blocked in every thread, taken here by sigwait). */
static int serve_until_signal(server *sv, const serve_args *a, const struct sockaddr_storage *ss,
                              const char *shown_host) {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, NULL);   /* before any thread starts: they inherit it */
    signal(SIGPIPE, SIG_IGN);
    if (jobs_start(sv, a->threads)) return -1;
    atomic_store(&sv->host_check, is_loopback(ss) ? 1 : 0);
    struct MHD_Daemon *d = start_daemon(sv, a, ss);
    if (!d) {
        stop_serving(sv, NULL);
        bf_set_error("cannot listen on %s port %d (in use, or not an address of this machine?)",
                     a->host, a->port);
        return -1;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);
    int port = di ? di->port : a->port;
    if (is_loopback(ss)) {
        set_hosts(sv, ss, a->host, port);
        atomic_store_explicit(&sv->host_check, 2, memory_order_release);
    }
    printf("biflow serve: http://%s:%d/ (G %s, F %s, %d test images); Ctrl-C stops\n", shown_host,
           port, sv->ctx.reverse_name, sv->ctx.flow_name, sv->ctx.test.n);
    fflush(stdout);
    int sig = 0;
    sigwait(&set, &sig);
    printf("biflow serve: %s: finishing the requests in flight\n", sig == SIGINT ? "SIGINT" : "SIGTERM");
    fflush(stdout);
    stop_serving(sv, d);
    printf("biflow serve: stopped after %ld requests (%ld refused as bad requests, %ld failed)\n",
           atomic_load(&sv->requests), atomic_load(&sv->client_errors),
           atomic_load(&sv->server_errors));
    return 0;
}

static int run_server(const serve_args *a) {
    server *sv = bf_calloc(1, sizeof *sv);
    struct sockaddr_storage ss;
    socklen_t len;
    sv->log = a->log;
    sv->rate.rate = a->rate;
    sv->rate.burst = a->burst;
    pthread_mutex_init(&sv->rate.lock, NULL);
    int rc = resolve_host(&ss, &len, a->host, a->port);
    if (rc == 0) rc = load_models(&sv->ctx, a);
    if (rc == 0) {
        char shown[INET6_ADDRSTRLEN + 2] = "";
        if (ss.ss_family == AF_INET6) snprintf(shown, sizeof shown, "[%s]", a->host);
        rc = serve_until_signal(sv, a, &ss, shown[0] ? shown : a->host);
        pthread_mutex_destroy(&sv->ctx.lock);
    }
    free_models(&sv->ctx);
    pthread_mutex_destroy(&sv->rate.lock);
    free(sv);
    return rc ? cli_fail() : 0;
}

int cmd_serve(int argc, char **argv) {
    serve_args a = {"models/reverse-fmnist.safetensors", NULL, "127.0.0.1", "fashion-mnist",
                    8080, 64, 16, 64 * 1024, 64, 4, 15, 0, 0, 50.0f, 100.0f};
    cli_opt opts[] = {
        CLI_PAIR_OPTS(a.reverse, a.flow),   /* EMA weights */
        {"host", OPT_STR, &a.host, "address to listen on: 127.0.0.1 (this machine only), 0.0.0.0 or :: (every interface)"},
        {"port", OPT_INT, &a.port, "TCP port (0: any free one, printed)"},
        CLI_DATA_OPT(a.data, ": its test split is offered to edit"),
        {"max-batch", OPT_INT, &a.max_batch, "images one request may generate"},
        {"max-steps", OPT_INT, &a.max_steps, "points of one interpolation"},
        {"max-body", OPT_INT, &a.max_body, "bytes of a request body (an uploaded PNG)"},
        {"rate", OPT_FLOAT, &a.rate, "API requests per second from one client address (0 = no limit)"},
        {"burst", OPT_FLOAT, &a.burst, "API requests a client may make at once beyond the rate"},
        {"max-connections", OPT_INT, &a.max_conn, "open connections"},
        {"http-threads", OPT_INT, &a.http_threads, "threads serving connections (the models run on one more, in turn)"},
        {"timeout", OPT_INT, &a.timeout, "seconds before an idle connection is closed"},
        CLI_OWN_THREADS_OPT(a.threads),   /* of each computation */
        {"log", OPT_FLAG, &a.log, "a line per request on stderr"},
        CLI_PRECISION_OPT,
        CLI_END,
    };
    int rc = cli_options(argc, argv, 2, opts);
    if (rc != CLI_GO) return rc;
    if (check_args(&a)) return 2;
    return run_server(&a);
}
