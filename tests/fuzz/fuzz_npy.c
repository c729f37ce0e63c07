/* libFuzzer harness for the .npy reader, bf_read_npy. `make fuzz` builds it as
 * build/fuzz/fuzz_npy (against the library built by clang with ASan and UBSan; the build line
 * this comment used to give did not link); seeds: tests/fixtures/fuzz/npy
 * (tests/fuzz/make_seeds.c). `make test` runs it briefly.
 *   build/fuzz/fuzz_npy -max_total_time=20 build/fuzz/corpus/npy tests/fixtures/fuzz/npy
 *
 * The input is the whole file, kept in a memfd reached by a /proc/self/fd path.
 * A read must either succeed with a consistent array or fail with a message. */
#include "biflow.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static const size_t elsize[] = {[BF_DT_F32] = 4, [BF_DT_F64] = 8, [BF_DT_I64] = 8,
                                [BF_DT_I32] = 4, [BF_DT_U8] = 1};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static int fd = -1;
    char path[64];
    if (fd < 0 && (fd = memfd_create("fuzz_npy", 0)) < 0) abort();
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    if (ftruncate(fd, 0) != 0 || (size && pwrite(fd, data, size, 0) != (ssize_t)size)) abort();
    bf_dtype dt;
    int nd;
    int64_t shape[8];
    void *out = (void *)1;
    bf_set_error("%s", "");
    if (bf_read_npy(path, &dt, &nd, shape, &out) == 0) {
        size_t n = elsize[dt];
        if (nd < 0 || nd > 8 || !out) abort();
        for (int i = 0; i < nd; i++) n *= (size_t)shape[i];
        if (n > size) abort();   /* the data came from the file, so it cannot be larger */
        if (n) {
            volatile uint8_t sink = ((uint8_t *)out)[n - 1];   /* all readable */
            (void)sink;
        }
        free(out);
    } else if (!strcmp(bf_last_error(), "no error") || out) {
        abort();   /* a failure without a message, or a leaked buffer */
    }
    return 0;
}
