/* Core services: error messages, random numbers, memory, time, atomic file output. */
#include "core.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <openssl/evp.h>
#include <pthread.h>

static _Thread_local char last_error[1024];
int bf_log_level = 1;

const char *bf_last_error(void) { return last_error[0] ? last_error : "no error"; }

void bf_set_error(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_error, sizeof last_error, fmt, ap);
    va_end(ap);
}

void bf_info(const char *fmt, ...) {
    if (bf_log_level < 1) return;
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
}

_Noreturn void bf_assert_fail(const char *file, int line, const char *expr) {
    fprintf(stderr, "biflow: assertion failed at %s:%d: %s\n", file, line, expr);
    fflush(stderr);
    abort();
}

static void *check_alloc(void *p, size_t n) {
    if (!p && n) {
        fprintf(stderr, "biflow: out of memory allocating %zu bytes\n", n);
        abort();
    }
    return p;
}
void *bf_malloc(size_t n) { return check_alloc(malloc(n ? n : 1), n); }
void *bf_calloc(size_t n, size_t size) { return check_alloc(calloc(n ? n : 1, size ? size : 1), n * size); }
void *bf_realloc(void *p, size_t n) { return check_alloc(realloc(p, n ? n : 1), n); }

/* One struct per thread (decoders call bf_gemm from inside their own parallel regions). A thread
 * that ends (OpenMP shrinks its pool when a team gets smaller) frees its buffers through the
 * key's destructor, which gets the thread's own struct; LeakSanitizer found them lost before. */
typedef struct { void *p[BF_SCRATCH_KINDS]; size_t size[BF_SCRATCH_KINDS]; } thread_scratch;
static _Thread_local thread_scratch scratch;
static pthread_key_t scratch_key;
static pthread_once_t scratch_once = PTHREAD_ONCE_INIT;

static void scratch_free(void *v) {
    thread_scratch *s = v;
    for (int k = 0; k < BF_SCRATCH_KINDS; k++) free(s->p[k]);
}
static void scratch_key_make(void) { BF_ASSERT(pthread_key_create(&scratch_key, scratch_free) == 0); }

void *bf_thread_scratch(int kind, size_t bytes) {
    BF_ASSERT(kind >= 0 && kind < BF_SCRATCH_KINDS);
    if (bytes > scratch.size[kind]) {
        free(scratch.p[kind]);
        scratch.p[kind] = aligned_alloc(64, (bytes + 63) & ~(size_t)63);
        BF_ASSERT(scratch.p[kind] != NULL);
        scratch.size[kind] = bytes;
        pthread_once(&scratch_once, scratch_key_make);
        BF_ASSERT(pthread_setspecific(scratch_key, &scratch) == 0);
    }
    return scratch.p[kind];
}
char *bf_strdup(const char *s) {
    size_t n = strlen(s) + 1;
    return memcpy(bf_malloc(n), s, n);
}

size_t bf_size_prod(const size_t *f, int k) {
    size_t r = 1;
    for (int i = 0; i < k; i++)
        if (__builtin_mul_overflow(r, f[i], &r)) return SIZE_MAX;
    return r;
}

size_t bf_size_add(size_t a, size_t b) { return a > SIZE_MAX - b ? SIZE_MAX : a + b; }

void bf_init_params(float *params, const bf_param_info *info, int n, uint64_t seed,
                    bf_init_kind (*rule)(const bf_param_info *info, int i, float *scale)) {
    bf_rng rng;
    bf_rng_seed(&rng, seed);
    for (int i = 0; i < n; i++) {
        float *x = params + info[i].offset, scale = 0.0f;
        size_t numel = info[i].numel;
        switch (rule(info, i, &scale)) {
        case BF_INIT_ZERO: memset(x, 0, sizeof(float) * numel); break;
        case BF_INIT_ONE: for (size_t k = 0; k < numel; k++) x[k] = 1.0f; break;
        case BF_INIT_NORMAL: for (size_t k = 0; k < numel; k++) x[k] = scale * bf_rng_normal(&rng); break;
        case BF_INIT_UNIFORM:
            for (size_t k = 0; k < numel; k++) x[k] = scale * (2.0f * bf_rng_uniform(&rng) - 1.0f);
            break;
        }
    }
}

float *bf_arena_alloc(const bf_arena_part *parts, size_t n, const char *what) {
    size_t total = 0;
    for (size_t i = 0; i < n; i++) total = bf_size_add(total, bf_size_add(parts[i].count, 15) & ~(size_t)15);
    float *mem = bf_try_calloc(total, sizeof(float), what), *p = mem;
    for (size_t i = 0; mem && i < n; i++) {
        *parts[i].p = parts[i].count ? p : NULL;
        p += (parts[i].count + 15) & ~(size_t)15;
    }
    return mem;
}

void bf_acts_cache_free(bf_acts_cache *c, const bf_acts_kind *kind) {
    for (int i = 0; i < c->count; i++) kind->release((char *)c->sets + (size_t)i * kind->size);
    free(c->sets);
    memset(c, 0, sizeof *c);
}

void *bf_acts_cache_get(bf_acts_cache *c, const bf_acts_kind *kind, const void *model, int count,
                        int Bn) {
    if (c->count < count || c->Bn < Bn) {
        bf_acts_cache_free(c, kind);
        c->sets = bf_calloc((size_t)count, kind->size);
        for (int i = 0; i < count; i++) kind->init((char *)c->sets + (size_t)i * kind->size, model, Bn);
        c->count = count;
        c->Bn = Bn;
    }
    return c->sets;
}

_Noreturn void bf_die(void) {
    fprintf(stderr, "biflow: %s\n", bf_last_error());
    fflush(stderr);
    abort();
}

static void *alloc_failed(size_t n, size_t size, const char *what) {
    double gib = (double)n * (double)size / (1024.0 * 1024.0 * 1024.0);
    bf_set_error("out of memory: %s needs %.3g GiB, which cannot be allocated", what, gib);
    return NULL;
}

void *bf_try_malloc(size_t n, const char *what) {
    void *p = n < SIZE_MAX / 2 ? malloc(n ? n : 1) : NULL;
    return p ? p : alloc_failed(n, 1, what);
}

void *bf_try_calloc(size_t n, size_t size, const char *what) {
    size_t total;
    void *p = __builtin_mul_overflow(n, size, &total) || total >= SIZE_MAX / 2
                  ? NULL : calloc(n ? n : 1, size ? size : 1);
    return p ? p : alloc_failed(n, size, what);
}

double bf_time(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* ---- rng: xoshiro256**, seeded through splitmix64 so that any seed gives a good state */
static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

void bf_rng_seed(bf_rng *rng, uint64_t seed) {
    for (int i = 0; i < 4; i++) rng->s[i] = splitmix64(&seed);
    rng->has_spare = 0;
    rng->spare = 0;
}

static inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

uint64_t bf_rng_u64(bf_rng *r) {
    uint64_t *s = r->s, out = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0]; s[3] ^= s[1]; s[1] ^= s[2]; s[0] ^= s[3];
    s[2] ^= t; s[3] = rotl(s[3], 45);
    return out;
}

float bf_rng_uniform(bf_rng *r) { return (float)(bf_rng_u64(r) >> 40) * (1.0f / 16777216.0f); }

uint32_t bf_rng_below(bf_rng *r, uint32_t n) {
    return (uint32_t)(((bf_rng_u64(r) >> 32) * (uint64_t)n) >> 32);
}

float bf_rng_normal(bf_rng *r) {   /* Box-Muller in double, one spare kept */
    if (r->has_spare) { r->has_spare = 0; return r->spare; }
    double u1 = ((double)(bf_rng_u64(r) >> 11) + 1.0) * (1.0 / 9007199254740993.0);
    double u2 = (double)(bf_rng_u64(r) >> 11) * (1.0 / 9007199254740992.0);
    double rad = sqrt(-2.0 * log(u1)), th = 2.0 * M_PI * u2;
    r->spare = (float)(rad * sin(th));
    r->has_spare = 1;
    return (float)(rad * cos(th));
}

/* ---- files */
int bf_read_file(const char *path, uint8_t **data, size_t *size, size_t max_size) {
    FILE *fp = fopen(path, "rb");
    if (!fp) { bf_set_error("cannot open '%s': %s", path, strerror(errno)); return -1; }
    struct stat st;
    if (fstat(fileno(fp), &st) != 0 || !S_ISREG(st.st_mode)) {
        bf_set_error("'%s' is not a regular file", path);
        fclose(fp);
        return -1;
    }
    if ((size_t)st.st_size > max_size) {
        bf_set_error("'%s' is %lld bytes, more than the %zu this reader accepts", path,
                     (long long)st.st_size, max_size);
        fclose(fp);
        return -1;
    }
    size_t n = (size_t)st.st_size;
    uint8_t *buf = bf_malloc(n + 1);
    if (fread(buf, 1, n, fp) != n) {
        bf_set_error("read error on '%s'", path);
        free(buf);
        fclose(fp);
        return -1;
    }
    fclose(fp);
    buf[n] = 0;
    *data = buf;
    *size = n;
    return 0;
}

int bf_write_file_atomic(const char *path, const void *data, size_t size) {
    char tmp[4096];
    if ((size_t)snprintf(tmp, sizeof tmp, "%s.tmp.%d", path, (int)getpid()) >= sizeof tmp) {
        bf_set_error("path too long: '%s'", path);
        return -1;
    }
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) { bf_set_error("cannot create '%s': %s", tmp, strerror(errno)); return -1; }
    const uint8_t *p = data;
    size_t left = size;
    while (left > 0) {
        ssize_t k = write(fd, p, left);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) {
            bf_set_error("write to '%s' failed: %s", tmp, strerror(errno));
            close(fd);
            unlink(tmp);
            return -1;
        }
        p += k;
        left -= (size_t)k;
    }
    if (fsync(fd) != 0 || close(fd) != 0) {
        bf_set_error("cannot flush '%s': %s", tmp, strerror(errno));
        unlink(tmp);
        return -1;
    }
    if (rename(tmp, path) != 0) {
        bf_set_error("cannot rename '%s' to '%s': %s", tmp, path, strerror(errno));
        unlink(tmp);
        return -1;
    }
    return bf_fsync_parent_dir(path);
}

int bf_fsync_parent_dir(const char *path) {
    char dir[4096];
    const char *slash = strrchr(path, '/');
    size_t n = slash ? (size_t)(slash - path) : 0;
    if (n >= sizeof dir) { bf_set_error("path too long: '%s'", path); return -1; }
    if (slash && n == 0) n = 1;                     /* a file in "/" */
    memcpy(dir, slash ? path : ".", slash ? n : 1);
    dir[slash ? n : 1] = 0;
    int fd = open(dir, O_RDONLY | O_DIRECTORY);
    if (fd < 0) { bf_set_error("cannot open the folder '%s': %s", dir, strerror(errno)); return -1; }
    /* some file systems cannot sync a folder (EINVAL): nothing more can be done there */
    int rc = fsync(fd) != 0 && errno != EINVAL && errno != ENOTSUP ? -1 : 0;
    if (rc) bf_set_error("cannot flush the folder '%s': %s", dir, strerror(errno));
    close(fd);
    return rc;
}

/* ---- folder locks */
static long lock_holder(int fd) {
    char buf[32] = {0};
    ssize_t k = pread(fd, buf, sizeof buf - 1, 0);
    return k > 0 ? strtol(buf, NULL, 10) : 0;
}

int bf_dir_lock_take(bf_dir_lock *l, const char *dir) {
    char path[4096];
    l->fd = -1;
    if ((size_t)snprintf(path, sizeof path, "%s/.lock", dir) >= sizeof path) {
        bf_set_error("path too long: '%s'", dir);
        return -1;
    }
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) { bf_set_error("cannot open the lock file '%s': %s", path, strerror(errno)); return -1; }
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        int e = errno;
        long pid = lock_holder(fd);
        close(fd);
        if (e == EWOULDBLOCK)
            bf_set_error("'%s' is in use by another process (PID %ld holds %s); wait for it to "
                         "finish or stop it", dir, pid, path);
        else
            bf_set_error("cannot lock '%s': %s", path, strerror(e));
        return -1;
    }
    char pid[32];
    int len = snprintf(pid, sizeof pid, "%ld\n", (long)getpid());
    if (ftruncate(fd, 0) != 0 || pwrite(fd, pid, (size_t)len, 0) != len) {
        bf_set_error("cannot write the lock file '%s': %s", path, strerror(errno));
        close(fd);
        return -1;
    }
    l->fd = fd;
    return 0;
}

void bf_dir_unlock(bf_dir_lock *l) {
    if (l->fd < 0) return;
    if (ftruncate(l->fd, 0) != 0) { /* the PID stays: harmless, the lock is what counts */ }
    close(l->fd);   /* releases the flock */
    l->fd = -1;
}

/* The PID of NAME.tmp.PID, or 0 when name is not of that form. */
static long tmp_owner(const char *name) {
    const char *t = strstr(name, ".tmp.");
    while (t && strstr(t + 1, ".tmp.")) t = strstr(t + 1, ".tmp.");
    if (!t || t == name || !t[5]) return 0;
    char *end;
    long pid = strtol(t + 5, &end, 10);
    return *end || pid <= 0 ? 0 : pid;
}

int bf_remove_stale_tmp(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return 0;
    int removed = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        long pid = tmp_owner(e->d_name);
        if (pid <= 0 || pid > INT32_MAX || kill((pid_t)pid, 0) == 0 || errno != ESRCH) continue;
        char path[4096];
        if ((size_t)snprintf(path, sizeof path, "%s/%s", dir, e->d_name) < sizeof path && unlink(path) == 0)
            removed++;
    }
    closedir(d);
    return removed;
}

/* ------------------------------------------------------------------ batch shards */
bf_shard_plan bf_shard_plan_local(int n, int threads) {
    int S = threads < n ? threads : n;
    if (S < 1) S = 1;
    return (bf_shard_plan){n, S, 0, S, 0, 1};
}

/* One sequence of float operations for every split of the shards over processes, so that the
 * sum is the same bits whichever process adds which shard (dist.c passes the partial on). */
void bf_shard_grads_accumulate(float *out, const float *in, float *const *g, const bf_shard_plan *p,
                               size_t i0, size_t i1, int shard_means) {
    int L = p->s1 - p->s0;
    float *w = bf_malloc(sizeof(float) * (size_t)L);
    for (int k = 0; k < L; k++) {   /* a shard's share of the batch */
        int s = p->s0 + k;
        w[k] = (float)(bf_shard_begin(p->n, p->S, s + 1) - bf_shard_begin(p->n, p->S, s)) / (float)p->n;
    }
#pragma omp parallel for schedule(static)
    for (size_t i = i0; i < i1; i++) {
        float acc = in ? in[i - i0] : 0.0f;
        for (int k = 0; k < L; k++) acc += shard_means ? g[k][i] * w[k] : g[k][i];
        out[i] = acc;
    }
    free(w);
}

/* ------------------------------------------------------------------ file digests */
int bf_sha256_file(char hex[65], const char *path) {
    uint8_t *data;
    size_t size;
    if (bf_read_file(path, &data, &size, (size_t)1 << 34)) return -1;
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    int ok = EVP_Digest(data, size, md, &len, EVP_sha256(), NULL);
    free(data);
    if (!ok || len != 32) {
        bf_set_error("%s: SHA-256 failed", path);
        return -1;
    }
    for (int i = 0; i < 32; i++) snprintf(hex + 2 * i, 3, "%02x", md[i]);
    return 0;
}
