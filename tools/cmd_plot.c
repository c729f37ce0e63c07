/* biflow plot: renders the curves of one or more training logs to a PNG (bf_plot_logs). */
#include "commands.h"

#include "biflow.h"
#include "cli.h"

#include <stdio.h>

#define MAX_LOGS 32

int cmd_plot(int argc, char **argv) {
    bf_plot_opts o;
    bf_plot_opts_default(&o);
    const char *out = "curves.png";
    cli_opt opts[] = {
        {"out", OPT_STR, &out, "output PNG"},
        {"keys", OPT_STR, &o.keys, "comma-separated series to draw (default: loss, bpd or nll, eval_*)"},
        {"log-y", OPT_FLAG, &o.log_y, "logarithmic y axis (values <= 0 are left out)"},
        {"width", OPT_INT, &o.panel_w, "width of a panel in pixels"},
        {"height", OPT_INT, &o.panel_h, "height of a panel in pixels"},
        {"cols", OPT_INT, &o.cols, "panels per row"},
        CLI_END,
    };
    const char *logs[MAX_LOGS];
    int n_logs, rc = cli_parse(argc, argv, 2, opts, logs, MAX_LOGS, &n_logs);
    if (rc != CLI_GO) return rc;
    if (n_logs == 0) return cli_usage("give at least one log");
    bf_plot_stats st;
    if (bf_plot_logs(out, logs, n_logs, &o, &st)) return cli_fail();
    printf("wrote %s: %d panel%s from %d log%s (%ld records", out, st.panels, st.panels > 1 ? "s" : "",
           n_logs, n_logs > 1 ? "s" : "", st.records);
    if (st.malformed) printf(", %ld malformed line%s skipped", st.malformed, st.malformed > 1 ? "s" : "");
    if (st.skipped) printf(", %ld value%s not drawn", st.skipped, st.skipped > 1 ? "s" : "");
    printf(")\n");
    return 0;
}
