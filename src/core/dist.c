/* Data-parallel processes over MPI, or one process without it (see dist.h). */
#include "dist.h"
#include "core.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>
#ifdef BF_MPI
#include <mpi.h>
#endif

static int g_rank = 0, g_size = 1;
static double g_reduce_seconds = 0.0, g_wait_seconds = 0.0;
static int g_elsewhere = 0;          /* the current message is another rank's (bf_dist_check) */
static char g_elsewhere_msg[1024];

int bf_dist_built_with_mpi(void) {
#ifdef BF_MPI
    return 1;
#else
    return 0;
#endif
}

int bf_dist_rank(void) { return g_rank; }
int bf_dist_size(void) { return g_size; }
double bf_dist_reduce_seconds(void) { return g_reduce_seconds; }
double bf_dist_wait_seconds(void) { return g_wait_seconds; }

int bf_dist_error_elsewhere(void) {
    return g_elsewhere && !strcmp(bf_last_error(), g_elsewhere_msg);
}

/* The number of processes a launcher started (mpirun, a PMI/PMIx launcher such as MPICH's or
 * srun, MVAPICH2), as its environment says; 0 when none did. */
static int launched_size(void) {
    static const char *const vars[] = {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE",
                                       "MV2_COMM_WORLD_SIZE"};
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++) {
        const char *v = getenv(vars[i]);
        if (v) return atoi(v) > 0 ? atoi(v) : 1;
    }
    return getenv("PMIX_RANK") ? 1 : 0;
}

#ifdef BF_MPI
static int g_active = 0;

/* This process's message is rank `first`'s (the one that reports it). */
static void set_elsewhere(int first, const char *msg) {
    bf_set_error("rank %d of %d: %s", first, g_size, msg);
    snprintf(g_elsewhere_msg, sizeof g_elsewhere_msg, "%s", bf_last_error());
    g_elsewhere = 1;
}

int bf_dist_init(int *argc, char ***argv) {
    if (g_active || !launched_size()) return 0;
    int provided = 0;
    if (MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS) {
        bf_set_error("MPI_Init_thread failed");
        return -1;
    }
    g_active = 1;
    MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
    MPI_Comm_size(MPI_COMM_WORLD, &g_size);
    if (provided < MPI_THREAD_FUNNELED) {
        bf_set_error("the MPI library offers no thread support (MPI_THREAD_FUNNELED): biflow's "
                     "OpenMP threads need it");
        bf_dist_finalize();
        return -1;
    }
    return 0;
}

void bf_dist_finalize(void) {
    if (!g_active) return;
    MPI_Finalize();
    g_active = 0;
    g_rank = 0;
    g_size = 1;
}

int bf_dist_first(int flag) {
    if (g_size == 1) return flag ? 0 : -1;
    int mine = flag ? g_rank : g_size, first = g_size;
    MPI_Allreduce(&mine, &first, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
    return first == g_size ? -1 : first;
}

int bf_dist_check(int rc) {
    if (g_size == 1) return rc ? -1 : 0;
    int first = bf_dist_first(rc != 0);
    if (first < 0) return 0;
    char msg[1024];
    snprintf(msg, sizeof msg, "%s", bf_last_error());
    MPI_Bcast(msg, (int)sizeof msg, MPI_CHAR, first, MPI_COMM_WORLD);
    if (g_rank != first) set_elsewhere(first, msg);
    return -1;
}

int bf_dist_check_same(uint64_t v, const char *what) {
    if (g_size == 1) return 0;
    uint64_t lo = v, hi = v;
    MPI_Allreduce(&v, &lo, 1, MPI_UINT64_T, MPI_MIN, MPI_COMM_WORLD);
    MPI_Allreduce(&v, &hi, 1, MPI_UINT64_T, MPI_MAX, MPI_COMM_WORLD);
    if (lo == hi) return 0;
    char msg[512];
    snprintf(msg, sizeof msg, "%s differ between the %d processes of the job (each must be given "
             "the same options and see the same files)", what, g_size);
    if (g_rank == 0) bf_set_error("%s", msg);
    else set_elsewhere(0, msg);
    return -1;
}

void bf_dist_bcast(void *buf, size_t n, int root) {
    if (g_size == 1) return;
    for (size_t off = 0; off < n; off += (size_t)1 << 30) {   /* int counts */
        size_t m = n - off < ((size_t)1 << 30) ? n - off : (size_t)1 << 30;
        MPI_Bcast((char *)buf + off, (int)m, MPI_BYTE, root, MPI_COMM_WORLD);
    }
}

void bf_dist_gather_rows(double *v, int count, int k) {
    if (g_size == 1) return;
    int *counts = bf_malloc(sizeof(int) * (size_t)g_size), *displs = bf_malloc(sizeof(int) * (size_t)g_size);
    for (int r = 0; r < g_size; r++) {
        displs[r] = bf_shard_begin(count, g_size, r) * k;
        counts[r] = bf_shard_begin(count, g_size, r + 1) * k - displs[r];
    }
    MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, v, counts, displs, MPI_DOUBLE, MPI_COMM_WORLD);
    free(counts);
    free(displs);
}

/* Sends (rank > 0) or receives (rank 0) n bytes in pieces that fit an int count. */
static void p2p_bytes(void *buf, size_t n, int peer, int send) {
    for (size_t off = 0; off < n; off += (size_t)1 << 30) {
        int m = (int)(n - off < ((size_t)1 << 30) ? n - off : (size_t)1 << 30);
        if (send) MPI_Send((char *)buf + off, m, MPI_BYTE, peer, 7, MPI_COMM_WORLD);
        else MPI_Recv((char *)buf + off, m, MPI_BYTE, peer, 7, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
    }
}

void bf_dist_gather_root(void *buf, int count, int unit, size_t row_bytes) {
    if (g_size == 1) return;
    for (int r = 1; r < g_size; r++) {
        if (g_rank != 0 && g_rank != r) continue;
        int r0, r1;
        bf_dist_span(count, unit, r, &r0, &r1);
        p2p_bytes((char *)buf + (size_t)r0 * row_bytes, (size_t)(r1 - r0) * row_bytes,
                  g_rank == 0 ? r : 0, g_rank != 0);
    }
}

_Noreturn void bf_dist_abort(int code) {
    if (g_active) MPI_Abort(MPI_COMM_WORLD, code);
    exit(code);
}

/* The chain: rank r receives rank r - 1's partial sum piece by piece, adds its own shards
 * (in shard order) and passes it on; the last rank's sums are the batch's gradient. */
#define CHAIN_PIECE ((size_t)1 << 16)   /* floats per message: 256 KiB */
static void chain_reduce(float *grads, float *const *g, const bf_shard_plan *p, size_t P,
                         int shard_means) {
    int r = p->rank, last = p->nranks - 1;
    double t0 = bf_time();   /* the ranks meet first: the time of the reduction proper is apart */
    MPI_Barrier(MPI_COMM_WORLD);
    g_wait_seconds += bf_time() - t0;
    size_t npieces = (P + CHAIN_PIECE - 1) / CHAIN_PIECE;
    float *in = r > 0 ? bf_malloc(sizeof(float) * CHAIN_PIECE) : NULL;
    MPI_Request *req = r < last ? bf_malloc(sizeof(MPI_Request) * (npieces ? npieces : 1)) : NULL;
    for (size_t k = 0; k < npieces; k++) {
        size_t i0 = k * CHAIN_PIECE, i1 = i0 + CHAIN_PIECE < P ? i0 + CHAIN_PIECE : P;
        if (r > 0) MPI_Recv(in, (int)(i1 - i0), MPI_FLOAT, r - 1, 5, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
        bf_shard_grads_accumulate(grads, in, g, p, i0, i1, shard_means);
        if (r < last) MPI_Isend(grads + i0, (int)(i1 - i0), MPI_FLOAT, r + 1, 5, MPI_COMM_WORLD, &req[k]);
    }
    if (req) MPI_Waitall((int)npieces, req, MPI_STATUSES_IGNORE);
    free(req);
    free(in);
    bf_dist_bcast(grads, sizeof(float) * P, last);
}

#else   /* ------------------------------------------------------------------ without MPI */
int bf_dist_init(int *argc, char ***argv) {
    int n = launched_size();
    if (n <= 1) return 0;
    bf_set_error("this biflow was built without MPI (no mpicc, or make MPI=0): the %d processes "
                 "mpirun started would each run the whole command; rebuild with mpicc "
                 "(tools/install-deps.sh installs it)", n);
    return -1;
}
void bf_dist_finalize(void) {}
int bf_dist_first(int flag) { return flag ? 0 : -1; }
int bf_dist_check(int rc) { return rc ? -1 : 0; }
int bf_dist_check_same(uint64_t v, const char *what) { return 0; }
void bf_dist_bcast(void *buf, size_t n, int root) {}
void bf_dist_gather_rows(double *v, int count, int k) {}
void bf_dist_gather_root(void *buf, int count, int unit, size_t row_bytes) {}
_Noreturn void bf_dist_abort(int code) { exit(code); }
static void chain_reduce(float *grads, float *const *g, const bf_shard_plan *p, size_t P,
                         int shard_means) {
    BF_ASSERT(!"a plan over several processes without MPI");
}
#endif

void bf_dist_span(int count, int unit, int r, int *r0, int *r1) {
    int units = (count + unit - 1) / unit;
    long a = (long)bf_shard_begin(units, g_size, r) * unit, b = (long)bf_shard_begin(units, g_size, r + 1) * unit;
    *r0 = (int)(a < count ? a : count);
    *r1 = (int)(b < count ? b : count);
}

/* ------------------------------------------------------------------ shards over processes */
int bf_shard_plan_make(bf_shard_plan *p, int n, int threads) {
    int T = threads < 1 ? 1 : threads, N = g_size;
    bf_dist_bcast(&T, sizeof T, 0);
    if (n < N) {
        bf_set_error("a batch of %d cannot be split over %d processes: give --batch %d or more",
                     n, N, N);
        return -1;
    }
    long S = (long)N * T < n ? (long)N * T : n;
    *p = (bf_shard_plan){n, (int)S, bf_shard_begin((int)S, N, g_rank),
                         bf_shard_begin((int)S, N, g_rank + 1), g_rank, N};
    return 0;
}

void bf_shard_grads_reduce(float *grads, float *const *shard_grads, const bf_shard_plan *p,
                           size_t P, int shard_means) {
    double t0 = bf_time(), w0 = g_wait_seconds;
    int L = p->s1 - p->s0;
    float **g = bf_malloc(sizeof(float *) * (size_t)(L > 0 ? L : 1));
    g[0] = grads;
    for (int k = 1; k < L; k++) g[k] = shard_grads[k];
    if (p->nranks > 1) chain_reduce(grads, g, p, P, shard_means);
    else bf_shard_grads_accumulate(grads, NULL, g, p, 0, P, shard_means);
    free(g);
    g_reduce_seconds += bf_time() - t0 - (g_wait_seconds - w0);
}

void bf_shard_values_gather(double *v, int k, const bf_shard_plan *p) {
    if (p->nranks > 1) bf_dist_gather_rows(v, p->S, k);
}
