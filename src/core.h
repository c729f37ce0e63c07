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

void *bf_malloc(size_t n);                 /* aborts with a message when out of memory */
void *bf_calloc(size_t n, size_t size);
void *bf_realloc(void *p, size_t n);
char *bf_strdup(const char *s);

double bf_time(void);                      /* seconds, monotonic */

/* Reads a whole file (refuses files over max_size); 0 ok, -1 error with message. */
int bf_read_file(const char *path, uint8_t **data, size_t *size, size_t max_size);
/* Atomic write: PATH.tmp.PID, fsync, rename. */
int bf_write_file_atomic(const char *path, const void *data, size_t size);

/* Logging to stderr, with a level set by BF_LOG or bf_log_level. */
extern int bf_log_level;                   /* 0 quiet, 1 info (default), 2 debug */
void bf_info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
