/* Checkpoint helpers; see ckpt.h. */
#include "ckpt.h"
#include "core.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <sys/stat.h>

void bf_meta_int(bf_st_writer *w, const char *key, int v) {
    char buf[32];
    snprintf(buf, sizeof buf, "%d", v);
    bf_st_writer_meta(w, key, buf);
}

void bf_meta_float(bf_st_writer *w, const char *key, float v) {
    char buf[64];
    snprintf(buf, sizeof buf, "%.9g", (double)v);
    bf_st_writer_meta(w, key, buf);
}

void bf_meta_add_json(bf_st_writer *w, const char *json) {
    if (!json) return;
    cJSON *j = cJSON_Parse(json);
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

int bf_meta_get_int(const bf_safetensors *st, const char *path, const char *key, int *out,
                    int required, int dflt) {
    const char *v = bf_st_meta(st, key);
    if (!v) {
        if (!required) { *out = dflt; return 0; }
        bf_set_error("%s: metadata '%s' is missing (not a biflow/TARFlow checkpoint? convert "
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

int bf_meta_get_float(const bf_safetensors *st, const char *path, const char *key, float *out,
                      int required, float dflt) {
    const char *v = bf_st_meta(st, key);
    if (!v) {
        if (!required) { *out = dflt; return 0; }
        bf_set_error("%s: metadata '%s' is missing", path, key);
        return -1;
    }
    char *end;
    float x = strtof(v, &end);
    if (*end || end == v || !isfinite(x)) {
        bf_set_error("%s: metadata '%s' = '%s' is not a finite number", path, key, v);
        return -1;
    }
    *out = x;
    return 0;
}

void bf_meta_write_fields(bf_st_writer *w, const bf_meta_field *f, int n, const void *cfg) {
    for (int i = 0; i < n; i++) {
        const char *p = (const char *)cfg + f[i].offset;
        if (f[i].kind == BF_META_INT) bf_meta_int(w, f[i].key, *(const int *)p);
        else bf_meta_float(w, f[i].key, *(const float *)p);
    }
}

int bf_meta_read_fields(const bf_safetensors *st, const char *path, const bf_meta_field *f, int n,
                        void *cfg) {
    for (int i = 0; i < n; i++) {
        char *p = (char *)cfg + f[i].offset;
        int rc = f[i].kind == BF_META_INT
                     ? bf_meta_get_int(st, path, f[i].key, (int *)p, f[i].required, (int)f[i].dflt)
                     : bf_meta_get_float(st, path, f[i].key, (float *)p, f[i].required, (float)f[i].dflt);
        if (rc) return -1;
    }
    return 0;
}

int bf_resolve_model_path(char *out, size_t n, const char *path, const char *ema_name,
                          const char *raw_name, int use_ema) {
    struct stat sb;
    int len;
    if (stat(path, &sb) == 0 && S_ISDIR(sb.st_mode))
        len = snprintf(out, n, "%s/%s", path, use_ema ? ema_name : raw_name);
    else
        len = snprintf(out, n, "%s", path);
    if (len < 0 || (size_t)len >= n) {
        bf_set_error("path too long: %s", path);
        return -1;
    }
    return 0;
}

int bf_ckpt_open(bf_ckpt_file *f, const char *path_in, int use_ema, const bf_ckpt_kind *k,
                 void *cfg) {
    if (bf_resolve_model_path(f->path, sizeof f->path, path_in, k->ema_name, k->raw_name, use_ema) ||
        bf_st_load(&f->st, f->path))
        return -1;
    const char *fmt = bf_st_meta(&f->st, "format");
    if (fmt ? strcmp(fmt, k->format) != 0 : !k->format_optional) {
        bf_set_error("%s: not %s (metadata format '%s', expected '%s')", f->path, k->what,
                     fmt ? fmt : "(none)", k->format);
    } else if (bf_meta_read_fields(&f->st, f->path, k->fields, k->n_fields, cfg) == 0) {
        double count = k->check(cfg, &f->st, f->path);
        if (count >= 0 && bf_check_param_total(&f->st, f->path, count, k->extra_tensors) == 0)
            return 0;
    }
    bf_st_free(&f->st);
    return -1;
}

bf_st_writer *bf_ckpt_writer(const bf_ckpt_kind *k, const void *cfg, const char *extra_json) {
    bf_st_writer *w = bf_st_writer_new();
    bf_st_writer_meta(w, "format", k->format);
    bf_meta_write_fields(w, k->fields, k->n_fields, cfg);
    bf_meta_add_json(w, extra_json);
    return w;
}

void bf_ckpt_add_params(bf_st_writer *w, const float *params, const bf_param_info *info, int n) {
    for (int i = 0; i < n; i++)
        bf_st_writer_add(w, info[i].name, BF_DT_F32, info[i].ndim, info[i].shape,
                         params + info[i].offset);
}

int bf_ckpt_write(bf_st_writer *w, const char *path) {
    int rc = bf_st_writer_save(w, path);
    bf_st_writer_free(w);
    return rc;
}

int bf_copy_tensors(float *params, const bf_param_info *info, int n, const bf_safetensors *st,
                    const char *path, const char *const *also_ok) {
    for (int i = 0; i < n; i++) {
        const bf_param_info *p = &info[i];
        const bf_tensor_view *t = bf_st_expect(st, p->name, BF_DT_F32, p->ndim, p->shape);
        if (!t) return -1;
        memcpy(params + p->offset, t->data, sizeof(float) * p->numel);
        for (size_t k = 0; k < p->numel; k++)
            if (!isfinite(params[p->offset + k])) {
                bf_set_error("%s: tensor '%s' contains NaN or Inf", path, p->name);
                return -1;
            }
    }
    /* every tensor in the file must be one we know: a strict load, like PyTorch's */
    for (int i = 0; i < st->n; i++) {
        const char *nm = st->tensors[i].name;
        int known = 0;
        for (int k = 0; also_ok && also_ok[k] && !known; k++) known = !strcmp(nm, also_ok[k]);
        for (int k = 0; k < n && !known; k++) known = !strcmp(nm, info[k].name);
        if (!known) {
            bf_set_error("%s: unexpected tensor '%s' (the configuration in the metadata does "
                         "not match the tensors)", path, nm);
            return -1;
        }
    }
    return 0;
}

int bf_check_param_total(const bf_safetensors *st, const char *path, double expected,
                         const char *const *also_ok) {
    double held = 0.0;
    for (int i = 0; i < st->n; i++) {
        int skip = 0;
        for (int k = 0; also_ok && also_ok[k] && !skip; k++) skip = !strcmp(st->tensors[i].name, also_ok[k]);
        if (!skip) held += (double)st->tensors[i].numel;
    }
    if (expected > held) {
        bf_set_error("%s: the configuration in the metadata makes %.0f parameters, but the file's "
                     "tensors hold %.0f values (a damaged or mismatched checkpoint)", path,
                     expected, held);
        return -1;
    }
    return 0;
}

int bf_error_in_file(const char *path) {
    char msg[512];
    snprintf(msg, sizeof msg, "%s", bf_last_error());
    bf_set_error("%s: %s", path, msg);
    return -1;
}
