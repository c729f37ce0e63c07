/* JPEGs made by libjpeg's compressor (see jpeg_writer.h). */
#include "jpeg_writer.h"
#include "core.h"

#include <jpeglib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

uint8_t *bf_test_jpeg(const uint8_t *px, int h, int w, int c, int quality, int flags, size_t *len) {
    struct jpeg_compress_struct ci;
    struct jpeg_error_mgr err;
    unsigned char *out = NULL;
    unsigned long n = 0;
    ci.err = jpeg_std_error(&err);
    jpeg_create_compress(&ci);
    jpeg_mem_dest(&ci, &out, &n);
    ci.image_width = (JDIMENSION)w;
    ci.image_height = (JDIMENSION)h;
    ci.input_components = c;
    ci.in_color_space = c == 1 ? JCS_GRAYSCALE : c == 3 ? JCS_RGB : JCS_CMYK;
    jpeg_set_defaults(&ci);
    jpeg_set_quality(&ci, quality, TRUE);
    if (flags & BF_JPEG_444)
        for (int k = 0; k < ci.num_components; k++)
            ci.comp_info[k].h_samp_factor = ci.comp_info[k].v_samp_factor = 1;
    if (flags & BF_JPEG_PROGRESSIVE) jpeg_simple_progression(&ci);
    if (flags & BF_JPEG_ARITH) ci.arith_code = TRUE;
    if (flags & BF_JPEG_RESTART) ci.restart_interval = 1;
    jpeg_start_compress(&ci, TRUE);
    while (ci.next_scanline < ci.image_height) {
        JSAMPROW row = (JSAMPROW)(px + (size_t)ci.next_scanline * w * c);
        jpeg_write_scanlines(&ci, &row, 1);
    }
    jpeg_finish_compress(&ci);
    jpeg_destroy_compress(&ci);
    uint8_t *copy = bf_malloc(n);   /* libjpeg's buffer, into one freed with free() */
    memcpy(copy, out, n);
    free(out);
    *len = n;
    return copy;
}
