/* Commands defined outside tools/biflow.c, one file per group; each takes main's argc, argv
 * (argv[1] is the command's name) and returns the process exit status. */
#ifndef BF_COMMANDS_H
#define BF_COMMANDS_H

/* tools/cmd_features.c */
int cmd_train_features(int argc, char **argv);
int cmd_eval_features(int argc, char **argv);

/* tools/cmd_serve.c */
int cmd_serve(int argc, char **argv);

#endif
