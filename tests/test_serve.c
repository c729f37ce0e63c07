/* biflow serve, end to end (tests/serve_e2e.py, Python's standard library only): the API's
 * answers to good, concurrent and bad requests, its rate limit and its clean stop; then the
 * page in headless Chromium, driven over the DevTools protocol (slider, mask painting, class
 * editing, interpolation, uploads). Each test is skipped, and counted as skipped, when python3
 * or Chromium is missing. */
#include "test.h"

#include <stdlib.h>

/* The servers compute with one thread unless BF_SERVE_THREADS says otherwise: the tests check
 * behaviour, not speed, and on a machine busy with other work a team of OpenMP threads can be
 * many times slower than one thread (each waits at every barrier for the others to be
 * scheduled). */
static const char *threads(void) {
    const char *t = getenv("BF_SERVE_THREADS");
    return t && *t && strspn(t, "0123456789") == strlen(t) && strlen(t) < 5 ? t : "1";
}

/* The CLI the suite tests: $BF_CLI (the sanitized build) or ./biflow. */
static const char *cli(void) {
    const char *c = getenv("BF_CLI");
    return c && *c ? c : "./biflow";
}

static int have_python(void) { return system("command -v python3 >/dev/null 2>&1") == 0; }

/* The last lines of a long output, for the message of a failed test. */
static void print_tail(const char *out) {
    size_t n = strlen(out);
    fprintf(stderr, "%s\n", n > 6000 ? out + n - 6000 : out);
}

TEST(serve_api_answers_and_refuses) {
    REQUIRE_FASHION_MNIST();   /* the test images the API edits */
    if (!have_python()) SKIP("python3 is not installed");
    static char out[1 << 16];
    int rc = bf_test_sh(out, sizeof out, "python3 tests/serve_e2e.py --api --cli %s --threads %s", cli(),
                        threads());
    if (rc != 0) print_tail(out);
    CHECK(rc == 0);
    CHECK(strstr(out, "api: 0 checks failed") != NULL);
    CHECK(strstr(out, "stopped after") != NULL);   /* the server's own closing line */
}

TEST(serve_page_in_headless_chromium) {
    REQUIRE_FASHION_MNIST();
    if (!have_python()) SKIP("python3 is not installed");
    static char out[1 << 16];
    int rc = bf_test_sh(out, sizeof out, "python3 tests/serve_e2e.py --browser --cli %s --threads %s",
                        cli(), threads());
    if (rc == 77) {
        const char *why = strstr(out, "SKIP: ") ? strstr(out, "SKIP: ") + 6 : "no Chromium";
        SKIP("%.*s", (int)strcspn(why, "\n"), why);
    }
    if (rc != 0) print_tail(out);
    CHECK(rc == 0);
    CHECK(strstr(out, "browser: 0 checks failed") != NULL);
}

/* ./biflow serve ARGS ends with status want_rc and a message containing needle. */
static void check_serve_refuses(const char *args, int want_rc, const char *needle) {
    char out[4096];
    int rc = bf_test_sh(out, sizeof out, "./biflow serve --port 0 %s", args);
    if (rc != want_rc || !strstr(out, needle))
        fprintf(stderr, "    biflow serve %s: rc %d, '%s'\n", args, rc, out);
    CHECK(rc == want_rc && strstr(out, needle));
}

/* Bad options end in a message and a usage status before anything listens; a missing model or
 * an address that is not this machine's in a message and status 1. */
TEST(serve_refuses_bad_options) {
    /* a value out of range: the message names the option, the value and (checked here where
     * the row gives it) the range */
    static const struct { const char *args, *range; } out_of_range[] = {
        {"--port 70000", ": 0 to 65535 (see --help)"},
        {"--port -1", ""},
        {"--max-batch 0", ": 1 to 1024"},
        {"--max-body 10", ""},
        {"--rate nan", ""},
        {"--rate inf", ""},
        {"--burst 0", ""},
        {"--http-threads 0", ": 1 to 64"},
        {"--threads -2", ""},
    };
    for (int i = 0; i < NUM(out_of_range); i++) {
        char needle[256];
        snprintf(needle, sizeof needle, "biflow serve: %s is out of range%s", out_of_range[i].args,
                 out_of_range[i].range);
        check_serve_refuses(out_of_range[i].args, 2, needle);
    }
    static const struct { const char *args, *needle; int rc; } cases[] = {
        {"--precision fp16", "--precision must be fp32 or bf16", 2},
        {"--bogus", "unknown option '--bogus'", 2},
        {"--reverse /no/such/reverse.safetensors", "biflow: cannot open '/no/such/reverse.safetensors'", 1},
        {"--host 192.0.2.1", "biflow: cannot listen on 192.0.2.1", 1},   /* TEST-NET-1: not ours */
    };
    for (int i = 0; i < NUM(cases); i++) check_serve_refuses(cases[i].args, cases[i].rc, cases[i].needle);
}
