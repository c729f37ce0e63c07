/* libFuzzer harness for the checkpoint loaders: the configuration checks and tensor copies of
 * the forward model F (bf_flow_load), the reverse model G (bf_reverse_load), the feature network
 * (bf_features_load), the resume state (bf_train_state_load) and the options a resumed run
 * takes from its checkpoint (bf_run_opts_reconcile, for train-flow and train-reverse). `make
 * fuzz` builds it as build/fuzz/fuzz_checkpoint; seeds: tests/fixtures/fuzz/checkpoint (tiny
 * checkpoints of each kind written by the library; tests/fuzz/make_seeds.c).
 *   build/fuzz/fuzz_checkpoint -max_total_time=20 -max_len=65536 build/fuzz/corpus/checkpoint \
 *       tests/fixtures/fuzz/checkpoint
 *
 * The input is one safetensors file, handed to every loader. Each must either succeed with a
 * model whose size matches the file or fail with a message, without crashing, leaking or
 * allocating more than the file could fill. */
#include "fuzz_util.h"
#include "train_util.h"

static void expect_loaded_or_message(const void *model) {
    if (!model) fuzz_expect_message();
}

/* Resume checks of both trainers against the file: given options (compared) and options
 * taken from it (adopted; adopted strings are the caller's to free). */
static void reconcile(const char *path) {
    bf_train_opts fo;
    bf_reverse_train_opts ro;
    bf_run_opt r[BF_RUN_OPTS_MAX];
    for (int given = 0; given <= 1; given++) {
        bf_train_opts_default(&fo);
        int n = bf_train_flow_run_opts(&fo, r);
        for (int i = 0; i < n; i++) r[i].given = given;
        long step = 0;
        bf_set_error("%s", "");
        if (bf_run_opts_reconcile(r, n, path, &step) != 0) fuzz_expect_message();

        bf_reverse_train_opts_default(&ro);
        const char *features = ro.features;
        n = bf_train_reverse_run_opts(&ro, r);
        for (int i = 0; i < n; i++) r[i].given = given;
        bf_set_error("%s", "");
        if (bf_run_opts_reconcile(r, n, path, NULL) != 0) fuzz_expect_message();
        if (ro.features != features) free((char *)ro.features);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    bf_log_level = 0;
    const char *path = fuzz_path(0, "model.safetensors");
    fuzz_write(path, data, size);
    size_t n_params = 16;   /* what a resume state must hold: the model's parameter count */

    bf_set_error("%s", "");
    bf_flow *f = bf_flow_load(path, 0);
    expect_loaded_or_message(f);
    if (f) {
        n_params = bf_flow_num_params(f);
        if (n_params * sizeof(float) > size) abort();   /* the weights came from the file */
        bf_flow_free(f);
    }
    bf_set_error("%s", "");
    bf_reverse *g = bf_reverse_load(path, 0);
    expect_loaded_or_message(g);
    if (g) {
        n_params = bf_reverse_num_params(g);
        if (n_params * sizeof(float) > size) abort();
        bf_reverse_free(g);
    }
    bf_set_error("%s", "");
    bf_features *fn = bf_features_load(path);
    expect_loaded_or_message(fn);
    if (fn) {
        if (bf_features_num_params(fn) * sizeof(float) > size) abort();
        bf_features_free(fn);
    }

    if (n_params * 4 * sizeof(float) <= size) {   /* a state needs 4 copies of the weights */
        bf_train_state s = {.n = n_params};
        float *buf = malloc(4 * n_params * sizeof(float));
        if (!buf) abort();
        s.params = buf;
        s.ema = buf + n_params;
        s.m = buf + 2 * n_params;
        s.v = buf + 3 * n_params;
        bf_set_error("%s", "");
        if (bf_train_state_load(&s, path) == 0) {
            if (s.step < 0) abort();
        } else {
            fuzz_expect_message();
        }
        free(buf);
    }
    reconcile(path);
    return 0;
}
