/* The admin socket: a Unix stream socket (mode 0600) in the data directory that qodctl talks to.
 * Protocol: one JSON request per line, {"cmd":"app.create","args":{…}}, answered by one JSON line,
 * {"ok":true,"result":…} or {"ok":false,"error":"…"}. Requests are limited to 64 KiB. The HTTP port never
 * serves admin operations. */
#ifndef QOD_API_ADMIN_H
#define QOD_API_ADMIN_H

#include "auth/apps.h"
#include "auth/tokcache.h"
#include "util/buf.h"

#include <cjson/cJSON.h>

/* The largest result a command answers with; a list that would be longer fails with an error saying so. */
#define QOD_ADMIN_MAX_RESULT (32u << 20)

typedef struct qod_admin qod_admin;
typedef struct qod_engine qod_engine;
typedef struct qod_registry qod_registry;
typedef struct qod_store qod_store;
typedef struct qod_delivery qod_delivery;
typedef struct qod_ciba qod_ciba;

/* What admin commands operate on; borrowed. */
typedef struct {
    qod_apps *apps;
    qod_tokcache *tokens;
    qod_engine *engine;
    qod_registry *registry;
    qod_store *store;
    qod_delivery *delivery;
    qod_ciba *ciba;
    bool test_hooks; /* fault-test commands allowed */
} qod_admin_deps;

/* One admin command: reads args, appends the JSON result to out, or returns an error with why in err. */
typedef int (*qod_admin_fn)(const qod_admin_deps *d, const cJSON *args, qod_buf *out, char *err, size_t errcap);

/* Binds path (removing a stale socket) and starts the admin thread. */
int qod_admin_start(const char *path, const qod_admin_deps *deps, qod_admin **out);
/* Stops the thread and removes the socket; NULL is a no-op. */
void qod_admin_stop(qod_admin *a);
/* Handles one request line and appends the response line (exposed for tests and fuzzing). */
void qod_admin_handle(const qod_admin_deps *d, const char *line, size_t len, qod_buf *out);

#endif
