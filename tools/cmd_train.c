/* biflow commands of the forward model F: train-flow (a new run, or --resume) and eval-bpd. */
#include "biflow.h"
#include "cli.h"
#include "commands.h"
#include "tool_util.h"

#include <stdio.h>
#include <string.h>

/* ------------------------------------------------------------------ train-flow */
/* The test bits/dim of the run's EMA weights on its first n test images (under mpirun:
 * split over the processes, rank 0 reports). */
static int final_bpd(const bf_train_opts *o, int n) {
    bf_flow *f = bf_flow_load(o->out_dir, 1);
    bf_dataset ds = {0};
    double bpd;
    if (bf_dist_check(!f || bf_dataset_load(&ds, o->data, "test")) ||
        bf_eval_bpd(f, &ds, 256, n, 1234, &bpd, !o->quiet && bf_dist_is_root()))
        return cli_fail();
    if (bf_dist_is_root())
        printf("test bits/dim (EMA weights, %d images, uniform dequantisation): %.4f\n",
           n < ds.n ? n : ds.n, bpd);
    bf_dataset_free(&ds);
    bf_flow_free(f);
    return 0;
}

/* Options checked before training: a bad one is a usage error (2). */
static int train_flow_check(bf_train_opts *o, const shape_opts *sh, const char *noise) {
    o->noise = !strcmp(noise, "gauss") ? BF_NOISE_GAUSS : BF_NOISE_UNIFORM;
    const char *const *given;
    int n_given = cli_given_list(&given);
    if (resolve_shape(&o->model, sh) ||
        (o->resume && bf_train_flow_resume_opts(o, sh->config, given, n_given)) ||
        bf_train_flow_check_opts(o))
        return cli_usage_fail(NULL);
    return 0;
}

int cmd_train_flow(int argc, char **argv) {
    bf_train_opts o;
    bf_train_opts_default(&o);
    shape_opts sh = SHAPE_OPTS_DEFAULT;
    const char *noise = "uniform";
    int eval_n = 10000;
    cli_opt opts[] = {
        SHAPE_CONFIG_OPT(sh),
        SHAPE_SIZE_OPTS(sh),
        CLI_DATA_OPT(o.data, ""),
        CLI_RUN_DIR_OPT(o),
        CLI_OPTIM_OPTS(o),
        CLI_CHOICE("noise", noise, "uniform|gauss", "training noise: uniform (dequantisation, for bits/dim) or gauss"),
        {"sigma", OPT_FLOAT, &o.sigma, "Gaussian noise std with --noise gauss"},
        CLI_LABEL_DROP_OPT(o.label_drop),
        {"seed", OPT_U64, &o.seed, "random seed (weights, data order, noise)"},
        CLI_RUN_OPTS(o, eval_n, "test bits/dim on 2000 images", "bits/dim"),
        CLI_END,
    };
    int rc = cli_options(argc, argv, 2, opts);
    if (rc != CLI_GO) return rc;
    if ((rc = cli_check_int("eval-n", eval_n, 0, 1000000000)) || (rc = train_flow_check(&o, &sh, noise)))
        return rc;
    cli_default_bf16(o.resume ? o.out_dir : NULL, "flow.safetensors");
    int trc = bf_train_flow(&o);
    if (trc < 0) return cli_fail();
    if (trc > 0 || eval_n == 0) return 0;   /* interrupted: no final evaluation */
    return final_bpd(&o, eval_n);
}

/* ------------------------------------------------------------------ eval-bpd */
int cmd_eval_bpd(int argc, char **argv) {
    const char *flow = NULL, *data = "fashion-mnist", *split = "test";
    int raw = 0, n = 0, batch = 256;
    uint64_t seed = 1234;
    cli_opt opts[] = {
        CLI_FLOW_DATA_OPTS(flow, raw, data, split, n),
        CLI_ALIAS("limit", "n"),
        {"batch", OPT_INT, &batch, "images per pass"},
        {"seed", OPT_U64, &seed, "dequantisation noise seed"},
        CLI_COMPUTE_OPTS,
        CLI_END,
    };
    const char *pos[1];
    int np, rc = cli_parse(argc, argv, 2, opts, pos, 1, &np);
    if (rc != CLI_GO) return rc;
    if (np == 1 && !flow) flow = pos[0];
    if (!flow) return cli_usage("--flow is required");
    if ((rc = cli_check_int("n", n, 0, 1000000000)) || (rc = cli_check_int("batch", batch, 1, 65536)))
        return rc;
    bf_flow *f = bf_flow_load(flow, !raw);   /* under mpirun: split over the processes */
    bf_dataset ds = {0};
    double bpd, t0 = bf_time();
    if (bf_dist_check(!f || bf_dataset_load(&ds, data, split)) ||
        bf_eval_bpd(f, &ds, batch, n, seed, &bpd, bf_dist_is_root()))
        return cli_fail();
    if (bf_dist_is_root())
        printf("%s split, %d images, %s weights: %.4f bits/dim (%.1f s)\n", split,
           n > 0 && n < ds.n ? n : ds.n, raw ? "raw" : "EMA", bpd, bf_time() - t0);
    bf_dataset_free(&ds);
    bf_flow_free(f);
    return 0;
}
