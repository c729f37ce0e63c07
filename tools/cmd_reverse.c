/* biflow commands of the reverse model G: train-reverse, eval-reverse, export-reverse. */
#include "biflow.h"
#include "cli.h"
#include "commands.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ train-reverse */
/* G(F(x)) against x on the first n test images, with the EMA weights of the run. */
static int final_recon(const bf_reverse_train_opts *o, int n) {
    if (!bf_dist_is_root()) return 0;   /* under mpirun: rank 0 measures and reports */
    bf_reverse *r = bf_reverse_load(o->out_dir, 1);
    bf_flow *f = bf_flow_load(o->flow, 1);
    bf_dataset ds = {0};
    double mse, psnr;
    if (!r || !f || bf_dataset_load(&ds, o->data, "test") ||
        bf_reverse_eval_recon(r, f, &ds, n, 0.0f, 1234, &mse, &psnr))
        return cli_fail();
    printf("G(F(x)) vs x on %d test images (EMA weights): mse %.6f, PSNR %.2f dB\n",
           n < ds.n ? n : ds.n, mse, psnr);
    bf_dataset_free(&ds);
    bf_flow_free(f);
    bf_reverse_free(r);
    return 0;
}

/* Words of the choices, by the index the options struct holds. */
static int word_index(const char *v, const char *const *words) {
    for (int i = 0; words[i]; i++)
        if (!strcmp(v, words[i])) return i;
    return 0;   /* cli_parse accepted only these words */
}

/* The choices into o, --resume's record, the trainer's checks: 0 or a usage error (2), or a
 * runtime error (1) when a resumed run's record cannot be read. */
static int train_reverse_check(bf_reverse_train_opts *o, const char *inverse, const char *denoise,
                               const char *norm) {
    static const char *const inv_names[] = {"align", "naive", "distill", NULL};
    static const char *const norm_names[] = {"off", "sample", "token", NULL};
    o->inverse = (bf_inverse_kind)word_index(inverse, inv_names);
    o->norm_control = word_index(norm, norm_names);
    if (!strcmp(denoise, "none")) o->model.denoise_layers = 0;
    if (!o->flow && !o->resume) return cli_usage("--flow is required");
    const char *const *given;
    int n_given = cli_given_list(&given);
    int arc = o->resume ? bf_train_reverse_resume_opts(o, given, n_given) : 0;
    if (arc == -2) return cli_fail();
    if (arc || bf_train_reverse_check_opts(o)) return cli_usage_fail(NULL);
    return 0;
}

/* Trains, then measures G(F(x)) on eval_n test images (not when interrupted). */
static int train_reverse_run(const bf_reverse_train_opts *o, int eval_n) {
    cli_default_bf16(o->resume ? o->out_dir : NULL, "reverse.safetensors");
    int trc = bf_train_reverse(o);
    if (trc < 0) return cli_fail();
    return trc > 0 || eval_n == 0 ? 0 : final_recon(o, eval_n);
}

int cmd_train_reverse(int argc, char **argv) {
    bf_reverse_train_opts o;
    bf_reverse_train_opts_default(&o);
    o.perceptual = 1.0f;   /* G's default recipe: the perceptual term on the perceptual network */
    const char *inverse = "align", *denoise = "learned", *norm = "sample";
    int eval_n = 10000;
    cli_opt opts[] = {
        {"flow", OPT_STR, &o.flow, "the trained forward model F (file or run folder; EMA weights)"},
        CLI_DATA_OPT(o.data, " (F's)"),
        CLI_RUN_DIR_OPT(o),
        CLI_CHOICE("inverse", inverse, "align|naive|distill", "align (hidden alignment), naive (reconstruction only) or distill (hidden distillation)"),
        CLI_CHOICE("denoise", denoise, "learned|none", "learned (a denoising stage) or none (G ends at the noisy estimate)"),
        CLI_CHOICE("norm-control", norm, "off|sample|token", "token: target state and head output divided by the target token's RMS; sample: distance divided by the target's mean square per image (cancels under adaptive weighting); off"),
        {"cfg-train", OPT_ONOFF, &o.cfg_train, "on: w is an input (1-NFE guidance); off: plain conditional model"},
        {"w-max", OPT_FLOAT, &o.w_max, "largest training guidance scale (1 + w log-uniform on [1, 1 + w-max])"},
        {"adaptive-p", OPT_FLOAT, &o.adapt_p, "adaptive weighting D / sg((D + eps)^p); 0 = off"},
        {"adaptive-eps", OPT_FLOAT, &o.adapt_eps, "eps of the adaptive weighting"},
        {"align-weight", OPT_FLOAT, &o.align_weight, "lambda of every alignment stage"},
        CLI_PERCEPTUAL_OPTS(o),
        {"init", OPT_STR, &o.init, "start this new run from a trained G (file or run folder, EMA weights; its shape)"},
        {"width", OPT_INT, &o.model.channels, "G's width (0 = F's)"},
        {"head-dim", OPT_INT, &o.model.head_dim, "attention head size (0 = F's)"},
        {"layers-per-stage", OPT_INT, &o.model.layers_per_stage, "layers per alignment stage (0 = half of F's per block)"},
        {"denoise-layers", OPT_INT, &o.model.denoise_layers, "layers of the denoising stage (-1 = 2)"},
        {"w-freq", OPT_INT, &o.model.w_freq, "sinusoidal features of w (0 = 64)"},
        {"sigma", OPT_FLOAT, &o.sigma, "noise added to x before F (<0: F's recorded training sigma)"},
        CLI_LABEL_DROP_OPT(o.label_drop),
        CLI_OPTIM_OPTS(o),
        {"seed", OPT_U64, &o.seed, "random seed (weights, data order, noise, w)"},
        CLI_RUN_OPTS(o, eval_n, "G(F(x)) error on 1000 test images", "G(F(x)) error"),
        CLI_END,
    };
    int rc = cli_options(argc, argv, 2, opts);
    if (rc != CLI_GO) return rc;
    const char *flow0 = o.flow, *features0 = o.features;   /* a resume may adopt copies */
    if (!(rc = cli_check_int("eval-n", eval_n, 0, 1000000000)) &&
        !(rc = train_reverse_check(&o, inverse, denoise, norm)))
        rc = train_reverse_run(&o, eval_n);
    if (o.flow != flow0) free((char *)o.flow);
    if (o.features != features0) free((char *)o.features);
    return rc;
}

/* ------------------------------------------------------------------ eval-reverse */
static double mse_of(const float *a, const float *b, size_t n) {
    double s = 0.0;
    for (size_t i = 0; i < n; i++) s += (double)(a[i] - b[i]) * (a[i] - b[i]);
    return s / (double)n;
}

static void print_fidelity(const char *what, double mse) {
    printf("  %-58s mse %.6f  PSNR %6.2f dB\n", what, mse, 10.0 * log10(4.0 / mse));
}

/* G(z) against the exact inverse F^-1(z) on the same prior noise: the noisy-data estimate
 * against the raw inverse, and G's denoised output against the inverse + score denoising. */
static int compare_with_exact(bf_reverse *r, bf_flow *f, int n, float cfg, uint64_t seed) {
    const bf_reverse_config *c = bf_reverse_get_config(r);
    size_t N = (size_t)bf_flow_tokens(bf_flow_get_config(f)) * bf_flow_token_dim(bf_flow_get_config(f));
    float *z = bf_malloc(sizeof(float) * n * N), *xe = bf_malloc(sizeof(float) * n * N);
    float *xs = bf_malloc(sizeof(float) * n * N), *g = bf_malloc(sizeof(float) * n * N);
    int *y = bf_malloc(sizeof(int) * n);
    bf_rng rng;
    bf_rng_seed(&rng, seed);
    for (size_t i = 0; i < n * N; i++) z[i] = bf_rng_normal(&rng);
    for (int i = 0; i < n; i++) y[i] = c->num_classes ? i % c->num_classes : -1;
    bf_sample_opts so;
    bf_sample_opts_default(&so);
    so.cfg = cfg;
    bf_sample_stats st;
    int rc = bf_flow_sample(f, xe, z, y, n, &so, &st);
    double t_exact = st.seconds;
    so.denoise = 1;
    so.sigma = bf_reverse_sigma(r);
    if (!rc && so.sigma > 0) rc = bf_flow_sample(f, xs, z, y, n, &so, &st);
    bf_reverse_sample_opts ro;
    bf_reverse_sample_opts_default(&ro);
    ro.cfg = cfg;
    ro.output = BF_REVERSE_OUT_NOISY;
    if (!rc) rc = bf_reverse_sample(r, g, z, y, n, &ro, &st);
    if (rc) goto done;
    printf("G(z) vs the exact inverse F^-1(z), %d draws of z, guidance %g (exact: %.1f images/s, G: %.1f):\n",
           n, (double)cfg, n / t_exact, n / st.seconds);
    print_fidelity("G's noisy-data estimate vs F^-1(z)", mse_of(g, xe, n * N));
    if (c->denoise_layers && so.sigma > 0) {
        ro.output = BF_REVERSE_OUT_CLEAN;
        if ((rc = bf_reverse_sample(r, g, z, y, n, &ro, &st))) goto done;
        print_fidelity("G's output (learned denoising) vs F^-1(z) + score denoising",
                       mse_of(g, xs, n * N));
    }
done:
    free(z); free(xe); free(xs); free(g); free(y);
    return rc;
}

int cmd_eval_reverse(int argc, char **argv) {
    const char *reverse = NULL, *flow = NULL, *data = "fashion-mnist";
    int n = 10000, prior_n = 1000, raw = 0;
    float cfg = 0.0f;
    uint64_t seed = 0;
    cli_opt opts[] = {
        CLI_PAIR_OPTS(reverse, flow),
        CLI_RAW_OPT(raw),
        CLI_DATA_OPT(data, " (its test split)"),
        {"n", OPT_INT, &n, "test images for G(F(x)) vs x (0 = all)"},
        {"prior-n", OPT_INT, &prior_n, "prior draws for G(z) vs F^-1(z) (0 = skip)"},
        CLI_ALIAS("n-prior", "prior-n"),
        {"cfg", OPT_FLOAT, &cfg, "guidance w of the G(z) vs F^-1(z) comparison"},
        {"seed", OPT_U64, &seed, "noise seed"},
        CLI_COMPUTE_OPTS,
        CLI_END,
    };
    int rc = cli_options(argc, argv, 2, opts);
    if (rc != CLI_GO) return rc;
    if (!reverse) return cli_usage("--reverse is required");
    if ((rc = cli_check_int("n", n, 0, 1000000000)) || (rc = cli_check_int("prior-n", prior_n, 0, CLI_MAX_SAMPLES)))
        return rc;
    bf_reverse *r = bf_reverse_load(reverse, !raw);
    if (!r) return cli_fail();
    const char *fpath = flow ? flow : bf_reverse_flow_path(r);
    bf_flow *f = bf_flow_load(fpath, 1);
    if (!f || bf_reverse_check_flow(r, f, fpath)) return cli_fail();
    bf_dataset ds = {0};
    if (bf_dataset_load(&ds, data, "test")) return cli_fail();
    if (n <= 0 || n > ds.n) n = ds.n;
    double mse, psnr;
    printf("G(F(x)) vs x on %d test images (labels given to both):\n", n);
    if (bf_reverse_eval_recon(r, f, &ds, n, 0.0f, seed, &mse, &psnr)) return cli_fail();
    print_fidelity("x clean, F(x)", mse);
    if (bf_reverse_sigma(r) > 0) {
        if (bf_reverse_eval_recon(r, f, &ds, n, bf_reverse_sigma(r), seed, &mse, &psnr)) return cli_fail();
        char what[96];
        snprintf(what, sizeof what, "x + N(0, %g^2) (G's training input), F(x~)", (double)bf_reverse_sigma(r));
        print_fidelity(what, mse);
    }
    if (prior_n > 0 && compare_with_exact(r, f, prior_n, cfg, seed + 1)) return cli_fail();
    bf_dataset_free(&ds);
    bf_flow_free(f);
    bf_reverse_free(r);
    return 0;
}

/* ------------------------------------------------------------------ export-reverse */
int cmd_export_reverse(int argc, char **argv) {
    const char *reverse = NULL, *flow = NULL, *out = NULL;
    int raw = 0;
    cli_opt opts[] = {
        CLI_REVERSE_OPT(reverse),
        {"flow", OPT_STR, &flow, "the forward model's new location (must have the recorded SHA-256)"},
        {"out", OPT_STR, &out, "output .safetensors file"},
        CLI_RAW_OPT(raw),
        CLI_END,
    };
    int rc = cli_options(argc, argv, 2, opts);
    if (rc != CLI_GO) return rc;
    if (!reverse || !flow || !out)
        return cli_usage("--%s is required", !reverse ? "reverse" : !flow ? "flow" : "out");
    bf_reverse *r;
    if (bf_reverse_export(reverse, !raw, flow, out) || !(r = bf_reverse_load(out, 1))) return cli_fail();
    printf("wrote %s (forward model %s, SHA-256 %.16s...)\n", out, bf_reverse_flow_path(r),
           bf_reverse_flow_sha256(r));
    bf_reverse_free(r);
    return 0;
}
