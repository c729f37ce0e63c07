/* Matrix product for the linear layers: C (M, N) += op(A) (M, K) @ op(B) (K, N), row-major.
 * ta = 0: A stored (M, K) with row stride lda; ta = 1: A stored (K, M) (transposed).
 * tb = 0: B stored (K, N) with row stride ldb; tb = 1: B stored (N, K) (transposed).
 * On CPUs with AVX-512 this is a packed, cache-blocked kernel written for the shapes of this
 * project (it runs about twice as fast as OpenBLAS's AVX2 kernels, which the environment may
 * force through OPENBLAS_CORETYPE); elsewhere it calls cblas_sgemm.
 *
 * Precision: bf_gemm follows the process-wide setting (bf_set_precision, BF_PRECISION). In
 * bf16 the operands are rounded to bfloat16 (round to nearest even) as they are packed and the
 * products accumulate in fp32 (AVX512-BF16 dot products, or AMX-BF16 tiles where the CPU has
 * them and the product is not tiny: BF_AMX=off forbids them); a CPU without AVX512-BF16
 * computes in fp32 and says so once on stderr. bf_gemm_f32 is always fp32: the convolutional feature
 * and perceptual networks use it, so that evaluation does not depend on the setting. */
#ifndef BF_GEMM_H
#define BF_GEMM_H

#include <stddef.h>
#include <stdint.h>

void bf_gemm(int ta, int tb, int M, int N, int K, const float *A, int lda, const float *B,
             int ldb, float *C, int ldc);
/* C (M, N) = bias + op(A) @ op(B), bias (N) added to every row (NULL: none): C is set, its
 * old values never read (a linear layer's output without a pass filling it with the bias
 * first). The kernels and precision of bf_gemm and bf_gemm_f32; the bias starts the fp32 sums
 * of the first K slice where C's old values start them in bf_gemm, so the result is bit for
 * bit that of filling C with the bias and calling bf_gemm / bf_gemm_f32. */
void bf_gemm_bias(int ta, int tb, int M, int N, int K, const float *A, int lda, const float *B,
                  int ldb, float *C, int ldc, const float *bias);
void bf_gemm_f32_bias(int ta, int tb, int M, int N, int K, const float *A, int lda,
                      const float *B, int ldb, float *C, int ldc, const float *bias);
/* Always fp32 (biflow's AVX-512 kernel, or OpenBLAS). */
void bf_gemm_f32(int ta, int tb, int M, int N, int K, const float *A, int lda, const float *B,
                 int ldb, float *C, int ldc);
/* Always bf16 operands with fp32 accumulation where the CPU can (bf_gemm_bf16_available),
 * otherwise fp32 with the one-line note. */
void bf_gemm_bf16(int ta, int tb, int M, int N, int K, const float *A, int lda, const float *B,
                  int ldb, float *C, int ldc);
/* The bf16 product on one kernel whatever the shape, for tests and benchmarks: AVX512-BF16
 * (fp32 with the note where the CPU lacks it), and AMX-BF16 tiles (the AVX512-BF16 kernel
 * where bf_gemm_amx_available is 0). bf_gemm_bf16 chooses between them by shape. */
void bf_gemm_bf16_avx512(int ta, int tb, int M, int N, int K, const float *A, int lda,
                         const float *B, int ldb, float *C, int ldc);
void bf_gemm_bf16_amx(int ta, int tb, int M, int N, int K, const float *A, int lda,
                      const float *B, int ldb, float *C, int ldc);
/* The same product through OpenBLAS (reference and fallback). */
void bf_gemm_blas(int ta, int tb, int M, int N, int K, const float *A, int lda, const float *B,
                  int ldb, float *C, int ldc);
/* 1 when bf_gemm_f32 uses its own kernel, 0 when it calls OpenBLAS (BF_GEMM=blas forces that). */
int bf_gemm_native(void);
/* 1 when bf_gemm_bf16 really computes in bf16: the CPU has AVX512-BF16 (with AVX512F/BW/VL
 * and the OS saving their registers) and BF_GEMM=blas does not force OpenBLAS. */
int bf_gemm_bf16_available(void);

/* 1 when bf16 products may use AMX tiles: bf_gemm_bf16_available, the CPU has AMX-TILE and
 * AMX-BF16, Linux granted the tile state (arch_prctl) and XCR0 enables it, and neither
 * BF_AMX=off nor bf_gemm_test_hide_amx hides it. */
int bf_gemm_amx_available(void);

/* fp32 -> bf16, round to nearest even; NaN stays NaN (quiet, sign kept), +-Inf stays +-Inf,
 * finite values beyond the bf16 range round to +-Inf, denormals round like any other value.
 * The scalar reference of the conversion the packing does. */
uint16_t bf_f32_to_bf16_ref(float x);
float bf_bf16_to_f32(uint16_t h);
/* The packing's own (vector, where the CPU has AVX-512) conversion of n values. */
void bf_f32_to_bf16_array(uint16_t *dst, const float *src, size_t n);

/* Tests only: hide the CPU's AVX512-BF16 (hide = 1) to exercise the fp32 fallback, and make
 * the fallback note print again (it prints once per process otherwise). */
void bf_gemm_test_hide_bf16(int hide);
/* Tests only: hide AMX (hide = 1), so that bf_gemm_bf16 runs on AVX512-BF16 alone. */
void bf_gemm_test_hide_amx(int hide);

#endif
