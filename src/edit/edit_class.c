/* Class editing (METHOD Section 9) with a strength: x' = decode(F(x | t) + s (F(x | y) -
 * F(x | t)) | t) for s in [0, 1]; above 1, more passes, each editing the previous pass's result
 * again (re-encoded under the source label y), the last with the fractional part as its s.
 * With a verifier (a classifier that is not the evaluation network) each edit stops at the
 * first strength of a ladder whose image the verifier reads as the target: the gentlest edit
 * that shows the target class. */
#include "edit.h"
#include "reverse.h"
#include "core.h"

#include <math.h>

#define RUNG 0.25f          /* the ladder's step */
#define MAX_STRENGTH 16.0f  /* passes */

void bf_edit_opts_default(bf_edit_opts *o) {
    memset(o, 0, sizeof *o);
    o->strength = 1.0f;
}

static int check_opts(const bf_edit_opts *o) {
    if (!(o->strength >= 0.0f && o->strength <= MAX_STRENGTH) ||
        (o->verify && !(o->min_strength >= 0.0f && o->min_strength <= o->strength))) {
        bf_set_error("class editing: the strength must be in [0, %g] (not %g) and the least "
                     "strength in [0, strength] (not %g)", (double)MAX_STRENGTH,
                     (double)o->strength, (double)o->min_strength);
        return -1;
    }
    if (o->verify && bf_features_get_config(o->verify)->arch == BF_FEAT_ARCH_FD) {
        bf_set_error("class editing: the verifier is a network of the evaluation architecture; "
                     "give another classifier (the perceptual network) so that the evaluation "
                     "network stays an independent yardstick");
        return -1;
    }
    return 0;
}

/* Work of the edits of n images to one target t. */
typedef struct {
    const bf_editor *e;
    const bf_image_set *in;
    const bf_edit_opts *o;
    int *yt, *pred;         /* (n) the target; the verifier's classes */
    uint8_t *done;          /* (n) 1: the edit has been accepted */
    float *base, *x;        /* (n, C, H, W) the pass's input; a decode */
    float *zs, *zt, *z;     /* (n, T, D) F(base | y), F(base | t), their mix */
} edit_ws;

/* Rung j of the ladder (with a verifier: min_strength, + RUNG, ..., strength; without: the
 * strength alone); -1 past its end. */
static float rung_at(const bf_edit_opts *o, int j) {
    float lo = o->verify ? o->min_strength : o->strength, top = o->strength, r = lo + j * RUNG;
    if (j > 0 && lo + (j - 1) * RUNG >= top - 1e-4f) return -1.0f;
    return r > top - 1e-4f ? top : r;
}

/* The pass of rung r: pass b holds the strengths in (b, b + 1], and pass 0 also 0. */
static int pass_of(float r) { return r <= 1.0f ? 0 : (int)ceilf(r - 1e-4f) - 1; }

/* Decodes the mix at s of the current encodings into ws->x (s = 1: F(base | y) itself); unless
 * verified, copies it to out (n, C, H, W) and, with a verifier, marks those it reads as the
 * target (not at the last rung: what is left takes it). */
static int rung(edit_ws *w, float *out, float s, int last) {
    int n = w->in->n;
    size_t px = (size_t)w->in->c * w->in->h * w->in->w, m = n * bf_edit_tokens(w->e);
    for (size_t i = 0; i < m; i++) w->z[i] = s == 1.0f ? w->zs[i] : w->zt[i] + s * (w->zs[i] - w->zt[i]);
    if (bf_edit_decode(w->e, w->x, w->z, w->yt, n)) return -1;
    if (w->o->verify && !last && bf_features_extract(w->o->verify, NULL, w->pred, w->x, n)) return -1;
    for (int i = 0; i < n; i++) {
        if (w->done[i]) continue;
        memcpy(out + i * px, w->x + i * px, sizeof(float) * px);
        w->done[i] = w->o->verify && !last && w->pred[i] == w->yt[i];
    }
    return 0;
}

/* Pass b: encodes its input under y (and under t when a rung mixes), decodes its rungs, then
 * the full pass's result (s = 1) becomes the next pass's input. */
static int edit_pass(edit_ws *w, float *out, int b, int passes) {
    int n = w->in->n, mixes = 0, full = 0;
    size_t px = (size_t)w->in->c * w->in->h * w->in->w;
    for (int j = 0; rung_at(w->o, j) >= 0.0f; j++)
        mixes |= pass_of(rung_at(w->o, j)) == b && rung_at(w->o, j) - (float)b < 1.0f;
    if (bf_flow_encode(w->e->flow, w->zs, NULL, w->base, w->in->y, n) ||
        (mixes && bf_flow_encode(w->e->flow, w->zt, NULL, w->base, w->yt, n)))
        return -1;
    for (int j = 0; rung_at(w->o, j) >= 0.0f; j++) {
        float r = rung_at(w->o, j), s = r - (float)b;
        if (pass_of(r) != b) continue;
        if (fabsf(s - 1.0f) < 1e-4f) s = 1.0f;
        if (rung(w, out, s, rung_at(w->o, j + 1) < 0.0f)) return -1;
        full = s == 1.0f;   /* ws->x holds the full pass */
    }
    if (b + 1 >= passes) return 0;
    if (!full && bf_edit_decode(w->e, w->x, w->zs, w->yt, n)) return -1;
    memcpy(w->base, w->x, sizeof(float) * n * px);
    return 0;
}

static int edit_to(edit_ws *w, float *out, int t) {
    int n = w->in->n, passes = pass_of(w->o->strength) + 1;
    size_t px = (size_t)w->in->c * w->in->h * w->in->w;
    for (int i = 0; i < n; i++) { w->yt[i] = t; w->done[i] = 0; }
    memcpy(w->base, w->in->x, sizeof(float) * n * px);
    for (int b = 0; b < passes; b++) {
        int open = 0;
        for (int i = 0; i < n; i++) open += !w->done[i];
        if (open == 0) break;
        if (edit_pass(w, out, b, passes)) return -1;
    }
    return 0;
}

int bf_edit_class(const bf_editor *e, float *out, const bf_image_set *in, const int *targets,
                  int k, const bf_edit_opts *o) {
    bf_edit_opts defaults;
    if (!o) {   /* NULL: the defaults */
        bf_edit_opts_default(&defaults);
        o = &defaults;
    }
    if (!out || !targets) { bf_set_error("class editing needs an output buffer and the targets"); return -1; }
    if (bf_edit_check_set(e, in) || bf_edit_check_labels(targets, k, e->reverse->cfg.num_classes, "target") ||
        check_opts(o))
        return -1;
    if (k < 1) { bf_set_error("class editing needs at least one target class"); return -1; }
    int n = in->n;
    size_t px = (size_t)in->c * in->h * in->w, N = bf_edit_tokens(e);
    edit_ws w = {e, in, o, bf_malloc(sizeof(int) * n), bf_malloc(sizeof(int) * n), bf_malloc(n),
                 bf_malloc(sizeof(float) * n * px), bf_malloc(sizeof(float) * n * px),
                 bf_malloc(sizeof(float) * n * N), bf_malloc(sizeof(float) * n * N),
                 bf_malloc(sizeof(float) * n * N)};
    float *res = bf_malloc(sizeof(float) * n * px);
    int rc = 0;
    for (int j = 0; j < k && rc == 0; j++) {
        rc = edit_to(&w, res, targets[j]);
        for (int i = 0; rc == 0 && i < n; i++)   /* image i's row holds its k edits */
            memcpy(out + ((size_t)i * k + j) * px, res + i * px, sizeof(float) * px);
    }
    free(w.yt); free(w.pred); free(w.done); free(w.base); free(w.x);
    free(w.zs); free(w.zt); free(w.z); free(res);
    return rc;
}
