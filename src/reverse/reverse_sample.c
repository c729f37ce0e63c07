/* One-pass sampling with G: 1 NFE with the guidance scale as an input, or inference-time
 * guidance (1 + w) G(z | y) - w G(z | null) with 2 NFE. Chunks of images over the threads. */
#include "reverse.h"
#include "core.h"

#include <math.h>
#include <omp.h>

void bf_reverse_sample_opts_default(bf_reverse_sample_opts *o) {
    memset(o, 0, sizeof *o);
    o->output = BF_REVERSE_OUT_CLEAN;
    o->batch = 32;
}

static int output_stage(const bf_reverse *r, bf_reverse_output out) {
    if (out == BF_REVERSE_OUT_NOISY) return r->cfg.num_stages - 1;
    if (r->cfg.denoise_layers == 0) {
        bf_set_error("this reverse model has no learned denoising stage (trained with --denoise "
                     "none): sample with --denoise none or score");
        return -1;
    }
    return r->S - 1;
}

/* One chunk of m images: head s of G (z | y, w), or the two-pass guided combination. */
static void decode_chunk(bf_reverse *r, bf_reverse_acts *ac, bf_reverse_acts *au, float *out,
                         const float *z, const int *y, int m, float cfg, int two_pass, int s) {
    size_t N = (size_t)r->T * r->D;
    float wbuf[256], *w = m <= 256 ? wbuf : bf_malloc(sizeof(float) * m);
    /* null-class rows at w = 0: the only guidance they were trained with */
    for (int i = 0; i < m; i++) w[i] = two_pass || !y || y[i] < 0 ? 0.0f : cfg;
    bf_reverse_forward(r, r->params, ac, z, y, r->cfg.guidance_embed ? w : NULL, m);
    memcpy(out, bf_reverse_head(ac, r, s), sizeof(float) * m * N);
    if (two_pass) {
        bf_reverse_forward(r, r->params, au, z, NULL, NULL, m);
        const float *u = bf_reverse_head(au, r, s);
        for (size_t i = 0; i < m * N; i++) out[i] = (1.0f + cfg) * out[i] - cfg * u[i];
    }
    if (w != wbuf) free(w);
}

int bf_reverse_decode_tokens(bf_reverse *r, float *out, const float *z, const int *y, int n,
                             const bf_reverse_sample_opts *o) {
    int s = output_stage(r, o->output);
    if (s < 0) return -1;
    if (!isfinite(o->cfg) || o->cfg < 0.0f) {
        bf_set_error("guidance weight must be a finite number >= 0, not %g", (double)o->cfg);
        return -1;
    }
    if (bf_labels_check(y, n, r->cfg.num_classes)) return -1;
    if (n == 0) return 0;
    int two_pass = o->cfg != 0.0f && (!r->cfg.guidance_embed || o->cfg_two_pass);
    int chunk = o->batch > 0 ? o->batch : 32;
    if (chunk > n) chunk = n;
    int nchunks = (n + chunk - 1) / chunk;
    int nt = omp_get_max_threads() < nchunks ? omp_get_max_threads() : nchunks;
    size_t N = (size_t)r->T * r->D;
    bf_reverse_acts *acts = bf_reverse_cached_acts(r, 2 * nt, chunk);
#pragma omp parallel for num_threads(nt) schedule(dynamic, 1) if (nt > 1)
    for (int k = 0; k < nchunks; k++) {
        int t = omp_get_thread_num(), b0 = k * chunk, m = n - b0 < chunk ? n - b0 : chunk;
        decode_chunk(r, &acts[2 * t], &acts[2 * t + 1], out + b0 * N, z + b0 * N,
                     y ? y + b0 : NULL, m, o->cfg, two_pass, s);
    }
    return 0;
}

int bf_reverse_sample(bf_reverse *r, float *x, const float *z, const int *y, int n,
                      const bf_reverse_sample_opts *o, bf_sample_stats *stats) {
    const bf_reverse_config *c = &r->cfg;
    size_t N = (size_t)r->T * r->D;
    float *tok = bf_malloc(sizeof(float) * n * N);
    double t0 = bf_time();
    int rc = bf_reverse_decode_tokens(r, tok, z, y, n, o);
    /* score denoising in batches of 64: the activations of F's backward stay small */
    for (int s = 0; rc == 0 && o->score_flow && s < n; s += 64)
        rc = bf_flow_score_denoise(o->score_flow, tok + s * N, y ? y + s : NULL,
                                   n - s < 64 ? n - s : 64, o->sigma);
    if (rc == 0) bf_unpatchify(x, tok, n, c->in_channels, c->img_size, c->img_size, c->patch_size);
    double t1 = bf_time();
    free(tok);
    if (stats) {
        memset(stats, 0, sizeof *stats);
        stats->seconds = t1 - t0;
        for (size_t i = 0; rc == 0 && i < n * N; i++) stats->nonfinite += !isfinite(x[i]);
    }
    return rc;
}
