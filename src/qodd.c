/* qodd: the Konera QoD daemon. Thin: options → modules → wait for a stop signal → drain. */
#include "daemon/daemon.h"
#include "daemon/options.h"
#include "util/err.h"
#include "util/log.h"

#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

extern char **environ;

int main(int argc, char **argv)
{
    qod_options o;
    bool help = false;
    char err[512] = "";
    int rc = qod_options_parse(&o, argc, argv, environ, &help, err, sizeof err);
    if (help) {
        qod_config_help(qod_option_table, qod_option_count, "qodd", stdout);
        qod_options_dispose(&o);
        return 0;
    }
    if (rc != QOD_OK) {
        fprintf(stderr, "qodd: %s\n", err);
        qod_options_dispose(&o);
        return 2;
    }
    qod_log_level level = QOD_LOG_INFO;
    qod_log_level_parse(o.log_level, &level);
    qod_log_setup(level, strcmp(o.log_format, "json") == 0 ? QOD_LOG_JSON : QOD_LOG_TEXT);

    /* Block the stop signals before any thread starts, so only qod_daemon_wait receives them. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);
    /* Everything the daemon creates in the data directory is private to its user. */
    umask(077);

    qod_daemon *d = NULL;
    rc = qod_daemon_start(&o, &d, err, sizeof err);
    if (rc != QOD_OK) {
        QOD_ERROR("qodd", "start_failed", "err=\"%s\"", err);
        fprintf(stderr, "qodd: %s\n", err);
        qod_options_dispose(&o);
        return 1;
    }
    qod_daemon_wait(d);
    qod_daemon_stop(d);
    qod_options_dispose(&o);
    return 0;
}
