/* Forward-model checkpoints: safetensors with the public TARFlow tensor names, configuration
 * in __metadata__ as strings (as the reference fixture does). */
#include "flow.h"
#include "core.h"
#include "ckpt.h"

#include <math.h>

#define FIELD(k, kind, req, d) {#k, offsetof(bf_flow_config, k), kind, req, d}
static const bf_meta_field FIELDS[] = {
    FIELD(img_size, BF_META_INT, 1, 0), FIELD(in_channels, BF_META_INT, 1, 0),
    FIELD(patch_size, BF_META_INT, 1, 0), FIELD(channels, BF_META_INT, 1, 0),
    FIELD(num_blocks, BF_META_INT, 1, 0), FIELD(layers_per_block, BF_META_INT, 1, 0),
    FIELD(head_dim, BF_META_INT, 0, 64), FIELD(num_classes, BF_META_INT, 0, 0),
    FIELD(bound, BF_META_FLOAT, 0, 0.0),   /* absent: no bound (the public code's) */
};
#undef FIELD
#define N_FIELDS ((int)(sizeof FIELDS / sizeof FIELDS[0]))

int bf_flow_save(const bf_flow *f, const float *params, const char *path,
                 const char *extra_meta_json) {
    bf_st_writer *w = bf_st_writer_new();
    bf_st_writer_meta(w, "format", "tarflow");
    bf_meta_write_fields(w, FIELDS, N_FIELDS, &f->cfg);
    bf_meta_add_json(w, extra_meta_json);
    for (int i = 0; i < f->n_info; i++) {
        const bf_param_info *p = &f->info[i];
        bf_st_writer_add(w, p->name, BF_DT_F32, p->ndim, p->shape, params + p->offset);
    }
    int64_t vshape[2] = {f->T, f->D};
    bf_st_writer_add(w, "var", BF_DT_F32, 2, vshape, f->var);
    int rc = bf_st_writer_save(w, path);
    bf_st_writer_free(w);
    return rc;
}

static int config_from_meta(bf_flow_config *c, const bf_safetensors *st, const char *path) {
    const char *fmt = bf_st_meta(st, "format");
    if (fmt && strcmp(fmt, "tarflow")) {
        bf_set_error("%s: metadata format is '%s', expected 'tarflow' (a forward-model file)",
                     path, fmt);
        return -1;
    }
    if (bf_meta_read_fields(st, path, FIELDS, N_FIELDS, c)) return -1;
    static const char *const also_ok[] = {"var", NULL};
    if (bf_flow_config_check(c)) return bf_error_in_file(path);
    return bf_check_param_total(st, path, bf_flow_param_count(c), also_ok);
}

static int copy_tensors(bf_flow *f, const bf_safetensors *st, const char *path) {
    static const char *const also_ok[] = {"var", NULL};
    if (bf_copy_tensors(f->params, f->info, f->n_info, st, path, also_ok)) return -1;
    int64_t vshape[2] = {f->T, f->D};
    if (bf_st_get(st, "var")) {
        const bf_tensor_view *t = bf_st_expect(st, "var", BF_DT_F32, 2, vshape);
        if (!t) return -1;
        memcpy(f->var, t->data, sizeof(float) * (size_t)f->T * f->D);
    }
    return 0;
}

bf_flow *bf_flow_load(const char *path_in, int use_ema) {
    char path[4096];
    if (bf_resolve_model_path(path, sizeof path, path_in, "flow_ema.safetensors",
                              "flow.safetensors", use_ema))
        return NULL;
    bf_safetensors st;
    if (bf_st_load(&st, path)) return NULL;
    bf_flow_config c;
    bf_flow *f = NULL;
    if (config_from_meta(&c, &st, path) == 0) {
        f = bf_flow_new(&c);
        if (f && copy_tensors(f, &st, path)) { bf_flow_free(f); f = NULL; }
        const char *noise = bf_st_meta(&st, "noise"), *sigma = bf_st_meta(&st, "sigma");
        if (f && noise && !strcmp(noise, "gauss")) {
            f->trained_gauss = 1;
            f->trained_sigma = sigma ? strtof(sigma, NULL) : 0.0f;
            if (!(f->trained_sigma >= 0.0f && f->trained_sigma < 10.0f)) f->trained_sigma = 0.0f;
        }
    }
    bf_st_free(&st);
    return f;
}

float bf_flow_trained_sigma(const bf_flow *f) {
    return f->trained_gauss && f->trained_sigma > 0.0f ? f->trained_sigma : 0.0f;
}

int bf_flow_trained_noise(const bf_flow *f, float *sigma) {
    if (sigma) *sigma = f->trained_gauss ? f->trained_sigma : 0.0f;
    return f->trained_gauss;
}
