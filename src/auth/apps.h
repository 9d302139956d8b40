/* The app registry: applications registered to Quality on Demand, with their OAuth2 client credentials,
 * scopes, limits and webhook signing secret. Held in memory (read-mostly, behind a rwlock) and persisted in
 * the store. Client secrets are shown once and stored only as a SHA-256 hash (they are 256-bit random, so a
 * slow KDF adds nothing). */
#ifndef QOD_AUTH_APPS_H
#define QOD_AUTH_APPS_H

#include "store/store.h"
#include "util/buf.h"
#include "util/seal.h"

#include <stdbool.h>
#include <stdint.h>

typedef enum { QOD_APP_SANDBOX = 0, QOD_APP_LIVE = 1 } qod_app_env;

#define QOD_APP_ID_LEN 32
#define QOD_APP_NAME_MAX 128
#define QOD_SCOPES_MAX 512
#define QOD_WHSEC_MAX 64

/* One app; copied out of the registry, so callers own their copy. */
typedef struct {
    char client_id[QOD_APP_ID_LEN + 1];
    char name[QOD_APP_NAME_MAX + 1];
    qod_app_env env;
    char scopes[QOD_SCOPES_MAX];
    double rate_limit;                      /* requests per second; 0 = unlimited */
    double burst;                           /* bucket size */
    int64_t max_sessions;                   /* active sessions; 0 = unlimited */
    char secret_hash[65];                   /* hex SHA-256 of the client secret */
    char webhook_secret[QOD_WHSEC_MAX];     /* "whsec_" + base64 key */
    char webhook_secret_old[QOD_WHSEC_MAX]; /* previous key during a rotation grace period, or "" */
    int64_t webhook_old_until_ms;           /* end of the grace period (unix ms) */
    int64_t created_ms;
    uint64_t generation; /* bumped on every change: caches compare it */
} qod_app;

/* Parameters of a new app. */
typedef struct {
    const char *name;
    qod_app_env env;
    const char *scopes;   /* NULL: every scope of the product */
    double rate_limit;    /* < 0: default */
    double burst;         /* < 0: default (2 x rate) */
    int64_t max_sessions; /* < 0: default */
} qod_app_params;

typedef struct qod_apps qod_apps;

/* Every scope the product knows, space-separated. */
extern const char qod_scopes_all[];
/* Defaults from the interface contract. */
#define QOD_APP_DEFAULT_RATE 100.0
#define QOD_APP_DEFAULT_MAX_SESSIONS 10000

/* Loads every app from the store. The store and the seal (webhook secrets are stored sealed) are borrowed and
 * must outlive the registry. */
int qod_apps_create(qod_store *st, const qod_seal *seal, qod_apps **out);
/* Frees the registry; NULL is a no-op. */
void qod_apps_destroy(qod_apps *a);
/* Registers an app and commits it. secret_out receives the client secret (cap >= 64), shown once.
 * QOD_ERR_INVALID for a bad name or scope list (why written into err). */
int qod_apps_add(qod_apps *a, const qod_app_params *p, qod_app *out, char *secret_out, size_t cap, char *err,
                 size_t errcap);
/* Copies the app into *out. QOD_ERR_NOTFOUND when unknown; with several nodes an app not in memory is looked up
 * in the store, whose error is returned when that fails. */
int qod_apps_get(qod_apps *a, const char *client_id, qod_app *out);
/* Other nodes share the store (cluster): an unknown client_id is looked up there before it is refused. */
void qod_apps_set_shared(qod_apps *a);
/* Reads client_id's row again from the store (another node changed it: added, changed or deleted), or every row
 * when client_id is NULL. */
int qod_apps_refresh(qod_apps *a, const char *client_id);
/* Checks a client secret in constant time; QOD_OK and *out, QOD_ERR_NOTFOUND (no such app), QOD_ERR_DENIED (wrong
 * secret), or the store's error when an app not in memory could not be looked up. */
int qod_apps_authenticate(qod_apps *a, const char *client_id, const char *secret, qod_app *out);
/* Deletes an app; QOD_ERR_NOTFOUND when unknown. */
int qod_apps_delete(qod_apps *a, const char *client_id);
/* Replaces the client secret; the old one stops working at once. */
int qod_apps_rotate_secret(qod_apps *a, const char *client_id, qod_app *out, char *secret_out, size_t cap);
/* Replaces the webhook signing secret. The previous one keeps signing (a second signature) for grace_ms, so
 * receivers can switch without dropping events. */
int qod_apps_rotate_webhook_secret(qod_apps *a, const char *client_id, int64_t grace_ms, qod_app *out);
/* Updates limits (negative = unchanged). */
int qod_apps_set_limits(qod_apps *a, const char *client_id, double rate, double burst, int64_t max_sessions,
                        qod_app *out);
/* Calls fn for every app, in client_id order, with the registry locked for reading (fn must not call back). */
void qod_apps_each(qod_apps *a, void (*fn)(void *arg, const qod_app *app), void *arg);
/* Number of apps. */
size_t qod_apps_count(qod_apps *a);
/* Appends the app as JSON for display: no secret hash, no webhook secrets. */
int qod_app_to_json(const qod_app *app, qod_buf *out);
/* "sandbox" or "live". */
const char *qod_app_env_name(qod_app_env env);
/* Parses "sandbox"/"live". */
int qod_app_env_parse(const char *s, qod_app_env *out);

#endif
