/* libFuzzer harness for the readers of single image files: mask images (bf_mask_parse with a
 * .png path, `inpaint --mask X.png`) and --images X.png (bf_image_set_load). `make fuzz` builds
 * it as build/fuzz/fuzz_mask; seeds: tests/fixtures/fuzz/mask (8x8 masks as PNG and JPEG).
 *   build/fuzz/fuzz_mask -max_total_time=20 build/fuzz/corpus/mask tests/fixtures/fuzz/mask
 *
 * The input is the file, written to a scratch folder as mask.png; the images are 8x8 in
 * tokens of 2x2. A read must either succeed (a mask of 0s and 1s; an image set of one image
 * of values in [-1, 1]) or fail with a message. */
#include "fuzz_util.h"

#include <math.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = fuzz_path(0, "mask.png");
    fuzz_write(path, data, size);
    uint8_t mask[16];
    memset(mask, 7, sizeof mask);
    bf_set_error("%s", "");
    if (bf_mask_parse(mask, path, 8, 2) == 0) {
        for (int t = 0; t < 16; t++)
            if (mask[t] > 1) abort();
    } else {
        fuzz_expect_message();
    }
    bf_image_set s;
    bf_set_error("%s", "");
    if (bf_image_set_load(&s, path, 0) == 0) {
        if (s.n != 1 || (s.c != 1 && s.c != 3) || s.h < 1 || s.w < 1 || !s.x || !s.y) abort();
        for (size_t i = 0; i < (size_t)s.c * s.h * s.w; i++)
            if (!(fabsf(s.x[i]) <= 1.0f)) abort();
        bf_image_set_free(&s);
    } else {
        fuzz_expect_message();
    }
    return 0;
}
