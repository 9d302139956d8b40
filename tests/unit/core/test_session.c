#include "core/session.h"

#include "qtest.h"
#include "util/err.h"

static const qod_session_status requested = {QOD_SS_REQUESTED, QOD_END_NONE};
static const qod_session_status available = {QOD_SS_AVAILABLE, QOD_END_NONE};

static const qod_session_event all_events[] = {QOD_EV_PROVISIONED, QOD_EV_REFUSED, QOD_EV_TERMINATED, QOD_EV_EXPIRED,
                                               QOD_EV_DELETED};
#define N_EVENTS (sizeof all_events / sizeof all_events[0])

static const qod_end_reason all_reasons[] = {QOD_END_EXPIRED, QOD_END_REFUSED, QOD_END_NETWORK_TERMINATED,
                                             QOD_END_DELETED};
#define N_REASONS (sizeof all_reasons / sizeof all_reasons[0])

/* Applies ev to a copy of from; returns the rc and leaves the resulting status in *out. */
static int apply_from(qod_session_status from, qod_session_event ev, qod_session_status *out)
{
    *out = from;
    return qod_session_apply(out, ev);
}

QTEST(requested_provisioned_becomes_available)
{
    qod_session_status st;
    QT_EQ_INT(apply_from(requested, QOD_EV_PROVISIONED, &st), QOD_OK);
    QT_EQ_INT(st.state, QOD_SS_AVAILABLE);
    QT_EQ_INT(st.reason, QOD_END_NONE);
}

QTEST(requested_refused_ends_refused)
{
    qod_session_status st;
    QT_EQ_INT(apply_from(requested, QOD_EV_REFUSED, &st), QOD_OK);
    QT_EQ_INT(st.state, QOD_SS_ENDED);
    QT_EQ_INT(st.reason, QOD_END_REFUSED);
}

QTEST(requested_terminated_ends_refused)
{
    /* A session that never became available was not "terminated" from the app's point of view: it was refused. */
    qod_session_status st;
    QT_EQ_INT(apply_from(requested, QOD_EV_TERMINATED, &st), QOD_OK);
    QT_EQ_INT(st.state, QOD_SS_ENDED);
    QT_EQ_INT(st.reason, QOD_END_REFUSED);
}

QTEST(requested_expired_ends_expired)
{
    qod_session_status st;
    QT_EQ_INT(apply_from(requested, QOD_EV_EXPIRED, &st), QOD_OK);
    QT_EQ_INT(st.state, QOD_SS_ENDED);
    QT_EQ_INT(st.reason, QOD_END_EXPIRED);
}

QTEST(requested_deleted_ends_deleted)
{
    qod_session_status st;
    QT_EQ_INT(apply_from(requested, QOD_EV_DELETED, &st), QOD_OK);
    QT_EQ_INT(st.state, QOD_SS_ENDED);
    QT_EQ_INT(st.reason, QOD_END_DELETED);
}

QTEST(available_terminated_ends_network_terminated)
{
    qod_session_status st;
    QT_EQ_INT(apply_from(available, QOD_EV_TERMINATED, &st), QOD_OK);
    QT_EQ_INT(st.state, QOD_SS_ENDED);
    QT_EQ_INT(st.reason, QOD_END_NETWORK_TERMINATED);
}

QTEST(available_expired_ends_expired)
{
    qod_session_status st;
    QT_EQ_INT(apply_from(available, QOD_EV_EXPIRED, &st), QOD_OK);
    QT_EQ_INT(st.state, QOD_SS_ENDED);
    QT_EQ_INT(st.reason, QOD_END_EXPIRED);
}

QTEST(available_deleted_ends_deleted)
{
    qod_session_status st;
    QT_EQ_INT(apply_from(available, QOD_EV_DELETED, &st), QOD_OK);
    QT_EQ_INT(st.state, QOD_SS_ENDED);
    QT_EQ_INT(st.reason, QOD_END_DELETED);
}

QTEST(available_provisioned_is_illegal_and_unchanged)
{
    qod_session_status st;
    QT_EQ_INT(apply_from(available, QOD_EV_PROVISIONED, &st), QOD_ERR_STATE);
    QT_EQ_INT(st.state, QOD_SS_AVAILABLE);
    QT_EQ_INT(st.reason, QOD_END_NONE);
}

QTEST(available_refused_is_illegal_and_unchanged)
{
    qod_session_status st;
    QT_EQ_INT(apply_from(available, QOD_EV_REFUSED, &st), QOD_ERR_STATE);
    QT_EQ_INT(st.state, QOD_SS_AVAILABLE);
    QT_EQ_INT(st.reason, QOD_END_NONE);
}

QTEST(nothing_leaves_ended)
{
    for (size_t r = 0; r < N_REASONS; r++) {
        for (size_t e = 0; e < N_EVENTS; e++) {
            qod_session_status from = {QOD_SS_ENDED, all_reasons[r]}, st;
            QT_EQ_INT(apply_from(from, all_events[e], &st), QOD_ERR_STATE);
            QT_EQ_INT(st.state, QOD_SS_ENDED);
            QT_EQ_INT(st.reason, all_reasons[r]);
        }
    }
}

QTEST(unknown_event_is_illegal_and_unchanged)
{
    qod_session_status st;
    QT_EQ_INT(apply_from(requested, (qod_session_event)99, &st), QOD_ERR_STATE);
    QT_EQ_INT(st.state, QOD_SS_REQUESTED);
    QT_EQ_INT(st.reason, QOD_END_NONE);
}

QTEST(active_while_requested_or_available)
{
    QT_TRUE(qod_session_active(requested));
    QT_TRUE(qod_session_active(available));
    for (size_t r = 0; r < N_REASONS; r++)
        QT_TRUE(!qod_session_active((qod_session_status){QOD_SS_ENDED, all_reasons[r]}));
}

QTEST(state_names)
{
    QT_EQ_STR(qod_session_state_name(QOD_SS_REQUESTED), "requested");
    QT_EQ_STR(qod_session_state_name(QOD_SS_AVAILABLE), "available");
    QT_EQ_STR(qod_session_state_name(QOD_SS_ENDED), "ended");
}

QTEST(reason_names)
{
    QT_EQ_STR(qod_end_reason_name(QOD_END_NONE), "");
    QT_EQ_STR(qod_end_reason_name(QOD_END_EXPIRED), "expired");
    QT_EQ_STR(qod_end_reason_name(QOD_END_REFUSED), "refused");
    QT_EQ_STR(qod_end_reason_name(QOD_END_NETWORK_TERMINATED), "network-terminated");
    QT_EQ_STR(qod_end_reason_name(QOD_END_DELETED), "deleted");
}

QTEST(state_name_round_trip)
{
    static const qod_session_state states[] = {QOD_SS_REQUESTED, QOD_SS_AVAILABLE, QOD_SS_ENDED};
    for (size_t i = 0; i < sizeof states / sizeof states[0]; i++) {
        qod_session_state out = (qod_session_state)-1;
        QT_EQ_INT(qod_session_state_parse(qod_session_state_name(states[i]), &out), QOD_OK);
        QT_EQ_INT(out, states[i]);
    }
}

QTEST(reason_name_round_trip)
{
    static const qod_end_reason reasons[] = {QOD_END_NONE, QOD_END_EXPIRED, QOD_END_REFUSED, QOD_END_NETWORK_TERMINATED,
                                             QOD_END_DELETED};
    for (size_t i = 0; i < sizeof reasons / sizeof reasons[0]; i++) {
        qod_end_reason out = (qod_end_reason)-1;
        QT_EQ_INT(qod_end_reason_parse(qod_end_reason_name(reasons[i]), &out), QOD_OK);
        QT_EQ_INT(out, reasons[i]);
    }
}

QTEST(unknown_state_name_rejected)
{
    static const char *const bad[] = {"", "REQUESTED", "pending", "ended ", "?"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        qod_session_state out = QOD_SS_AVAILABLE;
        QT_EQ_INT(qod_session_state_parse(bad[i], &out), QOD_ERR_INVALID);
        QT_EQ_INT(out, QOD_SS_AVAILABLE);
    }
}

QTEST(unknown_reason_name_rejected)
{
    static const char *const bad[] = {"EXPIRED", "terminated", "network_terminated", "none", "?"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        qod_end_reason out = QOD_END_DELETED;
        QT_EQ_INT(qod_end_reason_parse(bad[i], &out), QOD_ERR_INVALID);
        QT_EQ_INT(out, QOD_END_DELETED);
    }
}

QTEST(out_of_range_values_have_placeholder_names)
{
    QT_EQ_STR(qod_session_state_name((qod_session_state)7), "?");
    QT_EQ_STR(qod_end_reason_name((qod_end_reason)9), "?");
}

QTEST_MAIN(QT_CASE(requested_provisioned_becomes_available), QT_CASE(requested_refused_ends_refused),
           QT_CASE(requested_terminated_ends_refused), QT_CASE(requested_expired_ends_expired),
           QT_CASE(requested_deleted_ends_deleted), QT_CASE(available_terminated_ends_network_terminated),
           QT_CASE(available_expired_ends_expired), QT_CASE(available_deleted_ends_deleted),
           QT_CASE(available_provisioned_is_illegal_and_unchanged), QT_CASE(available_refused_is_illegal_and_unchanged),
           QT_CASE(nothing_leaves_ended), QT_CASE(unknown_event_is_illegal_and_unchanged),
           QT_CASE(active_while_requested_or_available), QT_CASE(state_names), QT_CASE(reason_names),
           QT_CASE(state_name_round_trip), QT_CASE(reason_name_round_trip), QT_CASE(unknown_state_name_rejected),
           QT_CASE(unknown_reason_name_rejected), QT_CASE(out_of_range_values_have_placeholder_names))
