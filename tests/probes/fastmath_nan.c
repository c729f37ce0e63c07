/* Built by the test fastmath_expf_nan_is_defined with -fsanitize=undefined: fast_expf on NaN,
 * infinities and out-of-range values must run without undefined behaviour, and give NaN, +Inf
 * and 0 where exp does. Exit status 0 when every value is right. */
#include "fastmath.h"

#include <stdio.h>

int main(void) {
    volatile float in[] = {NAN, -NAN, INFINITY, -INFINITY, 1e30f, -1e30f, 0.0f, 1.0f, -1.0f};
    int bad = 0;
    for (unsigned i = 0; i < sizeof in / sizeof in[0]; i++) {
        float x = in[i], y = fast_expf(x), want = expf(x);
        int ok = isnan(want) ? isnan(y) : isinf(want) || want == 0.0f ? y == want
                                                                        : fabsf(y - want) <= 1e-6f * want;
        if (!ok) { fprintf(stderr, "fast_expf(%g) = %g, expf gives %g\n", x, y, want); bad++; }
    }
    return bad ? 1 : 0;
}
