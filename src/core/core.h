/* Internal core: asserts, allocation, timing, atomic files. Not part of the public API. */
#ifndef BF_CORE_H
#define BF_CORE_H

#include "biflow.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Always on, also in release builds: a broken invariant must stop the program. */
#define BF_ASSERT(cond)                                                              \
    do {                                                                             \
        if (!(cond)) bf_assert_fail(__FILE__, __LINE__, #cond);                      \
    } while (0)

_Noreturn void bf_assert_fail(const char *file, int line, const char *expr);

/* bf_malloc, bf_calloc, bf_realloc, bf_time: public (biflow.h) */
char *bf_strdup(const char *s);
/* This thread's scratch buffer of the given kind, at least bytes long, 64-byte aligned, its
 * contents undefined; kept between calls (hot loops take no page faults) and freed when the
 * thread ends. A larger request replaces the buffer, so a caller holds one per kind at a time. */
enum { BF_SCRATCH_GEMM_F32, BF_SCRATCH_GEMM_BF16, BF_SCRATCH_PERCEPTUAL, BF_SCRATCH_KINDS };
void *bf_thread_scratch(int kind, size_t bytes);
/* Checked allocation for sizes a user or a file chooses: NULL with a message (naming what,
 * and the size) instead of aborting. n * size overflowing is refused as well. */
void *bf_try_malloc(size_t n, const char *what);
void *bf_try_calloc(size_t n, size_t size, const char *what);
/* Product of k sizes, saturating at SIZE_MAX (so an overflowing size can be refused). */
size_t bf_size_prod(const size_t *f, int k);
#define BF_SIZE_PROD(...) \
    bf_size_prod((const size_t[]){__VA_ARGS__}, (int)(sizeof((size_t[]){__VA_ARGS__}) / sizeof(size_t)))
/* a + b, saturating at SIZE_MAX */
size_t bf_size_add(size_t a, size_t b);
/* A model's activations in one zeroed block: each part's pointer is set to its slice of count
 * floats (slices aligned to 16 floats; NULL where count is 0). The block (to free), or NULL with
 * a message naming what. */
typedef struct { float **p; size_t count; } bf_arena_part;
float *bf_arena_alloc(const bf_arena_part *parts, size_t n, const char *what);
/* A model's reusable activation sets (count of them, each for Bn images), made again larger
 * when more or larger ones are asked for. kind: the size of a set and how to make (aborting
 * without memory) and free one. */
typedef struct {
    size_t size;
    void (*init)(void *set, const void *model, int Bn);
    void (*release)(void *set);
} bf_acts_kind;
typedef struct { void *sets; int count, Bn; } bf_acts_cache;
void *bf_acts_cache_get(bf_acts_cache *c, const bf_acts_kind *kind, const void *model, int count,
                        int Bn);
void bf_acts_cache_free(bf_acts_cache *c, const bf_acts_kind *kind);
/* Prints the current error message and aborts: for the callers that cannot fail. */
_Noreturn void bf_die(void);

/* Limits every model configuration is checked against before anything is allocated. */
#define BF_MAX_PARAMS ((size_t)1 << 31)    /* parameters (floats) of one model: 8 GiB */
#define BF_MAX_TOKENS 4096                 /* tokens per image */
#define BF_MAX_TOKEN_DIM 65536             /* values per token (C P^2) */
#define BF_MAX_BATCH (1 << 20)             /* images per training step */

/* Reads a whole file (refuses files over max_size); 0 ok, -1 error with message. */
int bf_read_file(const char *path, uint8_t **data, size_t *size, size_t max_size);
/* Atomic write: PATH.tmp.PID, fsync, rename, then fsync of the folder so that the rename
 * itself survives a power loss. */
int bf_write_file_atomic(const char *path, const void *data, size_t size);
/* fsync of the folder holding path (a file name without a folder: "."). */
int bf_fsync_parent_dir(const char *path);

/* An exclusive lock on a folder: flock(LOCK_EX | LOCK_NB) on DIR/.lock, which holds the
 * owner's PID. Refused (-1) with a message naming the holder's PID while another process (or
 * another open of the file) holds it. Released by bf_dir_unlock or when the process ends. */
typedef struct { int fd; } bf_dir_lock;
int bf_dir_lock_take(bf_dir_lock *l, const char *dir);
void bf_dir_unlock(bf_dir_lock *l);
/* Removes NAME.tmp.PID files in dir whose process PID no longer exists (what a killed writer
 * left behind); returns how many were removed. */
int bf_remove_stale_tmp(const char *dir);

/* Logging to stderr, with a level set by BF_LOG or bf_log_level. */
extern int bf_log_level;                   /* 0 quiet, 1 info (default), 2 debug */
void bf_info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* ------------------------------------------------------------------ tensor tables */
/* One named tensor of a model's flat parameter block (F, G and the feature networks share
 * this table type: checkpoints, weight-decay masks and optimiser state follow it). */
typedef struct {
    char name[112];
    int ndim;
    int64_t shape[4];
    size_t offset, numel;
    int no_decay;             /* biases, norms, embeddings: no weight decay */
} bf_param_info;
/* How a tensor starts: zeros, ones, N(0, scale^2) or U(-scale, scale). */
typedef enum { BF_INIT_ZERO, BF_INIT_ONE, BF_INIT_NORMAL, BF_INIT_UNIFORM } bf_init_kind;
/* Fills each tensor of info (n) in params as rule(info, i, &scale) says for tensor i, in order,
 * from one stream seeded with seed (only the random kinds draw from it). */
void bf_init_params(float *params, const bf_param_info *info, int n, uint64_t seed,
                    bf_init_kind (*rule)(const bf_param_info *info, int i, float *scale));

/* ------------------------------------------------------------------ batch shards (core.c) */
/* Shard s of `used` covers rows [bf_shard_begin(n, used, s), bf_shard_begin(n, used, s + 1)). */
static inline int bf_shard_begin(int n, int used, int s) { return (int)((long)n * s / used); }
/* A step's batch of n rows in S shards (S <= n): the unit of the gradient's arithmetic, which
 * depends on n and S alone, never on how the shards are spread over processes and threads.
 * This process computes shards [s0, s1); rank r of the nranks processes holds shards
 * [bf_shard_begin(S, nranks, r), bf_shard_begin(S, nranks, r + 1)) (bf_shard_plan_make,
 * dist.h). */
typedef struct { int n, S, s0, s1, rank, nranks; } bf_shard_plan;
/* One process holding all min(threads, n) shards (threads >= 1). */
bf_shard_plan bf_shard_plan_local(int n, int threads);
/* The rows of this process's shards: [bf_shard_row0, bf_shard_row1). */
static inline int bf_shard_row0(const bf_shard_plan *p) { return bf_shard_begin(p->n, p->S, p->s0); }
static inline int bf_shard_row1(const bf_shard_plan *p) { return bf_shard_begin(p->n, p->S, p->s1); }
/* out[i] for i in [i0, i1) <- (in[i - i0], or 0 when in is NULL) + the gradients g[k][i] of
 * this process's shards k = 0 .. s1 - s0 - 1, added one shard after the other in shard order:
 * each weighted by its share of the batch when shard_means (each holds the mean over its rows),
 * as they are otherwise (each holds its part of the batch mean). out may be g[0]. */
void bf_shard_grads_accumulate(float *out, const float *in, float *const *g, const bf_shard_plan *p,
                               size_t i0, size_t i1, int shard_means);

/* ------------------------------------------------------------------ datasets (dataset.c) */
/* Training batch: images (B, C, H, W) of examples idx (B), noised (uniform dequantisation
 * or Gaussian sigma), labels y (B) with probability drop of -1 (unconditional). */
void bf_make_batch(float *img, int *y, const bf_dataset *ds, const int *idx, int B,
                   bf_noise noise, float sigma, float drop, bf_rng *rng);
/* The same batch's rows [r0, r1) only (the random stream advances as for the whole batch, so
 * a row gets the same noise and label whichever process makes it); other rows are untouched
 * and their images not read. */
void bf_make_batch_rows(float *img, int *y, const bf_dataset *ds, const int *idx, int B, int r0,
                        int r1, bf_noise noise, float sigma, float drop, bf_rng *rng);
/* 0 when ds holds C x size x size images with at most num_classes classes (num_classes 0:
 * an unconditional model takes any), else -1 with a message naming both shapes. */
int bf_dataset_check_shape(const bf_dataset *ds, int C, int size, int num_classes);

/* ------------------------------------------------------------------ image sets (image_set.c) */
/* s ends with suffix, ignoring case (and is longer than it). */
int bf_ends_with(const char *s, const char *suffix);
/* path names a .png, .jpg or .jpeg file (by its ending). */
int bf_is_image_file(const char *path);
/* The pixel mapping of every reader: p in [0, 255] to [-1, 1]. */
static inline float bf_pixel_to_unit(uint8_t p) { return (float)p / 127.5f - 1.0f; }

#endif
