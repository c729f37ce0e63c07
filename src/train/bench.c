/* Benchmarks behind `biflow bench`: the matrix-product kernels, and training steps of F taken
 * as bf_train_flow takes them (the library's step, gradient clipping, AdamW and EMA). */
#include "core.h"
#include "dist.h"
#include "flow.h"
#include "gemm.h"
#include "optim.h"
#include "train_util.h"

#include <math.h>
#include <omp.h>

typedef void (*gemm_fn)(int, int, int, int, int, const float *, int, const float *, int, float *, int);

static gemm_fn bench_kernel(bf_bench_gemm_kernel kernel) {
    switch (kernel) {
    case BF_BENCH_GEMM_F32: return bf_gemm_f32;
    case BF_BENCH_GEMM_BF16: return bf_gemm_bf16;
    case BF_BENCH_GEMM_BF16_AVX512: return bf_gemm_bf16_avx512;
    case BF_BENCH_GEMM_BF16_AMX: return bf_gemm_bf16_amx;
    default: return bf_gemm_blas;
    }
}

double bf_bench_gemm_t(bf_bench_gemm_kernel kernel, int ta, int tb, int M, int N, int K, double seconds) {
    float *A = bf_malloc(sizeof(float) * M * K), *B = bf_malloc(sizeof(float) * K * N);
    float *C = bf_malloc(sizeof(float) * M * N);
    for (long i = 0; i < (long)M * K; i++) A[i] = (float)(i % 13) * 0.01f;
    for (long i = 0; i < (long)K * N; i++) B[i] = (float)(i % 7) * 0.01f;
    memset(C, 0, sizeof(float) * M * N);
    gemm_fn gemm = bench_kernel(kernel);
    int lda = ta ? M : K, ldb = tb ? K : N;
    gemm(ta, tb, M, N, K, A, lda, B, ldb, C, N);
    long it = 0;
    double t0 = bf_time(), t;
    do {
        gemm(ta, tb, M, N, K, A, lda, B, ldb, C, N);
        it++;
    } while ((t = bf_time() - t0) < seconds);
    free(A); free(B); free(C);
    return 2.0 * M * N * K * it / t / 1e9;
}

double bf_bench_gemm(bf_bench_gemm_kernel kernel, int M, int N, int K, double seconds) {
    return bf_bench_gemm_t(kernel, 0, 1, M, N, K, seconds);
}

int bf_gemm_amx(void) { return bf_gemm_amx_available(); }

void bf_flow_randomize_heads(bf_flow *f, uint64_t seed, float std) {
    bf_rng rng;
    bf_rng_seed(&rng, seed);
    for (int b = 0; b < f->cfg.num_blocks; b++)
        for (int i = 0; i < 2 * f->D * f->W; i++) f->params[f->blocks[b].out_w + i] = std * bf_rng_normal(&rng);
}

/* What a timed training step needs: random tokens and labels, the optimiser's state, the
 * activations of each batch shard. */
typedef struct {
    bf_flow *f;
    int batch, shards;         /* shards: this process's (plan.s1 - plan.s0) */
    bf_shard_plan plan;        /* over the job's processes under mpirun */
    float *x, *grads, *m, *v, *ema, **shard_grads;
    int *y;
    unsigned char *decay;
    bf_flow_acts *acts;
    bf_train_opts o;           /* AdamW's and the EMA's settings */
    long t;                    /* AdamW steps taken */
} bench_state;

static void bench_free(bench_state *s) {
    for (int k = 0; k < s->shards && s->acts; k++) {
        bf_flow_acts_free(&s->acts[k]);
        if (s->shard_grads) free(s->shard_grads[k]);
    }
    free(s->acts); free(s->shard_grads);
    free(s->x); free(s->y); free(s->grads); free(s->m); free(s->v); free(s->ema); free(s->decay);
}

static int bench_init(bench_state *s, bf_flow *f, int batch) {
    memset(s, 0, sizeof *s);
    s->f = f;
    s->batch = batch;
    bf_train_opts_default(&s->o);
    size_t n = f->num_params, N = (size_t)f->T * f->D;
    /* under mpirun every process learns of a failure of any (bf_dist_check) */
    if (bf_dist_check(bf_alloc_train_buffers(n, f->params, &s->grads, &s->m, &s->v, &s->ema) ||
                      !(s->decay = bf_decay_mask(f->info, f->n_info, n)) ? -1 : 0))
        return -1;
    s->x = bf_malloc(sizeof(float) * batch * N);
    s->y = bf_malloc(sizeof(int) * batch);
    bf_rng rng;
    bf_rng_seed(&rng, 3);
    for (size_t i = 0; i < batch * N; i++) s->x[i] = bf_rng_uniform(&rng) * 2 - 1;
    for (int i = 0; i < batch; i++) s->y[i] = f->cfg.num_classes ? i % f->cfg.num_classes - (i % 7 == 0) : -1;
    if (bf_dist_check(bf_shard_plan_make(&s->plan, batch, omp_get_max_threads()))) return -1;
    s->shards = s->plan.s1 - s->plan.s0;
    s->acts = bf_calloc((size_t)s->shards, sizeof *s->acts);
    s->shard_grads = bf_calloc((size_t)s->shards, sizeof *s->shard_grads);
    int rc = 0;
    for (int k = 0; k < s->shards && !rc; k++) {
        if (bf_flow_acts_try_init(&s->acts[k], f, k == 0 ? batch : (batch + s->plan.S - 1) / s->plan.S))
            rc = -1;
        else if (k && !(s->shard_grads[k] = bf_try_malloc(sizeof(float) * n, "a shard's gradients"))) rc = -1;
    }
    return bf_dist_check(rc);
}

/* One step: forward and backward (sharded, or over the whole batch at once), then the
 * optimiser as in training. */
static void bench_step(bench_state *s, int sharded) {
    bf_flow *f = s->f;
    size_t n = f->num_params;
    if (sharded) {
        bf_flow_step_shards(f, f->params, s->acts, s->shard_grads, &s->plan, s->grads, s->x, s->y);
    } else {
        bf_flow_forward(f, f->params, &s->acts[0], s->x, s->y, s->batch);
        memset(s->grads, 0, sizeof(float) * n);
        bf_flow_backward(f, f->params, &s->acts[0], s->grads, NULL);
    }
    bf_optim_bufs b = {f->params, s->grads, s->m, s->v, s->ema, s->decay, n};
    bf_optim_opts oo = BF_OPTIM_OPTS(&s->o, s->o.steps, s->o.ema_decay);
    double gnorm;
    bf_optim_update(&b, &oo, s->t++, 0.0, NULL, &gnorm);   /* the trainers' update, unchecked */
}

/* red (sharded steps only, else NULL): [0] the timed steps' seconds in the gradient reduction,
 * [1] the shortest of a step, [2] the seconds waiting for the other processes to reach it. */
static double bench_time(bench_state *s, int sharded, int steps, int warmup, double red[3]) {
    for (int i = 0; i < warmup; i++) bench_step(s, sharded);
    double t0 = bf_time(), r0 = bf_dist_reduce_seconds(), w0 = bf_dist_wait_seconds();
    if (red) red[1] = INFINITY;
    for (int i = 0; i < steps; i++) {
        double rs = bf_dist_reduce_seconds();
        bench_step(s, sharded);
        if (red) red[1] = fmin(red[1], bf_dist_reduce_seconds() - rs);
    }
    if (red) {
        red[0] = bf_dist_reduce_seconds() - r0;
        red[2] = bf_dist_wait_seconds() - w0;
    }
    return bf_time() - t0;
}

int bf_bench_train_steps(bf_flow *f, int batch, int steps, int warmup, bf_bench_train_result *r) {
    double red[3];
    return bf_bench_train_steps_reduce(f, batch, steps, warmup, r, red);
}

int bf_bench_train_steps_reduce(bf_flow *f, int batch, int steps, int warmup, bf_bench_train_result *r,
                                double red[3]) {
    if (batch < 1 || batch > BF_MAX_BATCH || steps < 1 || warmup < 0) {
        bf_set_error("bench: batch must be in 1..%d, steps >= 1 and warmup >= 0 (got %d, %d, %d)",
                     BF_MAX_BATCH, batch, steps, warmup);
        return -1;
    }
    bench_state s;
    int rc = bench_init(&s, f, batch);
    if (!rc) {
        r->shards = s.plan.S;
        r->seconds = bench_time(&s, 1, steps, warmup, red);
        /* the unsharded baseline in one process only (under mpirun it would not compare) */
        r->unsharded_seconds = s.plan.nranks > 1 ? 0.0 : bench_time(&s, 0, steps, warmup, NULL);
    }
    bench_free(&s);
    return rc;
}
