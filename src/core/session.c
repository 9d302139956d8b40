#include "core/session.h"

#include "util/err.h"

#include <string.h>

int qod_session_apply(qod_session_status *st, qod_session_event ev)
{
    if (st->state == QOD_SS_ENDED)
        return QOD_ERR_STATE;
    qod_session_status next = *st;
    switch (ev) {
    case QOD_EV_PROVISIONED:
        if (st->state != QOD_SS_REQUESTED)
            return QOD_ERR_STATE;
        next.state = QOD_SS_AVAILABLE;
        break;
    case QOD_EV_REFUSED:
        /* A refusal answers a request; an available session is ended by termination instead. */
        if (st->state != QOD_SS_REQUESTED)
            return QOD_ERR_STATE;
        next = (qod_session_status){QOD_SS_ENDED, QOD_END_REFUSED};
        break;
    case QOD_EV_TERMINATED:
        next = (qod_session_status){QOD_SS_ENDED,
                                    st->state == QOD_SS_REQUESTED ? QOD_END_REFUSED : QOD_END_NETWORK_TERMINATED};
        break;
    case QOD_EV_EXPIRED:
        next = (qod_session_status){QOD_SS_ENDED, QOD_END_EXPIRED};
        break;
    case QOD_EV_DELETED:
        next = (qod_session_status){QOD_SS_ENDED, QOD_END_DELETED};
        break;
    default:
        return QOD_ERR_STATE;
    }
    *st = next;
    return QOD_OK;
}

bool qod_session_active(qod_session_status st)
{
    return st.state != QOD_SS_ENDED;
}

static const char *const state_names[] = {"requested", "available", "ended"};
static const char *const reason_names[] = {"", "expired", "refused", "network-terminated", "deleted"};

const char *qod_session_state_name(qod_session_state s)
{
    return (unsigned)s < 3 ? state_names[s] : "?";
}

const char *qod_end_reason_name(qod_end_reason r)
{
    return (unsigned)r < 5 ? reason_names[r] : "?";
}

int qod_session_state_parse(const char *s, qod_session_state *out)
{
    for (int i = 0; i < 3; i++)
        if (strcmp(s, state_names[i]) == 0) {
            *out = (qod_session_state)i;
            return QOD_OK;
        }
    return QOD_ERR_INVALID;
}

int qod_end_reason_parse(const char *s, qod_end_reason *out)
{
    for (int i = 0; i < 5; i++)
        if (strcmp(s, reason_names[i]) == 0) {
            *out = (qod_end_reason)i;
            return QOD_OK;
        }
    return QOD_ERR_INVALID;
}
