/* Pieces every trainer shares: data order, paths, the JSON-lines log, durations. */
#ifndef BF_TRAIN_UTIL_H
#define BF_TRAIN_UTIL_H

#include "biflow.h"
#include "core.h"
#include "flow.h"
#include <limits.h>
#include <math.h>
#include <stdio.h>

/* Seeded data order: example k of training is perm[k % n] of epoch k / n. salt tells the
 * trainers' orders apart (each keeps the order its recorded runs used). */
typedef struct { int *perm; int n; long epoch; uint64_t seed, salt; } bf_data_order;
#define BF_ORDER_SALT_FLOW 17      /* forward and reverse models */
#define BF_ORDER_SALT_FEATURES 29  /* the feature network */
void bf_data_order_init(bf_data_order *d, int n, uint64_t seed, uint64_t salt);
void bf_data_order_free(bf_data_order *d);
/* idx (B): the examples of step `step` with B per step */
void bf_data_order_batch(bf_data_order *d, int *idx, long step, int B);

int bf_path_join(char *buf, size_t n, const char *dir, const char *name);
/* Opens DIR/log.jsonl for appending after dropping records past keep_upto_step, so a resumed
 * run's log tells one consistent story. */
FILE *bf_open_log(const char *dir, long keep_upto_step);
void bf_fmt_duration(char *buf, size_t n, double seconds);
/* Opens a trainer's run folder for writing, holding lock until bf_dir_unlock:
 * - refuses a path that is a file, and a missing folder when resuming (a new run creates it);
 * - takes the folder's exclusive lock (DIR/.lock; refused while another process holds it);
 * - removes the temporary files killed writers left behind (NAME.tmp.PID of a dead PID);
 * - refuses to start a new run (resume = 0) in a folder that holds one (a checkpoint, a
 *   resume state or log.jsonl of any trainer) unless overwrite, which deletes those files. */
int bf_run_dir_open(bf_dir_lock *lock, const char *dir, int resume, int overwrite);
/* 1 where weight decay applies (matrices), from a tensor table; NULL (with a message) when
 * the memory cannot be had. */
unsigned char *bf_decay_mask(const bf_param_info *info, int n_info, size_t num_params);
/* The optimiser's buffers for n parameters: grads, m, v zeroed, ema a copy of params. -1 with
 * a message when the memory cannot be had (what was allocated is left for the caller to free). */
int bf_alloc_train_buffers(size_t n, const float *params, float **grads, float **m, float **v,
                           float **ema);
/* What a run needs to resume, in any trainer: the weights, their EMA and the AdamW moments
 * (n floats each, one layout) and the step. */
typedef struct { float *params, *ema, *m, *v; size_t n; long step; } bf_train_state;
/* Atomic; metadata: format, then the members of meta_json (may be NULL). */
int bf_train_state_save(const bf_train_state *s, const char *path, const char *format,
                        const char *meta_json);
/* Checks every tensor's name, dtype and size before copying into s's buffers (n and the
 * pointers set by the caller); a negative step is refused. */
int bf_train_state_load(bf_train_state *s, const char *path);

/* An option's value and its allowed range: lo <= v <= hi, with lo or hi excluded where *_open;
 * a value must also be finite (NaN and infinities are always refused). */
typedef struct { const char *name; double v, lo, hi; int lo_open, hi_open; } bf_range;
/* -1 naming the first option outside its range ("--beta2 2: must be in [0, 1)"). */
int bf_check_ranges(const bf_range *r, int n);
/* The ranges of the optimiser's options every trainer shares (8 entries). */
#define BF_OPTIM_RANGES(o)                                                                 \
    {"--lr", (o)->lr, 0, INFINITY, 1, 1}, {"--min-lr", (o)->min_lr, 0, INFINITY, 0, 1},      \
    {"--wd", (o)->weight_decay, 0, INFINITY, 0, 1}, {"--beta1", (o)->beta1, 0, 1, 0, 1},     \
    {"--beta2", (o)->beta2, 0, 1, 0, 1}, {"--eps", (o)->eps, 0, INFINITY, 1, 1},             \
    {"--clip", (o)->grad_clip, 0, INFINITY, 0, 1},                                           \
    {"--warmup", (o)->warmup, 0, INT_MAX, 0, 0}

/* An option that defines a run (seed, noise, loss, batch, ...): a resumed run keeps the value
 * its checkpoint records. */
typedef enum { BF_RUN_INT, BF_RUN_U64, BF_RUN_FLOAT, BF_RUN_STR, BF_RUN_NAME } bf_run_kind;
typedef struct {
    const char *key;            /* its metadata key in the checkpoint */
    const char *option;         /* the command-line option, for messages ("--seed") */
    bf_run_kind kind;
    void *value;                /* int, uint64_t, float, const char *, or (NAME) an int index */
    const char *const *names;   /* NAME: names by index; the file holds a name or an index */
    int given;                  /* set explicitly: must equal the recorded value */
} bf_run_opt;
/* Reconciles options with the values the checkpoint at path records: a given option that
 * differs is refused (-1) with a message naming both values; one not given takes the recorded
 * value (strings are copied and stay allocated). Keys the file does not hold (checkpoints
 * older than the key) are left alone. -2 when the file cannot be read. *step (may be NULL):
 * the recorded "step", -1 if none. */
int bf_run_opts_reconcile(bf_run_opt *opts, int n, const char *path, long *step);
/* A resumed run may only be extended: 0 when steps >= the step reached, else -1 with a message. */
int bf_check_steps_extend(int steps, long step, const char *dir);
/* A trainer's resume check: opts (n) reconciled with the record in DIR/file, and steps that
 * extend the run (see the two functions above). 0 or -1 with a message. */
int bf_check_resume(bf_run_opt *opts, int n, const char *dir, const char *file, int steps, long step);
/* The options that define a run of each trainer, over o's fields (given = 1, so that a check
 * alone refuses any difference); the number of entries (at most BF_RUN_OPTS_MAX). */
#define BF_RUN_OPTS_MAX 24
int bf_train_flow_run_opts(bf_train_opts *o, bf_run_opt *out);
int bf_train_reverse_run_opts(bf_reverse_train_opts *o, bf_run_opt *out);

/* The trainers' option checks (bf_train_*_check_opts) are public (biflow.h). */

/* Divergence: a step is not applied, and nothing is written from its state, when its loss or
 * gradient norm is not finite, when its loss jumps far above the recent range (more than
 * 100 max(|median|, max - min, 1e-3) above the median of the last BF_DIVERGE_WINDOW steps, from
 * the second step of a run on), or when the gradient norm has been exactly 0 for
 * BF_DIVERGE_ZERO_STEPS steps in a row (the model no longer learns). */
#define BF_DIVERGE_WINDOW 50
#define BF_DIVERGE_ZERO_STEPS 5
typedef struct {
    double loss[BF_DIVERGE_WINDOW];
    int n, next, zero_run;
    long saved_step;            /* the last checkpoint on disk (0: none), for the message */
    const char *quantity;       /* what the loss is, for the message (default "the loss") */
    const char *hint;           /* what to try, e.g. "a lower --lr or more --warmup" */
} bf_divergence;
void bf_divergence_init(bf_divergence *d, long saved_step, const char *hint);
/* Step `step` (1-based: the update about to be applied), with its loss (a quantity that grows
 * when training goes wrong: an adaptively weighted loss that saturates does not) and gradient
 * norm: 0 when it may be applied (the loss then joins the history); -1 with a message when
 * training has diverged. */
int bf_divergence_check(bf_divergence *d, long step, double loss, double gnorm);

/* ------------------------------------------------------------------ the training skeleton */
/* The random stream of step `step` of a run with this seed (batches, noise, labels dropped);
 * stream tells a trainer's uses apart. */
void bf_step_rng(bf_rng *rng, uint64_t seed, long step, uint64_t stream);

/* The optimiser's flat buffers (one layout) and options, shared by every trainer. */
typedef struct {
    float *params, *grads, *m, *v;   /* (n) each */
    float *ema;                      /* (n) or NULL: no EMA */
    const unsigned char *decay;      /* (n) 1 where weight decay applies, or NULL */
    size_t n;
} bf_optim_bufs;
typedef struct {
    long warmup, steps;
    float lr, min_lr, beta1, beta2, eps, weight_decay, grad_clip, ema_decay;
} bf_optim_opts;
/* A trainer's options o (fields of the same names), total steps and EMA decay (0: none). */
#define BF_OPTIM_OPTS(o, total, ema)                                                             \
    ((bf_optim_opts){(o)->warmup, (total), (o)->lr, (o)->min_lr, (o)->beta1, (o)->beta2,        \
                     (o)->eps, (o)->weight_decay, (o)->grad_clip, (ema)})
/* Update `step` (0-based): gradient norm (*gnorm), the divergence check on check_loss (div may
 * be NULL), clipping, AdamW at the scheduled rate, the EMA (warming up). -1 when diverged
 * (nothing applied). */
int bf_optim_update(const bf_optim_bufs *b, const bf_optim_opts *o, long step, double check_loss,
                    bf_divergence *div, double *gnorm);
/* A trainer's step after its gradients: the update of step *step (bf_optim_update, the
 * divergence check on check_loss), then metrics[0] = loss, metrics[1] = the gradient norm and
 * *step advanced; -1 when diverged. */
int bf_optim_step(const bf_optim_bufs *b, const bf_optim_opts *o, long *step, double loss,
                  double check_loss, bf_divergence *div, double *metrics);
/* Scratch gradients (n floats each) for this process's shards 1..nshards-1 (shard 0 writes the
 * trainer's own): -1 with a message when the memory cannot be had (what was allocated is left
 * for bf_shard_grads_free). */
int bf_shard_grads_alloc(float ***g, int nshards, size_t n);
void bf_shard_grads_free(float **g, int nshards);

/* The loop: each step_fn call runs one step, advances *step and fills up to BF_LOOP_METRICS
 * figures, which log_fn receives averaged over the steps since its last call, with the rate
 * and the ETA; eval_fn (may be NULL) every eval_every steps and at the end; save_fn (a
 * checkpoint) every ckpt_every steps and at the end. With stop_on_signal, SIGINT/SIGTERM
 * (bf_stop_signals_install) end it after the current step with a checkpoint: returns 1.
 * 0 when the steps are done, -1 on an error.
 * Several processes (dist.h) run the loop together: step_fn and eval_fn run on every process,
 * log_fn and save_fn on rank 0 only. Before each step they agree whether one failed or was
 * signalled (a signal to any process stops them all, with a checkpoint), after it whether the
 * step failed anywhere, after a checkpoint whether it was written: an error on any process
 * ends the loop on all with -1 and its message (bf_dist_check), before anything more is
 * written. For the tests, BF_TEST_FAULT=K makes a process fail before update K, and
 * BF_TEST_FAULT=term@K sends it SIGTERM there. */
#define BF_LOOP_METRICS 8
typedef struct {
    void *ctx;
    long *step, steps;
    int batch, log_every, eval_every, ckpt_every, stop_on_signal, quiet;
    int (*step_fn)(void *ctx, double *metrics);
    void (*log_fn)(void *ctx, const double *metrics, double images_per_s, double eta_s);
    void (*eval_fn)(void *ctx);
    int (*save_fn)(void *ctx);
    bf_divergence *div;              /* may be NULL: its saved_step follows the checkpoints */
} bf_train_loop;
int bf_train_loop_run(const bf_train_loop *L);

/* The data of a run: the training split, checked against the model's shape (C x size x size,
 * at most num_classes classes), and with want_test the test split (test stays NULL when it
 * cannot be loaded: the run then skips its evaluations). */
typedef struct { bf_dataset train, test_split; const bf_dataset *test; } bf_train_data;
int bf_train_data_load(bf_train_data *d, const char *spec, int C, int size, int num_classes,
                       int want_test);
void bf_train_data_free(bf_train_data *d);

/* A trainer's run in its run folder: F's, G's and the feature network's trainers plug their
 * hooks (ctx: the trainer) into it. It makes the shard plan for loop.batch, sets up (each
 * process its own model, data and buffers: setup returns the training state and data every
 * process must hold the same), checks them and opens rank 0's log (bf_train_ready), prints
 * (rank 0, unless loop.quiet) the step a resumed run starts at and the banner with the layout,
 * runs the loop, then finish (may be NULL) when the steps are done; teardown always, then the
 * log is closed. The loop's value (0, or 1 when stopped by a signal), or -1. */
typedef struct {
    bf_train_loop loop;
    bf_shard_plan *plan;
    const char *out_dir;
    int resume;
    FILE **log;
    /* may also set loop's steps and checkpoint interval (known once it has seen the data) */
    int (*setup)(void *ctx, bf_train_loop *loop, bf_train_state *ts, const bf_dataset **ds);
    void (*banner)(void *ctx, const char *layout);
    int (*finish)(void *ctx);
    void (*teardown)(void *ctx);
} bf_train_run;
int bf_train_run_dir(const bf_train_run *R);
/* Runs R (bf_train_run_dir) with its run folder opened and locked (bf_run_dir_open) and,
 * threads > 0, that many threads; returns its value, or -1 when the folder cannot be had. */
int bf_train_locked(const bf_train_run *R, int overwrite, int threads);

/* Data-parallel runs (dist.h): with several processes, 0 when every process holds the same
 * training state s and data ds, else -1 with a message (every node must see the same run
 * folder and data); nothing to check with one. Collective. */
int bf_train_check_same(const bf_train_state *s, const bf_dataset *ds);
/* A resumable run's start once every process has set it up: the same state and data on every
 * process (bf_train_check_same), then rank 0 opens DIR/log.jsonl (bf_open_log at the state's
 * step) into *log, so that a failed start leaves no log behind. Collective; 0 or -1. */
int bf_train_ready(const bf_train_state *s, const bf_dataset *ds, const char *dir, FILE **log);
/* "4 threads", or "2 processes x 2 threads (4 shards)" for the banner. */
void bf_train_layout(char *buf, size_t n, const bf_shard_plan *p);

/* Asks the training loop to stop after the current step (SIGINT, SIGTERM). */
void bf_stop_signals_install(void);
void bf_stop_signals_restore(void);
int bf_stop_requested(void);

#endif
