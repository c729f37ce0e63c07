/* A packed, cache-blocked single-precision GEMM with a 12x32 AVX-512 micro-kernel.
 * Blocking: K in slices of KC; B's slice is packed once into 32-column panels (shared by all
 * threads), each thread packs 12-row panels of A and runs the micro-kernel over every column
 * panel. Edges are zero-padded in the packed copies and written back with masks. */
#include "gemm.h"
#include "core.h"

#include <cblas.h>
#include <pthread.h>
#include <stdlib.h>

void bf_gemm_blas(int ta, int tb, int M, int N, int K, const float *A, int lda, const float *B,
                  int ldb, float *C, int ldc) {
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
                M, N, K, 1.0f, A, lda, B, ldb, 1.0f, C, ldc);
}

#if defined(__AVX512F__)
#include <immintrin.h>

#define MR 12
#define NR 32
#define KC 256

static int use_blas = -1;
/* per calling thread: decoders call bf_gemm from inside their own parallel regions. A thread
 * that ends (OpenMP shrinks its pool when a team gets smaller) frees its buffer through the
 * key's destructor; LeakSanitizer found these buffers lost. */
static _Thread_local float *b_scratch;
static _Thread_local size_t b_scratch_size;
static pthread_key_t scratch_key;
static pthread_once_t scratch_once = PTHREAD_ONCE_INIT;

static void scratch_key_make(void) { BF_ASSERT(pthread_key_create(&scratch_key, free) == 0); }

int bf_gemm_native(void) {
    if (use_blas < 0) {
        const char *e = getenv("BF_GEMM");
        use_blas = e && !strcmp(e, "blas");
    }
    return !use_blas;
}

/* C tile (mr x nr) += Ap (kc x MR) @ Bp (kc x NR) */
static void micro_kernel(int kc, const float *Ap, const float *Bp, float *C, int ldc, int mr,
                         int nr) {
    __m512 c[MR][2];
    for (int i = 0; i < MR; i++) c[i][0] = c[i][1] = _mm512_setzero_ps();
    for (int k = 0; k < kc; k++) {
        __m512 b0 = _mm512_load_ps(Bp + (size_t)k * NR), b1 = _mm512_load_ps(Bp + (size_t)k * NR + 16);
        const float *a = Ap + (size_t)k * MR;
#pragma GCC unroll 12
        for (int i = 0; i < MR; i++) {
            __m512 ai = _mm512_set1_ps(a[i]);
            c[i][0] = _mm512_fmadd_ps(ai, b0, c[i][0]);
            c[i][1] = _mm512_fmadd_ps(ai, b1, c[i][1]);
        }
    }
    __mmask16 m0 = nr >= 16 ? 0xFFFF : (__mmask16)((1u << nr) - 1);
    __mmask16 m1 = nr >= 32 ? 0xFFFF : nr <= 16 ? 0 : (__mmask16)((1u << (nr - 16)) - 1);
    for (int i = 0; i < mr; i++) {
        float *ci = C + (size_t)i * ldc;
        _mm512_mask_storeu_ps(ci, m0, _mm512_add_ps(_mm512_maskz_loadu_ps(m0, ci), c[i][0]));
        if (m1) _mm512_mask_storeu_ps(ci + 16, m1, _mm512_add_ps(_mm512_maskz_loadu_ps(m1, ci + 16), c[i][1]));
    }
}

/* Bp: panels of NR columns, each (kc x NR), for rows k0..k0+kc of op(B). */
static void pack_b(float *Bp, int tb, const float *B, int ldb, int k0, int kc, int N, int par) {
    int panels = (N + NR - 1) / NR;
#pragma omp parallel for schedule(static) if (par)
    for (int p = 0; p < panels; p++) {
        float *dst = Bp + (size_t)p * kc * NR;
        for (int k = 0; k < kc; k++)
            for (int j = 0; j < NR; j++) {
                int col = p * NR + j;
                dst[(size_t)k * NR + j] = col >= N ? 0.0f
                    : tb ? B[(size_t)col * ldb + k0 + k] : B[(size_t)(k0 + k) * ldb + col];
            }
    }
}

/* Ap (kc x MR) for rows i0..i0+MR of op(A), columns k0..k0+kc. */
static void pack_a(float *Ap, int ta, const float *A, int lda, int i0, int k0, int kc, int M) {
    int mr = M - i0 < MR ? M - i0 : MR;
    if (ta) {
        for (int k = 0; k < kc; k++) {
            const float *src = A + (size_t)(k0 + k) * lda + i0;
            float *dst = Ap + (size_t)k * MR;
            for (int i = 0; i < MR; i++) dst[i] = i < mr ? src[i] : 0.0f;
        }
    } else {
        for (int i = 0; i < MR; i++) {
            const float *src = A + (size_t)(i0 + i) * lda + k0;
            for (int k = 0; k < kc; k++) Ap[(size_t)k * MR + i] = i < mr ? src[k] : 0.0f;
        }
    }
}

void bf_gemm(int ta, int tb, int M, int N, int K, const float *A, int lda, const float *B,
             int ldb, float *C, int ldc) {
    if (M <= 0 || N <= 0 || K <= 0) return;
    /* a few rows (token-by-token decoding of small batches): packing B would cost as much as
     * the product itself, and OpenBLAS's matrix-vector path does better */
    if (!bf_gemm_native() || M < 4) { bf_gemm_blas(ta, tb, M, N, K, A, lda, B, ldb, C, ldc); return; }
    int par = (double)M * N * K >= 2e6;
    int panels = (N + NR - 1) / NR, rows = (M + MR - 1) / MR;
    size_t need = (size_t)panels * (K < KC ? K : KC) * NR;
    if (need > b_scratch_size) {   /* kept between calls: no page faults in the hot loop */
        free(b_scratch);
        b_scratch = aligned_alloc(64, sizeof(float) * need);
        BF_ASSERT(b_scratch != NULL);
        b_scratch_size = need;
        pthread_once(&scratch_once, scratch_key_make);
        BF_ASSERT(pthread_setspecific(scratch_key, b_scratch) == 0);
    }
    float *Bp = b_scratch;
    for (int k0 = 0; k0 < K; k0 += KC) {
        int kc = K - k0 < KC ? K - k0 : KC;
        pack_b(Bp, tb, B, ldb, k0, kc, N, par);
#pragma omp parallel if (par)
        {
            float Ap[KC * MR] __attribute__((aligned(64)));
#pragma omp for schedule(static)
            for (int r = 0; r < rows; r++) {
                int i0 = r * MR, mr = M - i0 < MR ? M - i0 : MR;
                pack_a(Ap, ta, A, lda, i0, k0, kc, M);
                for (int p = 0; p < panels; p++) {
                    int nr = N - p * NR < NR ? N - p * NR : NR;
                    micro_kernel(kc, Ap, Bp + (size_t)p * kc * NR, C + (size_t)i0 * ldc + p * NR,
                                 ldc, mr, nr);
                }
            }
        }
    }
}

#else   /* no AVX-512 at compile time: OpenBLAS does the work */

int bf_gemm_native(void) { return 0; }

void bf_gemm(int ta, int tb, int M, int N, int K, const float *A, int lda, const float *B,
             int ldb, float *C, int ldc) {
    bf_gemm_blas(ta, tb, M, N, K, A, lda, B, ldb, C, ldc);
}
#endif
