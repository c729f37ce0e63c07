/* biflow: the command-line tool's dispatcher: the command table (with each command's --help
 * text), the listing of --help and --version. Each command lives in a tools/cmd_*.c file with
 * its own option table. */
#include "biflow.h"
#include "cli.h"
#include "commands.h"

#include <stdio.h>
#include <string.h>

/* The commands, with their --help: the usage line after "biflow NAME" and what they do. */
static const cli_command COMMANDS[] = {
    {"demo", cmd_demo, "a one-minute tour with the shipped models: both samplers, inpainting, editing",
     "[options]",
     "Samples with both samplers from the same noise, inpaints and edits test\n"
     "images, and prints the speed-up and evaluation figures, with the models\n"
     "shipped in models/ (about a minute on 2 cores)."},
    {"train-flow", cmd_train_flow, "train the forward model F (TARFlow) by maximum likelihood",
     "[options]",
     "Trains the forward model F (a TARFlow) by maximum likelihood."},
    {"train-reverse", cmd_train_reverse, "train the reverse model G (one-pass inverse) against a frozen F",
     "--flow MODEL [options]",
     "Trains the reverse model G (one-pass inverse of F) with F frozen:\n"
     "hidden alignment, learned denoising, norm control, training-time guidance."},
    {"eval-reverse", cmd_eval_reverse, "fidelity of G: G(F(x)) vs x, G(z) vs the exact inverse",
     "--reverse G [options]",
     "Fidelity of the learned inverse (METHOD Section 8): G(F(x)) against x on\n"
     "test images, and G(z) against the exact inverse F^-1(z) on the same z.\n"
     "PSNR = 10 log10(4 / mse) for pixels in [-1, 1]."},
    {"export-reverse", cmd_export_reverse, "write G as one file pointing at its forward model's new place",
     "--reverse G --flow F --out FILE",
     "Writes a reverse model as one file that points at its forward model's new\n"
     "location (e.g. after copying both into models/); the forward model must be\n"
     "the very file G was trained against (same SHA-256)."},
    {"eval", cmd_eval, "sample quality: FD and class accuracy of N samples, speed, bits/dim, fidelity",
     "(--reverse G | --flow F | --images X.npy) [options]",
     "Sample quality: Frechet distance between feature-network features of N\n"
     "samples and of the test split, class accuracy of class-conditional\n"
     "samples, speed; optionally bits/dim of F, fidelity of G, the FD floor."},
    {"eval-bpd", cmd_eval_bpd, "bits per dimension of F on a dataset split",
     "--flow MODEL [options]",
     "Bits per dimension of F with uniform dequantisation: "
     "(NLL + ln 128) / ln 2."},
    {"sample", cmd_sample, "sample images: exact or Jacobi inverse of F, or one pass of G; PNG grid + .npy",
     "--flow MODEL | --reverse G [options]",
     "Samples images: by inverting the forward model F (exact, jacobi) or in one\n"
     "pass of the learned reverse model G (biflow)."},
    {"bench", cmd_bench, "benchmarks: bench train, bench sample, bench gemm",
     "train|sample|gemm [options]",
     "Benchmarks; each reports achieved GFLOP/s (train: beside a baseline measured in the same run)."},
    {"inpaint", cmd_inpaint, "inpainting with G: keep the known tokens' encoding, fresh noise elsewhere",
     "--reverse G --mask NAME|PNG [options]",
     "Inpainting without training (METHOD Section 9): z' = M F(x) + (1 - M) eps,\n"
     "x' = G(z'), then --iters rounds of: paste the known pixels back, re-encode\n"
     "with F, renoise the unknown tokens, decode. The output's known pixels are the\n"
     "input's. Prints the mean squared error against the input in the known and\n"
     "the unknown region and the time per image; the PNG has a row per image:\n"
     "input | masked input (unknown region grey) | result."},
    {"edit", cmd_edit, "class editing: x' = G(F(x | y) | y') for target classes y'",
     "--reverse G --to K[,K...] [options]",
     "Class editing (METHOD Section 9): x' = G(z | y') for each target class y', with\n"
     "z = F(x | y') + s (F(x | y) - F(x | y')) (s = 1: z = F(x | y)); strengths above 1\n"
     "edit the result again. With --verify, each edit is the gentlest of a ladder of\n"
     "strengths that the verifier reads as the target class. The PNG has a row per\n"
     "image: the input, then one column per target."},
    {"reconstruct", cmd_reconstruct, "x -> F -> G -> x' with the error per image",
     "--reverse G [options]",
     "Reconstruction x -> F -> G -> x' (METHOD Section 9), with the error of each\n"
     "image: mse and PSNR = 10 log10(4 / mse) for pixels in [-1, 1]. The PNG has a\n"
     "row per image: input | reconstruction."},
    {"interpolate", cmd_interpolate, "decode the great-circle path between two images' encodings",
     "--reverse G [A.png B.png | --index I,J] [options]",
     "Interpolation in noise space (METHOD Section 9): encodes two images with F and\n"
     "decodes points of the great-circle path (slerp) between the encodings with G;\n"
     "the PNG is one row from the first image's end to the second's."},
    {"encode", cmd_encode, "encode images with F to noise (x, y, z, logdet as safetensors)",
     "--flow MODEL [options]",
     "Encodes images with F: writes x (n,C,H,W), y (n), z (n,T,D) and the\n"
     "log-determinant per dimension (n), e.g. to compare with PyTorch\n"
     "(dev/check_roundtrip.py)."},
    {"info", cmd_info, "show a model file's configuration",
     "MODEL.safetensors|RUN_DIR",
     "Prints a model's configuration and size (forward or reverse model), and, for a\n"
     "trainer's checkpoint, its steps, batch, seed and the precision of its last steps."},
    {"serve", cmd_serve, "a page to play with a model pair, and its JSON/PNG API (HTTP, 127.0.0.1)",
     "[--reverse G] [--flow F] [--port 8080] [--host 127.0.0.1] [options]",
     "Serves a page to play with a model pair (sampling with both samplers,\n"
     "interpolation, inpainting, class editing) and its JSON/PNG API:\n"
     "  GET  /api/info                       the models' configuration and sizes\n"
     "  GET  /api/sample?sampler=biflow|exact&class=K|all&w=&seed=&temperature=&n=\n"
     "  GET  /api/interpolate?from=seeds|images&a=&b=&class=&w=&steps=\n"
     "  GET  /api/testimage?index=I\n"
     "  POST /api/inpaint?index=I&mask=0101..|left-half|..&seed=&w=&iters= (body: a PNG, optional)\n"
     "  POST /api/edit?index=I&to=K|all&w=&strength=              (body: a PNG, optional)\n"
     "Images come back as PNG, with X-Biflow-Seconds and X-Biflow-Ms-Per-Image;\n"
     "a bad request gets a 4xx status and {\"error\": message}. SIGINT/SIGTERM stop it."},
    {"plot", cmd_plot, "draw training curves from log.jsonl files to a PNG",
     "LOG.jsonl|RUN_DIR [LOG2 ...] [options]",
     "Draws training curves from log.jsonl files (a run folder stands for\n"
     "its log.jsonl): a panel per series against step, the logs overlaid in\n"
     "distinct colours, each with its last, smallest and largest value."},
    {"train-features", cmd_train_features, "train the feature network (classifier for the FD)",
     "[options]",
     "Trains the feature network (a small convolutional classifier whose "
     "penultimate\nactivations are the features of the Frechet distance) "
     "and prints its test accuracy."},
    {"eval-features", cmd_eval_features, "Frechet distance of images against the test split",
     "--images X.npy [--labels L.npy] [--floor] [options]",
     "Frechet distance (FD) of images against the test split, in the "
     "features of the\nfeature network; N is printed with every FD."},
};

static void usage(FILE *fp) {
    fprintf(fp, "biflow %s: Bidirectional Normalizing Flows in C\n\nusage: biflow COMMAND [options]\n\n"
            "commands:\n", BF_VERSION);
    cli_list(fp, COMMANDS, sizeof COMMANDS / sizeof COMMANDS[0]);
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
    int rc = cli_dispatch(COMMANDS, sizeof COMMANDS / sizeof COMMANDS[0], argc, argv, 1);
    if (rc >= 0) return rc;
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
