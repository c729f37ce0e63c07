/* biflow commands of the reverse model G: train-reverse, eval-reverse. */
#include "biflow.h"
#include "cli.h"
#include "cmd_reverse.h"
#include "../src/core.h"
#include "../src/flow.h"
#include "../src/reverse.h"

#include <math.h>
#include <omp.h>
#include <string.h>

static int parse_choice(const char *opt, const char *v, const char *const *names, int n, int *out) {
    for (int i = 0; i < n; i++)
        if (!strcmp(v, names[i])) { *out = i; return 0; }
    fprintf(stderr, "biflow: --%s must be one of", opt);
    for (int i = 0; i < n; i++) fprintf(stderr, " %s", names[i]);
    fprintf(stderr, ", not '%s'\n", v);
    return -1;
}

static int parse_onoff(const char *opt, const char *v, int *out) {
    static const char *const names[] = {"off", "on"};
    return parse_choice(opt, v, names, 2, out);
}

/* ------------------------------------------------------------------ train-reverse */
int cmd_train_reverse(int argc, char **argv) {
    bf_reverse_train_opts o;
    bf_reverse_train_opts_default(&o);
    const char *inverse = "align", *denoise = "learned", *norm = "on", *cfg_train = "on";
    int final_eval = 10000;
    cli_opt opts[] = {
        {"flow", OPT_STR, &o.flow, "the trained forward model F (file or run folder; EMA weights)"},
        {"data", OPT_STR, &o.data, "dataset spec (as F's)"},
        {"out", OPT_STR, &o.out_dir, "run folder (checkpoints, log.jsonl)"},
        {"inverse", OPT_STR, &inverse, "align (hidden alignment), naive (reconstruction only) or distill (hidden distillation)"},
        {"denoise", OPT_STR, &denoise, "learned (a denoising stage) or none (G ends at the noisy estimate)"},
        {"norm-control", OPT_STR, &norm, "on: alignment distances divided by the target's mean square"},
        {"cfg-train", OPT_STR, &cfg_train, "on: w is an input (1-NFE guidance); off: plain conditional model"},
        {"w-max", OPT_FLOAT, &o.w_max, "largest training guidance scale (1 + w log-uniform on [1, 1 + w-max])"},
        {"adaptive-p", OPT_FLOAT, &o.adapt_p, "adaptive weighting D / sg((D + eps)^p); 0 = off"},
        {"adaptive-eps", OPT_FLOAT, &o.adapt_eps, "eps of the adaptive weighting"},
        {"align-weight", OPT_FLOAT, &o.align_weight, "lambda of every alignment stage"},
        {"width", OPT_INT, &o.model.channels, "G's width (0 = F's)"},
        {"head-dim", OPT_INT, &o.model.head_dim, "attention head size (0 = F's)"},
        {"layers-per-stage", OPT_INT, &o.model.layers_per_stage, "layers per alignment stage (0 = half of F's per block)"},
        {"denoise-layers", OPT_INT, &o.model.denoise_layers, "layers of the denoising stage (-1 = 2)"},
        {"w-freq", OPT_INT, &o.model.w_freq, "sinusoidal features of w (0 = 64)"},
        {"sigma", OPT_FLOAT, &o.sigma, "noise added to x before F (<0: F's training sigma)"},
        {"label-drop", OPT_FLOAT, &o.label_drop, "probability of the null class"},
        {"steps", OPT_INT, &o.steps, "training steps"},
        {"batch", OPT_INT, &o.batch, "images per step"},
        {"lr", OPT_FLOAT, &o.lr, "peak learning rate"},
        {"min-lr", OPT_FLOAT, &o.min_lr, "learning rate at the end of the cosine"},
        {"warmup", OPT_INT, &o.warmup, "linear warmup steps"},
        {"wd", OPT_FLOAT, &o.weight_decay, "AdamW weight decay (matrices only)"},
        {"beta1", OPT_FLOAT, &o.beta1, "AdamW beta1"},
        {"beta2", OPT_FLOAT, &o.beta2, "AdamW beta2"},
        {"clip", OPT_FLOAT, &o.grad_clip, "gradient-norm clipping (0 = off)"},
        {"ema", OPT_FLOAT, &o.ema_decay, "EMA decay of the weights"},
        {"seed", OPT_U64, &o.seed, "random seed (weights, data order, noise, w)"},
        {"ckpt-every", OPT_INT, &o.ckpt_every, "checkpoint every N steps (and at the end)"},
        {"log-every", OPT_INT, &o.log_every, "progress line and log record every N steps"},
        {"eval-every", OPT_INT, &o.eval_every, "G(F(x)) error on 1000 test images every N steps (0 = off)"},
        {"final-eval", OPT_INT, &final_eval, "test images for the final G(F(x)) error (0 = skip)"},
        {"resume", OPT_FLAG, &o.resume, "continue the run in --out from its last checkpoint"},
        {"threads", OPT_INT, &o.threads, "threads (0 = all cores)"},
        {"quiet", OPT_FLAG, &o.quiet, "no progress lines"},
        {NULL, 0, NULL, NULL},
    };
    const char *pos[1];
    int np, rc = cli_parse(argc, argv, 2, opts, "biflow train-reverse --flow MODEL [options]",
                           "Trains the reverse model G (one-pass inverse of F) with F frozen:\n"
                           "hidden alignment, learned denoising, norm control, training-time guidance.",
                           pos, 0, &np);
    if (rc) return rc > 0 ? 0 : 2;
    if (!o.flow) { fprintf(stderr, "biflow train-reverse: --flow is required (see --help)\n"); return 2; }
    static const char *const inv_names[] = {"align", "naive", "distill"};
    static const char *const den_names[] = {"none", "learned"};
    int inv, den;
    if (parse_choice("inverse", inverse, inv_names, 3, &inv) ||
        parse_choice("denoise", denoise, den_names, 2, &den) ||
        parse_onoff("norm-control", norm, &o.norm_control) ||
        parse_onoff("cfg-train", cfg_train, &o.cfg_train))
        return 2;
    o.inverse = (bf_inverse_kind)inv;
    if (!den) o.model.denoise_layers = 0;
    if (bf_train_reverse(&o)) return cli_fail();
    if (final_eval <= 0) return 0;
    bf_reverse *r = bf_reverse_load(o.out_dir, 1);
    bf_flow *f = bf_flow_load(o.flow, 1);
    bf_dataset ds = {0};
    double mse, psnr;
    if (!r || !f || bf_dataset_load(&ds, o.data, "test") ||
        bf_reverse_eval_recon(r, f, &ds, final_eval, 0.0f, 1234, &mse, &psnr))
        return cli_fail();
    printf("G(F(x)) vs x on %d test images (EMA weights): mse %.6f, PSNR %.2f dB\n",
           final_eval < ds.n ? final_eval : ds.n, mse, psnr);
    bf_dataset_free(&ds);
    bf_flow_free(f);
    bf_reverse_free(r);
    return 0;
}
