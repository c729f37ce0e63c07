/* Finite-difference gradient checks, shared by the kernel tests and the tests of whole models.
 *
 * A problem is a scalar loss L(x_1, ..., x_k) of some float tensors, evaluated by a forward
 * pass in float and accumulated in double (typically L = sum(out * R) for a fixed random R,
 * so that R is the dout handed to the backward), plus a backward that ACCUMULATES dL/dx_i
 * into each tensor's gradient buffer.
 *
 * bf_gradcheck():
 *   1. runs loss() once at the unperturbed point (so saved activations are current),
 *   2. zeroes every gradient buffer, runs backward(), keeps a copy (the analytic gradient),
 *   3. runs backward() again into the same buffers and checks that every gradient doubled
 *      (the backward accumulates instead of overwriting or zeroing), to float rounding:
 *      |twice - 2 once| <= 1e-6 + 1e-5 |2 once| + 1e-4 max|once|,
 *   4. for a random subset of up to max_entries entries of each tensor, compares the
 *      analytic gradient with the central difference (L(x+h) - L(x-h)) / (x+h - (x-h)),
 *      with |a - n| <= atol * max(1, rms(n)) + rtol * max(|a|, |n|), rms(n) over the checked
 *      entries of the tensor: the rounding noise of a float forward grows with the number of
 *      outputs one entry feeds, and so does the typical size of its gradient.
 * It restores every tensor and leaves the analytic gradient (one backward) in the buffers.
 * On failure it prints, per failing tensor, the worst entry and its relative error, and
 * returns the number of failing tensors (0: all good). BF_GC_VERBOSE=1 prints the worst
 * entry of every tensor, also on success (for calibrating tolerances); BF_GC_H overrides the
 * default step.
 *
 * Step: the forward runs in float, so the central difference carries a rounding error of
 * about eps_f |L| / h next to a truncation error of about h^2 |d3L/dx3|; the default relative
 * step 3e-3 (~ eps_f^(1/3)) balances the two. Calibrated on the kernel tests over 300 random
 * input sets: worst err/tol 0.67 at h = 3e-3, against 1.8 at 1e-3 (rounding) and 1.8 at
 * 1e-2 (truncation); wrong gradients (factor 2, missing term, wrong index) land at err/tol
 * 40 and more.
 *
 * The finite differences run on one OpenMP thread (thousands of tiny forwards: thread teams
 * with spinning barriers cost seconds on a loaded machine); the backward keeps the caller's. */
#ifndef BF_GRADCHECK_H
#define BF_GRADCHECK_H

#include <stddef.h>
#include <stdint.h>

#define BF_GC_DEFAULT_H 3e-3

typedef struct {
    const char *name;
    float *x;            /* values, perturbed in place during the check and restored */
    float *grad;         /* n floats where backward() accumulates dL/dx */
    size_t n;
} bf_gc_tensor;

typedef struct {
    double (*loss)(void *ctx);      /* forward at the current values; returns L */
    void (*backward)(void *ctx);    /* accumulates dL/dx into every tensor's grad */
    void *ctx;
    double rtol;                    /* 0: 1e-2 */
    double atol;                    /* 0: 1e-3 */
    double h;                       /* step relative to max(|x|, 1); 0: BF_GC_DEFAULT_H */
    int max_entries;                /* entries checked per tensor; 0: 64 */
    uint64_t seed;                  /* picks the subset of entries */
    int skip_accumulate_check;      /* 1: skip step 3 */
    int quiet;                      /* 1: print nothing (tests of the checker itself) */
} bf_gc_problem;

/* Returns the number of failing tensors (bad gradient, not accumulating, or non-finite). */
int bf_gradcheck(const char *label, const bf_gc_problem *p, bf_gc_tensor *tensors, int n_tensors);

/* Directional check for many parameters at once (whole models): with a random direction v of
 * unit-variance entries over all tensors, compares sum_i g_i . v_i with the central difference
 * (L(x + h v) - L(x - h v)) / 2h, h = p->h (absolute, every entry moves by about h: pick it
 * well below the parameters' scale; 0: BF_GC_DEFAULT_H), using the same tolerance rule on the
 * two scalars. One random projection can miss an error that happens to be orthogonal to v;
 * pair it with bf_gradcheck on a few tensors. Does not run the accumulate check.
 * Returns 0 on success, 1 on failure. */
int bf_gradcheck_direction(const char *label, const bf_gc_problem *p, bf_gc_tensor *tensors,
                           int n_tensors);

/* got (float) against want (double): |got - want| <= atol + rtol |want|, both finite.
 * Prints the worst entry on failure; returns 1 on failure, 0 otherwise. */
int bf_gc_close(const char *what, const float *got, const double *want, size_t n, double atol,
                double rtol);

/* An elementwise activation under a gradient check, L = <forward(inp), R>: the ctx of
 * bf_gc_pointwise_loss and bf_gc_pointwise_backward. backward accumulates dinp from dout and
 * the activation's input (GELU, SiLU), or its output with from_out (ReLU). */
typedef struct {
    size_t n;
    float *inp, *out, *R, *dinp;
    void (*forward)(float *out, const float *inp, size_t n);
    void (*backward)(float *dinp, const float *in_or_out, const float *dout, size_t n);
    int from_out;
} bf_gc_pointwise;
double bf_gc_pointwise_loss(void *ctx);
void bf_gc_pointwise_backward(void *ctx);
/* The gradient check of such an activation on n inputs: inp N(0, std) from seed, R N(0, 1)
 * from seed + 1 (both shifted by bf_gc_seed_shift), the first n_special inputs replaced by
 * special[]; bf_gc_entries_for(n, 1000) entries picked by case_index + bf_gc_seed_shift(),
 * under the label "<name> n=<n>". Returns bf_gradcheck's count. */
int bf_gc_pointwise_check(const char *name, void (*forward)(float *, const float *, size_t),
                          void (*backward)(float *, const float *, const float *, size_t),
                          size_t n, uint64_t seed, float std, const float *special,
                          size_t n_special, int case_index);

/* Helpers for building problems. */
double bf_gc_dot(const float *a, const float *b, size_t n);        /* sum a*b in double */
float *bf_gc_randn(uint64_t seed, size_t n, float mean, float std); /* malloc'ed */
float *bf_gc_zeros(size_t n);                                        /* calloc'ed */
double bf_gc_max_abs_diff(const float *a, const float *b, size_t n);  /* max |a - b| */

/* Seeds and buffers shared by the kernel and model tests. BF_TEST_SEED shifts every seed:
 * the same tests on other random inputs. */
uint64_t bf_gc_seed_shift(void);
/* bf_gc_randn with mean 0 and the seed shifted */
float *bf_gc_randn_shifted(uint64_t seed, size_t n, float std);
/* n NaNs: outputs must be overwritten, not added to */
float *bf_gc_nans(size_t n);
/* Entries per tensor given finite differences: few on the large (threaded) cases. */
int bf_gc_entries_for(size_t work, int small);
/* The problem of case case_index of a kernel's table of cases: the subset of entries seeded
 * by case_index + bf_gc_seed_shift(), bf_gc_entries_for(work, small) entries per tensor, the
 * default tolerances and step. */
bf_gc_problem bf_gc_case_problem(double (*loss)(void *), void (*backward)(void *), void *ctx,
                                 int case_index, size_t work, int small);
/* A what or label made by printf: one of 8 rotating buffers (valid for the next 7 calls). */
const char *bf_gc_label(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* got against want, both float: bf_gc_close with want widened to double. */
int bf_gc_close_f(const char *what, const float *got, const float *want, size_t n, double atol,
                  double rtol);
/* Bit-for-bit equality (NaN payloads included); prints the first difference; 1 on failure. */
int bf_gc_same_floats(const char *what, const float *a, const float *b, size_t n);
/* The parameters of a model loaded from a checkpoint against the saved ones: the same count
 * and the same bits. Prints what differs; 1 on failure. */
int bf_gc_same_params(const char *what, const float *got, size_t n_got, const float *want,
                      size_t n_want);

#endif
