/* A small table-driven option parser shared by the biflow commands, and the CLI's one
 * convention for errors:
 *   usage errors (an unknown option, a bad value, a missing or conflicting option) print
 *     "biflow COMMAND: message (see --help)" on stderr and exit 2;
 *   runtime errors (a file that cannot be read, a model pair that does not match, a failed
 *     run) print "biflow: message" on stderr and exit 1. */
#ifndef BF_CLI_H
#define BF_CLI_H

/* The most samples sample and eval hold in memory at once (N x C x H x W floats and more). */
#define CLI_MAX_SAMPLES 1000000

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* OPT_FLAG: a boolean that is off unless given (--name, no value), ptr: int.
 * OPT_ONOFF: a boolean with a default of its own, given as --name on|off, ptr: int.
 * OPT_CHOICE: one of a fixed set of words, ptr: a cli_choice (CLI_CHOICE builds it).
 * OPT_ALIAS: a deprecated spelling of another option (ptr: that option's name); hidden from
 *   --help, it works as the option it names and prints a one-line note on stderr. */
typedef enum { OPT_INT, OPT_FLOAT, OPT_STR, OPT_FLAG, OPT_U64, OPT_ONOFF, OPT_CHOICE, OPT_ALIAS } opt_kind;

typedef struct {
    const char *name;      /* without the leading "--" */
    opt_kind kind;
    void *ptr;
    const char *help;
} cli_opt;

typedef struct {
    const char **value;    /* the word chosen (its default before parsing) */
    const char *words;     /* the accepted words, "|"-separated: "exact|jacobi|biflow" */
} cli_choice;

#define CLI_CHOICE(name, var, words, help) \
    {name, OPT_CHOICE, &(cli_choice){&(var), words}, help}
#define CLI_ALIAS(old, name) {old, OPT_ALIAS, (void *)(name), NULL}
#define CLI_END {NULL, 0, NULL, NULL}

/* The options that mean the same thing in every command that has them, each with one help
 * text, so that the commands spell a concept alike. */
/* --raw, on every command that reads a model from a run folder. */
#define CLI_RAW_OPT(var) {"raw", OPT_FLAG, &(var), "raw weights of a run folder instead of the EMA"}
/* --flow of the commands that read F alone. */
#define CLI_FLOW_OPT(var) {"flow", OPT_STR, &(var), "forward model F: a .safetensors file or a run folder"}
/* --reverse of the commands that read G. */
#define CLI_REVERSE_OPT(var) {"reverse", OPT_STR, &(var), "reverse model G: a .safetensors file or a run folder"}
/* --reverse and --flow of the commands that run G with the F it was trained against. */
#define CLI_PAIR_OPTS(reverse, flow)                                                          \
    CLI_REVERSE_OPT(reverse),                                                                \
    {"flow", OPT_STR, &(flow), "forward model F (default: the one G records; checked by SHA-256)"}
/* --data; use: what the command takes from it (may be ""). */
#define CLI_DATA_OPT(var, use) \
    {"data", OPT_STR, &(var), "dataset: fashion-mnist, idx:DIR, cifar10:DIR or folder:DIR" use}
/* --split, with --data. */
#define CLI_SPLIT_OPT(var) CLI_CHOICE("split", var, "test|train", "the dataset split")
/* --n of the commands that read the first images of a dataset or file. */
#define CLI_FIRST_N_OPT(var) {"n", OPT_INT, &(var), "the first N images (0 = all)"}
/* The F-on-a-dataset options of the commands that run F over a split's first images
 * (eval-bpd, encode). */
#define CLI_FLOW_DATA_OPTS(flow, raw, data, split, n) \
    CLI_FLOW_OPT(flow), CLI_RAW_OPT(raw), CLI_DATA_OPT(data, ""), CLI_SPLIT_OPT(split), CLI_FIRST_N_OPT(n)
/* --out and --scale of the commands that write images as PREFIX.png (a grid), PREFIX.npy and
 * PREFIX_labels.npy. */
#define CLI_IMAGES_OUT_OPTS(out, scale)                                                       \
    {"out", OPT_STR, &(out), "output prefix: PREFIX.png, PREFIX.npy, PREFIX_labels.npy"},     \
    {"scale", OPT_INT, &(scale), "grid scale-up factor"}
/* --seconds of the benchmarks: each case runs whole calls until this much time has passed. */
#define CLI_SECONDS_OPT(var) {"seconds", OPT_FLOAT, &(var), "minimum timed seconds per case"}
/* --features: the evaluation network of the Frechet distance. */
#define CLI_FEATURES_OPT(var) \
    {"features", OPT_STR, &(var), "feature network of the FD: a .safetensors file or a train-features run folder"}
/* --label-drop of the trainers of class-conditional models. */
#define CLI_LABEL_DROP_OPT(var) \
    {"label-drop", OPT_FLOAT, &(var), "probability of the unconditional (null) label in training"}
/* The perceptual term of G's training (train-reverse, bench train --model reverse). */
#define CLI_PERCEPTUAL_OPTS(o)                                                                \
    {"perceptual", OPT_FLOAT, &(o).perceptual, "weight of the perceptual distance on the perceptual network (0 = off)"}, \
    {"features", OPT_STR, &(o).features, "perceptual network (train-features --arch perceptual; the evaluation network is refused)"}, \
    {"class-weight", OPT_FLOAT, &(o).class_weight, "weight of the cross-entropy of the perceptual network's classifier on G's output against the label (0 = off)"}
/* The progress options of every trainer (they name their own --threads). */
#define CLI_LOG_EVERY_OPT(var) {"log-every", OPT_INT, &(var), "progress line and log record every N steps"}
#define CLI_QUIET_OPT(var) {"quiet", OPT_FLAG, &(var), "no progress lines"}
#define CLI_OVERWRITE_OPT(var) \
    {"overwrite", OPT_FLAG, &(var), "where --out holds a run: delete it and start a new one"}
#define CLI_OWN_THREADS_OPT(var) {"threads", OPT_INT, &(var), "threads (0 = all cores)"}

/* The learning-rate schedule (linear warmup, then a cosine), of every trainer. */
#define CLI_LR_OPTS(o)                                                                     \
    {"lr", OPT_FLOAT, &(o).lr, "peak learning rate"},                                     \
    {"min-lr", OPT_FLOAT, &(o).min_lr, "learning rate at the end of the cosine"},         \
    {"warmup", OPT_INT, &(o).warmup, "linear warmup steps"}

/* The optimiser's options, for the trainers whose option structs name them alike. */
#define CLI_OPTIM_OPTS(o)                                                                  \
    {"steps", OPT_INT, &(o).steps, "training steps"},                                     \
    {"batch", OPT_INT, &(o).batch, "images per step"},                                    \
    CLI_LR_OPTS(o),                                                                        \
    {"wd", OPT_FLOAT, &(o).weight_decay, "AdamW weight decay (matrices only)"},           \
    {"beta1", OPT_FLOAT, &(o).beta1, "AdamW beta1"},                                      \
    {"beta2", OPT_FLOAT, &(o).beta2, "AdamW beta2"},                                      \
    {"clip", OPT_FLOAT, &(o).grad_clip, "gradient-norm clipping (0 = off)"},              \
    {"ema", OPT_FLOAT, &(o).ema_decay, "EMA decay of the weights"}

/* --out of the resumable trainers (F and G). */
#define CLI_RUN_DIR_OPT(o) {"out", OPT_STR, &(o).out_dir, "run folder (checkpoints, log.jsonl)"}

/* The run-folder options of the resumable trainers (F and G); eval_n: the final evaluation's
 * image count, what_eval: what --eval-every measures. */
#define CLI_RUN_OPTS(o, eval_n, what_eval, what_final)                                       \
    {"ckpt-every", OPT_INT, &(o).ckpt_every, "checkpoint every N steps (and at the end)"},     \
    CLI_LOG_EVERY_OPT((o).log_every),                                                       \
    {"eval-every", OPT_INT, &(o).eval_every, what_eval " every N steps (0 = off)"},          \
    {"eval-n", OPT_INT, &(eval_n), "test images for the final " what_final " (0 = skip)"},     \
    CLI_ALIAS("final-eval", "eval-n"),                                                      \
    {"resume", OPT_FLAG, &(o).resume, "continue the run in --out from its last checkpoint, "   \
     "with its recorded options (--steps may extend it)"},                                   \
    CLI_OVERWRITE_OPT((o).overwrite),                                                       \
    CLI_OWN_THREADS_OPT((o).threads),                                                       \
    CLI_PRECISION_OPT,                                                                      \
    CLI_QUIET_OPT((o).quiet)

/* --precision, on every command that computes with F or G: cli_parse applies it
 * (bf_set_precision) and refuses a value other than fp32 and bf16. */
extern const char *cli_precision;
#define CLI_PRECISION_OPT                                                                  \
    CLI_CHOICE("precision", cli_precision, "fp32|bf16",                                    \
     "matrix products of F and G: fp32 or bf16 (bfloat16 operands, fp32 sums; CPUs with "  \
     "AVX512-BF16, else fp32 with a note). Default ($BF_PRECISION sets it for every "       \
     "command): bf16 where measured to cost nothing (train-flow, train-reverse, bench "     \
     "train, sample with G; a resumed run keeps its own), fp32 elsewhere (the exact "        \
     "inverse, encoding, editing, evaluation)")

/* The precision of a command that trains, or samples in one pass of G, when the user chose
 * none (no --precision, no $BF_PRECISION): bf16 where the CPU has it (issue 11's quality
 * bounds were measured there: docs/RESULTS-flow.md), except that a resumed run keeps the
 * precision its checkpoint run_dir/record says its last steps ran in (fp32 for runs recorded
 * before the key; run_dir NULL: a new run, or no run). The other commands keep the library's
 * default, fp32. */
void cli_default_bf16(const char *run_dir, const char *record);

/* --threads, on the commands that compute (0 = all cores): cli_parse applies it
 * (bf_set_threads) and refuses a negative count. The trainers and serve, which apply their own
 * count, name their own variable instead. */
extern int cli_threads;
#define CLI_THREADS_OPT CLI_OWN_THREADS_OPT(cli_threads)
/* --threads and --precision: the options of every command that computes with F or G. */
#define CLI_COMPUTE_OPTS CLI_THREADS_OPT, CLI_PRECISION_OPT

/* What cli_parse returns when the command goes on (anything else is its exit status). */
#define CLI_GO (-1)

/* A command of a command table (tools/main.c's, bench's): what it runs and its --help text,
 * kept together so that the command's name is spelled once. help: its line in the table's
 * listing; synopsis: what its usage line shows after "biflow NAME"; about: what it does. */
typedef struct {
    const char *name;
    int (*fn)(int argc, char **argv);
    const char *help, *synopsis, *about;
} cli_command;

/* Runs the command of cmds (n of them) that argv[at] names, with argc, argv; the --help of
 * cli_parse is then that entry's. Returns its exit status, or -1 when argv[at] names none. */
int cli_dispatch(const cli_command *cmds, size_t n, int argc, char **argv, int at);
/* Prints the listing of cmds: "  NAME  HELP" a line. */
void cli_list(FILE *fp, const cli_command *cmds, size_t n);
/* The --help of the running command when it is a command of commands (bench): its usage
 * line and what it does, then the listing of cmds. */
void cli_help_commands(const cli_command *cmds, size_t n);

/* Parses argv[first..argc) against opts (terminated by CLI_END); argv[1..first) name the
 * command (for messages). Returns CLI_GO when the command goes on; else the exit status the
 * command returns: 0 after printing --help text built from the command's entry (cli_dispatch)
 * and the table, 2 after a usage error (message printed). Positional arguments are stored in
 * pos[] (up to max_pos); a command that takes none passes NULL, 0, NULL. */
int cli_parse(int argc, char **argv, int first, const cli_opt *opts, const char **pos,
              int max_pos, int *n_pos);
/* cli_parse for a command that takes no positional arguments. */
int cli_options(int argc, char **argv, int first, const cli_opt *opts);

/* 1 when the option (name without "--", an alias counting as the option it names) was on the
 * command line of the last cli_parse. */
int cli_given(const char *name);
/* The names of the options given to the last cli_parse; returns their number. */
int cli_given_list(const char *const **names);

/* A runtime error: prints "biflow: <last error>" on stderr; returns the exit status 1. */
int cli_fail(void);
/* A usage error: prints "biflow COMMAND: <message> (see --help)" on stderr (COMMAND from the
 * last cli_parse); returns the exit status 2. */
int cli_usage(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* The same with the last library error as the message (an option a library check refused). */
int cli_usage_fail(const char *command);
/* Range checks of numeric options: 0 when lo <= v <= hi (and v finite), else a usage error
 * naming the option and the range (returns 2). */
int cli_check_int(const char *name, long v, long lo, long hi);
int cli_check_float(const char *name, double v, double lo, double hi);

#endif
