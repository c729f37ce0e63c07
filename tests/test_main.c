/* Test runner: runs every registered test (or those whose name contains argv[1]) and closes
 * with the line "N passed, N failed" (", N skipped" added when tests were skipped); exits
 * non-zero on any failure. Each test starts with the precision of the environment
 * (BF_PRECISION), or fp32 for TEST_FP32 tests. */

#include "test.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

typedef struct { const char *name, *file; bf_test_fn fn; int order, fp32; } test_entry;
static test_entry tests[512];
static int n_tests;
int bf_test_fail_count;
static char tmpdir[256], skip_reason[256];
static int skipped_now;

void bf_test_register(const char *name, const char *file, bf_test_fn fn, int fp32) {
    BF_ASSERT(n_tests < (int)(sizeof tests / sizeof tests[0]));
    tests[n_tests] = (test_entry){name, file, fn, n_tests, fp32};
    n_tests++;
}

void bf_test_skip(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(skip_reason, sizeof skip_reason, fmt, ap);
    va_end(ap);
    skipped_now = 1;
}

/* BF_SHARED if set, else ../shared (where CI lays it), else the copy under tests/fixtures. */
const char *bf_test_shared(const char *rel) {
    static _Thread_local char buf[4][1024];
    static _Thread_local int k;
    const char *root = getenv("BF_SHARED");
    char *out = buf[k++ & 3];
    snprintf(out, 1024, "%s/%s", root ? root : "../shared", rel);
    if (!root && access(out, R_OK) != 0 && !strncmp(rel, "fixtures/", 9))
        snprintf(out, 1024, "tests/%s", rel);
    return out;
}

const char *bf_test_tmpdir(void) {
    if (!tmpdir[0]) {
        snprintf(tmpdir, sizeof tmpdir, "/tmp/biflow-test-XXXXXX");
        BF_ASSERT(mkdtemp(tmpdir) != NULL);
    }
    return tmpdir;
}

int bf_test_sh(char *out, size_t n, const char *fmt, ...) {
    char cmd[4096], log[512];
    va_list ap;
    va_start(ap, fmt);
    int len = vsnprintf(cmd, sizeof cmd - 600, fmt, ap);
    va_end(ap);
    BF_ASSERT(len > 0 && (size_t)len < sizeof cmd - 600);
    snprintf(log, sizeof log, "%s/sh-output.txt", bf_test_tmpdir());
    snprintf(cmd + len, sizeof cmd - (size_t)len, " >'%s' 2>&1", log);
    int st = system(cmd);
    int rc = st == -1 ? -1 : WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    if (out && n) {
        FILE *fp = fopen(log, "r");
        size_t k = fp ? fread(out, 1, n - 1, fp) : 0;
        out[k] = 0;
        if (fp) fclose(fp);
    }
    return rc;
}

static int by_file_then_order(const void *a, const void *b) {
    const test_entry *x = a, *y = b;
    int c = strcmp(x->file, y->file);
    return c ? c : x->order - y->order;
}

int main(int argc, char **argv) {
    bf_log_level = 0;
    qsort(tests, (size_t)n_tests, sizeof tests[0], by_file_then_order);
    bf_precision start = bf_get_precision();
    const char *env = getenv("BF_PRECISION");
    char *env_precision = env ? bf_strdup(env) : NULL;
    if (start != BF_PRECISION_FP32)
        printf("matrix products of F and G in %s (BF_PRECISION); TEST_FP32 tests force fp32\n",
               bf_precision_name(start));
    int passed = 0, failed = 0, skipped = 0;
    for (int i = 0; i < n_tests; i++) {
        if (argc > 1 && !strstr(tests[i].name, argv[1])) continue;
        bf_test_fail_count = 0;
        skipped_now = 0;
        bf_set_precision(tests[i].fp32 ? BF_PRECISION_FP32 : start);
        if (tests[i].fp32) setenv("BF_PRECISION", "fp32", 1);
        double t0 = bf_time();
        tests[i].fn();
        double dt = bf_time() - t0;
        if (env_precision) setenv("BF_PRECISION", env_precision, 1);
        else unsetenv("BF_PRECISION");
        if (bf_test_fail_count) {
            failed++;
            printf("FAIL %-44s %7.2fs  (%d checks failed)\n", tests[i].name, dt, bf_test_fail_count);
        } else if (skipped_now) {
            skipped++;
            printf("skip %-44s %7.2fs  (%s)\n", tests[i].name, dt, skip_reason);
        } else {
            passed++;
            printf("ok   %-44s %7.2fs\n", tests[i].name, dt);
        }
        fflush(stdout);
    }
    free(env_precision);
    if (tmpdir[0]) {
        char cmd[300];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
        if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmpdir);
    }
    if (skipped) printf("%d passed, %d failed, %d skipped\n", passed, failed, skipped);
    else printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
