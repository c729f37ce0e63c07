/* A small table-driven test harness: each TEST registers itself before main runs. */
#ifndef BF_TEST_H
#define BF_TEST_H

#include "../src/core.h"
#include <math.h>
#include <stdio.h>
#include <string.h>

typedef void (*bf_test_fn)(void);
void bf_test_register(const char *name, const char *file, bf_test_fn fn);
extern int bf_test_fail_count;      /* failures inside the current test */

#define TEST(name)                                                                  \
    static void name(void);                                                         \
    __attribute__((constructor)) static void register_##name(void) {                \
        bf_test_register(#name, __FILE__, name);                                    \
    }                                                                               \
    static void name(void)

#define CHECK(cond)                                                                 \
    do {                                                                            \
        if (!(cond)) {                                                              \
            fprintf(stderr, "    %s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
            bf_test_fail_count++;                                                   \
        }                                                                           \
    } while (0)

/* |a - b| <= tol, both finite */
#define CHECK_NEAR(a, b, tol)                                                       \
    do {                                                                            \
        double a_ = (double)(a), b_ = (double)(b), t_ = (double)(tol);              \
        if (!(isfinite(a_) && isfinite(b_) && fabs(a_ - b_) <= t_)) {               \
            fprintf(stderr, "    %s:%d: CHECK_NEAR failed: %s = %.9g, %s = %.9g, tol %.3g\n", \
                    __FILE__, __LINE__, #a, a_, #b, b_, t_);                        \
            bf_test_fail_count++;                                                   \
        }                                                                           \
    } while (0)

#define NUM(a) ((int)(sizeof(a) / sizeof((a)[0])))

/* expr must fail (return -1) with an error message containing needle. */
#define CHECK_ERR(expr, needle)                                                         \
    do {                                                                                \
        bf_set_error("%s", "");                                                         \
        int rc_ = (expr);                                                               \
        if (rc_ != -1 || !strstr(bf_last_error(), needle)) {                            \
            fprintf(stderr, "    %s:%d: expected failure with '%s': rc %d, '%s'\n",       \
                    __FILE__, __LINE__, needle, rc_, bf_last_error());                  \
            bf_test_fail_count++;                                                       \
        }                                                                               \
    } while (0)

/* Marks the running test as skipped, with the reason (printf-style); the test should return
 * right after. A skipped test is listed as SKIP and counted apart from passed and failed
 * ones. Tests can also be skipped by name: BF_TEST_SKIP="name,name" (e.g. slow tests in a
 * sanitized build; see .ci/run). */
void bf_test_skip(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Path of a file under the shared fixtures folder (BF_SHARED, default ../shared). */
const char *bf_test_shared(const char *rel);
/* A fresh scratch directory for this test run (removed at exit). */
const char *bf_test_tmpdir(void);
/* Runs a shell command (printf-style), its stdout and stderr together captured into out (n
 * bytes, may be NULL); returns the exit status, or 128 + the signal that ended it. A command
 * starting with "./biflow " runs the CLI named by BF_CLI instead, when that is set. A
 * sanitizer report in the output fails the calling test. */
int bf_test_sh(char *out, size_t n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

#endif
