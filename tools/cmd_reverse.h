/* Commands of the reverse model, registered in tools/main.c. */
#ifndef BF_CMD_REVERSE_H
#define BF_CMD_REVERSE_H

int cmd_train_reverse(int argc, char **argv);
int cmd_eval_reverse(int argc, char **argv);
int cmd_export_reverse(int argc, char **argv);

#endif
