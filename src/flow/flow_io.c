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

static const char *const EXTRA_TENSORS[] = {"var", NULL};

static double check_config(const void *cfg, const bf_safetensors *st, const char *path) {
    if (bf_flow_config_check(cfg)) return bf_error_in_file(path);
    return bf_flow_param_count(cfg);
}

static const bf_ckpt_kind KIND = {
    .format = "tarflow", .what = "a forward-model file",
    .format_optional = 1,   /* the reference fixture's files have none */
    .fields = FIELDS, .n_fields = N_FIELDS, .check = check_config, .extra_tensors = EXTRA_TENSORS,
    .ema_name = "flow_ema.safetensors", .raw_name = "flow.safetensors",
};

int bf_flow_save(const bf_flow *f, const float *params, const char *path,
                 const char *extra_meta_json) {
    bf_st_writer *w = bf_ckpt_writer(&KIND, &f->cfg, extra_meta_json);
    bf_ckpt_add_params(w, params, f->info, f->n_info);
    int64_t vshape[2] = {f->T, f->D};
    bf_st_writer_add(w, "var", BF_DT_F32, 2, vshape, f->var);
    return bf_ckpt_write(w, path);
}

static int copy_tensors(bf_flow *f, const bf_safetensors *st, const char *path) {
    if (bf_copy_tensors(f->params, f->info, f->n_info, st, path, EXTRA_TENSORS)) return -1;
    int64_t vshape[2] = {f->T, f->D};
    if (bf_st_get(st, "var")) {
        const bf_tensor_view *t = bf_st_expect(st, "var", BF_DT_F32, 2, vshape);
        if (!t) return -1;
        memcpy(f->var, t->data, sizeof(float) * (size_t)f->T * f->D);
    }
    return 0;
}

bf_flow *bf_flow_load(const char *path_in, int use_ema) {
    bf_ckpt_file cf;
    bf_flow_config c;
    if (bf_ckpt_open(&cf, path_in, use_ema, &KIND, &c)) return NULL;
    bf_flow *f = bf_flow_new(&c);
    if (f && copy_tensors(f, &cf.st, cf.path)) { bf_flow_free(f); f = NULL; }
    const char *noise = bf_st_meta(&cf.st, "noise"), *sigma = bf_st_meta(&cf.st, "sigma");
    if (f && noise && !strcmp(noise, "gauss")) {
        f->trained_gauss = 1;
        f->trained_sigma = sigma ? strtof(sigma, NULL) : 0.0f;
        if (!(f->trained_sigma >= 0.0f && f->trained_sigma < 10.0f)) f->trained_sigma = 0.0f;
    }
    bf_st_free(&cf.st);
    return f;
}

float bf_flow_trained_sigma(const bf_flow *f) {
    return f->trained_gauss && f->trained_sigma > 0.0f ? f->trained_sigma : 0.0f;
}

int bf_flow_trained_noise(const bf_flow *f, float *sigma) {
    if (sigma) *sigma = f->trained_gauss ? f->trained_sigma : 0.0f;
    return f->trained_gauss;
}
