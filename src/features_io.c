/* Feature-network checkpoints: safetensors with the tensors of the layer table and the
 * configuration in __metadata__ as strings (format "biflow-features"). */
#include "feature_net.h"
#include "ckpt.h"
#include "core.h"

#include <errno.h>
#include <limits.h>
#include <math.h>

#define FEATURES_FORMAT "biflow-features"

typedef struct { const char *key; size_t offset; int optional; } config_field;

/* the configuration as metadata keys, in one table for save and load */
static const config_field FIELDS[] = {
    {"in_channels", offsetof(bf_features_config, in_channels), 0},
    {"height", offsetof(bf_features_config, height), 0},
    {"width", offsetof(bf_features_config, width), 0},
    {"width1", offsetof(bf_features_config, width1), 0},
    {"width2", offsetof(bf_features_config, width2), 0},
    {"feat_dim", offsetof(bf_features_config, feat_dim), 0},
    {"num_classes", offsetof(bf_features_config, num_classes), 0},
    {"arch", offsetof(bf_features_config, arch), 1},   /* absent in files before it: 0 */
};
#define N_FIELDS ((int)(sizeof FIELDS / sizeof FIELDS[0]))

static int *field(bf_features_config *c, int i) { return (int *)((char *)c + FIELDS[i].offset); }

int bf_features_save(const bf_features *fn, const char *path, const char *extra_meta_json) {
    bf_st_writer *w = bf_st_writer_new();
    bf_features_config c = fn->cfg;
    char buf[32];
    bf_st_writer_meta(w, "format", FEATURES_FORMAT);
    for (int i = 0; i < N_FIELDS; i++) {
        snprintf(buf, sizeof buf, "%d", *field(&c, i));
        bf_st_writer_meta(w, FIELDS[i].key, buf);
    }
    bf_meta_add_json(w, extra_meta_json);
    for (int i = 0; i < fn->n_info; i++) {
        const bf_feat_tensor *t = &fn->info[i];
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
    for (int i = 0; i < N_FIELDS; i++) {
        const char *v = bf_st_meta(st, FIELDS[i].key);
        if (!v && FIELDS[i].optional) { *field(c, i) = 0; continue; }
        char *end;
        errno = 0;
        long x = v ? strtol(v, &end, 10) : 0;
        if (!v || errno || *end || end == v || x < INT_MIN || x > INT_MAX) {
            bf_set_error("%s: metadata '%s' is %s", path, FIELDS[i].key,
                         v ? "not an integer" : "missing");
            return -1;
        }
        *field(c, i) = (int)x;
    }
    if (bf_features_config_check(c)) return bf_error_in_file(path);
    return bf_check_param_total(st, path, (double)bf_features_param_count(c), NULL);
}

static int copy_tensors(bf_features *fn, const bf_safetensors *st, const char *path) {
    for (int i = 0; i < fn->n_info; i++) {
        const bf_feat_tensor *p = &fn->info[i];
        const bf_tensor_view *t = bf_st_expect(st, p->name, BF_DT_F32, p->ndim, p->shape);
        if (!t) return -1;
        memcpy(fn->params + p->offset, t->data, sizeof(float) * p->numel);
    }
    /* every tensor in the file must be one we know: a strict load */
    for (int i = 0; i < st->n; i++) {
        int known = 0;
        for (int k = 0; k < fn->n_info && !known; k++) known = !strcmp(st->tensors[i].name, fn->info[k].name);
        if (!known) {
            bf_set_error("%s: unexpected tensor '%s' (the configuration in the metadata does "
                         "not match the tensors)", path, st->tensors[i].name);
            return -1;
        }
    }
    for (int i = 0; i < fn->n_info; i++)
        for (size_t k = 0; k < fn->info[i].numel; k++)
            if (!isfinite(fn->params[fn->info[i].offset + k])) {
                bf_set_error("%s: tensor '%s' holds NaN or Inf (a diverged or damaged "
                             "checkpoint)", path, fn->info[i].name);
                return -1;
            }
    return 0;
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
        if (fn && copy_tensors(fn, &st, path)) { bf_features_free(fn); fn = NULL; }
    }
    bf_st_free(&st);
    return fn;
}
