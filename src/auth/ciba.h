/* OpenID CIBA (Client-Initiated Backchannel Authentication) requests, for CAMARA 3-legged tokens: an app asks for
 * a token bound to a device (login_hint "tel:+…"), the subscriber's consent arrives out of band (sandbox apps:
 * at once; live apps: `qodctl consent approve` or --ciba-auto-approve), and the app polls the token endpoint.
 * Requests live in memory for their lifetime (two minutes): a restart asks the app to start again. */
#ifndef QOD_AUTH_CIBA_H
#define QOD_AUTH_CIBA_H

#include "util/buf.h"

#include <stdbool.h>
#include <stdint.h>

typedef struct qod_ciba qod_ciba;

#define QOD_CIBA_TTL_S 120
#define QOD_CIBA_INTERVAL_S 2
/* Requests held at once; beyond, a start is refused with QOD_ERR_LIMIT. */
#define QOD_CIBA_MAX 100000

/* The outcome of a poll. */
typedef enum {
    QOD_CIBA_GRANTED = 0,
    QOD_CIBA_PENDING,
    QOD_CIBA_SLOW_DOWN,
    QOD_CIBA_EXPIRED,
    QOD_CIBA_INVALID /* unknown id, another client's, or already used */
} qod_ciba_poll;

/* A request as granted (strings copied into the struct). */
typedef struct {
    char client_id[64];
    char scope[512];
    char subject[128]; /* "tel:+…", "ipv4:…", "ipv6:…" */
    char device[160];  /* the device as a compact JSON object */
} qod_ciba_grant;

qod_ciba *qod_ciba_create(void);
/* Frees; NULL is a no-op. */
void qod_ciba_destroy(qod_ciba *c);
/* Records a request; writes its id (cap >= 48). approved: consent already given. */
int qod_ciba_start(qod_ciba *c, const qod_ciba_grant *g, bool approved, int64_t now_ms, char *id, size_t cap);
/* Gives consent; QOD_ERR_NOTFOUND when unknown or expired. */
int qod_ciba_approve(qod_ciba *c, const char *id, int64_t now_ms);
/* Polls from client_id; on QOD_CIBA_GRANTED fills *out and forgets the request (one use). */
qod_ciba_poll qod_ciba_poll_token(qod_ciba *c, const char *id, const char *client_id, int64_t now_ms,
                                  qod_ciba_grant *out);
/* Appends the pending requests as a JSON array (admin). */
int qod_ciba_list(qod_ciba *c, int64_t now_ms, qod_buf *out);

#endif
