#include "core/timers.h"

#include "util/err.h"

#include <stdlib.h>

void qod_timer_init(qod_timer *t, uint8_t slot)
{
    t->due = 0;
    t->idx = QOD_TIMER_IDLE;
    t->slot = slot;
    t->kind = 0;
}

bool qod_timer_armed(const qod_timer *t)
{
    return t->idx != QOD_TIMER_IDLE;
}

void qod_timers_init(qod_timers *h)
{
    h->v = NULL;
    h->n = h->cap = 0;
}

void qod_timers_dispose(qod_timers *h)
{
    free(h->v);
    h->v = NULL;
    h->n = h->cap = 0;
}

static void place(qod_timers *h, size_t i, qod_timer *t)
{
    h->v[i] = t;
    t->idx = (uint32_t)i;
}

static void sift_up(qod_timers *h, size_t i)
{
    qod_timer *t = h->v[i];
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (h->v[parent]->due <= t->due)
            break;
        place(h, i, h->v[parent]);
        i = parent;
    }
    place(h, i, t);
}

static void sift_down(qod_timers *h, size_t i)
{
    qod_timer *t = h->v[i];
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= h->n)
            break;
        if (c + 1 < h->n && h->v[c + 1]->due < h->v[c]->due)
            c++;
        if (t->due <= h->v[c]->due)
            break;
        place(h, i, h->v[c]);
        i = c;
    }
    place(h, i, t);
}

int qod_timers_arm(qod_timers *h, qod_timer *t, int64_t due, uint8_t kind)
{
    t->kind = kind;
    if (qod_timer_armed(t)) {
        int64_t old = t->due;
        t->due = due;
        if (due < old)
            sift_up(h, t->idx);
        else
            sift_down(h, t->idx);
        return QOD_OK;
    }
    if (h->n == h->cap) {
        size_t cap = h->cap ? h->cap * 2 : 1024;
        qod_timer **v = realloc(h->v, cap * sizeof *v);
        if (!v)
            return QOD_ERR_NOMEM;
        h->v = v;
        h->cap = cap;
    }
    t->due = due;
    h->v[h->n] = t;
    t->idx = (uint32_t)h->n;
    h->n++;
    sift_up(h, h->n - 1);
    return QOD_OK;
}

void qod_timers_cancel(qod_timers *h, qod_timer *t)
{
    if (!qod_timer_armed(t))
        return;
    size_t i = t->idx;
    t->idx = QOD_TIMER_IDLE;
    h->n--;
    if (i == h->n)
        return;
    qod_timer *last = h->v[h->n];
    place(h, i, last);
    if (i > 0 && h->v[(i - 1) / 2]->due > last->due)
        sift_up(h, i);
    else
        sift_down(h, i);
}

qod_timer *qod_timers_peek(const qod_timers *h)
{
    return h->n ? h->v[0] : NULL;
}

qod_timer *qod_timers_pop_due(qod_timers *h, int64_t now)
{
    qod_timer *t = qod_timers_peek(h);
    if (!t || t->due > now)
        return NULL;
    qod_timers_cancel(h, t);
    return t;
}

size_t qod_timers_count(const qod_timers *h)
{
    return h->n;
}
