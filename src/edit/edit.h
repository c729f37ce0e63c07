/* Internal to the editing files (mask.c, inpaint.c, edit.c): shared checks and decoding. */
#ifndef BF_EDIT_H
#define BF_EDIT_H

#include "biflow.h"

/* Labels y (n) must be -1 or in [0, K); what names them in the message. */
int bf_edit_check_labels(const int *y, int n, int K, const char *what);
/* The pair (bf_editor_check), the images' size and labels. */
int bf_edit_check_set(const bf_editor *e, const bf_image_set *in);
/* out (n, C, H, W) from noise z (n, T, D) under labels y (n) (NULL: unconditional), by the
 * editor's decoder: one pass of G, or the exact inverse of F (+ score denoising). */
int bf_edit_decode(const bf_editor *e, float *out, const float *z, const int *y, int n);
/* Noise tokens per image, T * D. */
size_t bf_edit_tokens(const bf_editor *e);

#endif
