/* Forward-model checkpoints: safetensors with the public TARFlow tensor names, configuration
 * in __metadata__ as strings (as the reference fixture does). */
#include "flow.h"
#include "core.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <sys/stat.h>

static void meta_int(bf_st_writer *w, const char *key, int v) {
    char buf[32];
    snprintf(buf, sizeof buf, "%d", v);
    bf_st_writer_meta(w, key, buf);
}

int bf_flow_save(const bf_flow *f, const float *params, const char *path,
                 const char *extra_meta_json) {
    const bf_flow_config *c = &f->cfg;
    bf_st_writer *w = bf_st_writer_new();
    char buf[64];
    bf_st_writer_meta(w, "format", "tarflow");
    meta_int(w, "img_size", c->img_size);
    meta_int(w, "in_channels", c->in_channels);
    meta_int(w, "patch_size", c->patch_size);
    meta_int(w, "channels", c->channels);
    meta_int(w, "num_blocks", c->num_blocks);
    meta_int(w, "layers_per_block", c->layers_per_block);
    meta_int(w, "head_dim", c->head_dim);
    meta_int(w, "num_classes", c->num_classes);
    snprintf(buf, sizeof buf, "%.9g", (double)c->bound);
    bf_st_writer_meta(w, "bound", buf);
    if (extra_meta_json) {
        cJSON *j = cJSON_Parse(extra_meta_json);
        cJSON *it;
        if (j) cJSON_ArrayForEach(it, j) {
            if (cJSON_IsString(it)) bf_st_writer_meta(w, it->string, it->valuestring);
            else {
                char *s = cJSON_PrintUnformatted(it);
                bf_st_writer_meta(w, it->string, s);
                free(s);
            }
        }
        cJSON_Delete(j);
    }
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

/* Reads an integer configuration value from the metadata. */
static int meta_get_int(const bf_safetensors *st, const char *path, const char *key, int *out,
                        int required, int dflt) {
    const char *v = bf_st_meta(st, key);
    if (!v) {
        if (!required) { *out = dflt; return 0; }
        bf_set_error("%s: the metadata lacks '%s' (not a biflow/TARFlow checkpoint? convert "
                     "PyTorch files with dev/convert.py)", path, key);
        return -1;
    }
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (errno || *end || end == v || x < INT_MIN || x > INT_MAX) {
        bf_set_error("%s: metadata '%s' = '%s' is not an integer", path, key, v);
        return -1;
    }
    *out = (int)x;
    return 0;
}

static int config_from_meta(bf_flow_config *c, const bf_safetensors *st, const char *path) {
    const char *fmt = bf_st_meta(st, "format");
    if (fmt && strcmp(fmt, "tarflow")) {
        bf_set_error("%s: metadata format is '%s', expected 'tarflow' (a forward-model file)",
                     path, fmt);
        return -1;
    }
    if (meta_get_int(st, path, "img_size", &c->img_size, 1, 0) ||
        meta_get_int(st, path, "in_channels", &c->in_channels, 1, 0) ||
        meta_get_int(st, path, "patch_size", &c->patch_size, 1, 0) ||
        meta_get_int(st, path, "channels", &c->channels, 1, 0) ||
        meta_get_int(st, path, "num_blocks", &c->num_blocks, 1, 0) ||
        meta_get_int(st, path, "layers_per_block", &c->layers_per_block, 1, 0) ||
        meta_get_int(st, path, "head_dim", &c->head_dim, 0, 64) ||
        meta_get_int(st, path, "num_classes", &c->num_classes, 0, 0))
        return -1;
    const char *b = bf_st_meta(st, "bound");
    c->bound = 0.0f;
    if (b) {
        char *end;
        c->bound = strtof(b, &end);
        if (*end || end == b) {
            bf_set_error("%s: metadata 'bound' = '%s' is not a number", path, b);
            return -1;
        }
    }
    if (bf_flow_config_check(c)) {
        char msg[512];
        snprintf(msg, sizeof msg, "%s", bf_last_error());
        bf_set_error("%s: %s", path, msg);
        return -1;
    }
    return 0;
}

static int copy_tensors(bf_flow *f, const bf_safetensors *st, const char *path) {
    for (int i = 0; i < f->n_info; i++) {
        const bf_param_info *p = &f->info[i];
        const bf_tensor_view *t = bf_st_expect(st, p->name, BF_DT_F32, p->ndim, p->shape);
        if (!t) return -1;
        memcpy(f->params + p->offset, t->data, sizeof(float) * p->numel);
    }
    int64_t vshape[2] = {f->T, f->D};
    if (bf_st_get(st, "var")) {
        const bf_tensor_view *t = bf_st_expect(st, "var", BF_DT_F32, 2, vshape);
        if (!t) return -1;
        memcpy(f->var, t->data, sizeof(float) * (size_t)f->T * f->D);
    }
    /* every tensor in the file must be one we know: a strict load, like PyTorch's */
    for (int i = 0; i < st->n; i++) {
        const char *nm = st->tensors[i].name;
        int known = !strcmp(nm, "var");
        for (int k = 0; k < f->n_info && !known; k++) known = !strcmp(nm, f->info[k].name);
        if (!known) {
            bf_set_error("%s: unexpected tensor '%s' (the configuration in the metadata does "
                         "not match the tensors)", path, nm);
            return -1;
        }
    }
    for (size_t i = 0; i < f->num_params; i++)
        if (!isfinite(f->params[i])) {
            bf_set_error("%s: parameters contain NaN or Inf", path);
            return -1;
        }
    return 0;
}

/* A directory means a training run: its EMA weights, or the raw ones. */
static const char *resolve_path(const char *path, int use_ema, char *buf, size_t n) {
    struct stat sb;
    if (stat(path, &sb) == 0 && S_ISDIR(sb.st_mode)) {
        snprintf(buf, n, "%s/%s", path, use_ema ? "flow_ema.safetensors" : "flow.safetensors");
        return buf;
    }
    return path;
}

bf_flow *bf_flow_load(const char *path_in, int use_ema) {
    char buf[4096];
    const char *path = resolve_path(path_in, use_ema, buf, sizeof buf);
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
