/* biflow plot: training curves from JSON-lines logs to a PNG. */
#ifndef BF_CMD_PLOT_H
#define BF_CMD_PLOT_H

int cmd_plot(int argc, char **argv);

#endif
