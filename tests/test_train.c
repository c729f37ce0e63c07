/* Training: a resumed run continues exactly where an uninterrupted one would be, a damaged
 * resume file is refused, and the optimiser pieces behave as specified. */
#include "test.h"
#include "flow.h"
#include "optim.h"
#include "tiny_models.h"

#include <unistd.h>

static float *load_params(const char *dir) {
    bf_flow *f = bf_flow_load(dir, 0);
    if (!f) return NULL;
    float *p = bf_malloc(sizeof(float) * f->num_params);
    memcpy(p, f->params, sizeof(float) * f->num_params);
    bf_flow_free(f);
    return p;
}

TEST(train_resume_matches_uninterrupted_run) {
    REQUIRE_FASHION_MNIST();   /* trains on it */
    char a[512], b[512];
    snprintf(a, sizeof a, "%s/run-a", bf_test_tmpdir());
    snprintf(b, sizeof b, "%s/run-b", bf_test_tmpdir());
    bf_train_opts o;
    bf_test_tiny_train_opts(&o, a, 6);
    CHECK(bf_train_flow(&o) == 0);
    bf_test_tiny_train_opts(&o, b, 3);    /* "killed" after step 3 ... */
    CHECK(bf_train_flow(&o) == 0);
    bf_test_tiny_train_opts(&o, b, 6);    /* ... and resumed to step 6 */
    o.resume = 1;
    CHECK(bf_train_flow(&o) == 0);
    float *pa = load_params(a), *pb = load_params(b);
    CHECK(pa && pb);
    bf_flow *f = bf_flow_load(a, 0);
    if (pa && pb && f) CHECK(memcmp(pa, pb, sizeof(float) * f->num_params) == 0);
    /* training moved the weights away from the identity initialisation */
    float out_norm = 0.0f;
    if (f) for (int i = 0; i < 2 * f->D * f->W; i++) out_norm += fabsf(f->params[f->blocks[0].out_w + i]);
    CHECK(out_norm > 0.0f);
    /* the log of the resumed run has one record per step, none repeated */
    char path[600], line[512];
    snprintf(path, sizeof path, "%s/log.jsonl", b);
    FILE *fp = fopen(path, "r");
    int lines = 0;
    while (fp && fgets(line, sizeof line, fp)) lines++;
    if (fp) fclose(fp);
    CHECK(lines == 6);
    free(pa); free(pb);
    bf_flow_free(f);
}

/* A finished tiny run of 3 steps into TMP/name (dir: 512 bytes); its resume file's path in state
 * (600 bytes); *o is left as the options of resuming it to step 6. */
static void three_steps_then_resume_opts(bf_train_opts *o, char *dir, char *state, const char *name) {
    snprintf(dir, 512, "%s/%s", bf_test_tmpdir(), name);
    bf_test_tiny_train_opts(o, dir, 3);
    CHECK(bf_train_flow(o) == 0);
    snprintf(state, 600, "%s/train_state.safetensors", dir);
    bf_test_tiny_train_opts(o, dir, 6);
    o->resume = 1;
}

TEST(train_refuses_damaged_resume_state) {
    REQUIRE_FASHION_MNIST();   /* trains on it */
    char dir[512], path[600];
    bf_train_opts o;
    three_steps_then_resume_opts(&o, dir, path, "run-c");
    CHECK(truncate(path, 1000) == 0);
    CHECK(bf_train_flow(&o) != 0);
    CHECK(strstr(bf_last_error(), "train_state") != NULL);
    /* options out of range are refused before anything is written */
    bf_test_tiny_train_opts(&o, dir, 6);
    o.lr = -1.0f;
    CHECK(bf_train_flow(&o) != 0);
}

TEST(optim_adamw_schedule_clip_ema) {
    /* one AdamW step from zero moments moves each weight by lr * sign(g) (+ decay) */
    float p[3] = {1.0f, -2.0f, 0.5f}, m[3] = {0}, v[3] = {0}, g[3] = {0.3f, -0.1f, 0.0f};
    unsigned char mask[3] = {1, 0, 1};
    bf_adamw_hparams h = {0.01f, 0.9f, 0.95f, 1e-8f, 0.1f};
    bf_adamw_step(p, m, v, g, mask, 3, &h, 1);
    CHECK_NEAR(p[0], 1.0f - 0.01f * (1.0f + 0.1f * 1.0f), 1e-6);
    CHECK_NEAR(p[1], -2.0f + 0.01f, 1e-6);              /* no decay where the mask is 0 */
    CHECK_NEAR(p[2], 0.5f - 0.01f * 0.1f * 0.5f, 1e-6);  /* zero gradient: decay only */
    /* From zero moments the first step is lr * sign(g) whatever beta1 and beta2 are; a second
     * step tells them apart. p[1] (no decay), g = -0.1 then 0.2, t = 2:
     *   m = 0.9 (0.1 (-0.1)) + 0.1 (0.2) = 0.011,          m^ = 0.011 / (1 - 0.9^2) = 0.0578947
     *   v = 0.95 (0.05 (0.01)) + 0.05 (0.04) = 0.002475,   v^ = 0.002475 / (1 - 0.95^2) = 0.0253846
     *   p = -1.99 - 0.01 (0.0578947 / sqrt(0.0253846)) = -1.9936337
     * p[0] (decay 0.1), g = 0.3 then -0.2: m = 0.007, m^ = 0.0368421, v = 0.006275,
     *   v^ = 0.0643590, p = 0.989 - 0.01 (0.0368421 / 0.2536909 + 0.1 (0.989)) = 0.9865588
     * p[2] (decay), g = 0 then 0.4: m^ = 0.04 / 0.19, v^ = 0.008 / 0.0975,
     *   p = 0.4995 - 0.01 (0.2105263 / 0.2864459 + 0.04995) = 0.4916509
     * With beta1 and beta2 swapped: -1.993353, 0.9862837, 0.4919318 (off by 3e-4). */
    float g2[3] = {-0.2f, 0.2f, 0.4f};
    bf_adamw_step(p, m, v, g2, mask, 3, &h, 2);
    CHECK_NEAR(p[0], 0.9865588, 2e-6);
    CHECK_NEAR(p[1], -1.9936337, 2e-6);
    CHECK_NEAR(p[2], 0.4916509, 2e-6);
    CHECK_NEAR(bf_lr_schedule(0, 10, 100, 1.0f, 0.0f), 0.1, 1e-6);
    CHECK_NEAR(bf_lr_schedule(9, 10, 100, 1.0f, 0.0f), 1.0, 1e-6);
    CHECK_NEAR(bf_lr_schedule(55, 10, 100, 1.0f, 0.0f), 0.5, 1e-6);
    CHECK_NEAR(bf_lr_schedule(100, 10, 100, 1.0f, 0.1f), 0.1, 1e-6);
    float gr[2] = {3.0f, 4.0f};
    double n = bf_grad_norm(gr, 2);
    CHECK_NEAR(n, 5.0, 1e-9);
    bf_clip_grad(gr, 2, n, 1.0f);
    CHECK_NEAR(bf_grad_norm(gr, 2), 1.0, 1e-5);
    float bad[2] = {1.0f, NAN};
    CHECK(!isfinite(bf_grad_norm(bad, 2)));
    float e[1] = {0.0f}, q[1] = {1.0f};
    bf_ema_update(e, q, 1, 0.9f);
    CHECK_NEAR(e[0], 0.1, 1e-7);
}

/* bench train's steps: the library's step and optimiser (the weights move), both timings
 * taken; bad sizes refused. */
TEST(bench_train_steps_take_training_steps) {
    bf_flow *f = bf_test_tiny_flow(3, 8, 2);
    size_t n = bf_flow_num_params(f);
    float *before = bf_malloc(sizeof(float) * n);
    memcpy(before, bf_flow_params(f), sizeof(float) * n);
    bf_bench_train_result r = {0};
    CHECK(bf_bench_train_steps(f, 3, 2, 1, &r) == 0);
    CHECK(r.shards >= 1 && r.shards <= 3 && r.seconds > 0 && r.unsharded_seconds > 0);
    double moved = 0.0;
    for (size_t i = 0; i < n; i++) moved = fmax(moved, fabs((double)bf_flow_params(f)[i] - before[i]));
    CHECK(moved > 0.0);
    CHECK_ERR(bf_bench_train_steps(f, 0, 2, 1, &r), "batch");
    CHECK_ERR(bf_bench_train_steps(f, 2, 0, 1, &r), "steps");
    free(before);
    bf_flow_free(f);
}

/* A non-finite loss stops training with a message; the checkpoint on disk stays as it was. */
TEST(train_stops_on_nonfinite_loss_without_writing) {
    REQUIRE_FASHION_MNIST();   /* trains on it */
    char dir[512], path[600];
    bf_train_opts o;
    three_steps_then_resume_opts(&o, dir, path, "run-nan");
    /* poison the resume state: one weight becomes NaN */
    bf_safetensors st;
    CHECK(bf_st_load(&st, path) == 0);
    bf_st_writer *w = bf_st_writer_new();
    for (int i = 0; i < st.n_meta; i++) bf_st_writer_meta(w, st.meta_keys[i], st.meta_values[i]);
    for (int i = 0; i < st.n; i++) {
        const bf_tensor_view *t = &st.tensors[i];
        size_t bytes = (size_t)t->numel * (t->dtype == BF_DT_I64 ? 8 : 4);
        char *copy = bf_malloc(bytes);
        memcpy(copy, t->data, bytes);
        if (!strcmp(t->name, "params")) ((float *)copy)[7] = NAN;
        bf_st_writer_add(w, t->name, t->dtype, t->ndim, t->shape, copy);
        free(copy);
    }
    CHECK(bf_st_writer_save(w, path) == 0);
    bf_st_writer_free(w);
    bf_st_free(&st);
    float *before = load_params(dir);
    CHECK(bf_train_flow(&o) != 0);
    CHECK(strstr(bf_last_error(), "step 4") && strstr(bf_last_error(), "not applied"));
    float *after = load_params(dir);   /* still the finite step-3 weights */
    CHECK(before && after);
    bf_flow *f = bf_flow_load(dir, 0);
    if (before && after && f) CHECK(memcmp(before, after, sizeof(float) * f->num_params) == 0);
    bf_flow_free(f);
    free(before); free(after);
}
