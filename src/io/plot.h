/* Internal: training-log reading and the plot's building blocks (ticks, labels, palette, text),
 * shared by src/plot.c and the tests. Not part of the public API. */
#ifndef BF_PLOT_H
#define BF_PLOT_H

#include "biflow.h"

/* One numeric series of a log: finite values against "step", in file order. */
typedef struct {
    char *name;
    double *x, *y;
    int n, cap;
    long nonfinite;        /* values left out: NaN, Inf or null */
} bf_series;

/* A JSON-lines training log. Lines that are not JSON objects are skipped and counted; bare
 * NaN/Inf tokens (what C's printf writes) and nulls are counted as non-finite values. */
typedef struct {
    char *path;
    bf_series *series;
    int n_series;
    long lines;            /* lines that are not blank */
    long records;          /* lines with a "step" and at least one finite value */
    long malformed;        /* lines that do not parse as a JSON object */
    long first_malformed;  /* 1-based line number of the first, 0 if none */
    long nonfinite;        /* values that are NaN, Inf or null */
} bf_trainlog;

/* 1 with *step when a log line (len bytes, its newline included or not) is a JSON object with
 * a finite numeric "step", read as bf_trainlog_read reads it (bare NaN/Inf tokens allowed);
 * 0 otherwise. */
int bf_log_line_step(const char *line, size_t len, double *step);
/* Reads every line of path. Fails (naming the file) when it cannot be read or holds no usable
 * record; lg is then empty and need not be freed. */
int bf_trainlog_read(bf_trainlog *lg, const char *path);
void bf_trainlog_free(bf_trainlog *lg);
const bf_series *bf_trainlog_find(const bf_trainlog *lg, const char *name);

/* The legend's name of each of n logs: the file name, or the folder's name for a generic
 * "log.jsonl" (runs/naive/log.jsonl reads "naive"), with parent folders added until no two
 * names are the same (at most 8 levels); a name longer than the buffer keeps its end. */
#define BF_PLOT_NAME_MAX 200
void bf_plot_legend_names(char (*names)[BF_PLOT_NAME_MAX], const char *const *paths, int n);

/* Tick positions in [lo, hi] at a step of 1, 2 or 5 x 10^k giving about `target` intervals;
 * returns their count (at most max) and the step in *step. */
int bf_plot_ticks(double lo, double hi, int target, double *ticks, int max, double *step);
/* A tick label with just the digits the step needs: "0.25", "10000", "2e-5". */
void bf_plot_format_tick(char *buf, size_t cap, double v, double step);
/* The colour of the i-th log (a 10-colour palette, cycled). */
void bf_plot_color(int i, uint8_t rgb[3]);
/* Width and height in pixels of a string in the built-in font at an integer scale. */
int bf_plot_text_width(const char *s, int scale);
int bf_plot_text_height(int scale);

#endif
