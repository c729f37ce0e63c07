/* Feature-network checkpoints: safetensors with the tensors of the layer table and the
 * configuration in __metadata__ as strings (format "biflow-features"). */
#include "feature_net.h"
#include "ckpt.h"
#include "core.h"

#include <errno.h>
#include <limits.h>
#include <math.h>

#define FEATURES_FORMAT "biflow-features"

#define FIELD(k, req) {#k, offsetof(bf_features_config, k), BF_META_INT, req, 0}
static const bf_meta_field FIELDS[] = {
    FIELD(in_channels, 1), FIELD(height, 1), FIELD(width, 1), FIELD(width1, 1), FIELD(width2, 1),
    FIELD(feat_dim, 1), FIELD(num_classes, 1),
    FIELD(arch, 0),   /* absent in files before it: 0 (the evaluation network) */
};
#undef FIELD
#define N_FIELDS ((int)(sizeof FIELDS / sizeof FIELDS[0]))

static double check_config(const void *cfg, const bf_safetensors *st, const char *path) {
    if (bf_features_config_check(cfg)) return bf_error_in_file(path);
    return (double)bf_features_param_count(cfg);
}

static const bf_ckpt_kind KIND = {
    .format = FEATURES_FORMAT, .what = "a feature-network file written by biflow train-features",
    .fields = FIELDS, .n_fields = N_FIELDS, .check = check_config,
    /* a training run's folder holds features.safetensors */
    .ema_name = "features.safetensors", .raw_name = "features.safetensors",
};

int bf_features_save(const bf_features *fn, const char *path, const char *extra_meta_json) {
    bf_st_writer *w = bf_ckpt_writer(&KIND, &fn->cfg, extra_meta_json);
    bf_ckpt_add_params(w, fn->params, fn->info, fn->n_info);
    return bf_ckpt_write(w, path);
}

bf_features *bf_features_load(const char *path_in) {
    bf_ckpt_file cf;
    bf_features_config c;
    if (bf_ckpt_open(&cf, path_in, 1, &KIND, &c)) return NULL;
    bf_features *fn = bf_features_new(&c);
    if (fn && bf_copy_tensors(fn->params, fn->info, fn->n_info, &cf.st, cf.path, NULL)) {
        bf_features_free(fn);
        fn = NULL;
    }
    bf_st_free(&cf.st);
    return fn;
}
