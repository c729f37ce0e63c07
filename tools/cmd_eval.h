/* biflow eval, registered in tools/main.c. */
#ifndef BF_CMD_EVAL_H
#define BF_CMD_EVAL_H

int cmd_eval(int argc, char **argv);

#endif
