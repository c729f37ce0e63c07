/* Evaluation: bits per dimension of F, the fidelity of G (G(F(x)) vs x). */
#include "core.h"
#include "dist.h"
#include "flow.h"
#include "reverse.h"

#include <math.h>
#include <omp.h>

/* cs (nchunks, 2): the NLL sum and the count of non-finite NLLs of chunks [k0, k1) of `per`
 * test images each, a chunk on one thread; the noise of a chunk depends on the seed and the
 * chunk alone, so a chunk's figures do not depend on which thread or process makes them. */
static void bpd_chunks(bf_flow *f, const bf_dataset *ds, int n, int per, int k0, int k1,
                       uint64_t seed, double *cs, int verbose) {
    const bf_flow_config *c = &f->cfg;
    size_t px = (size_t)ds->c * ds->h * ds->w;
    double t0 = bf_time();
    long done = 0;
#pragma omp parallel
    {
        bf_flow_acts a;
        bf_flow_acts_init(&a, f, per);
        float *img = bf_malloc(sizeof(float) * px * per), *tok = bf_malloc(sizeof(float) * px * per);
        int *y = bf_malloc(sizeof(int) * per), *idx = bf_malloc(sizeof(int) * per);
#pragma omp for schedule(dynamic, 1)
        for (int k = k0; k < k1; k++) {
            int s = k * per, m = n - s < per ? n - s : per;
            bf_rng rng;
            bf_rng_seed(&rng, seed * 1000003ull + (uint64_t)k);
            for (int i = 0; i < m; i++) idx[i] = s + i;
            bf_make_batch(img, y, ds, idx, m, BF_NOISE_UNIFORM, 0.0f, 0.0f, &rng);
            bf_patchify(tok, img, m, c->in_channels, c->img_size, c->img_size, c->patch_size);
            bf_flow_forward(f, f->params, &a, tok, c->num_classes ? y : NULL, m);
            double sum = 0.0, bad = 0.0;
            for (int i = 0; i < m; i++) {
                if (isfinite(a.nll[i])) sum += a.nll[i];
                else bad++;
            }
            cs[2 * k] = sum;
            cs[2 * k + 1] = bad;
            long d;
#pragma omp atomic capture
            d = done += m;
            if (verbose && omp_get_thread_num() == 0)
                fprintf(stderr, "\reval %ld/%d images | %.0f img/s   ", d, n, d / (bf_time() - t0));
        }
        bf_flow_acts_free(&a);
        free(img); free(tok); free(y); free(idx);
    }
    if (verbose) fprintf(stderr, "\n");
}

/* A chunk of images per thread of the job (its processes' threads, dist.h), the chunks spread
 * over the processes and their figures summed in chunk order: the same bits/dim however many
 * processes share the threads. */
int bf_eval_bpd(bf_flow *f, const bf_dataset *ds, int batch, int limit, uint64_t seed,
                double *bpd, int verbose) {
    const bf_flow_config *c = &f->cfg;
    if (bf_dataset_check_shape(ds, c->in_channels, c->img_size, c->num_classes)) return -1;
    int n = limit > 0 && limit < ds->n ? limit : ds->n;
    if (batch <= 0) batch = 256;
    int nt = omp_get_max_threads(), ranks = bf_dist_size(), r = bf_dist_rank();
    bf_dist_bcast(&nt, sizeof nt, 0);   /* rank 0's thread count is every process's */
    long threads = (long)nt * ranks;
    int per = (int)((batch + threads - 1) / threads), nchunks = (n + per - 1) / per;
    double *cs = bf_calloc((size_t)nchunks * 2, sizeof(double));
    bpd_chunks(f, ds, n, per, bf_shard_begin(nchunks, ranks, r), bf_shard_begin(nchunks, ranks, r + 1),
               seed, cs, verbose && r == 0);
    bf_dist_gather_rows(cs, nchunks, 2);
    double sum = 0.0, nonfinite = 0.0;
    for (int k = 0; k < nchunks; k++) {
        sum += cs[2 * k];
        nonfinite += cs[2 * k + 1];
    }
    free(cs);
    if (nonfinite > 0) {
        bf_set_error("%.0f of %d test images gave a non-finite likelihood", nonfinite, n);
        return -1;
    }
    *bpd = (sum / n + log(128.0)) / log(2.0);
    return 0;
}

/* ------------------------------------------------------------------ G */
int bf_reverse_eval_recon(bf_reverse *r, bf_flow *f, const bf_dataset *ds, int n, float sigma,
                          uint64_t seed, double *mse, double *psnr) {
    const bf_reverse_config *c = &r->cfg;
    if (bf_dataset_check_shape(ds, c->in_channels, c->img_size, c->num_classes)) return -1;
    if (n <= 0 || n > ds->n) n = ds->n;
    size_t px = (size_t)c->in_channels * c->img_size * c->img_size, N = (size_t)r->T * r->D;
    float *x = bf_malloc(sizeof(float) * n * px), *xn = bf_malloc(sizeof(float) * n * px);
    float *z = bf_malloc(sizeof(float) * n * N), *out = bf_malloc(sizeof(float) * n * px);
    int *y = bf_malloc(sizeof(int) * n);
    bf_rng rng;
    bf_rng_seed(&rng, seed);
    for (size_t i = 0; i < n * px; i++) {
        x[i] = bf_pixel_to_unit(ds->pixels[i]);
        xn[i] = x[i] + (sigma > 0 ? sigma * bf_rng_normal(&rng) : 0.0f);
    }
    for (int i = 0; i < n; i++) y[i] = c->num_classes ? ds->labels[i] : -1;
    bf_flow_encode(f, z, NULL, xn, y, n);
    bf_reverse_sample_opts so;
    bf_reverse_sample_opts_default(&so);
    if (!c->denoise_layers) so.output = BF_REVERSE_OUT_NOISY;
    int rc = bf_reverse_sample(r, out, z, y, n, &so, NULL);
    if (rc == 0) {
        double s = 0.0;
        for (size_t i = 0; i < n * px; i++) s += (double)(out[i] - x[i]) * (out[i] - x[i]);
        *mse = s / ((double)n * px);
        *psnr = 10.0 * log10(4.0 / *mse);
    }
    free(x); free(xn); free(z); free(out); free(y);
    return rc;
}
