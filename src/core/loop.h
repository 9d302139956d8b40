/* The engine loop: one thread running epoll over a wake-up eventfd, file descriptors that other modules
 * watch (libcurl sockets), and a tick callback that runs due timers and returns the next deadline.
 * Other threads talk to it only through qod_loop_post and qod_loop_wake. */
#ifndef QOD_CORE_LOOP_H
#define QOD_CORE_LOOP_H

#include <stdint.h>

typedef struct qod_loop qod_loop;

/* Runs due work at now (monotonic ms) and returns the next deadline (monotonic ms), or -1 for none. */
typedef int64_t (*qod_loop_tick_fn)(void *arg, int64_t now);
/* The earlier of two deadlines in a tick's terms (monotonic ms, -1 for none). */
static inline int64_t qod_loop_sooner(int64_t a, int64_t b)
{
    return a < 0 ? b : b < 0 || a < b ? a : b;
}
typedef void (*qod_loop_fd_fn)(void *arg, int fd, uint32_t events);

/* Creates the loop (no thread yet). */
int qod_loop_create(qod_loop **out);
/* Adds a tick callback (at most 4); call before qod_loop_start. The loop sleeps until the earliest deadline
 * any tick returns. */
int qod_loop_add_tick(qod_loop *l, qod_loop_tick_fn fn, void *arg);
/* Names the loop's thread (at most 15 characters kept); call before qod_loop_start. Default "qod-loop". */
void qod_loop_set_name(qod_loop *l, const char *name);
/* Starts the loop thread. */
int qod_loop_start(qod_loop *l);
/* Stops and joins the thread and runs the posted jobs left; later posts fail with QOD_ERR_CLOSED. The loop stays
 * valid memory until qod_loop_destroy, so threads that still post (a store thread draining) stay safe.
 * Idempotent; NULL is a no-op. */
void qod_loop_stop(qod_loop *l);
/* Stops (when not yet stopped) and frees; NULL is a no-op. */
void qod_loop_destroy(qod_loop *l);
/* Runs fn(arg) on the loop thread soon; any thread. QOD_ERR_NOMEM or QOD_ERR_CLOSED on failure. */
int qod_loop_post(qod_loop *l, void (*fn)(void *arg), void *arg);
/* Makes the loop call its tick again now (after a timer was armed earlier than the current deadline). */
void qod_loop_wake(qod_loop *l);
/* Watches fd for EPOLLIN/EPOLLOUT (events); replaces an existing watch; events 0 removes it. Loop thread only. */
int qod_loop_watch(qod_loop *l, int fd, uint32_t events, qod_loop_fd_fn fn, void *arg);

#endif
