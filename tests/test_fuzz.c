/* A short run of every fuzz harness (tests/fuzz/fuzz_*.c, built by `make fuzz` into
 * build/fuzz/): each replays its stored seeds (tests/fixtures/fuzz/<harness>/) and mutates
 * them for BF_FUZZ_SECONDS seconds (default 2), and must end without a sanitizer report, a
 * crash, a leak or a failed check. Without the harnesses (no clang with libFuzzer: `make test`
 * sets BF_FUZZ_SKIP to say so) each test is skipped, and counted as skipped. New inputs go to a
 * scratch corpus, never into the stored seeds; a crashing input is kept as
 * build/fuzz/artifacts/<harness>-crash-*. */
#include "test.h"

#include <sys/stat.h>
#include <unistd.h>

/* The last `keep` bytes of a file, for the message of a failed run. */
static void print_tail(const char *path, long keep) {
    FILE *fp = fopen(path, "r");
    if (!fp) return;
    if (fseek(fp, 0, SEEK_END) == 0 && ftell(fp) > keep) fseek(fp, -keep, SEEK_END);
    else fseek(fp, 0, SEEK_SET);
    char buf[512];
    size_t k;
    while ((k = fread(buf, 1, sizeof buf, fp)) > 0) fwrite(buf, 1, k, stderr);
    fclose(fp);
}

/* The number after `key` in the file, or -1. */
static long stat_of(const char *path, const char *key) {
    FILE *fp = fopen(path, "r");
    char line[512];
    long v = -1;
    while (fp && fgets(line, sizeof line, fp))
        if (!strncmp(line, key, strlen(key))) v = strtol(line + strlen(key), NULL, 10);
    if (fp) fclose(fp);
    return v;
}

static void run_harness(const char *name) {
    const char *why = getenv("BF_FUZZ_SKIP");
    if (why && *why) {
        bf_test_skip("%s", why);
        return;
    }
    char bin[256], seeds[256], corpus[1024], log[1024], out[256];
    snprintf(bin, sizeof bin, "build/fuzz/fuzz_%s", name);
    snprintf(seeds, sizeof seeds, "tests/fixtures/fuzz/%s", name);
    if (access(bin, X_OK) != 0) {
        bf_test_skip("%s is not built (make fuzz: needs clang with libFuzzer)", bin);
        return;
    }
    struct stat st;
    CHECK(stat(seeds, &st) == 0 && S_ISDIR(st.st_mode));   /* the stored seeds */
    snprintf(corpus, sizeof corpus, "%s/fuzz-corpus-%s", bf_test_tmpdir(), name);
    snprintf(log, sizeof log, "%s/fuzz-%s.log", bf_test_tmpdir(), name);
    CHECK(mkdir(corpus, 0755) == 0);
    const char *secs = getenv("BF_FUZZ_SECONDS");
    int seconds = secs && atoi(secs) > 0 ? atoi(secs) : 2;
    int rc = bf_test_sh(out, sizeof out,
                        "mkdir -p build/fuzz/artifacts && (%s -max_total_time=%d -seed=1 -timeout=30 "
                        "-rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix=build/fuzz/artifacts/%s- "
                        "'%s' '%s' >'%s' 2>&1)", bin, seconds, name, corpus, seeds, log);
    long runs = stat_of(log, "stat::number_of_executed_units:");
    long added = stat_of(log, "stat::new_units_added:");
    printf("     fuzz_%s: %ld runs in %d s (seeds replayed, %ld new inputs)\n", name, runs, seconds, added);
    if (rc != 0 || runs < 1) {
        fprintf(stderr, "    %s exited with %d; the end of its output:\n", bin, rc);
        print_tail(log, 4000);
    }
    CHECK(rc == 0);
    CHECK(runs >= 1);
}

TEST(fuzz_image_harness_runs_clean) { run_harness("image"); }
TEST(fuzz_mask_harness_runs_clean) { run_harness("mask"); }
TEST(fuzz_cifar10_harness_runs_clean) { run_harness("cifar10"); }
TEST(fuzz_idx_harness_runs_clean) { run_harness("idx"); }
TEST(fuzz_npy_harness_runs_clean) { run_harness("npy"); }
TEST(fuzz_safetensors_harness_runs_clean) { run_harness("safetensors"); }
TEST(fuzz_checkpoint_harness_runs_clean) { run_harness("checkpoint"); }
TEST(fuzz_log_harness_runs_clean) { run_harness("log"); }

/* Every harness in tests/fuzz/ has a test above and a seed folder. */
TEST(fuzz_every_harness_is_run_by_the_suite) {
    char out[4096];
    CHECK(bf_test_sh(out, sizeof out, "ls tests/fuzz/fuzz_*.c") == 0);
    static const char *const known[] = {"image", "mask", "cifar10", "idx", "npy", "safetensors",
                                        "checkpoint", "log"};
    int n = 0;
    for (char *line = strtok(out, "\n"); line; line = strtok(NULL, "\n")) {
        int ok = 0;
        for (int i = 0; i < NUM(known); i++) {
            char want[64];
            snprintf(want, sizeof want, "tests/fuzz/fuzz_%s.c", known[i]);
            ok |= !strcmp(line, want);
        }
        if (!ok) fprintf(stderr, "    %s has no test in tests/test_fuzz.c\n", line);
        CHECK(ok);
        n++;
    }
    CHECK(n == NUM(known));
}
