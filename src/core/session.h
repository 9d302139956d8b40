/* The session model and its one state machine, in engine terms (no API wording):
 *   requested → available → ended, or requested → ended.
 * "Ended" carries a reason: expired, refused by the network, terminated by the network, or deleted.
 * Each API surface maps these to its own words. Pure: no I/O, no locks. */
#ifndef QOD_CORE_SESSION_H
#define QOD_CORE_SESSION_H

#include <stdbool.h>
#include <stdint.h>

typedef enum { QOD_SS_REQUESTED = 0, QOD_SS_AVAILABLE = 1, QOD_SS_ENDED = 2 } qod_session_state;

typedef enum {
    QOD_END_NONE = 0,
    QOD_END_EXPIRED = 1,
    QOD_END_REFUSED = 2,            /* the network could not honour the request */
    QOD_END_NETWORK_TERMINATED = 3, /* the network ended an available session */
    QOD_END_DELETED = 4             /* the app ended it early */
} qod_end_reason;

/* What can happen to a session. */
typedef enum {
    QOD_EV_PROVISIONED = 0, /* the network granted the profile */
    QOD_EV_REFUSED,         /* the network refused (congestion, admission) */
    QOD_EV_TERMINATED,      /* the network ended it */
    QOD_EV_EXPIRED,         /* its duration elapsed */
    QOD_EV_DELETED          /* the app deleted it */
} qod_session_event;

/* A state plus its end reason (reason is QOD_END_NONE unless state is ENDED). */
typedef struct {
    qod_session_state state;
    qod_end_reason reason;
} qod_session_status;

/* Applies ev to *st. QOD_OK and the new status, or QOD_ERR_STATE (status unchanged) when the transition is
 * illegal: nothing leaves ENDED, and an available session cannot be provisioned again. */
int qod_session_apply(qod_session_status *st, qod_session_event ev);
/* True while the session holds (or waits for) network resources. */
bool qod_session_active(qod_session_status st);
/* Engine names for storage and logs: "requested", "available", "ended". */
const char *qod_session_state_name(qod_session_state s);
/* "", "expired", "refused", "network-terminated", "deleted". */
const char *qod_end_reason_name(qod_end_reason r);
/* Parsers for the names above; QOD_ERR_INVALID when unknown. */
int qod_session_state_parse(const char *s, qod_session_state *out);
int qod_end_reason_parse(const char *s, qod_end_reason *out);

#endif
