/* Evaluation of the forward model: bits per dimension, FLOP counts. */
#include "core.h"
#include "flow.h"

#include <math.h>
#include <omp.h>

int bf_eval_bpd(bf_flow *f, const bf_dataset *ds, int batch, int limit, uint64_t seed,
                double *bpd, int verbose) {
    const bf_flow_config *c = &f->cfg;
    if (ds->c != c->in_channels || ds->h != c->img_size || ds->w != c->img_size) {
        bf_set_error("the data are %dx%dx%d images but the model expects %dx%dx%d",
                     ds->c, ds->h, ds->w, c->in_channels, c->img_size, c->img_size);
        return -1;
    }
    int n = limit > 0 && limit < ds->n ? limit : ds->n;
    if (batch <= 0) batch = 256;
    int nt = omp_get_max_threads(), per = (batch + nt - 1) / nt;   /* a shard per thread */
    size_t px = (size_t)ds->c * ds->h * ds->w;
    double sum = 0.0, t0 = bf_time();
    long nonfinite = 0, done = 0;
    int nchunks = (n + per - 1) / per;
#pragma omp parallel reduction(+ : sum, nonfinite)
    {
        bf_flow_acts a;
        bf_flow_acts_init(&a, f, per);
        float *img = bf_malloc(sizeof(float) * px * per), *tok = bf_malloc(sizeof(float) * px * per);
        int *y = bf_malloc(sizeof(int) * per), *idx = bf_malloc(sizeof(int) * per);
#pragma omp for schedule(dynamic, 1)
        for (int k = 0; k < nchunks; k++) {
            int s = k * per, m = n - s < per ? n - s : per;
            bf_rng rng;   /* the noise of each chunk depends on the seed and the chunk only */
            bf_rng_seed(&rng, seed * 1000003ull + (uint64_t)k);
            for (int i = 0; i < m; i++) idx[i] = s + i;
            bf_make_batch(img, y, ds, idx, m, BF_NOISE_UNIFORM, 0.0f, 0.0f, &rng);
            bf_patchify(tok, img, m, c->in_channels, c->img_size, c->img_size, c->patch_size);
            bf_flow_forward(f, f->params, &a, tok, c->num_classes ? y : NULL, m);
            for (int i = 0; i < m; i++) {
                if (isfinite(a.nll[i])) sum += a.nll[i];
                else nonfinite++;
            }
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
    if (nonfinite) {
        bf_set_error("%ld of %d test images gave a non-finite likelihood", nonfinite, n);
        return -1;
    }
    *bpd = (sum / n + log(128.0)) / log(2.0);
    return 0;
}

double bf_flow_forward_flops(const bf_flow_config *c, int n) {
    double T = bf_flow_tokens(c), D = bf_flow_token_dim(c), W = c->channels;
    double rows = (double)n * T;
    double per_layer = 2 * rows * W * (3 * W + W + 4 * W + 4 * W)   /* qkv, proj, fc1, fc2 */
                       + 2.0 * n * W * T * (T + 1);                 /* causal QK^T and AV */
    double per_block = 2 * rows * D * W + 2 * rows * W * 2 * D + c->layers_per_block * per_layer;
    return c->num_blocks * per_block;
}

/* backward costs two products per forward product (input and weight gradients) */
double bf_flow_train_flops(const bf_flow_config *c, int n) { return 3.0 * bf_flow_forward_flops(c, n); }
