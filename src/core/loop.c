#include "core/loop.h"

#include "util/err.h"
#include "util/log.h"
#include "util/time.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#define LOOP_MAX_EVENTS 64

typedef struct job {
    void (*fn)(void *);
    void *arg;
    struct job *next;
} job;

typedef struct watch {
    int fd;
    bool dead; /* removed; freed after the current batch of events */
    qod_loop_fd_fn fn;
    void *arg;
    struct watch *next;
} watch;

struct qod_loop {
    int ep, wake_fd;
    pthread_t thread;
    bool started;
    pthread_mutex_t mu;
    job *head, *tail;
    bool stopping;
    watch *graveyard; /* removed watches, freed once no event of the batch can point to them */
    qod_loop_tick_fn ticks[4];
    void *tick_args[4];
    int nticks;
    watch *watches;
    char name[16]; /* the thread's name (top -H, perf), at most 15 characters */
};

int qod_loop_create(qod_loop **out)
{
    *out = NULL;
    qod_loop *l = calloc(1, sizeof *l);
    if (!l)
        return QOD_ERR_NOMEM;
    pthread_mutex_init(&l->mu, NULL);
    l->ep = epoll_create1(EPOLL_CLOEXEC);
    l->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
    if (l->ep < 0 || l->wake_fd < 0 || epoll_ctl(l->ep, EPOLL_CTL_ADD, l->wake_fd, &ev) != 0) {
        int rc = -errno;
        qod_loop_destroy(l);
        return rc;
    }
    *out = l;
    return QOD_OK;
}

int qod_loop_add_tick(qod_loop *l, qod_loop_tick_fn fn, void *arg)
{
    if (l->nticks >= 4)
        return QOD_ERR_LIMIT;
    l->ticks[l->nticks] = fn;
    l->tick_args[l->nticks++] = arg;
    return QOD_OK;
}

void qod_loop_wake(qod_loop *l)
{
    uint64_t one = 1;
    if (write(l->wake_fd, &one, sizeof one) < 0 && errno != EAGAIN)
        QOD_WARN("loop", "wake_failed", "errno=%d", errno);
}

int qod_loop_post(qod_loop *l, void (*fn)(void *arg), void *arg)
{
    job *j = malloc(sizeof *j);
    if (!j)
        return QOD_ERR_NOMEM;
    *j = (job){fn, arg, NULL};
    pthread_mutex_lock(&l->mu);
    bool closed = l->stopping;
    if (!closed) {
        if (l->tail)
            l->tail->next = j;
        else
            l->head = j;
        l->tail = j;
    }
    pthread_mutex_unlock(&l->mu);
    if (closed) {
        free(j);
        return QOD_ERR_CLOSED;
    }
    qod_loop_wake(l);
    return QOD_OK;
}

static void run_jobs(qod_loop *l)
{
    pthread_mutex_lock(&l->mu);
    job *j = l->head;
    l->head = l->tail = NULL;
    pthread_mutex_unlock(&l->mu);
    while (j) {
        job *next = j->next;
        j->fn(j->arg);
        free(j);
        j = next;
    }
}

int qod_loop_watch(qod_loop *l, int fd, uint32_t events, qod_loop_fd_fn fn, void *arg)
{
    watch **p = &l->watches;
    while (*p && (*p)->fd != fd)
        p = &(*p)->next;
    if (!events) {
        if (*p) {
            /* Events of this batch may still point to it: bury it until the batch is done. */
            watch *w = *p;
            *p = w->next;
            epoll_ctl(l->ep, EPOLL_CTL_DEL, fd, NULL);
            w->dead = true;
            w->next = l->graveyard;
            l->graveyard = w;
        }
        return QOD_OK;
    }
    bool add = *p == NULL;
    if (add) {
        *p = calloc(1, sizeof **p);
        if (!*p)
            return QOD_ERR_NOMEM;
    }
    watch *w = *p;
    w->fd = fd;
    w->fn = fn;
    w->arg = arg;
    struct epoll_event ev = {.events = events, .data.ptr = w};
    if (epoll_ctl(l->ep, add ? EPOLL_CTL_ADD : EPOLL_CTL_MOD, fd, &ev) != 0) {
        int rc = -errno;
        if (add) {
            *p = w->next;
            free(w);
        }
        return rc;
    }
    return QOD_OK;
}

static void *loop_main(void *arg)
{
    qod_loop *l = arg;
    struct epoll_event evs[LOOP_MAX_EVENTS];
    pthread_setname_np(pthread_self(), l->name[0] ? l->name : "qod-loop");
    for (;;) {
        pthread_mutex_lock(&l->mu);
        bool stop = l->stopping;
        pthread_mutex_unlock(&l->mu);
        if (stop)
            break;
        run_jobs(l);
        int64_t now = qod_time_mono_ms();
        int64_t next = -1;
        for (int i = 0; i < l->nticks; i++) {
            next = qod_loop_sooner(next, l->ticks[i](l->tick_args[i], now));
        }
        int timeout = -1;
        if (next >= 0) {
            int64_t d = next - qod_time_mono_ms();
            timeout = d <= 0 ? 0 : d > 60000 ? 60000 : (int)d;
        }
        int n = epoll_wait(l->ep, evs, LOOP_MAX_EVENTS, timeout);
        for (int i = 0; i < n; i++) {
            watch *w = evs[i].data.ptr;
            if (!w) {
                uint64_t v;
                while (read(l->wake_fd, &v, sizeof v) > 0)
                    ;
                continue;
            }
            if (!w->dead)
                w->fn(w->arg, w->fd, evs[i].events);
        }
        while (l->graveyard) {
            watch *w = l->graveyard;
            l->graveyard = w->next;
            free(w);
        }
    }
    return NULL;
}

void qod_loop_set_name(qod_loop *l, const char *name)
{
    snprintf(l->name, sizeof l->name, "%s", name);
}

int qod_loop_start(qod_loop *l)
{
    if (pthread_create(&l->thread, NULL, loop_main, l) != 0)
        return QOD_ERR_NOMEM;
    l->started = true;
    return QOD_OK;
}

void qod_loop_stop(qod_loop *l)
{
    if (!l)
        return;
    pthread_mutex_lock(&l->mu);
    l->stopping = true;
    bool join = l->started;
    l->started = false;
    pthread_mutex_unlock(&l->mu);
    if (join) {
        qod_loop_wake(l);
        pthread_join(l->thread, NULL);
    }
    /* Jobs posted before the stop still run, so their owners can release what they carry. Later posts fail
     * with QOD_ERR_CLOSED, so other threads may go on posting until the loop is destroyed. */
    run_jobs(l);
}

void qod_loop_destroy(qod_loop *l)
{
    if (!l)
        return;
    qod_loop_stop(l);
    while (l->watches) {
        watch *w = l->watches;
        l->watches = w->next;
        free(w);
    }
    while (l->graveyard) {
        watch *w = l->graveyard;
        l->graveyard = w->next;
        free(w);
    }
    if (l->ep >= 0)
        close(l->ep);
    if (l->wake_fd >= 0)
        close(l->wake_fd);
    pthread_mutex_destroy(&l->mu);
    free(l);
}
