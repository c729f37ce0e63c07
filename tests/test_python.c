/* The Python binding's tests (python/tests: python3 -m unittest discover -s python/tests -t
 * python) and the install check (tests/install_check.sh: make install into a temporary
 * prefix, a program built with pkg-config, the installed CLI and Python package, make
 * uninstall), as tests of the suite so that `make test` runs them and counts them. Without a
 * python3 that has numpy the binding's tests are skipped, and counted as skipped, with the
 * reason; BF_BINDING_SKIP skips both (the sanitized suite sets it: they use the normal build).
 * Both run in fp32 (the round trip's tolerance is fp32's; binding and CLI agree in either). */
#include "test.h"

#include <unistd.h>

/* Prints the last lines of a command's output (out holds its first bytes only). */
static void print_log_tail(const char *log) {
    char cmd[600], out[8192];
    snprintf(cmd, sizeof cmd, "tail -n 40 '%s'", log);
    if (bf_test_sh(out, sizeof out, "%s", cmd) == 0) fprintf(stderr, "%s", out);
}

static int skipped_by_env(void) {
    const char *why = getenv("BF_BINDING_SKIP");
    if (why && *why) {
        bf_test_skip("%s", why);
        return 1;
    }
    return 0;
}

/* The first of $BF_PYTHON, python3, /usr/bin/python3 that imports numpy, into py; -1: none. */
static int find_python(char *py, size_t n) {
    char out[512];
    int rc = bf_test_sh(out, sizeof out,
                        "for p in \"$BF_PYTHON\" python3 /usr/bin/python3; do "
                        "[ -n \"$p\" ] && \"$p\" -c 'import numpy' 2>/dev/null && "
                        "{ command -v \"$p\"; exit 0; }; done; exit 1");
    if (rc != 0) return -1;
    out[strcspn(out, "\n")] = 0;
    snprintf(py, n, "%s", out);
    return 0;
}

TEST_FP32(python_binding_unittests) {
    if (skipped_by_env()) return;
    char py[512], log[512], out[256];
    if (find_python(py, sizeof py)) {
        if (bf_test_sh(out, sizeof out, "command -v python3 || command -v /usr/bin/python3"))
            SKIP("no python3: the Python binding's tests need python3 and numpy (Debian: python3-numpy)");
        SKIP("python3 has no numpy: the Python binding's tests need it (Debian: python3-numpy)");
    }
    CHECK(access("build/libbiflow.so", R_OK) == 0);
    snprintf(log, sizeof log, "%s/python-unittest.log", bf_test_tmpdir());
    int rc = bf_test_sh(out, sizeof out, "'%s' -m unittest discover -s python/tests -t python >'%s' 2>&1", py, log);
    char summary[256];
    int ok = bf_test_sh(summary, sizeof summary, "grep -E '^(Ran |OK|FAILED)' '%s' | tr '\\n' ' '",
                        log) == 0;
    printf("     %s -m unittest discover (python/tests): %s\n", py, ok ? summary : "no summary");
    if (rc != 0) print_log_tail(log);
    CHECK(rc == 0);
    CHECK(ok && strstr(summary, "Ran ") && !strstr(summary, "Ran 0 tests"));
}

TEST_FP32(install_with_pkg_config) {
    if (skipped_by_env()) return;
    char out[4096];
    int rc = bf_test_sh(out, sizeof out, "tests/install_check.sh");
    CHECK(rc == 0);
    CHECK(strstr(out, "make uninstall removed every file") != NULL);
    for (char *line = strtok(out, "\n"); line; line = strtok(NULL, "\n"))
        printf("     %s\n", line);
}
