/* Training curves: reads JSON-lines logs ({"step": N, "key": value, ...} per line) and draws
 * each numeric series against step into one PNG, a panel per series, the logs overlaid in
 * distinct colours. Everything is drawn here (lines, ticks, a built-in bitmap font) so that
 * the library needs nothing beyond stb_image_write to show a run. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "core.h"
#include "plot.h"
#include "plot_font.h"

#include <cjson/cJSON.h>
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <sys/stat.h>

#define MAX_LOGS 32
#define MAX_PANELS 64
#define MAX_TICKS 64

/* ================================================================== reading logs */
static bf_series *series_get(bf_trainlog *lg, const char *name) {
    for (int i = 0; i < lg->n_series; i++)
        if (!strcmp(lg->series[i].name, name)) return &lg->series[i];
    lg->series = bf_realloc(lg->series, sizeof(bf_series) * (size_t)(lg->n_series + 1));
    bf_series *s = &lg->series[lg->n_series++];
    memset(s, 0, sizeof *s);
    s->name = bf_strdup(name);
    return s;
}

static void series_push(bf_series *s, double x, double y) {
    if (s->n == s->cap) {
        s->cap = s->cap ? 2 * s->cap : 64;
        s->x = bf_realloc(s->x, sizeof(double) * (size_t)s->cap);
        s->y = bf_realloc(s->y, sizeof(double) * (size_t)s->cap);
    }
    s->x[s->n] = x;
    s->y[s->n++] = y;
}

static int is_nonfinite_word(const char *w, size_t n) {
    return (n == 3 && !strncasecmp(w, "nan", 3)) || (n == 3 && !strncasecmp(w, "inf", 3)) ||
           (n == 8 && !strncasecmp(w, "infinity", 8));
}

/* Copies a line with bare nan/inf/Infinity tokens outside strings turned into null: printf
 * writes a diverged loss as "nan", which is not JSON, and the rest of the record is still
 * worth drawing. */
static char *sanitize_line(const char *s, size_t len) {
    char *out = bf_malloc(2 * len + 1), *o = out;
    int in_str = 0;
    for (size_t i = 0; i < len;) {
        char c = s[i];
        if (in_str) {
            *o++ = c;
            i++;
            if (c == '\\' && i < len) *o++ = s[i++];
            else if (c == '"') in_str = 0;
            continue;
        }
        size_t sign = (c == '-' || c == '+') && i + 1 < len && isalpha((unsigned char)s[i + 1]);
        if (!sign && !isalpha((unsigned char)c)) {
            in_str = c == '"';
            *o++ = c;
            i++;
            continue;
        }
        size_t j = i + sign;
        while (j < len && isalpha((unsigned char)s[j])) j++;
        if (is_nonfinite_word(s + i + sign, j - i - sign)) {
            memcpy(o, "null", 4);
            o += 4;
        } else {
            memcpy(o, s + i, j - i);
            o += j - i;
        }
        i = j;
    }
    *o = 0;
    return out;
}

static int is_blank(const char *s, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!isspace((unsigned char)s[i])) return 0;
    return 1;
}

/* One line: 1 if it was a record, 0 if skipped, -1 if malformed. */
static int read_record(bf_trainlog *lg, const char *line, size_t len) {
    char *clean = sanitize_line(line, len);
    cJSON *j = cJSON_ParseWithOpts(clean, NULL, 1);
    free(clean);
    if (!cJSON_IsObject(j)) {
        cJSON_Delete(j);
        return -1;
    }
    const cJSON *step = cJSON_GetObjectItemCaseSensitive(j, "step");
    int used = 0;
    if (cJSON_IsNumber(step) && isfinite(step->valuedouble)) {
        for (const cJSON *c = j->child; c; c = c->next) {
            if (!c->string || !strcmp(c->string, "step")) continue;
            if (!cJSON_IsNumber(c) && !cJSON_IsNull(c)) continue;   /* strings, flags: not series */
            bf_series *s = series_get(lg, c->string);
            if (cJSON_IsNumber(c) && isfinite(c->valuedouble)) {
                series_push(s, step->valuedouble, c->valuedouble);
                used = 1;
            } else {
                s->nonfinite++;
                lg->nonfinite++;
            }
        }
    }
    cJSON_Delete(j);
    return used;
}

int bf_log_line_step(const char *line, size_t len, double *step) {
    char *clean = sanitize_line(line, len);
    cJSON *j = cJSON_ParseWithOpts(clean, NULL, 1);
    free(clean);
    const cJSON *s = cJSON_IsObject(j) ? cJSON_GetObjectItemCaseSensitive(j, "step") : NULL;
    int ok = cJSON_IsNumber(s) && isfinite(s->valuedouble);
    if (ok) *step = s->valuedouble;
    cJSON_Delete(j);
    return ok;
}

/* A run folder stands for its log.jsonl, as other commands take a run folder for its model. */
static char *resolve_log_path(const char *path) {
    struct stat st;
    if (stat(path, &st) || !S_ISDIR(st.st_mode)) return bf_strdup(path);
    size_t n = strlen(path);
    char *p = bf_malloc(n + 12);
    snprintf(p, n + 12, "%s%slog.jsonl", path, n && path[n - 1] == '/' ? "" : "/");
    return p;
}

static int read_lines(bf_trainlog *lg, FILE *fp) {
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    long no = 0;
    while ((len = getline(&line, &cap, fp)) >= 0) {
        no++;
        if (is_blank(line, (size_t)len)) continue;
        lg->lines++;
        int r = read_record(lg, line, (size_t)len);
        if (r < 0 && !lg->malformed++) lg->first_malformed = no;
        lg->records += r > 0;
    }
    free(line);
    return ferror(fp) ? -1 : 0;
}

int bf_trainlog_read(bf_trainlog *lg, const char *path) {
    memset(lg, 0, sizeof *lg);
    lg->path = resolve_log_path(path);
    FILE *fp = fopen(lg->path, "r");
    if (!fp) {
        bf_set_error("cannot open log '%s': %s", lg->path, strerror(errno));
        bf_trainlog_free(lg);
        return -1;
    }
    int rc = read_lines(lg, fp);
    fclose(fp);
    if (rc) bf_set_error("cannot read log '%s' (is it a file?)", lg->path);
    else if (!lg->lines)
        bf_set_error("log '%s' holds no usable records: it is empty", lg->path);
    else if (!lg->records)
        bf_set_error("log '%s' holds no usable records (JSON lines with a \"step\" and a finite "
                     "number): %ld lines, %ld of them malformed; %ld values NaN, Inf or null",
                     lg->path, lg->lines, lg->malformed, lg->nonfinite);
    if (rc || !lg->records) {
        bf_trainlog_free(lg);
        return -1;
    }
    return 0;
}

void bf_trainlog_free(bf_trainlog *lg) {
    for (int i = 0; i < lg->n_series; i++) {
        free(lg->series[i].name);
        free(lg->series[i].x);
        free(lg->series[i].y);
    }
    free(lg->series);
    free(lg->path);
    memset(lg, 0, sizeof *lg);
}

const bf_series *bf_trainlog_find(const bf_trainlog *lg, const char *name) {
    for (int i = 0; i < lg->n_series; i++)
        if (!strcmp(lg->series[i].name, name)) return &lg->series[i];
    return NULL;
}

/* ================================================================== ticks and labels */
static double nice_step(double raw) {
    double p = pow(10.0, floor(log10(raw)));
    double m = raw / p;
    return (m < 1.5 ? 1.0 : m < 3.5 ? 2.0 : m < 7.5 ? 5.0 : 10.0) * p;
}

int bf_plot_ticks(double lo, double hi, int target, double *ticks, int max, double *step) {
    *step = 0.0;
    if (!(hi > lo) || !isfinite(hi - lo) || target < 1) return 0;
    double s = nice_step((hi - lo) / target);
    int n = 0;
    /* k * s rather than a running sum: no drift, and 0 lands exactly on 0 */
    for (double k = ceil(lo / s - 1e-9); n < max; k++) {
        double v = k * s;
        if (v > hi + s * 1e-9) break;
        ticks[n++] = fabs(v) < s * 1e-9 ? 0.0 : v;
    }
    *step = s;
    return n;
}

/* "2.5e-05" -> "2.5e-5", "1e+06" -> "1e6": labels stay narrow. */
static void compact_exponent(char *s) {
    char *e = strchr(s, 'e');
    if (!e) return;
    char *d = e + 1, *src = e + 1;
    if (*src == '+') src++;
    else if (*src == '-') *d++ = *src++;
    while (*src == '0' && src[1]) src++;
    memmove(d, src, strlen(src) + 1);
}

/* floor(log10(x)) of a finite x > 0 as an int; 0 for anything else (no float -> int
 * conversion out of range: log10(0) is -inf). */
static int decade_of(double x) {
    if (!(x > 0) || !isfinite(x)) return 0;
    double d = floor(log10(x) + 1e-9);
    return d < -400 ? -400 : d > 400 ? 400 : (int)d;
}

void bf_plot_format_tick(char *buf, size_t cap, double v, double step) {
    if (!isfinite(v) || !(step > 0) || !isfinite(step)) {   /* no step to go by */
        snprintf(buf, cap, "%g", v);
        return;
    }
    if (fabs(v) < step * 1e-6 || v == 0) {   /* zero (step * 1e-6 may underflow to 0) */
        snprintf(buf, cap, "0");
        return;
    }
    int ks = decade_of(step);
    if (step >= 1e6 || step < 1e-4) {   /* too many zeros for fixed notation */
        int kv = decade_of(fabs(v)), digits = kv - ks;
        snprintf(buf, cap, "%.*e", digits < 0 ? 0 : digits > 6 ? 6 : digits, v);
        compact_exponent(buf);
    } else {
        snprintf(buf, cap, "%.*f", ks < 0 ? -ks : 0, v);
    }
}

/* The value readouts of the legend: five significant digits. */
static void format_value(char *buf, size_t cap, double v) {
    snprintf(buf, cap, "%.5g", v);
    compact_exponent(buf);
}

void bf_plot_color(int i, uint8_t rgb[3]) {
    static const uint8_t palette[10][3] = {   /* matplotlib's tab10: tells ten lines apart */
        {31, 119, 180}, {255, 127, 14}, {44, 160, 44}, {214, 39, 40}, {148, 103, 189},
        {140, 86, 75}, {227, 119, 194}, {127, 127, 127}, {188, 189, 34}, {23, 190, 207},
    };
    memcpy(rgb, palette[(i % 10 + 10) % 10], 3);
}

/* ================================================================== canvas */
/* An RGB image; drawing is clipped to [cx0, cx1) x [cy0, cy1), the panel being drawn, so
 * that nothing spills into a neighbour. */
typedef struct { uint8_t *px; int w, h, cx0, cy0, cx1, cy1; } canvas;

static const uint8_t WHITE[3] = {255, 255, 255}, GRID[3] = {232, 232, 232};
static const uint8_t FRAME[3] = {70, 70, 70}, INK[3] = {30, 30, 30}, MUTED[3] = {105, 105, 105};

static void put(canvas *c, int x, int y, const uint8_t *rgb) {
    if (x < c->cx0 || y < c->cy0 || x >= c->cx1 || y >= c->cy1) return;
    memcpy(c->px + ((size_t)y * c->w + x) * 3, rgb, 3);
}

static void fill(canvas *c, int x, int y, int w, int h, const uint8_t *rgb) {
    for (int j = y; j < y + h; j++)
        for (int i = x; i < x + w; i++) put(c, i, j, rgb);
}

/* Bresenham with a 2x2 brush: thin enough for detail, thick enough to see. */
static void line(canvas *c, int x0, int y0, int x1, int y1, const uint8_t *rgb) {
    int dx = abs(x1 - x0), dy = -abs(y1 - y0), sx = x0 < x1 ? 1 : -1, sy = y0 < y1 ? 1 : -1;
    for (int err = dx + dy;;) {
        fill(c, x0, y0, 2, 2, rgb);
        if (x0 == x1 && y0 == y1) break;
        int e2 = 2 * err;
        if (e2 >= dy) { err += dy; x0 += sx; }
        if (e2 <= dx) { err += dx; y0 += sy; }
    }
}

#define GLYPH_ADV (BF_FONT_W + 1)
#define CAP_H 7   /* rows above the baseline */

int bf_plot_text_width(const char *s, int scale) {
    size_t n = strlen(s);
    return n ? (int)n * GLYPH_ADV * scale - scale : 0;
}

int bf_plot_text_height(int scale) { return BF_FONT_H * scale; }

/* Draws s with its top-left corner at (x, y); characters outside printable ASCII show as '?'. */
static void text(canvas *c, int x, int y, const char *s, int scale, const uint8_t *rgb) {
    for (; *s; s++, x += GLYPH_ADV * scale) {
        int ch = (unsigned char)*s;
        const uint8_t *g = bf_font[(ch < BF_FONT_FIRST || ch > BF_FONT_LAST ? '?' : ch) - BF_FONT_FIRST];
        for (int r = 0; r < BF_FONT_H; r++)
            for (int k = 0; k < BF_FONT_W; k++)
                if (g[r] >> (BF_FONT_W - 1 - k) & 1) fill(c, x + k * scale, y + r * scale, scale, scale, rgb);
    }
}

/* ================================================================== one panel */
typedef struct {
    const bf_series *s[MAX_LOGS];   /* the panel's series in each log (NULL: absent) */
    const char *const *labels;
    int n_logs, log_y;
    double x0, x1;                  /* steps shown: the same in every panel */
    long skipped;                   /* values <= 0 left out of a log axis */
} panel_data;

typedef struct {
    int left, top, right, bottom;   /* plot area in pixels, inclusive */
    double x0, x1, y0, y1;          /* data ranges it spans; y in log10 on a log axis */
} frame;

static int map_x(const frame *f, double x) {
    return f->left + (int)lround((x - f->x0) / (f->x1 - f->x0) * (f->right - f->left));
}

static int map_y(const frame *f, double y) {
    return f->bottom - (int)lround((y - f->y0) / (f->y1 - f->y0) * (f->bottom - f->top));
}

/* The value as plotted; 0 when a log axis cannot show it. */
static int plot_value(const panel_data *d, double v, double *out) {
    if (!d->log_y) { *out = v; return 1; }
    if (!(v > 0)) return 0;
    *out = log10(v);
    return 1;
}

/* Value extent over every log; returns the number of plottable points. */
static long value_range(panel_data *d, double *y0, double *y1) {
    long n = 0;
    *y0 = INFINITY;
    *y1 = -INFINITY;
    for (int l = 0; l < d->n_logs; l++) {
        const bf_series *s = d->s[l];
        for (int i = 0; s && i < s->n; i++) {
            double v;
            if (!plot_value(d, s->y[i], &v)) { d->skipped++; continue; }
            *y0 = fmin(*y0, v);
            *y1 = fmax(*y1, v);
            n++;
        }
    }
    return n;
}

/* Pads y so that the curve clears the frame; widens a range that is a point. */
static void pad_ranges(frame *f) {
    double span = f->y1 - f->y0;
    if (span <= fabs(f->y1) * 1e-12) span = fabs(f->y1) > 0 ? fabs(f->y1) * 0.1 : 1.0;
    f->y0 -= 0.06 * span;
    f->y1 += 0.06 * span;
}

typedef struct { double at[MAX_TICKS]; char label[MAX_TICKS][32]; int n; } tick_set;

/* Labels of a log axis: "1e-5" style throughout when any would need many zeros, else
 * plain numbers ("0.02", "500"). */
static void log_labels(tick_set *t) {
    int sci = 0;
    for (int i = 0; i < t->n; i++) sci |= t->at[i] < -3.0 - 1e-9 || t->at[i] >= 6.0 - 1e-9;
    for (int i = 0; i < t->n; i++) {
        double v = pow(10, t->at[i]), decade = pow(10, floor(t->at[i] + 1e-9));
        if (!sci) {
            bf_plot_format_tick(t->label[i], 32, v, decade);
        } else {
            snprintf(t->label[i], 32, "%.0e", v);
            compact_exponent(t->label[i]);
        }
    }
}

/* Ticks of a log axis (positions in log10): whole decades when the range spans enough of
 * them, else 1-2-5 values, else plain nice values of the narrow range. */
static void log_ticks(tick_set *t, double lo, double hi, int target) {
    double step;
    t->n = 0;
    if (hi - lo >= 3.0) {
        int n = bf_plot_ticks(lo, hi, target, t->at, MAX_TICKS, &step);
        for (int i = 0; i < n; i++)
            if (t->at[i] == floor(t->at[i])) t->at[t->n++] = t->at[i];
    } else if (hi - lo >= 0.6) {
        for (double k = floor(lo); k <= ceil(hi) && t->n < MAX_TICKS - 3; k++)
            for (int m = 0; m < 3; m++) {
                double v = log10((double)(m == 0 ? 1 : m == 1 ? 2 : 5)) + k;
                if (v >= lo && v <= hi) t->at[t->n++] = v;
            }
    } else {
        int n = bf_plot_ticks(pow(10, lo), pow(10, hi), target, t->at, MAX_TICKS, &step);
        for (int i = 0; i < n; i++)
            if (t->at[i] > 0) t->at[t->n++] = log10(t->at[i]);
        for (int i = 0; i < t->n; i++) bf_plot_format_tick(t->label[i], 32, pow(10, t->at[i]), step);
        return;
    }
    log_labels(t);
}

static void make_ticks(tick_set *t, double lo, double hi, int target, int log_axis) {
    if (log_axis) {
        log_ticks(t, lo, hi, target);
        return;
    }
    double step;
    t->n = bf_plot_ticks(lo, hi, target, t->at, MAX_TICKS, &step);
    for (int i = 0; i < t->n; i++) bf_plot_format_tick(t->label[i], 32, t->at[i], step);
}

static int widest_label(const tick_set *t) {
    int w = 0;
    for (int i = 0; i < t->n; i++) {
        int k = bf_plot_text_width(t->label[i], 1);
        if (k > w) w = k;
    }
    return w;
}

#define PAD 6
#define TITLE_SCALE 2
#define TICK_LEN 4

static void draw_y_axis(canvas *c, const frame *f, const tick_set *t) {
    for (int i = 0; i < t->n; i++) {
        int y = map_y(f, t->at[i]);
        if (y < f->top || y > f->bottom) continue;
        fill(c, f->left + 1, y, f->right - f->left - 1, 1, GRID);
        fill(c, f->left - TICK_LEN, y, TICK_LEN, 1, FRAME);
        int w = bf_plot_text_width(t->label[i], 1);
        text(c, f->left - TICK_LEN - 3 - w, y - CAP_H / 2, t->label[i], 1, INK);
    }
}

/* "step" right-aligned with the y labels, then the x labels centred under their ticks, kept
 * inside the canvas; a label that would touch the one before is left out. */
static void draw_x_axis(canvas *c, const frame *f, const tick_set *t) {
    int ly = f->bottom + TICK_LEN + 3, last_end = f->left - TICK_LEN - 3;
    text(c, last_end - bf_plot_text_width("step", 1), ly, "step", 1, MUTED);
    for (int i = 0; i < t->n; i++) {
        int x = map_x(f, t->at[i]);
        if (x < f->left || x > f->right) continue;
        fill(c, x, f->top, 1, f->bottom - f->top, GRID);
        fill(c, x, f->bottom + 1, 1, TICK_LEN, FRAME);
        int w = bf_plot_text_width(t->label[i], 1), lx = x - w / 2;
        if (lx + w > c->w - 2) lx = c->w - 2 - w;
        if (lx < last_end + 5) continue;
        text(c, lx, ly, t->label[i], 1, INK);
        last_end = lx + w;
    }
}

static void draw_frame(canvas *c, const frame *f) {
    fill(c, f->left, f->top, f->right - f->left + 1, 1, FRAME);
    fill(c, f->left, f->bottom, f->right - f->left + 1, 1, FRAME);
    fill(c, f->left, f->top, 1, f->bottom - f->top + 1, FRAME);
    fill(c, f->right, f->top, 1, f->bottom - f->top + 1, FRAME);
}

/* A polyline through the points in file order, broken where the step goes back (a log that
 * was appended to after a restart) and where a log axis leaves values out; markers too when
 * the points are few enough to see. */
static void draw_series(canvas *c, const frame *f, const panel_data *d, const bf_series *s,
                        const uint8_t *rgb) {
    int px = 0, py = 0, have = 0;
    double prev_x = -INFINITY;
    int markers = s->n <= (f->right - f->left) / 12;
    for (int i = 0; i < s->n; i++) {
        double v;
        if (!plot_value(d, s->y[i], &v)) { have = 0; continue; }
        int x = map_x(f, s->x[i]), y = map_y(f, v);
        if (have && s->x[i] >= prev_x) line(c, px, py, x, y, rgb);
        else fill(c, x, y, 2, 2, rgb);   /* a point on its own still shows */
        if (markers) fill(c, x - 1, y - 1, 4, 4, rgb);
        px = x; py = y; prev_x = s->x[i]; have = 1;
    }
}

/* ------------------------------------------------------------------ legend */
#define SWATCH_W 14
#define LEGEND_LINE 12

/* A legend line at a level of detail: 2 the name, last, min and max value; 1 the name and
 * last value; 0 the name alone. */
static void legend_entry(char *buf, size_t cap, const char *label, const bf_series *s, int detail) {
    double mn = INFINITY, mx = -INFINITY;
    for (int i = 0; i < s->n; i++) { mn = fmin(mn, s->y[i]); mx = fmax(mx, s->y[i]); }
    char last[32], lo[32], hi[32];
    format_value(last, sizeof last, s->y[s->n - 1]);
    format_value(lo, sizeof lo, mn);
    format_value(hi, sizeof hi, mx);
    if (detail >= 2) snprintf(buf, cap, "%s  last %s  min %s  max %s", label, last, lo, hi);
    else if (detail == 1) snprintf(buf, cap, "%s  last %s", label, last);
    else snprintf(buf, cap, "%s", label);
}

typedef struct { int x, y, w, h; } box;

static int in_box(const box *b, double x, double y) {
    return x >= b->x - 3 && x < b->x + b->w + 3 && y >= b->y - 3 && y < b->y + b->h + 3;
}

/* How much of the panel's curves a box would hide (samples every few pixels along each
 * segment): the legend goes where it hides the least. */
static long hidden_by(const frame *f, const panel_data *d, const box *b) {
    long n = 0;
    for (int l = 0; l < d->n_logs; l++) {
        const bf_series *s = d->s[l];
        double px = 0, py = 0, v;
        int have = 0;
        for (int i = 0; s && i < s->n; i++) {
            if (!plot_value(d, s->y[i], &v)) { have = 0; continue; }
            double x = map_x(f, s->x[i]), y = map_y(f, v);
            int k = have ? (int)(fmax(fabs(x - px), fabs(y - py)) / 3) + 1 : 1;
            for (int j = 1; j <= k; j++)
                n += in_box(b, px + (x - px) * j / k, py + (y - py) * j / k);
            px = x; py = y; have = 1;
        }
    }
    return n;
}

/* The legend's lines, as detailed as the plot's width allows; returns their count and sets
 * *w to the widest. */
static int legend_lines(char entry[][256], int *idx, int *w, const frame *f, const panel_data *d) {
    int n = 0, room = f->right - f->left - 12 - (SWATCH_W + 12);
    for (int detail = 2; detail >= 0; detail--) {
        n = *w = 0;
        for (int l = 0; l < d->n_logs; l++) {
            if (!d->s[l] || !d->s[l]->n) continue;
            legend_entry(entry[n], 256, d->labels[l], d->s[l], detail);
            int k = bf_plot_text_width(entry[n], 1);
            if (k > *w) *w = k;
            idx[n++] = l;
        }
        if (*w <= room) break;
    }
    return n;
}

static void draw_legend(canvas *c, const frame *f, const panel_data *d) {
    char entry[MAX_LOGS][256];
    int w, idx[MAX_LOGS], n = legend_lines(entry, idx, &w, f, d);
    if (!n) return;
    int bw = SWATCH_W + 4 + w + 8, bh = n * LEGEND_LINE + 5, in = 6;
    int xl = f->left + in + 1, xr = f->right - in - bw, yt = f->top + in, yb = f->bottom - in - bh;
    if (xr < xl) xr = xl;
    if (yb < yt) yb = yt;
    /* the corners first (top right, top left, bottom right, bottom left: ties keep the
     * earlier), then places between them */
    box best = {xr, yt, bw, bh};
    long best_n = hidden_by(f, d, &best);
    for (int k = 1; k < 4 + 5 * 4 && best_n > 0; k++) {
        int g = k - 4, gx = g % 5, gy = g / 5;
        box b = k < 4 ? (box){k == 2 ? xr : xl, k == 1 ? yt : yb, bw, bh}
                      : (box){xl + (xr - xl) * gx / 4, yt + (yb - yt) * gy / 3, bw, bh};
        long p = hidden_by(f, d, &b);
        if (p < best_n) { best = b; best_n = p; }
    }
    int x = best.x, y = best.y;
    fill(c, x, y, bw, bh, WHITE);
    fill(c, x, y, bw, 1, GRID); fill(c, x, y + bh - 1, bw, 1, GRID);
    fill(c, x, y, 1, bh, GRID); fill(c, x + bw - 1, y, 1, bh, GRID);
    for (int i = 0; i < n; i++) {
        uint8_t rgb[3];
        bf_plot_color(idx[i], rgb);
        int ty = y + 4 + i * LEGEND_LINE;
        fill(c, x + 4, ty + 2, SWATCH_W, 3, rgb);
        text(c, x + 4 + SWATCH_W + 4, ty, entry[i], 1, INK);
    }
}

/* ------------------------------------------------------------------ panel */
static void draw_title(canvas *c, int x0, int y0, const char *key, int log_y) {
    text(c, x0 + PAD, y0 + PAD, key, TITLE_SCALE, INK);
    if (log_y)
        text(c, x0 + PAD + bf_plot_text_width(key, TITLE_SCALE) + 10,
             y0 + PAD + (CAP_H * TITLE_SCALE - CAP_H), "(log scale)", 1, MUTED);
}

static void draw_empty(canvas *c, const frame *f, const panel_data *d) {
    const char *msg = d->log_y ? "no positive values to show on a log scale" : "no finite values";
    draw_frame(c, f);
    text(c, (f->left + f->right - bf_plot_text_width(msg, 1)) / 2, (f->top + f->bottom) / 2 - 4,
         msg, 1, MUTED);
}

/* About one tick per `spacing` pixels, 2 to 20 of them. */
static int tick_target(int pixels, int spacing) {
    int n = pixels / spacing;
    return n < 2 ? 2 : n > 20 ? 20 : n;
}

static void draw_panel(canvas *c, int x0, int y0, int pw, int ph, const char *key, panel_data *d) {
    frame f = {.x0 = d->x0, .x1 = d->x1};
    long n = value_range(d, &f.y0, &f.y1);
    int title_h = CAP_H * TITLE_SCALE + 2 * TITLE_SCALE;   /* with descenders */
    f.top = y0 + PAD + title_h + 6;
    f.bottom = y0 + ph - 1 - (TICK_LEN + 3 + bf_plot_text_height(1) + 4);
    f.right = x0 + pw - 1 - 3 * PAD;
    draw_title(c, x0, y0, key, d->log_y);
    if (!n) {
        f.left = x0 + 6 * PAD;
        draw_empty(c, &f, d);
        return;
    }
    pad_ranges(&f);
    tick_set yt, xt;
    make_ticks(&yt, f.y0, f.y1, tick_target(f.bottom - f.top, 36), d->log_y);
    int label_w = widest_label(&yt), step_w = bf_plot_text_width("step", 1);
    f.left = x0 + PAD + (label_w > step_w ? label_w : step_w) + 3 + TICK_LEN;
    make_ticks(&xt, f.x0, f.x1, tick_target(f.right - f.left, 90), 0);
    draw_y_axis(c, &f, &yt);
    draw_x_axis(c, &f, &xt);
    for (int l = 0; l < d->n_logs; l++) {
        uint8_t rgb[3];
        bf_plot_color(l, rgb);
        if (d->s[l]) draw_series(c, &f, d, d->s[l], rgb);
    }
    draw_frame(c, &f);
    draw_legend(c, &f, d);
}

/* ================================================================== choosing the series */
typedef struct { const char *name[MAX_PANELS]; int n; } key_list;

static int key_listed(const key_list *k, const char *name) {
    for (int i = 0; i < k->n; i++)
        if (!strcmp(k->name[i], name)) return 1;
    return 0;
}

/* A log's copy of the name (so the list outlives the argument string), or NULL if none has it. */
static const char *find_key(const bf_trainlog *logs, int n_logs, const char *name) {
    for (int l = 0; l < n_logs; l++) {
        const bf_series *s = bf_trainlog_find(&logs[l], name);
        if (s) return s->name;
    }
    return NULL;
}

static int same_series(const bf_series *a, const bf_series *b) {
    if (!a || !b) return a == b;
    if (a->n != b->n) return 0;
    for (int i = 0; i < a->n; i++)
        if (a->x[i] != b->x[i] || a->y[i] != b->y[i]) return 0;
    return 1;
}

/* "nll" of a Gaussian-noise run is "loss" again: one panel is enough. A series repeats a
 * listed one when it does so in every log that has it. */
static int duplicates_listed(const key_list *k, const bf_trainlog *logs, int n_logs, const char *name) {
    for (int i = 0; i < k->n; i++) {
        int same = 1;
        for (int l = 0; l < n_logs && same; l++) {
            const bf_series *s = bf_trainlog_find(&logs[l], name);
            if (s) same = same_series(bf_trainlog_find(&logs[l], k->name[i]), s);
        }
        if (same) return 1;
    }
    return 0;
}

static void add_default(key_list *k, const bf_trainlog *logs, int n_logs, const char *name) {
    const char *own = find_key(logs, n_logs, name);
    if (!own || key_listed(k, own) || k->n == MAX_PANELS) return;
    if (duplicates_listed(k, logs, n_logs, own)) return;
    k->name[k->n++] = own;
}

/* loss, bpd or nll, eval_bpd_ema, then every eval_* key in the order first seen (but
 * eval_images, the size of the evaluation, not a result); a log with none of them (another
 * trainer's) shows every series it has. */
static void default_keys(key_list *k, const bf_trainlog *logs, int n_logs) {
    static const char *const first[] = {"loss", "bpd", "nll", "eval_bpd_ema"};
    k->n = 0;
    for (size_t i = 0; i < sizeof first / sizeof first[0]; i++) add_default(k, logs, n_logs, first[i]);
    for (int l = 0; l < n_logs; l++)
        for (int i = 0; i < logs[l].n_series; i++)
            if (!strncmp(logs[l].series[i].name, "eval_", 5) && strcmp(logs[l].series[i].name, "eval_images"))
                add_default(k, logs, n_logs, logs[l].series[i].name);
    for (int l = 0; l < n_logs && !k->n; l++)
        for (int i = 0; i < logs[l].n_series; i++) add_default(k, logs, n_logs, logs[l].series[i].name);
}

static void list_available(char *buf, size_t cap, const bf_trainlog *logs, int n_logs) {
    key_list seen = {.n = 0};
    size_t len = 0;
    buf[0] = 0;
    for (int l = 0; l < n_logs; l++)
        for (int i = 0; i < logs[l].n_series; i++) {
            const char *name = logs[l].series[i].name;
            if (key_listed(&seen, name) || seen.n == MAX_PANELS) continue;
            seen.name[seen.n++] = name;
            if (len < cap) len += (size_t)snprintf(buf + len, cap - len, "%s%s", len ? ", " : "", name);
        }
}

/* The comma list of keys, each of which some log must hold. */
static int parse_keys(key_list *k, const char *spec, const bf_trainlog *logs, int n_logs) {
    char name[256], avail[640];
    k->n = 0;
    for (const char *p = spec; *p;) {
        size_t len = strcspn(p, ",");
        while (len && isspace((unsigned char)*p)) { p++; len--; }
        size_t e = len;
        while (e && isspace((unsigned char)p[e - 1])) e--;
        snprintf(name, sizeof name, "%.*s", (int)(e < 255 ? e : 255), p);
        p += len + (p[len] == ',');
        if (!name[0]) continue;
        const char *own = find_key(logs, n_logs, name);
        if (!own) {
            list_available(avail, sizeof avail, logs, n_logs);
            bf_set_error("unknown key '%s': the log%s hold%s %s", name, n_logs > 1 ? "s" : "",
                         n_logs > 1 ? "" : "s", avail);
            return -1;
        }
        if (!key_listed(k, own) && k->n < MAX_PANELS) k->name[k->n++] = own;
    }
    if (!k->n) { bf_set_error("no keys given to plot"); return -1; }
    return 0;
}

/* ================================================================== the figure */
/* Legend names: the file name, or its folder's name when it is the generic log.jsonl (a run
 * folder reads as the run), with as many parent folders as keep two logs apart. */
static const char *path_tail(const char *p, int parts) {
    const char *s = p + strlen(p);
    for (int k = 0; s > p; s--)
        if (s[-1] == '/' && ++k == parts) break;
    return s;
}

void bf_plot_legend_names(char (*names)[BF_PLOT_NAME_MAX], const char *const *paths, int n) {
    for (int parts = 1; parts <= 8; parts++) {
        for (int l = 0; l < n; l++) {
            const char *file = path_tail(paths[l], 1);
            int generic = file != paths[l] && !strcmp(file, "log.jsonl");
            const char *tail = path_tail(paths[l], parts + generic);
            size_t len = strlen(tail) - (generic ? strlen("/log.jsonl") : 0);
            if (len >= BF_PLOT_NAME_MAX) {   /* too long: keep its end, where the names differ */
                tail += len - (BF_PLOT_NAME_MAX - 1);
                len = BF_PLOT_NAME_MAX - 1;
            }
            memcpy(names[l], tail, len);
            names[l][len] = 0;
        }
        int clash = 0;
        for (int a = 0; a < n; a++)
            for (int b = a + 1; b < n; b++) clash |= !strcmp(names[a], names[b]);
        if (!clash) return;
    }
}

void bf_plot_opts_default(bf_plot_opts *o) {
    memset(o, 0, sizeof *o);
    o->panel_w = 640;
    o->panel_h = 240;
    o->cols = 1;
}

static int check_opts(const bf_plot_opts *o, int n_logs) {
    if (n_logs < 1 || n_logs > MAX_LOGS) {
        bf_set_error("give 1 to %d logs, not %d", MAX_LOGS, n_logs);
        return -1;
    }
    if (o->panel_w < 240 || o->panel_w > 8192 || o->panel_h < 120 || o->panel_h > 8192 ||
        o->cols < 1 || o->cols > 16) {
        bf_set_error("panels must be 240..8192 pixels wide and 120..8192 high, in 1..16 "
                     "columns (asked for %dx%d in %d)", o->panel_w, o->panel_h, o->cols);
        return -1;
    }
    return 0;
}

static void warn_log(const bf_trainlog *lg) {
    if (lg->malformed)
        bf_info("warning: %s: skipped %ld malformed line%s (the first is line %ld)\n", lg->path,
                lg->malformed, lg->malformed > 1 ? "s" : "", lg->first_malformed);
    if (lg->nonfinite)
        bf_info("warning: %s: skipped %ld non-finite value%s (NaN, Inf or null)\n", lg->path,
                lg->nonfinite, lg->nonfinite > 1 ? "s" : "");
}

/* The steps every panel shows, so that panels line up: from 0 when the logs start near it. */
static void step_range(const bf_trainlog *logs, int n_logs, const key_list *keys, double *x0, double *x1) {
    *x0 = INFINITY;
    *x1 = -INFINITY;
    for (int k = 0; k < keys->n; k++)
        for (int l = 0; l < n_logs; l++) {
            const bf_series *s = bf_trainlog_find(&logs[l], keys->name[k]);
            for (int i = 0; s && i < s->n; i++) {
                *x0 = fmin(*x0, s->x[i]);
                *x1 = fmax(*x1, s->x[i]);
            }
        }
    if (!(*x1 >= *x0)) { *x0 = 0.0; *x1 = 1.0; }
    if (*x0 > 0 && *x0 <= 0.25 * *x1) *x0 = 0.0;
    if (*x1 <= *x0) { *x0 -= 1.0; *x1 += 1.0; }
}

static int render(const char *out_png, const bf_trainlog *logs, int n_logs, const key_list *keys,
                  const bf_plot_opts *o, long *skipped) {
    char names[MAX_LOGS][BF_PLOT_NAME_MAX];
    const char *paths[MAX_LOGS], *labels[MAX_LOGS];
    for (int l = 0; l < n_logs; l++) paths[l] = logs[l].path;
    bf_plot_legend_names(names, paths, n_logs);
    for (int l = 0; l < n_logs; l++) labels[l] = names[l];
    int cols = keys->n < o->cols ? keys->n : o->cols, rows = (keys->n + cols - 1) / cols;
    canvas c = {.w = cols * o->panel_w, .h = rows * o->panel_h};
    if ((int64_t)c.w * c.h > 200000000) {
        bf_set_error("%d panels of %dx%d make too large an image", keys->n, o->panel_w, o->panel_h);
        return -1;
    }
    c.px = bf_malloc((size_t)c.w * c.h * 3);
    memset(c.px, 255, (size_t)c.w * c.h * 3);
    double x0, x1;
    step_range(logs, n_logs, keys, &x0, &x1);
    for (int k = 0; k < keys->n; k++) {
        panel_data d = {.labels = labels, .n_logs = n_logs, .log_y = o->log_y, .x0 = x0, .x1 = x1};
        for (int l = 0; l < n_logs; l++) d.s[l] = bf_trainlog_find(&logs[l], keys->name[k]);
        c.cx0 = (k % cols) * o->panel_w;
        c.cy0 = (k / cols) * o->panel_h;
        c.cx1 = c.cx0 + o->panel_w;
        c.cy1 = c.cy0 + o->panel_h;
        draw_panel(&c, c.cx0, c.cy0, o->panel_w, o->panel_h, keys->name[k], &d);
        *skipped += d.skipped;
    }
    int rc = bf_write_png(out_png, c.px, c.h, c.w, 3);
    free(c.px);
    return rc;
}

int bf_plot_logs(const char *out_png, const char *const *logs, int n_logs, const bf_plot_opts *o,
                 bf_plot_stats *stats) {
    bf_plot_opts def;
    if (!o) { bf_plot_opts_default(&def); o = &def; }
    if (check_opts(o, n_logs)) return -1;
    bf_trainlog lg[MAX_LOGS];
    int n_read = 0, rc = -1;
    bf_plot_stats st = {0};
    key_list keys;
    for (; n_read < n_logs; n_read++) {
        if (bf_trainlog_read(&lg[n_read], logs[n_read])) goto done;
        warn_log(&lg[n_read]);
        st.records += lg[n_read].records;
        st.malformed += lg[n_read].malformed;
        st.skipped += lg[n_read].nonfinite;
    }
    if (o->keys && o->keys[0]) {
        if (parse_keys(&keys, o->keys, lg, n_logs)) goto done;
    } else {
        default_keys(&keys, lg, n_logs);
    }
    st.panels = keys.n;
    rc = render(out_png, lg, n_logs, &keys, o, &st.skipped);
done:
    for (int l = 0; l < n_read; l++) bf_trainlog_free(&lg[l]);
    if (stats) *stats = st;
    return rc;
}
