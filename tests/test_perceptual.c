/* The perceptual distance of G's training: its gradient through the frozen feature network,
 * its zero, and a short training run with it. */
#include "test.h"
#include "gradcheck.h"
#include "tiny_models.h"
#include "perceptual.h"

#include <math.h>
#include <string.h>

typedef struct {
    bf_perceptual p;
    bf_feat_acts ap, at;
    float *pred, *target, *dpred;
    const int *y;   /* labels of the class term (NULL: off) */
    int n;
} perc_ctx;

static double perc_loss(void *c) {
    perc_ctx *m = c;
    float *scratch = bf_gc_zeros((size_t)m->n * 64);
    double l = bf_perceptual_loss(&m->p, &m->ap, &m->at, scratch, m->pred, m->target, m->y, m->n, NULL, NULL);
    free(scratch);
    return l;
}
static void perc_backward(void *c) {
    perc_ctx *m = c;
    bf_perceptual_loss(&m->p, &m->ap, &m->at, m->dpred, m->pred, m->target, m->y, m->n, NULL, NULL);
}

static bf_features *tiny_features(uint64_t seed) {
    bf_features_config c = {1, 8, 8, 4, 6, 8, 3, BF_FEAT_ARCH_FD};
    bf_features *fn = bf_features_new(&c);
    bf_features_init(fn, seed);
    return fn;
}

/* The context of n 8x8x1 images: activations of both sides, random prediction and target
 * (seeds seed, seed + 1), a zero gradient, and the gradient check's tensor of the prediction. */
static bf_gc_tensor perc_alloc(perc_ctx *m, bf_features *fn, int n, uint64_t seed) {
    m->n = n;
    bf_feat_acts_init(&m->ap, fn, n);
    bf_feat_acts_init(&m->at, fn, n);
    m->pred = bf_gc_randn(seed, (size_t)n * 64, 0.0f, 0.6f);
    m->target = bf_gc_randn(seed + 1, (size_t)n * 64, 0.0f, 0.6f);
    m->dpred = bf_gc_zeros((size_t)n * 64);
    return (bf_gc_tensor){"pred", m->pred, m->dpred, (size_t)n * 64};
}

static void perc_free(perc_ctx *m) {
    bf_feat_acts_free(&m->ap);
    bf_feat_acts_free(&m->at);
    free(m->pred); free(m->target); free(m->dpred);
}

/* With the adaptive weight off the loss is a plain function of the prediction: its gradient
 * through normalisation and the frozen network must match finite differences. A small step
 * keeps the differences from crossing ReLU and max-pool kinks. */
TEST_FP32(perceptual_gradient_finite_difference) {
    perc_ctx m = {0};
    bf_features *fn = tiny_features(3);
    bf_perceptual_init(&m.p, fn, 0.7f, 0.0f, 0.01f);
    CHECK(m.p.n_layers == 5);   /* four convolutions and the feature layer */
    bf_gc_tensor t[] = {perc_alloc(&m, fn, 2, 4)};
    bf_gc_problem p = {perc_loss, perc_backward, &m, 3e-2, 1e-3, 2e-4, 24, 7, 0, 0};
    CHECK(bf_gradcheck("perceptual", &p, t, 1) == 0);
    perc_free(&m);
    bf_features_free(fn);
}

/* The class term: cross-entropy of the frozen network's classifier on the prediction against
 * the label, null-class rows (y < 0) skipped; its gradient joins the distances' and must match
 * finite differences, and its value the cross-entropy computed from the logits here. */
TEST_FP32(perceptual_class_term_gradient_and_value) {
    perc_ctx m = {0};
    bf_features *fn = tiny_features(5);
    bf_perceptual_init(&m.p, fn, 0.5f, 0.0f, 0.01f);
    m.p.class_weight = 0.8f;
    static const int y[3] = {2, -1, 0};
    m.y = y;
    bf_gc_tensor t[] = {perc_alloc(&m, fn, 3, 6)};
    bf_gc_problem p = {perc_loss, perc_backward, &m, 3e-2, 1e-3, 2e-4, 24, 9, 0, 0};
    CHECK(bf_gradcheck("perceptual+class", &p, t, 1) == 0);
    /* value: with and without the term, the difference is weight * mean CE over all 3 rows */
    float *d = bf_gc_zeros(192);
    double ce, with = bf_perceptual_loss(&m.p, &m.ap, &m.at, d, m.pred, m.target, y, 3, NULL, &ce);
    const float *lg = m.ap.act[fn->n_layers - 1];
    int K = fn->cfg.num_classes;
    double want = 0.0;
    for (int b = 0; b < 3; b++) {
        if (y[b] < 0) continue;
        double z = 0.0;
        for (int k = 0; k < K; k++) z += exp((double)lg[b * K + k]);
        want += log(z) - lg[b * K + y[b]];
    }
    want /= 3;
    double without = bf_perceptual_loss(&m.p, &m.ap, &m.at, d, m.pred, m.target, NULL, 3, NULL, NULL);
    CHECK_NEAR(ce, want, 1e-6 * (1 + want));
    CHECK_NEAR(with - without, 0.8 * want, 1e-6 * (1 + want));
    CHECK(want > 1e-3);
    free(d);
    perc_free(&m);
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
    double raw, l0 = bf_perceptual_loss(&p, &ap, &at, d, x, x, NULL, 1, &raw, NULL);
    CHECK(l0 < 1e-10 && raw < 1e-10);
    double l1 = bf_perceptual_loss(&p, &ap, &at, d, x, y, NULL, 1, &raw, NULL);
    CHECK(l1 > 1e-3 && fabs(l1 - raw / p.n_layers) < 1e-12);
    /* each layer has its own adaptive weight: mean over layers of D_l / (D_l + eps) */
    double D[BF_PERC_MAX_LAYERS], want = 0.0, sum = 0.0;
    bf_perceptual_distances(&p, &ap, &at, D, x, y, 1);
    for (int j = 0; j < p.n_layers; j++) { want += D[j] / (D[j] + 0.01) / p.n_layers; sum += D[j]; }
    CHECK_NEAR(sum, raw, 1e-9 * (1 + raw));
    bf_perceptual_init(&p, fn, 1.0f, 1.0f, 0.01f);
    double l2 = bf_perceptual_loss(&p, &ap, &at, d, x, y, NULL, 1, NULL, NULL);
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
    REQUIRE_FASHION_MNIST();
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
    /* the class term is logged, and --init starts from the first run's EMA weights: with a
     * vanishing learning rate the new run's weights stay those */
    char first[512], init_out[512];
    snprintf(first, sizeof first, "%s/perc_run", dir);
    snprintf(init_out, sizeof init_out, "%s/perc_run_init", dir);
    o.features = fnpath;
    o.class_weight = 1.0f;
    o.init = first;
    o.model.channels = 0; o.model.head_dim = 0; o.model.denoise_layers = -1; o.model.w_freq = 0;
    o.out_dir = init_out;
    o.lr = 1e-9f; o.min_lr = 1e-9f; o.steps = 2;
    CHECK(bf_train_reverse(&o) == 0);
    bf_reverse *a = bf_reverse_load(first, 1), *b = bf_reverse_load(init_out, 0);
    CHECK(a && b && bf_reverse_num_params(a) == bf_reverse_num_params(b));
    if (a && b) {
        double dmax = 0.0;
        for (size_t i = 0; i < bf_reverse_num_params(a); i++)
            dmax = fmax(dmax, fabs((double)bf_reverse_params(a)[i] - bf_reverse_params(b)[i]));
        CHECK(dmax < 1e-6);
    }
    bf_reverse_free(a);
    bf_reverse_free(b);
    snprintf(logp, sizeof logp, "%s/log.jsonl", init_out);
    CHECK(bf_read_file(logp, &log, &size, 1 << 20) == 0);
    if (log) {
        const char *k = strstr((const char *)log, "\"class_ce\":");
        CHECK(k && atof(k + 11) > 0.0);
        free(log);
    }
    o.model.channels = 16;   /* a shape option with --init: refused */
    snprintf(init_out, sizeof init_out, "%s/perc_run_init2", dir);
    CHECK(bf_train_reverse(&o) != 0);
    CHECK(strstr(bf_last_error(), "--init") != NULL);
}
