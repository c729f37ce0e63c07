/* A packed, cache-blocked single-precision GEMM with a 12x32 AVX-512 micro-kernel.
 * Blocking: K in slices of KC; B's slice is packed once into 32-column panels (shared by all
 * threads), each thread packs 12-row panels of A and runs the micro-kernel over every column
 * panel. Edges are zero-padded in the packed copies and written back with masks.
 *
 * The bf16 GEMM has the same blocking: the operands are rounded to bf16 as they are packed,
 * pairs of consecutive k interleaved in each 32-bit lane (the layout of AVX512-BF16's
 * vdpbf16ps), and the 12x32 micro-kernel accumulates the pair products in fp32. It is
 * compiled with function-level target attributes, so the build does not need -march support
 * for it, and it runs only where the CPU reports AVX512-BF16. Where the CPU also has AMX-BF16
 * (and Linux grants the tile state), bf16 products with N K >= 3072 run on AMX
 * tiles instead: the same rounded operands and B panels, 32 x 32 blocks of C in four fp32
 * tiles (measured 3-4x the fp32 kernel on the model's shapes). The precision setting
 * (bf_set_precision, BF_PRECISION) lives here too: only bf_gemm reads it. */
#include "gemm.h"
#include "core.h"

#include <cblas.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

/* BF_GEMM=blas: every product through OpenBLAS, in fp32 */
static int blas_forced(void) {
    static int use_blas = -1;
    if (use_blas < 0) {
        const char *e = getenv("BF_GEMM");
        use_blas = e && !strcmp(e, "blas");
    }
    return use_blas;
}

void bf_gemm_blas(int ta, int tb, int M, int N, int K, const float *A, int lda, const float *B,
                  int ldb, float *C, int ldc) {
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
                M, N, K, 1.0f, A, lda, B, ldb, 1.0f, C, ldc);
}

/* C (M, N) <- bias broadcast over the rows (0 where bias is NULL): the start of a product
 * that sets C, where a kernel does not set it itself. */
static void fill_rows(float *C, int ldc, int M, int N, const float *bias) {
    for (int i = 0; i < M; i++) {
        if (bias) memcpy(C + (size_t)i * ldc, bias, sizeof(float) * N);
        else memset(C + (size_t)i * ldc, 0, sizeof(float) * N);
    }
}

/* The packed panels of B live in bf_thread_scratch (kinds BF_SCRATCH_GEMM_F32 and _BF16). */

/* The end of both micro-kernels (fp32 and AVX512-BF16): the accumulators c[mr][2] (16 + 16
 * lanes, masks m0 and m1) into the C tile, C = bias (or 0 where NULL) + c where set (C not
 * read), else C += c. A macro so that each kernel expands it under its own target attributes. */
#define STORE_TILE(C, ldc, c, mr, m0, m1, set, bias)                                              \
    do {                                                                                          \
        __m512 b0_ = (set) && (bias) ? _mm512_maskz_loadu_ps(m0, bias) : _mm512_setzero_ps();      \
        __m512 b1_ = (set) && (bias) && (m1) ? _mm512_maskz_loadu_ps(m1, (bias) + 16) : _mm512_setzero_ps(); \
        for (int i_ = 0; i_ < (mr); i_++) {                                                       \
            float *ci_ = (C) + (size_t)i_ * (ldc);                                                \
            __m512 o0_ = (set) ? b0_ : _mm512_maskz_loadu_ps(m0, ci_);                            \
            _mm512_mask_storeu_ps(ci_, m0, _mm512_add_ps(o0_, c[i_][0]));                         \
            if (m1) {                                                                             \
                __m512 o1_ = (set) ? b1_ : _mm512_maskz_loadu_ps(m1, ci_ + 16);                   \
                _mm512_mask_storeu_ps(ci_ + 16, m1, _mm512_add_ps(o1_, c[i_][1]));                \
            }                                                                                     \
        }                                                                                         \
    } while (0)

#if defined(__AVX512F__)
#include <immintrin.h>

#define MR 12
#define NR 32
#define KC 256


int bf_gemm_native(void) { return !blas_forced(); }

/* C tile (mr x nr) += Ap (kc x MR) @ Bp (kc x NR); set: C tile = bias (nr values, or 0 where
 * NULL) + the product instead, C not read. */
static void micro_kernel(int kc, const float *Ap, const float *Bp, float *C, int ldc, int mr,
                         int nr, int set, const float *bias) {
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
    STORE_TILE(C, ldc, c, mr, m0, m1, set, bias);
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

/* The product, accumulated into C (set = 0) or setting C to bias + the product (set = 1). */
static void gemm_f32(int ta, int tb, int M, int N, int K, const float *A, int lda, const float *B,
                     int ldb, float *C, int ldc, int set, const float *bias) {
    if (M <= 0 || N <= 0) return;
    /* a few rows (token-by-token decoding of small batches): packing B would cost as much as
     * the product itself, and OpenBLAS's matrix-vector path does better */
    if (!bf_gemm_native() || M < 4 || K <= 0) {
        if (set) fill_rows(C, ldc, M, N, bias);
        if (K > 0) bf_gemm_blas(ta, tb, M, N, K, A, lda, B, ldb, C, ldc);
        return;
    }
    int par = (double)M * N * K >= 2e6;
    int panels = (N + NR - 1) / NR, rows = (M + MR - 1) / MR;
    size_t need = (size_t)panels * (K < KC ? K : KC) * NR;
    float *Bp = bf_thread_scratch(BF_SCRATCH_GEMM_F32, sizeof(float) * need);
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
                                 ldc, mr, nr, set && k0 == 0, bias ? bias + p * NR : NULL);
                }
            }
        }
    }
}

#else   /* no AVX-512 at compile time: OpenBLAS does the work */

int bf_gemm_native(void) { return 0; }

static void gemm_f32(int ta, int tb, int M, int N, int K, const float *A, int lda, const float *B,
                     int ldb, float *C, int ldc, int set, const float *bias) {
    if (M <= 0 || N <= 0) return;
    if (set) fill_rows(C, ldc, M, N, bias);
    if (K > 0) bf_gemm_blas(ta, tb, M, N, K, A, lda, B, ldb, C, ldc);
}
#endif

void bf_gemm_f32(int ta, int tb, int M, int N, int K, const float *A, int lda, const float *B,
                 int ldb, float *C, int ldc) {
    gemm_f32(ta, tb, M, N, K, A, lda, B, ldb, C, ldc, 0, NULL);
}

void bf_gemm_f32_bias(int ta, int tb, int M, int N, int K, const float *A, int lda,
                      const float *B, int ldb, float *C, int ldc, const float *bias) {
    gemm_f32(ta, tb, M, N, K, A, lda, B, ldb, C, ldc, 1, bias);
}

/* ================================================================== bf16 */
uint16_t bf_f32_to_bf16_ref(float x) {
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x0040u);   /* NaN: quiet */
    u += 0x7fffu + ((u >> 16) & 1u);   /* round to nearest, ties to the even bf16 */
    return (uint16_t)(u >> 16);
}

float bf_bf16_to_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float x;
    memcpy(&x, &u, sizeof x);
    return x;
}

static atomic_int bf16_hidden, fallback_noted;
/* AMX runs the products whose B (the weights, in a linear layer) has N K >= 3072; the rule
 * leaves the batch out so that an image's result does not depend on the batch it is in (the
 * two kernels sum in different orders). Measured single-threaded on a Xeon with AMX: AMX ran
 * 0.6-0.95x the AVX512-BF16 kernel with N K = 2048 (K = 16) at M <= 16, and 1.05-10x on every
 * shape with N K >= 3136 tried (M 1..3136, N 32..1024, K 16..1568; at M = 1, 0.95-1.8x). */
#define AMX_MIN_NK 3072.0

void bf_gemm_test_hide_bf16(int hide) {
    atomic_store(&bf16_hidden, hide);
    atomic_store(&fallback_noted, 0);
}

#if (defined(__x86_64__) || defined(__i386__)) && \
    ((defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 10) || (defined(__clang__) && __clang_major__ >= 9))
#define BF_BF16_KERNEL 1
#include <cpuid.h>
#include <immintrin.h>

/* AVX512-BF16 (CPUID leaf 7 subleaf 1, EAX bit 5) with AVX512F, BW and VL usable (the
 * compiler's checks include the OS saving the AVX-512 registers). */
static int cpu_has_bf16(void) {
    static atomic_int cached = -1;
    int c = atomic_load(&cached);
    if (c < 0) {
        unsigned a = 0, b = 0, cx = 0, d = 0;
        __builtin_cpu_init();
        c = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
            __builtin_cpu_supports("avx512vl") && __get_cpuid_count(7, 0, &a, &b, &cx, &d) &&
            a >= 1 && __get_cpuid_count(7, 1, &a, &b, &cx, &d) && ((a >> 5) & 1u);
        atomic_store(&cached, c);
    }
    return c;
}

#define BF16_TARGET __attribute__((target("avx512bf16,avx512f,avx512bw,avx512vl")))
#define BMR 12
#define BNR 32
#define BKC 512    /* K slice: 256 pairs of k, the same bytes per packed panel as fp32's KC */

/* 16 floats -> their bf16 in the low half of each 32-bit lane (high half zero): the vector
 * form of bf_f32_to_bf16_ref, integer operations only. */
BF16_TARGET static inline __m512i cvt16(__m512 x) {
    __m512i u = _mm512_castps_si512(x), hi = _mm512_srli_epi32(u, 16);
    __m512i bias = _mm512_add_epi32(_mm512_set1_epi32(0x7fff), _mm512_and_si512(hi, _mm512_set1_epi32(1)));
    __m512i r = _mm512_srli_epi32(_mm512_add_epi32(u, bias), 16);
    __mmask16 nan = _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q);
    return _mm512_mask_mov_epi32(r, nan, _mm512_or_si512(hi, _mm512_set1_epi32(0x40)));
}

BF16_TARGET static inline __mmask16 lanes(int n) {
    return n >= 16 ? (__mmask16)0xFFFF : n <= 0 ? (__mmask16)0 : (__mmask16)((1u << n) - 1);
}

/* n contiguous floats -> n bf16 */
BF16_TARGET static void cvt_run(uint16_t *dst, const float *src, size_t n) {
    size_t i = 0;
    for (; i + 16 <= n; i += 16)
        _mm256_storeu_si256((__m256i *)(dst + i), _mm512_cvtepi32_epi16(cvt16(_mm512_loadu_ps(src + i))));
    if (i < n) {
        __mmask16 m = lanes((int)(n - i));
        _mm512_mask_cvtepi32_storeu_epi16(dst + i, m, cvt16(_mm512_maskz_loadu_ps(m, src + i)));
    }
}

/* kc values of a row (k contiguous) -> (kc + 1) / 2 pairs, the odd one padded with 0,
 * stored dst[0], dst[stride], ... */
BF16_TARGET static void pairs_strided(uint32_t *dst, size_t stride, const float *src, int kc) {
    uint16_t t[BKC + 2];
    cvt_run(t, src, (size_t)kc);
    t[kc] = 0;
    for (int p = 0; p < (kc + 1) / 2; p++)
        dst[(size_t)p * stride] = (uint32_t)t[2 * p] | (uint32_t)t[2 * p + 1] << 16;
}

/* rows k and k + 1 (the second may be absent), n <= 16 values each -> 16 pairs */
BF16_TARGET static inline __m512i pair16(const float *r0, const float *r1, int n) {
    __mmask16 m = lanes(n);
    __m512i lo = cvt16(_mm512_maskz_loadu_ps(m, r0));
    if (!r1) return lo;
    return _mm512_or_si512(lo, _mm512_slli_epi32(cvt16(_mm512_maskz_loadu_ps(m, r1)), 16));
}

/* C tile (mr x nr) += Ap (kp pairs x BMR) . Bp (kp pairs x BNR) */
BF16_TARGET static inline void micro_bf16(int kp, const uint32_t *Ap, const uint32_t *Bp,
                                          float *C, int ldc, int mr, int nr, int set,
                                          const float *bias) {
    __m512 c[BMR][2];
    for (int i = 0; i < BMR; i++) c[i][0] = c[i][1] = _mm512_setzero_ps();
    for (int k = 0; k < kp; k++) {
        __m512bh b0 = (__m512bh)_mm512_load_si512((const void *)(Bp + (size_t)k * BNR));
        __m512bh b1 = (__m512bh)_mm512_load_si512((const void *)(Bp + (size_t)k * BNR + 16));
        const uint32_t *a = Ap + (size_t)k * BMR;
#pragma GCC unroll 12
        for (int i = 0; i < BMR; i++) {
            __m512bh ai = (__m512bh)_mm512_set1_epi32((int)a[i]);
            c[i][0] = _mm512_dpbf16_ps(c[i][0], ai, b0);
            c[i][1] = _mm512_dpbf16_ps(c[i][1], ai, b1);
        }
    }
    __mmask16 m0 = lanes(nr), m1 = lanes(nr - 16);
    STORE_TILE(C, ldc, c, mr, m0, m1, set, bias);
}

/* r[0..15] (16 x 16 32-bit values) transposed in place: unpacks of 32- then 64-bit pairs,
 * then two rounds of 128-bit lane shuffles. */
BF16_TARGET static inline void transpose16(__m512i r[16]) {
    __m512i t[16];
    for (int i = 0; i < 16; i += 2) {
        t[i] = _mm512_unpacklo_epi32(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_epi32(r[i], r[i + 1]);
    }
    for (int i = 0; i < 16; i += 4) {
        r[i] = _mm512_unpacklo_epi64(t[i], t[i + 2]);
        r[i + 1] = _mm512_unpackhi_epi64(t[i], t[i + 2]);
        r[i + 2] = _mm512_unpacklo_epi64(t[i + 1], t[i + 3]);
        r[i + 3] = _mm512_unpackhi_epi64(t[i + 1], t[i + 3]);
    }
    for (int h = 0; h < 16; h += 8)
        for (int j = 0; j < 4; j++) {
            t[h + j] = _mm512_shuffle_i32x4(r[h + j], r[h + j + 4], 0x88);
            t[h + j + 4] = _mm512_shuffle_i32x4(r[h + j], r[h + j + 4], 0xdd);
        }
    for (int j = 0; j < 8; j++) {
        r[j] = _mm512_shuffle_i32x4(t[j], t[j + 8], 0x88);
        r[j + 8] = _mm512_shuffle_i32x4(t[j], t[j + 8], 0xdd);
    }
}

/* 32 floats (a then b) -> 16 pairs of bf16 (value 2i low, 2i + 1 high: the values' own order):
 * the CPU's conversion (VCVTNE2PS2BF16 rounds to nearest even and quiets NaN as
 * bf_f32_to_bf16_ref does, but flushes denormal inputs to zero), or cvt16 where a lane of a
 * or b is denormal (exponent 0, mantissa not 0). */
BF16_TARGET static inline __m512i pairs32(__m512 a, __m512 b) {
    const __m512i mag = _mm512_set1_epi32(0x7fffffff), one = _mm512_set1_epi32(1);
    const __m512i top = _mm512_set1_epi32(0x007fffff);
    /* |u| - 1 < 0x7fffff (unsigned) exactly when 0 < |u| <= 0x7fffff */
    __mmask16 da = _mm512_cmplt_epu32_mask(_mm512_sub_epi32(_mm512_and_si512(_mm512_castps_si512(a), mag), one), top);
    __mmask16 db = _mm512_cmplt_epu32_mask(_mm512_sub_epi32(_mm512_and_si512(_mm512_castps_si512(b), mag), one), top);
    if (!(da | db)) return (__m512i)_mm512_cvtne2ps_pbh(b, a);   /* low half a, high half b */
    return _mm512_inserti64x4(_mm512_castsi256_si512(_mm512_cvtepi32_epi16(cvt16(a))),
                              _mm512_cvtepi32_epi16(cvt16(b)), 1);
}

/* One BNR-column panel of op(B), rows k0..k0+kc, columns j0..: (kc + 1) / 2 pairs x BNR. */
BF16_TARGET static void pack_b_panel(uint32_t *dst, int tb, const float *B, int ldb, int k0,
                                     int kc, int N, int j0) {
    int nr = N - j0 < BNR ? N - j0 : BNR, kp = (kc + 1) / 2;
    if (!tb) {   /* B (K, N): rows k, k + 1 side by side */
        for (int p = 0; p < kp; p++) {
            const float *r0 = B + (size_t)(k0 + 2 * p) * ldb + j0;
            const float *r1 = 2 * p + 1 < kc ? r0 + ldb : NULL;
            _mm512_store_si512((void *)(dst + (size_t)p * BNR), pair16(r0, r1, nr));
            _mm512_store_si512((void *)(dst + (size_t)p * BNR + 16),
                               nr > 16 ? pair16(r0 + 16, r1 ? r1 + 16 : NULL, nr - 16)
                                       : _mm512_setzero_si512());
        }
        return;
    }
    /* B (N, K): column j of op(B) is a row of B, whose consecutive values are its pairs. 16
     * columns x 16 pairs at a time: each row's 32 values converted in one vector, the block
     * transposed to pair rows (the weights of a linear layer's forward come this way). */
    for (int h = 0; h < BNR; h += 16)
        for (int p0 = 0; p0 < kp; p0 += 16) {
            __m512i r[16];
            int n = kc - 2 * p0;   /* values of this block left in each row */
            for (int j = 0; j < 16; j++) {
                if (h + j >= nr) { r[j] = _mm512_setzero_si512(); continue; }
                const float *src = B + (size_t)(j0 + h + j) * ldb + k0 + 2 * p0;
                r[j] = pairs32(_mm512_maskz_loadu_ps(lanes(n), src), _mm512_maskz_loadu_ps(lanes(n - 16), src + 16));
            }
            transpose16(r);
            for (int m = 0; m < 16 && p0 + m < kp; m++)
                _mm512_storeu_si512((void *)(dst + (size_t)(p0 + m) * BNR + h), r[m]);
        }
}

/* Packs rows i0.. of op(A), columns k0..k0+kc, and runs the micro-kernel over every panel. */
BF16_TARGET static void row_panel_bf16(int ta, const float *A, int lda, int i0, int k0, int kc,
                                       int M, int N, const uint32_t *Bp, float *C, int ldc,
                                       int set, const float *bias) {
    uint32_t Ap[(BKC / 2) * BMR] __attribute__((aligned(64)));
    int mr = M - i0 < BMR ? M - i0 : BMR, kp = (kc + 1) / 2;
    if (ta) {   /* A (K, M): rows k, k + 1 side by side, mr of the 16 lanes used */
        for (int p = 0; p < kp; p++) {
            const float *r0 = A + (size_t)(k0 + 2 * p) * lda + i0;
            _mm512_mask_storeu_epi32(Ap + (size_t)p * BMR, (__mmask16)0x0FFF,
                                     pair16(r0, 2 * p + 1 < kc ? r0 + lda : NULL, mr));
        }
    } else {    /* A (M, K): each row's k contiguous */
        for (int i = 0; i < BMR; i++) {
            if (i < mr) pairs_strided(Ap + i, BMR, A + (size_t)(i0 + i) * lda + k0, kc);
            else for (int p = 0; p < kp; p++) Ap[(size_t)p * BMR + i] = 0;
        }
    }
    int panels = (N + BNR - 1) / BNR;
    for (int q = 0; q < panels; q++) {
        int nr = N - q * BNR < BNR ? N - q * BNR : BNR;
        micro_bf16(kp, Ap, Bp + (size_t)q * kp * BNR, C + (size_t)i0 * ldc + q * BNR, ldc, mr, nr,
                   set, bias ? bias + q * BNR : NULL);
    }
}


static void gemm_bf16_kernel(int ta, int tb, int M, int N, int K, const float *A, int lda,
                             const float *B, int ldb, float *C, int ldc, int set,
                             const float *bias) {
    int par = (double)M * N * K >= 2e6;
    (void)par;   /* read by the OpenMP pragmas only (unused in serial builds) */
    int panels = (N + BNR - 1) / BNR, rows = (M + BMR - 1) / BMR;
    size_t need = (size_t)panels * (((K < BKC ? K : BKC) + 1) / 2) * BNR;
    uint32_t *Bp = bf_thread_scratch(BF_SCRATCH_GEMM_BF16, sizeof(uint32_t) * need);
    for (int k0 = 0; k0 < K; k0 += BKC) {
        int kc = K - k0 < BKC ? K - k0 : BKC, kp = (kc + 1) / 2;
#pragma omp parallel for schedule(static) if (par)
        for (int q = 0; q < panels; q++)
            pack_b_panel(Bp + (size_t)q * kp * BNR, tb, B, ldb, k0, kc, N, q * BNR);
#pragma omp parallel for schedule(static) if (par)
        for (int r = 0; r < rows; r++)
            row_panel_bf16(ta, A, lda, r * BMR, k0, kc, M, N, Bp, C, ldc, set && k0 == 0, bias);
    }
}

/* ------------------------------------------------------------------ AMX-BF16 */
/* Sapphire Rapids and later multiply bf16 tiles (16 rows x 64 bytes) in the AMX unit:
 * TDPBF16PS does a 16 x 16 x 32 product per instruction, several times the rate of
 * vdpbf16ps. The operands are the same bf16 values (the same rounding, the same packing of
 * B: BNR-column panels of k pairs are already the VNNI layout a B tile wants, one tile per
 * 16 columns at a row stride of BNR pairs), so the two kernels differ only in the order of
 * the fp32 sums. A is packed row-major (k contiguous, padded to whole 32-wide tiles). */
#if (defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 11) || (defined(__clang__) && __clang_major__ >= 12)
#define BF_AMX_KERNEL 1
#include <sys/syscall.h>
#include <unistd.h>

#define AMX_TARGET __attribute__((target("amx-tile,amx-bf16,avx512bf16,avx512f,avx512bw,avx512vl")))
#define AMR 32          /* rows of a C block: 2 tiles of 16 */
#define AKC 512         /* K slice: 256 pairs, 16 B tiles deep */
#define ARCH_REQ_XCOMP_PERM 0x1023
#define XFEATURE_XTILEDATA 18

/* CPUID.(7,0):EDX bit 24 AMX-TILE, bit 22 AMX-BF16; the kernel must then grant this process
 * the 8 KiB of tile state (Linux 5.16+, once per process, valid for all its threads), and the
 * OS must have enabled the tile state in XCR0 (bits 17 and 18). */
static atomic_int amx_state = -1;
static pthread_once_t amx_once = PTHREAD_ONCE_INIT;

static void amx_detect(void) {
    unsigned a = 0, b = 0, c = 0, d = 0, lo = 0, hi = 0;
    int ok = __get_cpuid_count(7, 0, &a, &b, &c, &d) && ((d >> 24) & 1u) && ((d >> 22) & 1u) &&
             __get_cpuid(1, &a, &b, &c, &d) && ((c >> 27) & 1u);   /* OSXSAVE: xgetbv works */
    ok = ok && syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0;
    if (ok) __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    atomic_store(&amx_state, ok && ((lo >> 17) & 3u) == 3u);
}

static int cpu_has_amx(void) {
    pthread_once(&amx_once, amx_detect);
    return atomic_load(&amx_state) > 0 && cpu_has_bf16();
}

/* The 64-byte operand of LDTILECFG (palette 1): every tile 16 rows x 64 bytes, which is a
 * C tile (16 x 16 fp32), an A tile (16 rows x 32 bf16) and a B tile (16 k pairs x 16 columns). */
typedef struct {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} amx_tilecfg;

/* Tile configuration is per-thread state: each thread loads it before its tiles and releases
 * it after (an idle thread keeps no 8 KiB of tile state in its context switches). */
AMX_TARGET static void amx_begin(void) {
    amx_tilecfg cfg __attribute__((aligned(64)));
    memset(&cfg, 0, sizeof cfg);
    cfg.palette = 1;
    for (int t = 0; t < 8; t++) { cfg.rows[t] = 16; cfg.colsb[t] = 64; }
    _tile_loadconfig(&cfg);
}

/* C block (mr <= 32 rows, nr <= 32 columns) += tiles 0..3, stored through buf (tile t covers
 * rows 16 (t / 2).., columns 16 (t % 2)..); set: C block = bias (or 0) + the tiles instead. */
AMX_TARGET static void amx_add_c(float *buf, float *C, int ldc, int mr, int nr, int set,
                                 const float *bias) {
    _tile_stored(0, buf, 64);
    _tile_stored(1, buf + 256, 64);
    _tile_stored(2, buf + 512, 64);
    _tile_stored(3, buf + 768, 64);
    __mmask16 m0 = lanes(nr), m1 = lanes(nr - 16);
    __m512 b0 = set && bias ? _mm512_maskz_loadu_ps(m0, bias) : _mm512_setzero_ps();
    __m512 b1 = set && bias && m1 ? _mm512_maskz_loadu_ps(m1, bias + 16) : _mm512_setzero_ps();
    for (int i = 0; i < mr; i++) {
        const float *t = buf + (i / 16) * 512 + (i % 16) * 16;
        float *ci = C + (size_t)i * ldc;
        __m512 c0 = set ? b0 : _mm512_maskz_loadu_ps(m0, ci);
        _mm512_mask_storeu_ps(ci, m0, _mm512_add_ps(c0, _mm512_load_ps(t)));
        if (m1) {
            __m512 c1 = set ? b1 : _mm512_maskz_loadu_ps(m1, ci + 16);
            _mm512_mask_storeu_ps(ci + 16, m1, _mm512_add_ps(c1, _mm512_load_ps(t + 256)));
        }
    }
}

/* The 2 x 2 accumulator tiles 0-3 of a full 32 x 32 C block: loaded from C (store = 0) or
 * stored to it (store = 1); tile numbers must be constants, hence the four calls. */
AMX_TARGET static inline void amx_c_tiles(float *C, int ldc, int store) {
    float *c[4] = {C, C + 16, C + (size_t)16 * ldc, C + (size_t)16 * ldc + 16};
    if (store) {
        _tile_stored(0, c[0], ldc * 4); _tile_stored(1, c[1], ldc * 4);
        _tile_stored(2, c[2], ldc * 4); _tile_stored(3, c[3], ldc * 4);
    } else {
        _tile_loadd(0, c[0], ldc * 4); _tile_loadd(1, c[1], ldc * 4);
        _tile_loadd(2, c[2], ldc * 4); _tile_loadd(3, c[3], ldc * 4);
    }
}

/* C block (32 x 32 at most) += Ap (32 rows x kpp pairs, row stride astride bytes) . Bp (kpp
 * pairs x BNR). A full block accumulates onto C loaded into the tiles (no second pass over C);
 * an edge block starts from zero and is added through a buffer under masks. set: C = bias (32
 * values, or 0 where NULL) + the product, C not read: a full block's tiles start from the bias
 * row loaded into all 16 rows (row stride 0), the same start as C filled with the bias. */
AMX_TARGET static void amx_block(int kpp, const uint16_t *Ap, int astride, const uint32_t *Bp,
                                 float *C, int ldc, int mr, int nr, int set, const float *bias) {
    int full = mr == AMR && nr == BNR;
    /* set: C is written, never read; without the filling pass that brought its lines into
     * the cache, the tile stores at the end waited on them: ask for them (for writing) now,
     * while the tiles multiply (measured: G's four forward linears in bf16, 3.3 -> 2.75 ms) */
    if (set)
        for (int i = 0; i < mr; i++) {
            _mm_prefetch((const char *)(C + (size_t)i * ldc), _MM_HINT_ET0);
            if (nr > 16) _mm_prefetch((const char *)(C + (size_t)i * ldc + 16), _MM_HINT_ET0);
        }
    if (full && !set) amx_c_tiles(C, ldc, 0);
    else if (full && bias) {
        _tile_loadd(0, bias, 0); _tile_loadd(1, bias + 16, 0);
        _tile_loadd(2, bias, 0); _tile_loadd(3, bias + 16, 0);
    } else { _tile_zero(0); _tile_zero(1); _tile_zero(2); _tile_zero(3); }
    const char *a1 = (const char *)Ap + (size_t)16 * astride;
    for (int p = 0; p < kpp; p += 16) {
        _tile_loadd(4, Ap + 2 * p, astride);
        _tile_loadd(5, a1 + 4 * p, astride);
        _tile_loadd(6, Bp + (size_t)p * BNR, BNR * 4);
        _tile_loadd(7, Bp + (size_t)p * BNR + 16, BNR * 4);
        _tile_dpbf16ps(0, 4, 6);
        _tile_dpbf16ps(1, 4, 7);
        _tile_dpbf16ps(2, 5, 6);
        _tile_dpbf16ps(3, 5, 7);
    }
    if (full) {
        amx_c_tiles(C, ldc, 1);
    } else {
        float buf[4 * 256] __attribute__((aligned(64)));
        amx_add_c(buf, C, ldc, mr, nr, set, bias);
    }
}

/* A (K, M), rows k0.. of the slice: the pairs of rows k, k + 1 for 16 columns m are a (pair, m)
 * block; 16 pairs of them transposed are 16 rows of the packed A, stored whole (64 bytes). */
AMX_TARGET static void amx_pack_at(uint32_t *Ap, int kpp, const float *A, int lda, int i0, int k0,
                                   int kc, int mr) {
    int kp = (kc + 1) / 2;
    for (int h = 0; h < mr; h += 16)
        for (int p0 = 0; p0 < kp; p0 += 16) {
            __m512i r[16];
            for (int j = 0; j < 16; j++) {
                int p = p0 + j;
                const float *r0 = A + (size_t)(k0 + 2 * p) * lda + i0 + h;
                r[j] = p < kp ? pair16(r0, 2 * p + 1 < kc ? r0 + lda : NULL, mr - h) : _mm512_setzero_si512();
            }
            transpose16(r);
            for (int m = 0; m < 16 && h + m < mr; m++)
                _mm512_store_si512((void *)(Ap + (size_t)(h + m) * kpp + p0), r[m]);
        }
}

/* Rows i0..i0+32 of op(A), columns k0..k0+kc, as bf16 rows of 2 kpp values (zero padded). */
AMX_TARGET static void amx_pack_a(uint16_t *Ap, int kpp, int ta, const float *A, int lda, int i0,
                                  int k0, int kc, int M) {
    int mr = M - i0 < AMR ? M - i0 : AMR, w = 2 * kpp;
    if (mr < AMR || kc < w) memset(Ap, 0, sizeof(uint16_t) * AMR * w);
    if (ta) amx_pack_at((uint32_t *)Ap, kpp, A, lda, i0, k0, kc, mr);
    else
        for (int i = 0; i < mr; i++) cvt_run(Ap + (size_t)i * w, A + (size_t)(i0 + i) * lda + k0, (size_t)kc);
}

/* One 32-row panel of C over every column panel, in this thread's tile configuration. */
AMX_TARGET static void amx_row_panel(int ta, const float *A, int lda, int i0, int k0, int kc,
                                     int kpp, int M, int N, const uint32_t *Bp, float *C, int ldc,
                                     int set, const float *bias) {
    uint16_t Ap[AMR * AKC] __attribute__((aligned(64)));
    amx_pack_a(Ap, kpp, ta, A, lda, i0, k0, kc, M);
    int mr = M - i0 < AMR ? M - i0 : AMR, panels = (N + BNR - 1) / BNR;
    amx_begin();
    for (int q = 0; q < panels; q++) {
        int nr = N - q * BNR < BNR ? N - q * BNR : BNR;
        amx_block(kpp, Ap, 4 * kpp, Bp + (size_t)q * kpp * BNR, C + (size_t)i0 * ldc + q * BNR, ldc,
                  mr, nr, set, bias ? bias + q * BNR : NULL);
    }
    _tile_release();
}

/* The blocking of gemm_bf16_kernel, with B's panels padded to whole tiles of 16 pairs. */
static void gemm_amx_kernel(int ta, int tb, int M, int N, int K, const float *A, int lda,
                            const float *B, int ldb, float *C, int ldc, int set,
                            const float *bias) {
    int par = (double)M * N * K >= 2e6;
    (void)par;   /* read by the OpenMP pragmas only (unused in serial builds) */
    int panels = (N + BNR - 1) / BNR, rows = (M + AMR - 1) / AMR;
    size_t need = (size_t)panels * ((((K < AKC ? K : AKC) + 1) / 2 + 15) & ~15) * BNR;
    uint32_t *Bp = bf_thread_scratch(BF_SCRATCH_GEMM_BF16, sizeof(uint32_t) * need);
    for (int k0 = 0; k0 < K; k0 += AKC) {
        int kc = K - k0 < AKC ? K - k0 : AKC, kp = (kc + 1) / 2, kpp = (kp + 15) & ~15;
#pragma omp parallel for schedule(static) if (par)
        for (int q = 0; q < panels; q++) {
            uint32_t *dst = Bp + (size_t)q * kpp * BNR;
            pack_b_panel(dst, tb, B, ldb, k0, kc, N, q * BNR);
            memset(dst + (size_t)kp * BNR, 0, sizeof(uint32_t) * (kpp - kp) * BNR);
        }
#pragma omp parallel for schedule(static) if (par)
        for (int r = 0; r < rows; r++)
            amx_row_panel(ta, A, lda, r * AMR, k0, kc, kpp, M, N, Bp, C, ldc, set && k0 == 0, bias);
    }
}
#else
static int cpu_has_amx(void) { return 0; }

static void gemm_amx_kernel(int ta, int tb, int M, int N, int K, const float *A, int lda,
                            const float *B, int ldb, float *C, int ldc, int set,
                            const float *bias) {
    BF_ASSERT(0);
}
#endif

void bf_f32_to_bf16_array(uint16_t *dst, const float *src, size_t n) {
    if (cpu_has_bf16()) { cvt_run(dst, src, n); return; }
    for (size_t i = 0; i < n; i++) dst[i] = bf_f32_to_bf16_ref(src[i]);
}

#else   /* no bf16 kernel for this compiler or architecture */
static int cpu_has_bf16(void) { return 0; }
static int cpu_has_amx(void) { return 0; }

static void gemm_bf16_kernel(int ta, int tb, int M, int N, int K, const float *A, int lda,
                             const float *B, int ldb, float *C, int ldc, int set,
                             const float *bias) {
    BF_ASSERT(0);
}

static void gemm_amx_kernel(int ta, int tb, int M, int N, int K, const float *A, int lda,
                            const float *B, int ldb, float *C, int ldc, int set,
                            const float *bias) {
    BF_ASSERT(0);
}

void bf_f32_to_bf16_array(uint16_t *dst, const float *src, size_t n) {
    for (size_t i = 0; i < n; i++) dst[i] = bf_f32_to_bf16_ref(src[i]);
}
#endif

int bf_gemm_bf16_available(void) {
    return cpu_has_bf16() && !atomic_load(&bf16_hidden) && !blas_forced();
}

static void note_fallback(void) {
    if (atomic_exchange(&fallback_noted, 1)) return;
    if (blas_forced() && cpu_has_bf16() && !atomic_load(&bf16_hidden))
        fprintf(stderr, "biflow: BF_GEMM=blas computes every matrix product through OpenBLAS in "
                "fp32: bf16 precision is not used\n");
    else
        fprintf(stderr, "biflow: this CPU lacks AVX512-BF16: bf16 matrix products fall back to "
                "fp32\n");
}

/* BF_AMX=off: bf16 products on AVX512-BF16 even where the CPU has AMX (for comparisons) */
static int amx_env_off(void) {
    static atomic_int off = -1;
    int o = atomic_load(&off);
    if (o < 0) {
        const char *e = getenv("BF_AMX");
        o = e && (!strcmp(e, "off") || !strcmp(e, "0"));
        atomic_store(&off, o);
    }
    return o;
}

static atomic_int amx_hidden;

void bf_gemm_test_hide_amx(int hide) { atomic_store(&amx_hidden, hide); }

int bf_gemm_amx_available(void) {
    return bf_gemm_bf16_available() && !atomic_load(&amx_hidden) && !amx_env_off() && cpu_has_amx();
}

/* Whether AMX beats AVX512-BF16 on this shape (measured: see AMX_MIN_NK). */
static int amx_pays(int M, int N, int K) {
    (void)M;
    return (double)N * K >= AMX_MIN_NK;
}

static void gemm_bf16_avx512(int ta, int tb, int M, int N, int K, const float *A, int lda,
                             const float *B, int ldb, float *C, int ldc, int set,
                             const float *bias) {
    if (M <= 0 || N <= 0) return;
    if (K <= 0) { if (set) fill_rows(C, ldc, M, N, bias); return; }
    if (bf_gemm_bf16_available()) gemm_bf16_kernel(ta, tb, M, N, K, A, lda, B, ldb, C, ldc, set, bias);
    else {
        note_fallback();
        gemm_f32(ta, tb, M, N, K, A, lda, B, ldb, C, ldc, set, bias);
    }
}

static void gemm_bf16(int ta, int tb, int M, int N, int K, const float *A, int lda,
                      const float *B, int ldb, float *C, int ldc, int set, const float *bias) {
    if (M > 0 && N > 0 && K > 0 && amx_pays(M, N, K) && bf_gemm_amx_available())
        gemm_amx_kernel(ta, tb, M, N, K, A, lda, B, ldb, C, ldc, set, bias);
    else gemm_bf16_avx512(ta, tb, M, N, K, A, lda, B, ldb, C, ldc, set, bias);
}

void bf_gemm_bf16_avx512(int ta, int tb, int M, int N, int K, const float *A, int lda,
                         const float *B, int ldb, float *C, int ldc) {
    if (K <= 0) return;
    gemm_bf16_avx512(ta, tb, M, N, K, A, lda, B, ldb, C, ldc, 0, NULL);
}

void bf_gemm_bf16_amx(int ta, int tb, int M, int N, int K, const float *A, int lda,
                      const float *B, int ldb, float *C, int ldc) {
    if (M <= 0 || N <= 0 || K <= 0) return;
    if (bf_gemm_amx_available()) gemm_amx_kernel(ta, tb, M, N, K, A, lda, B, ldb, C, ldc, 0, NULL);
    else bf_gemm_bf16_avx512(ta, tb, M, N, K, A, lda, B, ldb, C, ldc);
}

void bf_gemm_bf16(int ta, int tb, int M, int N, int K, const float *A, int lda, const float *B,
                  int ldb, float *C, int ldc) {
    if (K <= 0) return;
    gemm_bf16(ta, tb, M, N, K, A, lda, B, ldb, C, ldc, 0, NULL);
}

/* ================================================================== precision setting */
static atomic_int precision = -1;
static pthread_once_t precision_once = PTHREAD_ONCE_INIT;

static void precision_from_env(void) {
    const char *e = getenv("BF_PRECISION");
    bf_precision p = BF_PRECISION_FP32;
    if (e && *e && bf_precision_parse(&p, e)) {
        fprintf(stderr, "biflow: BF_PRECISION='%s' is neither fp32 nor bf16: computing in fp32\n", e);
        p = BF_PRECISION_FP32;
    }
    int unset = -1;   /* bf_set_precision before the first read wins over the environment */
    atomic_compare_exchange_strong(&precision, &unset, (int)p);
}

bf_precision bf_get_precision(void) {
    pthread_once(&precision_once, precision_from_env);
    return (bf_precision)atomic_load_explicit(&precision, memory_order_relaxed);
}

int bf_set_precision(bf_precision p) {
    if (p != BF_PRECISION_FP32 && p != BF_PRECISION_BF16) {
        bf_set_error("unknown precision %d: BF_PRECISION_FP32 or BF_PRECISION_BF16", (int)p);
        return -1;
    }
    pthread_once(&precision_once, precision_from_env);
    atomic_store(&precision, (int)p);
    return 0;
}

int bf_precision_parse(bf_precision *p, const char *s) {
    if (s && !strcmp(s, "fp32")) *p = BF_PRECISION_FP32;
    else if (s && !strcmp(s, "bf16")) *p = BF_PRECISION_BF16;
    else {
        bf_set_error("precision must be 'fp32' or 'bf16', not '%s'", s ? s : "");
        return -1;
    }
    return 0;
}

const char *bf_precision_name(bf_precision p) { return p == BF_PRECISION_BF16 ? "bf16" : "fp32"; }

int bf_bf16_supported(void) { return cpu_has_bf16(); }

bf_precision bf_precision_effective(void) {
    return bf_get_precision() == BF_PRECISION_BF16 && bf_gemm_bf16_available()
               ? BF_PRECISION_BF16 : BF_PRECISION_FP32;
}

void bf_gemm(int ta, int tb, int M, int N, int K, const float *A, int lda, const float *B,
             int ldb, float *C, int ldc) {
    if (bf_get_precision() == BF_PRECISION_BF16) bf_gemm_bf16(ta, tb, M, N, K, A, lda, B, ldb, C, ldc);
    else bf_gemm_f32(ta, tb, M, N, K, A, lda, B, ldb, C, ldc);
}

void bf_gemm_bias(int ta, int tb, int M, int N, int K, const float *A, int lda, const float *B,
                  int ldb, float *C, int ldc, const float *bias) {
    if (bf_get_precision() == BF_PRECISION_BF16) gemm_bf16(ta, tb, M, N, K, A, lda, B, ldb, C, ldc, 1, bias);
    else gemm_f32(ta, tb, M, N, K, A, lda, B, ldb, C, ldc, 1, bias);
}
