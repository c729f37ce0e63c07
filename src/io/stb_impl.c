/* stb_image_write's implementation, compiled once for the library: PNG encoding to memory
 * (images out). Decoding goes through libpng and libjpeg-turbo (image_read.c); stb_image is
 * no longer used. Its code trips some of our warnings, which are silenced for this include. */
#define STB_IMAGE_WRITE_IMPLEMENTATION
#define STBI_WRITE_NO_STDIO
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wsign-compare"
#pragma GCC diagnostic ignored "-Wunused-parameter"
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wimplicit-fallthrough"
#pragma GCC diagnostic ignored "-Wmisleading-indentation"
#pragma GCC diagnostic ignored "-Wtype-limits"
#include <stb/stb_image_write.h>
#pragma GCC diagnostic pop
