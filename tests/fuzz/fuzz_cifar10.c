/* libFuzzer harness for the CIFAR-10 binary reader (bf_dataset_load_cifar10, `--data
 * cifar10:DIR`). `make fuzz` builds it as build/fuzz/fuzz_cifar10; seeds:
 * tests/fixtures/fuzz/cifar10 (tests/fuzz/make_seeds.c).
 *   build/fuzz/fuzz_cifar10 -max_total_time=20 build/fuzz/corpus/cifar10 tests/fixtures/fuzz/cifar10
 *
 * Input: a byte k, then k bytes of batches.meta.txt (k = 0: no such file, the standard class
 * names), then test_batch.bin (plain or gzip: the reader handles both), written to a scratch
 * folder. A load must either succeed with a consistent dataset or fail with a message and an
 * empty dataset. */
#include "fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    size_t k = data[0] < size - 1 ? data[0] : size - 1;
    const char *meta = fuzz_path(0, "batches.meta.txt"), *batch = fuzz_path(1, "test_batch.bin");
    if (k) fuzz_write(meta, data + 1, k);
    else unlink(meta);
    fuzz_write(batch, data + 1 + k, size - 1 - k);
    bf_dataset ds;
    bf_set_error("%s", "");
    if (bf_dataset_load_cifar10(&ds, fuzz_dir(), "test") == 0) {
        if (ds.n < 1 || ds.c != 3 || ds.h != 32 || ds.w != 32 || !ds.pixels || !ds.labels ||
            ds.num_classes != 10 || !ds.class_names)
            abort();
        for (int i = 0; i < ds.n; i++)
            if (ds.labels[i] < 0 || ds.labels[i] >= 10) abort();
        for (int i = 0; i < 10; i++)
            if (!ds.class_names[i] || !ds.class_names[i][0]) abort();
        volatile uint8_t sink = ds.pixels[(size_t)ds.n * 3 * 32 * 32 - 1];   /* all readable */
        (void)sink;
        bf_dataset_free(&ds);
    } else {
        fuzz_expect_message();
        if (ds.pixels || ds.labels || ds.n || ds.class_names) abort();   /* nothing half-filled */
    }
    return 0;
}
