/* Editing commands of a model pair (F, G), registered in tools/main.c. */
#ifndef BF_CMD_EDIT_H
#define BF_CMD_EDIT_H

int cmd_inpaint(int argc, char **argv);
int cmd_edit(int argc, char **argv);
int cmd_reconstruct(int argc, char **argv);
int cmd_interpolate(int argc, char **argv);

#endif
