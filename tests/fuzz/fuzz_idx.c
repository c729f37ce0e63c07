/* libFuzzer harness for the IDX reader, bf_dataset_load_idx. `make fuzz` builds it as
 * build/fuzz/fuzz_idx (against the library built by clang with ASan and UBSan; the build line
 * this comment used to give linked dataset.c without the image decoders and did not link);
 * seeds: tests/fixtures/fuzz/idx (tests/fuzz/make_seeds.c). `make test` runs it briefly.
 *   build/fuzz/fuzz_idx -max_total_time=20 build/fuzz/corpus/idx tests/fixtures/fuzz/idx
 *
 * Input: a little-endian u16 k, then k bytes of image file, then the label file (either may
 * be gzip: the reader handles both). The files live in memfds, reached by /proc/self/fd paths.
 * A load must either succeed with a consistent dataset or fail with a message. */
#include "biflow.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static int mem_file(int *fd, char *path, size_t cap, const uint8_t *data, size_t n) {
    if (*fd < 0 && (*fd = memfd_create("fuzz", 0)) < 0) abort();
    snprintf(path, cap, "/proc/self/fd/%d", *fd);
    if (ftruncate(*fd, 0) != 0 || (n && pwrite(*fd, data, n, 0) != (ssize_t)n)) abort();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static int fd_im = -1, fd_lb = -1;
    char im[64], lb[64];
    if (size < 2) return 0;
    size_t k = (size_t)data[0] | (size_t)data[1] << 8;
    if (k > size - 2) k = size - 2;
    mem_file(&fd_im, im, sizeof im, data + 2, k);
    mem_file(&fd_lb, lb, sizeof lb, data + 2 + k, size - 2 - k);
    bf_dataset ds;
    bf_set_error("%s", "");
    if (bf_dataset_load_idx(&ds, im, lb) == 0) {
        if (ds.n < 1 || ds.c != 1 || ds.h < 1 || ds.w < 1 || !ds.pixels || !ds.labels) abort();
        for (int i = 0; i < ds.n; i++)
            if (ds.labels[i] < 0 || ds.labels[i] >= ds.num_classes) abort();
        volatile uint8_t sink = ds.pixels[(size_t)ds.n * ds.h * ds.w - 1];   /* all readable */
        (void)sink;
        bf_dataset_free(&ds);
    } else if (!strcmp(bf_last_error(), "no error") || ds.pixels || ds.labels || ds.n) {
        abort();   /* a failure without a message, or a half-filled dataset */
    }
    return 0;
}
