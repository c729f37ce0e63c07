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

int bf_features_save(const bf_features *fn, const char *path, const char *extra_meta_json) {
    bf_st_writer *w = bf_st_writer_new();
    bf_st_writer_meta(w, "format", FEATURES_FORMAT);
    bf_meta_write_fields(w, FIELDS, N_FIELDS, &fn->cfg);
    bf_meta_add_json(w, extra_meta_json);
    for (int i = 0; i < fn->n_info; i++) {
        const bf_param_info *t = &fn->info[i];
        bf_st_writer_add(w, t->name, BF_DT_F32, t->ndim, t->shape, fn->params + t->offset);
    }
    int rc = bf_st_writer_save(w, path);
    bf_st_writer_free(w);
    return rc;
}

static int config_from_meta(bf_features_config *c, const bf_safetensors *st, const char *path) {
    const char *fmt = bf_st_meta(st, "format");
    if (!fmt || strcmp(fmt, FEATURES_FORMAT)) {
        bf_set_error("%s: metadata format is '%s', expected '%s' (a feature-network file "
                     "written by biflow train-features)", path, fmt ? fmt : "(none)",
                     FEATURES_FORMAT);
        return -1;
    }
    if (bf_meta_read_fields(st, path, FIELDS, N_FIELDS, c)) return -1;
    if (bf_features_config_check(c)) return bf_error_in_file(path);
    return bf_check_param_total(st, path, (double)bf_features_param_count(c), NULL);
}


bf_features *bf_features_load(const char *path_in) {
    char path[4096];   /* a training run's folder holds features.safetensors */
    if (bf_resolve_model_path(path, sizeof path, path_in, "features.safetensors",
                              "features.safetensors", 1))
        return NULL;
    bf_safetensors st;
    if (bf_st_load(&st, path)) return NULL;
    bf_features_config c;
    bf_features *fn = NULL;
    if (config_from_meta(&c, &st, path) == 0) {
        fn = bf_features_new(&c);
        if (fn && bf_copy_tensors(fn->params, fn->info, fn->n_info, &st, path, NULL)) { bf_features_free(fn); fn = NULL; }
    }
    bf_st_free(&st);
    return fn;
}
