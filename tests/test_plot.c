/* Training curves: log parsing (malformed lines, NaN tokens, records without a step), nice
 * ticks and their labels, and rendered PNGs read back (bf_image_decode): size, where the series
 * colour lies and which way it moves, overlays, refusals. */
#include "test.h"
#include "plot.h"

#include "image_read.h"
#include <unistd.h>

static void put_text(const char *path, const char *text) {
    FILE *fp = fopen(path, "w");
    BF_ASSERT(fp && fputs(text, fp) >= 0 && fclose(fp) == 0);
}

/* n records: "loss" (and an identical "nll") from a to b linearly, steps 10, 20, ...; an
 * "eval_acc" every 10th record rising from 0.1 to 0.9; "lr" constant. */
static void put_curve_log(const char *path, int n, double a, double b) {
    FILE *fp = fopen(path, "w");
    BF_ASSERT(fp);
    for (int i = 0; i < n; i++) {
        double v = a + (b - a) * i / (n - 1);
        fprintf(fp, "{\"step\":%d,\"loss\":%.6f,\"nll\":%.6f,\"lr\":0.001}\n", 10 * (i + 1), v, v);
        if (i % 10 == 9) fprintf(fp, "{\"step\":%d,\"eval_acc\":%.4f}\n", 10 * (i + 1), 0.1 + 0.8 * i / (n - 1));
    }
    BF_ASSERT(fclose(fp) == 0);
}

static uint8_t *load_png(const char *path, int *h, int *w) {
    uint8_t *buf;
    size_t size;
    int c;
    if (bf_read_file(path, &buf, &size, 1 << 26)) return NULL;
    uint8_t *img = bf_image_decode(buf, size, 3, w, h, &c);
    free(buf);
    return img;
}

/* Where log i's colour lies in columns [0, w) and rows [y0, y1) of an image `stride` pixels
 * wide: per column, the lowest such pixel (the curve, not the legend swatch, which sits in an
 * empty corner above it). Returns the mean of that over the first and the last quarter of the
 * columns that hold the colour, and the count. */
typedef struct { double left_y, right_y; long pixels; int first_col, last_col; } trace;

static trace find_trace(const uint8_t *img, int stride, int w, int y0, int y1, int log_index) {
    uint8_t rgb[3];
    bf_plot_color(log_index, rgb);
    int *low = bf_malloc(sizeof(int) * (size_t)w), ncols = 0;
    trace t = {0, 0, 0, -1, -1};
    for (int x = 0; x < w; x++) {
        low[x] = -1;
        for (int y = y0; y < y1; y++) {
            const uint8_t *p = img + ((size_t)y * stride + x) * 3;
            if (p[0] == rgb[0] && p[1] == rgb[1] && p[2] == rgb[2]) { low[x] = y; t.pixels++; }
        }
        if (low[x] >= 0) {
            if (t.first_col < 0) t.first_col = x;
            t.last_col = x;
            ncols++;
        }
    }
    int q = ncols / 4, seen = 0, nl = 0, nr = 0;
    for (int x = 0; x < w; x++) {
        if (low[x] < 0) continue;
        if (seen < q) { t.left_y += low[x]; nl++; }
        if (seen >= ncols - q) { t.right_y += low[x]; nr++; }
        seen++;
    }
    t.left_y /= nl ? nl : 1;
    t.right_y /= nr ? nr : 1;
    free(low);
    return t;
}

TEST(plot_ticks_are_nice) {
    double t[64], step;
    int n = bf_plot_ticks(0, 10, 5, t, 64, &step);
    CHECK(n == 6 && step == 2.0);
    for (int i = 0; i < n; i++) CHECK_NEAR(t[i], 2.0 * i, 1e-12);
    n = bf_plot_ticks(-1.03, 0.52, 5, t, 64, &step);   /* 0.31 a tick -> 0.2 */
    CHECK_NEAR(step, 0.2, 1e-12);
    CHECK(n == 8);
    CHECK_NEAR(t[0], -1.0, 1e-12);
    CHECK(t[5] == 0.0);                                 /* exactly zero, no -2.7e-17 */
    n = bf_plot_ticks(3.1e-5, 9.7e-5, 6, t, 64, &step);
    CHECK_NEAR(step, 1e-5, 1e-18);
    CHECK(n == 6);
    n = bf_plot_ticks(500, 11000, 6, t, 64, &step);
    CHECK(step == 2000.0 && n == 5 && t[0] == 2000.0);
    for (double raw = 1e-7; raw < 1e7; raw *= 1.37) {   /* every step is 1, 2 or 5 x 10^k */
        bf_plot_ticks(0, raw * 5, 5, t, 64, &step);
        double m = step / pow(10, floor(log10(step) + 1e-9));
        CHECK(fabs(m - 1) < 1e-9 || fabs(m - 2) < 1e-9 || fabs(m - 5) < 1e-9);
    }
    CHECK(bf_plot_ticks(1, 1, 5, t, 64, &step) == 0);
    CHECK(bf_plot_ticks(2, 1, 5, t, 64, &step) == 0);
}

TEST(plot_tick_labels) {
    char b[32];
    bf_plot_format_tick(b, sizeof b, 0.5, 0.1); CHECK(!strcmp(b, "0.5"));
    bf_plot_format_tick(b, sizeof b, -0.8, 0.2); CHECK(!strcmp(b, "-0.8"));
    bf_plot_format_tick(b, sizeof b, 10000, 2000); CHECK(!strcmp(b, "10000"));
    bf_plot_format_tick(b, sizeof b, 5.25, 0.05); CHECK(!strcmp(b, "5.25"));
    bf_plot_format_tick(b, sizeof b, 2e-5, 1e-5); CHECK(!strcmp(b, "2e-5"));
    bf_plot_format_tick(b, sizeof b, 1.5e-5, 5e-6); CHECK(!strcmp(b, "1.5e-5"));
    bf_plot_format_tick(b, sizeof b, 3e6, 1e6); CHECK(!strcmp(b, "3e6"));
    bf_plot_format_tick(b, sizeof b, 2.7e-17, 0.2); CHECK(!strcmp(b, "0"));
    CHECK(bf_plot_text_width("", 1) == 0);
    CHECK(bf_plot_text_width("ab", 1) == 11 && bf_plot_text_width("ab", 2) == 22);
}

/* Legend names: a run folder reads as the run; parents are added only to tell logs apart. */
TEST(plot_legend_names) {
    static const struct { int n; const char *paths[3], *want[3]; } cases[] = {
        {3, {"runs/naive/log.jsonl", "runs/align/log.jsonl", "/x/distill-s1/log.jsonl"},
            {"naive", "align", "distill-s1"}},
        {2, {"a/run/log.jsonl", "b/run/log.jsonl"}, {"a/run", "b/run"}},
        {2, {"logs/f.jsonl", "other/g.jsonl"}, {"f.jsonl", "g.jsonl"}},
        {2, {"x/f.jsonl", "y/f.jsonl"}, {"x/f.jsonl", "y/f.jsonl"}},
        {1, {"log.jsonl"}, {"log.jsonl"}},
        {1, {"/log.jsonl"}, {""}},
    };
    for (int c = 0; c < NUM(cases); c++) {
        char names[3][BF_PLOT_NAME_MAX];
        bf_plot_legend_names(names, cases[c].paths, cases[c].n);
        for (int l = 0; l < cases[c].n; l++) {
            if (strcmp(names[l], cases[c].want[l]))
                fprintf(stderr, "    case %d: '%s' named '%s', not '%s'\n", c, cases[c].paths[l], names[l], cases[c].want[l]);
            CHECK(!strcmp(names[l], cases[c].want[l]));
        }
    }
    char longp[600], names[1][BF_PLOT_NAME_MAX];   /* a long name keeps its end */
    memset(longp, 'a', sizeof longp);
    longp[0] = '/';
    memcpy(longp + 500, "tail/log.jsonl", 15);
    const char *lp[1] = {longp};
    bf_plot_legend_names(names, lp, 1);
    CHECK(strlen(names[0]) == BF_PLOT_NAME_MAX - 1 && !strcmp(names[0] + BF_PLOT_NAME_MAX - 5, "tail"));
}

/* Found by tests/fuzz/fuzz_log.c: a tick at 0 with a step whose millionth underflows to 0
 * took log10(0) = -inf into an int (undefined; the label came out "0e0"), and infinite
 * values the same way. Such logs draw, with plain labels. */
TEST(plot_extreme_values_are_drawn_and_labelled) {
    char b[32];
    bf_plot_format_tick(b, sizeof b, 0.0, 5e-323); CHECK(!strcmp(b, "0"));
    bf_plot_format_tick(b, sizeof b, -0.0, 1e-320); CHECK(!strcmp(b, "0"));
    bf_plot_format_tick(b, sizeof b, INFINITY, 1.0); CHECK(!strcmp(b, "inf"));
    bf_plot_format_tick(b, sizeof b, 1e300, INFINITY); CHECK(!strcmp(b, "1e+300"));
    bf_plot_format_tick(b, sizeof b, 4e-323, 2e-323); CHECK(!strcmp(b, "4e-323"));
    const char *path = bf_test_tmp("extreme.jsonl"), *png = bf_test_tmp("extreme.png");
    put_text(path, "{\"step\":-1e308,\"loss\":-0e08}\n{\"step\":0,\"loss\":5e308}\n"
                   "{\"step\":0,\"loss\":5e-323}\n{\"step\":1e308,\"loss\":1e308,\"nll\":-1e308}\n");
    bf_plot_opts o;
    bf_plot_opts_default(&o);
    const char *logs[1] = {path};
    for (o.log_y = 0; o.log_y <= 1; o.log_y++) CHECK(bf_plot_logs(png, logs, 1, &o, NULL) == 0);
}

TEST(plot_log_parsing) {
    const char *path = bf_test_tmp("parse.jsonl");
    put_text(path,
             "{\"step\":10,\"loss\":2.0,\"lr\":0.001}\n"
             "{\"step\":20,\"loss\":1.5}\n"
             "this is not json\n"
             "{\"step\":30,\"loss\":nan,\"nll\":1.2}\n"
             "\n"
             "{\"loss\":9}\n"                                   /* no step: skipped */
             "{\"step\":40,\"loss\":1.0,\"nll\":-nan}\n"
             "{\"step\":50,\"loss\":NaN,\"note\":\"nan inf\"}\n"   /* a NaN, a string */
             "{\"step\":60,\"eval_acc\":0.5,\"note\":\"x\",\"best\":true}\n"
             "[1, 2]\n"
             "{\"step\":70,\"loss\":0.");                       /* cut off mid-write */
    bf_trainlog lg;
    CHECK(bf_trainlog_read(&lg, path) == 0);
    CHECK(lg.records == 5);       /* steps 10, 20, 30, 40, 60 have a finite value */
    CHECK(lg.malformed == 3 && lg.first_malformed == 3);
    CHECK(lg.nonfinite == 3);
    const bf_series *loss = bf_trainlog_find(&lg, "loss"), *nll = bf_trainlog_find(&lg, "nll");
    CHECK(loss && loss->n == 3 && loss->nonfinite == 2);
    if (loss && loss->n == 3) {
        CHECK(loss->x[0] == 10 && loss->x[1] == 20 && loss->x[2] == 40);
        CHECK(loss->y[0] == 2.0 && loss->y[1] == 1.5 && loss->y[2] == 1.0);
    }
    CHECK(nll && nll->n == 1 && nll->nonfinite == 1);
    CHECK(bf_trainlog_find(&lg, "eval_acc") != NULL);
    CHECK(!bf_trainlog_find(&lg, "step") && !bf_trainlog_find(&lg, "note") &&
          !bf_trainlog_find(&lg, "best"));
    bf_trainlog_free(&lg);
}

TEST(plot_decreasing_and_rising_curves) {
    const char *log = bf_test_tmp("curve.jsonl"), *png = bf_test_tmp("curve.png");
    put_curve_log(log, 200, 3.0, 1.0);
    bf_plot_opts o;
    bf_plot_opts_default(&o);
    o.panel_w = 480;
    o.panel_h = 200;
    bf_plot_stats st;
    const char *logs[] = {log};
    CHECK(bf_plot_logs(png, logs, 1, &o, &st) == 0);
    CHECK(st.panels == 2);        /* loss, eval_acc: nll repeats loss, lr is not a default */
    CHECK(st.records == 220 && st.malformed == 0 && st.skipped == 0);
    int w, h;
    uint8_t *img = load_png(png, &h, &w);
    CHECK(img && w == 480 && h == 400);
    if (!img) return;
    trace loss = find_trace(img, w, w, 0, 200, 0), acc = find_trace(img, w, w, 200, 400, 0);
    CHECK(loss.pixels > 400 && acc.pixels > 400);
    CHECK(loss.left_y + 60 < loss.right_y);   /* falls: high on the left, low on the right */
    CHECK(acc.left_y > acc.right_y + 60);     /* rises */
    CHECK(loss.first_col > 20 && loss.last_col < w - 5);   /* inside the axes, not the labels */
    CHECK(loss.last_col - loss.first_col > w / 2);
    free(img);
}

TEST(plot_overlays_logs_in_two_colours) {
    const char *a = bf_test_tmp("a.jsonl"), *b = bf_test_tmp("b.jsonl"), *png = bf_test_tmp("ab.png");
    put_curve_log(a, 100, 5.0, 1.0);
    put_curve_log(b, 100, 2.0, 4.0);   /* the legend finds the empty top-right corner */
    bf_plot_opts o;
    bf_plot_opts_default(&o);
    o.keys = " loss ,eval_acc,loss";   /* spaces and a repeat are forgiven */
    o.cols = 2;
    bf_plot_stats st;
    const char *logs[] = {a, b};
    CHECK(bf_plot_logs(png, logs, 2, &o, &st) == 0);
    CHECK(st.panels == 2);
    int w, h;
    uint8_t *img = load_png(png, &h, &w);
    CHECK(img && w == 2 * 640 && h == 240);
    if (!img) return;
    trace ta = find_trace(img, w, 640, 0, 240, 0), tb = find_trace(img, w, 640, 0, 240, 1);
    CHECK(ta.pixels > 300 && tb.pixels > 300);
    CHECK(ta.left_y + 60 < ta.right_y && tb.left_y > tb.right_y + 30);
    free(img);
}

TEST(plot_log_axis_skips_non_positive) {
    const char *log = bf_test_tmp("logy.jsonl"), *png = bf_test_tmp("logy.png");
    put_text(log, "{\"step\":1,\"loss\":100}\n{\"step\":2,\"loss\":0}\n{\"step\":3,\"loss\":-1}\n"
                  "{\"step\":4,\"loss\":0.01}\n{\"step\":5,\"loss\":1e-4}\n");
    bf_plot_opts o;
    bf_plot_opts_default(&o);
    o.log_y = 1;
    bf_plot_stats st;
    const char *logs[] = {log};
    CHECK(bf_plot_logs(png, logs, 1, &o, &st) == 0);
    CHECK(st.panels == 1 && st.skipped == 2);
    int w, h;
    uint8_t *img = load_png(png, &h, &w);
    CHECK(img && w == 640 && h == 240);
    if (img) CHECK(find_trace(img, w, w, 0, h, 0).pixels > 50);
    free(img);
}

TEST(plot_refusals) {
    const char *good = bf_test_tmp("good.jsonl"), *empty = bf_test_tmp("empty.jsonl");
    const char *junk = bf_test_tmp("junk.jsonl"), *png = bf_test_tmp("refused.png");
    put_curve_log(good, 20, 1.0, 0.5);
    put_text(empty, "");
    put_text(junk, "not json\n{\"loss\":1}\n{\"step\":3,\"loss\":nan}\n");
    bf_plot_opts o;
    bf_plot_opts_default(&o);
    const char *g[] = {good}, *e[] = {empty}, *j[] = {junk}, *ge[] = {good, empty};
    o.keys = "loss,nope";
    CHECK_ERR(bf_plot_logs(png, g, 1, &o, NULL), "unknown key 'nope'");
    CHECK(strstr(bf_last_error(), "loss, nll, lr, eval_acc") != NULL);   /* lists what there is */
    o.keys = " , ";
    CHECK_ERR(bf_plot_logs(png, g, 1, &o, NULL), "no keys");
    o.keys = NULL;
    CHECK_ERR(bf_plot_logs(png, e, 1, &o, NULL), "empty.jsonl' holds no usable records");
    CHECK_ERR(bf_plot_logs(png, j, 1, &o, NULL), "junk.jsonl' holds no usable records");
    CHECK_ERR(bf_plot_logs(png, ge, 2, &o, NULL), "empty.jsonl");
    const char *missing[] = {bf_test_tmp("missing.jsonl")};
    CHECK_ERR(bf_plot_logs(png, missing, 1, &o, NULL), "cannot open log");
    CHECK_ERR(bf_plot_logs(png, g, 0, &o, NULL), "logs");
    o.panel_w = 10;
    CHECK_ERR(bf_plot_logs(png, g, 1, &o, NULL), "panels must be");
    CHECK(access(png, F_OK) != 0);   /* nothing written on any refusal */
}
