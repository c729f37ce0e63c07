/* Test runner: runs every registered test (or those whose name contains argv[1]) and closes
 * with the line "N passed, N failed" (", N skipped" added when tests were skipped: by
 * bf_test_skip, or by name through BF_TEST_SKIP); exits non-zero on any failure. Each test
 * starts with the precision of the environment (BF_PRECISION), or fp32 for TEST_FP32 tests. */

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
static char tmpdir[256];
static char skip_reason[512];   /* set by bf_test_skip in the running test */

void bf_test_skip(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(skip_reason, sizeof skip_reason, fmt, ap);
    va_end(ap);
    if (!skip_reason[0]) snprintf(skip_reason, sizeof skip_reason, "skipped");
}

/* name is listed in the comma-separated list */
static int listed(const char *list, const char *name) {
    size_t n = strlen(name);
    for (const char *p = list; p && *p;) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (len == n && !strncmp(p, name, n)) return 1;
        p = end ? end + 1 : NULL;
    }
    return 0;
}

void bf_test_register(const char *name, const char *file, bf_test_fn fn, int fp32) {
    BF_ASSERT(n_tests < (int)(sizeof tests / sizeof tests[0]));
    tests[n_tests] = (test_entry){name, file, fn, n_tests, fp32};
    n_tests++;
}

/* BF_SHARED if set, else ../shared (where CI lays it), else the copy under tests/fixtures. */
int bf_test_have_fashion_mnist(void) {
    bf_dataset d;   /* the test split: the smaller one */
    if (bf_dataset_load(&d, "fashion-mnist", "test")) return 0;
    bf_dataset_free(&d);
    return 1;
}

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

const char *bf_test_tmp(const char *name) {
    static char buf[8][1024];
    static int k;
    char *out = buf[k++ & 7];
    snprintf(out, 1024, "%s/%s", bf_test_tmpdir(), name);
    return out;
}

void bf_test_write_file(const char *path, const void *data, size_t n) {
    remove(path);
    FILE *fp = fopen(path, "wb");
    BF_ASSERT(fp != NULL);
    BF_ASSERT(n == 0 || fwrite(data, 1, n, fp) == n);
    BF_ASSERT(fclose(fp) == 0);
}

/* A sanitizer report in the output of a command a test ran (a sanitized CLI: make SAN=1 test)
 * fails the test, whatever exit status the test expects. UBSan writes its reports there even
 * when told to log elsewhere (GCC 12, with ASan). */
static void sanitizer_reports(const char *log, const char *cmd) {
    static const char *const marks[] = {"runtime error:", "ERROR: AddressSanitizer",
                                        "ERROR: LeakSanitizer", "SUMMARY: UndefinedBehaviorSanitizer"};
    uint8_t *text;
    size_t size;
    if (bf_read_file(log, &text, &size, (size_t)1 << 28)) return;
    char *t = bf_malloc(size + 1);
    memcpy(t, text, size);
    t[size] = 0;
    free(text);
    for (size_t i = 0; i < sizeof marks / sizeof marks[0]; i++) {
        const char *at = strstr(t, marks[i]);
        if (!at) continue;
        fprintf(stderr, "    sanitizer report from `%.300s`:\n%.2000s\n", cmd,
                at - t > 200 ? at - 200 : t);
        bf_test_fail_count++;
        break;
    }
    free(t);
}

/* Length of the environment assignments (NAME=value followed by a space) cmd starts with. */
static size_t env_prefix_len(const char *cmd) {
    size_t at = 0;
    for (;;) {
        size_t k = at;
        while (cmd[k] == '_' || (cmd[k] >= 'A' && cmd[k] <= 'Z') || (k > at && cmd[k] >= '0' && cmd[k] <= '9')) k++;
        if (k == at || cmd[k] != '=') return at;
        while (cmd[k] && cmd[k] != ' ') k++;
        if (cmd[k] != ' ') return at;
        at = k + 1;
    }
}

int bf_test_sh(char *out, size_t n, const char *fmt, ...) {
    char cmd[4096], log[512];
    va_list ap;
    va_start(ap, fmt);
    int len = vsnprintf(cmd, sizeof cmd - 600, fmt, ap);
    va_end(ap);
    BF_ASSERT(len > 0 && (size_t)len < sizeof cmd - 600);
    const char *cli = getenv("BF_CLI");   /* another build of the CLI (make SAN=1 test) */
    size_t at = env_prefix_len(cmd);      /* "BF_PRECISION=bf16 ./biflow ..." runs BF_CLI too */
    if (cli && *cli && !strncmp(cmd + at, "./biflow ", 9)) {
        char rest[4096];
        snprintf(rest, sizeof rest, "%s", cmd + at + 8);
        len = snprintf(cmd + at, sizeof cmd - 600 - at, "%s%s", cli, rest);
        BF_ASSERT(len > 0 && (size_t)len < sizeof cmd - 600 - at);
    }
    snprintf(log, sizeof log, "%s/sh-output.txt", bf_test_tmpdir());
    /* the whole command's output, not only its last part's (a ; b, a && b) */
    char whole[sizeof cmd + sizeof log + 32];
    snprintf(whole, sizeof whole, "( %s ) >'%s' 2>&1", cmd, log);
    int st = system(whole);
    int rc = st == -1 ? -1 : WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    sanitizer_reports(log, cmd);
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
    const char *skip_list = getenv("BF_TEST_SKIP");
    bf_precision start = bf_get_precision();
    const char *env = getenv("BF_PRECISION");
    char *env_precision = env ? bf_strdup(env) : NULL;
    if (start != BF_PRECISION_FP32)
        printf("matrix products of F and G in %s (BF_PRECISION); TEST_FP32 tests force fp32\n",
               bf_precision_name(start));
    int passed = 0, failed = 0, skipped = 0;
    for (int i = 0; i < n_tests; i++) {
        if (argc > 1 && !strstr(tests[i].name, argv[1])) continue;
        if (listed(skip_list, tests[i].name)) {
            skipped++;
            printf("SKIP %-44s          (named in BF_TEST_SKIP)\n", tests[i].name);
            fflush(stdout);
            continue;
        }
        bf_test_fail_count = 0;
        skip_reason[0] = 0;
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
        } else if (skip_reason[0]) {
            skipped++;
            printf("SKIP %-44s %7.2fs  (%s)\n", tests[i].name, dt, skip_reason);
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
    fflush(stdout);   /* before LeakSanitizer's check at exit, which ends without flushing */
    return failed ? 1 : 0;
}
