/* biflow commands that inspect models: info (a checkpoint's configuration) and encode (F's
 * encodings of images, e.g. to compare with PyTorch). */
#include "biflow.h"
#include "cli.h"
#include "commands.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ------------------------------------------------------------------ encode */
static int write_encoding(const char *out, const bf_flow *f, const float *x, const int *y,
                          const float *z, const float *ld, int n) {
    const bf_flow_config *c = bf_flow_get_config(f);
    int T = bf_flow_tokens(c), D = bf_flow_token_dim(c);
    int64_t *y64 = bf_malloc(sizeof(int64_t) * n);
    for (int i = 0; i < n; i++) y64[i] = y[i];
    bf_st_writer *w = bf_st_writer_new();
    int64_t sx[4] = {n, c->in_channels, c->img_size, c->img_size}, sz[3] = {n, T, D}, sn = n;
    bf_st_writer_meta(w, "note", "biflow encode: z = F(x | y), logdet = sum over blocks of -mean(alpha)");
    bf_st_writer_add(w, "x", BF_DT_F32, 4, sx, x);
    bf_st_writer_add(w, "y", BF_DT_I64, 1, &sn, y64);
    bf_st_writer_add(w, "z", BF_DT_F32, 3, sz, z);
    bf_st_writer_add(w, "logdet", BF_DT_F32, 1, &sn, ld);
    int rc = bf_st_writer_save(w, out);
    bf_st_writer_free(w);
    free(y64);
    return rc;
}

static int encode_split(bf_flow *f, const bf_dataset *ds, int n, int uncond, const char *out) {
    const bf_flow_config *c = bf_flow_get_config(f);
    if (ds->c != c->in_channels || ds->h != c->img_size || ds->w != c->img_size) {
        bf_set_error("the data's images are %dx%dx%d but the model's are %dx%dx%d", ds->c, ds->h,
                     ds->w, c->in_channels, c->img_size, c->img_size);
        return -1;
    }
    if (n <= 0 || n > ds->n) n = ds->n;
    size_t img = (size_t)ds->c * ds->h * ds->w, N = (size_t)bf_flow_tokens(c) * bf_flow_token_dim(c);
    float *x = bf_malloc(sizeof(float) * n * img), *z = bf_malloc(sizeof(float) * n * N);
    float *ld = bf_malloc(sizeof(float) * n);
    int *y = bf_malloc(sizeof(int) * n);
    for (size_t i = 0; i < n * img; i++) x[i] = ds->pixels[i] / 127.5f - 1.0f;
    for (int i = 0; i < n; i++) y[i] = uncond || !c->num_classes ? -1 : ds->labels[i];
    int rc = bf_flow_encode(f, z, ld, x, y, n) || write_encoding(out, f, x, y, z, ld, n) ? -1 : 0;
    if (!rc) printf("encoded %d images: mean logdet %.4f per dimension; wrote %s\n", n, ld[0], out);
    free(x); free(z); free(ld); free(y);
    return rc;
}

int cmd_encode(int argc, char **argv) {
    const char *flow = NULL, *data = "fashion-mnist", *split = "test", *out = "encoded.safetensors";
    int n = 16, raw = 0, uncond = 0;
    cli_opt opts[] = {
        CLI_FLOW_DATA_OPTS(flow, raw, data, split, n),
        {"uncond", OPT_FLAG, &uncond, "encode with the unconditional label"},
        {"out", OPT_STR, &out, "output: safetensors with x, y, z, logdet"},
        CLI_PRECISION_OPT,
        CLI_END,
    };
    int rc = cli_options(argc, argv, 2, opts);
    if (rc != CLI_GO) return rc;
    if (!flow) return cli_usage("--flow is required");
    if ((rc = cli_check_int("n", n, 0, 1000000000))) return rc;
    bf_flow *f = bf_flow_load(flow, !raw);
    bf_dataset ds = {0};
    rc = !f || bf_dataset_load(&ds, data, split) || encode_split(f, &ds, n, uncond, out) ? cli_fail() : 0;
    bf_dataset_free(&ds);
    bf_flow_free(f);
    return rc;
}

/* ------------------------------------------------------------------ info */
static void print_reverse(const bf_reverse *r) {
    const bf_reverse_config *c = bf_reverse_get_config(r);
    printf("reverse model G (BiFlow): %dx%dx%d images, patch %d, %d classes\n"
           "  width %d, head size %d, %d alignment stages x %d layers, denoising stage %d layers\n"
           "  guidance input %s, hidden distillation %s\n  %zu parameters\n"
           "  trained against %s (SHA-256 %s), sigma %g\n",
           c->img_size, c->img_size, c->in_channels, c->patch_size, c->num_classes, c->channels,
           c->head_dim, c->num_stages, c->layers_per_stage, c->denoise_layers,
           c->guidance_embed ? "yes (1 NFE)" : "no (2 NFE guidance)", c->distill ? "yes" : "no",
           bf_reverse_num_params(r), bf_reverse_flow_path(r), bf_reverse_flow_sha256(r),
           (double)bf_reverse_sigma(r));
}

static void print_flow(const bf_flow *f) {
    const bf_flow_config *c = bf_flow_get_config(f);
    printf("forward model (TARFlow): %dx%dx%d images, patch %d -> %d tokens of %d\n"
           "  width %d, %d blocks x %d layers, head size %d, %d classes, bound %g\n"
           "  %zu parameters\n", c->img_size, c->img_size, c->in_channels, c->patch_size,
           bf_flow_tokens(c), bf_flow_token_dim(c), c->channels, c->num_blocks, c->layers_per_block,
           c->head_dim, c->num_classes, (double)c->bound, bf_flow_num_params(f));
    if (bf_flow_trained_sigma(f) > 0)
        printf("  trained with Gaussian noise, sigma %g\n", (double)bf_flow_trained_sigma(f));
}

/* How a checkpoint written by a trainer was trained (its metadata), when it records that. */
static void print_training(const bf_safetensors *st) {
    const char *step = bf_st_meta(st, "step"), *steps = bf_st_meta(st, "steps");
    const char *batch = bf_st_meta(st, "batch"), *seed = bf_st_meta(st, "seed");
    const char *prec = bf_st_meta(st, "precision");
    if (!step) return;
    printf("  trained %s steps", step);
    if (steps && strcmp(steps, step)) printf(" of %s", steps);
    if (batch) printf(", batch %s", batch);
    if (seed) printf(", seed %s", seed);
    if (prec) printf(", last steps in %s matrix products", prec);
    printf("\n");
}

int cmd_info(int argc, char **argv) {
    cli_opt opts[] = {CLI_END};
    const char *pos[1];
    int np, rc = cli_parse(argc, argv, 2, opts, pos, 1, &np);
    if (rc != CLI_GO) return rc;
    if (np != 1) return cli_usage("give one model file or run folder");
    char path[4096];
    bf_safetensors st;
    if (bf_resolve_model_path(path, sizeof path, pos[0], "flow_ema.safetensors", "flow.safetensors", 1))
        return cli_fail();
    if (access(path, R_OK) != 0 &&   /* a reverse model's run folder */
        bf_resolve_model_path(path, sizeof path, pos[0], "reverse_ema.safetensors", "reverse.safetensors", 1))
        return cli_fail();
    if (bf_st_load(&st, path)) return cli_fail();
    const char *fmt = bf_st_meta(&st, "format");
    int is_reverse = fmt && !strcmp(fmt, "biflow-reverse");
    bf_reverse *r = is_reverse ? bf_reverse_load(path, 1) : NULL;
    bf_flow *f = is_reverse ? NULL : bf_flow_load(path, 1);
    if (!r && !f) {
        bf_st_free(&st);
        return cli_fail();
    }
    if (r) print_reverse(r);
    else print_flow(f);
    print_training(&st);
    bf_st_free(&st);
    bf_reverse_free(r);
    bf_flow_free(f);
    return 0;
}
