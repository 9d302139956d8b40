/* Callback delivery: reads the outbox, and POSTs each event to its app's URL with libcurl's multi interface on
 * a loop thread of its own (socket and timer callbacks), signed per Standard Webhooks.
 * - At least once, in order per session: only the oldest undelivered event of a session is ever in flight.
 * - Each attempt has a timeout, succeeds only on 2xx, never follows redirects; failures are retried on the
 *   retry schedule (±10% jitter), 429/503 honour Retry-After, 410 Gone stops every delivery to that URL, and
 *   after the last attempt the event is dead (kept, listable, replayable).
 * - Connections are reused per host; a per-host and a global limit bound requests in flight.
 * - Memory is bounded: at most max_loaded events are held; the rest wait in the store.
 * - The body format is chosen per API surface by a renderer (a seam for CloudEvents). */
#ifndef QOD_NOTIFY_DELIVERY_H
#define QOD_NOTIFY_DELIVERY_H

#include "api/metrics.h"
#include "auth/apps.h"
#include "notify/urlguard.h"
#include "store/store.h"
#include "util/buf.h"
#include "util/seal.h"

#include <stdbool.h>
#include <stdint.h>

#define QOD_RETRY_MAX 32

typedef struct qod_delivery qod_delivery;

typedef struct {
    qod_store *store;
    qod_apps *apps;
    double schedule[QOD_RETRY_MAX]; /* seconds: wait before attempt i (0 = at once) */
    int nschedule;
    int64_t timeout_ms;     /* per attempt */
    int per_host;           /* requests in flight per host */
    int global;             /* requests in flight in all */
    const char *ca_file;    /* an extra CA for https callbacks, or NULL */
    const qod_cidrs *allow; /* --callback-allow */
    size_t max_loaded;      /* events held in memory */
    size_t gone_max;        /* callback URLs remembered as 410 Gone at most (0: 100,000); past it the oldest is
                             * forgotten */
    const qod_seal *seal;   /* opens the sealed callback tokens of events */
    /* Several nodes (core/cluster.h): only the events of sessions this node holds are attempted here. NULL: all. */
    bool (*owns)(void *ctx, const char *session);
    /* Called on the delivery's thread before it reads the outbox from its start (at start, qod_delivery_rescan):
     * owns must answer from the holdings as they were then, until the next call. A session that becomes this
     * node's in between is then loaded by the rescan that follows, from its first pending event, never from the
     * middle of its events (a later event sent before an earlier one). NULL: owns follows the holdings live. */
    void (*owns_refresh)(void *ctx);
    /* Adds to a batch of outcomes the fence of the lease that makes this node the session's holder (store.h), so a
     * node that lost the session's shard does not overwrite the new holder's outcomes. NULL: none. */
    int (*fence)(void *ctx, qod_store_batch *b, const char *session);
    void *owns_ctx;
} qod_delivery_opts;

/* An outbox event as a renderer sees it; strings borrowed for the call. */
typedef struct {
    const char *event_id;
    const char *session;
    const char *app;
    const char *state;  /* engine words: requested, available, ended */
    const char *reason; /* "", expired, refused, network-terminated, deleted */
    const char *extra;  /* surface-specific JSON object or NULL */
    const char *token;  /* bearer token for the receiver, or NULL */
    int surface;
    int64_t at_ms;
    int64_t available_ms; /* when the session became available, 0 if it never did */
} qod_event_view;

/* A renderer's answer for an event its API does not notify (it is marked delivered without a request). */
#define QOD_RENDER_SKIP 1

/* Renders the body of one event. Returns QOD_OK, QOD_RENDER_SKIP when the API sends nothing for it, or
 * QOD_ERR_STATE when the event cannot be sent (it becomes dead). */
typedef int (*qod_render_fn)(const qod_event_view *ev, qod_buf *body, const char **content_type, const char **token);

/* Parses "0,5,300,…" into opts->schedule. QOD_ERR_INVALID with why in err. */
int qod_retry_schedule_parse(const char *text, qod_delivery_opts *opts, char *err, size_t errcap);
/* Creates the delivery (nothing runs until qod_delivery_start). */
int qod_delivery_create(const qod_delivery_opts *opts, qod_delivery **out);
/* Sets the renderer of a surface (0 = v0, 1 = v1, 2 = provisioning). */
void qod_delivery_set_renderer(qod_delivery *d, int surface, qod_render_fn fn);
/* Loads the pending events and starts delivering (starts the delivery's thread). */
int qod_delivery_start(qod_delivery *d);
/* Stops the delivery's thread and submits the outcomes it gathered; call while the store is still open.
 * Attempts in flight are abandoned (their events stay pending). Idempotent; NULL is a no-op. */
void qod_delivery_stop(qod_delivery *d);
/* New events are durable: look for them (any thread; coalesced). */
void qod_delivery_kick(void *d);
/* Replays a session's events from from_seq on, in order (an operator's retry of a dead event), once the session
 * has no attempt in flight; the loop writes the replay to the store itself. Any thread. */
int qod_delivery_requeue(qod_delivery *d, const char *session, int64_t from_seq);
/* Remembers that url answered 410 Gone (another node was told so): no attempt goes there any more. Any thread. */
int qod_delivery_gone(qod_delivery *d, const char *url);
/* Forgets that url answered 410 Gone (an operator asked, here or on another node): callbacks go there again; its
 * dead events stay dead until replayed. Any thread. */
int qod_delivery_forget_gone(qod_delivery *d, const char *url);
/* Loads the pending events again from the start of the outbox (after this node took over sessions whose events
 * it skipped so far). Any thread. */
int qod_delivery_rescan(qod_delivery *d);
/* Test hook (qodd --test-hooks): while held, rescans wait, and the last one asked for runs at the release. It
 * widens the window between a shard's adoption and the rescan that makes its sessions this node's to deliver. */
int qod_delivery_hold_rescans(qod_delivery *d, bool hold);
/* Stops (when not yet stopped) and frees everything. NULL is a no-op. */
void qod_delivery_destroy(qod_delivery *d);
/* Appends the delivery metrics (Prometheus text). */
void qod_delivery_metrics(void *d, qod_buf *out);

#endif
