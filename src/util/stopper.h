/* A stop flag for a thread that works in rounds, and the wait between rounds that setting the flag cuts short.
 * Waits run on the monotonic clock, so a step of the wall clock neither stretches nor skips them. */
#ifndef QOD_UTIL_STOPPER_H
#define QOD_UTIL_STOPPER_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool stopped;
} qod_stopper;

/* Not stopped. */
void qod_stopper_init(qod_stopper *s);
void qod_stopper_destroy(qod_stopper *s);
/* Waits ms milliseconds, or less once stopped; returns whether it is stopped. */
bool qod_stopper_wait(qod_stopper *s, int64_t ms);
/* Sets the flag and wakes every wait. Any thread; more than once is harmless. */
void qod_stopper_stop(qod_stopper *s);

#endif
