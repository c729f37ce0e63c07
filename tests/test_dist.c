/* Data-parallel training (src/dist.c): the shard arithmetic that makes N processes x T threads
 * give the weights of 1 process x N T threads, then the CLI under `mpirun -np 2` against one
 * process with two threads: F and G, a rank failing mid-run, resuming with another process
 * count. The mpirun tests are skipped (and counted) without OpenMPI's mpirun or an MPI build. */
#include "test.h"
#include "dist.h"
#include "tiny_models.h"

#include <stdlib.h>
#include <unistd.h>

/* ------------------------------------------------------------------ the arithmetic */
/* The chain of bf_shard_grads_reduce, played in one process: "rank" r adds its shards to the
 * partial sum of the ranks before it. */
static void chain_in_process(float *out, float *const *g, int n, int S, int nranks, size_t P) {
    float *partial = bf_malloc(sizeof(float) * P);
    for (int r = 0; r < nranks; r++) {
        bf_shard_plan p = {n, S, bf_shard_begin(S, nranks, r), bf_shard_begin(S, nranks, r + 1), r, nranks};
        bf_shard_grads_accumulate(out, r ? partial : NULL, g + p.s0, &p, 0, P, 1);
        memcpy(partial, out, sizeof(float) * P);
    }
    free(partial);
}

TEST(dist_shard_sum_is_the_same_bits_however_the_shards_are_spread) {
    enum { P = 4099, S = 6, n = 23 };
    float *g[S], *one = bf_malloc(sizeof(float) * P), *many = bf_malloc(sizeof(float) * P);
    bf_rng rng;
    bf_rng_seed(&rng, 11);
    for (int s = 0; s < S; s++) {   /* magnitudes over many octaves: association shows */
        g[s] = bf_malloc(sizeof(float) * P);
        for (int i = 0; i < P; i++) g[s][i] = bf_rng_normal(&rng) * exp2f((float)(bf_rng_below(&rng, 40)) - 20.0f);
    }
    bf_shard_plan all = bf_shard_plan_local(n, S);
    CHECK(all.S == S && all.s0 == 0 && all.s1 == S);
    bf_shard_grads_accumulate(one, NULL, g, &all, 0, P, 1);
    for (int N = 2; N <= S; N++) {   /* 2 ranks x 3 shards, 3 x 2, ..., 6 x 1 (and uneven) */
        chain_in_process(many, g, n, S, N, P);
        CHECK(memcmp(one, many, sizeof(float) * P) == 0);
    }
    /* what the chain avoids: each rank summing its own shards from 0, then the partials */
    int differ = 0;
    for (int i = 0; i < P; i++) {
        float a = 0.0f, b = 0.0f;
        for (int s = 0; s < 3; s++) a += g[s][i] * ((float)(bf_shard_begin(n, S, s + 1) - bf_shard_begin(n, S, s)) / (float)n);
        for (int s = 3; s < S; s++) b += g[s][i] * ((float)(bf_shard_begin(n, S, s + 1) - bf_shard_begin(n, S, s)) / (float)n);
        differ += a + b != one[i];
    }
    CHECK(differ > 0);
    for (int s = 0; s < S; s++) free(g[s]);
    free(one);
    free(many);
}

TEST(dist_without_a_launcher_is_one_process) {
    CHECK(bf_dist_rank() == 0 && bf_dist_size() == 1);
    CHECK(bf_dist_check(0) == 0);
    bf_set_error("local");
    CHECK(bf_dist_check(-1) == -1 && !strcmp(bf_last_error(), "local") && !bf_dist_error_elsewhere());
    CHECK(bf_dist_first(0) == -1 && bf_dist_first(1) == 0);
    bf_shard_plan p;
    CHECK(bf_shard_plan_make(&p, 5, 8) == 0 && p.S == 5 && p.s0 == 0 && p.s1 == 5 && p.nranks == 1);
    CHECK(bf_shard_plan_make(&p, 64, 3) == 0 && p.S == 3);
}

/* ------------------------------------------------------------------ under mpirun */
static char g_mpirun[256];   /* "mpirun --oversubscribe [--allow-run-as-root]" */
static char g_cli[512];      /* the CLI (BF_CLI or ./biflow) */

/* Skips the calling test (returns 0) without OpenMPI's mpirun or an MPI build. */
static int mpirun_ready(void) {
    if (!bf_dist_built_with_mpi()) {
        bf_test_skip("built without MPI (no mpicc, or MPI=0)");
        return 0;
    }
    char out[512];
    if (bf_test_sh(out, sizeof out, "mpirun --version") != 0 || !strstr(out, "Open MPI")) {
        bf_test_skip("no OpenMPI mpirun on the PATH");
        return 0;
    }
    const char *cli = getenv("BF_CLI");
    snprintf(g_cli, sizeof g_cli, "%s", cli && *cli ? cli : "./biflow");
    snprintf(g_mpirun, sizeof g_mpirun, "mpirun --oversubscribe%s", geteuid() == 0 ? " --allow-run-as-root" : "");
    return 1;
}

static void dir_in_tmp(char *buf, size_t n, const char *name) {
    snprintf(buf, n, "%s/%s", bf_test_tmpdir(), name);
}

/* 0 when DIR_A/NAME and DIR_B/NAME hold the same bytes. */
static int same_file(const char *dir_a, const char *dir_b, const char *name) {
    char out[512];
    int rc = bf_test_sh(out, sizeof out, "cmp '%s/%s' '%s/%s'", dir_a, name, dir_b, name);
    if (rc) fprintf(stderr, "    %s", out);
    return rc;
}

/* A log's records without the measured speed (the last field). */
static char *log_without_speed(const char *dir) {
    char path[700];
    snprintf(path, sizeof path, "%s/log.jsonl", dir);
    uint8_t *data;
    size_t size;
    if (bf_read_file(path, &data, &size, 1 << 24)) return bf_strdup("(no log)");
    char *s = bf_malloc(size + 1), *o = s;
    for (size_t i = 0; i < size;) {
        const char *line = (const char *)data + i, *end = memchr(line, '\n', size - i);
        size_t len = end ? (size_t)(end - line) : size - i;
        const char *cut = memmem(line, len, "\"images_per_s\"", 14);
        size_t keep = cut ? (size_t)(cut - line) : len;
        memcpy(o, line, keep);
        o += keep;
        *o++ = '\n';
        i += len + 1;
    }
    *o = 0;
    free(data);
    return s;
}

/* 0 when two run folders' logs hold the same records (speed aside), and some. */
static int same_log(const char *a, const char *b) {
    char *x = log_without_speed(a), *y = log_without_speed(b);
    int rc = strcmp(x, y) != 0 || !strstr(x, "\"loss\"");
    if (rc) fprintf(stderr, "    logs differ:\n%s---\n%s", x, y);
    free(x);
    free(y);
    return rc;
}

#define TINY_F "--config fmnist-tiny --blocks 1 --width 32 --batch 4 --eval-n 0 --quiet " \
               "--log-every 1 --ckpt-every 3"

/* Runs a command, printing its output when it does not end with the status expected. */
static int run(int expect, const char *fmt, const char *a, const char *b, const char *c,
               const char *d) {
    char out[16384];
    int rc = bf_test_sh(out, sizeof out, fmt, a, b, c, d);
    if (rc != expect) fprintf(stderr, "    exit status %d:\n%s\n", rc, out);
    return rc;
}

TEST(mpi_train_flow_2_ranks_x_1_thread_equals_1_process_x_2_threads) {
    if (!mpirun_ready()) return;
    char one[512], two[512], fail[512], out[16384];
    dir_in_tmp(one, sizeof one, "mpi-f-1x2");
    dir_in_tmp(two, sizeof two, "mpi-f-2x1");
    dir_in_tmp(fail, sizeof fail, "mpi-f-fail");
    CHECK(run(0, "%s train-flow " TINY_F " --steps 6 --threads 2 --out '%s'%s%s", g_cli, one, "", "") == 0);
    CHECK(run(0, "%s -np 2 %s train-flow " TINY_F " --steps 6 --threads 1 --out '%s'%s", g_mpirun, g_cli, two, "") == 0);
    CHECK(same_file(one, two, "train_state.safetensors") == 0);   /* weights, EMA, moments */
    CHECK(same_file(one, two, "flow.safetensors") == 0);
    CHECK(same_log(one, two) == 0);
    /* rank 1 fails before step 5: one message, from rank 1; the checkpoint of step 3 stays */
    int rc = bf_test_sh(out, sizeof out, "%s -np 1 %s train-flow " TINY_F " --steps 6 --threads 1 "
                        "--out '%s' : -np 1 -x BF_TEST_FAULT=5 %s train-flow " TINY_F " --steps 6 "
                        "--threads 1 --out '%s'", g_mpirun, g_cli, fail, g_cli, fail);
    CHECK(rc != 0 && strstr(out, "biflow (rank 1 of 2): a test fault (BF_TEST_FAULT) before step 5"));
    CHECK(!strstr(out, "rank 0 of 2") && !strstr(out, "biflow: "));
    CHECK(bf_test_saved_step(fail) == 3);
    /* resumed by one process of two threads (the same 2 shards): the uninterrupted run */
    CHECK(run(0, "%s train-flow --resume --steps 6 --threads 2 --quiet --eval-n 0 --log-every 1 "
              "--out '%s'%s%s", g_cli, fail, "", "") == 0);
    CHECK(same_file(one, fail, "train_state.safetensors") == 0);
    CHECK(same_log(one, fail) == 0);
}

TEST(mpi_train_reverse_resumed_by_2_ranks_equals_1_process_x_2_threads) {
    if (!mpirun_ready()) return;
    char flow[512], one[512], two[512];
    dir_in_tmp(flow, sizeof flow, "mpi-g-flow");
    dir_in_tmp(one, sizeof one, "mpi-g-1x2");
    dir_in_tmp(two, sizeof two, "mpi-g-1x2-then-2x1");
#define TINY_G "--batch 4 --eval-n 0 --eval-every 0 --quiet --log-every 1 --ckpt-every 2"
    CHECK(run(0, "%s train-flow " TINY_F " --steps 2 --threads 2 --out '%s'%s%s", g_cli, flow, "", "") == 0);
    CHECK(run(0, "%s train-reverse --flow '%s' " TINY_G " --width 32 --head-dim 16 --perceptual 0 "
              "--steps 5 --threads 2 --out '%s'%s", g_cli, flow, one, "") == 0);
    /* one process of two threads for 2 steps, then two ranks of one thread for 3 more */
    CHECK(run(0, "%s train-reverse --flow '%s' " TINY_G " --width 32 --head-dim 16 --perceptual 0 "
              "--steps 2 --threads 2 --out '%s'%s", g_cli, flow, two, "") == 0);
    CHECK(run(0, "%s -np 2 %s train-reverse --resume " TINY_G " --steps 5 --threads 1 --out '%s'%s",
              g_mpirun, g_cli, two, "") == 0);
    CHECK(same_file(one, two, "reverse_state.safetensors") == 0);   /* weights, EMA, moments */
    CHECK(same_file(one, two, "reverse.safetensors") == 0);
    CHECK(same_log(one, two) == 0);
#undef TINY_G
}
