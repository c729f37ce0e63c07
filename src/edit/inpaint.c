/* Inpainting (METHOD Section 9, made iterative): z' = M F(x) + (1 - M) eps decoded once, then
 * K rounds of "paste the known pixels back, re-encode with F, renoise the unknown tokens,
 * decode". The decoder is G in one pass or, for comparison, the exact inverse of F. The
 * output's known pixels are copied from the input, so they are exact whatever the decoder. */
#include "edit.h"
#include "reverse.h"
#include "core.h"

#include <math.h>

void bf_inpaint_opts_default(bf_inpaint_opts *o) {
    memset(o, 0, sizeof *o);
    o->iters = 3;        /* the measured choice: docs/RESULTS-edit.md */
    o->candidates = 4;
    o->renoise = 1.0f;
}

static int check_opts(const bf_inpaint_opts *o) {
    if (o->iters < 0 || o->iters > 1000 || o->candidates < 0 || o->candidates > 1000 || !(o->renoise >= 0.0f && o->renoise <= 1.0f) ||
        !(o->soft >= 0.0f && o->soft <= 1.0f)) {
        bf_set_error("inpainting options: iterations and candidates must be in 0..1000 (not %d, %d), renoise in [0, 1] "
                     "(not %g) and soft in [0, 1] (not %g)", o->iters, o->candidates, (double)o->renoise,
                     (double)o->soft);
        return -1;
    }
    return 0;
}

/* Work buffers of one call. */
typedef struct {
    float *x;       /* (n, C, H, W) the image encoded next */
    float *zx;      /* (n, T, D) its encoding */
    float *z;       /* (n, T, D) the noise decoded */
    float *cand;    /* (n, C, H, W) a candidate decode */
    double *err;    /* (n) known-region error of the decode kept */
    float *m;       /* (T) token weights */
} inpaint_ws;

/* Squared error of a against b over the known pixels of pix, one image of c channels. */
static double known_error(const float *a, const float *b, const uint8_t *pix, int c, int img) {
    size_t hw = (size_t)img * img;
    double s = 0.0;
    for (size_t k = 0; k < (size_t)c; k++)
        for (size_t i = 0; i < hw; i++)
            if (pix[i]) {
                double d = (double)a[k * hw + i] - b[k * hw + i];
                s += d * d;
            }
    return s;
}

/* One round: encode ws->x, then for each of the candidates mix fresh noise at strength r and
 * decode; dec (n, C, H, W) keeps, per image, the decode closest to the input's known pixels. */
static int inpaint_round(const bf_editor *e, inpaint_ws *ws, float *dec, const bf_image_set *in,
                         const uint8_t *pix, const bf_inpaint_opts *o, float r, bf_rng *rng) {
    int n = in->n, img = in->h, C = o->candidates > 1 ? o->candidates : 1;
    size_t N = bf_edit_tokens(e), px = (size_t)in->c * img * img;
    if (bf_flow_encode(e->flow, ws->zx, NULL, ws->x, in->y, n)) return -1;
    for (int c = 0; c < C; c++) {
        for (size_t i = 0; i < n * N; i++) ws->z[i] = bf_rng_normal(rng);
        bf_inpaint_mix_soft(ws->z, ws->zx, ws->z, ws->m, r, n, e->flow->T, e->flow->D);
        float *d = c == 0 ? dec : ws->cand;
        if (bf_edit_decode(e, d, ws->z, in->y, n)) return -1;
        for (int i = 0; i < n; i++) {
            double err = known_error(d + i * px, in->x + i * px, pix, in->c, img);
            if (c > 0 && err < ws->err[i]) memcpy(dec + i * px, d + i * px, sizeof(float) * px);
            if (c == 0 || err < ws->err[i]) ws->err[i] = err;
        }
    }
    return 0;
}

int bf_inpaint(const bf_editor *e, float *out, float *raw, const bf_image_set *in,
               const uint8_t *pix, const bf_inpaint_opts *o) {
    bf_inpaint_opts defaults;
    if (!o) {   /* NULL: the defaults */
        bf_inpaint_opts_default(&defaults);
        o = &defaults;
    }
    if (!out || !pix) { bf_set_error("inpainting needs an output buffer and a pixel mask"); return -1; }
    if (bf_edit_check_set(e, in) || check_opts(o)) return -1;
    const bf_reverse_config *c = &e->reverse->cfg;
    int n = in->n, img = c->img_size;
    size_t px = (size_t)in->c * in->h * in->w, N = bf_edit_tokens(e);
    inpaint_ws ws = {bf_malloc(sizeof(float) * n * px), bf_malloc(sizeof(float) * n * N),
                     bf_malloc(sizeof(float) * n * N), bf_malloc(sizeof(float) * n * px),
                     bf_malloc(sizeof(double) * n), bf_malloc(sizeof(float) * e->flow->T)};
    float *dec = raw ? raw : bf_malloc(sizeof(float) * n * px);
    bf_mask_token_weights(ws.m, pix, img, c->patch_size, o->soft);
    memcpy(ws.x, in->x, sizeof(float) * n * px);
    if (!o->encode_full) bf_pixmask_fill(ws.x, pix, 0.0f, n, in->c, img);
    bf_rng rng;
    bf_rng_seed(&rng, o->seed);
    int rc = 0;
    for (int k = 0; k <= o->iters && rc == 0; k++) {
        rc = inpaint_round(e, &ws, dec, in, pix, o, k == 0 ? 1.0f : o->renoise, &rng);
        memcpy(ws.x, dec, sizeof(float) * n * px);   /* the next input: known pixels pasted */
        bf_pixmask_paste(ws.x, in->x, pix, n, in->c, img);
    }
    if (rc == 0) memcpy(out, ws.x, sizeof(float) * n * px);
    free(ws.x); free(ws.zx); free(ws.z); free(ws.cand); free(ws.err); free(ws.m);
    if (dec != raw) free(dec);
    return rc;
}
