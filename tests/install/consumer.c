/* A program that uses an installed libbiflow, built only with
 *     cc consumer.c $(pkg-config --cflags --libs biflow)
 * (tests/install_check.sh). It checks the ABI version of the header against the library's,
 * that a failure reports a message, then loads the installed reverse model argv[1] and the
 * forward model it records (found beside it, as the recorded path is relative to the source
 * tree), and samples 4 images in one pass of G. */
#include <biflow.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int fail(const char *what) {
    fprintf(stderr, "consumer: %s: %s\n", what, bf_last_error());
    return 1;
}

/* images (n, C, H, W): all finite, and the mean */
static int finite_mean(const float *x, size_t m, double *mean) {
    double s = 0.0;
    for (size_t i = 0; i < m; i++) {
        if (!isfinite(x[i])) return -1;
        s += x[i];
    }
    *mean = s / (double)m;
    return 0;
}

int main(int argc, char **argv) {
    if (argc != 2) { fprintf(stderr, "usage: consumer REVERSE.safetensors\n"); return 2; }
    if (bf_abi_version() != BF_ABI_VERSION) {
        fprintf(stderr, "consumer: header ABI %d, library ABI %d\n", BF_ABI_VERSION, bf_abi_version());
        return 1;
    }
    if (bf_flow_load("/nonexistent/flow.safetensors", 1) || !strstr(bf_last_error(), "cannot open"))
        return fail("a missing file must fail with a message");
    bf_reverse *r = bf_reverse_load(argv[1], 1);
    if (!r) return fail("loading the reverse model");
    bf_flow *f = bf_reverse_load_flow(r, NULL, argv[1]);
    if (!f) return fail("loading its forward model");
    const bf_reverse_config *c = bf_reverse_get_config(r);
    int n = 4, g = c->img_size / c->patch_size, y[4] = {0, 1, 2, 3};
    size_t N = (size_t)g * g * c->in_channels * c->patch_size * c->patch_size;
    float *z = malloc(sizeof(float) * n * N), *x = malloc(sizeof(float) * n * N);
    bf_fill_normal(z, n * N, 0, 1.0f);
    bf_reverse_sample_opts o;
    bf_reverse_sample_opts_default(&o);
    o.cfg = 2.0f;
    double mean;
    if (bf_reverse_sample(r, x, z, y, n, &o, NULL)) return fail("sampling");
    if (finite_mean(x, n * N, &mean)) return fail("the samples hold NaN or Inf");
    printf("consumer: libbiflow %s (ABI %d), G %zu and F %zu parameters: %d images, mean %.4f\n",
           bf_version(), bf_abi_version(), bf_reverse_num_params(r), bf_flow_num_params(f), n, mean);
    free(z);
    free(x);
    bf_flow_free(f);
    bf_reverse_free(r);
    return 0;
}
