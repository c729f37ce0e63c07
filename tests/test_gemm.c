/* bf_gemm against a naive double-precision product, for every transpose combination and for
 * sizes that exercise the edges of the 12x32 tiles and the K slices. */
#include "test.h"
#include "gemm.h"
#include "gradcheck.h"

#include <malloc.h>
#include <pthread.h>

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

/* The packed GEMM keeps a buffer per calling thread. A thread that ended (OpenMP shrinks its
 * pool when a team gets smaller) lost its buffer; LeakSanitizer found it (make SAN=1 test).
 * 40 threads of one product each must not leave 40 buffers (256 KiB each) behind. Without
 * AVX-512 bf_gemm goes to OpenBLAS and keeps no buffer. */
typedef struct { const float *a, *b; float *c; } gemm_job;

static void *gemm_on_thread(void *arg) {
    gemm_job *j = arg;
    bf_gemm(0, 0, 8, 256, 256, j->a, 256, j->b, 256, j->c, 256);   /* serial: 8 x 256 x 256 */
    return NULL;
}

TEST(gemm_scratch_is_freed_when_its_thread_ends) {
    float *a = bf_calloc(8 * 256, sizeof(float)), *b = bf_calloc(256 * 256, sizeof(float));
    float *c = bf_calloc(8 * 256, sizeof(float));
    gemm_job j = {a, b, c};
    pthread_t t;
    BF_ASSERT(pthread_create(&t, NULL, gemm_on_thread, &j) == 0 && pthread_join(t, NULL) == 0);
    struct mallinfo2 m0 = mallinfo2();
    for (int i = 0; i < 40; i++)
        BF_ASSERT(pthread_create(&t, NULL, gemm_on_thread, &j) == 0 && pthread_join(t, NULL) == 0);
    struct mallinfo2 m1 = mallinfo2();
    double grew = ((double)m1.uordblks + (double)m1.hblkhd) - ((double)m0.uordblks + (double)m0.hblkhd);
    if (grew >= 4e6) fprintf(stderr, "    40 threads left %.0f bytes allocated\n", grew);
    CHECK(grew < 4e6);
    free(a);
    free(b);
    free(c);
}
