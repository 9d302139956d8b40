/* Timers as an indexed binary min-heap on the monotonic clock: arm, re-arm and cancel are O(log n), finding
 * the next due timer is O(1), so a million sessions expire on time without scanning. Timers are embedded in
 * their owners (no allocation per timer). Not thread-safe: the engine guards it with its lock. */
#ifndef QOD_CORE_TIMERS_H
#define QOD_CORE_TIMERS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define QOD_TIMER_IDLE UINT32_MAX

typedef struct {
    int64_t due;  /* monotonic ms */
    uint32_t idx; /* position in the heap, QOD_TIMER_IDLE when not armed */
    uint8_t slot; /* which timer of its owner this is */
    uint8_t kind; /* what to do when it fires (owner's enum) */
} qod_timer;

typedef struct {
    qod_timer **v;
    size_t n, cap;
} qod_timers;

/* An unarmed timer. */
void qod_timer_init(qod_timer *t, uint8_t slot);
/* True while armed. */
bool qod_timer_armed(const qod_timer *t);
/* Empty heap. */
void qod_timers_init(qod_timers *h);
/* Frees the heap array (not the timers). */
void qod_timers_dispose(qod_timers *h);
/* Arms or re-arms t for `due`; QOD_ERR_NOMEM when the heap cannot grow. */
int qod_timers_arm(qod_timers *h, qod_timer *t, int64_t due, uint8_t kind);
/* Disarms t (no-op when idle). */
void qod_timers_cancel(qod_timers *h, qod_timer *t);
/* The earliest timer, or NULL. */
qod_timer *qod_timers_peek(const qod_timers *h);
/* Removes and returns the earliest timer due at or before now, or NULL. */
qod_timer *qod_timers_pop_due(qod_timers *h, int64_t now);
/* Number of armed timers. */
size_t qod_timers_count(const qod_timers *h);

#endif
