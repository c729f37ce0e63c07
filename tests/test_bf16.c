/* bf16 matrix products (issue 11): the fp32 -> bf16 conversion against a scalar reference and
 * a table, the bf16 GEMM against double-precision references with tolerances derived from
 * bf16 rounding, the precision switch (what it routes, what it leaves in fp32, the fallback
 * without AVX512-BF16), whole models F and G in bf16 against fp32, and --precision on the
 * command line. Tests that need the bf16 kernel skip (counted) where the CPU lacks it. */
#include "test.h"
#include "gradcheck.h"
#include "tiny_models.h"
#include "gemm.h"
#include "kernels.h"
#include "kernels_conv.h"
#include "flow.h"
#include "reverse.h"
#include "perceptual.h"

#include <fcntl.h>
#include <stdint.h>
#include <unistd.h>

#define REQUIRE_BF16()                                                                     \
    do {                                                                                   \
        if (!bf_gemm_bf16_available())                                                     \
            SKIP("no AVX512-BF16 here (or BF_GEMM=blas): bf16 products fall back to fp32"); \
    } while (0)

static const double U16 = 1.0 / 256;         /* unit roundoff of bf16 (8 significant bits) */
static const double U32 = 1.0 / 16777216;    /* unit roundoff of fp32 */

static float from_bits(uint32_t u) { float x; memcpy(&x, &u, sizeof x); return x; }
static uint32_t to_bits(float x) { uint32_t u; memcpy(&u, &x, sizeof u); return u; }
static float round_bf16(float x) { return bf_bf16_to_f32(bf_f32_to_bf16_ref(x)); }

/* ------------------------------------------------------------------ conversion */
static const struct { uint32_t in; uint16_t out; const char *what; } conv_cases[] = {
    {0x00000000u, 0x0000, "+0"},
    {0x80000000u, 0x8000, "-0"},
    {0x3f800000u, 0x3f80, "1 (exact)"},
    {0xbf800000u, 0xbf80, "-1 (exact)"},
    {0x3f807fffu, 0x3f80, "just below half an ulp: down"},
    {0x3f808000u, 0x3f80, "tie, even neighbour below: down"},
    {0x3f808001u, 0x3f81, "just above half an ulp: up"},
    {0x3f818000u, 0x3f82, "tie, odd neighbour below: up to even"},
    {0xbf818000u, 0xbf82, "negative tie, odd: to even (larger magnitude)"},
    {0xbf808000u, 0xbf80, "negative tie, even: to even (smaller magnitude)"},
    {0x3fffffffu, 0x4000, "rounding up carries into the exponent"},
    {0x7f7f7fffu, 0x7f7f, "largest value that stays finite"},
    {0x7f7f8000u, 0x7f80, "tie at the top of the range, odd: +Inf"},
    {0x7f7fffffu, 0x7f80, "FLT_MAX rounds to +Inf"},
    {0xff7fffffu, 0xff80, "-FLT_MAX rounds to -Inf"},
    {0x7f800000u, 0x7f80, "+Inf"},
    {0xff800000u, 0xff80, "-Inf"},
    {0x7fc00000u, 0x7fc0, "quiet NaN"},
    {0xffc00000u, 0xffc0, "negative quiet NaN"},
    {0x7f800001u, 0x7fc0, "signalling NaN with its payload in the low half: still NaN"},
    {0xff80ffffu, 0xffc0, "negative NaN whose rounding would carry into Inf"},
    {0x7fffffffu, 0x7fff, "NaN of all ones: no carry into the sign"},
    {0x7fa00000u, 0x7fe0, "signalling NaN with a high payload: quieted, payload kept"},
    {0x00000001u, 0x0000, "smallest denormal: down to +0"},
    {0x80000001u, 0x8000, "negative smallest denormal: down to -0"},
    {0x00008000u, 0x0000, "denormal tie, even: down"},
    {0x00018000u, 0x0002, "denormal tie, odd: up"},
    {0x0000ffffu, 0x0001, "denormal: up"},
    {0x00400000u, 0x0040, "denormal, exact"},
    {0x007fffffu, 0x0080, "largest denormal rounds up to the smallest normal"},
    {0x807fffffu, 0x8080, "negative largest denormal: minus the smallest normal"},
    {0x00800000u, 0x0080, "smallest normal, exact"},
};

TEST(bf16_conversion_table_ties_nan_inf_denormals) {
    int n = NUM(conv_cases);
    for (int i = 0; i < n; i++) {
        uint16_t got = bf_f32_to_bf16_ref(from_bits(conv_cases[i].in));
        if (got != conv_cases[i].out)
            fprintf(stderr, "    %08x (%s): got %04x, want %04x\n", conv_cases[i].in,
                    conv_cases[i].what, got, conv_cases[i].out);
        CHECK(got == conv_cases[i].out);
        CHECK(to_bits(bf_bf16_to_f32(got)) == (uint32_t)got << 16);
        CHECK(isnan(from_bits(conv_cases[i].in)) == isnan(bf_bf16_to_f32(got)));
    }
    /* the packing's conversion, from every start (its vector body and its masked tail) */
    float in[NUM(conv_cases)];
    uint16_t out[NUM(conv_cases) + 1];
    for (int i = 0; i < n; i++) in[i] = from_bits(conv_cases[i].in);
    for (int s = 0; s < n; s++) {
        out[n - s] = 0xABCD;
        bf_f32_to_bf16_array(out, in + s, (size_t)(n - s));
        for (int i = 0; i < n - s; i++) CHECK(out[i] == conv_cases[s + i].out);
        CHECK(out[n - s] == 0xABCD);   /* nothing written past the end */
    }
}

/* The rule itself, written differently from the reference: the two bf16 neighbours of a
 * finite u are its truncation and the next one up (in magnitude); the low half decides, a tie
 * goes to the even one. NaN stays NaN with its sign. */
static uint16_t rule(uint32_t u) {
    uint16_t hi = (uint16_t)(u >> 16), lo = (uint16_t)u;
    if ((hi & 0x7f80) == 0x7f80 && (u & 0x007fffffu)) return (uint16_t)(hi | 0x0040);
    if (lo < 0x8000) return hi;
    if (lo > 0x8000) return (uint16_t)(hi + 1);
    return (hi & 1) ? (uint16_t)(hi + 1) : hi;
}

TEST(bf16_conversion_all_high_halves_and_random_bits) {
    static const uint16_t lows[] = {0x0000, 0x0001, 0x7fff, 0x8000, 0x8001, 0xffff, 0x1234, 0xc000};
    size_t n = 65536 * NUM(lows) + 1000000;
    float *x = bf_malloc(sizeof(float) * n);
    uint16_t *h = bf_malloc(sizeof(uint16_t) * n);
    size_t k = 0;
    for (uint32_t hi = 0; hi < 65536; hi++)
        for (int j = 0; j < NUM(lows); j++) x[k++] = from_bits(hi << 16 | lows[j]);
    bf_rng rng;
    bf_rng_seed(&rng, 11);
    while (k < n) x[k++] = from_bits((uint32_t)bf_rng_u64(&rng));
    bf_f32_to_bf16_array(h, x, n);
    long bad_rule = 0, bad_vec = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t u = to_bits(x[i]);
        uint16_t ref = bf_f32_to_bf16_ref(x[i]);
        if (ref != rule(u) && bad_rule++ < 5) fprintf(stderr, "    %08x: ref %04x, rule %04x\n", u, ref, rule(u));
        if (h[i] != ref && bad_vec++ < 5) fprintf(stderr, "    %08x: vector %04x, ref %04x\n", u, h[i], ref);
    }
    CHECK(bad_rule == 0);
    CHECK(bad_vec == 0);
    free(x); free(h);
}

/* ------------------------------------------------------------------ the bf16 GEMM */
/* C (double) += op(A) op(B) with the operands as given (rnd = 0) or rounded to bf16 first
 * (rnd = 1); S = sum_k |a_ik| |b_kj| of the same operands. */
static void naive(int rnd, int ta, int tb, int M, int N, int K, const float *A, int lda,
                  const float *B, int ldb, double *C, double *S, int ldc) {
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double s = 0.0, t = 0.0;
            for (int k = 0; k < K; k++) {
                float a = ta ? A[(size_t)k * lda + i] : A[(size_t)i * lda + k];
                float b = tb ? B[(size_t)j * ldb + k] : B[(size_t)k * ldb + j];
                if (rnd) { a = round_bf16(a); b = round_bf16(b); }
                s += (double)a * b;
                t += fabs((double)a * b);
            }
            C[(size_t)i * ldc + j] += s;
            S[(size_t)i * ldc + j] = t;
        }
}

static void nan_outside(float *X, int rows, int cols, int ld) {
    for (int r = 0; r <= rows; r++)
        for (int c = r < rows ? cols : 0; c < ld; c++) X[(size_t)r * ld + c] = NAN;
}

typedef void (*gemm_fn)(int, int, int, int, int, const float *, int, const float *, int, float *, int);

/* One product C += op(A) op(B) through gemm, with row strides past the widths, NaN in the
 * padding of A and B and in a row after their last (a value read from outside the operands
 * turns the result into NaN), and 16 guard values after C's last row. Checks the result
 * against the double references (see the bounds below), that C's padding and guards keep their
 * bits, and (same non-NULL) that same gives the same bits. Returns the result (M rows of ldc,
 * ldc = N + 2), and where bound is not NULL the summation bound of each entry against the
 * product of the rounded operands, for the caller to free. */
static float *check_bf16_product(gemm_fn gemm, gemm_fn same, int ta, int tb, int M, int N, int K,
                                 int seed, double **bound) {
    int lda = (ta ? M : K) + 3, ldb = (tb ? K : N) + 5, ldc = N + 2;
    size_t nc = (size_t)M * ldc + 16;
    float *A = bf_gc_randn(1 + seed, (size_t)((ta ? K : M) + 1) * lda, 0.0f, 1.0f);
    float *B = bf_gc_randn(50 + seed, (size_t)((tb ? N : K) + 1) * ldb, 0.0f, 1.0f);
    nan_outside(A, ta ? K : M, ta ? M : K, lda);
    nan_outside(B, tb ? N : K, tb ? K : N, ldb);
    float *C = bf_gc_randn(99 + seed, nc, 0.0f, 1.0f), *C0 = bf_malloc(sizeof(float) * nc);
    double *R = bf_malloc(sizeof(double) * nc), *Rb = bf_malloc(sizeof(double) * nc);
    double *S = bf_malloc(sizeof(double) * nc), *Sb = bf_malloc(sizeof(double) * nc);
    memcpy(C0, C, sizeof(float) * nc);
    for (size_t i = 0; i < nc; i++) R[i] = Rb[i] = C[i];
    gemm(ta, tb, M, N, K, A, lda, B, ldb, C, ldc);
    if (same) {
        float *D = bf_malloc(sizeof(float) * nc);
        memcpy(D, C0, sizeof(float) * nc);
        same(ta, tb, M, N, K, A, lda, B, ldb, D, ldc);
        CHECK(memcmp(C, D, sizeof(float) * nc) == 0);
        free(D);
    }
    naive(0, ta, tb, M, N, K, A, lda, B, ldb, R, S, ldc);
    naive(1, ta, tb, M, N, K, A, lda, B, ldb, Rb, Sb, ldc);
    double g = (K + 1) * U32 / (1 - (K + 1) * U32), worst = 0.0, worst_b = 0.0;
    int untouched = 1;
    for (int i = 0; i < M; i++)
        for (int j = 0; j < ldc; j++) {
            size_t q = (size_t)i * ldc + j;
            if (j >= N) { untouched &= to_bits(C[q]) == to_bits(C0[q]); continue; }
            double c0 = fabs((double)C0[q]);
            double tol = (2 * U16 + U16 * U16) * S[q] + g * (c0 + (1 + 2 * U16 + U16 * U16) * S[q]);
            double tol_b = g * (c0 + Sb[q]);
            double e = fabs(C[q] - R[q]) / (tol + 1e-30), eb = fabs(C[q] - Rb[q]) / (tol_b + 1e-30);
            if (!(e <= worst)) worst = e;   /* NaN sticks */
            if (!(eb <= worst_b)) worst_b = eb;
            Sb[q] = tol_b;
        }
    for (size_t q = (size_t)M * ldc; q < nc; q++) untouched &= to_bits(C[q]) == to_bits(C0[q]);
    if (!(worst <= 1.0 && worst_b <= 1.0 && untouched))
        fprintf(stderr, "    M=%d N=%d K=%d ta=%d tb=%d: error/bound %.3g, against "
                "rounded operands %.3g, padding %s\n", M, N, K, ta, tb, worst, worst_b,
                untouched ? "untouched" : "WRITTEN");
    CHECK(worst <= 1.0);
    CHECK(worst_b <= 1.0);
    CHECK(untouched);
    if (bound) *bound = Sb;
    else free(Sb);
    free(A); free(B); free(C0); free(R); free(Rb); free(S);
    return C;
}

/* sizes around the 12 x 32 tiles and the 512-deep K slices; K odd (a half-filled pair) */
static const int gemm_sizes[][3] = {
    {1, 1, 1}, {1, 1, 2}, {2, 3, 3}, {12, 32, 7}, {13, 33, 300}, {50, 16, 128}, {127, 96, 513},
    {3, 130, 40}, {200, 17, 1}, {25, 70, 1031}, {24, 64, 512}, {11, 31, 1025},
};

/* Each operand rounds with relative error <= U16, so a product moves by <= (2 U16 + U16^2)
 * |a||b|; bf16 x bf16 is exact in fp32, and summing the K + 1 terms (C and the products) in
 * fp32, in any order, adds <= gamma_(K+1) times the sum of their magnitudes. Against the
 * product of the bf16-rounded operands only the fp32 summation term remains. */
TEST(bf16_gemm_matches_double_within_bf16_bounds) {
    REQUIRE_BF16();
    bf_set_precision(BF_PRECISION_BF16);   /* the switch reaches the same kernel */
    for (int s = 0; s < NUM(gemm_sizes); s++)
        for (int ta = 0; ta <= 1; ta++)
            for (int tb = 0; tb <= 1; tb++)
                free(check_bf16_product(bf_gemm_bf16, bf_gemm, ta, tb, gemm_sizes[s][0],
                                        gemm_sizes[s][1], gemm_sizes[s][2], s, NULL));
}

/* ------------------------------------------------------------------ AMX-BF16 */
#define REQUIRE_AMX()                                                                     \
    do {                                                                                  \
        REQUIRE_BF16();                                                                   \
        if (!bf_gemm_amx_available())                                                     \
            SKIP("no AMX-BF16 here (or BF_AMX=off): bf16 products run on AVX512-BF16");    \
    } while (0)

/* around the 16 x 16 C tiles, the 32 x 32 blocks, the 32-deep A tiles and the 512-deep K
 * slices: every size of {1, 15, 16, 17, 31, 32, 33, 47, 64, 100} in each place, odd K */
static const int amx_sizes[][3] = {
    {1, 1, 1}, {15, 16, 17}, {16, 17, 15}, {17, 15, 16}, {31, 32, 33}, {32, 33, 31},
    {33, 31, 32}, {47, 64, 100}, {64, 100, 47}, {100, 47, 64}, {1, 100, 33}, {100, 1, 47},
    {64, 64, 64}, {33, 47, 513}, {100, 70, 1031}, {130, 96, 512}, {49, 49, 64}, {2, 384, 128},
};

/* The AMX kernel (forced, whatever the shape) meets the same bounds as the AVX512-BF16 one. */
TEST(amx_gemm_matches_double_within_bf16_bounds) {
    REQUIRE_AMX();
    for (int s = 0; s < NUM(amx_sizes); s++)
        for (int ta = 0; ta <= 1; ta++)
            for (int tb = 0; tb <= 1; tb++)
                free(check_bf16_product(bf_gemm_bf16_amx, NULL, ta, tb, amx_sizes[s][0],
                                        amx_sizes[s][1], amx_sizes[s][2], 200 + s, NULL));
}

/* The two kernels multiply the same rounded operands, so they differ only by the order of the
 * fp32 sums: each is within gamma_(K+1) (|c0| + sum |a||b|) of the exact product of the
 * rounded operands, so they are within twice that of each other. */
TEST(amx_and_avx512bf16_kernels_agree) {
    REQUIRE_AMX();
    for (int s = 0; s < NUM(amx_sizes); s++)
        for (int ta = 0; ta <= 1; ta++)
            for (int tb = 0; tb <= 1; tb++) {
                int M = amx_sizes[s][0], N = amx_sizes[s][1], K = amx_sizes[s][2], ldc = N + 2;
                double *tol;
                float *c1 = check_bf16_product(bf_gemm_bf16_amx, NULL, ta, tb, M, N, K, 300 + s, &tol);
                float *c2 = check_bf16_product(bf_gemm_bf16_avx512, NULL, ta, tb, M, N, K, 300 + s, NULL);
                double worst = 0.0;
                for (int i = 0; i < M; i++)
                    for (int j = 0; j < N; j++) {
                        size_t q = (size_t)i * ldc + j;
                        double e = fabs((double)c1[q] - c2[q]) / (2 * tol[q] + 1e-30);
                        if (!(e <= worst)) worst = e;
                    }
                if (!(worst <= 1.0)) fprintf(stderr, "    M=%d N=%d K=%d ta=%d tb=%d: AMX vs AVX512-BF16 %.3g of the bound\n", M, N, K, ta, tb, worst);
                CHECK(worst <= 1.0);
                free(c1); free(c2); free(tol);
            }
}

/* A NaN in A poisons its row of C, an Inf in B its column (the other operand finite and
 * non-zero there), and nothing else: on both kernels, every transpose, across tile edges. */
TEST(bf16_kernels_propagate_nan_and_inf) {
    REQUIRE_BF16();
    gemm_fn kernels[2] = {bf_gemm_bf16_avx512, bf_gemm_bf16_amx};
    int M = 35, N = 37, K = 41, ni = 17, nk = 33, ij = 18, ik = 5;
    for (int kern = 0; kern < 2; kern++)
        for (int ta = 0; ta <= 1; ta++)
            for (int tb = 0; tb <= 1; tb++) {
                float *A = bf_gc_randn(7, (size_t)M * K, 1.0f, 0.1f), *B = bf_gc_randn(8, (size_t)K * N, 1.0f, 0.1f);
                float *C = bf_gc_zeros((size_t)M * N);
                A[ta ? (size_t)nk * M + ni : (size_t)ni * K + nk] = NAN;
                B[tb ? (size_t)ij * K + ik : (size_t)ik * N + ij] = INFINITY;
                kernels[kern](ta, tb, M, N, K, A, ta ? M : K, B, tb ? K : N, C, N);
                int ok = 1;
                for (int i = 0; i < M; i++)
                    for (int j = 0; j < N; j++) {
                        float c = C[(size_t)i * N + j];
                        ok &= i == ni ? isnan(c) : j == ij ? isinf(c) && c > 0 : isfinite(c);
                    }
                if (!ok) fprintf(stderr, "    kernel %d ta=%d tb=%d: NaN/Inf not where expected\n", kern, ta, tb);
                CHECK(ok);
                free(A); free(B); free(C);
            }
}

/* The bf16 result is not the fp32 one (a dispatch that silently stayed in fp32 fails here),
 * the switch routes the linear layers and attention, and leaves the convolutions and the
 * feature network's linear layers in fp32. */
TEST(bf16_products_differ_from_fp32_and_route_by_caller) {
    REQUIRE_BF16();
    int M = 64, N = 64, K = 64;
    float *A = bf_gc_randn(3, (size_t)M * K, 0.0f, 1.0f), *B = bf_gc_randn(4, (size_t)K * N, 0.0f, 1.0f);
    float *c16 = bf_gc_zeros((size_t)M * N), *c32 = bf_gc_zeros((size_t)M * N);
    double *R = bf_calloc((size_t)M * N, sizeof(double)), *S = bf_malloc(sizeof(double) * M * N);
    bf_gemm_bf16(0, 0, M, N, K, A, K, B, N, c16, N);
    bf_gemm_f32(0, 0, M, N, K, A, K, B, N, c32, N);
    naive(0, 0, 0, M, N, K, A, K, B, N, R, S, N);
    /* fp32 stays within its own summation bound; bf16 leaves it, for most entries */
    double g = (K + 1) * U32, worst32 = 0.0, worst16 = 0.0;
    int differ = 0;
    for (int i = 0; i < M * N; i++) {
        double e32 = fabs(c32[i] - R[i]) / (g * S[i]), e16 = fabs(c16[i] - R[i]) / (g * S[i]);
        if (!(e32 <= worst32)) worst32 = e32;   /* NaN sticks */
        if (!(e16 <= worst16)) worst16 = e16;
        differ += c16[i] != c32[i];
    }
    CHECK(worst32 <= 1.0);
    CHECK(worst16 > 10.0);
    CHECK(differ >= M * N * 9 / 10);

    /* a linear layer and attention of F or G */
    int rows = 48, IC = 40, OC = 24, T = 16, C = 32, NH = 2;
    float *x = bf_gc_randn(5, (size_t)rows * IC, 0.0f, 1.0f), *w = bf_gc_randn(6, (size_t)OC * IC, 0.0f, 0.3f);
    float *bias = bf_gc_randn(7, OC, 0.0f, 0.1f);
    float *y32 = bf_malloc(sizeof(float) * rows * OC), *y16 = bf_malloc(sizeof(float) * rows * OC);
    float *yf = bf_malloc(sizeof(float) * rows * OC);
    bf_set_precision(BF_PRECISION_FP32);
    bf_linear_forward(y32, x, w, bias, rows, IC, OC);
    bf_set_precision(BF_PRECISION_BF16);
    bf_linear_forward(y16, x, w, bias, rows, IC, OC);
    bf_linear_forward_f32(yf, x, w, bias, rows, IC, OC);
    CHECK(bf_gc_max_abs_diff(y16, y32, (size_t)rows * OC) > 0.0);
    CHECK(memcmp(yf, y32, sizeof(float) * rows * OC) == 0);
    /* attention: sequences of at most 64 tokens take the fused fp32 kernel in both precisions
     * (the same bits), longer ones bf_gemm's bf16 products */
    for (int Ta = T; Ta <= 80; Ta += 64) {
        float *qkv = bf_gc_randn(8, (size_t)2 * Ta * 3 * C, 0.0f, 1.0f);
        float *o32 = bf_malloc(sizeof(float) * 2 * Ta * C), *o16 = bf_malloc(sizeof(float) * 2 * Ta * C);
        float *att = bf_malloc(sizeof(float) * 2 * NH * Ta * Ta);
        bf_set_precision(BF_PRECISION_FP32);
        bf_attention_forward(o32, att, qkv, 2, Ta, C, NH, 1);
        bf_set_precision(BF_PRECISION_BF16);
        bf_attention_forward(o16, att, qkv, 2, Ta, C, NH, 1);
        if (Ta <= 64) CHECK(memcmp(o16, o32, sizeof(float) * 2 * Ta * C) == 0);
        else CHECK(bf_gc_max_abs_diff(o16, o32, (size_t)2 * Ta * C) > 0.0);
        free(qkv); free(o32); free(o16); free(att);
    }

    /* a convolution, and the committed feature network whole: the same bits either way */
    bf_conv_dims d = {2, 3, 9, 9, 5, 3, 1, 1, 0};
    size_t in_n = (size_t)d.N * d.C * d.H * d.W, out_n = (size_t)d.N * d.OC * 9 * 9;
    float *img = bf_gc_randn(9, in_n, 0.0f, 1.0f), *cw = bf_gc_randn(10, (size_t)d.OC * d.C * 9, 0.0f, 0.3f);
    float *col = bf_malloc(sizeof(float) * bf_conv_col_size(&d));
    float *v32 = bf_malloc(sizeof(float) * out_n), *v16 = bf_malloc(sizeof(float) * out_n);
    bf_set_precision(BF_PRECISION_FP32);
    bf_conv2d_forward(v32, col, img, cw, NULL, &d);
    bf_set_precision(BF_PRECISION_BF16);
    bf_conv2d_forward(v16, col, img, cw, NULL, &d);
    CHECK(memcmp(v16, v32, sizeof(float) * out_n) == 0);
    bf_features *fn = bf_features_load("models/features-fmnist.safetensors");
    CHECK(fn != NULL);
    if (fn) {
        int n = 6, F = bf_features_dim(fn), p32[6], p16[6];
        float *im = bf_gc_randn(12, (size_t)n * 28 * 28, 0.0f, 0.5f);
        float *f32 = bf_malloc(sizeof(float) * n * F), *f16 = bf_malloc(sizeof(float) * n * F);
        bf_set_precision(BF_PRECISION_FP32);
        CHECK(bf_features_extract(fn, f32, p32, im, n) == 0);
        bf_set_precision(BF_PRECISION_BF16);
        CHECK(bf_features_extract(fn, f16, p16, im, n) == 0);
        CHECK(memcmp(f32, f16, sizeof(float) * n * F) == 0 && memcmp(p32, p16, sizeof p32) == 0);
        free(im); free(f32); free(f16);
        bf_features_free(fn);
    }
    free(A); free(B); free(c16); free(c32); free(R); free(S);
    free(x); free(w); free(bias); free(y32); free(y16); free(yf);
    free(img); free(cw); free(col); free(v32); free(v16);
}

/* Runs fn with stderr sent to a file; returns what it printed (static buffer). */
static const char *capture_stderr(void (*fn)(void)) {
    static char buf[4096];
    char path[512];
    snprintf(path, sizeof path, "%s/stderr-capture.txt", bf_test_tmpdir());
    fflush(stderr);
    int saved = dup(2), fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    BF_ASSERT(saved >= 0 && fd >= 0);
    dup2(fd, 2);
    close(fd);
    fn();
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    FILE *fp = fopen(path, "r");
    size_t k = fp ? fread(buf, 1, sizeof buf - 1, fp) : 0;
    buf[k] = 0;
    if (fp) fclose(fp);
    return buf;
}

static float fb_A[20 * 30], fb_B[30 * 40], fb_C16[20 * 40], fb_C32[20 * 40];

static void two_bf16_products(void) {
    bf_set_precision(BF_PRECISION_BF16);
    bf_gemm(0, 0, 20, 40, 30, fb_A, 30, fb_B, 40, fb_C16, 40);
    memset(fb_C16, 0, sizeof fb_C16);
    bf_gemm(0, 0, 20, 40, 30, fb_A, 30, fb_B, 40, fb_C16, 40);
}

/* Without AVX512-BF16 (hidden here), bf16 computes exactly what fp32 does and says so once. */
TEST(bf16_fallback_without_avx512bf16_is_fp32_with_one_note) {
    bf_rng rng;
    bf_rng_seed(&rng, 13);
    for (int i = 0; i < NUM(fb_A); i++) fb_A[i] = bf_rng_normal(&rng);
    for (int i = 0; i < NUM(fb_B); i++) fb_B[i] = bf_rng_normal(&rng);
    memset(fb_C16, 0, sizeof fb_C16);
    memset(fb_C32, 0, sizeof fb_C32);
    bf_gemm_f32(0, 0, 20, 40, 30, fb_A, 30, fb_B, 40, fb_C32, 40);
    bf_gemm_test_hide_bf16(1);
    CHECK(!bf_gemm_bf16_available());
    const char *err = capture_stderr(two_bf16_products);
    CHECK(bf_get_precision() == BF_PRECISION_BF16 && bf_precision_effective() == BF_PRECISION_FP32);
    bf_gemm_test_hide_bf16(0);
    CHECK(memcmp(fb_C16, fb_C32, sizeof fb_C32) == 0);
    const char *line = strstr(err, "lacks AVX512-BF16");
    CHECK(line != NULL);
    CHECK(line && strstr(line + 1, "lacks AVX512-BF16") == NULL);   /* once */
    int lines = 0;
    for (const char *p = err; *p; p++) lines += *p == '\n';
    CHECK(lines == 1);
}

/* ------------------------------------------------------------------ whole models */
/* A first-order tolerance from bf16 rounding: one product moves its output by at most
 * 2 U16 = 2^-7 of its scale (sum |a||b|); along a chain of d products with gains about 1 (the
 * Transformer's normalised residual blocks) the moves add up to d 2^-7 of the scale. */
static double chain_tol(int d) { return d * 2 * U16; }

static double rms(const float *a, size_t n) {
    double s = 0.0;
    for (size_t i = 0; i < n; i++) s += (double)a[i] * a[i];
    return sqrt(s / (double)n);
}

static double rms_diff(const float *a, const float *b, size_t n) {
    double s = 0.0;
    for (size_t i = 0; i < n; i++) s += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
    return sqrt(s / (double)n);
}

/* F's NLL per image, z and gradient in bf16 against fp32. d: in and out projections and six
 * products a layer (qkv, q k^T, p v, proj, fc1, fc2) per block (F's 16 tokens keep q k^T and
 * p v in the fused fp32 attention kernel, so counting them is an upper bound). NLL = z^2 / 2 + sum_b alpha_b (per dimension)
 * moves by at most d 2^-7 (mean z^2 + sum_b mean |alpha_b|); the backward pass runs the chain
 * twice (2 d). */
static void check_flow_nll_and_gradient_within_derived_tolerance(void);

/* Each on the bf16 kernel the routing picks (AMX where the CPU has it), then with AMX hidden
 * (AVX512-BF16 alone). */
TEST(bf16_flow_nll_and_gradient_within_derived_tolerance) {
    REQUIRE_BF16();
    for (int hide = 0; hide <= bf_gemm_amx_available(); hide++) {
        bf_gemm_test_hide_amx(hide);
        check_flow_nll_and_gradient_within_derived_tolerance();
    }
    bf_gemm_test_hide_amx(0);
}

static void check_flow_nll_and_gradient_within_derived_tolerance(void) {
    bf_flow *f = bf_test_tiny_flow(5, 8, 2);
    CHECK(f->T >= 16 && f->W / f->NH >= 16);
    int n = 6, y[6] = {0, 1, 2, 3, -1, 5}, B = f->cfg.num_blocks, L = f->cfg.layers_per_block;
    int d = B * (2 + 6 * L), N = f->T * f->D;
    size_t P = f->num_params, td = (size_t)n * N;
    float *x = bf_gc_randn(6, td, 0.0f, 0.6f);
    float *g32 = bf_gc_zeros(P), *g16 = bf_gc_zeros(P);
    float nll32[6], nll16[6], *z32 = bf_malloc(sizeof(float) * td), *z16 = bf_malloc(sizeof(float) * td);
    double scale[6] = {0};
    bf_flow_acts a;
    bf_flow_acts_init(&a, f, n);
    bf_set_precision(BF_PRECISION_FP32);
    bf_flow_forward(f, f->params, &a, x, y, n);
    memcpy(nll32, a.nll, sizeof nll32);
    memcpy(z32, a.xs + (size_t)B * a.Bn * N, sizeof(float) * td);
    for (int i = 0; i < n; i++) {
        double zz = 0.0;
        for (int k = 0; k < N; k++) zz += (double)z32[(size_t)i * N + k] * z32[(size_t)i * N + k];
        scale[i] = zz / N;
        for (int b = 0; b < B; b++) {
            const float *o = a.o + ((size_t)b * a.Bn + i) * f->T * 2 * f->D;
            double s = 0.0;
            for (int t = 0; t < f->T; t++)
                for (int k = 0; k < f->D; k++) s += fabs(o[(size_t)t * 2 * f->D + k]);
            scale[i] += s / N;
        }
    }
    bf_flow_backward(f, f->params, &a, g32, NULL);
    bf_set_precision(BF_PRECISION_BF16);
    bf_flow_forward(f, f->params, &a, x, y, n);
    memcpy(nll16, a.nll, sizeof nll16);
    memcpy(z16, a.xs + (size_t)B * a.Bn * N, sizeof(float) * td);
    bf_flow_backward(f, f->params, &a, g16, NULL);
    double moved = 0.0;
    for (int i = 0; i < n; i++) {
        double dn = fabs((double)nll16[i] - nll32[i]), tol = chain_tol(d) * scale[i];
        if (!(dn <= moved)) moved = dn;
        if (!(dn <= tol)) fprintf(stderr, "    image %d: NLL %.7g (fp32) vs %.7g (bf16), tol %.3g\n", i, nll32[i], nll16[i], tol);
        CHECK(dn <= tol);
    }
    CHECK(moved > 0.0);   /* the products were bf16 */
    double rz = rms_diff(z16, z32, td) / rms(z32, td), rg = rms_diff(g16, g32, P) / rms(g32, P);
    CHECK(rz > 0.0 && rz <= chain_tol(d));
    CHECK(rg > 0.0 && rg <= chain_tol(2 * d));
    if (!(rz <= chain_tol(d) && rg <= chain_tol(2 * d)))
        fprintf(stderr, "    relative rms change: z %.3g (tol %.3g), gradient %.3g (tol %.3g)\n", rz,
                chain_tol(d), rg, chain_tol(2 * d));
    bf_flow_acts_free(&a);
    free(x); free(g32); free(g16); free(z32); free(z16);
    bf_flow_free(f);
}

/* G's output tokens in bf16 against fp32, relative rms. d: the guidance/class path (two
 * products of the w features, one adaLN modulation), the embedding, six products a layer and
 * a head per stage, the denoising stage's layers and head (its 16-token attention stays fp32 in
 * the fused kernel, so counting those products is an upper bound). */
static void check_reverse_outputs_within_derived_tolerance(void);

/* Each on the bf16 kernel the routing picks (AMX where the CPU has it), then with AMX hidden
 * (AVX512-BF16 alone). */
TEST(bf16_reverse_outputs_within_derived_tolerance) {
    REQUIRE_BF16();
    for (int hide = 0; hide <= bf_gemm_amx_available(); hide++) {
        bf_gemm_test_hide_amx(hide);
        check_reverse_outputs_within_derived_tolerance();
    }
    bf_gemm_test_hide_amx(0);
}

static void check_reverse_outputs_within_derived_tolerance(void) {
    bf_reverse_config c = bf_test_tiny_reverse_config(0, 1, 1);
    c.channels = 32;
    c.head_dim = 16;
    bf_reverse *r = bf_test_random_reverse(c, 17);
    int n = 5, N = r->T * r->D, y[5] = {0, 1, 2, 3, -1};
    int d = 3 + 1 + c.num_stages * (6 * c.layers_per_stage + 1) + 6 * c.denoise_layers + 1;
    CHECK(r->T >= 16);
    float *z = bf_gc_randn(18, (size_t)n * N, 0.0f, 1.0f);
    float *o32 = bf_malloc(sizeof(float) * n * N), *o16 = bf_malloc(sizeof(float) * n * N);
    bf_reverse_sample_opts o;
    bf_reverse_sample_opts_default(&o);
    o.cfg = 1.0f;
    for (int out = 0; out <= 1; out++) {
        o.output = out ? BF_REVERSE_OUT_NOISY : BF_REVERSE_OUT_CLEAN;
        bf_set_precision(BF_PRECISION_FP32);
        CHECK(bf_reverse_decode_tokens(r, o32, z, y, n, &o) == 0);
        bf_set_precision(BF_PRECISION_BF16);
        CHECK(bf_reverse_decode_tokens(r, o16, z, y, n, &o) == 0);
        double rel = rms_diff(o16, o32, (size_t)n * N) / rms(o32, (size_t)n * N);
        if (!(rel > 0.0 && rel <= chain_tol(d)))
            fprintf(stderr, "    output %d: relative rms change %.3g, tol %.3g\n", out, rel, chain_tol(d));
        CHECK(rel > 0.0 && rel <= chain_tol(d));
    }
    free(z); free(o32); free(o16);
    bf_reverse_free(r);
}

/* The perceptual loss of G's training follows the precision (bf_perceptual.lowp = 1, the
 * default): the committed perceptual network's loss in bf16 within the chain tolerance of its
 * five convolutions, and not the fp32 bits; with lowp = 0 the bits of fp32 (as the evaluation
 * network always is). The image gradient moves by more than rounding alone: where bf16 moves
 * an activation across a ReLU or a max-pool tie the gradient takes another path (about 9%
 * relative rms on these noise images); what training uses is its direction, so the check is
 * a cosine of at least 0.99 (a wrong product gives about 0) and a relative rms under 0.15. */
TEST(bf16_perceptual_loss_follows_precision_within_derived_tolerance) {
    REQUIRE_BF16();
    bf_features *fn = bf_features_load("models/perceptual-fmnist.safetensors");
    CHECK(fn != NULL);
    if (!fn) return;
    int n = 3, N = 28 * 28, d = 5;
    float *pred = bf_gc_randn(21, (size_t)n * N, 0.0f, 0.5f), *target = bf_gc_randn(22, (size_t)n * N, 0.0f, 0.5f);
    float *g[3];
    double l[3];
    bf_perceptual p;
    bf_perceptual_init(&p, fn, 1.0f, 0.0f, 0.01f);
    bf_feat_acts ap, at;
    bf_feat_acts_init(&ap, fn, n);
    bf_feat_acts_init(&at, fn, n);
    for (int k = 0; k < 3; k++) {   /* fp32, bf16, bf16 with lowp = 0 */
        bf_set_precision(k ? BF_PRECISION_BF16 : BF_PRECISION_FP32);
        p.lowp = k < 2;
        g[k] = bf_gc_zeros((size_t)n * N);
        l[k] = bf_perceptual_loss(&p, &ap, &at, g[k], pred, target, NULL, n, NULL, NULL);
    }
    bf_set_precision(BF_PRECISION_FP32);
    size_t m = (size_t)n * N;
    double rl = fabs(l[1] - l[0]) / fabs(l[0]), rg = rms_diff(g[1], g[0], m) / rms(g[0], m);
    double dot = 0.0;
    for (size_t i = 0; i < m; i++) dot += (double)g[1][i] * g[0][i];
    double cosine = dot / (rms(g[0], m) * rms(g[1], m) * (double)m);
    if (!(rl <= chain_tol(d) && rg <= 0.15 && cosine >= 0.99))
        fprintf(stderr, "    relative change: loss %.3g (tol %.3g), gradient rms %.3g, cosine %.4f\n", rl,
                chain_tol(d), rg, cosine);
    CHECK(rl > 0.0 && rl <= chain_tol(d));
    CHECK(rg > 0.0 && rg <= 0.15 && cosine >= 0.99);
    CHECK(l[2] == l[0] && memcmp(g[2], g[0], sizeof(float) * n * N) == 0);
    bf_feat_acts_free(&ap);
    bf_feat_acts_free(&at);
    for (int k = 0; k < 3; k++) free(g[k]);
    free(pred); free(target);
    bf_features_free(fn);
}

/* After bf16 work (encoding, sampling, a gradient), fp32 is exactly fp32 again: the same z as
 * before, and the exact inverse F^-1(F(x)) within 1e-4. Sampling in bf16 does use bf16. */
TEST(bf16_leaves_fp32_exact_inverse_intact) {
    bf_flow *f = bf_test_tiny_flow(7, 8, 2);
    int n = 4, y[4] = {1, 2, -1, 3}, N = f->T * f->D;
    size_t td = (size_t)n * N;
    float *x = bf_gc_randn(8, td, 0.0f, 0.6f), *img = bf_malloc(sizeof(float) * td);
    float *z0 = bf_malloc(sizeof(float) * td), *z = bf_malloc(sizeof(float) * td);
    float *back = bf_malloc(sizeof(float) * td), *back16 = bf_malloc(sizeof(float) * td);
    float ld[4];
    bf_unpatchify(img, x, n, 1, 8, 8, 2);
    bf_set_precision(BF_PRECISION_FP32);
    CHECK(bf_flow_encode(f, z0, ld, img, y, n) == 0);
    CHECK(bf_flow_decode(f, back, z0, y, n, 0.0f, 0) == 0);
    bf_set_precision(BF_PRECISION_BF16);
    CHECK(bf_flow_encode(f, z, ld, img, y, n) == 0);
    CHECK(bf_flow_decode(f, back16, z0, y, n, 0.0f, 0) == 0);
    if (bf_gemm_bf16_available()) CHECK(bf_gc_max_abs_diff(back16, back, td) > 0.0);
    bf_set_precision(BF_PRECISION_FP32);
    CHECK(bf_flow_encode(f, z, ld, img, y, n) == 0);
    CHECK(memcmp(z, z0, sizeof(float) * td) == 0);
    CHECK(bf_flow_decode(f, back, z, y, n, 0.0f, 0) == 0);
    CHECK(bf_gc_max_abs_diff(back, img, td) <= 1e-4);
    free(x); free(img); free(z0); free(z); free(back); free(back16);
    bf_flow_free(f);
}

/* ------------------------------------------------------------------ command line */
TEST(cli_precision_option_on_every_computing_command) {
    static const char *cmds[] = {"train-flow", "train-reverse", "sample", "eval", "eval-bpd",
                                 "eval-reverse", "bench train", "bench sample", "inpaint", "edit",
                                 "reconstruct", "interpolate", "encode", "demo", "serve"};
    char out[16384];
    for (int i = 0; i < NUM(cmds); i++) {
        int rc = bf_test_sh(out, sizeof out, "./biflow %s --help", cmds[i]);
        int ok = rc == 0 && strstr(out, "--precision") && strstr(out, "Default ($BF_PRECISION");
        if (!ok) fprintf(stderr, "    biflow %s --help: rc %d, no --precision with its default\n", cmds[i], rc);
        CHECK(ok);
    }
    int rc = bf_test_sh(out, sizeof out, "./biflow encode --flow x --precision fp16");
    CHECK(rc == 2 && strstr(out, "--precision must be fp32 or bf16, not 'fp16'"));
}

/* The defaults where the user chose no precision (BF_PRECISION= empties the suite's own
 * setting): bf16 for a new training run and for one pass of G; fp32 for the exact inverse, for
 * --precision fp32, for $BF_PRECISION=fp32, and for a resumed run that ran in fp32; `info`
 * says which a run's last steps ran in. */
TEST(cli_default_precision_bf16_to_train_and_for_one_pass_fp32_elsewhere) {
    REQUIRE_BF16();
    REQUIRE_FASHION_MNIST();
    static const struct { const char *cmd, *expect; } cases[] = {
        {"BF_PRECISION= ./biflow train-flow --out %s/pd-a %s", "bf16 matrix products"},
        {"BF_PRECISION= ./biflow train-flow --out %s/pd-b %s --precision fp32", "fp32 matrix products"},
        {"BF_PRECISION= ./biflow train-flow --out %s/pd-b --resume --steps 2 --eval-n 0%s", "fp32 matrix products"},
        {"BF_PRECISION= ./biflow train-flow --out %s/pd-a --resume --steps 2 --eval-n 0%s", "bf16 matrix products"},
        {"BF_PRECISION=fp32 ./biflow train-flow --out %s/pd-c %s", "fp32 matrix products"},
        {"BF_PRECISION= ./biflow sample --flow %s/pd-a --n 2 --out %s/pd-s", "(fp32 products)"},
        {"BF_PRECISION= ./biflow sample --reverse models/reverse-fmnist.safetensors --n 2 --out %s/pd-g%s", "(bf16 products)"},
        {"BF_PRECISION= ./biflow sample --reverse models/reverse-fmnist.safetensors --n 2 --out %s/pd-g%s --precision fp32", "(fp32 products)"},
        {"./biflow info %s/pd-b%s", "trained 2 steps, batch 64, seed 0, last steps in fp32 matrix products"},
        {"./biflow info %s/pd-a%s", "trained 2 steps, batch 64, seed 0, last steps in bf16 matrix products"},
    };
    const char *tmp = bf_test_tmpdir(), *shape = "--steps 1 --width 64 --blocks 2 --layers 1 --eval-n 0";
    char out[8192], cmd[1024];
    for (int i = 0; i < NUM(cases); i++) {
        const char *second = strstr(cases[i].cmd, "%s/pd-s") ? tmp : i < 2 || i == 4 ? shape : "";
        snprintf(cmd, sizeof cmd, cases[i].cmd, tmp, second);
        int rc = bf_test_sh(out, sizeof out, "%s", cmd);
        int ok = rc == 0 && strstr(out, cases[i].expect);
        if (!ok) fprintf(stderr, "    %s: rc %d, no '%s' in:\n%s\n", cmd, rc, cases[i].expect, out);
        CHECK(ok);
    }
}

static int read_z(const char *path, float **z, size_t *n) {
    bf_safetensors st;
    if (bf_st_load(&st, path)) return -1;
    const bf_tensor_view *t = bf_st_get(&st, "z");
    if (!t) { bf_st_free(&st); return -1; }
    *n = (size_t)t->numel;
    *z = bf_malloc(sizeof(float) * *n);
    memcpy(*z, t->data, sizeof(float) * *n);
    bf_st_free(&st);
    return 0;
}

/* biflow encode: --precision bf16 changes z (within the tolerance of F's chain), --precision
 * fp32 overrides BF_PRECISION=bf16 bit for bit, and BF_GEMM=blas falls back with one note. */
TEST(cli_precision_reaches_the_products_and_falls_back_with_one_note) {
    REQUIRE_FASHION_MNIST();   /* encode reads the test split */
    char model[512], a[512], b[512], c[512], out[8192];
    const char *tmp = bf_test_tmpdir();
    snprintf(model, sizeof model, "%s/bf16-flow.safetensors", tmp);
    snprintf(a, sizeof a, "%s/bf16-z32.safetensors", tmp);
    snprintf(b, sizeof b, "%s/bf16-z16.safetensors", tmp);
    snprintf(c, sizeof c, "%s/bf16-zenv.safetensors", tmp);
    bf_flow *f = bf_test_tiny_flow(9, 28, 7);   /* 16 tokens of 49, heads of 16 */
    CHECK(bf_flow_save(f, f->params, model, NULL) == 0);
    int d = f->cfg.num_blocks * (2 + 6 * f->cfg.layers_per_block);
    bf_flow_free(f);
    const char *enc = "./biflow encode --n 4 --flow";
    CHECK(bf_test_sh(out, sizeof out, "%s '%s' --out '%s' --precision fp32", enc, model, a) == 0);
    CHECK(bf_test_sh(out, sizeof out, "%s '%s' --out '%s' --precision bf16", enc, model, b) == 0);
    CHECK(bf_test_sh(out, sizeof out, "BF_PRECISION=bf16 %s '%s' --out '%s' --precision fp32", enc,
                     model, c) == 0);
    float *z32 = NULL, *z16 = NULL, *zenv = NULL;
    size_t n32 = 0, n16 = 0, nenv = 0;
    CHECK(read_z(a, &z32, &n32) == 0 && read_z(b, &z16, &n16) == 0 && read_z(c, &zenv, &nenv) == 0);
    if (z32 && z16 && zenv && n32 == n16 && n32 == nenv) {
        CHECK(memcmp(z32, zenv, sizeof(float) * n32) == 0);
        if (bf_gemm_bf16_available()) {
            double rel = rms_diff(z16, z32, n32) / rms(z32, n32);
            CHECK(rel > 0.0 && rel <= chain_tol(d));
        }
    }
    int rc = bf_test_sh(out, sizeof out, "BF_GEMM=blas %s '%s' --out '%s' --precision bf16", enc, model, b);
    CHECK(rc == 0);
    const char *why = bf_bf16_supported() ? "bf16 precision is not used" : "lacks AVX512-BF16";
    const char *note = strstr(out, why);
    CHECK(note != NULL);
    CHECK(note && strstr(note + 1, why) == NULL);   /* once */
    free(z32); free(z16); free(zenv);
}
