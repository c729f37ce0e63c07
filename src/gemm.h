/* Matrix product for the linear layers: C (M, N) += op(A) (M, K) @ op(B) (K, N), row-major.
 * ta = 0: A stored (M, K) with row stride lda; ta = 1: A stored (K, M) (transposed).
 * tb = 0: B stored (K, N) with row stride ldb; tb = 1: B stored (N, K) (transposed).
 * On CPUs with AVX-512 this is a packed, cache-blocked kernel written for the shapes of this
 * project (it runs about twice as fast as OpenBLAS's AVX2 kernels, which the environment may
 * force through OPENBLAS_CORETYPE); elsewhere it calls cblas_sgemm. */
#ifndef BF_GEMM_H
#define BF_GEMM_H

void bf_gemm(int ta, int tb, int M, int N, int K, const float *A, int lda, const float *B,
             int ldb, float *C, int ldc);
/* The same product through OpenBLAS (reference and fallback). */
void bf_gemm_blas(int ta, int tb, int M, int N, int K, const float *A, int lda, const float *B,
                  int ldb, float *C, int ldc);
/* 1 when bf_gemm uses its own kernel, 0 when it calls OpenBLAS (BF_GEMM=blas forces that). */
int bf_gemm_native(void);

#endif
