/* Tests of the forward flow F: the PyTorch reference fixture (layout and numerics at once),
 * exact invertibility, the log-determinant against a brute-force Jacobian, causality, and
 * finite-difference checks of the whole model's gradient. */
#include "test.h"
#include "tiny_models.h"
#include "flow.h"
#include "gradcheck.h"
#include "kernels.h"


/* LAPACK's LU factorisation (Fortran interface, provided by OpenBLAS / liblapack) */
void dgetrf_(const int *m, const int *n, double *a, const int *lda, int *ipiv, int *info);

static float max_abs_diff(const float *a, const float *b, size_t n) {
    float m = 0.0f;
    for (size_t i = 0; i < n; i++) {
        float d = fabsf(a[i] - b[i]);
        if (!(d <= m)) m = d;   /* NaN counts as a failure */
    }
    return m;
}

static int *labels_i64(const bf_tensor_view *t) {
    int *y = bf_malloc(sizeof(int) * (size_t)t->numel);
    for (int64_t i = 0; i < t->numel; i++) {
        int64_t v;
        memcpy(&v, (const char *)t->data + 8 * i, 8);
        y[i] = (int)v;
    }
    return y;
}

static float *floats(const bf_tensor_view *t) {
    float *p = bf_malloc(sizeof(float) * (size_t)t->numel);
    memcpy(p, t->data, sizeof(float) * (size_t)t->numel);
    return p;
}

TEST_FP32(flow_reference_fixture_forward) {
    bf_flow *f = bf_flow_load(bf_test_shared("fixtures/tarflow-ref/model.safetensors"), 0);
    CHECK(f != NULL);
    if (!f) { fprintf(stderr, "    %s\n", bf_last_error()); return; }
    bf_safetensors io;
    CHECK(bf_st_load(&io, bf_test_shared("fixtures/tarflow-ref/io.safetensors")) == 0);
    const bf_tensor_view *tx = bf_st_get(&io, "x"), *ty = bf_st_get(&io, "y");
    const bf_tensor_view *tz = bf_st_get(&io, "z"), *tl = bf_st_get(&io, "logdet");
    CHECK(tx && ty && tz && tl);
    if (!(tx && ty && tz && tl)) return;
    int n = (int)tx->shape[0], N = f->T * f->D;
    float *x = floats(tx), *z = bf_malloc(sizeof(float) * n * N), *ld = bf_malloc(sizeof(float) * n);
    int *y = labels_i64(ty);
    CHECK(bf_flow_encode(f, z, ld, x, y, n) == 0);
    CHECK(max_abs_diff(z, tz->data, (size_t)n * N) <= 1e-4f);
    CHECK(max_abs_diff(ld, tl->data, (size_t)n) <= 1e-5f);
    /* loss = 0.5 mean(z^2) - mean(logdet), the public code's convention */
    double loss = 0.0;
    for (int i = 0; i < n * N; i++) loss += 0.5 * z[i] * z[i] / ((double)n * N);
    for (int i = 0; i < n; i++) loss -= ld[i] / (double)n;
    float ref_loss;
    memcpy(&ref_loss, bf_st_get(&io, "loss")->data, 4);
    CHECK_NEAR(loss, ref_loss, 1e-5);
    free(x); free(z); free(ld); free(y);
    bf_st_free(&io);
    bf_flow_free(f);
}

TEST_FP32(flow_reference_fixture_input_gradient) {
    bf_flow *f = bf_flow_load(bf_test_shared("fixtures/tarflow-ref/model.safetensors"), 0);
    bf_safetensors io;
    CHECK(f && bf_st_load(&io, bf_test_shared("fixtures/tarflow-ref/io.safetensors")) == 0);
    if (!f) return;
    const bf_tensor_view *tx = bf_st_get(&io, "x"), *tg = bf_st_get(&io, "x_grad");
    const bf_tensor_view *tyl = bf_st_get(&io, "x_grad_labels");
    CHECK(tx && tg && tyl);
    if (!(tx && tg && tyl)) { bf_st_free(&io); bf_flow_free(f); return; }
    const bf_flow_config *c = &f->cfg;
    int n = (int)tx->shape[0], N = f->T * f->D;
    float *x = floats(tx), *tok = bf_malloc(sizeof(float) * n * N);
    float *dtok = bf_calloc((size_t)n * N, sizeof(float)), *dx = bf_malloc(sizeof(float) * n * N);
    int *y = labels_i64(tyl);
    bf_patchify(tok, x, n, c->in_channels, c->img_size, c->img_size, c->patch_size);
    bf_flow_acts a;
    bf_flow_acts_init(&a, f, n);
    float loss = bf_flow_forward(f, f->params, &a, tok, y, n);
    bf_flow_backward(f, f->params, &a, NULL, dtok);
    bf_unpatchify(dx, dtok, n, c->in_channels, c->img_size, c->img_size, c->patch_size);
    float ref_loss;
    memcpy(&ref_loss, bf_st_get(&io, "x_grad_loss")->data, 4);
    CHECK_NEAR(loss - 0.5 * log(2 * M_PI), ref_loss, 1e-5);
    float scale = 0.0f;
    const float *g = tg->data;
    for (int i = 0; i < n * N; i++) scale = fmaxf(scale, fabsf(g[i]));
    CHECK(max_abs_diff(dx, g, (size_t)n * N) <= 1e-4f * fmaxf(scale, 1e-3f) + 1e-8f);
    bf_flow_acts_free(&a);
    free(x); free(tok); free(dtok); free(dx); free(y);
    bf_st_free(&io);
    bf_flow_free(f);
}

static void check_reverse(const char *key, float cfg) {
    bf_flow *f = bf_flow_load(bf_test_shared("fixtures/tarflow-ref/model.safetensors"), 0);
    bf_safetensors io;
    CHECK(f && bf_st_load(&io, bf_test_shared("fixtures/tarflow-ref/io.safetensors")) == 0);
    if (!f) return;
    const bf_tensor_view *tz = bf_st_get(&io, "reverse_z"), *ty = bf_st_get(&io, "reverse_y");
    const bf_tensor_view *tr = bf_st_get(&io, key);
    CHECK(tz && ty && tr);
    if (tz && ty && tr) {
        int n = (int)tz->shape[0];
        size_t N = (size_t)f->T * f->D;
        float *z = floats(tz), *x = bf_malloc(sizeof(float) * n * N);
        int *y = labels_i64(ty);
        CHECK(bf_flow_decode_tokens(f, f->params, x, z, y, n, cfg, 0) == 0);
        float err = max_abs_diff(x, tr->data, n * N);
        if (err > 1e-4f) fprintf(stderr, "    %s: max abs error %g\n", key, err);
        CHECK(err <= 1e-4f);
        free(z); free(x); free(y);
    }
    bf_st_free(&io);
    bf_flow_free(f);
}

TEST_FP32(flow_reference_fixture_reverse) { check_reverse("reverse_cfg0", 0.0f); }
TEST_FP32(flow_reference_fixture_reverse_guided) { check_reverse("reverse_cfg2", 2.0f); }

/* A small model whose blocks are far from the identity: random output projections. */
static bf_flow *random_flow(bf_flow_config c, uint64_t seed, float out_std) {
    return bf_test_random_flow(c, seed, out_std, 0.1f);
}

TEST_FP32(flow_inverse_reproduces_real_images) {
    REQUIRE_FASHION_MNIST();
    bf_dataset ds = {0};
    CHECK(bf_dataset_load(&ds, "fashion-mnist", "test") == 0);
    bf_flow_config c;
    CHECK(bf_flow_config_named(&c, "fmnist-tiny") == 0);
    c.num_blocks = 4;
    c.bound = 2.0f;
    bf_flow *f = random_flow(c, 7, 0.05f);
    int n = 8;
    size_t img = 28 * 28, N = (size_t)f->T * f->D;
    float *x = bf_malloc(sizeof(float) * n * img), *z = bf_malloc(sizeof(float) * n * N);
    float *xr = bf_malloc(sizeof(float) * n * img);
    int y[8];
    for (int i = 0; i < n; i++) {
        for (size_t k = 0; k < img; k++) x[i * img + k] = ds.pixels[(size_t)i * img + k] / 127.5f - 1.0f;
        y[i] = i % 3 == 2 ? -1 : ds.labels[i];
    }
    CHECK(bf_flow_encode(f, z, NULL, x, y, n) == 0);
    float change = max_abs_diff(x, z, n * img);   /* the map must do something */
    CHECK(change > 0.1f);
    CHECK(bf_flow_decode(f, xr, z, y, n, 0.0f, 0) == 0);
    float err = max_abs_diff(x, xr, n * img);
    if (err > 1e-4f) fprintf(stderr, "    inverse error %g\n", err);
    CHECK(err <= 1e-4f);
    free(x); free(z); free(xr);
    bf_flow_free(f);
    bf_dataset_free(&ds);
}

/* log|det dF/dx| by LU of a finite-difference Jacobian in double, against -sum(alpha). */
TEST_FP32(flow_logdet_matches_brute_force_jacobian) {
    bf_flow_config c = {4, 1, 2, 16, 3, 1, 8, 3, 0.0f};   /* 4x4 image, T = 4, D = 4 */
    bf_flow *f = random_flow(c, 11, 0.3f);
    int N = f->T * f->D, y = 1;
    float *x = bf_gc_randn(5, N, 0.0f, 0.5f), *z0 = bf_malloc(sizeof(float) * N);
    float *zp = bf_malloc(sizeof(float) * N), ld;
    double *J = bf_malloc(sizeof(double) * N * N);
    bf_flow_encode(f, z0, &ld, x, &y, 1);
    /* fourth-order central differences: float rounding stays far below the tolerance */
    const double h = 1e-2;
    const double wts[4] = {1.0 / 12, -8.0 / 12, 8.0 / 12, -1.0 / 12}, offs[4] = {-2, -1, 1, 2};
    memset(J, 0, sizeof(double) * N * N);
    for (int j = 0; j < N; j++) {
        float keep = x[j];
        for (int s = 0; s < 4; s++) {
            x[j] = keep + (float)(offs[s] * h);
            bf_flow_encode(f, zp, NULL, x, &y, 1);
            for (int i = 0; i < N; i++) J[i * N + j] += wts[s] * zp[i] / h;
        }
        x[j] = keep;
    }
    int ipiv[64], info = -1;
    dgetrf_(&N, &N, J, &N, ipiv, &info);   /* column-major sees J^T: same determinant */
    CHECK(info == 0);
    double logabsdet = 0.0;
    for (int i = 0; i < N; i++) logabsdet += log(fabs(J[i * N + i]));
    double ours = (double)ld * N;   /* logdet is per dimension */
    CHECK(fabs(ours) > 0.5);       /* a non-trivial volume change */
    CHECK_NEAR(ours, logabsdet, 1e-3 * fmax(1.0, fabs(logabsdet)));
    free(x); free(z0); free(zp); free(J);
    bf_flow_free(f);
}

/* Token t of a block's output depends on tokens <= t of its input (block order) only. */
TEST(flow_is_causal_in_each_block_order) {
    bf_flow_config c = {8, 1, 2, 16, 2, 2, 8, 0, 0.0f};   /* T = 16 tokens, D = 4 */
    for (int reversed = 0; reversed <= 1; reversed++) {
        bf_flow *f = random_flow(c, 3, 0.3f);
        /* make the other block the identity so the tested block's map is what we see */
        int idle = reversed ? 0 : 1;
        memset(f->params + f->blocks[idle].out_w, 0, sizeof(float) * 2 * f->D * f->W);
        memset(f->params + f->blocks[idle].out_b, 0, sizeof(float) * 2 * f->D);
        int T = f->T, D = f->D, N = T * D;
        float *x = bf_gc_randn(9, N, 0.0f, 1.0f), *z0 = bf_malloc(sizeof(float) * N);
        float *z1 = bf_malloc(sizeof(float) * N), *tok = bf_malloc(sizeof(float) * N);
        float *img = bf_malloc(sizeof(float) * N);
        int bad = 0, changed = 0;
        for (int j = 0; j < T; j++) {
            bf_unpatchify(img, x, 1, 1, 8, 8, 2);
            bf_flow_encode(f, z0, NULL, img, NULL, 1);
            memcpy(tok, x, sizeof(float) * N);
            for (int d = 0; d < D; d++) tok[j * D + d] += 0.5f;
            bf_unpatchify(img, tok, 1, 1, 8, 8, 2);
            bf_flow_encode(f, z1, NULL, img, NULL, 1);
            for (int t = 0; t < T; t++) {
                int before = reversed ? t > j : t < j;   /* earlier in the block's order */
                float d = max_abs_diff(z0 + t * D, z1 + t * D, D);
                if (before && d != 0.0f) bad++;
                if (!before && t != j && d > 0.0f) changed++;
            }
        }
        CHECK(bad == 0);
        CHECK(changed > 0);    /* later tokens do react: the test can see a dependency */
        free(x); free(z0); free(z1); free(tok); free(img);
        bf_flow_free(f);
    }
}

/* ------------------------------------------------------------------ whole-model gradients */
typedef struct { bf_flow *f; bf_flow_acts a; float *x, *grads, *dx; int *y; int n; } model_ctx;

static double model_loss(void *p) {
    model_ctx *m = p;
    return bf_flow_forward(m->f, m->f->params, &m->a, m->x, m->y, m->n);
}
static void model_backward(void *p) {
    model_ctx *m = p;
    bf_flow_backward(m->f, m->f->params, &m->a, m->grads, m->dx);
}

TEST_FP32(flow_whole_model_gradient_finite_difference) {
    bf_flow_config c = {8, 1, 2, 16, 2, 2, 8, 4, 1.5f};
    model_ctx m = {0};
    m.f = random_flow(c, 21, 0.2f);
    m.n = 3;
    int N = m.f->T * m.f->D;
    int y[3] = {2, -1, 0};
    m.y = y;
    m.x = bf_gc_randn(4, (size_t)m.n * N, 0.0f, 0.7f);
    m.grads = bf_gc_zeros(m.f->num_params);
    m.dx = bf_gc_zeros((size_t)m.n * N);
    bf_flow_acts_init(&m.a, m.f, m.n);
    /* one tensor group per parameter tensor, plus the input */
    int nt = m.f->n_info + 1;
    bf_gc_tensor *ts = bf_calloc((size_t)nt, sizeof *ts);
    for (int i = 0; i < m.f->n_info; i++) {
        const bf_param_info *pi = &m.f->info[i];
        ts[i] = (bf_gc_tensor){pi->name, m.f->params + pi->offset, m.grads + pi->offset, pi->numel};
    }
    ts[nt - 1] = (bf_gc_tensor){"x", m.x, m.dx, (size_t)m.n * N};
    bf_gc_problem p = {model_loss, model_backward, &m, 2e-2, 2e-4, 1e-2, 6, 5, 0, 0};
    CHECK(bf_gradcheck("flow", &p, ts, nt) == 0);
    bf_gc_problem pd = {model_loss, model_backward, &m, 1e-2, 1e-5, 1e-3, 0, 6, 0, 0};
    CHECK(bf_gradcheck_direction("flow-direction", &pd, ts, nt) == 0);
    free(ts);
    bf_flow_acts_free(&m.a);
    free(m.x); free(m.grads); free(m.dx);
    bf_flow_free(m.f);
}

TEST(flow_checkpoint_round_trip_and_rejections) {
    bf_flow_config c = {8, 1, 2, 16, 2, 1, 8, 4, 1.0f};
    bf_flow *f = random_flow(c, 5, 0.1f);
    char path[512];
    snprintf(path, sizeof path, "%s/flow.safetensors", bf_test_tmpdir());
    CHECK(bf_flow_save(f, f->params, path, "{\"step\":\"12\"}") == 0);
    bf_flow *g = bf_flow_load(path, 0);
    CHECK(g != NULL);
    if (g) {
        CHECK(bf_gc_same_params("flow", g->params, g->num_params, f->params, f->num_params) == 0);
        CHECK(g->cfg.bound == 1.0f && g->cfg.num_classes == 4);
        bf_flow_free(g);
    }
    /* a shape that disagrees with the configuration is named in the error */
    bf_flow_config c2 = c;
    c2.channels = 32;
    bf_flow *h = bf_flow_new(&c2);
    char bad[512];
    snprintf(bad, sizeof bad, "%s/bad.safetensors", bf_test_tmpdir());
    bf_flow_save(h, h->params, bad, "{\"channels\":\"16\"}");   /* metadata lies */
    CHECK(bf_flow_load(bad, 0) == NULL);
    CHECK(strstr(bf_last_error(), "pos_embed") != NULL);
    CHECK(bf_flow_load("/nonexistent/flow.safetensors", 0) == NULL);
    CHECK(strstr(bf_last_error(), "nonexistent") != NULL);
    bf_flow_free(h);
    bf_flow_free(f);
}

/* A PyTorch TARFlow (dev/tarflow_torch.py, random non-trivial weights) converted by
 * dev/convert.py: z and log-det, the bounded variant, and the inverse with annealed guidance. */
TEST_FP32(flow_converted_pytorch_checkpoint) {
    bf_flow *f = bf_flow_load("tests/fixtures/torch-small/model.safetensors", 0);
    bf_safetensors io;
    CHECK(f && bf_st_load(&io, "tests/fixtures/torch-small/io.safetensors") == 0);
    if (!f) { fprintf(stderr, "    %s\n", bf_last_error()); return; }
    const bf_tensor_view *tx = bf_st_get(&io, "x"), *ty = bf_st_get(&io, "y");
    CHECK(tx && ty);
    int n = (int)tx->shape[0], N = f->T * f->D;
    float *x = floats(tx), *z = bf_malloc(sizeof(float) * n * N), *ld = bf_malloc(sizeof(float) * n);
    int *y = labels_i64(ty);
    bf_flow_encode(f, z, ld, x, y, n);
    CHECK(max_abs_diff(z, bf_st_get(&io, "z")->data, (size_t)n * N) <= 1e-4f);
    CHECK(max_abs_diff(ld, bf_st_get(&io, "logdet")->data, n) <= 1e-5f);
    f->cfg.bound = *(const float *)bf_st_get(&io, "bound")->data;
    bf_flow_encode(f, z, ld, x, y, n);
    CHECK(max_abs_diff(z, bf_st_get(&io, "z_bound")->data, (size_t)n * N) <= 1e-4f);
    CHECK(max_abs_diff(ld, bf_st_get(&io, "logdet_bound")->data, n) <= 1e-5f);
    f->cfg.bound = 0.0f;
    const bf_tensor_view *rz = bf_st_get(&io, "reverse_z"), *ry = bf_st_get(&io, "reverse_y");
    int m = (int)rz->shape[0];
    float *zz = floats(rz), *xr = bf_malloc(sizeof(float) * m * N);
    int *yy = labels_i64(ry);
    struct { const char *key; float cfg; int anneal; } cases[] = {
        {"reverse_cfg0", 0.0f, 0}, {"reverse_cfg2", 2.0f, 0}, {"reverse_cfg2_annealed", 2.0f, 1}};
    for (int k = 0; k < 3; k++) {
        bf_flow_decode_tokens(f, f->params, xr, zz, yy, m, cases[k].cfg, cases[k].anneal);
        float err = max_abs_diff(xr, bf_st_get(&io, cases[k].key)->data, (size_t)m * N);
        if (err > 1e-4f) fprintf(stderr, "    %s: max abs error %g\n", cases[k].key, err);
        CHECK(err <= 1e-4f);
    }
    free(x); free(z); free(ld); free(y); free(zz); free(xr); free(yy);
    bf_st_free(&io);
    bf_flow_free(f);
}

/* The batch split over threads gives the gradient of the whole batch's mean loss. */
TEST_FP32(flow_sharded_step_equals_whole_batch) {
    bf_flow_config c = {8, 1, 2, 16, 2, 1, 8, 3, 1.0f};
    bf_flow *f = random_flow(c, 8, 0.2f);
    int n = 7, N = f->T * f->D, y[7] = {0, 1, 2, -1, 0, 1, 2};
    size_t P = f->num_params;
    float *x = bf_gc_randn(3, (size_t)n * N, 0.0f, 0.7f);
    float *g1 = bf_gc_zeros(P), *g3 = bf_gc_zeros(P);
    bf_flow_acts whole, parts[3];
    bf_flow_acts_init(&whole, f, n);
    float l1 = bf_flow_forward(f, f->params, &whole, x, y, n);
    bf_flow_backward(f, f->params, &whole, g1, NULL);
    float *sg[3] = {NULL, bf_gc_zeros(P), bf_gc_zeros(P)};
    for (int k = 0; k < 3; k++) bf_flow_acts_init(&parts[k], f, 3);
    float l3 = bf_flow_step_sharded(f, f->params, parts, sg, 3, g3, x, y, n);
    CHECK_NEAR(l1, l3, 1e-5);
    float worst = 0.0f, scale = 0.0f;
    for (size_t i = 0; i < P; i++) {
        worst = fmaxf(worst, fabsf(g1[i] - g3[i]));
        scale = fmaxf(scale, fabsf(g1[i]));
    }
    CHECK(scale > 0.0f && worst <= 1e-5f * scale);
    for (int k = 0; k < 3; k++) bf_flow_acts_free(&parts[k]);
    bf_flow_acts_free(&whole);
    free(x); free(g1); free(g3); free(sg[1]); free(sg[2]);
    bf_flow_free(f);
}
