/* Tiny random models F and G for tests that need a model pair (reverse model, editing). */
#ifndef BF_TINY_MODELS_H
#define BF_TINY_MODELS_H

#include "biflow.h"

/* G for 8x8x1 images, patch 2 (16 tokens), 4 classes, 2 stages of width 16. */
bf_reverse_config bf_test_tiny_reverse_config(int distill, int denoise_layers, int guidance);
/* A G with every parameter random (the zero-initialised adaLN would hide most gradients). */
bf_reverse *bf_test_random_reverse(bf_reverse_config c, uint64_t seed);
/* F of configuration c, initialised with seed, its output layers then random: weights of std
 * out_std, biases of std bias_std (none drawn when 0). */
bf_flow *bf_test_random_flow(bf_flow_config c, uint64_t seed, float out_std, float bias_std);
/* F (img x img x 1, patch, 10 classes, 2 blocks of width 32, bound 2) with random output
 * layers, so it is not the identity map. */
bf_flow *bf_test_tiny_flow(uint64_t seed, int img, int patch);

/* Options of a tiny training run of F into dir: fmnist-tiny with 1 block of width 32, batch 4,
 * 2 warmup steps, a checkpoint every 2 steps, a log record every step, quiet, seed 7, 1 thread. */
void bf_test_tiny_train_opts(bf_train_opts *o, const char *dir, int steps);
/* The step of the resume file DIR/train_state.safetensors: its "step" tensor, which its "step"
 * metadata must agree with; -1 when the file cannot be read or the two differ. */
long bf_test_saved_step(const char *dir);

#endif
