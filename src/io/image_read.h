/* Image decoding: the one place biflow reads PNG (libpng) and JPEG (libjpeg-turbo) files, for
 * folder: datasets, --images X.png|X.jpg and mask images. Not part of the public API. */
#ifndef BF_IMAGE_READ_H
#define BF_IMAGE_READ_H

#include <stddef.h>
#include <stdint.h>

/* Limits checked from the header, before any pixel memory is allocated. */
#define BF_IMAGE_MAX_SIDE 16384                 /* pixels per side */
#define BF_IMAGE_MAX_PIXELS ((size_t)1 << 26)   /* width x height (64 Mi) */
#define BF_IMAGE_MAX_SCANS 1000                 /* scans of a progressive JPEG */
#define BF_IMAGE_MAX_FILE ((size_t)256 << 20)   /* bytes of one image file */

/* want_channels for bf_image_decode */
#define BF_IMAGE_AS_STORED 0     /* 1 grey, 2 grey + alpha, 3 RGB, 4 RGBA, as the file holds */
#define BF_IMAGE_NO_ALPHA (-1)   /* the colour channels only: 1 (grey) or 3 (RGB) */

/* Decodes the PNG or JPEG image in buf (told apart by their signatures) to 8-bit pixels,
 * row-major with interleaved channels (HWC): want_channels 1..4 converts (grey <-> RGB by
 * luminance, alpha dropped or set to 255), BF_IMAGE_AS_STORED and BF_IMAGE_NO_ALPHA keep the
 * file's colour type. Palettes and low bit depths are expanded, 16-bit samples keep their high
 * byte, CMYK JPEGs become RGB. Returns malloc'ed pixels and sets *w, *h, *c; NULL with a
 * message (bf_last_error) for anything damaged, truncated, unsupported or beyond the limits
 * above. A corrupt-data warning of libjpeg (a premature end, a bad Huffman code) is an error
 * too: a damaged image is refused, never half grey. Thread-safe; never exits or aborts. */
uint8_t *bf_image_decode(const uint8_t *buf, size_t len, int want_channels, int *w, int *h,
                         int *c);
/* Reads a file (at most BF_IMAGE_MAX_FILE bytes) and decodes it; messages name the file. */
uint8_t *bf_image_read_file(const char *path, int want_channels, int *w, int *h, int *c);

#endif
