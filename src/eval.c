/* Evaluation of the forward model: bits per dimension, FLOP counts. */
#include "core.h"
#include "flow.h"

#include <math.h>

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
    bf_flow_acts a;
    bf_flow_acts_init(&a, f, batch);
    size_t px = (size_t)ds->c * ds->h * ds->w;
    float *img = bf_malloc(sizeof(float) * px * batch), *tok = bf_malloc(sizeof(float) * px * batch);
    int *y = bf_malloc(sizeof(int) * batch), *idx = bf_malloc(sizeof(int) * batch);
    bf_rng rng;
    bf_rng_seed(&rng, seed);
    double sum = 0.0, t0 = bf_time();
    long nonfinite = 0;
    for (int s = 0; s < n; s += batch) {
        int m = n - s < batch ? n - s : batch;
        for (int i = 0; i < m; i++) idx[i] = s + i;
        bf_make_batch(img, y, ds, idx, m, BF_NOISE_UNIFORM, 0.0f, 0.0f, &rng);
        bf_patchify(tok, img, m, c->in_channels, c->img_size, c->img_size, c->patch_size);
        bf_flow_forward(f, f->params, &a, tok, c->num_classes ? y : NULL, m);
        for (int i = 0; i < m; i++) {
            if (isfinite(a.nll[i])) sum += a.nll[i];
            else nonfinite++;
        }
        if (verbose)
            fprintf(stderr, "\reval %d/%d images | bpd so far %.4f | %.0f img/s   ", s + m, n,
                    (sum / (s + m - nonfinite) + log(128.0)) / log(2.0), (s + m) / (bf_time() - t0));
    }
    if (verbose) fprintf(stderr, "\n");
    bf_flow_acts_free(&a);
    free(img); free(tok); free(y); free(idx);
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
