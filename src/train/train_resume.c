/* Resuming a run from a command line (bf_train_flow_resume_opts,
 * bf_train_reverse_resume_opts): the options that define the run come from its checkpoint
 * unless the user gave them, and those given must match the record. */
#include "core.h"
#include "train_util.h"

#include <string.h>

static int is_given(const char *const *given, int n, const char *name) {
    for (int i = 0; i < n; i++)
        if (!strcmp(given[i], name)) return 1;
    return 0;
}

/* The model's shape, recorded in DIR/flow.safetensors: an option given, or --config (then its
 * value names the configuration in messages), must match. */
static int reconcile_flow_shape(bf_train_opts *o, const char *config, const char *const *given,
                                int n_given) {
    char path[4096], cfg_names[6][128];
    bf_flow_config *c = &o->model;
    bf_run_opt m[] = {
        {"channels", "--width", BF_RUN_INT, &c->channels, NULL, 0},
        {"num_blocks", "--blocks", BF_RUN_INT, &c->num_blocks, NULL, 0},
        {"layers_per_block", "--layers", BF_RUN_INT, &c->layers_per_block, NULL, 0},
        {"patch_size", "--patch", BF_RUN_INT, &c->patch_size, NULL, 0},
        {"head_dim", "--head-dim", BF_RUN_INT, &c->head_dim, NULL, 0},
        {"bound", "--bound", BF_RUN_FLOAT, &c->bound, NULL, 0},
    };
    for (int i = 0; i < 6; i++) {
        int own = is_given(given, n_given, m[i].option + 2);
        m[i].given = own || is_given(given, n_given, "config");
        if (own) continue;
        snprintf(cfg_names[i], sizeof cfg_names[i], "--config %s (its %s)", config ? config : "?",
                 m[i].option);
        m[i].option = cfg_names[i];
    }
    if (bf_path_join(path, sizeof path, o->out_dir, "flow.safetensors")) return -1;
    return bf_run_opts_reconcile(m, 6, path, NULL) == -1 ? -1 : 0;
}

int bf_train_flow_resume_opts(bf_train_opts *o, const char *config, const char *const *given,
                              int n_given) {
    char path[4096];
    bf_run_opt r[BF_RUN_OPTS_MAX + 1];
    int n = bf_train_flow_run_opts(o, r);
    for (int i = 0; i < n; i++) r[i].given = is_given(given, n_given, r[i].option + 2);
    if (!is_given(given, n_given, "steps"))
        r[n++] = (bf_run_opt){"steps", "--steps", BF_RUN_INT, &o->steps, NULL, 0};
    long step;
    if (!o->out_dir) return 0;   /* bf_train_flow refuses it */
    if (bf_path_join(path, sizeof path, o->out_dir, "train_state.safetensors")) return -1;
    int rc = bf_run_opts_reconcile(r, n, path, &step);
    if (rc) return rc == -2 ? 0 : -1;   /* -2: no readable record, bf_train_flow says so */
    if (bf_check_steps_extend(o->steps, step, o->out_dir)) return -1;
    return reconcile_flow_shape(o, config, given, n_given);
}

int bf_train_reverse_resume_opts(bf_reverse_train_opts *o, const char *const *given, int n_given) {
    char path[4096];
    bf_run_opt r[BF_RUN_OPTS_MAX + 8];
    int n = bf_train_reverse_run_opts(o, r), recorded_layers = -1;
    int den_given = is_given(given, n_given, "denoise"), layers_given = is_given(given, n_given, "denoise-layers");
    int learned_given = den_given && o->model.denoise_layers != 0;
    for (int i = 0; i < n; i++) r[i].given = is_given(given, n_given, r[i].option + 2);
    bf_reverse_config *c = &o->model;
    const bf_run_opt shape[] = {
        {"channels", "--width", BF_RUN_INT, &c->channels, NULL, is_given(given, n_given, "width")},
        {"head_dim", "--head-dim", BF_RUN_INT, &c->head_dim, NULL, is_given(given, n_given, "head-dim")},
        {"layers_per_stage", "--layers-per-stage", BF_RUN_INT, &c->layers_per_stage, NULL,
         is_given(given, n_given, "layers-per-stage")},
        {"w_freq", "--w-freq", BF_RUN_INT, &c->w_freq, NULL, is_given(given, n_given, "w-freq")},
        {"denoise_layers", layers_given ? "--denoise-layers" : "--denoise none: layers", BF_RUN_INT,
         &c->denoise_layers, NULL, layers_given || (den_given && !learned_given)},
        {"denoise_layers", "--denoise", BF_RUN_INT, &recorded_layers, NULL, 0},   /* read back */
        {"flow_path", "--flow", BF_RUN_STR, &o->flow, NULL, 0},
        {"steps", "--steps", BF_RUN_INT, &o->steps, NULL, 0},
    };
    for (int i = 0; i < (int)(sizeof shape / sizeof shape[0]); i++)
        if (i < 6 || !is_given(given, n_given, shape[i].option + 2)) r[n++] = shape[i];
    long step;
    if (!o->out_dir) return 0;   /* bf_train_reverse refuses it */
    if (bf_path_join(path, sizeof path, o->out_dir, "reverse.safetensors")) return -1;
    int rc = bf_run_opts_reconcile(r, n, path, &step);
    if (rc == -2 && !o->flow) {
        char why[1024];
        snprintf(why, sizeof why, "%s", bf_last_error());
        bf_set_error("cannot resume the run in %s: %s", o->out_dir, why);
    }
    if (rc) return rc == -2 ? (o->flow ? 0 : -2) : -1;
    if (learned_given && recorded_layers == 0) {
        bf_set_error("--denoise learned conflicts with the run being resumed, whose G has no "
                     "denoising stage (%s records denoise_layers = 0)", path);
        return -1;
    }
    return bf_check_steps_extend(o->steps, step, o->out_dir);
}
