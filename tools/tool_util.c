/* Helpers shared by the biflow commands (see tool_util.h). */
#include "tool_util.h"
#include "cli.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int parse_classes(int *y, int n, const char *spec, int num_classes, int *ncols) {
    *ncols = 0;
    if (num_classes == 0) {
        for (int i = 0; i < n; i++) y[i] = -1;
        return 0;
    }
    if (!strcmp(spec, "all")) {
        int per = (n + num_classes - 1) / num_classes;
        for (int i = 0; i < n; i++) y[i] = i / per;
        *ncols = per;
        return 0;
    }
    if (!strcmp(spec, "none")) {
        for (int i = 0; i < n; i++) y[i] = -1;
        return 0;
    }
    int list[1024], k = 0;
    const char *p = spec;
    while (*p && k < 1024) {
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p || v < 0 || v >= num_classes || (*end && *end != ',')) break;
        list[k++] = (int)v;
        p = *end ? end + 1 : end;
    }
    if (*p || k == 0) {   /* also an empty spec: no label to cycle */
        bf_set_error("--class: '%s' is not 'all', 'none' or a list of labels in [0, %d)", spec,
                     num_classes);
        return -1;
    }
    for (int i = 0; i < n; i++) y[i] = list[i % k];
    return 0;
}

int write_arrays(const char *prefix, const float *x, const int *y, int n, int c, int h, int w) {
    char path[4096];
    size_t m = (size_t)n * c * h * w;
    uint8_t *u8 = bf_malloc(m);
    bf_images_to_u8(u8, x, m);
    int64_t shape[4] = {n, c, h, w}, ns = n;
    int64_t *lab = bf_malloc(sizeof(int64_t) * n);
    for (int i = 0; i < n; i++) lab[i] = y[i];
    int rc = 0;
    snprintf(path, sizeof path, "%s.npy", prefix);
    rc |= bf_write_npy(path, BF_DT_U8, 4, shape, u8);
    snprintf(path, sizeof path, "%s_labels.npy", prefix);
    rc |= bf_write_npy(path, BF_DT_I64, 1, &ns, lab);
    free(u8);
    free(lab);
    return rc ? -1 : 0;
}

int write_outputs(const char *prefix, const float *x, const int *y, int n, int c, int h, int w,
                  int ncols, int scale) {
    char path[4096];
    snprintf(path, sizeof path, "%s.png", prefix);
    if (bf_write_image_grid(path, x, n, c, h, w, ncols, scale)) return -1;
    return write_arrays(prefix, x, y, n, c, h, w);
}

bf_flow *paired_flow(const bf_reverse *r, const char *flow, const char *reverse_path) {
    return bf_reverse_load_flow(r, flow, reverse_path);
}

int resolve_shape(bf_flow_config *c, const shape_opts *s) {
    if (bf_flow_config_named(c, s->config)) return -1;
    if (s->width > 0) c->channels = s->width;
    if (s->blocks > 0) c->num_blocks = s->blocks;
    if (s->layers > 0) c->layers_per_block = s->layers;
    if (s->patch > 0) c->patch_size = s->patch;
    if (s->head_dim > 0) c->head_dim = s->head_dim;
    if (s->bound >= 0) c->bound = s->bound;
    return bf_flow_config_check(c);
}

int flow_denoise(const char *denoise, float sigma, const bf_flow *f, int *on, float *level) {
    float recorded = bf_flow_trained_sigma(f);
    *level = sigma >= 0 ? sigma : recorded;
    if (!strcmp(denoise, "learned"))
        return cli_usage("--denoise learned is G's denoising stage: give --reverse (F's samplers take "
                         "auto, score or none)");
    *on = !strcmp(denoise, "score") || (!strcmp(denoise, "auto") && recorded > 0);
    if (*on && !(*level > 0))
        return cli_usage("--denoise score needs --sigma > 0: the forward model records no training noise");
    return 0;
}

int reverse_denoise(const char *denoise, float sigma, const bf_reverse *r, bf_flow *f,
                    bf_reverse_sample_opts *o) {
    int stage = bf_reverse_get_config(r)->denoise_layers > 0;
    o->output = !strcmp(denoise, "learned") || (!strcmp(denoise, "auto") && stage)
              ? BF_REVERSE_OUT_CLEAN : BF_REVERSE_OUT_NOISY;
    if (o->output == BF_REVERSE_OUT_CLEAN && !stage)
        return cli_usage("--denoise learned: the reverse model has no denoising stage (auto, score or none)");
    if (strcmp(denoise, "score")) return 0;
    o->score_flow = f;
    o->sigma = sigma >= 0 ? sigma : bf_reverse_sigma(r);
    if (!(o->sigma > 0))
        return cli_usage("--denoise score needs --sigma > 0: the reverse model records no training noise");
    return 0;
}

int images_for_features(bf_image_set *s, const char *images, const char *labels, int limit,
                        const bf_features_config *fc) {
    if (bf_image_set_load_npy(s, images, limit) || (labels && bf_image_set_load_labels(s, labels)))
        goto fail;
    if (s->c == fc->in_channels && s->h == fc->height && s->w == fc->width) return 0;
    bf_set_error("%s: the images are %dx%dx%d but the feature network expects %dx%dx%d", images,
                 s->c, s->h, s->w, fc->in_channels, fc->height, fc->width);
fail:
    bf_image_set_free(s);
    return -1;
}

int feature_quality(const char *features, const char *data, const float *x, const int *y, int n,
                    double *fd, double *acc) {
    bf_features *fn = bf_features_load(features);
    bf_dataset ds = {0};
    if (!fn || bf_dataset_load(&ds, data, "test")) {
        bf_features_free(fn);
        return -1;
    }
    int F = bf_features_dim(fn), *pred = bf_malloc(sizeof(int) * n), hits = 0, labelled = 0;
    size_t m = (size_t)ds.n * ds.c * ds.h * ds.w;
    float *ref = bf_malloc(sizeof(float) * m), *feats = bf_malloc(sizeof(float) * (size_t)ds.n * F);
    for (size_t i = 0; i < m; i++) ref[i] = ds.pixels[i] / 127.5f - 1.0f;
    bf_feature_stats a = {0}, b = {0};
    int rc = bf_features_extract(fn, feats, NULL, ref, ds.n) ||
             bf_feature_stats_compute(&b, feats, ds.n, F) ||
             bf_features_extract(fn, feats, pred, x, n) ||
             bf_feature_stats_compute(&a, feats, n, F) || bf_frechet_distance_stats(fd, &a, &b);
    for (int i = 0; y && i < n; i++)
        if (y[i] >= 0) { labelled++; hits += pred[i] == y[i]; }
    *acc = labelled ? (double)hits / labelled : NAN;
    bf_feature_stats_free(&a); bf_feature_stats_free(&b);
    free(pred); free(ref); free(feats);
    bf_dataset_free(&ds);
    bf_features_free(fn);
    return rc ? -1 : 0;
}
