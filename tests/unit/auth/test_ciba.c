/* CIBA requests in memory: the poll protocol, expiry, the table's bound, and the cost of a start with the table
 * large. */
#include "auth/ciba.h"

#include "qtest.h"
#include "util/err.h"
#include "util/time.h"

#include <stdio.h>
#include <string.h>

#define TTL_MS ((int64_t)QOD_CIBA_TTL_S * 1000)

static qod_ciba_grant grant(const char *client_id)
{
    qod_ciba_grant g;
    memset(&g, 0, sizeof g);
    snprintf(g.client_id, sizeof g.client_id, "%s", client_id);
    snprintf(g.scope, sizeof g.scope, "quality-on-demand:sessions:create");
    snprintf(g.subject, sizeof g.subject, "tel:+33612345678");
    snprintf(g.device, sizeof g.device, "{\"phoneNumber\":\"+33612345678\"}");
    return g;
}

QTEST(poll_follows_consent_and_a_grant_is_used_once)
{
    qod_ciba *c = qod_ciba_create();
    qod_ciba_grant g = grant("app-1"), out;
    char id[48];
    QT_EQ_INT(qod_ciba_start(c, &g, false, 1000, id, sizeof id), QOD_OK);
    QT_EQ_INT(qod_ciba_poll_token(c, id, "app-1", 1000, &out), QOD_CIBA_PENDING);
    QT_EQ_INT(qod_ciba_poll_token(c, id, "app-1", 1500, &out), QOD_CIBA_SLOW_DOWN); /* within the interval */
    QT_EQ_INT(qod_ciba_poll_token(c, id, "app-2", 9000, &out), QOD_CIBA_INVALID);   /* another app's */
    QT_EQ_INT(qod_ciba_approve(c, id, 9000), QOD_OK);
    QT_EQ_INT(qod_ciba_poll_token(c, id, "app-1", 9000, &out), QOD_CIBA_GRANTED);
    QT_EQ_STR(out.subject, "tel:+33612345678");
    QT_EQ_INT(qod_ciba_poll_token(c, id, "app-1", 20000, &out), QOD_CIBA_INVALID); /* one use */
    QT_EQ_INT(qod_ciba_approve(c, "no-such-id", 9000), QOD_ERR_NOTFOUND);
    qod_ciba_destroy(c);
}

QTEST(a_request_expires_after_its_lifetime)
{
    qod_ciba *c = qod_ciba_create();
    qod_ciba_grant g = grant("app-1"), out;
    char a[48], b[48], old[48];
    QT_EQ_INT(qod_ciba_start(c, &g, true, 0, a, sizeof a), QOD_OK);
    QT_EQ_INT(qod_ciba_start(c, &g, false, 0, b, sizeof b), QOD_OK);
    QT_EQ_INT(qod_ciba_start(c, &g, false, 0, old, sizeof old), QOD_OK);
    QT_EQ_INT(qod_ciba_approve(c, b, TTL_MS), QOD_ERR_NOTFOUND);
    QT_EQ_INT(qod_ciba_poll_token(c, a, "app-1", TTL_MS, &out), QOD_CIBA_EXPIRED);
    QT_EQ_INT(qod_ciba_poll_token(c, a, "app-1", TTL_MS, &out), QOD_CIBA_INVALID); /* forgotten */
    /* For a while after its end, a poll still learns that the request expired, starts or not. */
    char later[48];
    QT_EQ_INT(qod_ciba_start(c, &g, false, TTL_MS + 30000, later, sizeof later), QOD_OK);
    QT_EQ_INT(qod_ciba_poll_token(c, b, "app-1", TTL_MS + 30000, &out), QOD_CIBA_EXPIRED);
    /* Then a start drops it, and nothing listed is expired. */
    QT_EQ_INT(qod_ciba_start(c, &g, false, TTL_MS + 60001, later, sizeof later), QOD_OK);
    QT_EQ_INT(qod_ciba_poll_token(c, old, "app-1", TTL_MS + 60001, &out), QOD_CIBA_INVALID);
    qod_buf l;
    qod_buf_init(&l, 0);
    QT_EQ_INT(qod_ciba_list(c, TTL_MS + 60001, &l), QOD_OK);
    QT_TRUE(strstr(l.data, later) != NULL && strstr(l.data, old) == NULL);
    qod_buf_dispose(&l);
    qod_ciba_destroy(c);
}

QTEST(a_full_table_refuses_then_makes_room_as_requests_expire)
{
    qod_ciba *c = qod_ciba_create();
    qod_ciba_grant g = grant("app-1"), out;
    char id[48], first[48] = "", last[48] = "";
    for (int i = 0; i < QOD_CIBA_MAX; i++) {
        QT_EQ_INT(qod_ciba_start(c, &g, false, i / 1000, id, sizeof id), QOD_OK);
        if (i == 0)
            memcpy(first, id, sizeof first);
        memcpy(last, id, sizeof last);
    }
    QT_EQ_INT(qod_ciba_start(c, &g, false, 100, id, sizeof id), QOD_ERR_LIMIT);
    /* Once the oldest have expired, starts go in again (the table being full, they are dropped at once), and the
     * newest are still there. */
    QT_EQ_INT(qod_ciba_start(c, &g, false, TTL_MS + 1, id, sizeof id), QOD_OK);
    QT_EQ_INT(qod_ciba_poll_token(c, first, "app-1", TTL_MS + 1, &out), QOD_CIBA_INVALID);
    QT_EQ_INT(qod_ciba_poll_token(c, last, "app-1", TTL_MS + 1, &out), QOD_CIBA_PENDING);
    qod_ciba_destroy(c);
}

/* Seconds that n starts take with `held` requests already in the table, none expired. */
static double time_starts(int held, int n)
{
    qod_ciba *c = qod_ciba_create();
    qod_ciba_grant g = grant("app-1");
    char id[48];
    for (int i = 0; i < held; i++)
        qod_ciba_start(c, &g, false, 0, id, sizeof id);
    int64_t t0 = qod_time_mono_ns();
    for (int i = 0; i < n; i++)
        qod_ciba_start(c, &g, false, 1, id, sizeof id);
    double s = (double)(qod_time_mono_ns() - t0) / 1e9;
    qod_ciba_destroy(c);
    return s;
}

/* A start looked for expired requests through the whole table once it held 50,000: each took about a millisecond
 * at 60,000, under the lock every bc-authorize and token poll takes. It now drops them from the oldest on. */
QTEST(a_start_costs_the_same_with_the_table_large)
{
    double big = 0, small = 0;
    bool ok = false;
    for (int round = 0; round < 2 && !ok; round++) {
        big = time_starts(60000, 5000);
        small = time_starts(0, 5000);
        ok = big <= 10 * small + 0.3;
    }
    if (!ok)
        fprintf(stderr, "5,000 starts: %.3f s beside 60,000 requests, %.3f s alone\n", big, small);
    QT_TRUE(ok);
}

QTEST_MAIN(QT_CASE(poll_follows_consent_and_a_grant_is_used_once), QT_CASE(a_request_expires_after_its_lifetime),
           QT_CASE(a_full_table_refuses_then_makes_room_as_requests_expire),
           QT_CASE(a_start_costs_the_same_with_the_table_large))
