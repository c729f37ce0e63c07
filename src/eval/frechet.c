/* Frechet distance between two Gaussians fitted to feature sets, in double:
 * FD = |mu_a - mu_b|^2 + tr(Ca) + tr(Cb) - 2 tr((Ca^1/2 Cb Ca^1/2)^1/2).
 * Ca^1/2 comes from the eigendecomposition of Ca; the trace of the outer square root is the
 * sum of the square roots of the eigenvalues of the symmetric Ca^1/2 Cb Ca^1/2, so no second
 * set of eigenvectors is needed. Eigenvalues that rounding makes slightly negative count as 0. */
#include "core.h"

#include <cblas.h>
#include <math.h>

/* LAPACK's symmetric eigensolver (divide and conquer); the trailing arguments are the hidden
 * lengths of the two character arguments (gfortran's calling convention). */
void dsyevd_(const char *jobz, const char *uplo, const int *n, double *a, const int *lda,
             double *w, double *work, const int *lwork, int *iwork, const int *liwork, int *info,
             size_t jobz_len, size_t uplo_len);

/* Eigenvalues w (F) of the symmetric a (F, F), ascending; vectors: a is overwritten with the
 * eigenvectors, one per row (LAPACK's column-major columns). */
static int sym_eig(double *w, double *a, int F, int vectors) {
    const char *jobz = vectors ? "V" : "N";
    int lwork = -1, liwork = -1, info = 0, iw_query;
    double w_query;
    dsyevd_(jobz, "U", &F, a, &F, w, &w_query, &lwork, &iw_query, &liwork, &info, 1, 1);
    if (info) { bf_set_error("LAPACK dsyevd workspace query failed (info %d)", info); return -1; }
    lwork = (int)w_query;
    liwork = iw_query;
    double *work = bf_malloc(sizeof(double) * (size_t)lwork);
    int *iwork = bf_malloc(sizeof(int) * (size_t)liwork);
    dsyevd_(jobz, "U", &F, a, &F, w, work, &lwork, iwork, &liwork, &info, 1, 1);
    free(work);
    free(iwork);
    if (info) {
        bf_set_error("LAPACK dsyevd did not converge (info %d): the covariance holds NaN or Inf?", info);
        return -1;
    }
    return 0;
}

int bf_feature_stats_compute(bf_feature_stats *s, const float *feats, int n, int F) {
    memset(s, 0, sizeof *s);
    if (n < 2 || F < 1) {
        bf_set_error("feature statistics need at least 2 samples of dimension >= 1 (got %d of %d)", n, F);
        return -1;
    }
    s->dim = F;
    s->n = n;
    s->mean = bf_calloc((size_t)F, sizeof(double));
    s->cov = bf_calloc((size_t)F * F, sizeof(double));
    for (int i = 0; i < n; i++)
        for (int j = 0; j < F; j++) s->mean[j] += feats[(size_t)i * F + j];
    for (int j = 0; j < F; j++) s->mean[j] /= n;
    double *xc = bf_malloc(sizeof(double) * (size_t)n * F);   /* centred, in double */
    for (int i = 0; i < n; i++)
        for (int j = 0; j < F; j++) xc[(size_t)i * F + j] = feats[(size_t)i * F + j] - s->mean[j];
    cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, F, n, 1.0 / (n - 1), xc, F, 0.0, s->cov, F);
    for (int i = 0; i < F; i++)   /* mirror the upper triangle */
        for (int j = 0; j < i; j++) s->cov[(size_t)i * F + j] = s->cov[(size_t)j * F + i];
    free(xc);
    for (size_t i = 0; i < (size_t)F * F; i++)
        if (!isfinite(s->cov[i])) {
            bf_feature_stats_free(s);
            bf_set_error("the features hold NaN or Inf");
            return -1;
        }
    return 0;
}

void bf_feature_stats_free(bf_feature_stats *s) {
    free(s->mean);
    free(s->cov);
    memset(s, 0, sizeof *s);
}

/* root (F, F) = the symmetric square root of the covariance c */
static int sqrtm_psd(double *root, const double *c, int F) {
    double *v = bf_malloc(sizeof(double) * (size_t)F * F), *w = bf_malloc(sizeof(double) * F);
    memcpy(v, c, sizeof(double) * (size_t)F * F);
    int rc = sym_eig(w, v, F, 1);
    if (rc == 0) {   /* root = V^T diag(sqrt w) V = B^T B with rows of B = w^1/4 v */
        for (int j = 0; j < F; j++) {
            double s = sqrt(sqrt(w[j] > 0 ? w[j] : 0.0));
            for (int k = 0; k < F; k++) v[(size_t)j * F + k] *= s;
        }
        cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, F, F, F, 1.0, v, F, v, F, 0.0, root, F);
    }
    free(v);
    free(w);
    return rc;
}

/* tr((Ca^1/2 Cb Ca^1/2)^1/2) */
static int trace_sqrt_product(double *tr, const double *ca, const double *cb, int F) {
    size_t FF = (size_t)F * F;
    double *s = bf_malloc(sizeof(double) * FF), *t = bf_malloc(sizeof(double) * FF);
    double *m = bf_malloc(sizeof(double) * FF), *w = bf_malloc(sizeof(double) * F);
    int rc = sqrtm_psd(s, ca, F);
    if (rc == 0) {
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, F, F, F, 1.0, s, F, cb, F, 0.0, t, F);
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, F, F, F, 1.0, t, F, s, F, 0.0, m, F);
        for (int i = 0; i < F; i++)   /* symmetric up to rounding: make it exactly so */
            for (int j = 0; j < i; j++)
                m[(size_t)i * F + j] = m[(size_t)j * F + i] = 0.5 * (m[(size_t)i * F + j] + m[(size_t)j * F + i]);
        rc = sym_eig(w, m, F, 0);
    }
    *tr = 0.0;
    for (int i = 0; rc == 0 && i < F; i++) *tr += sqrt(w[i] > 0 ? w[i] : 0.0);
    free(s); free(t); free(m); free(w);
    return rc;
}

int bf_frechet_distance_stats(double *fd, const bf_feature_stats *a, const bf_feature_stats *b) {
    if (a->dim != b->dim || a->dim < 1) {
        bf_set_error("Frechet distance: feature dimensions differ (%d and %d)", a->dim, b->dim);
        return -1;
    }
    int F = a->dim;
    double d2 = 0.0, tr = 0.0, trs;
    for (int j = 0; j < F; j++) {
        double d = a->mean[j] - b->mean[j];
        d2 += d * d;
        tr += a->cov[(size_t)j * F + j] + b->cov[(size_t)j * F + j];
    }
    if (trace_sqrt_product(&trs, a->cov, b->cov, F)) return -1;
    *fd = d2 + tr - 2.0 * trs;
    return 0;
}

int bf_frechet_distance(double *fd, const float *feats_a, int na, const float *feats_b, int nb,
                        int F) {
    bf_feature_stats a, b;
    if (bf_feature_stats_compute(&a, feats_a, na, F)) return -1;
    if (bf_feature_stats_compute(&b, feats_b, nb, F)) { bf_feature_stats_free(&a); return -1; }
    int rc = bf_frechet_distance_stats(fd, &a, &b);
    bf_feature_stats_free(&a);
    bf_feature_stats_free(&b);
    return rc;
}
