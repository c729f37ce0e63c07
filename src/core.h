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

#endif
