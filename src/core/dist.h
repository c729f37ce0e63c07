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

/* bf_dist_built_with_mpi, bf_dist_init, bf_dist_finalize, bf_dist_rank, bf_dist_size,
 * bf_dist_is_root, bf_dist_check, bf_dist_error_elsewhere: public (biflow.h) */
/* Collective: the lowest rank whose flag is set, or -1 when none is. */
int bf_dist_first(int flag);
/* Collective: 0 when v is the same on every process, else -1 with a message naming what. */
int bf_dist_check_same(uint64_t v, const char *what);
/* Collective: root's bytes (n) to every process. */
void bf_dist_bcast(void *buf, size_t n, int root);
/* bf_dist_gather_rows, bf_dist_span, bf_dist_gather_root: public (biflow.h) */

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
