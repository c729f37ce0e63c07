/* A small table-driven option parser shared by the biflow commands. */
#ifndef BF_CLI_H
#define BF_CLI_H

/* The most samples sample and eval hold in memory at once (N x C x H x W floats and more). */
#define CLI_MAX_SAMPLES 1000000

#include <stdint.h>

typedef enum { OPT_INT, OPT_FLOAT, OPT_STR, OPT_FLAG, OPT_U64 } opt_kind;

typedef struct {
    const char *name;      /* without the leading "--" */
    opt_kind kind;
    void *ptr;
    const char *help;
} cli_opt;

/* The optimiser's options, for the trainers whose option structs name them alike. */
#define CLI_OPTIM_OPTS(o)                                                                  \
    {"steps", OPT_INT, &(o).steps, "training steps"},                                     \
    {"batch", OPT_INT, &(o).batch, "images per step"},                                    \
    {"lr", OPT_FLOAT, &(o).lr, "peak learning rate"},                                     \
    {"min-lr", OPT_FLOAT, &(o).min_lr, "learning rate at the end of the cosine"},         \
    {"warmup", OPT_INT, &(o).warmup, "linear warmup steps"},                              \
    {"wd", OPT_FLOAT, &(o).weight_decay, "AdamW weight decay (matrices only)"},           \
    {"beta1", OPT_FLOAT, &(o).beta1, "AdamW beta1"},                                      \
    {"beta2", OPT_FLOAT, &(o).beta2, "AdamW beta2"},                                      \
    {"clip", OPT_FLOAT, &(o).grad_clip, "gradient-norm clipping (0 = off)"},              \
    {"ema", OPT_FLOAT, &(o).ema_decay, "EMA decay of the weights"}

/* --precision, on every command that computes with F or G: cli_parse applies it
 * (bf_set_precision) and refuses a value other than fp32 and bf16. */
extern const char *cli_precision;
#define CLI_PRECISION_OPT                                                                  \
    {"precision", OPT_STR, &cli_precision,                                                 \
     "matrix products of F and G: fp32 or bf16 (bfloat16 operands, fp32 sums; CPUs with "  \
     "AVX512-BF16, else fp32 with a note). Default fp32 (or $BF_PRECISION): bf16 becomes "  \
     "the default only once its quality is measured"}

/* Parses argv[first..argc) against opts (terminated by a NULL name). Prints --help text built
 * from the table (usage line and summary first) and returns 1 for --help; -1 on a bad option
 * (message on stderr); 0 otherwise. Positional arguments are stored in pos[] (up to max_pos). */
int cli_parse(int argc, char **argv, int first, const cli_opt *opts, const char *usage,
              const char *summary, const char **pos, int max_pos, int *n_pos);

/* 1 when the option (name without "--") was on the command line of the last cli_parse. */
int cli_given(const char *name);

/* Prints "biflow: <last error>" on stderr; returns the exit status 1. */
int cli_fail(void);
/* The same for an error in the command line (an option out of range, conflicting options):
 * "biflow COMMAND: <last error>"; returns the exit status 2. */
int cli_usage_fail(const char *command);

#endif
