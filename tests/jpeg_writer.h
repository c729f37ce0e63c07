/* JPEGs made by libjpeg's compressor, for the reader's tests and the fuzz seeds: the variants
 * the library itself never writes (progressive, arithmetic coding, restart markers, CMYK). */
#ifndef BF_TEST_JPEG_WRITER_H
#define BF_TEST_JPEG_WRITER_H

#include <stddef.h>
#include <stdint.h>

enum { BF_JPEG_PROGRESSIVE = 1, BF_JPEG_ARITH = 2, BF_JPEG_RESTART = 4, BF_JPEG_444 = 8 };

/* px: h x w x c interleaved, c = 1 (grey), 3 (RGB) or 4 (CMYK, with the Adobe marker libjpeg
 * writes for it); flags: BF_JPEG_* (BF_JPEG_444: no chroma subsampling). Returns the file's
 * bytes (*len of them), to be freed with free(). */
uint8_t *bf_test_jpeg(const uint8_t *px, int h, int w, int c, int quality, int flags, size_t *len);

#endif
