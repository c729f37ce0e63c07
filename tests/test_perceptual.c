/* The perceptual distance of G's training: its gradient through the frozen feature network,
 * its zero, and a short training run with it. */
#include "test.h"
#include "gradcheck.h"
#include "tiny_models.h"
#include "../src/perceptual.h"

#include <string.h>

typedef struct {
    bf_perceptual p;
    bf_feat_acts ap, at;
    float *pred, *target, *dpred;
    int n;
} perc_ctx;

static double perc_loss(void *c) {
    perc_ctx *m = c;
    float *scratch = bf_gc_zeros((size_t)m->n * 64);
    double l = bf_perceptual_loss(&m->p, &m->ap, &m->at, scratch, m->pred, m->target, m->n, NULL);
    free(scratch);
    return l;
}
static void perc_backward(void *c) {
    perc_ctx *m = c;
    bf_perceptual_loss(&m->p, &m->ap, &m->at, m->dpred, m->pred, m->target, m->n, NULL);
}

static bf_features *tiny_features(uint64_t seed) {
    bf_features_config c = {1, 8, 8, 4, 6, 8, 3, BF_FEAT_ARCH_FD};
    bf_features *fn = bf_features_new(&c);
    bf_features_init(fn, seed);
    return fn;
}

/* With the adaptive weight off the loss is a plain function of the prediction: its gradient
 * through normalisation and the frozen network must match finite differences. A small step
 * keeps the differences from crossing ReLU and max-pool kinks. */
TEST(perceptual_gradient_finite_difference) {
    perc_ctx m = {0};
    bf_features *fn = tiny_features(3);
    m.n = 2;
    bf_perceptual_init(&m.p, fn, 0.7f, 0.0f, 0.01f);
    CHECK(m.p.n_layers == 5);   /* four convolutions and the feature layer */
    bf_feat_acts_init(&m.ap, fn, m.n);
    bf_feat_acts_init(&m.at, fn, m.n);
    m.pred = bf_gc_randn(4, 128, 0.0f, 0.6f);
    m.target = bf_gc_randn(5, 128, 0.0f, 0.6f);
    m.dpred = bf_gc_zeros(128);
    bf_gc_tensor t[] = {{"pred", m.pred, m.dpred, 128}};
    bf_gc_problem p = {perc_loss, perc_backward, &m, 3e-2, 1e-3, 2e-4, 24, 7, 0, 0};
    CHECK(bf_gradcheck("perceptual", &p, t, 1) == 0);
    bf_feat_acts_free(&m.ap);
    bf_feat_acts_free(&m.at);
    free(m.pred); free(m.target); free(m.dpred);
    bf_features_free(fn);
}

/* Zero on identical images, also after a change of scale (the features are normalised);
 * positive otherwise, and the adaptive weight maps D to D / (D + eps). */
TEST(perceptual_zero_scale_and_adaptive_weight) {
    bf_features *fn = tiny_features(6);
    bf_perceptual p;
    bf_feat_acts ap, at;
    bf_feat_acts_init(&ap, fn, 1);
    bf_feat_acts_init(&at, fn, 1);
    float *x = bf_gc_randn(8, 64, 0.0f, 0.5f), *y = bf_gc_randn(9, 64, 0.0f, 0.5f);
    float *d = bf_gc_zeros(64);
    bf_perceptual_init(&p, fn, 1.0f, 0.0f, 0.01f);
    double raw, l0 = bf_perceptual_loss(&p, &ap, &at, d, x, x, 1, &raw);
    CHECK(l0 < 1e-10 && raw < 1e-10);
    double l1 = bf_perceptual_loss(&p, &ap, &at, d, x, y, 1, &raw);
    CHECK(l1 > 1e-3 && fabs(l1 - raw / p.n_layers) < 1e-12);
    /* each layer has its own adaptive weight: mean over layers of D_l / (D_l + eps) */
    double D[BF_PERC_MAX_LAYERS], want = 0.0, sum = 0.0;
    bf_perceptual_distances(&p, &ap, &at, D, x, y, 1);
    for (int j = 0; j < p.n_layers; j++) { want += D[j] / (D[j] + 0.01) / p.n_layers; sum += D[j]; }
    CHECK_NEAR(sum, raw, 1e-9 * (1 + raw));
    bf_perceptual_init(&p, fn, 1.0f, 1.0f, 0.01f);
    double l2 = bf_perceptual_loss(&p, &ap, &at, d, x, y, 1, NULL);
    CHECK_NEAR(l2, want, 1e-6);
    CHECK(fabs(l2 - raw / (raw + 0.01)) > 1e-3);   /* not one weight for the sum */
    /* a naive reference of D at the first convolution: unit channel vectors per position */
    const bf_feat_layer *ly0 = &fn->layer[p.layers[0]];
    int C = ly0->oc, P = ly0->oh * ly0->ow;
    double ref = 0.0;
    for (int q = 0; q < P; q++) {
        double nv = 1e-8, nt = 1e-8, sv = 0.0, st = 0.0;
        for (int c = 0; c < C; c++) { sv += pow(ap.act[p.layers[0]][c * P + q], 2); st += pow(at.act[p.layers[0]][c * P + q], 2); }
        nv += sqrt(sv); nt += sqrt(st);
        for (int c = 0; c < C; c++) ref += pow(ap.act[p.layers[0]][c * P + q] / nv - at.act[p.layers[0]][c * P + q] / nt, 2) / P;
    }
    CHECK_NEAR(D[0], ref, 1e-5 * ref);   /* float sums in the kernel */
    bf_feat_acts_free(&ap);
    bf_feat_acts_free(&at);
    free(x); free(y); free(d);
    bf_features_free(fn);
}

/* A few steps of G's training with the perceptual term on: it runs, and logs the term. */
TEST(perceptual_term_in_reverse_training) {
    const char *dir = bf_test_tmpdir();
    char fpath[512], out[512], fnpath[512], logp[600];
    snprintf(fpath, sizeof fpath, "%s/perc_flow.safetensors", dir);
    snprintf(fnpath, sizeof fnpath, "%s/perc_features.safetensors", dir);
    snprintf(out, sizeof out, "%s/perc_run", dir);
    bf_flow *f = bf_test_tiny_flow(11, 28, 7);
    CHECK(bf_flow_save(f, bf_flow_params(f), fpath, NULL) == 0);
    bf_flow_free(f);
    bf_features_config fc = {1, 28, 28, 4, 4, 8, 10, BF_FEAT_ARCH_PERCEPTUAL};
    bf_features *fn = bf_features_new(&fc);
    bf_features_init(fn, 2);
    CHECK(bf_features_save(fn, fnpath, NULL) == 0);
    bf_features_free(fn);
    bf_reverse_train_opts o;
    bf_reverse_train_opts_default(&o);
    o.flow = fpath;
    o.out_dir = out;
    o.features = fnpath;
    o.perceptual = 0.5f;
    o.sigma = 0.05f;
    o.model.channels = 16; o.model.head_dim = 8; o.model.denoise_layers = 1; o.model.w_freq = 8;
    o.steps = 4; o.batch = 8; o.warmup = 1;
    o.eval_every = 0; o.ckpt_every = 0; o.log_every = 2; o.quiet = 1;
    CHECK(bf_train_reverse(&o) == 0);
    snprintf(logp, sizeof logp, "%s/log.jsonl", out);
    uint8_t *log;
    size_t size;
    CHECK(bf_read_file(logp, &log, &size, 1 << 20) == 0);
    if (log) {
        const char *k = strstr((const char *)log, "\"perceptual\":");
        CHECK(k && atof(k + 13) > 0.0);
        free(log);
    }
    o.features = "/nonexistent/features.safetensors";   /* a missing network: a clear error */
    o.resume = 0;
    snprintf(out, sizeof out, "%s/perc_run2", dir);
    CHECK(bf_train_reverse(&o) != 0);
    CHECK(strstr(bf_last_error(), "nonexistent") != NULL);
    /* the evaluation network (arch fd) is never a training loss */
    o.features = "models/features-fmnist.safetensors";
    snprintf(out, sizeof out, "%s/perc_run3", dir);
    CHECK(bf_train_reverse(&o) != 0);
    CHECK(strstr(bf_last_error(), "evaluation network") != NULL);
}
