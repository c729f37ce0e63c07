/* The parts of the public API that bindings rely on (src/api.c and the checks at the entry
 * points): versions and struct sizes, threads, the sampling noise, label checks, the
 * per-image likelihood, and finding a reverse model's forward model beside it. */
#include "test.h"
#include "tiny_models.h"
#include "flow.h"
#include "reverse.h"

#include <stdio.h>
#include <sys/stat.h>

TEST(api_versions_and_struct_sizes) {
    CHECK(bf_abi_version() == BF_ABI_VERSION);
    CHECK(!strcmp(bf_version(), BF_VERSION));
    CHECK(bf_sizeof("sample_opts") == sizeof(bf_sample_opts));
    CHECK(bf_sizeof("reverse_sample_opts") == sizeof(bf_reverse_sample_opts));
    CHECK(bf_sizeof("editor") == sizeof(bf_editor));
    CHECK(bf_sizeof("dataset") == sizeof(bf_dataset));
    CHECK(bf_sizeof("bf_dataset") == 0);   /* names go without the prefix */
    CHECK(bf_sizeof("no_such_type") == 0);
    CHECK(bf_sizeof(NULL) == 0);
}

TEST(api_threads_belong_to_the_calling_thread) {
    bf_set_threads(1);
    CHECK(bf_get_threads() == 1);
    bf_set_threads(3);
    CHECK(bf_get_threads() == 3);
    bf_set_threads(0);   /* the default: $OMP_NUM_THREADS or every core */
    CHECK(bf_get_threads() >= 1);
}

TEST(api_fill_normal_is_the_seeded_generator_scaled) {
    float z[64];
    bf_fill_normal(z, 64, 42, 0.5f);
    bf_rng rng;
    bf_rng_seed(&rng, 42);
    int same = 1;
    for (int i = 0; i < 64; i++) same &= z[i] == 0.5f * bf_rng_normal(&rng);
    CHECK(same);
}

TEST(api_labels_are_checked_before_any_work) {
    int ok[3] = {-1, 0, 9}, bad[2] = {0, 10}, neg[1] = {-2};
    CHECK(bf_labels_check(ok, 3, 10) == 0);
    CHECK(bf_labels_check(NULL, 5, 10) == 0);
    CHECK_ERR(bf_labels_check(bad, 2, 10), "label 10 of image 1 is out of range");
    CHECK_ERR(bf_labels_check(neg, 1, 10), "label -2 of image 0");
    CHECK_ERR(bf_labels_check(ok + 1, 1, 0), "unconditional");
    CHECK_ERR(bf_labels_check(ok, -1, 10), "must be >= 0");
    bf_flow *f = bf_test_tiny_flow(1, 8, 2);
    float x[2 * 64] = {0}, z[2 * 64], ld[2];
    CHECK_ERR(bf_flow_encode(f, z, ld, x, bad, 2), "out of range");
    CHECK_ERR(bf_flow_decode(f, x, z, bad, 2, 0.0f, 0), "out of range");
    bf_sample_opts so;
    bf_sample_opts_default(&so);
    bf_sample_stats st;
    CHECK_ERR(bf_flow_sample(f, x, z, bad, 2, &so, &st), "out of range");
    CHECK(bf_flow_encode(f, z, ld, x, NULL, 0) == 0);   /* no images: nothing to do */
    bf_reverse_config rc = bf_test_tiny_reverse_config(0, 1, 1);
    bf_reverse *r = bf_test_random_reverse(rc, 2);
    int four[2] = {1, 4};   /* the tiny G has 4 classes */
    bf_reverse_sample_opts ro;
    bf_reverse_sample_opts_default(&ro);
    CHECK_ERR(bf_reverse_sample(r, x, z, four, 2, &ro, NULL), "label 4 of image 1");
    CHECK(bf_reverse_sample(r, x, z, NULL, 0, &ro, NULL) == 0);
    bf_reverse_free(r);
    bf_flow_free(f);
}

TEST_FP32(api_nll_is_the_prior_minus_the_logdet) {
    bf_flow *f = bf_test_tiny_flow(2, 8, 2);
    enum { N = 3, M = 64 };
    float x[N * M], z[N * M], ld[N], nll[N];
    int y[N] = {0, -1, 7};
    bf_rng rng;
    bf_rng_seed(&rng, 9);
    for (int i = 0; i < N * M; i++) x[i] = 2.0f * bf_rng_uniform(&rng) - 1.0f;
    CHECK(bf_flow_encode(f, z, ld, x, y, N) == 0);
    CHECK(bf_flow_nll(f, nll, x, y, N) == 0);
    for (int i = 0; i < N; i++) {
        double s = 0.0;
        for (int k = 0; k < M; k++) s += (double)z[i * M + k] * z[i * M + k];
        CHECK_NEAR(nll[i], 0.5 * s / M + 0.5 * log(2.0 * M_PI) - ld[i], 1e-5);
    }
    float sigma = -1.0f;
    CHECK(bf_flow_trained_noise(f, &sigma) == 0 && sigma == 0.0f);   /* not from a file */
    bf_flow_free(f);
}

TEST(api_reverse_finds_its_flow_beside_it_after_a_move) {
    char a[512], b[512], fa[600], ra[600], fb[600], rb[600], found[1024];
    snprintf(a, sizeof a, "%s/api_pair", bf_test_tmpdir());
    snprintf(b, sizeof b, "%s/api_pair_moved", bf_test_tmpdir());
    CHECK(mkdir(a, 0755) == 0);
    snprintf(fa, sizeof fa, "%s/f.safetensors", a);
    snprintf(ra, sizeof ra, "%s/g.safetensors", a);
    snprintf(fb, sizeof fb, "%s/f.safetensors", b);
    snprintf(rb, sizeof rb, "%s/g.safetensors", b);
    bf_flow *f = bf_test_tiny_flow(3, 8, 2);
    bf_reverse_config rc = bf_test_tiny_reverse_config(0, 1, 1);
    rc.num_classes = 10;
    bf_reverse *r = bf_test_random_reverse(rc, 5);
    CHECK(bf_flow_save(f, f->params, fa, NULL) == 0);
    CHECK(bf_reverse_set_flow(r, fa, 0.05f) == 0 && bf_reverse_save(r, r->params, ra, NULL) == 0);
    CHECK(rename(a, b) == 0);   /* the pair moves together; G still records a */
    bf_reverse *q = bf_reverse_load(rb, 1);
    CHECK(q != NULL);
    if (q) {
        CHECK(bf_reverse_find_flow(q, rb, found, sizeof found) == 0 && !strcmp(found, fb));
        CHECK(bf_reverse_find_flow(q, b, found, sizeof found) == 0 && !strcmp(found, fb));
        bf_flow *g = bf_reverse_load_flow(q, NULL, rb);
        CHECK(g != NULL && g->num_params == f->num_params);
        bf_flow_free(g);
        CHECK(bf_reverse_load_flow(q, NULL, NULL) == NULL);   /* not looked for beside G */
        CHECK(strstr(bf_last_error(), "cannot open") && strstr(bf_last_error(), "give its path"));
        bf_reverse_free(q);
    }
    bf_reverse_free(r);
    bf_flow_free(f);
}
