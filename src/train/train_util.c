/* Shared trainer pieces; see train_util.h. */
#include "train_util.h"
#include "ckpt.h"
#include "plot.h"
#include "core.h"
#include "dist.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <omp.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

static void shuffle(int *perm, int n, uint64_t seed, uint64_t salt, long epoch) {
    bf_rng r;
    bf_rng_seed(&r, seed * 1000003ull + (uint64_t)epoch + salt);
    for (int i = 0; i < n; i++) perm[i] = i;
    for (int i = n - 1; i > 0; i--) {
        int j = (int)bf_rng_below(&r, (uint32_t)(i + 1)), t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
}

void bf_data_order_init(bf_data_order *d, int n, uint64_t seed, uint64_t salt) {
    d->perm = bf_malloc(sizeof(int) * (size_t)n);
    d->n = n;
    d->epoch = -1;
    d->seed = seed;
    d->salt = salt;
}

void bf_data_order_free(bf_data_order *d) {
    free(d->perm);
    d->perm = NULL;
}

void bf_data_order_batch(bf_data_order *d, int *idx, long step, int B) {
    for (int b = 0; b < B; b++) {
        long k = step * (long)B + b, epoch = k / d->n;
        if (epoch != d->epoch) { shuffle(d->perm, d->n, d->seed, d->salt, epoch); d->epoch = epoch; }
        idx[b] = d->perm[k % d->n];
    }
}

int bf_path_join(char *buf, size_t n, const char *dir, const char *name) {
    if ((size_t)snprintf(buf, n, "%s/%s", dir, name) >= n) {
        bf_set_error("path too long: %s/%s", dir, name);
        return -1;
    }
    return 0;
}

FILE *bf_open_log(const char *dir, long keep_upto_step) {
    char path[4096];
    if (bf_path_join(path, sizeof path, dir, "log.jsonl")) return NULL;
    FILE *in = fopen(path, "r");
    if (in) {   /* the kept records replace the log atomically: a kill here loses nothing */
        char *line = NULL, *kept = NULL;
        size_t lcap = 0, n = 0, cap = 0;
        ssize_t len;
        /* Records are read as `biflow plot` reads them (a NaN value keeps its record), lines
         * of any length; a kept last line without its newline gets one, so that the next
         * record does not run into it. Lines that are not records (a line cut by a kill) go. */
        while ((len = getline(&line, &lcap, in)) > 0) {
            double step;
            if (!bf_log_line_step(line, (size_t)len, &step) || !(step <= keep_upto_step)) continue;
            int newline = line[len - 1] == '\n';
            if (n + (size_t)len + 1 > cap) kept = bf_realloc(kept, cap = 2 * (n + (size_t)len + 1));
            memcpy(kept + n, line, (size_t)len);
            n += (size_t)len;
            if (!newline) kept[n++] = '\n';
        }
        int err = ferror(in);
        free(line);
        fclose(in);
        if (err) {
            bf_set_error("cannot read '%s'", path);
            free(kept);
            return NULL;
        }
        int rc = bf_write_file_atomic(path, kept ? kept : "", n);
        free(kept);
        if (rc) return NULL;
    }
    FILE *out = fopen(path, "a");
    if (!out) bf_set_error("cannot open '%s' for appending: %s", path, strerror(errno));
    return out;
}

void bf_fmt_duration(char *buf, size_t n, double s) {
    if (!(s >= 0) || s > 1e7) { snprintf(buf, n, "?"); return; }
    int h = (int)(s / 3600), m = (int)(s / 60) % 60, sec = (int)s % 60;
    if (h) snprintf(buf, n, "%dh%02dm", h, m);
    else snprintf(buf, n, "%dm%02ds", m, sec);
}

/* Every file a trainer writes into its run folder: any of them means the folder holds a run. */
static const char *const RUN_FILES[] = {
    "train_state.safetensors", "flow.safetensors", "flow_ema.safetensors",
    "reverse_state.safetensors", "reverse.safetensors", "reverse_ema.safetensors",
    "features.safetensors", "log.jsonl",
};
#define N_RUN_FILES ((int)(sizeof RUN_FILES / sizeof RUN_FILES[0]))

/* mkdir -p: the folder and any missing parents (a run folder may be runs/today/f). */
static int make_dirs(const char *dir) {
    char buf[4096];
    if (snprintf(buf, sizeof buf, "%s", dir) >= (int)sizeof buf) { errno = ENAMETOOLONG; return -1; }
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        if (mkdir(buf, 0755) != 0 && errno != EEXIST) return -1;
        *p = '/';
    }
    return mkdir(buf, 0755) != 0 && errno != EEXIST ? -1 : 0;
}

static int check_folder(const char *dir, int resume) {
    struct stat sb;
    if (stat(dir, &sb) == 0) {
        if (S_ISDIR(sb.st_mode)) return 0;
        bf_set_error("'%s' is a file, not a run folder: give --out a folder (new or holding a run)", dir);
        return -1;
    }
    if (resume) {
        bf_set_error("cannot resume: the run folder '%s' does not exist (%s)", dir, strerror(errno));
        return -1;
    }
    if (make_dirs(dir)) {
        bf_set_error("cannot create run folder '%s': %s", dir, strerror(errno));
        return -1;
    }
    return 0;
}

/* A new run in dir: refused where one is (unless overwrite, which deletes its files). */
static int claim_for_new_run(const char *dir, int overwrite) {
    char path[4096];
    const char *held = NULL;
    int resumable = 0;
    for (int i = 0; i < N_RUN_FILES; i++) {
        if (bf_path_join(path, sizeof path, dir, RUN_FILES[i])) return -1;
        if (access(path, F_OK) != 0) continue;
        held = held ? held : RUN_FILES[i];
        resumable |= strstr(RUN_FILES[i], "_state.") != NULL;
        if (overwrite && unlink(path) != 0) {
            bf_set_error("--overwrite: cannot delete '%s': %s", path, strerror(errno));
            return -1;
        }
    }
    if (!held || overwrite) return 0;
    bf_set_error("'%s' already holds a run (%s): %s, or --overwrite to delete it and start a new "
                 "one", dir, held, resumable ? "give --resume to continue it"
                                             : "it has no resume state; give another --out");
    return -1;
}

int bf_run_dir_open(bf_dir_lock *lock, const char *dir, int resume, int overwrite) {
    lock->fd = -1;
    if (resume && overwrite) {
        bf_set_error("--resume continues the run in '%s' and --overwrite deletes it: give one", dir);
        return -1;
    }
    if (check_folder(dir, resume) || bf_dir_lock_take(lock, dir)) return -1;
    int stale = bf_remove_stale_tmp(dir);
    if (stale) bf_info("removed %d temporary file%s left in %s by a killed process\n", stale,
                       stale > 1 ? "s" : "", dir);
    if (!resume && claim_for_new_run(dir, overwrite)) {
        bf_dir_unlock(lock);
        return -1;
    }
    return 0;
}

int bf_check_ranges(const bf_range *r, int n) {
    for (int i = 0; i < n; i++) {
        double v = r[i].v;
        int below = r[i].lo_open ? !(v > r[i].lo) : !(v >= r[i].lo);
        int above = r[i].hi_open ? !(v < r[i].hi) : !(v <= r[i].hi);
        if (isfinite(v) && !below && !above) continue;
        char hi[32];
        if (isinf(r[i].hi)) snprintf(hi, sizeof hi, "inf");
        else snprintf(hi, sizeof hi, "%.10g", r[i].hi);
        bf_set_error("%s %g is out of range: it must be a finite number in %c%.10g, %s%c", r[i].name,
                     v, r[i].lo_open ? '(' : '[', r[i].lo, hi, r[i].hi_open ? ')' : ']');
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------------ resumed runs */
/* A value as text, as messages and comparisons see it. */
static void run_opt_text(char *buf, size_t n, const bf_run_opt *o) {
    switch (o->kind) {
    case BF_RUN_INT: snprintf(buf, n, "%d", *(const int *)o->value); break;
    case BF_RUN_U64: snprintf(buf, n, "%llu", (unsigned long long)*(const uint64_t *)o->value); break;
    case BF_RUN_FLOAT: snprintf(buf, n, "%g", (double)*(const float *)o->value); break;
    case BF_RUN_STR: snprintf(buf, n, "%s", *(const char *const *)o->value); break;
    case BF_RUN_NAME: {
        int k = *(const int *)o->value, m = 0;
        while (o->names[m]) m++;
        snprintf(buf, n, "%s", k >= 0 && k < m ? o->names[k] : "?");
        break;
    }
    }
}

/* Parses the recorded text v into tmp, a value of o's kind. */
static int run_opt_parse(bf_run_opt *o, const char *v, void *tmp) {
    char *end = NULL;
    errno = 0;
    switch (o->kind) {
    case BF_RUN_INT: { long x = strtol(v, &end, 10); *(int *)tmp = (int)x; return errno || *end || x < INT_MIN || x > INT_MAX ? -1 : 0; }
    case BF_RUN_U64: *(uint64_t *)tmp = strtoull(v, &end, 10); return errno || *end || v[0] == '-' ? -1 : 0;
    case BF_RUN_FLOAT: *(float *)tmp = strtof(v, &end); return *end || end == v ? -1 : 0;
    case BF_RUN_STR: *(const char **)tmp = v; return 0;
    case BF_RUN_NAME:
        for (int k = 0; o->names[k]; k++)
            if (!strcmp(v, o->names[k]) || (v[0] == '0' + k && !v[1])) { *(int *)tmp = k; return 0; }
        return -1;
    }
    return -1;
}

static void run_opt_adopt(bf_run_opt *o, const void *tmp) {
    switch (o->kind) {
    case BF_RUN_INT: case BF_RUN_NAME: *(int *)o->value = *(const int *)tmp; break;
    case BF_RUN_U64: *(uint64_t *)o->value = *(const uint64_t *)tmp; break;
    case BF_RUN_FLOAT: *(float *)o->value = *(const float *)tmp; break;
    case BF_RUN_STR: *(const char **)o->value = bf_strdup(*(const char *const *)tmp); break;
    }
}

static int reconcile_one(bf_run_opt *o, const bf_safetensors *st, const char *path) {
    const char *v = bf_st_meta(st, o->key);
    if (!v) return 0;
    union { int i; uint64_t u; float f; const char *s; } tmp = {0};
    if (run_opt_parse(o, v, &tmp)) {
        bf_set_error("%s: metadata '%s' = '%s' is not a value of %s", path, o->key, v, o->option);
        return -1;
    }
    char want[512], have[512];
    bf_run_opt rec = *o;
    rec.value = &tmp;
    run_opt_text(want, sizeof want, o);
    run_opt_text(have, sizeof have, &rec);
    if (!o->given) run_opt_adopt(o, &tmp);
    else if (strcmp(want, have)) {
        bf_set_error("%s %s conflicts with the run being resumed, whose checkpoint %s records "
                     "%s = %s: a resumed run keeps the options that define it (omit %s to "
                     "continue with %s, or start a new run)", o->option, want, path, o->key, have,
                     o->option, have);
        return -1;
    }
    return 0;
}

int bf_run_opts_reconcile(bf_run_opt *opts, int n, const char *path, long *step) {
    bf_safetensors st;
    if (bf_st_load(&st, path)) return -2;
    int rc = 0;
    for (int i = 0; i < n && !rc; i++) rc = reconcile_one(&opts[i], &st, path);
    const char *s = bf_st_meta(&st, "step");
    if (step) *step = s ? strtol(s, NULL, 10) : -1;
    bf_st_free(&st);
    return rc;
}

/* ------------------------------------------------------------------ divergence */
void bf_divergence_init(bf_divergence *d, long saved_step, const char *hint) {
    memset(d, 0, sizeof *d);
    d->saved_step = saved_step;
    d->hint = hint;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* 1 when loss lies far above the recent losses; *median receives theirs. */
static int loss_jumped(const bf_divergence *d, double loss, double *median) {
    if (d->n < 1) return 0;
    double v[BF_DIVERGE_WINDOW];
    memcpy(v, d->loss, sizeof(double) * (size_t)d->n);
    qsort(v, (size_t)d->n, sizeof v[0], cmp_double);
    double med = d->n % 2 ? v[d->n / 2] : 0.5 * (v[d->n / 2 - 1] + v[d->n / 2]);
    double scale = fmax(fmax(fabs(med), v[d->n - 1] - v[0]), 1e-3);
    *median = med;
    return loss > med + 100.0 * scale;
}

int bf_divergence_check(bf_divergence *d, long step, double loss, double gnorm) {
    char what[256], kept[96];
    double med = 0.0;
    d->zero_run = gnorm == 0.0 ? d->zero_run + 1 : 0;
    if (!isfinite(loss) || !isfinite(gnorm))
        snprintf(what, sizeof what, "%s is %g and the gradient norm %g",
                 d->quantity ? d->quantity : "the loss", loss, gnorm);
    else if (loss_jumped(d, loss, &med))
        snprintf(what, sizeof what, "%s %g jumped far above its recent range (median %g over "
                 "the last %d steps)", d->quantity ? d->quantity : "the loss", loss, med, d->n);
    else if (d->zero_run >= BF_DIVERGE_ZERO_STEPS)
        snprintf(what, sizeof what, "the gradient norm has been exactly 0 for %d steps (the model "
                 "no longer learns)", d->zero_run);
    else {
        d->loss[d->next] = loss;
        d->next = (d->next + 1) % BF_DIVERGE_WINDOW;
        if (d->n < BF_DIVERGE_WINDOW) d->n++;
        return 0;
    }
    if (d->saved_step > 0) snprintf(kept, sizeof kept, "the last checkpoint, step %ld, is kept", d->saved_step);
    else snprintf(kept, sizeof kept, "no checkpoint had been written");
    bf_set_error("step %ld: %s: training diverged. The update was not applied and nothing was "
                 "written from this state (%s); try %s", step, what, kept,
                 d->hint ? d->hint : "a lower --lr");
    return -1;
}

int bf_alloc_train_buffers(size_t n, const float *params, float **grads, float **m, float **v,
                           float **ema) {
    const char *what = "the optimiser's state (gradients, moments, EMA)";
    if (!(*grads = bf_try_calloc(n, sizeof(float), what)) || !(*m = bf_try_calloc(n, sizeof(float), what)) ||
        !(*v = bf_try_calloc(n, sizeof(float), what)) || !(*ema = bf_try_malloc(sizeof(float) * n, what)))
        return -1;
    memcpy(*ema, params, sizeof(float) * n);
    return 0;
}

unsigned char *bf_decay_mask(const bf_param_info *info, int n_info, size_t num_params) {
    unsigned char *m = bf_try_calloc(num_params, 1, "the weight-decay mask");
    if (!m) return NULL;
    for (int i = 0; i < n_info; i++)
        if (!info[i].no_decay) memset(m + info[i].offset, 1, info[i].numel);
    return m;
}

static volatile sig_atomic_t stop_flag;
static void (*old_int)(int), (*old_term)(int);
static void on_signal(int sig) { (void)sig; stop_flag = 1; }

void bf_stop_signals_install(void) {
    stop_flag = 0;
    old_int = signal(SIGINT, on_signal);
    old_term = signal(SIGTERM, on_signal);
}

void bf_stop_signals_restore(void) {
    signal(SIGINT, old_int);
    signal(SIGTERM, old_term);
}

int bf_stop_requested(void) { return stop_flag; }

int bf_train_state_save(const bf_train_state *s, const char *path, const char *format,
                        const char *meta_json) {
    bf_st_writer *w = bf_st_writer_new();
    int64_t n = (int64_t)s->n, one = 1, step = s->step;
    bf_meta_add_json(w, meta_json);
    bf_st_writer_meta(w, "format", format);
    bf_st_writer_add(w, "params", BF_DT_F32, 1, &n, s->params);
    bf_st_writer_add(w, "ema", BF_DT_F32, 1, &n, s->ema);
    bf_st_writer_add(w, "adam_m", BF_DT_F32, 1, &n, s->m);
    bf_st_writer_add(w, "adam_v", BF_DT_F32, 1, &n, s->v);
    bf_st_writer_add(w, "step", BF_DT_I64, 1, &one, &step);
    int rc = bf_st_writer_save(w, path);
    bf_st_writer_free(w);
    return rc;
}

int bf_train_state_load(bf_train_state *s, const char *path) {
    bf_safetensors st;
    if (bf_st_load(&st, path)) return -1;
    int64_t n = (int64_t)s->n, one = 1;
    static const char *const names[4] = {"params", "ema", "adam_m", "adam_v"};
    float *dst[4] = {s->params, s->ema, s->m, s->v};
    const bf_tensor_view *t[4] = {0}, *ts = NULL;
    int ok = 1;
    for (int i = 0; i < 4 && ok; i++) ok = (t[i] = bf_st_expect(&st, names[i], BF_DT_F32, 1, &n)) != NULL;
    if (ok) ok = (ts = bf_st_expect(&st, "step", BF_DT_I64, 1, &one)) != NULL;
    int64_t step = -1;
    if (ok) {
        for (int i = 0; i < 4; i++) memcpy(dst[i], t[i]->data, sizeof(float) * s->n);
        memcpy(&step, ts->data, 8);
    }
    bf_st_free(&st);
    if (!ok) return -1;
    if (step < 0) { bf_set_error("%s: negative step", path); return -1; }
    s->step = (long)step;
    return 0;
}

int bf_check_steps_extend(int steps, long step, const char *dir) {
    if (steps >= step) return 0;
    bf_set_error("--steps %d is below the step %ld the run in %s has reached: a resumed run "
                 "can only be extended", steps, step, dir);
    return -1;
}

int bf_check_resume(bf_run_opt *opts, int n, const char *dir, const char *file, int steps, long step) {
    char path[4096];
    if (bf_path_join(path, sizeof path, dir, file) || bf_run_opts_reconcile(opts, n, path, NULL) != 0)
        return -1;
    return bf_check_steps_extend(steps, step, dir);
}

/* ------------------------------------------------------------------ data-parallel runs */
static uint64_t fnv1a(uint64_t h, const void *data, size_t n) {
    const unsigned char *p = data;
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 1099511628211ull;
    return h;
}

int bf_train_check_same(const bf_train_state *s, const bf_dataset *ds) {
    if (bf_dist_size() == 1) return 0;
    uint64_t h = 14695981039346656037ull;
    const float *buf[4] = {s->params, s->ema, s->m, s->v};
    for (int i = 0; i < 4; i++)
        if (buf[i]) h = fnv1a(h, buf[i], sizeof(float) * s->n);
    h = fnv1a(h, &s->step, sizeof s->step);
    if (bf_dist_check_same(h, "the weights and optimiser state (--out, --flow, --init)")) return -1;
    uint64_t d = fnv1a(14695981039346656037ull, ds->pixels, (size_t)ds->n * ds->c * ds->h * ds->w);
    if (ds->labels) d = fnv1a(d, ds->labels, sizeof *ds->labels * (size_t)ds->n);
    return bf_dist_check_same(d, "the training images (--data)");
}

void bf_train_layout(char *buf, size_t n, const bf_shard_plan *p) {
    if (p->nranks == 1) snprintf(buf, n, "%d threads", omp_get_max_threads());
    else snprintf(buf, n, "%d processes x %d thread%s (%d shards)", p->nranks, omp_get_max_threads(),
                  omp_get_max_threads() == 1 ? "" : "s", p->S);
}
