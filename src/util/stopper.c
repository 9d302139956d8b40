#include "util/stopper.h"

#include "util/time.h"

#include <time.h>

void qod_stopper_init(qod_stopper *s)
{
    pthread_mutex_init(&s->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&s->cv, &ca);
    pthread_condattr_destroy(&ca);
    s->stopped = false;
}

void qod_stopper_destroy(qod_stopper *s)
{
    pthread_cond_destroy(&s->cv);
    pthread_mutex_destroy(&s->mu);
}

bool qod_stopper_wait(qod_stopper *s, int64_t ms)
{
    struct timespec ts = qod_time_mono_after(ms);
    pthread_mutex_lock(&s->mu);
    while (!s->stopped && pthread_cond_timedwait(&s->cv, &s->mu, &ts) == 0)
        ;
    bool stopped = s->stopped;
    pthread_mutex_unlock(&s->mu);
    return stopped;
}

void qod_stopper_stop(qod_stopper *s)
{
    pthread_mutex_lock(&s->mu);
    s->stopped = true;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
}
