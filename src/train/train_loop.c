/* The training skeleton every trainer plugs into (F, G, the feature network): the optimiser
 * update on flat buffers, the per-step random stream and the loop
 * (step -> log -> evaluate -> checkpoint, stopped by a signal with a checkpoint). */
#include "core.h"
#include "dist.h"
#include "optim.h"
#include "train_util.h"

#include <omp.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

void bf_step_rng(bf_rng *rng, uint64_t seed, long step, uint64_t stream) {
    /* two primes keep (seed, step) pairs from aliasing for any realistic run length; the
     * stream tells the trainers' uses apart (kept: recorded runs reproduce) */
    bf_rng_seed(rng, seed * 7919ull + (uint64_t)step * 104729ull + stream);
}

int bf_optim_update(const bf_optim_bufs *b, const bf_optim_opts *o, long step, double check_loss,
                    bf_divergence *div, double *gnorm) {
    *gnorm = bf_grad_norm(b->grads, b->n);
    if (div && bf_divergence_check(div, step + 1, check_loss, *gnorm)) return -1;
    bf_clip_grad(b->grads, b->n, *gnorm, o->grad_clip);
    bf_adamw_hparams h = {bf_lr_schedule(step, o->warmup, o->steps, o->lr, o->min_lr),
                          o->beta1, o->beta2, o->eps, o->weight_decay};
    bf_adamw_step(b->params, b->m, b->v, b->grads, b->decay, b->n, &h, step + 1);
    if (b->ema) {   /* the EMA warms up so that early checkpoints are not the initial weights */
        float d = fminf(o->ema_decay, (1.0f + (float)step) / (10.0f + (float)step));
        bf_ema_update(b->ema, b->params, b->n, d);
    }
    return 0;
}

int bf_optim_step(const bf_optim_bufs *b, const bf_optim_opts *o, long *step, double loss,
                  double check_loss, bf_divergence *div, double *metrics) {
    if (bf_optim_update(b, o, *step, check_loss, div, &metrics[1])) return -1;
    metrics[0] = loss;
    ++*step;
    return 0;
}

int bf_shard_grads_alloc(float ***g, int nshards, size_t n) {
    *g = bf_calloc((size_t)nshards, sizeof **g);
    for (int k = 1; k < nshards; k++)
        if (!((*g)[k] = bf_try_calloc(n, sizeof(float), "a shard's gradients"))) return -1;
    return 0;
}

void bf_shard_grads_free(float **g, int nshards) {
    for (int k = 0; g && k < nshards; k++) free(g[k]);
    free(g);
}

/* The checkpoint, written by rank 0 alone; every process learns whether it was written. */
static int checkpoint(const bf_train_loop *L) {
    if (bf_dist_check(bf_dist_is_root() ? L->save_fn(L->ctx) : 0)) return -1;
    if (L->div) L->div->saved_step = *L->step;
    return 0;
}

/* Averages of the metrics over the steps since the last line, then the line itself (rank 0's:
 * the figures are the same on every process). */
static void log_line(const bf_train_loop *L, double *acc, long *count, double *t_last,
                     double t_start, long start_step) {
    double now = bf_time(), ips = *count * (double)L->batch / (now - *t_last);
    double rate = (*L->step - start_step) / (now - t_start);
    for (int k = 0; k < BF_LOOP_METRICS; k++) acc[k] /= (double)*count;
    if (bf_dist_is_root()) L->log_fn(L->ctx, acc, ips, (L->steps - *L->step) / rate);
    memset(acc, 0, sizeof(double) * BF_LOOP_METRICS);
    *count = 0;
    *t_last = now;
}

/* BF_TEST_FAULT=STEP (tests): this process fails before update STEP (1-based) with a message;
 * BF_TEST_FAULT=term@STEP: it receives SIGTERM there instead. */
static int test_fault(long step) {
    const char *e = getenv("BF_TEST_FAULT");
    if (!e) return 0;
    int term = !strncmp(e, "term@", 5);
    if (atol(term ? e + 5 : e) != step + 1) return 0;
    if (term) return raise(SIGTERM), 0;
    bf_set_error("a test fault (BF_TEST_FAULT) before step %ld", step + 1);
    return -1;
}

/* Before each step the processes agree on whether one of them failed or was asked to stop;
 * after it, on whether the step failed anywhere. Nothing is written until they agree. */
static int loop(const bf_train_loop *L, int *stopper) {
    double acc[BF_LOOP_METRICS] = {0}, t_last = bf_time(), t_start = t_last;
    long count = 0, start_step = *L->step;
    while (*L->step < L->steps) {
        if (bf_dist_check(test_fault(*L->step))) return -1;
        if ((*stopper = bf_dist_first(L->stop_on_signal && bf_stop_requested())) >= 0) break;
        double m[BF_LOOP_METRICS] = {0};
        if (bf_dist_check(L->step_fn(L->ctx, m))) return -1;
        for (int k = 0; k < BF_LOOP_METRICS; k++) acc[k] += m[k];
        count++;
        long step = *L->step;
        int last = step == L->steps;
        if ((L->log_every && step % L->log_every == 0) || last)
            log_line(L, acc, &count, &t_last, t_start, start_step);
        if (L->eval_fn && L->eval_every && (step % L->eval_every == 0 || last)) L->eval_fn(L->ctx);
        if (((L->ckpt_every && step % L->ckpt_every == 0) || last) && checkpoint(L)) return -1;
    }
    if (*stopper >= 0) {
        if (!L->quiet && bf_dist_size() > 1)
            fprintf(stderr, "interrupted by a signal (to rank %d of %d first): saving step %ld\n",
                    *stopper, bf_dist_size(), *L->step);
        else if (!L->quiet)
            fprintf(stderr, "interrupted: saving step %ld\n", *L->step);
        return checkpoint(L) ? -1 : 1;   /* 1: stopped early, state saved */
    }
    return 0;
}

int bf_train_loop_run(const bf_train_loop *L) {
    if (L->stop_on_signal) bf_stop_signals_install();
    int stopper = -1, rc = loop(L, &stopper);
    if (L->stop_on_signal) bf_stop_signals_restore();
    return rc;
}

int bf_train_data_load(bf_train_data *d, const char *spec, int C, int size, int num_classes,
                       int want_test) {
    memset(d, 0, sizeof *d);
    if (bf_dataset_load(&d->train, spec, "train") ||
        bf_dataset_check_shape(&d->train, C, size, num_classes))
        return -1;
    if (want_test && bf_dataset_load(&d->test_split, spec, "test") == 0) d->test = &d->test_split;
    return 0;
}

void bf_train_data_free(bf_train_data *d) {
    bf_dataset_free(&d->train);
    bf_dataset_free(&d->test_split);
    d->test = NULL;
}

int bf_train_locked(const bf_train_run *R, int overwrite, int threads) {
    if (threads > 0) omp_set_num_threads(threads);
    bf_dir_lock lock;   /* rank 0 writes the folder: it alone opens and locks it */
    int root = bf_dist_is_root(), rc = root ? bf_run_dir_open(&lock, R->out_dir, R->resume, overwrite) : 0;
    if (bf_dist_check(rc)) {
        if (root && rc == 0) bf_dir_unlock(&lock);
        return -1;
    }
    rc = bf_train_run_dir(R);
    if (root) bf_dir_unlock(&lock);
    return rc;
}

int bf_train_ready(const bf_train_state *s, const bf_dataset *ds, const char *dir, FILE **log) {
    if (bf_train_check_same(s, ds)) return -1;
    int rc = bf_dist_is_root() && !(*log = bf_open_log(dir, s->step)) ? -1 : 0;
    return bf_dist_check(rc);
}

int bf_train_run_dir(const bf_train_run *R) {
    void *ctx = R->loop.ctx;
    bf_train_loop L = R->loop;
    L.quiet |= !bf_dist_is_root();   /* rank 0 prints */
    bf_train_state ts;
    const bf_dataset *ds;
    int rc = -1;
    if (bf_dist_check(bf_shard_plan_make(R->plan, L.batch, omp_get_max_threads())) ||
        bf_dist_check(R->setup(ctx, &L, &ts, &ds)))
        goto done;
    if (R->resume && !L.quiet) fprintf(stderr, "resuming %s at step %ld\n", R->out_dir, ts.step);
    if (bf_train_ready(&ts, ds, R->out_dir, R->log)) goto done;
    char layout[96];
    bf_train_layout(layout, sizeof layout, R->plan);
    if (!L.quiet) R->banner(ctx, layout);
    rc = bf_train_loop_run(&L);
    if (rc == 0 && R->finish) rc = R->finish(ctx);
done:
    R->teardown(ctx);
    if (*R->log) fclose(*R->log);
    *R->log = NULL;
    return rc;
}
