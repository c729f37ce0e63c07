/* The fast paths of G's training step (issue 11) against the forms they replace: the linear
 * layer's product setting its output to bias + product itself (bf_gemm_bias) instead of a
 * pass filling it with the bias first. */
#include "test.h"
#include "gradcheck.h"
#include "gemm.h"
#include "kernels.h"
#include "kernels_cond.h"
#include "kernels_conv.h"

#include <stdlib.h>
#include <string.h>

/* Shapes reaching every kernel and edge: M < 4 (OpenBLAS), fp32 K slices (K > 256), bf16 K
 * slices (K > 512), AMX full and edge 32 x 32 blocks (N K >= 3072), AVX512-BF16 (N K < 3072),
 * bias or none; both precisions, each against filling C and accumulating: the same bits. */
TEST(gemm_bias_sets_c_as_fill_then_accumulate) {
    static const int shapes[][3] = {   /* M, N, K */
        {3, 40, 20}, {64, 64, 128}, {70, 45, 300}, {96, 128, 600}, {33, 20, 30}, {17, 16, 16},
        {128, 96, 64}, {50, 200, 1100},
    };
    bf_precision keep = bf_get_precision();
    for (int pr = 0; pr < 2; pr++) {
        bf_set_precision(pr ? BF_PRECISION_BF16 : BF_PRECISION_FP32);
        for (int s = 0; s < NUM(shapes); s++)
            for (int t = 0; t < 4; t++)
                for (int hb = 0; hb < 2; hb++) {
                    int M = shapes[s][0], N = shapes[s][1], K = shapes[s][2], ta = t & 1, tb = t >> 1;
                    float *A = bf_gc_randn_shifted(100 + s, (size_t)M * K, 1.0f);
                    float *B = bf_gc_randn_shifted(200 + s, (size_t)K * N, 1.0f);
                    float *bias = hb ? bf_gc_randn_shifted(300 + s, (size_t)N, 1.0f) : NULL;
                    int ldc = N + 3;   /* C's rows wider than N: the gap must stay as it was */
                    float *got = bf_gc_nans((size_t)M * ldc), *want = bf_gc_nans((size_t)M * ldc);
                    for (int i = 0; i < M; i++)
                        for (int j = 0; j < N; j++) want[(size_t)i * ldc + j] = bias ? bias[j] : 0.0f;
                    bf_gemm(ta, tb, M, N, K, A, ta ? M : K, B, tb ? K : N, want, ldc);
                    bf_gemm_bias(ta, tb, M, N, K, A, ta ? M : K, B, tb ? K : N, got, ldc, bias);
                    int same = 1;
                    for (size_t i = 0; i < (size_t)M * ldc; i++) {
                        uint32_t a, b;
                        memcpy(&a, &got[i], 4);
                        memcpy(&b, &want[i], 4);
                        same &= a == b;
                    }
                    if (!same)
                        fprintf(stderr, "    %s M=%d N=%d K=%d ta=%d tb=%d bias=%d differs\n",
                                pr ? "bf16" : "fp32", M, N, K, ta, tb, hb);
                    CHECK(same);
                    if (!pr && !ta && tb) {   /* the always-fp32 entry, the linear layer's form */
                        bf_gemm_f32_bias(0, 1, M, N, K, A, K, B, K, got, ldc, bias);
                        CHECK(memcmp(got, want, sizeof(float) * M * ldc) == 0);
                    }
                    free(A); free(B); free(bias); free(got); free(want);
                }
    }
    bf_set_precision(keep);
}

/* The linear layer against its reference form, in the precision the suite runs in. */
TEST(linear_forward_matches_fill_then_accumulate) {
    static const int shapes[][3] = {{3136 / 8, 128, 384}, {49, 512, 128}, {2, 64, 64}, {64, 3136, 256}};
    for (int s = 0; s < NUM(shapes); s++) {
        int N = shapes[s][0], IC = shapes[s][1], OC = shapes[s][2];
        float *x = bf_gc_randn_shifted(400 + s, (size_t)N * IC, 1.0f);
        float *w = bf_gc_randn_shifted(410 + s, (size_t)OC * IC, 0.1f);
        float *b = bf_gc_randn_shifted(420 + s, (size_t)OC, 1.0f);
        float *got = bf_gc_nans((size_t)N * OC), *want = bf_gc_nans((size_t)N * OC);
        bf_linear_forward(got, x, w, b, N, IC, OC);
        bf_linear_forward_ref(want, x, w, b, N, IC, OC);
        CHECK(memcmp(got, want, sizeof(float) * N * OC) == 0);
        bf_linear_forward(got, x, w, NULL, N, IC, OC);
        bf_linear_forward_ref(want, x, w, NULL, N, IC, OC);
        CHECK(memcmp(got, want, sizeof(float) * N * OC) == 0);
        free(x); free(w); free(b); free(got); free(want);
    }
}

/* bits of n floats equal */
static int same_bits(const float *a, const float *b, size_t n) { return memcmp(a, b, sizeof(float) * n) == 0; }

/* The *_set backwards write their input gradient over whatever it held (NaN here) and give the
 * bits of zeroing it and accumulating; the parameter gradients still accumulate. */
TEST(backward_set_variants_match_zero_then_accumulate) {
    bf_precision keep = bf_get_precision();
    for (int pr = 0; pr < 2; pr++) {   /* the linear layer in both precisions */
        bf_set_precision(pr ? BF_PRECISION_BF16 : BF_PRECISION_FP32);
        static const int shapes[][3] = {{196, 128, 512}, {3, 20, 7}, {100, 512, 128}, {64, 48, 16}};
        for (int s = 0; s < NUM(shapes); s++) {
            int N = shapes[s][0], IC = shapes[s][1], OC = shapes[s][2];
            float *x = bf_gc_randn_shifted(500 + s, (size_t)N * IC, 1.0f);
            float *w = bf_gc_randn_shifted(510 + s, (size_t)OC * IC, 0.2f);
            float *g = bf_gc_randn_shifted(520 + s, (size_t)N * OC, 1.0f);
            float *d1 = bf_gc_nans((size_t)N * IC), *d2 = bf_gc_zeros((size_t)N * IC);
            float *dw1 = bf_gc_randn_shifted(530 + s, (size_t)OC * IC, 1.0f), *dw2 = bf_gc_zeros((size_t)OC * IC);
            float *db1 = bf_gc_randn_shifted(540 + s, (size_t)OC, 1.0f), *db2 = bf_gc_zeros((size_t)OC);
            memcpy(dw2, dw1, sizeof(float) * OC * IC);
            memcpy(db2, db1, sizeof(float) * OC);
            bf_linear_backward_set(d1, dw1, db1, g, x, w, N, IC, OC);
            bf_linear_backward(d2, dw2, db2, g, x, w, N, IC, OC);
            CHECK(same_bits(d1, d2, (size_t)N * IC));
            CHECK(same_bits(dw1, dw2, (size_t)OC * IC));
            CHECK(same_bits(db1, db2, (size_t)OC));
            free(x); free(w); free(g); free(d1); free(d2); free(dw1); free(dw2); free(db1); free(db2);
        }
    }
    bf_set_precision(keep);

    size_t n = 4 * 1024 + 13;   /* whole vectors, whole chunks and a tail */
    float *x = bf_gc_randn_shifted(600, n, 2.0f), *g = bf_gc_randn_shifted(601, n, 1.0f);
    float *d1 = bf_gc_nans(n), *d2 = bf_gc_zeros(n);
    bf_gelu_backward_set(d1, x, g, n);
    bf_gelu_backward(d2, x, g, n);
    CHECK(same_bits(d1, d2, n));
    free(x); free(g); free(d1); free(d2);

    int B = 3, T = 7, C = 80;   /* a channel block and a partial one */
    size_t ntc = (size_t)B * T * C, nbc = (size_t)B * C;
    float *a = bf_gc_randn_shifted(610, ntc, 1.0f), *v = bf_gc_randn_shifted(611, nbc, 1.0f);
    float *dout = bf_gc_randn_shifted(612, ntc, 1.0f);
    float *s1 = bf_gc_randn_shifted(613, nbc, 1.0f), *p1 = bf_gc_randn_shifted(614, nbc, 1.0f);
    float *s2 = bf_gc_zeros(nbc), *p2 = bf_gc_zeros(nbc);
    float *x1 = bf_gc_nans(ntc), *x2 = bf_gc_zeros(ntc), *h1 = bf_gc_nans(ntc), *h2 = bf_gc_zeros(ntc);
    memcpy(s2, s1, sizeof(float) * nbc);
    memcpy(p2, p1, sizeof(float) * nbc);
    bf_adaln_modulate_backward_set(x1, s1, p1, dout, a, v, B, T, C);
    bf_adaln_modulate_backward(x2, s2, p2, dout, a, v, B, T, C);
    CHECK(same_bits(x1, x2, ntc) && same_bits(s1, s2, nbc) && same_bits(p1, p2, nbc));
    for (size_t i = 0; i < ntc; i++) x1[i] = NAN;
    memset(x2, 0, sizeof(float) * ntc);
    bf_gated_residual_backward_set(x1, p1, h1, dout, v, a, B, T, C);
    bf_gated_residual_backward(x2, p2, h2, dout, v, a, B, T, C);
    CHECK(same_bits(x1, x2, ntc) && same_bits(h1, h2, ntc) && same_bits(p1, p2, nbc));
    free(a); free(v); free(dout); free(s1); free(p1); free(s2); free(p2);
    free(x1); free(x2); free(h1); free(h2);
}

/* The vector row copies of im2col and col2im (stride 1) on rows longer than a vector, with
 * padding windows cutting into the first and the last piece: forward and input gradient
 * against the double-sum references. */
TEST(conv2d_stride1_long_rows_match_ref) {
    static const bf_conv_dims cases[] = {
        {2, 3, 28, 37, 4, 3, 1, 1, 0}, {1, 2, 20, 35, 3, 5, 1, 2, 0}, {1, 2, 9, 33, 2, 3, 1, 0, 0},
        {1, 1, 5, 17, 2, 7, 1, 3, 0}, {1, 2, 6, 48, 3, 3, 1, 1, 0}, {1, 1, 4, 16, 2, 3, 1, 1, 0},
    };
    for (int k = 0; k < NUM(cases); k++) {
        const bf_conv_dims *d = &cases[k];
        size_t ni = (size_t)d->N * d->C * d->H * d->W, nw = (size_t)d->OC * d->C * d->K * d->K;
        size_t no = (size_t)d->N * d->OC * bf_conv_out_h(d) * bf_conv_out_w(d);
        float *x = bf_gc_randn_shifted(800 + k, ni, 1.0f), *w = bf_gc_randn_shifted(810 + k, nw, 0.5f);
        float *b = bf_gc_randn_shifted(820 + k, (size_t)d->OC, 1.0f), *g = bf_gc_randn_shifted(830 + k, no, 1.0f);
        float *out = bf_gc_nans(no), *ref = bf_gc_nans(no);
        float *col = bf_gc_nans(bf_conv_col_size(d)), *dcol = bf_gc_nans(bf_conv_col_size(d));
        float *dx = bf_gc_randn_shifted(840 + k, ni, 1.0f), *dxr = bf_gc_zeros(ni);
        float *dw = bf_gc_zeros(nw), *dwr = bf_gc_zeros(nw);
        memcpy(dxr, dx, sizeof(float) * ni);   /* accumulates onto what was there */
        bf_conv2d_forward(out, col, x, w, b, d);
        bf_conv2d_forward_ref(ref, x, w, b, d);
        CHECK(bf_gc_close_f("conv long rows out", out, ref, no, 1e-4, 1e-4) == 0);
        bf_conv2d_backward(dx, dw, NULL, col, dcol, g, x, w, d);
        bf_conv2d_backward_ref(dxr, dwr, NULL, g, x, w, d);
        CHECK(bf_gc_close_f("conv long rows dinp", dx, dxr, ni, 1e-4, 1e-4) == 0);
        CHECK(bf_gc_close_f("conv long rows dweight", dw, dwr, nw, 1e-4, 1e-4) == 0);
        free(x); free(w); free(b); free(g); free(out); free(ref); free(col); free(dcol);
        free(dx); free(dxr); free(dw); free(dwr);
    }
}

/* B given transposed (a linear layer's weights in its forward) is packed by whole-vector
 * conversion and a 16 x 16 transpose; B as stored is packed row pair by row pair. Both must
 * give the same packed values, so the two products agree bit for bit, on both bf16 kernels,
 * through K slices, odd K, partial column panels, and denormal and NaN values (which take the
 * exact conversion). */
TEST(bf16_transposed_b_packs_as_plain_b) {
    if (!bf_gemm_bf16_available()) SKIP("this CPU computes bf16 products in fp32");
    static const int shapes[][3] = {{40, 50, 33}, {64, 128, 128}, {33, 96, 1100}, {7, 17, 5}, {96, 40, 64}};
    for (int s = 0; s < NUM(shapes); s++)
        for (int kern = 0; kern < 2; kern++) {
            int M = shapes[s][0], N = shapes[s][1], K = shapes[s][2];
            float *A = bf_gc_randn_shifted(900 + s, (size_t)M * K, 1.0f);
            float *Bt = bf_gc_randn_shifted(910 + s, (size_t)N * K, 1.0f);   /* (N, K) */
            Bt[3 % (N * K)] = 1e-40f;                 /* denormals and a NaN */
            Bt[(size_t)K + 1 < (size_t)N * K ? (size_t)K + 1 : 0] = -3e-39f;
            Bt[(size_t)N * K - 1] = NAN;
            float *B = bf_malloc(sizeof(float) * N * K);                      /* (K, N) */
            for (int j = 0; j < N; j++)
                for (int k = 0; k < K; k++) B[(size_t)k * N + j] = Bt[(size_t)j * K + k];
            float *c1 = bf_gc_zeros((size_t)M * N), *c2 = bf_gc_zeros((size_t)M * N);
            if (kern) {
                bf_gemm_bf16_amx(0, 1, M, N, K, A, K, Bt, K, c1, N);
                bf_gemm_bf16_amx(0, 0, M, N, K, A, K, B, N, c2, N);
            } else {
                bf_gemm_bf16_avx512(0, 1, M, N, K, A, K, Bt, K, c1, N);
                bf_gemm_bf16_avx512(0, 0, M, N, K, A, K, B, N, c2, N);
            }
            int same = memcmp(c1, c2, sizeof(float) * M * N) == 0;
            if (!same) fprintf(stderr, "    %s M=%d N=%d K=%d differ\n", kern ? "amx" : "avx512", M, N, K);
            CHECK(same);
            free(A); free(Bt); free(B); free(c1); free(c2);
        }
}
