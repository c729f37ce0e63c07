/* biflow: the command-line tool's dispatcher: the command table, the listing of --help and
 * --version. Each command lives in a tools/cmd_*.c file with its own option table. */
#include "biflow.h"
#include "commands.h"

#include <stdio.h>
#include <string.h>

typedef struct { const char *name; int (*fn)(int, char **); const char *help; } command;

static const command COMMANDS[] = {
    {"demo", cmd_demo, "a one-minute tour with the shipped models: both samplers, inpainting, editing"},
    {"train-flow", cmd_train_flow, "train the forward model F (TARFlow) by maximum likelihood"},
    {"train-reverse", cmd_train_reverse, "train the reverse model G (one-pass inverse) against a frozen F"},
    {"eval-reverse", cmd_eval_reverse, "fidelity of G: G(F(x)) vs x, G(z) vs the exact inverse"},
    {"export-reverse", cmd_export_reverse, "write G as one file pointing at its forward model's new place"},
    {"eval", cmd_eval, "sample quality: FD and class accuracy of N samples, speed, bits/dim, fidelity"},
    {"eval-bpd", cmd_eval_bpd, "bits per dimension of F on a dataset split"},
    {"sample", cmd_sample, "sample images: exact or Jacobi inverse of F, or one pass of G; PNG grid + .npy"},
    {"bench", cmd_bench, "benchmarks: bench train, bench sample, bench gemm"},
    {"inpaint", cmd_inpaint, "inpainting with G: keep the known tokens' encoding, fresh noise elsewhere"},
    {"edit", cmd_edit, "class editing: x' = G(F(x | y) | y') for target classes y'"},
    {"reconstruct", cmd_reconstruct, "x -> F -> G -> x' with the error per image"},
    {"interpolate", cmd_interpolate, "decode the great-circle path between two images' encodings"},
    {"encode", cmd_encode, "encode images with F to noise (x, y, z, logdet as safetensors)"},
    {"info", cmd_info, "show a model file's configuration"},
    {"serve", cmd_serve, "a page to play with a model pair, and its JSON/PNG API (HTTP, 127.0.0.1)"},
    {"plot", cmd_plot, "draw training curves from log.jsonl files to a PNG"},
    {"train-features", cmd_train_features, "train the feature network (classifier for the FD)"},
    {"eval-features", cmd_eval_features, "Frechet distance of images against the test split"},
};

static void usage(FILE *fp) {
    fprintf(fp, "biflow %s: Bidirectional Normalizing Flows in C\n\nusage: biflow COMMAND [options]\n\n"
            "commands:\n", BF_VERSION);
    for (size_t i = 0; i < sizeof COMMANDS / sizeof COMMANDS[0]; i++)
        fprintf(fp, "  %-15s %s\n", COMMANDS[i].name, COMMANDS[i].help);
    fprintf(fp, "\n'biflow COMMAND --help' describes each command's options. Exit status: 0 done,\n"
            "1 a runtime error (\"biflow: ...\"), 2 a usage error (\"biflow COMMAND: ... (see --help)\").\n");
}

static int run_command(int argc, char **argv) {
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(argv[1], "--version")) { printf("biflow %s\n", BF_VERSION); return 0; }
    for (size_t i = 0; i < sizeof COMMANDS / sizeof COMMANDS[0]; i++)
        if (!strcmp(argv[1], COMMANDS[i].name)) return COMMANDS[i].fn(argc, argv);
    fprintf(stderr, "biflow: unknown command '%s' (see biflow --help)\n", argv[1]);
    return 2;
}

/* Under mpirun (or srun) every process runs the command; the trainers, eval, eval-bpd, sample
 * and bench train split their work over them (biflow.h, "processes"). */
int main(int argc, char **argv) {
    if (bf_dist_init(&argc, &argv)) {
        fprintf(stderr, "biflow: %s\n", bf_last_error());
        return 1;
    }
    int rc = run_command(argc, argv);
    bf_dist_finalize();
    return rc;
}
