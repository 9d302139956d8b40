#include "core/timers.h"

#include "qtest.h"
#include "util/err.h"

#include <stdlib.h>

/* A deterministic generator so a failure reproduces. */
static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint64_t rng(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

/* True when every slot points back to its timer and no child is due before its parent. */
static bool heap_ok(const qod_timers *h)
{
    for (size_t i = 0; i < h->n; i++) {
        if (h->v[i]->idx != i)
            return false;
        if (i > 0 && h->v[(i - 1) / 2]->due > h->v[i]->due)
            return false;
    }
    return true;
}

/* Pops everything (now = INT64_MAX) and checks the dues never go down; returns how many came out, -1 on order. */
static long drain_in_order(qod_timers *h)
{
    long n = 0;
    int64_t last = INT64_MIN;
    for (qod_timer *t; (t = qod_timers_pop_due(h, INT64_MAX)) != NULL; n++) {
        if (t->due < last || qod_timer_armed(t))
            return -1;
        last = t->due;
    }
    return n;
}

QTEST(init_is_idle)
{
    qod_timer t;
    qod_timer_init(&t, 3);
    QT_TRUE(!qod_timer_armed(&t));
    QT_EQ_INT(t.idx, QOD_TIMER_IDLE);
    QT_EQ_INT(t.slot, 3);
}

QTEST(empty_heap_has_nothing)
{
    qod_timers h;
    qod_timers_init(&h);
    QT_TRUE(qod_timers_peek(&h) == NULL);
    QT_TRUE(qod_timers_pop_due(&h, INT64_MAX) == NULL);
    QT_EQ_INT(qod_timers_count(&h), 0);
    qod_timers_dispose(&h);
}

QTEST(arm_sets_due_kind_and_count)
{
    qod_timers h;
    qod_timer a, b;
    qod_timers_init(&h);
    qod_timer_init(&a, 0);
    qod_timer_init(&b, 1);
    QT_EQ_INT(qod_timers_arm(&h, &a, 500, 7), QOD_OK);
    QT_EQ_INT(qod_timers_arm(&h, &b, 100, 9), QOD_OK);
    QT_TRUE(qod_timer_armed(&a) && qod_timer_armed(&b));
    QT_EQ_INT(a.kind, 7);
    QT_EQ_INT(qod_timers_count(&h), 2);
    QT_TRUE(qod_timers_peek(&h) == &b);
    qod_timers_dispose(&h);
}

QTEST(pop_random_dues_in_order)
{
    enum { N = 10000 };
    qod_timer *ts = malloc(N * sizeof *ts);
    QT_TRUE(ts != NULL);
    qod_timers h;
    qod_timers_init(&h);
    int rc = QOD_OK;
    for (int i = 0; i < N && rc == QOD_OK; i++) {
        qod_timer_init(&ts[i], 0);
        rc = qod_timers_arm(&h, &ts[i], (int64_t)(rng() % 1000000) - 500000, 0);
    }
    size_t count = qod_timers_count(&h);
    long popped = drain_in_order(&h);
    size_t left = qod_timers_count(&h);
    qod_timers_dispose(&h);
    free(ts);
    QT_EQ_INT(rc, QOD_OK);
    QT_EQ_INT(count, N);
    QT_EQ_INT(popped, N);
    QT_EQ_INT(left, 0);
}

QTEST(pop_due_returns_null_before_due)
{
    qod_timers h;
    qod_timer t;
    qod_timers_init(&h);
    qod_timer_init(&t, 0);
    qod_timers_arm(&h, &t, 1000, 1);
    QT_TRUE(qod_timers_pop_due(&h, 999) == NULL);
    QT_EQ_INT(qod_timers_count(&h), 1);
    QT_TRUE(qod_timer_armed(&t));
    QT_TRUE(qod_timers_pop_due(&h, 1000) == &t);
    QT_TRUE(!qod_timer_armed(&t));
    QT_EQ_INT(qod_timers_count(&h), 0);
    qod_timers_dispose(&h);
}

QTEST(rearm_earlier_moves_to_front)
{
    qod_timers h;
    qod_timer t[5];
    qod_timers_init(&h);
    for (int i = 0; i < 5; i++) {
        qod_timer_init(&t[i], (uint8_t)i);
        qod_timers_arm(&h, &t[i], 100 * (i + 1), 0);
    }
    QT_EQ_INT(qod_timers_arm(&h, &t[4], 50, 2), QOD_OK);
    QT_EQ_INT(qod_timers_count(&h), 5);
    QT_TRUE(qod_timers_peek(&h) == &t[4]);
    QT_EQ_INT(t[4].kind, 2);
    QT_TRUE(heap_ok(&h));
    QT_EQ_INT(drain_in_order(&h), 5);
    qod_timers_dispose(&h);
}

QTEST(rearm_later_moves_back)
{
    qod_timers h;
    qod_timer t[5];
    qod_timers_init(&h);
    for (int i = 0; i < 5; i++) {
        qod_timer_init(&t[i], (uint8_t)i);
        qod_timers_arm(&h, &t[i], 100 * (i + 1), 0);
    }
    QT_EQ_INT(qod_timers_arm(&h, &t[0], 1000, 0), QOD_OK);
    QT_EQ_INT(qod_timers_count(&h), 5);
    QT_TRUE(qod_timers_peek(&h) == &t[1]);
    QT_TRUE(heap_ok(&h));
    qod_timer *order[5];
    for (int i = 0; i < 5; i++)
        order[i] = qod_timers_pop_due(&h, INT64_MAX);
    qod_timers_dispose(&h);
    QT_TRUE(order[0] == &t[1] && order[3] == &t[4] && order[4] == &t[0]);
}

QTEST(cancel_in_middle_keeps_order)
{
    enum { N = 1000 };
    qod_timer t[N];
    qod_timers h;
    qod_timers_init(&h);
    for (int i = 0; i < N; i++) {
        qod_timer_init(&t[i], 0);
        qod_timers_arm(&h, &t[i], (int64_t)(rng() % 5000), 0);
    }
    /* Cancel every third timer, wherever it sits in the heap. */
    for (int i = 0; i < N; i += 3)
        qod_timers_cancel(&h, &t[i]);
    bool ok = heap_ok(&h);
    size_t count = qod_timers_count(&h);
    bool cancelled_idle = !qod_timer_armed(&t[0]) && !qod_timer_armed(&t[N - 1]);
    long popped = drain_in_order(&h);
    qod_timers_dispose(&h);
    QT_TRUE(ok);
    QT_TRUE(cancelled_idle);
    QT_EQ_INT(count, N - (N + 2) / 3);
    QT_EQ_INT(popped, N - (N + 2) / 3);
}

QTEST(cancel_last_slot)
{
    qod_timers h;
    qod_timer a, b;
    qod_timers_init(&h);
    qod_timer_init(&a, 0);
    qod_timer_init(&b, 0);
    qod_timers_arm(&h, &a, 1, 0);
    qod_timers_arm(&h, &b, 2, 0);
    qod_timers_cancel(&h, &b);
    QT_EQ_INT(qod_timers_count(&h), 1);
    QT_TRUE(qod_timers_peek(&h) == &a);
    QT_TRUE(heap_ok(&h));
    qod_timers_dispose(&h);
}

QTEST(cancel_idle_is_noop)
{
    qod_timers h;
    qod_timer a, idle;
    qod_timers_init(&h);
    qod_timer_init(&a, 0);
    qod_timer_init(&idle, 0);
    qod_timers_arm(&h, &a, 10, 0);
    qod_timers_cancel(&h, &idle);
    qod_timers_cancel(&h, &a);
    qod_timers_cancel(&h, &a);
    QT_EQ_INT(qod_timers_count(&h), 0);
    QT_TRUE(!qod_timer_armed(&idle));
    QT_TRUE(qod_timers_peek(&h) == NULL);
    qod_timers_dispose(&h);
}

QTEST(popped_timer_can_be_rearmed)
{
    qod_timers h;
    qod_timer a;
    qod_timers_init(&h);
    qod_timer_init(&a, 0);
    qod_timers_arm(&h, &a, 10, 0);
    QT_TRUE(qod_timers_pop_due(&h, 10) == &a);
    QT_EQ_INT(qod_timers_arm(&h, &a, 20, 0), QOD_OK);
    QT_EQ_INT(qod_timers_count(&h), 1);
    QT_TRUE(qod_timers_pop_due(&h, 19) == NULL);
    QT_TRUE(qod_timers_pop_due(&h, 20) == &a);
    qod_timers_dispose(&h);
}

/* The minimum due among the armed model timers, or INT64_MAX when none is armed. */
static int64_t model_min(const qod_timer *t, const bool *armed, int n)
{
    int64_t m = INT64_MAX;
    for (int i = 0; i < n; i++)
        if (armed[i] && t[i].due < m)
            m = t[i].due;
    return m;
}

QTEST(random_ops_match_model)
{
    enum { N = 300, OPS = 200000 };
    qod_timer t[N];
    bool armed[N] = {false};
    size_t narmed = 0;
    qod_timers h;
    qod_timers_init(&h);
    for (int i = 0; i < N; i++)
        qod_timer_init(&t[i], 0);
    int bad_op = -1;
    for (int op = 0; op < OPS && bad_op < 0; op++) {
        int i = (int)(rng() % N);
        uint64_t what = rng() % 10;
        int64_t now = (int64_t)(rng() % 100000);
        if (what < 6) {
            /* Arm or re-arm (ties are common on purpose). */
            if (qod_timers_arm(&h, &t[i], (int64_t)(rng() % 100000), 0) != QOD_OK)
                bad_op = op;
            narmed += !armed[i];
            armed[i] = true;
        } else if (what < 9) {
            qod_timers_cancel(&h, &t[i]);
            narmed -= armed[i];
            armed[i] = false;
        } else {
            qod_timer *p = qod_timers_pop_due(&h, now);
            int64_t m = model_min(t, armed, N);
            if (m <= now) {
                if (!p || p->due != m)
                    bad_op = op;
                else {
                    armed[p - t] = false;
                    narmed--;
                }
            } else if (p) {
                bad_op = op;
            }
        }
        qod_timer *top = qod_timers_peek(&h);
        int64_t m = model_min(t, armed, N);
        if (qod_timers_count(&h) != narmed || (top ? top->due : INT64_MAX) != m || !heap_ok(&h))
            bad_op = op;
        for (int k = 0; k < N && bad_op < 0; k++)
            if (qod_timer_armed(&t[k]) != armed[k])
                bad_op = op;
    }
    qod_timers_dispose(&h);
    QT_EQ_INT(bad_op, -1);
}

QTEST(dispose_resets)
{
    qod_timers h;
    qod_timer a;
    qod_timers_init(&h);
    qod_timer_init(&a, 0);
    qod_timers_arm(&h, &a, 1, 0);
    qod_timers_dispose(&h);
    QT_EQ_INT(qod_timers_count(&h), 0);
    QT_TRUE(qod_timers_peek(&h) == NULL);
}

QTEST_MAIN(QT_CASE(init_is_idle), QT_CASE(empty_heap_has_nothing), QT_CASE(arm_sets_due_kind_and_count),
           QT_CASE(pop_random_dues_in_order), QT_CASE(pop_due_returns_null_before_due),
           QT_CASE(rearm_earlier_moves_to_front), QT_CASE(rearm_later_moves_back),
           QT_CASE(cancel_in_middle_keeps_order), QT_CASE(cancel_last_slot), QT_CASE(cancel_idle_is_noop),
           QT_CASE(popped_timer_can_be_rearmed), QT_CASE(random_ops_match_model), QT_CASE(dispose_resets))
