/* The library's own description for bindings: versions, struct sizes, threads, the sampling
 * noise and label checks that the CLI and the bindings share. */
#include "core.h"

#include <omp.h>
#include <stdlib.h>
#include <string.h>

int bf_abi_version(void) { return BF_ABI_VERSION; }

const char *bf_version(void) { return BF_VERSION; }

size_t bf_sizeof(const char *type_name) {
    /* a type's name is bf_NAME's without the prefix */
#define TYPE(name) {#name, sizeof(bf_##name)}
    static const struct { const char *name; size_t size; } TYPES[] = {
        TYPE(flow_config), TYPE(sample_opts), TYPE(sample_stats), TYPE(reverse_config),
        TYPE(reverse_sample_opts), TYPE(editor), TYPE(inpaint_opts), TYPE(edit_opts),
        TYPE(image_set), TYPE(dataset), TYPE(features_config), TYPE(feature_stats), TYPE(rng),
    };
#undef TYPE
    for (size_t i = 0; type_name && i < sizeof TYPES / sizeof TYPES[0]; i++)
        if (!strcmp(type_name, TYPES[i].name)) return TYPES[i].size;
    return 0;
}

/* $OMP_NUM_THREADS's first number when it is a positive integer, else every core. */
static int default_threads(void) {
    const char *s = getenv("OMP_NUM_THREADS");
    char *end;
    long v = s ? strtol(s, &end, 10) : 0;
    if (s && end != s && v > 0 && v < 1 << 16) return (int)v;
    return omp_get_num_procs();
}

void bf_set_threads(int n) { omp_set_num_threads(n > 0 ? n : default_threads()); }

int bf_get_threads(void) { return omp_get_max_threads(); }

void bf_fill_normal(float *out, size_t n, uint64_t seed, float scale) {
    bf_rng rng;
    bf_rng_seed(&rng, seed);
    for (size_t i = 0; i < n; i++) out[i] = scale * bf_rng_normal(&rng);
}

int bf_labels_check(const int *y, int n, int num_classes) {
    if (n < 0) {
        bf_set_error("the number of images must be >= 0, not %d", n);
        return -1;
    }
    for (int i = 0; y && i < n; i++) {
        if (num_classes == 0 && y[i] != -1) {
            bf_set_error("label %d of image %d: the model is unconditional, so every label must "
                         "be -1", y[i], i);
            return -1;
        }
        if (y[i] < -1 || y[i] >= num_classes) {
            bf_set_error("label %d of image %d is out of range: the model has %d classes, so "
                         "labels are in [0, %d), or -1 for none", y[i], i, num_classes,
                         num_classes);
            return -1;
        }
    }
    return 0;
}
