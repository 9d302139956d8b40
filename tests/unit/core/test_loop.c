#include "core/loop.h"

#include "qtest.h"
#include "util/err.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>

static void count_job(void *arg)
{
    atomic_fetch_add((atomic_int *)arg, 1);
}

QTEST(posted_jobs_run_on_the_loop)
{
    qod_loop *l;
    atomic_int ran = 0;
    QT_EQ_INT(qod_loop_create(&l), QOD_OK);
    QT_EQ_INT(qod_loop_start(l), QOD_OK);
    for (int i = 0; i < 100; i++)
        QT_EQ_INT(qod_loop_post(l, count_job, &ran), QOD_OK);
    qod_loop_destroy(l);
    /* Every job posted before the stop ran, on the thread or at the stop. */
    QT_EQ_INT(atomic_load(&ran), 100);
}

QTEST(post_after_stop_is_refused_until_destroy)
{
    qod_loop *l;
    atomic_int ran = 0;
    QT_EQ_INT(qod_loop_create(&l), QOD_OK);
    QT_EQ_INT(qod_loop_start(l), QOD_OK);
    QT_EQ_INT(qod_loop_post(l, count_job, &ran), QOD_OK);
    qod_loop_stop(l);
    QT_EQ_INT(atomic_load(&ran), 1);
    QT_EQ_INT(qod_loop_post(l, count_job, &ran), QOD_ERR_CLOSED);
    qod_loop_stop(l); /* idempotent */
    QT_EQ_INT(qod_loop_post(l, count_job, &ran), QOD_ERR_CLOSED);
    QT_EQ_INT(atomic_load(&ran), 1);
    qod_loop_destroy(l);
}

/* A thread that keeps posting while the loop stops (the store thread draining at shutdown) is never left with
 * a freed loop: its posts either run or are refused. */
typedef struct {
    qod_loop *l;
    atomic_int ran, refused;
    atomic_bool done;
} poster;

static void *post_main(void *arg)
{
    poster *p = arg;
    for (int i = 0; i < 20000; i++)
        if (qod_loop_post(p->l, count_job, &p->ran) != QOD_OK)
            atomic_fetch_add(&p->refused, 1);
    atomic_store(&p->done, true);
    return NULL;
}

QTEST(stop_races_with_a_posting_thread)
{
    poster p = {0};
    QT_EQ_INT(qod_loop_create(&p.l), QOD_OK);
    QT_EQ_INT(qod_loop_start(p.l), QOD_OK);
    pthread_t t;
    QT_EQ_INT(pthread_create(&t, NULL, post_main, &p), 0);
    while (atomic_load(&p.ran) < 100 && !atomic_load(&p.done))
        sched_yield();
    qod_loop_stop(p.l);
    pthread_join(t, NULL);
    QT_EQ_INT(atomic_load(&p.ran) + atomic_load(&p.refused), 20000);
    QT_TRUE(atomic_load(&p.ran) >= 100);
    qod_loop_destroy(p.l);
}

/* -1 is "no deadline": it never wins against a real one. */
QTEST(sooner_picks_the_earlier_deadline_and_ignores_none)
{
    QT_EQ_INT(qod_loop_sooner(-1, -1), -1);
    QT_EQ_INT(qod_loop_sooner(-1, 5), 5);
    QT_EQ_INT(qod_loop_sooner(5, -1), 5);
    QT_EQ_INT(qod_loop_sooner(0, 7), 0);
    QT_EQ_INT(qod_loop_sooner(9, 7), 7);
    QT_EQ_INT(qod_loop_sooner(7, 7), 7);
}

QTEST_MAIN(QT_CASE(sooner_picks_the_earlier_deadline_and_ignores_none), QT_CASE(posted_jobs_run_on_the_loop),
           QT_CASE(post_after_stop_is_refused_until_destroy), QT_CASE(stop_races_with_a_posting_thread))
