/* A small table-driven test harness: each TEST registers itself before main runs. */
#ifndef BF_TEST_H
#define BF_TEST_H

#include "core.h"
#include <math.h>
#include <stdio.h>
#include <string.h>

typedef void (*bf_test_fn)(void);
/* fp32: the test runs with the matrix products in fp32 whatever BF_PRECISION says (the
 * runner sets the precision, and BF_PRECISION for the commands the test starts, and restores
 * both afterwards); other tests run with the precision of the environment. */
void bf_test_register(const char *name, const char *file, bf_test_fn fn, int fp32);
extern int bf_test_fail_count;      /* failures inside the current test */

#define TEST_REGISTER_(name, fp32)                                                  \
    static void name(void);                                                         \
    __attribute__((constructor)) static void register_##name(void) {                \
        bf_test_register(#name, __FILE__, name, fp32);                              \
    }                                                                               \
    static void name(void)
#define TEST(name) TEST_REGISTER_(name, 0)
/* A test against fp32 references with tolerances that bf16 products would not meet. */
#define TEST_FP32(name) TEST_REGISTER_(name, 1)

/* Ends the current test as skipped: printed with the reason and counted, not a failure. Tests
 * can also be skipped by name: BF_TEST_SKIP="name,name" (e.g. slow tests in a sanitized build). */
void bf_test_skip(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
#define SKIP(...)                                                                   \
    do {                                                                            \
        bf_test_skip(__VA_ARGS__);                                                  \
        return;                                                                     \
    } while (0)

/* 1 when Fashion-MNIST can be loaded (the Debian package dataset-fashion-mnist, or the folder
 * $BF_FASHION_MNIST_DIR names). A test that needs it starts with REQUIRE_FASHION_MNIST(): where
 * the data are missing it is skipped and counted as skipped, never passed. */
int bf_test_have_fashion_mnist(void);
#define REQUIRE_FASHION_MNIST()                                                     \
    do {                                                                            \
        if (!bf_test_have_fashion_mnist())                                          \
            SKIP("Fashion-MNIST is not installed (Debian package dataset-fashion-mnist)"); \
    } while (0)

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


/* Path of a file under the shared fixtures folder (BF_SHARED, default ../shared). */
const char *bf_test_shared(const char *rel);
/* A fresh scratch directory for this test run (removed at exit). */
const char *bf_test_tmpdir(void);
/* name in that directory (one of 8 rotating buffers: valid for the next 7 calls). */
const char *bf_test_tmp(const char *name);
/* Writes n bytes to path, a new file (an old one is removed first: truncating a file with data
 * makes ext4 flush it on close (auto_da_alloc), which costs a millisecond per write in the
 * fuzz loops). */
void bf_test_write_file(const char *path, const void *data, size_t n);
/* Runs a shell command (printf-style), its stdout and stderr together captured into out (n
 * bytes, may be NULL); returns the exit status, or 128 + the signal that ended it. A command
 * starting with "./biflow " runs the CLI named by BF_CLI instead, when that is set. A
 * sanitizer report in the output fails the calling test. */
int bf_test_sh(char *out, size_t n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

#endif
