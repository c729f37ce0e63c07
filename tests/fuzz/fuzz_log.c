/* libFuzzer harness for the readers of log.jsonl: bf_trainlog_read with the drawing behind it
 * (`biflow plot`, bf_plot_logs) and bf_open_log, which keeps the records up to the step a
 * resumed run restarts from. `make fuzz` builds it as build/fuzz/fuzz_log; seeds:
 * tests/fixtures/fuzz/log (logs as the trainers write them, with NaN, nulls, strings, broken
 * and blank lines; tests/fuzz/make_seeds.c).
 *   build/fuzz/fuzz_log -max_total_time=20 build/fuzz/corpus/log tests/fixtures/fuzz/log
 *
 * The input is the log, written to a scratch folder as log.jsonl. Reading must either give
 * finite series or fail with a message; plotting (small panels, a log y axis for inputs of odd
 * length) must draw or fail with a message. Trimming (to the step kept: -1, 99, 199 or 299, from
 * the input's length) must keep every record up to that step and no other, as the plot reads
 * them, and a record appended after it must read back as a record of its own.
 *
 * The harness is linked with -Wl,--wrap=bf_write_png (Makefile): the drawn image is checked
 * (its size, every byte readable) instead of being encoded, which took most of each run. */
#include "fuzz_util.h"
#include "plot.h"
#include "train_util.h"

#include <math.h>

int __wrap_bf_write_png(const char *path, const uint8_t *pixels, int h, int w, int c);

int __wrap_bf_write_png(const char *path, const uint8_t *pixels, int h, int w, int c) {
    if (!path || !pixels || h < 1 || w < 1 || c != 3 || (size_t)h * w > 200000000) abort();
    volatile uint8_t sink = 0;
    for (size_t i = 0; i < (size_t)h * w * c; i += 4096) sink ^= pixels[i];
    sink ^= pixels[(size_t)h * w * c - 1];
    (void)sink;
    return 0;
}

/* The points of series `name` of lg with a step <= keep, in order, are those of kept. */
static void expect_kept(const bf_trainlog *lg, const bf_trainlog *kept, long keep) {
    for (int i = 0; i < lg->n_series; i++) {
        const bf_series *a = &lg->series[i], *b = bf_trainlog_find(kept, a->name);
        int k = 0;
        for (int j = 0; j < a->n; j++) {
            if (!(a->x[j] <= keep)) continue;
            if (!b || k >= b->n || b->x[k] != a->x[j] || b->y[k] != a->y[j]) abort();   /* lost */
            k++;
        }
        int within = 0;   /* b's points up to the step (not the record appended after it) */
        for (int j = 0; b && j < b->n; j++) within += b->x[j] <= keep;
        if (b && k != within) abort();   /* kept a record beyond the step */
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    bf_log_level = 0;   /* the plot's warnings about skipped lines */
    const char *log = fuzz_path(0, "log.jsonl"), *png = fuzz_path(1, "curves.png");
    fuzz_write(log, data, size);

    bf_trainlog lg;
    bf_set_error("%s", "");
    int have = bf_trainlog_read(&lg, log) == 0;
    if (have) {
        if (lg.records < 1 || lg.n_series < 1) abort();
        for (int i = 0; i < lg.n_series; i++)
            for (int k = 0; k < lg.series[i].n; k++)
                if (!isfinite(lg.series[i].x[k]) || !isfinite(lg.series[i].y[k])) abort();
    } else {
        fuzz_expect_message();
    }

    bf_plot_opts o;
    bf_plot_opts_default(&o);
    o.panel_w = 240;
    o.panel_h = 120;
    o.log_y = (int)(size & 1);
    const char *logs[1] = {log};
    bf_set_error("%s", "");
    if (bf_plot_logs(png, logs, 1, &o, NULL) != 0) fuzz_expect_message();

    /* a resumed run: the log trimmed to its step, then the next record appended */
    long keep = (long)(size % 4) * 100 - 1;
    bf_set_error("%s", "");
    FILE *fp = bf_open_log(fuzz_dir(), keep);
    if (!fp) abort();
    if (fprintf(fp, "{\"step\":1e9,\"fuzz_next\":1}\n") < 0 || fclose(fp) != 0) abort();
    bf_trainlog kept;
    if (bf_trainlog_read(&kept, log) != 0) abort();   /* the appended record at least */
    const bf_series *next = bf_trainlog_find(&kept, "fuzz_next");
    if (!next || next->n < 1 || next->x[next->n - 1] != 1e9) abort();   /* not run into a line */
    if (have) expect_kept(&lg, &kept, keep);
    bf_trainlog_free(&kept);
    if (have) bf_trainlog_free(&lg);
    return 0;
}
