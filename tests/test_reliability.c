/* Issue 13, "nothing lost, nothing crashes": atomic files reach the disk with their folder,
 * run folders are locked, never silently overwritten, resumed only as the run they hold;
 * configurations and options out of range are refused before anything is allocated or
 * written; a diverging run stops without writing its diverged state. */
#include "test.h"
#include "fastmath.h"
#include "feature_net.h"
#include "flow.h"
#include "plot.h"
#include "reverse.h"
#include "train_util.h"
#include "tiny_models.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* ------------------------------------------------------------------ fsync, seen by the tests */
/* The test binary is linked with -Wl,--wrap=fsync: every fsync of the library lands here and
 * the path of its descriptor is remembered. */
int __real_fsync(int fd);
static char synced[16][1024];
static int n_synced;

int __wrap_fsync(int fd) {
    char link[64], path[1024];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t k = readlink(link, path, sizeof path - 1);
    if (k > 0) {
        path[k] = 0;
        snprintf(synced[n_synced % 16], sizeof synced[0], "%s", path);
        n_synced++;
    }
    return __real_fsync(fd);
}

static int was_synced(const char *path) {
    char real[PATH_MAX];
    if (!realpath(path, real)) return 0;
    for (int i = 0; i < n_synced && i < 16; i++)
        if (!strcmp(synced[i], real)) return 1;
    return 0;
}

static void path_in_tmp(char *buf, size_t n, const char *name) {
    snprintf(buf, n, "%s/%s", bf_test_tmpdir(), name);
}

TEST(atomic_write_flushes_the_file_and_its_folder) {
    char dir[512], path[600];
    path_in_tmp(dir, sizeof dir, "fsync-dir");
    CHECK(mkdir(dir, 0755) == 0);
    snprintf(path, sizeof path, "%s/data.bin", dir);
    n_synced = 0;
    CHECK(bf_write_file_atomic(path, "abc", 3) == 0);
    CHECK(was_synced(dir));      /* the rename reaches the disk: the folder was flushed */
    CHECK(n_synced >= 2);        /* and the file's data before it */
    CHECK(bf_fsync_parent_dir("no-folder-here/x") == -1);
}

/* ------------------------------------------------------------------ resumed logs */
/* A resumed run trims log.jsonl to its step. The trim read lines of at most 8191 bytes (a
 * longer record fell apart and was dropped), dropped records holding a bare nan (what printf
 * writes for a NaN; the plot reads them), and kept a last record without its newline, so the
 * next record ran into it and both were lost. Found by tests/fuzz/fuzz_log.c. */
TEST(resumed_log_keeps_every_record_up_to_its_step) {
    char dir[512], path[600];
    path_in_tmp(dir, sizeof dir, "trim-log");
    CHECK(mkdir(dir, 0755) == 0);
    snprintf(path, sizeof path, "%s/log.jsonl", dir);
    FILE *fp = fopen(path, "w");
    BF_ASSERT(fp);
    fprintf(fp, "{\"step\":1,\"loss\":nan,\"bpd\":2.5}\n{\"step\":2,\"bpd\":2.25,\"note\":\"");
    for (int i = 0; i < 10000; i++) fputc('x', fp);
    fprintf(fp, "\"}\n{\"step\":5,\"bpd\":9}\ncut by a ki\n{\"step\":3,\"bpd\":2}");   /* no newline */
    BF_ASSERT(fclose(fp) == 0);
    fp = bf_open_log(dir, 3);
    CHECK(fp != NULL);
    if (!fp) return;
    fprintf(fp, "{\"step\":4,\"bpd\":1.5}\n");
    CHECK(fclose(fp) == 0);
    bf_trainlog lg;
    CHECK(bf_trainlog_read(&lg, path) == 0);
    const bf_series *s = bf_trainlog_find(&lg, "bpd");
    static const double want_x[] = {1, 2, 3, 4}, want_y[] = {2.5, 2.25, 2, 1.5};
    CHECK(s && s->n == 4);
    for (int i = 0; s && s->n == 4 && i < 4; i++) CHECK(s->x[i] == want_x[i] && s->y[i] == want_y[i]);
    CHECK(lg.malformed == 0 && lg.nonfinite == 1);   /* the NaN loss, counted, its record kept */
    bf_trainlog_free(&lg);
}

/* ------------------------------------------------------------------ memory */
TEST(checked_allocation_fails_with_a_message) {
    CHECK(BF_SIZE_PROD(3, 5, 7) == 105);
    CHECK(BF_SIZE_PROD(SIZE_MAX / 2, 3) == SIZE_MAX);
    CHECK(bf_size_add(SIZE_MAX - 1, 5) == SIZE_MAX);
    bf_set_error("%s", "");
    CHECK(bf_try_malloc(SIZE_MAX - 16, "the test's buffer") == NULL);
    CHECK(strstr(bf_last_error(), "out of memory") && strstr(bf_last_error(), "the test's buffer"));
    CHECK(bf_try_calloc(SIZE_MAX / 4, 16, "x") == NULL);   /* n * size overflows */
    void *p = bf_try_calloc(10, 4, "x");
    CHECK(p != NULL);
    free(p);
}

/* ------------------------------------------------------------------ fast_expf */
/* fast_expf(NaN) shifted a negative int left (undefined behaviour): built here with the
 * undefined-behaviour sanitizer, the probe must run clean. */
TEST(fastmath_expf_nan_is_defined) {
    char out[4096], exe[600];
    path_in_tmp(exe, sizeof exe, "probe-expf");
    int rc = bf_test_sh(out, sizeof out, "cc -std=c11 -O1 -fsanitize=undefined "
                        "-fno-sanitize-recover=all -Isrc/core tests/probes/fastmath_nan.c -o '%s' -lm", exe);
    if (rc != 0) {
        bf_test_skip("cannot build the sanitizer probe: %.200s", out);
        return;
    }
    rc = bf_test_sh(out, sizeof out, "'%s'", exe);
    if (rc != 0) fprintf(stderr, "    %s\n", out);
    CHECK(rc == 0);
    volatile float nan = NAN;
    CHECK(isnan(fast_expf(nan)) && fast_expf(-INFINITY) == 0.0f && isinf(fast_expf(INFINITY)));
}

/* ------------------------------------------------------------------ folder locks */
TEST(dir_lock_is_exclusive_and_names_the_holder) {
    char dir[512], pid[32];
    path_in_tmp(dir, sizeof dir, "lock-dir");
    CHECK(mkdir(dir, 0755) == 0);
    bf_dir_lock a, b;
    CHECK(bf_dir_lock_take(&a, dir) == 0);
    snprintf(pid, sizeof pid, "PID %ld", (long)getpid());
    CHECK_ERR(bf_dir_lock_take(&b, dir), pid);   /* a second open of the lock file */
    bf_dir_unlock(&a);
    CHECK(bf_dir_lock_take(&b, dir) == 0);       /* free again */
    bf_dir_unlock(&b);
}

/* A PID that is certainly not alive: a child that has exited and been reaped. */
static pid_t dead_pid(void) {
    pid_t p = fork();
    if (p == 0) _exit(0);
    BF_ASSERT(p > 0);
    waitpid(p, NULL, 0);
    return p;
}

static void touch(const char *dir, const char *name) {
    char path[700];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *fp = fopen(path, "w");
    BF_ASSERT(fp);
    fclose(fp);
}

static int exists(const char *dir, const char *name) {
    char path[700];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    return access(path, F_OK) == 0;
}

TEST(stale_temporary_files_of_dead_writers_are_removed) {
    char dir[512], dead[64], alive[64];
    path_in_tmp(dir, sizeof dir, "stale-dir");
    CHECK(mkdir(dir, 0755) == 0);
    snprintf(dead, sizeof dead, "flow.safetensors.tmp.%d", (int)dead_pid());
    snprintf(alive, sizeof alive, "flow.safetensors.tmp.%d", (int)getpid());
    touch(dir, dead);
    touch(dir, alive);
    touch(dir, "notes.tmp.txt");
    CHECK(bf_remove_stale_tmp(dir) == 1);
    CHECK(!exists(dir, dead) && exists(dir, alive) && exists(dir, "notes.tmp.txt"));
}

/* ------------------------------------------------------------------ run folders */
/* The options of a tiny run of F into TMP/name, whose path goes to dir (512 bytes). */
static void tiny_run_in_tmp(bf_train_opts *o, char *dir, const char *name, int steps) {
    path_in_tmp(dir, 512, name);
    bf_test_tiny_train_opts(o, dir, steps);
}

static int count_lines(const char *dir, const char *name) {
    char path[700], line[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *fp = fopen(path, "r");
    int n = 0;
    while (fp && fgets(line, sizeof line, fp)) n++;
    if (fp) fclose(fp);
    return n;
}

/* A new run in a folder that holds one is refused (every trainer) unless --overwrite. */
TEST(new_run_refuses_a_folder_holding_a_run) {
    REQUIRE_FASHION_MNIST();   /* trains on it */
    char dir[512];
    bf_train_opts o;
    tiny_run_in_tmp(&o, dir, "held-run", 4);
    CHECK(bf_train_flow(&o) == 0);
    bf_test_tiny_train_opts(&o, dir, 2);
    CHECK_ERR(bf_train_flow(&o), "already holds a run");
    CHECK(strstr(bf_last_error(), "--resume") && strstr(bf_last_error(), "--overwrite"));
    CHECK(bf_test_saved_step(dir) == 4 && count_lines(dir, "log.jsonl") == 4);   /* untouched */
    bf_reverse_train_opts ro;
    bf_reverse_train_opts_default(&ro);
    ro.flow = dir;
    ro.out_dir = dir;
    CHECK_ERR(bf_train_reverse(&ro), "already holds a run");
    bf_features_train_opts fo;
    bf_features_train_opts_default(&fo);
    fo.out_dir = dir;
    CHECK_ERR(bf_train_features(&fo, NULL), "already holds a run");
    CHECK(bf_test_saved_step(dir) == 4);
    o.overwrite = 1;   /* explicit: a new two-step run replaces the old one, log included */
    CHECK(bf_train_flow(&o) == 0);
    CHECK(bf_test_saved_step(dir) == 2 && count_lines(dir, "log.jsonl") == 2);
    o.resume = 1;
    CHECK_ERR(bf_train_flow(&o), "give one");
}

/* The same through the command line: the second run exits 1 and says why. */
TEST(cli_train_flow_twice_into_one_folder_is_refused) {
    REQUIRE_FASHION_MNIST();   /* trains on it */
    char dir[512], out[4096];
    path_in_tmp(dir, sizeof dir, "cli-held-run");
    const char *tiny = "--config fmnist-tiny --blocks 1 --width 32 --batch 4 --final-eval 0 "
                       "--threads 1 --quiet";
    CHECK(bf_test_sh(out, sizeof out, "./biflow train-flow %s --steps 3 --out '%s'", tiny, dir) == 0);
    int rc = bf_test_sh(out, sizeof out, "./biflow train-flow %s --steps 2 --out '%s'", tiny, dir);
    CHECK(rc == 1 && strstr(out, "already holds a run"));
    CHECK(bf_test_saved_step(dir) == 3);
    CHECK(bf_test_sh(out, sizeof out, "./biflow train-flow %s --steps 2 --overwrite --out '%s'", tiny, dir) == 0);
    CHECK(bf_test_saved_step(dir) == 2);
}

/* Opens DIR/.lock as a second writer would and holds it, with this process's PID in it. */
static int hold_lock(const char *dir) {
    char path[700], pid[32];
    snprintf(path, sizeof path, "%s/.lock", dir);
    int fd = open(path, O_RDWR | O_CREAT, 0644);
    BF_ASSERT(fd >= 0 && flock(fd, LOCK_EX | LOCK_NB) == 0);
    int len = snprintf(pid, sizeof pid, "%ld\n", (long)getpid());
    BF_ASSERT(ftruncate(fd, 0) == 0 && write(fd, pid, (size_t)len) == len);
    return fd;
}

/* Two writers on one run folder: the second stops with a message naming the first's PID. */
TEST(writers_refuse_a_locked_run_folder) {
    REQUIRE_FASHION_MNIST();   /* trains on it */
    char dir[512], pid[32], out[4096];
    bf_train_opts o;
    tiny_run_in_tmp(&o, dir, "locked-run", 2);
    CHECK(bf_train_flow(&o) == 0);
    int fd = hold_lock(dir);
    snprintf(pid, sizeof pid, "PID %ld", (long)getpid());
    bf_test_tiny_train_opts(&o, dir, 4);
    o.resume = 1;
    CHECK_ERR(bf_train_flow(&o), pid);
    bf_reverse_train_opts ro;
    bf_reverse_train_opts_default(&ro);
    ro.flow = dir;
    ro.out_dir = dir;
    ro.resume = 1;
    CHECK_ERR(bf_train_reverse(&ro), pid);
    bf_features_train_opts fo;
    bf_features_train_opts_default(&fo);
    fo.out_dir = dir;
    CHECK_ERR(bf_train_features(&fo, NULL), pid);
    int rc = bf_test_sh(out, sizeof out, "./biflow export-reverse --reverse x --flow x --out '%s/g.safetensors'", dir);
    CHECK(rc == 1 && strstr(out, pid));
    close(fd);   /* released: the run continues */
    CHECK(bf_train_flow(&o) == 0 && bf_test_saved_step(dir) == 4);
}

TEST(run_folder_mistakes_are_refused_with_the_reason) {
    char dir[512], file[512];
    bf_train_opts o;
    tiny_run_in_tmp(&o, dir, "never-made", 2);
    o.resume = 1;
    CHECK_ERR(bf_train_flow(&o), "does not exist");
    CHECK(access(dir, F_OK) != 0);   /* --resume did not create it */
    path_in_tmp(file, sizeof file, "a-file");
    touch(bf_test_tmpdir(), "a-file");
    bf_test_tiny_train_opts(&o, file, 2);
    CHECK_ERR(bf_train_flow(&o), "is a file, not a run folder");
    char below[600];
    snprintf(below, sizeof below, "%s/run", file);   /* a parent that is a file */
    bf_test_tiny_train_opts(&o, below, 2);
    CHECK_ERR(bf_train_flow(&o), "cannot create run folder");
}

/* A new run folder whose parents do not exist yet is made with them (mkdir -p). */
TEST(run_folder_is_created_with_its_parents) {
    REQUIRE_FASHION_MNIST();   /* trains on it */
    char top[512], dir[512];
    path_in_tmp(top, sizeof top, "parents");
    CHECK(access(top, F_OK) != 0);
    bf_train_opts o;
    tiny_run_in_tmp(&o, dir, "parents/of/run", 1);
    CHECK(bf_train_flow(&o) == 0 && bf_test_saved_step(dir) == 1);
}

/* A writer killed mid-write leaves NAME.tmp.PID: the next trainer in the folder removes it. */
TEST(trainer_removes_temporary_files_of_killed_writers) {
    REQUIRE_FASHION_MNIST();   /* trains on it */
    char dir[512], dead[64];
    bf_train_opts o;
    tiny_run_in_tmp(&o, dir, "stale-run", 2);
    CHECK(bf_train_flow(&o) == 0);
    snprintf(dead, sizeof dead, "train_state.safetensors.tmp.%d", (int)dead_pid());
    touch(dir, dead);
    bf_test_tiny_train_opts(&o, dir, 3);
    o.resume = 1;
    CHECK(bf_train_flow(&o) == 0);
    CHECK(!exists(dir, dead));
}

/* ------------------------------------------------------------------ configuration limits */
/* Copies a safetensors file with one metadata value replaced (or added). */
static void rewrite_meta(const char *in, const char *out, const char *key, const char *value) {
    bf_safetensors st;
    BF_ASSERT(bf_st_load(&st, in) == 0);
    bf_st_writer *w = bf_st_writer_new();
    int found = 0;
    for (int i = 0; i < st.n_meta; i++) {
        int hit = !strcmp(st.meta_keys[i], key);
        found |= hit;
        bf_st_writer_meta(w, st.meta_keys[i], hit ? value : st.meta_values[i]);
    }
    if (!found) bf_st_writer_meta(w, key, value);
    for (int i = 0; i < st.n; i++) {
        const bf_tensor_view *t = &st.tensors[i];
        bf_st_writer_add(w, t->name, t->dtype, t->ndim, t->shape, t->data);
    }
    BF_ASSERT(bf_st_writer_save(w, out) == 0);
    bf_st_writer_free(w);
    bf_st_free(&st);
}

TEST(configurations_beyond_the_limits_are_refused) {
    bf_flow_config fc;
    bf_flow_config_named(&fc, "fmnist-small");
    fc.channels = 65536;
    fc.num_blocks = 1024;
    CHECK_ERR(bf_flow_config_check(&fc), "parameters");
    bf_flow_config_named(&fc, "fmnist-small");
    fc.img_size = 4096; fc.patch_size = 1;   /* 16.7M tokens */
    CHECK_ERR(bf_flow_config_check(&fc), "tokens");
    bf_reverse_config rc = bf_test_tiny_reverse_config(0, 1, 1);
    rc.layers_per_stage = INT_MAX;           /* num_stages * layers_per_stage wrapped an int */
    CHECK_ERR(bf_reverse_config_check(&rc), "layers in all");
    rc = bf_test_tiny_reverse_config(0, 1, 1);
    rc.channels = 65536; rc.head_dim = 64; rc.layers_per_stage = 8; rc.num_stages = 64;
    CHECK_ERR(bf_reverse_config_check(&rc), "parameters");
    bf_features_config ec;
    bf_features_config_default(&ec);
    ec.height = ec.width = 1024; ec.width1 = ec.width2 = 4096; ec.feat_dim = 65536;
    CHECK_ERR(bf_features_config_check(&ec), "parameters");
    /* the counts the limits use are the layouts' own */
    static const char *const names[] = {"fmnist-tiny", "fmnist-small", "cifar-small"};
    for (int i = 0; i < 3; i++) {
        bf_flow_config_named(&fc, names[i]);
        fc.num_classes = i == 1 ? 0 : fc.num_classes;
        bf_flow *f = bf_flow_new(&fc);
        CHECK(f && (double)f->num_params == bf_flow_param_count(&fc));
        bf_flow_free(f);
    }
    for (int v = 0; v < 4; v++) {
        bf_reverse_config c = bf_test_tiny_reverse_config(v & 1, v & 2 ? 0 : 2, v != 1);
        bf_reverse *r = bf_reverse_new(&c);
        CHECK(r && (double)r->num_params == bf_reverse_param_count(&c));
        bf_reverse_free(r);
    }
}

/* Checkpoints whose metadata asks for an impossible model end in a message and exit 1, not
 * in SIGABRT from an allocation (or a wrapped int). */
TEST(cli_oversized_checkpoints_and_options_end_in_messages) {
    char good[512], bad[512], out[4096], dir[512];
    path_in_tmp(good, sizeof good, "small-flow.safetensors");
    path_in_tmp(bad, sizeof bad, "huge-flow.safetensors");
    bf_flow *f = bf_test_tiny_flow(1, 8, 2);
    CHECK(bf_flow_save(f, f->params, good, NULL) == 0);
    bf_flow_free(f);
    rewrite_meta(good, bad, "channels", "65536");
    rewrite_meta(bad, bad, "num_blocks", "1024");
    int rc = bf_test_sh(out, sizeof out, "./biflow info '%s'", bad);
    CHECK(rc == 1 && strstr(out, "huge-flow") && strstr(out, "parameters"));
    rewrite_meta(good, bad, "layers_per_block", "3");   /* in range, but more than the file holds */
    CHECK(bf_flow_load(bad, 1) == NULL && strstr(bf_last_error(), "the file's tensors hold"));
    path_in_tmp(good, sizeof good, "small-reverse.safetensors");
    path_in_tmp(bad, sizeof bad, "huge-reverse.safetensors");
    bf_reverse *r = bf_test_random_reverse(bf_test_tiny_reverse_config(0, 1, 1), 2);
    CHECK(bf_reverse_save(r, r->params, good, NULL) == 0);
    bf_reverse_free(r);
    rewrite_meta(good, bad, "layers_per_stage", "2147483647");
    rc = bf_test_sh(out, sizeof out, "./biflow info '%s'", bad);
    CHECK(rc == 1 && strstr(out, "huge-reverse") && strstr(out, "out of the supported range"));
    path_in_tmp(dir, sizeof dir, "huge-run");
    rc = bf_test_sh(out, sizeof out, "./biflow train-flow --width 65536 --blocks 1024 --out '%s'", dir);
    CHECK(rc == 2 && strstr(out, "parameters"));
    CHECK(access(dir, F_OK) != 0);   /* refused before anything was made */
}

/* ------------------------------------------------------------------ option ranges */
/* Options out of range are usage errors (exit 2) that name the option, before anything runs. */
TEST(cli_options_out_of_range_are_usage_errors) {
    char dir[512], out[4096];
    path_in_tmp(dir, sizeof dir, "never-trained");
    static const struct { const char *args, *needle; } cases[] = {
        {"sample --flow models/flow-fmnist.safetensors --batch 0", "--batch"},
        {"sample --flow models/flow-fmnist.safetensors --batch -3", "--batch"},
        {"sample --flow models/flow-fmnist.safetensors --n 2000000000", "--n"},   /* an abort before */
        {"train-flow --ckpt-every -5", "--ckpt-every"},
        {"train-flow --clip nan", "--clip"},
        {"train-flow --beta2 2", "--beta2"},
        {"train-flow --threads -4", "--threads"},
        {"train-flow --lr inf", "--lr"},
        {"train-reverse --flow models/flow-fmnist.safetensors --beta2 2", "--beta2"},
        {"train-reverse --flow models/flow-fmnist.safetensors --ckpt-every -5", "--ckpt-every"},
        {"train-features --clip nan", "--clip"},
        {"eval-bpd --flow x --threads -1", "--threads"},
    };
    for (int i = 0; i < NUM(cases); i++) {
        int rc = bf_test_sh(out, sizeof out, "./biflow %s --out '%s'", cases[i].args, dir);
        if (rc != 2 || !strstr(out, cases[i].needle))
            fprintf(stderr, "    biflow %s: rc %d, '%s'\n", cases[i].args, rc, out);
        CHECK(rc == 2 && strstr(out, cases[i].needle));
    }
    CHECK(access(dir, F_OK) != 0);
    /* eval holds its samples in memory too: a count beyond the limit is a usage error */
    int rc = bf_test_sh(out, sizeof out, "./biflow eval --flow models/flow-fmnist.safetensors --n 2000000000");
    CHECK(rc == 2 && strstr(out, "--n"));
    bf_train_opts o;
    bf_test_tiny_train_opts(&o, dir, 2);
    o.beta2 = 2.0f;
    CHECK_ERR(bf_train_flow(&o), "--beta2 2 is out of range");
}

/* ------------------------------------------------------------------ resumed runs */
static int meta_is(const char *path, const char *key, const char *value) {
    bf_safetensors st;
    if (bf_st_load(&st, path)) return 0;
    const char *v = bf_st_meta(&st, key);
    int same = v && !strcmp(v, value);
    bf_st_free(&st);
    return same;
}

/* A resumed run keeps the options that define it; a different one is refused naming both
 * values, and --steps may only extend the run. */
TEST(resume_refuses_options_that_differ_from_the_run) {
    REQUIRE_FASHION_MNIST();   /* trains on it */
    char dir[512], state[600];
    path_in_tmp(dir, sizeof dir, "resume-opts");
    snprintf(state, sizeof state, "%s/train_state.safetensors", dir);
    bf_train_opts o;
    bf_test_tiny_train_opts(&o, dir, 2);
    CHECK(bf_train_flow(&o) == 0);
    bf_test_tiny_train_opts(&o, dir, 4);
    o.resume = 1;
    o.seed = 99;
    CHECK_ERR(bf_train_flow(&o), "--seed 99 conflicts");
    CHECK(strstr(bf_last_error(), "seed = 7") != NULL);
    o.seed = 7;
    o.noise = BF_NOISE_GAUSS;
    CHECK_ERR(bf_train_flow(&o), "--noise gauss conflicts");
    o.noise = BF_NOISE_UNIFORM;
    o.batch = 8;
    CHECK_ERR(bf_train_flow(&o), "--batch 8");
    o.batch = 4;
    o.steps = 1;
    CHECK_ERR(bf_train_flow(&o), "can only be extended");
    CHECK(bf_test_saved_step(dir) == 2 && meta_is(state, "seed", "7") && meta_is(state, "noise", "uniform"));
    o.steps = 3;
    CHECK(bf_train_flow(&o) == 0 && bf_test_saved_step(dir) == 3);
}

/* Through the command line: options not given come from the checkpoint, a given one that
 * differs is a usage error (exit 2); the run's metadata is never rewritten with them. */
TEST(cli_resume_takes_the_runs_options) {
    REQUIRE_FASHION_MNIST();   /* trains on it */
    char dir[512], state[600], out[4096], g[512];
    path_in_tmp(dir, sizeof dir, "cli-resume");
    snprintf(state, sizeof state, "%s/train_state.safetensors", dir);
    const char *tiny = "--config fmnist-tiny --blocks 1 --width 32 --final-eval 0 --threads 1 --quiet";
    CHECK(bf_test_sh(out, sizeof out, "./biflow train-flow %s --batch 4 --seed 7 --steps 2 --out '%s'",
                     tiny, dir) == 0);
    int rc = bf_test_sh(out, sizeof out, "./biflow train-flow --resume --seed 99 --noise gauss "
                        "--steps 3 --out '%s'", dir);
    CHECK(rc == 2 && strstr(out, "--seed 99") && strstr(out, "seed = 7"));
    rc = bf_test_sh(out, sizeof out, "./biflow train-flow --resume --steps 1 --out '%s'", dir);
    CHECK(rc == 2 && strstr(out, "can only be extended"));
    rc = bf_test_sh(out, sizeof out, "./biflow train-flow --resume --width 64 --out '%s'", dir);
    CHECK(rc == 2 && strstr(out, "--width 64") && strstr(out, "channels = 32"));
    /* batch 4 and seed 7 from the checkpoint (the defaults are 64 and 0) */
    rc = bf_test_sh(out, sizeof out, "./biflow train-flow --resume --steps 3 --final-eval 0 --quiet "
                    "--threads 1 --out '%s'", dir);
    CHECK(rc == 0 && bf_test_saved_step(dir) == 3);
    CHECK(meta_is(state, "seed", "7") && meta_is(state, "noise", "uniform") && meta_is(state, "batch", "4"));
    /* train-reverse: the loss options and F come from the checkpoint */
    path_in_tmp(g, sizeof g, "cli-resume-g");
    const char *rtiny = "--batch 4 --final-eval 0 --eval-every 0 --threads 1 --quiet --width 32 "
                        "--head-dim 16 --perceptual 0";
    CHECK(bf_test_sh(out, sizeof out, "./biflow train-reverse --flow '%s' %s --steps 2 --out '%s'",
                     dir, rtiny, g) == 0);
    rc = bf_test_sh(out, sizeof out, "./biflow train-reverse --resume --perceptual 1 --out '%s'", g);
    CHECK(rc == 2 && strstr(out, "--perceptual 1") && strstr(out, "perceptual = 0"));
    rc = bf_test_sh(out, sizeof out, "./biflow train-reverse --resume --inverse naive --out '%s'", g);
    CHECK(rc == 2 && strstr(out, "--inverse naive") && strstr(out, "inverse = align"));
    rc = bf_test_sh(out, sizeof out, "./biflow train-reverse --resume --denoise none --out '%s'", g);
    CHECK(rc == 2 && strstr(out, "denoise_layers = 2"));
    rc = bf_test_sh(out, sizeof out, "./biflow train-reverse --resume --steps 3 --final-eval 0 "
                    "--threads 1 --quiet --out '%s'", g);
    if (rc) fprintf(stderr, "    %s\n", out);
    CHECK(rc == 0);
}

/* ------------------------------------------------------------------ divergence */
TEST(divergence_detector_flags_jumps_and_dead_gradients_only) {
    bf_divergence d;
    bf_divergence_init(&d, 0, NULL);
    bf_rng rng;
    bf_rng_seed(&rng, 3);
    /* a noisy loss falling from 1.2 through 0 to -3 (a flow's NLL): never flagged */
    for (int s = 1; s <= 400; s++) {
        double loss = 1.2 - 4.2 * s / 400.0 + 0.3 * (bf_rng_uniform(&rng) - 0.5);
        CHECK(bf_divergence_check(&d, s, loss, 0.5) == 0);
    }
    CHECK_ERR(bf_divergence_check(&d, 401, 500.0, 0.5), "jumped far above");
    CHECK(strstr(bf_last_error(), "step 401") && strstr(bf_last_error(), "diverged"));
    CHECK_ERR(bf_divergence_check(&d, 401, NAN, 0.5), "not applied");
    CHECK(bf_divergence_check(&d, 401, 100.0, 0.5) == 0);   /* within 100 x the recent scale */
    for (int s = 402; s < 402 + BF_DIVERGE_ZERO_STEPS - 1; s++)
        CHECK(bf_divergence_check(&d, s, -3.0, 0.0) == 0);
    d.saved_step = 400;
    CHECK_ERR(bf_divergence_check(&d, 500, -3.0, 0.0), "exactly 0 for 5 steps");
    CHECK(strstr(bf_last_error(), "step 400, is kept") != NULL);
}

/* --lr 1e3 used to end rc 0 with a loss of 1e4 and a gradient of 0: now the run stops at the
 * jump, and the checkpoint on disk stays the last one written before it. */
TEST(train_flow_stops_when_the_loss_diverges) {
    REQUIRE_FASHION_MNIST();   /* trains on it */
    char dir[512];
    bf_train_opts o;
    tiny_run_in_tmp(&o, dir, "diverge", 30);
    o.lr = 1e3f;
    o.ckpt_every = 1;
    CHECK_ERR(bf_train_flow(&o), "training diverged");
    long kept = bf_test_saved_step(dir);
    CHECK(kept >= 1 && strstr(bf_last_error(), "is kept"));
    char step[32];
    snprintf(step, sizeof step, "step %ld:", kept + 1);   /* stopped at the step after it */
    CHECK(strstr(bf_last_error(), step) != NULL);
    bf_flow *f = bf_flow_load(dir, 0);   /* loads: finite weights */
    CHECK(f != NULL);
    bf_flow_free(f);
}

TEST(cli_trainers_exit_1_when_training_diverges) {
    REQUIRE_FASHION_MNIST();   /* trains on it */
    char flow[512], rev[512], out[4096];
    path_in_tmp(flow, sizeof flow, "cli-diverge-f");
    path_in_tmp(rev, sizeof rev, "cli-diverge-g");
    const char *tiny = "--config fmnist-tiny --blocks 1 --width 32 --batch 4 --final-eval 0 --threads 1 --quiet";
    int rc = bf_test_sh(out, sizeof out, "./biflow train-flow %s --steps 30 --lr 1e3 --out '%s'", tiny, flow);
    CHECK(rc == 1 && strstr(out, "diverged"));
    CHECK(bf_test_sh(out, sizeof out, "./biflow train-flow %s --steps 2 --overwrite --out '%s'", tiny, flow) == 0);
    rc = bf_test_sh(out, sizeof out, "./biflow train-reverse --flow '%s' --batch 4 --final-eval 0 "
                    "--eval-every 0 --threads 1 --quiet --width 32 --head-dim 16 --perceptual 0 "
                    "--steps 30 --lr 1e3 --out '%s'", flow, rev);
    CHECK(rc == 1 && strstr(out, "diverged"));
}

/* ------------------------------------------------------------------ messages */
/* eval-features on an int64 array blamed the shape; the dtype is what is wrong. */
TEST(cli_eval_features_names_a_wrong_dtype) {
    char path[512], out[4096];
    path_in_tmp(path, sizeof path, "images-int64.npy");
    int64_t shape[3] = {2, 28, 28};
    int64_t *x = bf_calloc(2 * 28 * 28, sizeof(int64_t));
    CHECK(bf_write_npy(path, BF_DT_I64, 3, shape, x) == 0);
    free(x);
    int rc = bf_test_sh(out, sizeof out, "./biflow eval-features --images '%s' --threads 1", path);
    CHECK(rc == 1 && strstr(out, "dtype is int64") && !strstr(out, "shape"));
    path_in_tmp(path, sizeof path, "images-1d.npy");
    float v[4] = {0};
    int64_t n = 4;
    CHECK(bf_write_npy(path, BF_DT_F32, 1, &n, v) == 0);
    rc = bf_test_sh(out, sizeof out, "./biflow eval-features --images '%s' --threads 1", path);
    CHECK(rc == 1 && strstr(out, "got (4)"));
}

/* ------------------------------------------------------------------ sanitizers */
/* make SAN=1 test runs the sanitized CLI; UBSan prints its reports to the command's output
 * (GCC 12 ignores UBSan's log_path beside ASan), so a report there fails the test that ran
 * the command, whatever exit status the test expects. */
TEST(sanitizer_reports_in_command_output_fail_the_test) {
    int before = bf_test_fail_count;
    bf_test_sh(NULL, 0, "echo 'src/x.c:1:2: runtime error: signed integer overflow' >&2; exit 1");
    int flagged = bf_test_fail_count - before;
    bf_test_sh(NULL, 0, "echo 'ERROR: LeakSanitizer: detected memory leaks'");
    flagged += bf_test_fail_count - before - flagged;
    bf_test_fail_count = before;   /* the two reports above are this test's own */
    CHECK(flagged == 2);
    bf_test_sh(NULL, 0, "echo 'a runtime error, in words' && echo 'no error'");
    CHECK(bf_test_fail_count == before);
}
