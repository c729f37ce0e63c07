/* Data-parallel processes: a thin wrapper over MPI (built with -DBF_MPI, started by mpirun or
 * srun) that compiles to one-process stubs without MPI. Before bf_dist_init, and in a process
 * not started by a launcher, the job is this one process (rank 0 of 1), so the library behaves
 * as it always did for callers that know nothing of MPI (the tests, the Python binding).
 * Every function named "collective" must be called by every process of the job, in the same
 * order. MPI is called from the main thread only (outside OpenMP regions). */
#ifndef BF_DIST_H
#define BF_DIST_H

#include "core.h"
#include <stddef.h>
#include <stdint.h>

/* 1 when the library was built with MPI (-DBF_MPI). */
int bf_dist_built_with_mpi(void);
/* Starts MPI when this process was started by a launcher (mpirun, srun: its environment says
 * so) and the build has MPI; otherwise nothing. 0, or -1 with a message. */
int bf_dist_init(int *argc, char ***argv);
void bf_dist_finalize(void);
int bf_dist_rank(void);
int bf_dist_size(void);
static inline int bf_dist_is_root(void) { return bf_dist_rank() == 0; }

/* Collective: rc of every process (0: fine). 0 when all are 0; else -1 everywhere, with the
 * message of the lowest failing rank R: its own on R, "rank R of N: MESSAGE" elsewhere, where
 * bf_dist_error_elsewhere() then says 1 (R reports it; the others stay quiet). */
int bf_dist_check(int rc);
int bf_dist_error_elsewhere(void);
/* Collective: the lowest rank whose flag is set, or -1 when none is. */
int bf_dist_first(int flag);
/* Collective: 0 when v is the same on every process, else -1 with a message naming what. */
int bf_dist_check_same(uint64_t v, const char *what);
/* Collective: root's bytes (n) to every process. */
void bf_dist_bcast(void *buf, size_t n, int root);
/* Collective: v (count, k) doubles, rows [begin(r), begin(r + 1)) filled by rank r, where
 * begin(r) = bf_shard_begin(count, size, r) (core.h): afterwards every row, everywhere. */
void bf_dist_gather_rows(double *v, int count, int k);
/* Rows [*r0, *r1) of rank r when count rows are split over the job's processes in whole
 * units of `unit` rows (the last may be short): units [bf_shard_begin(units, size, r), ...). */
void bf_dist_span(int count, int unit, int r, int *r0, int *r1);
/* Collective: buf (count, row_bytes), each rank's rows (bf_dist_span) gathered on rank 0 (the
 * other ranks' buffers are left alone). */
void bf_dist_gather_root(void *buf, int count, int unit, size_t row_bytes);

/* Ends the whole job: MPI_Abort (a last resort: prefer bf_dist_check), or exit(code). */
_Noreturn void bf_dist_abort(int code);

/* ------------------------------------------------------------------ shards over processes */
/* Collective: the plan of a step's batch of n rows over the job's N processes, each holding
 * T shards, T = rank 0's `threads` (so S = min(N T, n) shards in all). -1 with a message (the
 * same everywhere) when n < N. */
int bf_shard_plan_make(bf_shard_plan *p, int n, int threads);
/* Collective when p->nranks > 1: grads (P) <- the batch's gradient, the weighted sum of all S
 * shards' gradients formed in shard order (bf_shard_grads_accumulate: acc = 0; acc += w_s g_s
 * for s = 0 .. S - 1), where this process holds its shards' (grads the first's, shard_grads[k]
 * the k-th's, k >= 1). Over processes the partial sums pass along the ranks in order (rank r
 * adds its shards to rank r - 1's partial, in pieces, pipelined) and the last rank broadcasts
 * the sum: the same floats added in the same order as one process holding all S shards, so
 * N processes x T threads give, bit for bit, the weights of 1 process x N T threads. */
void bf_shard_grads_reduce(float *grads, float *const *shard_grads, const bf_shard_plan *p,
                           size_t P, int shard_means);
/* Collective when p->nranks > 1: v (S, k): this process's shards' rows filled; afterwards
 * every shard's, everywhere (per-shard losses and counts, to be summed in shard order). */
void bf_shard_values_gather(double *v, int k, const bf_shard_plan *p);
/* Seconds spent in bf_shard_grads_reduce since the start (for bench train): summing and
 * passing on the gradients, and apart from that, waiting for the slowest process to reach
 * the reduction (the processes meet there first). */
double bf_dist_reduce_seconds(void);
double bf_dist_wait_seconds(void);

#endif
