/* libFuzzer harness for image decoding (src/image_read.c: libpng and libjpeg-turbo behind
 * bf_image_decode, the decoder of folder: datasets, --images and masks). `make fuzz` builds it
 * as build/fuzz/fuzz_image; seeds: tests/fixtures/fuzz/image (PNGs of every colour type, bit
 * depth and interlacing, baseline, progressive, grey and CMYK JPEGs; tests/fuzz/make_seeds.c).
 *   build/fuzz/fuzz_image -max_total_time=20 build/fuzz/corpus/image tests/fixtures/fuzz/image
 *
 * The input is the file; the channel count asked for comes from its length (as stored, alpha
 * dropped, 1 to 4). A decode must either succeed with a consistent image, every byte of which
 * is readable, or fail with a message; libpng and libjpeg must never exit the process. */
#include "core.h"
#include "image_read.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static const int wants[6] = {BF_IMAGE_AS_STORED, BF_IMAGE_NO_ALPHA, 1, 2, 3, 4};
    int want = wants[size % 6], w = -1, h = -1, c = -1;
    bf_set_error("%s", "");
    uint8_t *px = bf_image_decode(data, size, want, &w, &h, &c);
    if (!px) {
        if (!strcmp(bf_last_error(), "no error")) abort();   /* failures explain */
        return 0;
    }
    if (w < 1 || h < 1 || w > BF_IMAGE_MAX_SIDE || h > BF_IMAGE_MAX_SIDE ||
        (size_t)w * h > BF_IMAGE_MAX_PIXELS || c < 1 || c > 4 || (want > 0 && c != want) ||
        (want == BF_IMAGE_NO_ALPHA && c != 1 && c != 3))
        abort();
    volatile uint8_t sink = px[(size_t)w * h * c - 1] ^ px[0];   /* all of it allocated */
    (void)sink;
    free(px);
    return 0;
}
