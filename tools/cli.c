/* Option parsing for the CLI: --name value or --name=value, --flag, --name on|off, choices,
 * deprecated aliases, and --help; the CLI's error messages (see cli.h). */
#include "cli.h"
#include "biflow.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

const char *cli_precision;
int cli_threads;

static char command[64] = "";    /* "sample", "bench train": the command of the last parse */
static const char *given[128];   /* the options of the last parse's command line */
static int n_given;

static const cli_command *running;   /* the entry of the command cli_dispatch runs */

int cli_dispatch(const cli_command *cmds, size_t n, int argc, char **argv, int at) {
    for (size_t i = 0; i < n; i++)
        if (!strcmp(argv[at], cmds[i].name)) {
            running = &cmds[i];
            return cmds[i].fn(argc, argv);
        }
    return -1;
}

void cli_list(FILE *fp, const cli_command *cmds, size_t n) {
    for (size_t i = 0; i < n; i++) fprintf(fp, "  %-15s %s\n", cmds[i].name, cmds[i].help);
}

void cli_help_commands(const cli_command *cmds, size_t n) {
    if (running) printf("usage: biflow %s %s\n\n%s\n", running->name, running->synopsis, running->about);
    cli_list(stdout, cmds, n);
}

static void print_help(const cli_opt *opts) {
    printf("usage: biflow %s %s\n\n%s\n\noptions:\n", command, running ? running->synopsis : "[options]",
           running ? running->about : "");
    for (const cli_opt *o = opts; o->name; o++) {
        if (o->kind == OPT_ALIAS) continue;   /* deprecated spellings stay out of the help */
        char def[96] = "", left[96];
        const char *arg = " N";
        switch (o->kind) {
        case OPT_INT: snprintf(def, sizeof def, " (default %d)", *(int *)o->ptr); break;
        case OPT_U64: snprintf(def, sizeof def, " (default %llu)", (unsigned long long)*(uint64_t *)o->ptr); break;
        case OPT_FLOAT: snprintf(def, sizeof def, " (default %g)", (double)*(float *)o->ptr); break;
        case OPT_STR:
            arg = " S";
            if (*(const char **)o->ptr) snprintf(def, sizeof def, " (default %s)", *(const char **)o->ptr);
            break;
        case OPT_ONOFF:
            arg = " on|off";
            snprintf(def, sizeof def, " (default %s)", *(int *)o->ptr ? "on" : "off");
            break;
        case OPT_CHOICE: {
            const cli_choice *c = o->ptr;
            arg = " W";
            if (*c->value) snprintf(def, sizeof def, " (default %s)", *c->value);
            snprintf(left, sizeof left, "--%s %s", o->name, c->words);
            break;
        }
        case OPT_FLAG: case OPT_ALIAS: arg = ""; break;
        }
        if (o->kind != OPT_CHOICE) snprintf(left, sizeof left, "--%s%s", o->name, arg);
        if (strlen(left) > 22) printf("  %s\n  %-22s %s%s\n", left, "", o->help, def);
        else printf("  %-22s %s%s\n", left, o->help, def);
    }
    printf("  %-22s %s\n", "--help", "show this help");
}

/* 1 when v is one of the "|"-separated words */
static int is_word(const char *words, const char *v) {
    size_t n = strlen(v);
    for (const char *p = words; *p;) {
        const char *bar = strchr(p, '|');
        size_t len = bar ? (size_t)(bar - p) : strlen(p);
        if (len == n && !strncmp(p, v, n)) return 1;
        p += len + (bar != NULL);
    }
    return 0;
}

static int bad_value(const cli_opt *o, const char *v) {
    const char *what = o->kind == OPT_FLOAT ? "a number" : o->kind == OPT_U64 ? "a non-negative integer"
                     : o->kind == OPT_ONOFF ? "on or off" : "an integer";
    if (o->kind == OPT_CHOICE) {
        char words[256] = "";   /* "a, b or c" */
        const char *w = ((const cli_choice *)o->ptr)->words;
        for (const char *p = w; *p;) {
            const char *bar = strchr(p, '|');
            int len = bar ? (int)(bar - p) : (int)strlen(p);
            snprintf(words + strlen(words), sizeof words - strlen(words), "%s%.*s",
                     p == w ? "" : bar ? ", " : " or ", len, p);
            p += len + (bar != NULL);
        }
        cli_usage("--%s must be %s, not '%s'", o->name, words, v);
    } else {
        cli_usage("--%s expects %s, got '%s'", o->name, what, v);
    }
    return -1;
}

static int set_value(const cli_opt *o, const char *v) {
    char *end;
    errno = 0;
    switch (o->kind) {
    case OPT_INT: {
        long x = strtol(v, &end, 10);
        if (errno || *end || end == v || x < -2147483647L || x > 2147483647L) return bad_value(o, v);
        *(int *)o->ptr = (int)x;
        return 0;
    }
    case OPT_U64: {
        unsigned long long x = strtoull(v, &end, 10);
        if (errno || *end || end == v || v[0] == '-') return bad_value(o, v);
        *(uint64_t *)o->ptr = x;
        return 0;
    }
    case OPT_FLOAT: {
        float x = strtof(v, &end);
        if (errno || *end || end == v) return bad_value(o, v);
        *(float *)o->ptr = x;
        return 0;
    }
    case OPT_ONOFF:
        if (strcmp(v, "on") && strcmp(v, "off")) return bad_value(o, v);
        *(int *)o->ptr = !strcmp(v, "on");
        return 0;
    case OPT_CHOICE:
        if (!is_word(((const cli_choice *)o->ptr)->words, v)) return bad_value(o, v);
        *((const cli_choice *)o->ptr)->value = v;
        return 0;
    case OPT_STR: *(const char **)o->ptr = v; return 0;
    case OPT_FLAG: case OPT_ALIAS: break;
    }
    return bad_value(o, v);
}

int cli_given(const char *name) {
    for (int i = 0; i < n_given; i++)
        if (!strcmp(given[i], name)) return 1;
    return 0;
}

void cli_default_bf16(const char *run_dir, const char *record) {
    const char *env = getenv("BF_PRECISION");
    if (cli_given("precision") || (env && *env)) return;
    bf_precision p = BF_PRECISION_BF16;
    bf_safetensors st;
    char path[4096];
    if (run_dir && snprintf(path, sizeof path, "%s/%s", run_dir, record) < (int)sizeof path &&
        access(path, R_OK) == 0 && bf_st_load(&st, path) == 0) {
        const char *v = bf_st_meta(&st, "precision");
        if (!v || bf_precision_parse(&p, v)) p = BF_PRECISION_FP32;
        bf_st_free(&st);
    }
    bf_set_precision(p);   /* a CPU without bf16 products (or BF_GEMM=blas) stays fp32, silently */
    if (bf_precision_effective() != p) bf_set_precision(BF_PRECISION_FP32);
}

int cli_given_list(const char *const **names) {
    *names = given;
    return n_given;
}

/* The option named by "--name" or "--name=value" (len: the name's length); aliases resolved,
 * with their note. NULL after a usage message for an unknown one. */
static const cli_opt *find_opt(const cli_opt *opts, const char *arg, const char *name, size_t len) {
    const cli_opt *o = opts;
    while (o->name && !(strlen(o->name) == len && !strncmp(o->name, name, len))) o++;
    if (o->name && o->kind == OPT_ALIAS) {
        const char *to = o->ptr;
        fprintf(stderr, "biflow %s: note: --%s is deprecated, use --%s\n", command, o->name, to);
        for (o = opts; o->name && strcmp(o->name, to); o++) {}
    }
    if (!o->name) {
        cli_usage("unknown option '%.*s'", (int)(len + 2), arg);
        return NULL;
    }
    return o;
}

/* Applies one option; i advances past a separate value. 0 or -1 (message printed). */
static int parse_opt(int argc, char **argv, int *i, const cli_opt *opts) {
    const char *a = argv[*i], *name = a + 2, *eq = strchr(name, '=');
    size_t len = eq ? (size_t)(eq - name) : strlen(name);
    const cli_opt *o = find_opt(opts, a, name, len);
    if (!o) return -1;
    const char *v = eq ? eq + 1 : NULL;
    if (n_given < (int)(sizeof given / sizeof given[0])) given[n_given++] = o->name;
    if (o->kind == OPT_FLAG) {
        if (v) { cli_usage("--%s takes no value", o->name); return -1; }
        *(int *)o->ptr = 1;
        return 0;
    }
    if (!v) {
        if (*i + 1 >= argc) { cli_usage("--%s needs a value", o->name); return -1; }
        v = argv[++*i];
    }
    if (set_value(o, v)) return -1;
    /* --threads is every command's; 0 means all cores, and a negative count means nothing */
    if (!strcmp(o->name, "threads") && o->kind == OPT_INT && cli_check_int("threads", *(int *)o->ptr, 0, 4096))
        return -1;
    if (o->ptr == &cli_threads && cli_threads > 0) bf_set_threads(cli_threads);
    if (!strcmp(o->name, "precision") && o->kind == OPT_CHOICE) {
        bf_precision p;
        if (bf_precision_parse(&p, cli_precision)) return bad_value(o, cli_precision);
        bf_set_precision(p);
    }
    return 0;
}

/* A model path under models/ that the working folder does not hold (the CLI runs outside
 * the source tree): the installed copy, BF_DATADIR/models/..., when that exists. Only the
 * installed CLI is built with BF_DATADIR (make install). */
static const char *installed_model(const char *path) {
#ifdef BF_DATADIR
    static char buf[8][4096];
    static int used;
    if (!path || strncmp(path, "models/", 7) || access(path, F_OK) == 0 || used >= 8) return path;
    snprintf(buf[used], sizeof buf[used], "%s/%s", BF_DATADIR, path);
    if (access(buf[used], F_OK) == 0) return buf[used++];
#endif
    return path;
}

/* The options that name a model to read: --flow, --reverse, --features, --init. */
static void resolve_models(const cli_opt *opts) {
    static const char *const MODEL_OPTS[] = {"flow", "reverse", "features", "init"};
    for (const cli_opt *o = opts; o->name; o++)
        for (size_t k = 0; o->kind == OPT_STR && k < sizeof MODEL_OPTS / sizeof MODEL_OPTS[0]; k++)
            if (!strcmp(o->name, MODEL_OPTS[k]))
                *(const char **)o->ptr = installed_model(*(const char **)o->ptr);
}

int cli_parse(int argc, char **argv, int first, const cli_opt *opts, const char **pos,
              int max_pos, int *n_pos) {
    int n = 0;
    n_given = 0;
    cli_threads = 0;
    command[0] = 0;
    for (int i = 1; i < first && i < argc; i++)
        snprintf(command + strlen(command), sizeof command - strlen(command), "%s%s", i > 1 ? " " : "", argv[i]);
    for (int i = first; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) { print_help(opts); return 0; }
        if (strncmp(a, "--", 2)) {
            if (n >= max_pos) return cli_usage("unexpected argument '%s'", a);
            pos[n++] = a;
            continue;
        }
        if (parse_opt(argc, argv, &i, opts)) return 2;
    }
    if (n_pos) *n_pos = n;
    resolve_models(opts);
    return CLI_GO;
}

int cli_options(int argc, char **argv, int first, const cli_opt *opts) {
    return cli_parse(argc, argv, first, opts, NULL, 0, NULL);
}

/* Under mpirun: a failure all processes learnt of from another (bf_dist_check) is reported by
 * that one alone, a usage error (the same everywhere) by rank 0. */
int cli_fail(void) {
    if (bf_dist_error_elsewhere()) return 1;
    if (bf_dist_size() > 1) fprintf(stderr, "biflow (rank %d of %d): %s\n", bf_dist_rank(), bf_dist_size(), bf_last_error());
    else fprintf(stderr, "biflow: %s\n", bf_last_error());
    return 1;
}

int cli_usage(const char *fmt, ...) {
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    /* under mpirun a usage error is the same everywhere: rank 0 reports it */
    if (bf_dist_rank() == 0) fprintf(stderr, "biflow %s: %s (see --help)\n", command[0] ? command : "", msg);
    return 2;
}

int cli_usage_fail(const char *cmd) {
    if (bf_dist_rank() == 0) fprintf(stderr, "biflow %s: %s (see --help)\n", cmd ? cmd : command, bf_last_error());
    return 2;
}

int cli_check_int(const char *name, long v, long lo, long hi) {
    if (v >= lo && v <= hi) return 0;
    return cli_usage("--%s %ld is out of range: %ld to %ld", name, v, lo, hi);
}

int cli_check_float(const char *name, double v, double lo, double hi) {
    if (isfinite(v) && v >= lo && v <= hi) return 0;
    return cli_usage("--%s %g is out of range: %g to %g", name, v, lo, hi);
}
