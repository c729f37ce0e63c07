/* The biflow commands, one file per group, dispatched by tools/main.c. Each takes main's
 * argc, argv (argv[1] is the command's name) and returns the process exit status: 0, 1 for a
 * runtime error, 2 for a usage error (tools/cli.h). */
#ifndef BF_COMMANDS_H
#define BF_COMMANDS_H

/* tools/cmd_demo.c */
int cmd_demo(int argc, char **argv);
/* tools/cmd_train.c: the forward model F */
int cmd_train_flow(int argc, char **argv);
int cmd_eval_bpd(int argc, char **argv);
/* tools/cmd_reverse.c: the reverse model G */
int cmd_train_reverse(int argc, char **argv);
int cmd_eval_reverse(int argc, char **argv);
int cmd_export_reverse(int argc, char **argv);
/* tools/cmd_sample.c */
int cmd_sample(int argc, char **argv);
/* tools/cmd_eval.c */
int cmd_eval(int argc, char **argv);
/* tools/cmd_bench.c: bench train, bench sample */
int cmd_bench(int argc, char **argv);
/* tools/cmd_info.c: inspecting models */
int cmd_info(int argc, char **argv);
int cmd_encode(int argc, char **argv);
/* tools/cmd_features.c */
int cmd_train_features(int argc, char **argv);
int cmd_eval_features(int argc, char **argv);
/* tools/cmd_edit.c: editing with a model pair (F, G) */
int cmd_inpaint(int argc, char **argv);
int cmd_edit(int argc, char **argv);
int cmd_reconstruct(int argc, char **argv);
int cmd_interpolate(int argc, char **argv);
/* tools/cmd_plot.c: training curves from JSON-lines logs to a PNG */
int cmd_plot(int argc, char **argv);
/* tools/cmd_serve.c */
int cmd_serve(int argc, char **argv);

#endif
