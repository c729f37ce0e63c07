/* bf_gemm against a naive double-precision product, for every transpose combination and for
 * sizes that exercise the edges of the 12x32 tiles and the K slices. */
#include "test.h"
#include "gemm.h"
#include "gradcheck.h"

static void naive(int ta, int tb, int M, int N, int K, const float *A, int lda, const float *B,
                  int ldb, double *C, int ldc) {
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double s = 0.0;
            for (int k = 0; k < K; k++)
                s += (double)(ta ? A[(size_t)k * lda + i] : A[(size_t)i * lda + k]) *
                     (tb ? B[(size_t)j * ldb + k] : B[(size_t)k * ldb + j]);
            C[(size_t)i * ldc + j] += s;
        }
}

TEST_FP32(gemm_matches_naive_all_transposes_and_edges) {
    const int sizes[][3] = {{1, 1, 1}, {12, 32, 7}, {13, 33, 300}, {50, 16, 128},
                            {127, 96, 513}, {3, 130, 40}, {200, 17, 1}};
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++)
        for (int ta = 0; ta <= 1; ta++)
            for (int tb = 0; tb <= 1; tb++) {
                int M = sizes[s][0], N = sizes[s][1], K = sizes[s][2];
                int lda = (ta ? M : K) + 3, ldb = (tb ? K : N) + 5, ldc = N + 2;
                float *A = bf_gc_randn(1 + s, (size_t)(ta ? K : M) * lda, 0.0f, 1.0f);
                float *B = bf_gc_randn(50 + s, (size_t)(tb ? N : K) * ldb, 0.0f, 1.0f);
                float *C = bf_gc_randn(99 + s, (size_t)M * ldc, 0.0f, 1.0f);
                double *R = bf_malloc(sizeof(double) * M * ldc);
                for (size_t i = 0; i < (size_t)M * ldc; i++) R[i] = C[i];
                bf_gemm(ta, tb, M, N, K, A, lda, B, ldb, C, ldc);
                naive(ta, tb, M, N, K, A, lda, B, ldb, R, ldc);
                double worst = 0.0;
                for (int i = 0; i < M; i++)
                    for (int j = 0; j < ldc; j++) {   /* padding columns must stay untouched */
                        double d = fabs(C[(size_t)i * ldc + j] - R[(size_t)i * ldc + j]);
                        if (!(d <= worst)) worst = d;
                    }
                if (!(worst <= 1e-5 * sqrt((double)K) * 4))
                    fprintf(stderr, "    M=%d N=%d K=%d ta=%d tb=%d: max error %g\n", M, N, K, ta, tb, worst);
                CHECK(worst <= 1e-5 * sqrt((double)K) * 4);
                free(A); free(B); free(C); free(R);
            }
}
