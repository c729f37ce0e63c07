/* Small shared pieces of the kernels: a vectorisable exp and the size below which loops
 * run serially. Internal. */
#ifndef BF_FASTMATH_H
#define BF_FASTMATH_H

#include <math.h>
#include <stdint.h>

/* Below this much work a parallel region costs more than it saves (and on a loaded
 * machine a descheduled thread stalls the whole team), so small calls run serially. */
#define BF_PAR_MIN 32768

/* exp for float with ~2 ulp error, written without calls so loops vectorise (the rounding
 * adds and subtracts 1.5 * 2^23 rather than calling a builtin gcc 12 will not vectorise).
 * Inputs below -87.3 flush to 0, above 88.7 to +Inf; NaN propagates. */
static inline float fast_expf(float x) {
    /* NaN fails both comparisons and is clamped too, so n stays in [-126, 128] and the
     * exponent bits below are computed without undefined behaviour */
    float xc = x > -87.33f ? x : -87.33f;
    xc = xc < 88.72f ? xc : 88.72f;
    float n = (xc * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
    float r = xc - n * 0.693359375f;
    r = r + n * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    union { float f; uint32_t i; } s = {.i = (uint32_t)((int32_t)n + 127) << 23};
    float y = p * s.f;
    y = x > 88.72f ? INFINITY : y;
    y = x < -87.33f ? 0.0f : y;
    return x != x ? x : y;
}

#endif
