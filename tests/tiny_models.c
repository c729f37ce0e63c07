/* Tiny random models F and G for tests (see tiny_models.h). */
#include "tiny_models.h"
#include "test.h"
#include "flow.h"
#include "reverse.h"

bf_reverse_config bf_test_tiny_reverse_config(int distill, int denoise_layers, int guidance) {
    bf_reverse_config c = {0};
    c.img_size = 8; c.in_channels = 1; c.patch_size = 2; c.num_classes = 4;
    c.num_stages = 2; c.channels = 16; c.head_dim = 8; c.layers_per_stage = 1;
    c.denoise_layers = denoise_layers; c.guidance_embed = guidance; c.w_freq = 8;
    c.distill = distill;
    return c;
}

bf_reverse *bf_test_random_reverse(bf_reverse_config c, uint64_t seed) {
    bf_reverse *r = bf_reverse_new(&c);
    BF_ASSERT(r);
    bf_rng rng;
    bf_rng_seed(&rng, seed);
    for (size_t i = 0; i < r->num_params; i++) r->params[i] = 0.25f * bf_rng_normal(&rng);
    return r;
}

bf_flow *bf_test_random_flow(bf_flow_config c, uint64_t seed, float out_std, float bias_std) {
    bf_flow *f = bf_flow_new(&c);
    bf_flow_init(f, seed);
    bf_rng rng;
    bf_rng_seed(&rng, seed + 1);
    for (int b = 0; b < c.num_blocks; b++) {
        float *w = f->params + f->blocks[b].out_w;
        for (int i = 0; i < 2 * f->D * f->W; i++) w[i] = out_std * bf_rng_normal(&rng);
        float *bb = f->params + f->blocks[b].out_b;
        for (int i = 0; bias_std > 0.0f && i < 2 * f->D; i++) bb[i] = bias_std * bf_rng_normal(&rng);
    }
    return f;
}

bf_flow *bf_test_tiny_flow(uint64_t seed, int img, int patch) {
    bf_flow_config c = {img, 1, patch, 32, 2, 1, 16, 10, 2.0f};
    return bf_test_random_flow(c, seed, 0.05f, 0.0f);
}

void bf_test_tiny_train_opts(bf_train_opts *o, const char *dir, int steps) {
    bf_train_opts_default(o);
    bf_flow_config_named(&o->model, "fmnist-tiny");
    o->model.num_blocks = 1;
    o->model.channels = 32;
    o->out_dir = dir;
    o->batch = 4;
    o->steps = steps;
    o->warmup = 2;
    o->ckpt_every = 2;
    o->log_every = 1;
    o->quiet = 1;
    o->seed = 7;
    o->threads = 1;
}

long bf_test_saved_step(const char *dir) {
    char path[700];
    snprintf(path, sizeof path, "%s/train_state.safetensors", dir);
    bf_safetensors st;
    if (bf_st_load(&st, path)) return -1;
    const bf_tensor_view *t = bf_st_get(&st, "step");
    const char *meta = bf_st_meta(&st, "step");
    int64_t step = -1;
    if (t) memcpy(&step, t->data, 8);
    if (!meta || strtol(meta, NULL, 10) != step) step = -1;
    bf_st_free(&st);
    return (long)step;
}
