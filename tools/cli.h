/* A small table-driven option parser shared by the biflow commands. */
#ifndef BF_CLI_H
#define BF_CLI_H

#include <stdint.h>

typedef enum { OPT_INT, OPT_FLOAT, OPT_STR, OPT_FLAG, OPT_U64 } opt_kind;

typedef struct {
    const char *name;      /* without the leading "--" */
    opt_kind kind;
    void *ptr;
    const char *help;
} cli_opt;

/* Parses argv[first..argc) against opts (terminated by a NULL name). Prints --help text built
 * from the table (usage line and summary first) and returns 1 for --help; -1 on a bad option
 * (message on stderr); 0 otherwise. Positional arguments are stored in pos[] (up to max_pos). */
int cli_parse(int argc, char **argv, int first, const cli_opt *opts, const char *usage,
              const char *summary, const char **pos, int max_pos, int *n_pos);

/* Prints "biflow: <last error>" on stderr; returns the exit status 1. */
int cli_fail(void);

#endif
