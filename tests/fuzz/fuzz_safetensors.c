/* libFuzzer harness for the safetensors reader: every input is written to a temp file and
 * loaded; the reader must reject or accept it without crashing, leaking or reading astray.
 * `make fuzz` builds it as build/fuzz/fuzz_safetensors (against the library built by clang with
 * ASan and UBSan); seeds: tests/fixtures/fuzz/safetensors (tests/fuzz/make_seeds.c). `make
 * test` runs it briefly. The checkpoint loaders on top of this reader have their own harness,
 * fuzz_checkpoint.c.
 *   build/fuzz/fuzz_safetensors -max_total_time=20 build/fuzz/corpus/safetensors \
 *       tests/fixtures/fuzz/safetensors
 * libcjson is the system build, so libFuzzer's coverage guidance sees only biflow's code,
 * while ASan still checks every access biflow makes. */
#include "core.h"

#include <fcntl.h>
#include <unistd.h>

/* One scratch file per process; removed and recreated per input because truncating a file
 * that holds data makes ext4 flush it on close, which slows the loop down a lot. */
static char scratch[64];
static void remove_scratch(void) { unlink(scratch); }

static const char *scratch_path(void) {
    if (!scratch[0]) {
        snprintf(scratch, sizeof scratch, "/tmp/fuzz_safetensors.%d", (int)getpid());
        atexit(remove_scratch);
    }
    return scratch;
}

static int write_input(const char *path, const uint8_t *data, size_t size) {
    unlink(path);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0) return -1;
    size_t done = 0;
    while (done < size) {
        ssize_t k = write(fd, data + done, size - done);
        if (k <= 0) { close(fd); return -1; }
        done += (size_t)k;
    }
    return close(fd);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = scratch_path();
    if (write_input(path, data, size) != 0) return 0;
    bf_safetensors st;
    bf_set_error("%s", "");
    if (bf_st_load(&st, path) == 0) {
        /* Touch every byte of every view so ASan catches a view outside the file. */
        static const size_t item[] = {4, 8, 8, 4, 1};
        volatile uint8_t sink = 0;
        for (int i = 0; i < st.n; i++) {
            const uint8_t *p = st.tensors[i].data;
            size_t bytes = (size_t)st.tensors[i].numel * item[st.tensors[i].dtype];
            for (size_t k = 0; k < bytes; k++) sink ^= p[k];
        }
        (void)sink;
        bf_st_meta(&st, "format");
    } else {
        BF_ASSERT(strcmp(bf_last_error(), "no error") != 0);   /* failures must explain */
    }
    bf_st_free(&st);
    return 0;
}
