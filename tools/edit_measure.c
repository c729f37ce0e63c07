/* Class editing measured (see edit_measure.h): the target class recognised, and what stays
 * of the source, against an unrelated image of the target class as the yardstick. */
#include "edit_measure.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <math.h>

/* The edits to another class than the source's, their sources, and a test image of the
 * target class for each (the one of rank (7 i + 3) mod count, a fixed choice). */
typedef struct {
    int m;                 /* pairs */
    float *edit, *src, *ref;   /* (m, C, H, W) each */
    int *target, *source;      /* (m) classes */
} edit_pairs;

static void pairs_free(edit_pairs *p) {
    free(p->edit); free(p->src); free(p->ref); free(p->target); free(p->source);
}

/* Test images of each class: idx[start[t] .. start[t + 1]) are those of class t. */
typedef struct { int *idx, *start; } class_index;

static void class_index_build(class_index *c, const bf_dataset *ds) {
    int K = ds->num_classes;
    c->idx = bf_malloc(sizeof(int) * (ds->n ? ds->n : 1));
    c->start = bf_calloc((size_t)K + 2, sizeof(int));
    for (int j = 0; j < ds->n; j++) c->start[ds->labels[j] + 2]++;
    for (int t = 0; t < K; t++) c->start[t + 2] += c->start[t + 1];
    for (int j = 0; j < ds->n; j++) c->idx[c->start[ds->labels[j] + 1]++] = j;
}

/* A test image of class t for pair number i: -1 when the split has none. */
static int pick_ref(const class_index *c, int K, int t, int i) {
    int count = t < K ? c->start[t + 1] - c->start[t] : 0;
    return count ? c->idx[c->start[t] + (7 * i + 3) % count] : -1;
}

static int pairs_build(edit_pairs *p, const bf_image_set *in, const bf_dataset *ds,
                       const float *out, const int *targets, int k) {
    size_t px = (size_t)in->c * in->h * in->w;
    class_index ci;
    class_index_build(&ci, ds);
    memset(p, 0, sizeof *p);
    p->edit = bf_malloc(sizeof(float) * px * in->n * k);
    p->src = bf_malloc(sizeof(float) * px * in->n * k);
    p->ref = bf_malloc(sizeof(float) * px * in->n * k);
    p->target = bf_malloc(sizeof(int) * in->n * k);
    p->source = bf_malloc(sizeof(int) * in->n * k);
    for (int i = 0; i < in->n; i++)
        for (int j = 0; j < k; j++) {
            int r = in->y[i] >= 0 && targets[j] != in->y[i] ? pick_ref(&ci, ds->num_classes, targets[j], p->m) : -1;
            if (r < 0) continue;
            const float *o = out + ((size_t)i * k + j) * px;   /* as saved: clamped to [-1, 1] */
            for (size_t q = 0; q < px; q++) p->edit[p->m * px + q] = o[q] < -1.0f ? -1.0f : o[q] > 1.0f ? 1.0f : o[q];
            memcpy(p->src + p->m * px, in->x + i * px, sizeof(float) * px);
            for (size_t q = 0; q < px; q++) p->ref[p->m * px + q] = ds->pixels[r * px + q] / 127.5f - 1.0f;
            p->target[p->m] = targets[j];
            p->source[p->m++] = in->y[i];
        }
    free(ci.idx);
    free(ci.start);
    return p->m;
}

/* Intersection over union of the foregrounds (pixels brighter than -0.75, a quarter of the
 * range above black) of two images of px pixels: how much of the silhouette is shared. */
static double silhouette_iou(const float *a, const float *b, size_t px) {
    size_t both = 0, any = 0;
    for (size_t q = 0; q < px; q++) {
        int fa = a[q] > -0.75f, fb = b[q] > -0.75f;
        both += fa && fb;
        any += fa || fb;
    }
    return any ? (double)both / (double)any : 1.0;
}

/* Means over the m pairs of |fa - fb| (features, F each), of the pixel mse of a vs b, and of
 * their silhouettes' IoU. */
static void distances(double out[3], const float *fa, const float *fb, const float *a,
                      const float *b, int m, int F, size_t px) {
    double sf = 0.0, sm = 0.0, si = 0.0;
    for (size_t i = 0; i < (size_t)m; i++) {
        double d2 = 0.0, e2 = 0.0;
        for (int f = 0; f < F; f++) d2 += pow(fa[i * F + f] - fb[i * F + f], 2);
        for (size_t q = 0; q < px; q++) e2 += pow(a[i * px + q] - b[i * px + q], 2);
        sf += sqrt(d2);
        sm += e2 / (double)px;
        si += silhouette_iou(a + i * px, b + i * px, px);
    }
    out[0] = sf / m;
    out[1] = sm / m;
    out[2] = si / m;
}

static int measure_pairs(bf_features *fn, const edit_pairs *p, size_t px) {
    int m = p->m, F = bf_features_dim(fn), *pred = bf_malloc(sizeof(int) * m), hit_t = 0, hit_s = 0;
    float *fe = bf_malloc(sizeof(float) * m * F), *fs = bf_malloc(sizeof(float) * m * F);
    float *fr = bf_malloc(sizeof(float) * m * F);
    int rc = bf_features_extract(fn, fs, NULL, p->src, m) || bf_features_extract(fn, fr, NULL, p->ref, m) ||
             bf_features_extract(fn, fe, pred, p->edit, m);
    for (int i = 0; !rc && i < m; i++) {
        hit_t += pred[i] == p->target[i];
        hit_s += pred[i] == p->source[i];
    }
    double e[3], r[3];
    if (!rc) {
        distances(e, fe, fs, p->edit, p->src, m, F, px);
        distances(r, fr, fs, p->ref, p->src, m, F, px);
        printf("  %d edits to another class: target class recognised in %.1f%% (still the source's "
               "class: %.1f%%)\n", m, 100.0 * hit_t / m, 100.0 * hit_s / m);
        printf("  kept of the source (edit vs an unrelated test image of the target class): feature "
               "distance %.2f vs %.2f (ratio %.2f), pixel mse %.4f vs %.4f, silhouette IoU %.3f vs "
               "%.3f\n", e[0], r[0], e[0] / r[0], e[1], r[1], e[2], r[2]);
    }
    free(pred); free(fe); free(fs); free(fr);
    return rc ? -1 : 0;
}

int edit_measure(const char *features, const char *data, const bf_image_set *in,
                 const float *out, const int *targets, int k) {
    bf_features *fn = bf_features_load(features);
    bf_dataset ds = {0};
    if (!fn || bf_dataset_load(&ds, data, "test")) {
        bf_features_free(fn);
        return -1;
    }
    edit_pairs p;
    int rc = 0;
    if ((size_t)ds.c * ds.h * ds.w != (size_t)in->c * in->h * in->w) {
        bf_set_error("the test split of %s holds images of another size than the edited ones", data);
        rc = -1;
    } else if (pairs_build(&p, in, &ds, out, targets, k) == 0) {
        printf("  no edit to another class than the source's (labelled) class: nothing to measure\n");
        pairs_free(&p);
    } else {
        rc = measure_pairs(fn, &p, (size_t)in->c * in->h * in->w);
        pairs_free(&p);
    }
    bf_dataset_free(&ds);
    bf_features_free(fn);
    return rc;
}
