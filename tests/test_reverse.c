/* The reverse model G: whole-model gradients for every variant and loss, guidance
 * consistency, checkpoints and the forward-model pointer, and a short training run that must
 * learn to invert a small frozen F. */
#include "test.h"
#include "gradcheck.h"
#include "tiny_models.h"
#include "flow.h"
#include "reverse.h"

#include <omp.h>
#include <math.h>
#include <string.h>

/* ------------------------------------------------------------------ whole-model gradients */
typedef struct {
    bf_reverse *r;
    bf_reverse_acts a, u;
    float *z, *traj, *clean, *w, *grads;
    int *y, n, use_unc;
    bf_reverse_loss_opts lo;
} rev_ctx;

static double rev_loss(void *p) {
    rev_ctx *m = p;
    bf_reverse_forward(m->r, m->r->params, &m->a, m->z, m->y, m->r->cfg.guidance_embed ? m->w : NULL, m->n);
    return bf_reverse_loss(m->r, &m->a, m->use_unc ? &m->u : NULL, m->w, m->traj, m->n, m->clean,
                           m->n, &m->lo, NULL);
}
static void rev_backward(void *p) {
    rev_ctx *m = p;
    bf_reverse_backward(m->r, m->r->params, &m->a, m->grads);
}

static void rev_ctx_init(rev_ctx *m, bf_reverse_config c, uint64_t seed, int use_unc) {
    memset(m, 0, sizeof *m);
    m->r = bf_test_random_reverse(c, seed);
    m->n = 3;
    int N = m->r->T * m->r->D;
    m->z = bf_gc_randn(seed + 1, (size_t)m->n * N, 0.0f, 1.0f);
    m->traj = bf_gc_randn(seed + 2, (size_t)(c.num_stages + 1) * m->n * N, 0.0f, 0.8f);
    m->clean = bf_gc_randn(seed + 3, (size_t)m->n * N, 0.0f, 0.5f);
    m->w = bf_malloc(sizeof(float) * m->n);
    m->w[0] = 1.5f; m->w[1] = 0.0f; m->w[2] = 3.0f;
    m->y = bf_malloc(sizeof(int) * m->n);
    m->y[0] = 2; m->y[1] = -1; m->y[2] = 0;
    m->grads = bf_gc_zeros(m->r->num_params);
    m->use_unc = use_unc;
    m->lo = (bf_reverse_loss_opts){BF_INVERSE_ALIGN, 1, 0.0f, 0.01f, 0.7f};
    bf_reverse_acts_init(&m->a, m->r, m->n, 1);
    bf_reverse_acts_init(&m->u, m->r, m->n, 0);
    /* the unconditional branch: computed once, held fixed (it carries no gradient) */
    if (use_unc) bf_reverse_forward(m->r, m->r->params, &m->u, m->z, NULL, NULL, m->n);
}

static void rev_ctx_free(rev_ctx *m) {
    bf_reverse_acts_free(&m->a);
    bf_reverse_acts_free(&m->u);
    free(m->z); free(m->traj); free(m->clean); free(m->w); free(m->y); free(m->grads);
    bf_reverse_free(m->r);
}

static int check_model(const char *label, rev_ctx *m) {
    int nt = m->r->n_info;
    bf_gc_tensor *ts = bf_calloc((size_t)nt, sizeof *ts);
    for (int i = 0; i < nt; i++) {
        const bf_param_info *pi = &m->r->info[i];
        ts[i] = (bf_gc_tensor){pi->name, m->r->params + pi->offset, m->grads + pi->offset, pi->numel};
    }
    bf_gc_problem p = {rev_loss, rev_backward, m, 2e-2, 2e-4, 1e-2, 6, 5, 0, 0};
    int bad = bf_gradcheck(label, &p, ts, nt);
    bf_gc_problem pd = {rev_loss, rev_backward, m, 1e-2, 1e-5, 1e-3, 0, 6, 0, 0};
    bad += bf_gradcheck_direction(label, &pd, ts, nt);
    free(ts);
    return bad;
}

TEST_FP32(reverse_gradient_align_guided_norm_control) {
    static const int modes[] = {BF_NORM_SAMPLE, BF_NORM_TOKEN};
    for (int k = 0; k < 2; k++) {
        rev_ctx m;
        rev_ctx_init(&m, bf_test_tiny_reverse_config(0, 1, 1), 11 + 100 * k, 1);
        m.lo.norm_control = modes[k];
        CHECK(check_model(k ? "G align+guidance, token norm" : "G align+guidance, sample norm", &m) == 0);
        rev_ctx_free(&m);
    }
}

/* The gradient of the loss with norm control `mode` under adaptive weighting, on a
 * trajectory whose tokens differ in scale (0.1x to 2.1x) as F's do. */
static float *norm_gradient(int mode) {
    rev_ctx m;
    rev_ctx_init(&m, bf_test_tiny_reverse_config(0, 1, 1), 31, 0);
    m.n = 1;
    m.lo.adapt_p = 1.0f;
    m.lo.norm_control = mode;
    int T = m.r->T, D = m.r->D;
    for (int s = 0; s <= m.r->cfg.num_stages; s++)
        for (int t = 0; t < T; t++)
            for (int d = 0; d < D; d++) m.traj[((size_t)s * m.n * T + t) * D + d] *= 0.1f + 0.5f * (t % 5);
    rev_loss(&m);
    rev_backward(&m);
    float *g = m.grads;
    m.grads = NULL;
    rev_ctx_free(&m);
    return g;
}

static double cosine(const float *a, const float *b, size_t n) {
    double ab = 0, aa = 0, bb = 0;
    for (size_t i = 0; i < n; i++) { ab += (double)a[i] * b[i]; aa += (double)a[i] * a[i]; bb += (double)b[i] * b[i]; }
    return ab / sqrt(aa * bb + 1e-300);
}

/* Norm control must change the training signal: dividing a distance by a scalar per image
 * cancels under adaptive weighting (the gradient keeps its direction), normalising tokens by
 * their own scale does not. */
TEST(reverse_norm_control_token_reweights_sample_cancels) {
    bf_reverse *r = bf_test_random_reverse(bf_test_tiny_reverse_config(0, 1, 1), 31);
    size_t P = r->num_params;
    bf_reverse_free(r);
    float *off = norm_gradient(BF_NORM_OFF), *sample = norm_gradient(BF_NORM_SAMPLE);
    float *token = norm_gradient(BF_NORM_TOKEN);
    double cs = cosine(off, sample, P), ct = cosine(off, token, P);
    fprintf(stderr, "    gradient cosine with norm control off: sample %.5f, token %.5f\n", cs, ct);
    CHECK(cs > 0.999);
    CHECK(ct < 0.98);
    free(off); free(sample); free(token);
}

TEST_FP32(reverse_gradient_distill_and_naive_variants) {
    rev_ctx m;
    rev_ctx_init(&m, bf_test_tiny_reverse_config(1, 1, 0), 12, 0);
    m.lo.inverse = BF_INVERSE_DISTILL;
    m.lo.norm_control = 0;
    CHECK(check_model("G distill", &m) == 0);
    rev_ctx_free(&m);
    /* with guidance and the unconditional branch: every stage's re-embedding positions too */
    rev_ctx_init(&m, bf_test_tiny_reverse_config(1, 1, 1), 15, 1);
    m.lo.inverse = BF_INVERSE_DISTILL;
    CHECK(check_model("G distill+guidance", &m) == 0);
    rev_ctx_free(&m);
    rev_ctx_init(&m, bf_test_tiny_reverse_config(0, 0, 1), 13, 1);   /* no denoising stage, naive */
    m.lo.inverse = BF_INVERSE_NAIVE;
    CHECK(check_model("G naive, no denoising", &m) == 0);
    rev_ctx_free(&m);
}

/* Hidden distillation restarts the stream of every stage s > 0 from the previous head's output
 * in token space. Without positions of its own that stage is permutation-equivariant in the
 * tokens: an input that is the same at every token (invariant under every permutation) would
 * give an output that is the same at every token, and the stage could not invert F's
 * position-dependent blocks. Stage s - 1's head is made constant over the tokens (its matrix
 * zeroed, its bias random); stage s's head output must still differ between tokens. */
TEST(reverse_distill_stages_see_positions) {
    bf_reverse_config c = bf_test_tiny_reverse_config(1, 1, 1);
    int S = c.num_stages + 1, n = 2, y[2] = {1, -1};
    float w[2] = {1.0f, 0.0f};
    for (int s = 1; s < S; s++) {
        bf_reverse *r = bf_test_random_reverse(c, 60 + s);
        int T = r->T, D = r->D, N = T * D;
        const bf_rstage_offsets *prev = &r->stages[s - 1];
        memset(r->params + prev->head_w, 0, sizeof(float) * D * r->W);
        float *z = bf_gc_randn(70 + s, (size_t)n * N, 0.0f, 1.0f);
        bf_reverse_acts a;
        bf_reverse_acts_init(&a, r, n, 0);
        bf_reverse_forward(r, r->params, &a, z, y, w, n);
        const float *in = bf_reverse_head(&a, r, s - 1), *out = bf_reverse_head(&a, r, s);
        double in_spread = 0.0, out_spread = 0.0, scale = 0.0;
        for (int i = 0; i < n; i++)
            for (int t = 1; t < T; t++)
                for (int d = 0; d < D; d++) {
                    size_t k = ((size_t)i * T + t) * D + d, k0 = (size_t)i * T * D + d;
                    in_spread = fmax(in_spread, fabs(in[k] - in[k0]));
                    out_spread = fmax(out_spread, fabs(out[k] - out[k0]));
                    scale = fmax(scale, fabs(out[k0]));
                }
        fprintf(stderr, "    stage %d: input spread over tokens %.2g, output spread %.3g (scale %.3g)\n",
                s, in_spread, out_spread, scale);
        CHECK(in_spread == 0.0);
        CHECK(scale > 0.1 && out_spread > 0.05 * scale);
        bf_reverse_acts_free(&a);
        free(z);
        bf_reverse_free(r);
    }
}

/* The adaptive weight D / sg((D + eps)^p) scales each example's gradient by (D + eps)^-p:
 * with one example, the gradient at p = 1 is the p = 0 gradient divided by (D + eps), where D
 * is the loss at p = 0 (one stage, no alignment terms: naive). */
TEST_FP32(reverse_adaptive_weighting_scales_the_gradient) {
    rev_ctx m;
    rev_ctx_init(&m, bf_test_tiny_reverse_config(0, 1, 1), 14, 0);
    m.n = 1;
    m.lo.inverse = BF_INVERSE_NAIVE;
    size_t P = m.r->num_params;
    double d0 = rev_loss(&m);
    rev_backward(&m);
    float *g0 = bf_malloc(sizeof(float) * P);
    memcpy(g0, m.grads, sizeof(float) * P);
    memset(m.grads, 0, sizeof(float) * P);
    m.lo.adapt_p = 1.0f;
    double d1 = rev_loss(&m);
    rev_backward(&m);
    CHECK_NEAR(d1, d0 / (d0 + 0.01), 1e-6 * (1 + d1));
    double worst = 0.0, scale = 0.0;
    for (size_t i = 0; i < P; i++) {
        double want = g0[i] / (d0 + 0.01);
        worst = fmax(worst, fabs(m.grads[i] - want));
        scale = fmax(scale, fabs(want));
    }
    CHECK(scale > 0 && worst <= 1e-5 * scale);
    free(g0);
    rev_ctx_free(&m);
}

/* ------------------------------------------------------------------ guidance at w = 0 */
TEST(reverse_guidance_zero_matches_unguided) {
    bf_reverse *r = bf_test_random_reverse(bf_test_tiny_reverse_config(0, 1, 1), 21);
    int n = 5, N = r->T * r->D, y[5] = {0, 1, 2, 3, -1};
    float *z = bf_gc_randn(22, (size_t)n * N, 0.0f, 1.0f);
    float *a = bf_malloc(sizeof(float) * n * N), *b = bf_malloc(sizeof(float) * n * N);
    float *c = bf_malloc(sizeof(float) * n * N);
    bf_reverse_sample_opts o;
    bf_reverse_sample_opts_default(&o);
    CHECK(bf_reverse_decode_tokens(r, a, z, y, n, &o) == 0);           /* w input 0 */
    o.cfg_two_pass = 1;
    CHECK(bf_reverse_decode_tokens(r, b, z, y, n, &o) == 0);           /* 2 NFE at w = 0 */
    CHECK(memcmp(a, b, sizeof(float) * n * N) == 0);
    o.cfg = 1.0f;   /* and guidance does change the output: the test can fail */
    CHECK(bf_reverse_decode_tokens(r, c, z, y, n, &o) == 0);
    double diff = 0.0;
    for (int i = 0; i < n * N; i++) diff = fmax(diff, fabs(c[i] - a[i]));
    CHECK(diff > 1e-3);
    /* training: the implied conditional with w = 0 everywhere is the conditional branch */
    rev_ctx m;
    rev_ctx_init(&m, bf_test_tiny_reverse_config(0, 1, 1), 23, 1);
    for (int i = 0; i < m.n; i++) m.w[i] = 0.0f;
    double l1 = rev_loss(&m);
    m.use_unc = 0;
    double l0 = rev_loss(&m);
    CHECK(l1 == l0);
    rev_ctx_free(&m);
    free(z); free(a); free(b); free(c);
    bf_reverse_free(r);
}

/* Two-pass guidance is (1 + w) G(z | y) - w G(z | null) exactly. */
TEST(reverse_two_pass_guidance_formula) {
    bf_reverse *r = bf_test_random_reverse(bf_test_tiny_reverse_config(0, 1, 0), 31);
    int n = 3, N = r->T * r->D, y[3] = {1, 2, 3};
    float *z = bf_gc_randn(32, (size_t)n * N, 0.0f, 1.0f);
    float *g = bf_malloc(sizeof(float) * n * N), *c = bf_malloc(sizeof(float) * n * N);
    float *u = bf_malloc(sizeof(float) * n * N);
    bf_reverse_sample_opts o;
    bf_reverse_sample_opts_default(&o);
    CHECK(bf_reverse_decode_tokens(r, c, z, y, n, &o) == 0);
    CHECK(bf_reverse_decode_tokens(r, u, z, NULL, n, &o) == 0);
    o.cfg = 2.5f;
    CHECK(bf_reverse_decode_tokens(r, g, z, y, n, &o) == 0);
    double worst = 0.0;
    for (int i = 0; i < n * N; i++) worst = fmax(worst, fabs(g[i] - (3.5f * c[i] - 2.5f * u[i])));
    CHECK(worst < 1e-5);
    free(z); free(g); free(c); free(u);
    bf_reverse_free(r);
}

/* Inference reuses one layer's activations; training keeps all: same outputs. */
TEST(reverse_inference_and_training_passes_agree) {
    bf_reverse *r = bf_test_random_reverse(bf_test_tiny_reverse_config(1, 2, 1), 41);
    int n = 4, N = r->T * r->D, y[4] = {0, 3, -1, 1};
    float w[4] = {0.0f, 1.0f, 0.0f, 2.0f};
    float *z = bf_gc_randn(42, (size_t)n * N, 0.0f, 1.0f);
    bf_reverse_acts tr, in;
    bf_reverse_acts_init(&tr, r, n, 1);
    bf_reverse_acts_init(&in, r, n, 0);
    bf_reverse_forward(r, r->params, &tr, z, y, w, n);
    bf_reverse_forward(r, r->params, &in, z, y, w, n);
    CHECK(memcmp(tr.p, in.p, sizeof(float) * r->S * n * N) == 0);
    bf_reverse_acts_free(&tr);
    bf_reverse_acts_free(&in);
    free(z);
    bf_reverse_free(r);
}

/* ------------------------------------------------------------------ checkpoints */
TEST(reverse_checkpoint_round_trip_and_flow_pointer) {
    const char *dir = bf_test_tmpdir();
    char fpath[512], fpath2[512], rpath[512];
    snprintf(fpath, sizeof fpath, "%s/rt_flow.safetensors", dir);
    snprintf(fpath2, sizeof fpath2, "%s/rt_flow2.safetensors", dir);
    snprintf(rpath, sizeof rpath, "%s/rt_reverse.safetensors", dir);
    bf_flow *f = bf_test_tiny_flow(3, 8, 2), *f2 = bf_test_tiny_flow(4, 8, 2);
    CHECK(bf_flow_save(f, f->params, fpath, NULL) == 0);
    CHECK(bf_flow_save(f2, f2->params, fpath2, NULL) == 0);
    bf_reverse_config rc = bf_test_tiny_reverse_config(0, 1, 1);
    rc.num_classes = 10;
    bf_reverse *r = bf_test_random_reverse(rc, 5);
    CHECK(bf_reverse_set_flow(r, fpath, 0.05f) == 0);
    CHECK(strlen(r->flow_sha256) == 64);
    CHECK(bf_reverse_save(r, r->params, rpath, "{\"step\":\"3\"}") == 0);
    bf_reverse *q = bf_reverse_load(rpath, 1);
    CHECK(q != NULL);
    if (q) {
        CHECK(bf_gc_same_params("loaded reverse", q->params, q->num_params, r->params,
                                r->num_params) == 0);
        CHECK(!strcmp(q->flow_sha256, r->flow_sha256) && q->sigma == 0.05f);
        CHECK(bf_reverse_check_flow(q, f, fpath) == 0);
        CHECK(bf_reverse_check_flow(q, f2, fpath2) != 0);   /* another F: refused */
        CHECK(strstr(bf_last_error(), "not the same forward model") != NULL);
        bf_reverse_free(q);
    }
    /* a forward model of another shape is refused before hashing */
    bf_flow *f3 = bf_test_tiny_flow(5, 8, 4);
    CHECK(bf_reverse_check_flow(r, f3, fpath) != 0);
    CHECK(strstr(bf_last_error(), "does not have the shape") != NULL);
    /* a forward-model file is not a reverse model; a truncated file is refused */
    CHECK(bf_reverse_load(fpath, 1) == NULL);
    CHECK(strstr(bf_last_error(), "not a reverse-model file") != NULL);
    uint8_t *data;
    size_t size;
    CHECK(bf_read_file(rpath, &data, &size, 1 << 26) == 0);
    CHECK(bf_write_file_atomic(rpath, data, size - 100) == 0);
    CHECK(bf_reverse_load(rpath, 1) == NULL);
    free(data);
    bf_flow_free(f); bf_flow_free(f2); bf_flow_free(f3);
    bf_reverse_free(r);
}

/* A hidden-distillation checkpoint from before its stages had positions holds no
 * stages.N.reembed.pos_embed: it is refused with a message saying why, not loaded as
 * something else; one saved now round-trips. */
TEST(reverse_distill_checkpoint_without_positions_refused) {
    const char *path = bf_test_tmp("distill_new.safetensors"), *old = bf_test_tmp("distill_old.safetensors");
    bf_reverse *r = bf_test_random_reverse(bf_test_tiny_reverse_config(1, 1, 1), 81);
    CHECK(bf_reverse_save(r, r->params, path, NULL) == 0);
    bf_reverse *q = bf_reverse_load(path, 1);
    CHECK(q && q->num_params == r->num_params &&
          !memcmp(q->params, r->params, sizeof(float) * r->num_params));
    bf_reverse_free(q);
    bf_safetensors st;   /* the same file without the positions: the old layout */
    CHECK(bf_st_load(&st, path) == 0);
    bf_st_writer *wr = bf_st_writer_new();
    for (int i = 0; i < st.n_meta; i++) bf_st_writer_meta(wr, st.meta_keys[i], st.meta_values[i]);
    int dropped = 0;
    for (int i = 0; i < st.n; i++) {
        const bf_tensor_view *t = &st.tensors[i];
        if (strstr(t->name, "reembed.pos_embed")) { dropped++; continue; }
        bf_st_writer_add(wr, t->name, t->dtype, t->ndim, t->shape, t->data);
    }
    CHECK(dropped == r->S - 1);
    CHECK(bf_st_writer_save(wr, old) == 0);
    bf_st_writer_free(wr);
    bf_st_free(&st);
    CHECK(bf_reverse_load(old, 1) == NULL);
    CHECK(strstr(bf_last_error(), "distill_old") && strstr(bf_last_error(), "positional embeddings") &&
          strstr(bf_last_error(), "train it again"));
    bf_reverse_free(r);
}

/* ------------------------------------------------------------------ learning to invert */
/* G trained briefly against a small random frozen F (7x7 patches: 16 tokens) must invert it
 * on held-out images far better than at initialisation. */
TEST(reverse_training_learns_to_invert_a_frozen_flow) {
    REQUIRE_FASHION_MNIST();   /* trains on it */
    const char *dir = bf_test_tmpdir();
    char fpath[512], out[512];
    snprintf(fpath, sizeof fpath, "%s/inv_flow.safetensors", dir);
    snprintf(out, sizeof out, "%s/inv_run", dir);
    bf_flow *f = bf_test_tiny_flow(7, 28, 7);
    CHECK(bf_flow_save(f, f->params, fpath, "{\"noise\":\"gauss\",\"sigma\":\"0.05\"}") == 0);
    bf_flow_free(f);
    bf_reverse_train_opts o;
    bf_reverse_train_opts_default(&o);
    o.flow = fpath;
    o.out_dir = out;
    o.model.channels = 32; o.model.head_dim = 16; o.model.layers_per_stage = 1;
    o.model.denoise_layers = 1; o.model.w_freq = 16;
    o.steps = 150; o.batch = 32; o.warmup = 10; o.lr = 2e-3f;
    o.eval_every = 0; o.ckpt_every = 0; o.log_every = 50; o.quiet = 1;
    o.ema_decay = 0.9f;
    CHECK(bf_train_reverse(&o) == 0);
    bf_dataset ds = {0};
    CHECK(bf_dataset_load(&ds, "fashion-mnist", "test") == 0);
    bf_flow *ff = bf_flow_load(fpath, 1);
    bf_reverse *trained = bf_reverse_load(out, 1), *fresh = NULL;
    CHECK(ff && trained);
    if (ff && trained && ds.n) {
        fresh = bf_reverse_new(&trained->cfg);
        bf_reverse_init(fresh, 0);
        double mse_t, mse_0, psnr;
        CHECK(bf_reverse_eval_recon(trained, ff, &ds, 300, 0.0f, 1, &mse_t, &psnr) == 0);
        CHECK(bf_reverse_eval_recon(fresh, ff, &ds, 300, 0.0f, 1, &mse_0, &psnr) == 0);
        fprintf(stderr, "    G(F(x)) mse: trained %.4f, untrained %.4f\n", mse_t, mse_0);
        CHECK(mse_t < 0.15);
        CHECK(mse_0 > 0.5);
    }
    bf_reverse_free(fresh);
    bf_reverse_free(trained);
    bf_flow_free(ff);
    bf_dataset_free(&ds);
}

/* Mutations of a reverse checkpoint's JSON header (configuration values, shapes, offsets):
 * every load either fails with a message naming the file or gives a model whose every tensor
 * was checked against the configuration. */
TEST(reverse_checkpoint_header_mutations) {
    const char *path = bf_test_tmp("mut_reverse.safetensors"), *mpath = bf_test_tmp("mut_reverse_x.safetensors");
    bf_reverse *r = bf_test_random_reverse(bf_test_tiny_reverse_config(1, 1, 1), 3);
    CHECK(bf_reverse_save(r, r->params, path, NULL) == 0);
    uint8_t *orig, *buf;
    size_t n;
    CHECK(bf_read_file(path, &orig, &n, 1 << 26) == 0);
    uint64_t hlen;
    memcpy(&hlen, orig, 8);
    buf = bf_malloc(n);
    bf_rng rng;
    bf_rng_seed(&rng, 77);
    static const char alphabet[] = "0123456789-,:\"{}[]ex";
    int loaded = 0, refused = 0;
    for (int it = 0; it < 400; it++) {
        memcpy(buf, orig, n);
        int edits = 1 + (int)bf_rng_below(&rng, 3);
        for (int e = 0; e < edits; e++)
            buf[8 + bf_rng_below(&rng, (uint32_t)hlen)] = (uint8_t)alphabet[bf_rng_below(&rng, sizeof alphabet - 1)];
        CHECK(bf_write_file_atomic(mpath, buf, n) == 0);
        bf_set_error("%s", "");
        bf_reverse *q = bf_reverse_load(mpath, 1);
        if (q) {
            loaded++;
            size_t sum = 0;
            for (int i = 0; i < q->n_info; i++) sum += q->info[i].numel;
            CHECK(sum == q->num_params && q->num_params <= r->num_params * 4);
            bf_reverse_free(q);
        } else {
            refused++;
            CHECK(strstr(bf_last_error(), "mut_reverse_x") != NULL);
        }
    }
    CHECK(loaded > 0 && refused > 0);   /* both outcomes exercised */
    free(orig);
    free(buf);
    bf_reverse_free(r);
}

/* ------------------------------------------------------------------ conventions */
/* F's trajectory runs from the data (state 0) to the noise (state B, what G receives), and
 * stage s of G is aligned to state B-1-s, the one a block nearer the data than its input;
 * the denoising stage to the clean tokens. Each state is filled with its own constant, so
 * each stage's distance names the state it was compared with. */
TEST_FP32(reverse_stage_targets_walk_the_trajectory_from_the_noise_end) {
    bf_flow *f = bf_test_tiny_flow(41, 8, 2);
    int n = 2, B = f->cfg.num_blocks, N = f->T * f->D, y[2] = {1, 3};
    float *x = bf_gc_randn(42, (size_t)n * N, 0.0f, 0.5f), *z = bf_malloc(sizeof(float) * n * N);
    float *back = bf_malloc(sizeof(float) * n * N);
    bf_flow_acts fa;
    bf_flow_acts_init(&fa, f, n);
    bf_flow_forward(f, f->params, &fa, x, y, n);
    CHECK(memcmp(fa.xs, x, sizeof(float) * n * N) == 0);                /* state 0: the data */
    bf_flow_decode_tokens(f, f->params, back, fa.xs + (size_t)B * n * N, y, n, 0.0f, 0);
    CHECK(bf_gc_max_abs_diff(back, x, (size_t)n * N) < 1e-4);                 /* state B: the noise */
    bf_flow_acts_free(&fa);
    free(x); free(z); free(back);
    bf_flow_free(f);

    bf_reverse *r = bf_test_random_reverse(bf_test_tiny_reverse_config(0, 1, 0), 43);
    int S = r->S, Bg = r->cfg.num_stages;
    N = r->T * r->D;
    float *zz = bf_gc_randn(44, (size_t)n * N, 0.0f, 1.0f);
    float *traj = bf_malloc(sizeof(float) * (Bg + 1) * n * N), *clean = bf_malloc(sizeof(float) * n * N);
    for (int k = 0; k <= Bg; k++)
        for (int i = 0; i < n * N; i++) traj[(size_t)k * n * N + i] = 3.0f * (k + 1);
    for (int i = 0; i < n * N; i++) clean[i] = -5.0f;
    bf_reverse_acts a;
    bf_reverse_acts_init(&a, r, n, 1);
    bf_reverse_forward(r, r->params, &a, zz, y, NULL, n);
    bf_reverse_loss_opts lo = {BF_INVERSE_ALIGN, BF_NORM_OFF, 0.0f, 0.01f, 1.0f};
    bf_reverse_loss_parts parts;
    bf_reverse_loss(r, &a, NULL, NULL, traj, n, clean, n, &lo, &parts);
    for (int s = 0; s < S; s++) {
        const float *p = bf_reverse_head(&a, r, s);
        int best = -2;   /* the candidate (a state k, or -1: clean) whose distance it logged */
        double best_err = INFINITY;
        for (int k = -1; k <= Bg; k++) {
            double d = 0.0, c = k < 0 ? -5.0 : 3.0 * (k + 1);
            for (int i = 0; i < n * N; i++) d += (p[i] - c) * (p[i] - c);
            double logged = s < S - 1 ? parts.align_raw[s] : parts.rec;
            if (fabs(d / (n * N) - logged) < best_err) { best_err = fabs(d / (n * N) - logged); best = k; }
        }
        CHECK(best == (s < Bg ? Bg - 1 - s : -1));
        CHECK(best_err < 1e-4);
    }
    bf_reverse_acts_free(&a);
    free(zz); free(traj); free(clean);
    bf_reverse_free(r);
}

/* Training-time guidance and the 1-NFE sampler share one convention: the sampler's output at
 * (y, w) is the guided prediction whose implied conditional (G(z|y,w) + w G(z|null)) / (1 + w)
 * the loss compares with the target, the unconditional branch being G(z | null, w = 0) in
 * both. So a target equal to that implied conditional gives zero loss, and the raw output
 * does not. A null-class row is sampled at w = 0, the only w it was trained with. */
TEST(reverse_guidance_convention_shared_by_training_and_sampling) {
    bf_reverse *r = bf_test_random_reverse(bf_test_tiny_reverse_config(0, 1, 1), 51);
    int n = 3, N = r->T * r->D, y[3] = {0, 2, 3}, last = r->S - 1;
    float wv = 2.0f, w[3] = {wv, wv, wv};
    float *z = bf_gc_randn(52, (size_t)n * N, 0.0f, 1.0f);
    float *g = bf_malloc(sizeof(float) * n * N), *u = bf_malloc(sizeof(float) * n * N);
    float *target = bf_malloc(sizeof(float) * n * N);
    bf_reverse_sample_opts so;
    bf_reverse_sample_opts_default(&so);
    so.cfg = wv;
    CHECK(bf_reverse_decode_tokens(r, g, z, y, n, &so) == 0);           /* 1 NFE at w */
    so.cfg = 0.0f;
    CHECK(bf_reverse_decode_tokens(r, u, z, NULL, n, &so) == 0);        /* null class */
    for (int i = 0; i < n * N; i++) target[i] = (g[i] + wv * u[i]) / (1.0f + wv);
    bf_reverse_acts a, ua;
    bf_reverse_acts_init(&a, r, n, 1);
    bf_reverse_acts_init(&ua, r, n, 0);
    bf_reverse_forward(r, r->params, &a, z, y, w, n);
    bf_reverse_forward(r, r->params, &ua, z, NULL, NULL, n);
    bf_reverse_loss_opts lo = {BF_INVERSE_NAIVE, BF_NORM_OFF, 0.0f, 0.01f, 1.0f};
    float *traj = bf_gc_zeros((size_t)(r->cfg.num_stages + 1) * n * N);
    double at_implied = bf_reverse_loss(r, &a, &ua, w, traj, n, target, n, &lo, NULL);
    double at_raw = bf_reverse_loss(r, &a, &ua, w, traj, n, g, n, &lo, NULL);
    CHECK(at_implied < 1e-10);
    CHECK(at_raw > 1e-4);
    (void)last;
    /* null-class rows ignore w: the same output at w = 2 as at w = 0 */
    int ynull[3] = {-1, -1, -1};
    so.cfg = wv;
    CHECK(bf_reverse_decode_tokens(r, g, z, ynull, n, &so) == 0);
    CHECK(bf_gc_max_abs_diff(g, u, (size_t)n * N) == 0.0);
    bf_reverse_acts_free(&a);
    bf_reverse_acts_free(&ua);
    free(z); free(g); free(u); free(target); free(traj);
    bf_reverse_free(r);
}
