/* Finite-difference gradient checks; see gradcheck.h. */
#include "gradcheck.h"
#include "core.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

/* The finite differences call the forward thousands of times on tiny tensors; with a team of
 * threads per call that costs seconds on a loaded machine (spinning barriers), so they run on
 * one thread. The analytic backward keeps the caller's threads. */
static int serial_begin(void) {
#ifdef _OPENMP
    int n = omp_get_max_threads();
    omp_set_num_threads(1);
    return n;
#else
    return 0;
#endif
}
static void serial_end(int n) {
#ifdef _OPENMP
    if (n > 0) omp_set_num_threads(n);
#else
    (void)n;
#endif
}

static int verbose(void) {
    const char *v = getenv("BF_GC_VERBOSE");
    return v && v[0] && v[0] != '0';
}

static double default_h(void) {   /* BF_GC_H overrides the default step (calibration) */
    const char *v = getenv("BF_GC_H");
    double h = v ? atof(v) : 0.0;
    return h > 0 ? h : BF_GC_DEFAULT_H;
}

double bf_gc_dot(const float *a, const float *b, size_t n) {
    double s = 0.0;
    for (size_t i = 0; i < n; i++) s += (double)a[i] * (double)b[i];
    return s;
}

float *bf_gc_randn(uint64_t seed, size_t n, float mean, float std) {
    bf_rng rng;
    bf_rng_seed(&rng, seed);
    float *x = bf_malloc(n * sizeof *x);
    for (size_t i = 0; i < n; i++) x[i] = mean + std * bf_rng_normal(&rng);
    return x;
}

float *bf_gc_zeros(size_t n) { return bf_calloc(n, sizeof(float)); }

static void zero_grads(bf_gc_tensor *t, int nt) {
    for (int k = 0; k < nt; k++) memset(t[k].grad, 0, t[k].n * sizeof(float));
}

/* Central difference of the loss in entry x[i]; the actual float step is used. */
static double numeric_grad(const bf_gc_problem *p, float *x, size_t i, double hrel) {
    float x0 = x[i];
    double h = hrel * fmax(1.0, fabs((double)x0));
    float xp = (float)((double)x0 + h), xm = (float)((double)x0 - h);
    x[i] = xp;
    double lp = p->loss(p->ctx);
    x[i] = xm;
    double lm = p->loss(p->ctx);
    x[i] = x0;
    return (lp - lm) / ((double)xp - (double)xm);
}

/* Picks min(n, m) distinct indices into idx (partial Fisher-Yates); returns the count. */
static size_t pick_subset(size_t *idx, size_t n, size_t m, bf_rng *rng) {
    if (n <= m) {
        for (size_t i = 0; i < n; i++) idx[i] = i;
        return n;
    }
    size_t *all = bf_malloc(n * sizeof *all);
    for (size_t i = 0; i < n; i++) all[i] = i;
    for (size_t i = 0; i < m; i++) {
        size_t j = i + (size_t)(bf_rng_u64(rng) % (uint64_t)(n - i));
        size_t t = all[i]; all[i] = all[j]; all[j] = t;
        idx[i] = all[i];
    }
    free(all);
    return m;
}

int bf_gradcheck(const char *label, const bf_gc_problem *p, bf_gc_tensor *t, int nt) {
    double rtol = p->rtol > 0 ? p->rtol : 1e-2;
    double atol = p->atol > 0 ? p->atol : 1e-3;
    double hrel = p->h > 0 ? p->h : default_h();
    size_t maxe = p->max_entries > 0 ? (size_t)p->max_entries : 64;
    int failures = 0;

    /* 1-2: analytic gradient at the unperturbed point */
    (void)p->loss(p->ctx);
    zero_grads(t, nt);
    p->backward(p->ctx);
    float **g1 = bf_malloc((size_t)nt * sizeof *g1);
    for (int k = 0; k < nt; k++) {
        g1[k] = bf_malloc(t[k].n * sizeof(float));
        memcpy(g1[k], t[k].grad, t[k].n * sizeof(float));
    }

    /* 3: a second backward must add the same gradient again */
    if (!p->skip_accumulate_check) {
        p->backward(p->ctx);
        for (int k = 0; k < nt; k++) {
            size_t bad = 0, worst_i = 0;
            double worst = -1.0, scale = 0.0;
            /* adding into a non-zero buffer rounds differently from 2 x once: allow float
             * rounding at the scale of the partial sums (bounded via the largest entry) */
            for (size_t i = 0; i < t[k].n; i++) scale = fmax(scale, fabs((double)g1[k][i]));
            for (size_t i = 0; i < t[k].n; i++) {
                double want = 2.0 * (double)g1[k][i], got = (double)t[k].grad[i];
                double err = fabs(got - want);
                int ok = isfinite(got) && err <= 1e-6 + 1e-5 * fabs(want) + 1e-4 * scale;
                if (!ok) bad++;
                if (!ok && (err > worst || !isfinite(got))) {
                    worst = isfinite(got) ? err : INFINITY;
                    worst_i = i;
                }
            }
            if (bad) {
                failures++;
                if (!p->quiet)
                    fprintf(stderr,
                            "    gradcheck %s: d%s does not accumulate: %zu/%zu entries differ "
                            "from twice one backward; worst [%zu]: once %.7g, twice %.7g "
                            "(want %.7g)\n",
                            label, t[k].name, bad, t[k].n, worst_i, (double)g1[k][worst_i],
                            (double)t[k].grad[worst_i], 2.0 * (double)g1[k][worst_i]);
            }
        }
    }

    /* 4: finite differences on a random subset of each tensor */
    int nthreads = serial_begin();
    bf_rng rng;
    bf_rng_seed(&rng, p->seed ^ 0x6772616463686bull);
    for (int k = 0; k < nt; k++) {
        size_t *idx = bf_malloc((maxe < t[k].n ? maxe : t[k].n) * sizeof *idx + 1);
        size_t m = pick_subset(idx, t[k].n, maxe, &rng);
        double *num = bf_malloc(m * sizeof *num + 1), ss = 0.0;
        for (size_t j = 0; j < m; j++) {
            num[j] = numeric_grad(p, t[k].x, idx[j], hrel);
            if (isfinite(num[j])) ss += num[j] * num[j];
        }
        /* atol in units of the gradient's own scale (rms of the numeric gradient, at least 1):
         * the rounding noise of a float forward grows with the number of outputs an entry
         * feeds, and so does the typical gradient */
        double atol_k = atol * fmax(1.0, m ? sqrt(ss / (double)m) : 0.0);
        size_t bad = 0, worst_i = 0;
        double worst_ratio = -1.0, worst_a = 0, worst_n = 0;
        for (size_t j = 0; j < m; j++) {
            size_t i = idx[j];
            double a = (double)g1[k][i], n = num[j];
            double err = fabs(a - n), tol = atol_k + rtol * fmax(fabs(a), fabs(n));
            int ok = isfinite(a) && isfinite(n) && err <= tol;
            double ratio = (isfinite(a) && isfinite(n)) ? err / tol : INFINITY;
            if (!ok) bad++;
            if (ratio > worst_ratio) { worst_ratio = ratio; worst_i = i; worst_a = a; worst_n = n; }
        }
        free(num);
        if ((bad && !p->quiet) || verbose()) {
            double rel = fabs(worst_a - worst_n) / fmax(fmax(fabs(worst_a), fabs(worst_n)), 1e-30);
            fprintf(stderr,
                    "    gradcheck %s: d%s %s: %zu/%zu checked entries out of tolerance; worst "
                    "[%zu]: analytic %.7g, numeric %.7g, abs err %.3g, rel err %.3g "
                    "(atol %.2g, rtol %.1g; err/tol %.3g)\n",
                    label, t[k].name, bad ? "FAILED" : "ok", bad, m, worst_i, worst_a, worst_n,
                    fabs(worst_a - worst_n), rel, atol_k, rtol, worst_ratio);
        }
        if (bad) failures++;
        free(idx);
    }

    serial_end(nthreads);

    /* leave one backward's worth of gradient in the buffers */
    for (int k = 0; k < nt; k++) {
        memcpy(t[k].grad, g1[k], t[k].n * sizeof(float));
        free(g1[k]);
    }
    free(g1);
    (void)p->loss(p->ctx);   /* saved activations back at the unperturbed point */
    return failures;
}

int bf_gradcheck_direction(const char *label, const bf_gc_problem *p, bf_gc_tensor *t, int nt) {
    double rtol = p->rtol > 0 ? p->rtol : 1e-2;
    double atol = p->atol > 0 ? p->atol : 1e-3;
    double h = p->h > 0 ? p->h : default_h();
    bf_rng rng;
    bf_rng_seed(&rng, p->seed ^ 0x646972656374ull);

    (void)p->loss(p->ctx);
    zero_grads(t, nt);
    p->backward(p->ctx);

    float **x0 = bf_malloc((size_t)nt * sizeof *x0), **v = bf_malloc((size_t)nt * sizeof *v);
    double analytic = 0.0;
    for (int k = 0; k < nt; k++) {
        x0[k] = bf_malloc(t[k].n * sizeof(float));
        v[k] = bf_malloc(t[k].n * sizeof(float));
        memcpy(x0[k], t[k].x, t[k].n * sizeof(float));
        for (size_t i = 0; i < t[k].n; i++) v[k][i] = bf_rng_normal(&rng);
    }
    /* use the actual float steps: d = (x+ - x-) per entry */
    int nthreads = serial_begin();
    double lp, lm;
    for (int k = 0; k < nt; k++)
        for (size_t i = 0; i < t[k].n; i++) t[k].x[i] = (float)((double)x0[k][i] + h * v[k][i]);
    lp = p->loss(p->ctx);
    for (int k = 0; k < nt; k++)
        for (size_t i = 0; i < t[k].n; i++) {
            float xp = t[k].x[i];
            float xm = (float)((double)x0[k][i] - h * v[k][i]);
            t[k].x[i] = xm;
            /* directional derivative along the realised step (xp - xm) / 2h */
            analytic += (double)t[k].grad[i] * ((double)xp - (double)xm) / (2.0 * h);
        }
    lm = p->loss(p->ctx);
    serial_end(nthreads);
    double numeric = (lp - lm) / (2.0 * h);
    for (int k = 0; k < nt; k++) {
        memcpy(t[k].x, x0[k], t[k].n * sizeof(float));
        free(x0[k]);
        free(v[k]);
    }
    free(x0);
    free(v);
    (void)p->loss(p->ctx);

    double err = fabs(analytic - numeric), tol = atol + rtol * fmax(fabs(analytic), fabs(numeric));
    int ok = isfinite(analytic) && isfinite(numeric) && err <= tol;
    if ((!ok && !p->quiet) || verbose())
        fprintf(stderr,
                "    gradcheck %s: directional derivative %s: analytic %.7g, numeric %.7g, "
                "abs err %.3g, rel err %.3g (err/tol %.3g)\n",
                label, ok ? "ok" : "FAILED", analytic, numeric, err,
                err / fmax(fmax(fabs(analytic), fabs(numeric)), 1e-30), err / tol);
    return ok ? 0 : 1;
}

/* got (float) against want (double): |got - want| <= atol + rtol |want|, both finite.
 * Prints the worst entry on failure; returns 1 on failure, 0 otherwise. */
int bf_gc_close(const char *what, const float *got, const double *want, size_t n,
                    double atol, double rtol) {
    size_t bad = 0, wi = 0;
    double worst = -1.0;
    for (size_t i = 0; i < n; i++) {
        double g = got[i], err = fabs(g - want[i]), tol = atol + rtol * fabs(want[i]);
        int ok = isfinite(g) && err <= tol;
        double r = isfinite(g) ? err / tol : INFINITY;
        if (!ok) bad++;
        if (r > worst) { worst = r; wi = i; }
    }
    if (bad)
        fprintf(stderr, "    %s: %zu/%zu entries off; worst [%zu]: got %.9g, want %.9g\n", what,
                bad, n, wi, (double)got[wi], want[wi]);
    return bad ? 1 : 0;
}

uint64_t bf_gc_seed_shift(void) {
    const char *v = getenv("BF_TEST_SEED");
    return v ? strtoull(v, NULL, 10) * 100003ull : 0;
}

float *bf_gc_randn_shifted(uint64_t seed, size_t n, float std) {
    return bf_gc_randn(seed + bf_gc_seed_shift(), n, 0.0f, std);
}

float *bf_gc_nans(size_t n) {
    float *x = bf_malloc(n * sizeof *x);
    for (size_t i = 0; i < n; i++) x[i] = NAN;
    return x;
}

/* Kernels run serially below 32768 elements of work (src/fastmath.h BF_PAR_MIN). */
int bf_gc_entries_for(size_t work, int small) { return work >= 32768 ? 12 : small; }

bf_gc_problem bf_gc_case_problem(double (*loss)(void *), void (*backward)(void *), void *ctx,
                                 int case_index, size_t work, int small) {
    bf_gc_problem p = {.loss = loss, .backward = backward, .ctx = ctx,
                       .seed = (uint64_t)case_index + bf_gc_seed_shift(),
                       .max_entries = bf_gc_entries_for(work, small)};
    return p;
}

const char *bf_gc_label(const char *fmt, ...) {
    static char bufs[8][160];
    static int next;
    char *b = bufs[next];
    next = (next + 1) % 8;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(b, sizeof bufs[0], fmt, ap);
    va_end(ap);
    return b;
}

int bf_gc_close_f(const char *what, const float *got, const float *want, size_t n, double atol,
                  double rtol) {
    double *w = bf_malloc(n * sizeof *w + 1);
    for (size_t i = 0; i < n; i++) w[i] = want[i];
    int r = bf_gc_close(what, got, w, n, atol, rtol);
    free(w);
    return r;
}

int bf_gc_same_floats(const char *what, const float *a, const float *b, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (memcmp(&a[i], &b[i], sizeof(float)) != 0) {
            fprintf(stderr, "    %s: entry %zu differs: %.9g vs %.9g\n", what, i, (double)a[i],
                    (double)b[i]);
            return 1;
        }
    return 0;
}

int bf_gc_same_params(const char *what, const float *got, size_t n_got, const float *want,
                      size_t n_want) {
    if (n_got != n_want) {
        fprintf(stderr, "    %s: %zu parameters, want %zu\n", what, n_got, n_want);
        return 1;
    }
    return bf_gc_same_floats(what, got, want, n_got);
}

double bf_gc_max_abs_diff(const float *a, const float *b, size_t n) {
    double m = 0.0;
    for (size_t i = 0; i < n; i++) m = fmax(m, fabs((double)a[i] - b[i]));
    return m;
}

double bf_gc_pointwise_loss(void *ctx) {
    bf_gc_pointwise *x = ctx;
    x->forward(x->out, x->inp, x->n);
    return bf_gc_dot(x->out, x->R, x->n);
}

void bf_gc_pointwise_backward(void *ctx) {
    bf_gc_pointwise *x = ctx;
    x->backward(x->dinp, x->from_out ? x->out : x->inp, x->R, x->n);
}

int bf_gc_pointwise_check(const char *name, void (*forward)(float *, const float *, size_t),
                          void (*backward)(float *, const float *, const float *, size_t),
                          size_t n, uint64_t seed, float std, const float *special,
                          size_t n_special, int case_index) {
    bf_gc_pointwise x = {n, bf_gc_randn_shifted(seed, n, std), bf_gc_zeros(n),
                         bf_gc_randn_shifted(seed + 1, n, 1.0f), bf_gc_zeros(n), forward, backward, 0};
    memcpy(x.inp, special, n_special * sizeof(float));
    bf_gc_tensor t[] = {{"inp", x.inp, x.dinp, n}};
    bf_gc_problem p = bf_gc_case_problem(bf_gc_pointwise_loss, bf_gc_pointwise_backward, &x,
                                         case_index, n, 1000);
    int fails = bf_gradcheck(bf_gc_label("%s n=%zu", name, n), &p, t, 1);
    free(x.inp); free(x.out); free(x.R); free(x.dinp);
    return fails;
}
