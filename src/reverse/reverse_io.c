/* Reverse-model checkpoints: safetensors with G's configuration and the forward model it was
 * trained against (path and SHA-256) in the metadata, so a mismatched pair is refused. */
#include "reverse.h"
#include "ckpt.h"
#include "core.h"

#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int bf_reverse_set_flow(bf_reverse *r, const char *flow_path, float sigma) {
    char path[1024];
    if (bf_resolve_model_path(path, sizeof path, flow_path, "flow_ema.safetensors",
                              "flow.safetensors", 1) ||
        bf_sha256_file(r->flow_sha256, path))
        return -1;
    snprintf(r->flow_path, sizeof r->flow_path, "%s", path);
    r->sigma = sigma;
    return 0;
}

int bf_reverse_check_flow(const bf_reverse *r, const bf_flow *f, const char *flow_path) {
    const bf_flow_config *fc = &f->cfg;
    const bf_reverse_config *rc = &r->cfg;
    if (fc->img_size != rc->img_size || fc->in_channels != rc->in_channels ||
        fc->patch_size != rc->patch_size || fc->num_blocks != rc->num_stages ||
        fc->num_classes != rc->num_classes) {
        bf_set_error("the forward model %s (%dx%dx%d, patch %d, %d blocks, %d classes) does not "
                     "have the shape the reverse model was trained for (%dx%dx%d, patch %d, %d "
                     "stages, %d classes)", flow_path, fc->img_size, fc->img_size, fc->in_channels,
                     fc->patch_size, fc->num_blocks, fc->num_classes, rc->img_size, rc->img_size,
                     rc->in_channels, rc->patch_size, rc->num_stages, rc->num_classes);
        return -1;
    }
    char path[1024], hex[65];
    if (bf_resolve_model_path(path, sizeof path, flow_path, "flow_ema.safetensors",
                              "flow.safetensors", 1) ||
        bf_sha256_file(hex, path))
        return -1;
    if (r->flow_sha256[0] && strcmp(hex, r->flow_sha256)) {
        bf_set_error("the reverse model was trained against %s (SHA-256 %.12s...), but %s has "
                     "SHA-256 %.12s...: not the same forward model", r->flow_path,
                     r->flow_sha256, path, hex);
        return -1;
    }
    return 0;
}

/* out = the folder of reverse_path (reverse_path itself when it is a folder) + the last
 * component of recorded. -1 when it does not fit. */
static int beside(char *out, size_t n, const char *reverse_path, const char *recorded) {
    struct stat sb;
    const char *base = strrchr(recorded, '/'), *slash = strrchr(reverse_path, '/');
    base = base ? base + 1 : recorded;
    int len;
    if (stat(reverse_path, &sb) == 0 && S_ISDIR(sb.st_mode))
        len = snprintf(out, n, "%s/%s", reverse_path, base);
    else
        len = snprintf(out, n, "%.*s%s", slash ? (int)(slash - reverse_path + 1) : 0, reverse_path, base);
    return len < 0 || (size_t)len >= n ? -1 : 0;
}

int bf_reverse_find_flow(const bf_reverse *r, const char *reverse_path, char *out, size_t n) {
    const char *path = r->flow_path;
    char alt[4096];
    if (!path[0]) {
        bf_set_error("the reverse model records no forward model: give the forward model's path");
        return -1;
    }
    if (access(path, F_OK) != 0 && reverse_path &&
        beside(alt, sizeof alt, reverse_path, path) == 0 && access(alt, F_OK) == 0)
        path = alt;
    if (snprintf(out, n, "%s", path) >= (int)n) {
        bf_set_error("path too long: %s", path);
        return -1;
    }
    return 0;
}

bf_flow *bf_reverse_load_flow(const bf_reverse *r, const char *flow_path,
                              const char *reverse_path) {
    char found[4096];
    if (!flow_path && bf_reverse_find_flow(r, reverse_path, found, sizeof found)) return NULL;
    const char *path = flow_path ? flow_path : found;
    bf_flow *f = bf_flow_load(path, 1);
    if (!f && !flow_path) {   /* the recorded path may be relative to where G was trained */
        char why[1024];
        snprintf(why, sizeof why, "%s", bf_last_error());
        bf_set_error("%s (the forward model the reverse model records%s; give its path)", why,
                     reverse_path ? ", also looked for beside the reverse model" : "");
    }
    if (f && bf_reverse_check_flow(r, f, path)) {
        bf_flow_free(f);
        return NULL;
    }
    return f;
}

#define FIELD(k) {#k, offsetof(bf_reverse_config, k), BF_META_INT, 1, 0}
static const bf_meta_field FIELDS[] = {
    FIELD(img_size), FIELD(in_channels), FIELD(patch_size), FIELD(num_classes),
    FIELD(num_stages), FIELD(channels), FIELD(head_dim), FIELD(layers_per_stage),
    FIELD(denoise_layers), FIELD(guidance_embed), FIELD(w_freq), FIELD(distill),
};
#undef FIELD
#define N_FIELDS ((int)(sizeof FIELDS / sizeof FIELDS[0]))

static double check_config(const void *cfg, const bf_safetensors *st, const char *path) {
    const bf_reverse_config *c = cfg;
    if (bf_reverse_config_check(c)) return bf_error_in_file(path);
    if (c->distill && c->num_stages + (c->denoise_layers > 0) > 1 &&
        !bf_st_get(st, "stages.1.reembed.pos_embed")) {
        bf_set_error("%s: a hidden-distillation G saved before its re-embedded stages had "
                     "positional embeddings (stages.N.reembed.pos_embed): those stages were "
                     "permutation-equivariant and could not invert F, so this version refuses "
                     "it; train it again (train-reverse --inverse distill)", path);
        return -1;
    }
    return bf_reverse_param_count(c);
}

static const bf_ckpt_kind KIND = {
    .format = "biflow-reverse", .what = "a reverse-model file",
    .fields = FIELDS, .n_fields = N_FIELDS, .check = check_config,
    .ema_name = "reverse_ema.safetensors", .raw_name = "reverse.safetensors",
};

int bf_reverse_save(const bf_reverse *r, const float *params, const char *path,
                    const char *extra_meta_json) {
    bf_st_writer *w = bf_ckpt_writer(&KIND, &r->cfg, NULL);
    bf_st_writer_meta(w, "flow_path", r->flow_path);
    bf_st_writer_meta(w, "flow_sha256", r->flow_sha256);
    bf_meta_float(w, "flow_sigma", r->sigma);
    bf_meta_add_json(w, extra_meta_json);
    bf_ckpt_add_params(w, params, r->info, r->n_info);
    return bf_ckpt_write(w, path);
}

bf_reverse *bf_reverse_load(const char *path_in, int use_ema) {
    bf_ckpt_file cf;
    bf_reverse_config c;
    if (bf_ckpt_open(&cf, path_in, use_ema, &KIND, &c)) return NULL;
    bf_reverse *r = bf_reverse_new(&c);
    if (r) {
        const char *fp = bf_st_meta(&cf.st, "flow_path"), *sha = bf_st_meta(&cf.st, "flow_sha256");
        snprintf(r->flow_path, sizeof r->flow_path, "%s", fp ? fp : "");
        snprintf(r->flow_sha256, sizeof r->flow_sha256, "%s", sha ? sha : "");
        if (bf_copy_tensors(r->params, r->info, r->n_info, &cf.st, cf.path, NULL) ||
            bf_meta_get_float(&cf.st, cf.path, "flow_sigma", &r->sigma, 0, 0.0f)) {
            bf_reverse_free(r);
            r = NULL;
        }
    }
    bf_st_free(&cf.st);
    return r;
}

int bf_reverse_export(const char *reverse, int use_ema, const char *flow, const char *out) {
    char dir[4096];   /* the folder written to is locked, as a trainer's run folder */
    const char *slash = strrchr(out, '/');
    snprintf(dir, sizeof dir, "%.*s", slash ? (int)(slash - out) + (slash == out) : 1, slash ? out : ".");
    bf_dir_lock lock;
    if (bf_dir_lock_take(&lock, dir)) return -1;
    bf_reverse *r = bf_reverse_load(reverse, use_ema);
    bf_flow *f = r ? bf_flow_load(flow, 1) : NULL;
    int rc = !f || bf_reverse_check_flow(r, f, flow) ||
             bf_reverse_set_flow(r, flow, bf_reverse_sigma(r)) ||
             bf_reverse_save(r, bf_reverse_params(r), out, NULL);
    bf_dir_unlock(&lock);
    bf_flow_free(f);
    bf_reverse_free(r);
    return rc ? -1 : 0;
}
