/* The daemon: wires configuration to modules, runs until SIGTERM/SIGINT, then drains and stops. */
#ifndef QOD_DAEMON_DAEMON_H
#define QOD_DAEMON_DAEMON_H

#include "daemon/options.h"

typedef struct qod_daemon qod_daemon;

/* Starts every module. On failure writes a one-line reason into err. */
int qod_daemon_start(const qod_options *opts, qod_daemon **out, char *err, size_t errcap);
/* Blocks until a stop signal arrives (the caller must have blocked the signals in every thread). */
void qod_daemon_wait(qod_daemon *d);
/* Drains and stops; NULL is a no-op. */
void qod_daemon_stop(qod_daemon *d);

#endif
