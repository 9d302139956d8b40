#include "util/stopper.h"

#include "qtest.h"
#include "util/time.h"

#include <pthread.h>
#include <time.h>

QTEST(a_wait_lasts_its_time_when_nobody_stops)
{
    qod_stopper s;
    qod_stopper_init(&s);
    int64_t t0 = qod_time_mono_ms();
    QT_TRUE(!qod_stopper_wait(&s, 30));
    QT_TRUE(qod_time_mono_ms() - t0 >= 30);
    qod_stopper_destroy(&s);
}

static void *stop_later(void *arg)
{
    nanosleep(&(struct timespec){.tv_nsec = 20 * 1000000}, NULL);
    qod_stopper_stop(arg);
    return NULL;
}

QTEST(a_stop_cuts_a_wait_short_and_later_waits_return_at_once)
{
    qod_stopper s;
    qod_stopper_init(&s);
    pthread_t t;
    QT_EQ_INT(pthread_create(&t, NULL, stop_later, &s), 0);
    int64_t t0 = qod_time_mono_ms();
    QT_TRUE(qod_stopper_wait(&s, 60000));
    QT_TRUE(qod_time_mono_ms() - t0 < 30000);
    pthread_join(t, NULL);
    t0 = qod_time_mono_ms();
    QT_TRUE(qod_stopper_wait(&s, 60000));
    QT_TRUE(qod_time_mono_ms() - t0 < 1000);
    qod_stopper_stop(&s); /* again: harmless */
    qod_stopper_destroy(&s);
}

QTEST_MAIN(QT_CASE(a_wait_lasts_its_time_when_nobody_stops),
           QT_CASE(a_stop_cuts_a_wait_short_and_later_waits_return_at_once))
