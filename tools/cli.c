/* Option parsing for the CLI: --name value or --name=value, --flag, and --help. */
#include "cli.h"
#include "biflow.h"
#include "../src/dist.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void print_help(const cli_opt *opts, const char *usage, const char *summary) {
    printf("usage: %s\n\n%s\n\noptions:\n", usage, summary);
    for (const cli_opt *o = opts; o->name; o++) {
        char def[64] = "";
        switch (o->kind) {
        case OPT_INT: snprintf(def, sizeof def, " (default %d)", *(int *)o->ptr); break;
        case OPT_U64: snprintf(def, sizeof def, " (default %llu)", (unsigned long long)*(uint64_t *)o->ptr); break;
        case OPT_FLOAT: snprintf(def, sizeof def, " (default %g)", (double)*(float *)o->ptr); break;
        case OPT_STR:
            if (*(const char **)o->ptr) snprintf(def, sizeof def, " (default %s)", *(const char **)o->ptr);
            break;
        case OPT_FLAG: break;
        }
        const char *arg = o->kind == OPT_FLAG ? "" : o->kind == OPT_STR ? " S" : " N";
        char left[64];
        snprintf(left, sizeof left, "--%s%s", o->name, arg);
        printf("  %-22s %s%s\n", left, o->help, def);
    }
    printf("  %-22s %s\n", "--help", "show this help");
}

static int set_value(const cli_opt *o, const char *v) {
    char *end;
    errno = 0;
    switch (o->kind) {
    case OPT_INT: {
        long x = strtol(v, &end, 10);
        if (errno || *end || end == v || x < -2147483647L || x > 2147483647L) goto bad;
        *(int *)o->ptr = (int)x;
        return 0;
    }
    case OPT_U64: {
        unsigned long long x = strtoull(v, &end, 10);
        if (errno || *end || end == v || v[0] == '-') goto bad;
        *(uint64_t *)o->ptr = x;
        return 0;
    }
    case OPT_FLOAT: {
        float x = strtof(v, &end);
        if (errno || *end || end == v) goto bad;
        *(float *)o->ptr = x;
        return 0;
    }
    case OPT_STR: *(const char **)o->ptr = v; return 0;
    case OPT_FLAG: *(int *)o->ptr = 1; return 0;
    }
bad:
    fprintf(stderr, "biflow: --%s expects %s, got '%s'\n", o->name,
            o->kind == OPT_FLOAT ? "a number" : "an integer", v);
    return -1;
}

const char *cli_precision;

static const char *given[128];   /* the options of the last parse's command line */
static int n_given;

int cli_given(const char *name) {
    for (int i = 0; i < n_given; i++)
        if (!strcmp(given[i], name)) return 1;
    return 0;
}

int cli_parse(int argc, char **argv, int first, const cli_opt *opts, const char *usage,
              const char *summary, const char **pos, int max_pos, int *n_pos) {
    *n_pos = 0;
    n_given = 0;
    for (int i = first; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) { print_help(opts, usage, summary); return 1; }
        if (strncmp(a, "--", 2)) {
            if (*n_pos >= max_pos) { fprintf(stderr, "biflow: unexpected argument '%s'\n", a); return -1; }
            pos[(*n_pos)++] = a;
            continue;
        }
        const char *name = a + 2, *eq = strchr(name, '=');
        size_t len = eq ? (size_t)(eq - name) : strlen(name);
        const cli_opt *o = opts;
        while (o->name && !(strlen(o->name) == len && !strncmp(o->name, name, len))) o++;
        if (!o->name) {
            fprintf(stderr, "biflow: unknown option '%s' (see --help)\n", a);
            return -1;
        }
        const char *v = eq ? eq + 1 : NULL;
        if (n_given < (int)(sizeof given / sizeof given[0])) given[n_given++] = o->name;
        if (o->kind == OPT_FLAG) {
            if (v) { fprintf(stderr, "biflow: --%s takes no value\n", o->name); return -1; }
            *(int *)o->ptr = 1;
            continue;
        }
        if (!v) {
            if (i + 1 >= argc) { fprintf(stderr, "biflow: --%s needs a value\n", o->name); return -1; }
            v = argv[++i];
        }
        if (set_value(o, v)) return -1;
        /* --threads is every command's; 0 means all cores, and a negative count means nothing */
        if (!strcmp(o->name, "threads") && o->kind == OPT_INT && (*(int *)o->ptr < 0 || *(int *)o->ptr > 4096)) {
            fprintf(stderr, "biflow: --threads %d is out of range: 0 (all cores) to 4096\n", *(int *)o->ptr);
            return -1;
        }
        if (!strcmp(o->name, "precision") && o->ptr == (void *)&cli_precision) {
            bf_precision p;
            if (bf_precision_parse(&p, cli_precision)) {
                fprintf(stderr, "biflow: --precision must be fp32 or bf16, not '%s'\n", cli_precision);
                return -1;
            }
            bf_set_precision(p);
        }
    }
    return 0;
}

/* Under mpirun: a failure all processes learnt of from another (bf_dist_check) is reported by
 * that one alone, a usage error (the same everywhere) by rank 0. */
int cli_fail(void) {
    if (bf_dist_error_elsewhere()) return 1;
    if (bf_dist_size() > 1) fprintf(stderr, "biflow (rank %d of %d): %s\n", bf_dist_rank(), bf_dist_size(), bf_last_error());
    else fprintf(stderr, "biflow: %s\n", bf_last_error());
    return 1;
}

int cli_usage_fail(const char *command) {
    if (bf_dist_rank() == 0) fprintf(stderr, "biflow %s: %s\n", command, bf_last_error());
    return 2;
}
