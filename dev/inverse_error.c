/* The exact inverse's round trip on test images: max |F^-1(F(x)) - x| over the first N images
 * of the test split, with F's EMA weights, encoding and decoding in the given precision
 * (default fp32: the check that a model trained in bf16 keeps an exact inverse in fp32).
 *
 *   cc -O2 -fopenmp -Iinclude dev/inverse_error.c build/libbiflow.so -lm -o build/inverse_error
 *   build/inverse_error RUN_OR_FILE [N=256] [fp32|bf16]
 */
#include "biflow.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv) {
    if (argc < 2) { fprintf(stderr, "usage: %s RUN_OR_FILE [N] [fp32|bf16]\n", argv[0]); return 2; }
    int n = argc > 2 ? atoi(argv[2]) : 256;
    bf_precision p = BF_PRECISION_FP32;
    if (argc > 3 && (bf_precision_parse(&p, argv[3]) || bf_set_precision(p))) { fprintf(stderr, "%s\n", bf_last_error()); return 2; }
    bf_set_precision(p);
    bf_flow *f = bf_flow_load(argv[1], 1);
    bf_dataset ds;
    if (!f || bf_dataset_load(&ds, "fashion-mnist", "test")) { fprintf(stderr, "%s\n", bf_last_error()); return 1; }
    if (n > ds.n) n = ds.n;
    size_t px = (size_t)ds.c * ds.h * ds.w;
    float *x = malloc(sizeof(float) * n * px), *z = malloc(sizeof(float) * n * px);
    float *back = malloc(sizeof(float) * n * px), *ld = malloc(sizeof(float) * n);
    int *y = malloc(sizeof(int) * n);
    for (size_t i = 0; i < (size_t)n * px; i++) x[i] = ds.pixels[i] / 127.5f - 1.0f;
    for (int i = 0; i < n; i++) y[i] = ds.labels[i];
    if (bf_flow_encode(f, z, ld, x, y, n) || bf_flow_decode(f, back, z, y, n, 0.0f, 0)) {
        fprintf(stderr, "%s\n", bf_last_error());
        return 1;
    }
    double worst = 0.0, sq = 0.0;
    for (size_t i = 0; i < (size_t)n * px; i++) {
        double e = fabs((double)back[i] - x[i]);
        if (!(e <= worst)) worst = e;
        sq += e * e;
    }
    printf("%s: %d test images, %s: max |F^-1(F(x)) - x| = %.3g, rms %.3g\n", argv[1], n,
           bf_precision_name(bf_precision_effective()), worst, sqrt(sq / ((double)n * px)));
    free(x); free(z); free(back); free(ld); free(y);
    bf_dataset_free(&ds);
    bf_flow_free(f);
    return 0;
}
