/* Reverse-model checkpoints: safetensors with G's configuration and the forward model it was
 * trained against (path and SHA-256) in the metadata, so a mismatched pair is refused. */
#include "reverse.h"
#include "ckpt.h"
#include "core.h"

#include <openssl/evp.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int bf_sha256_file(char hex[65], const char *path) {
    uint8_t *data;
    size_t size;
    if (bf_read_file(path, &data, &size, (size_t)1 << 34)) return -1;
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    int ok = EVP_Digest(data, size, md, &len, EVP_sha256(), NULL);
    free(data);
    if (!ok || len != 32) {
        bf_set_error("%s: SHA-256 failed", path);
        return -1;
    }
    for (int i = 0; i < 32; i++) snprintf(hex + 2 * i, 3, "%02x", md[i]);
    return 0;
}

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

int bf_reverse_save(const bf_reverse *r, const float *params, const char *path,
                    const char *extra_meta_json) {
    const bf_reverse_config *c = &r->cfg;
    bf_st_writer *w = bf_st_writer_new();
    bf_st_writer_meta(w, "format", "biflow-reverse");
    bf_meta_int(w, "img_size", c->img_size);
    bf_meta_int(w, "in_channels", c->in_channels);
    bf_meta_int(w, "patch_size", c->patch_size);
    bf_meta_int(w, "num_classes", c->num_classes);
    bf_meta_int(w, "num_stages", c->num_stages);
    bf_meta_int(w, "channels", c->channels);
    bf_meta_int(w, "head_dim", c->head_dim);
    bf_meta_int(w, "layers_per_stage", c->layers_per_stage);
    bf_meta_int(w, "denoise_layers", c->denoise_layers);
    bf_meta_int(w, "guidance_embed", c->guidance_embed);
    bf_meta_int(w, "w_freq", c->w_freq);
    bf_meta_int(w, "distill", c->distill);
    bf_st_writer_meta(w, "flow_path", r->flow_path);
    bf_st_writer_meta(w, "flow_sha256", r->flow_sha256);
    bf_meta_float(w, "flow_sigma", r->sigma);
    bf_meta_add_json(w, extra_meta_json);
    for (int i = 0; i < r->n_info; i++) {
        const bf_param_info *p = &r->info[i];
        bf_st_writer_add(w, p->name, BF_DT_F32, p->ndim, p->shape, params + p->offset);
    }
    int rc = bf_st_writer_save(w, path);
    bf_st_writer_free(w);
    return rc;
}

static int config_from_meta(bf_reverse_config *c, const bf_safetensors *st, const char *path) {
    const char *fmt = bf_st_meta(st, "format");
    if (!fmt || strcmp(fmt, "biflow-reverse")) {
        bf_set_error("%s: not a reverse-model file (metadata format '%s', expected "
                     "'biflow-reverse')", path, fmt ? fmt : "(none)");
        return -1;
    }
    struct { const char *key; int *v; } keys[] = {
        {"img_size", &c->img_size}, {"in_channels", &c->in_channels},
        {"patch_size", &c->patch_size}, {"num_classes", &c->num_classes},
        {"num_stages", &c->num_stages}, {"channels", &c->channels}, {"head_dim", &c->head_dim},
        {"layers_per_stage", &c->layers_per_stage}, {"denoise_layers", &c->denoise_layers},
        {"guidance_embed", &c->guidance_embed}, {"w_freq", &c->w_freq}, {"distill", &c->distill},
    };
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
        if (bf_meta_get_int(st, path, keys[i].key, keys[i].v, 1, 0)) return -1;
    if (bf_reverse_config_check(c)) return bf_error_in_file(path);
    return bf_check_param_total(st, path, bf_reverse_param_count(c), NULL);
}

bf_reverse *bf_reverse_load(const char *path_in, int use_ema) {
    char path[4096];
    if (bf_resolve_model_path(path, sizeof path, path_in, "reverse_ema.safetensors",
                              "reverse.safetensors", use_ema))
        return NULL;
    bf_safetensors st;
    if (bf_st_load(&st, path)) return NULL;
    bf_reverse_config c;
    bf_reverse *r = NULL;
    if (config_from_meta(&c, &st, path) == 0 && (r = bf_reverse_new(&c))) {
        const char *fp = bf_st_meta(&st, "flow_path"), *sha = bf_st_meta(&st, "flow_sha256");
        snprintf(r->flow_path, sizeof r->flow_path, "%s", fp ? fp : "");
        snprintf(r->flow_sha256, sizeof r->flow_sha256, "%s", sha ? sha : "");
        if (bf_copy_tensors(r->params, r->info, r->n_info, &st, path, NULL) ||
            bf_meta_get_float(&st, path, "flow_sigma", &r->sigma, 0, 0.0f)) {
            bf_reverse_free(r);
            r = NULL;
        }
    }
    bf_st_free(&st);
    return r;
}
