/* biflow demo, registered in tools/main.c. */
#ifndef BF_CMD_DEMO_H
#define BF_CMD_DEMO_H

int cmd_demo(int argc, char **argv);

#endif
