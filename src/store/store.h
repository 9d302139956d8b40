/* The durable store: a small set of keyed tables of JSON documents with a few indexed columns, written in
 * atomic batches by one group-committing thread, and read by key or by scan.
 *
 * The store assumes no single process owns the data (a PostgreSQL implementation for several nodes shares this
 * interface): callers never rely on in-process state of the store, only on what a batch commits.
 * Implementations are vtables (qod_store_impl) chosen by name/URI at start; store.c owns the queue and thread. */
#ifndef QOD_STORE_STORE_H
#define QOD_STORE_STORE_H

#include "util/buf.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct qod_store qod_store;

/* The tables. Their rows have: key (unique), owner (app id or ""), idx (secondary key, e.g. device), state,
 * num (a number such as an expiry time), and doc (JSON text). */
typedef enum {
    QOD_TBL_APPS = 0,
    QOD_TBL_DEVICES,
    QOD_TBL_SESSIONS,
    QOD_TBL_IDEMPOTENCY,
    QOD_TBL_META,
    QOD_TBL_COUNT
} qod_store_table;

/* One row as read back; all strings borrowed for the duration of the callback. */
typedef struct {
    const char *key;
    const char *owner;
    const char *idx;
    int64_t state;
    int64_t num;
    const char *doc;
} qod_store_row;

/* An outbox event: a status change to deliver to an app. Rows are appended in commit order; `seq` orders them. */
typedef struct {
    int64_t seq;         /* assigned by the store */
    const char *id;      /* webhook-id, stable across retries */
    const char *session; /* the session (or assignment) the event belongs to */
    const char *owner;   /* app id */
    int64_t created_ms;  /* unix ms */
    int64_t state;       /* 0 pending, 1 delivered, 2 dead */
    int64_t attempts;
    int64_t next_ms; /* unix ms of the next attempt */
    const char *doc; /* delivery document (url, body, token…) */
} qod_store_event;

typedef struct qod_store_batch qod_store_batch;

/* Completion of an asynchronous batch, called exactly once on the store thread after commit or failure.
 * rc: QOD_OK, QOD_ERR_NOSPACE (disk full), QOD_ERR_EXISTS (a conditional put lost), QOD_ERR_STORE. */
typedef void (*qod_store_done_fn)(int rc, void *arg);

typedef struct {
    const char *uri; /* postgres://… or postgresql://… (libpq URI) for PostgreSQL; else a directory or file
                      * path for SQLite */
    bool sync_full;  /* fsync every commit (durable) or leave it to the OS (normal); for PostgreSQL, false
                      * sets synchronous_commit = off on the writer's connection */
    /* PostgreSQL: the server ends the writer's session once it has sat this long inside a transaction (a
     * process frozen between a fence and its COMMIT would otherwise keep its shard leases locked); 0 for none.
     * A cluster node sets its lease. */
    int64_t txn_idle_max_ms;
    /* PostgreSQL: the longest wait for the server's answer to a call on the writer's and the reader's connections
     * (and for data the server leaves unacknowledged), 0 for as long as it takes. Past it the connection is given
     * up and the call fails; a COMMIT that goes unanswered is looked up on a new connection (postgres.c). */
    int64_t answer_max_ms;
    /* PostgreSQL: called on the writer's thread when a transaction whose batches were reported failed (its COMMIT
     * unanswered, its fate still unknown when the lookup gave up: pg_commit_unknown) is found committed later (at
     * the start of a later group, or while the writer is idle): what those batches wrote is in the store after
     * all, and whoever keeps it in memory should read it again. Must not block or submit to the store. NULL: only
     * logged. */
    void (*late_commit)(void *ctx);
    void *late_ctx;
} qod_store_opts;

/* Opens the store and starts its writer thread; migrations run first. The URI picks the implementation: a
 * postgres:// or postgresql:// prefix selects qod_store_postgres, anything else qod_store_sqlite. */
int qod_store_open(const qod_store_opts *opts, qod_store **out);
/* Drains queued batches, stops the thread and closes; NULL is a no-op. */
void qod_store_close(qod_store *st);
/* QOD_OK when the store answers a trivial query within wait_ms; QOD_ERR_BUSY when it has not answered by then
 * (the query goes on, on a thread of its own: a caller never waits longer), QOD_ERR_STORE when it failed. */
int qod_store_ping(qod_store *st, int64_t wait_ms);
/* Batches submitted and not yet taken by the writer; *done (if not NULL): batches the writer has been through. */
size_t qod_store_queued(qod_store *st, uint64_t *done);
/* The schema version after migrations. */
int qod_store_schema_version(qod_store *st);

/* A new empty batch (NULL on allocation failure). Ops apply in order, all or nothing. */
qod_store_batch *qod_store_batch_new(void);
/* Frees a batch that was not submitted; NULL is a no-op. */
void qod_store_batch_free(qod_store_batch *b);
/* Upserts a row. Strings are copied. */
int qod_store_batch_put(qod_store_batch *b, qod_store_table t, const char *key, const char *owner, const char *idx,
                        int64_t state, int64_t num, const char *doc);
/* Inserts a row only if the key is absent; otherwise the whole batch fails with QOD_ERR_EXISTS. */
int qod_store_batch_insert(qod_store_batch *b, qod_store_table t, const char *key, const char *owner, const char *idx,
                           int64_t state, int64_t num, const char *doc);
/* Updates state, num and doc of an existing row (owner and idx unchanged); absent is fine. */
int qod_store_batch_update(qod_store_batch *b, qod_store_table t, const char *key, int64_t state, int64_t num,
                           const char *doc);
/* Deletes a row (absent is fine). */
int qod_store_batch_del(qod_store_batch *b, qod_store_table t, const char *key);
/* Appends an outbox event; an event whose id is already stored is left as it is (retries are idempotent). */
int qod_store_batch_event(qod_store_batch *b, const char *id, const char *session, const char *owner,
                          int64_t created_ms, const char *doc);
/* The same for an event with nowhere to go (its session has no callback URL): stored already delivered, so that
 * the delivery never loads it; listed and purged like the others. */
int qod_store_batch_event_unsent(qod_store_batch *b, const char *id, const char *session, const char *owner,
                                 int64_t created_ms, const char *doc);
/* Updates an event's delivery state. */
int qod_store_batch_event_state(qod_store_batch *b, int64_t seq, int64_t state, int64_t attempts, int64_t next_ms);
/* Deletes the delivered events of a session (purge); pending and dead ones stay. */
int qod_store_batch_event_del_session(qod_store_batch *b, const char *session);
/* Makes the events of a session from seq on pending again, attempts 0, due at next_ms (replay in order). */
int qod_store_batch_event_requeue(qod_store_batch *b, const char *session, int64_t from_seq, int64_t next_ms);
/* Fails the whole batch with QOD_ERR_LIMIT when table t already holds max rows of owner whose state is below
 * state_below (e.g. the active sessions of an app). Put it before the insert it guards. With several nodes on one
 * database the count is taken under a per-owner lock, so the cap is exact across nodes. */
int qod_store_batch_cap(qod_store_batch *b, qod_store_table t, const char *owner, int64_t state_below, int64_t max);
/* Fails the whole batch with QOD_ERR_BUSY unless lease `name` (pg_lease.h) is still held by holder with this
 * fencing epoch and has not run out, and keeps that lease from changing hands until the batch's transaction
 * ends: work that only the lease holder may do is then never written by a node that lost it (paused past its
 * lease, say). Fences go to the front of the batch, and the same fence is added once. No-op for SQLite (one node,
 * no leases). */
int qod_store_batch_fence(qod_store_batch *b, const char *name, const char *holder, int64_t epoch);
/* Tells the other nodes sharing the store, once the batch commits, that a row changed (channel e.g. "apps",
 * payload its key), so they refresh their caches (qod_store_listen). No-op for SQLite (one node). */
int qod_store_batch_notify(qod_store_batch *b, const char *channel, const char *payload);
/* Number of ops in the batch. */
size_t qod_store_batch_len(const qod_store_batch *b);

/* Queues a batch for the next group commit and takes ownership of it. done runs once on the store thread.
 * Fails (and frees the batch, without calling done) only when the store is closing. */
int qod_store_submit(qod_store *st, qod_store_batch *b, qod_store_done_fn done, void *arg);
/* Writes the writer's Prometheus metrics (commits, batches, time in commits, queue) to out. */
void qod_store_metrics(void *st, qod_buf *out);
/* Submits and waits for the commit; returns its rc. Not for HTTP threads. */
int qod_store_commit(qod_store *st, qod_store_batch *b);

/* Reads one row; fn is called at most once. QOD_OK, QOD_ERR_NOTFOUND or QOD_ERR_STORE. */
int qod_store_get(qod_store *st, qod_store_table t, const char *key, void (*fn)(void *arg, const qod_store_row *r),
                  void *arg);
/* Calls fn for every row of the table (owner filter when non-NULL), in key order. fn returns 0 to go on. */
int qod_store_scan(qod_store *st, qod_store_table t, const char *owner, int (*fn)(void *arg, const qod_store_row *r),
                   void *arg);
/* Calls fn for every row of the table whose idx (secondary key) is idx, in key order. fn returns 0 to go on. */
int qod_store_scan_idx(qod_store *st, qod_store_table t, const char *idx, int (*fn)(void *arg, const qod_store_row *r),
                       void *arg);
/* Calls fn for events with the given state (e.g. pending; -1 = any) and seq > after_seq, in seq order, at most
 * `limit` (0 = all). */
int qod_store_scan_events(qod_store *st, int64_t state, int64_t after_seq, size_t limit,
                          int (*fn)(void *arg, const qod_store_event *e), void *arg);

/* Change notifications from the other nodes (PostgreSQL LISTEN), on a thread of the listener's own: fn gets the
 * channel and payload of each; payload NULL means "notifications may have been missed (the connection was
 * lost): refresh everything on that channel". */
typedef struct qod_store_listener qod_store_listener;
typedef void (*qod_store_notify_fn)(void *arg, const char *channel, const char *payload);
/* Starts listening on the NULL-terminated channels (names of [a-z0-9_], at most 32); QOD_ERR_UNSUPPORTED for SQLite
 * (nothing to listen to), QOD_ERR_INVALID for another name. */
int qod_store_listen(const char *uri, const char *const *channels, qod_store_notify_fn fn, void *arg,
                     qod_store_listener **out);
/* Stops the thread and closes; NULL is a no-op. */
void qod_store_listen_stop(qod_store_listener *l);

/* The implementation interface, one per backend (sqlite.c, postgres.c). All calls are made from the
 * store thread except open/close and the read calls, which the implementation must make safe on its own
 * connection(s). */
typedef struct qod_store_op qod_store_op;
typedef struct {
    const char *name;
    int (*open)(const qod_store_opts *opts, void **impl);
    void (*close)(void *impl);
    int (*begin)(void *impl);
    int (*apply)(void *impl, const qod_store_op *op);
    /* Optional: applies n ops in order inside the open transaction, all of them or (on the first failure, whose rc
     * it returns) leaving the transaction to be rolled back; for a server a round trip away (pipelining). */
    int (*apply_many)(void *impl, const qod_store_op *const *ops, size_t n);
    int (*savepoint)(void *impl, int release); /* 0: set, 1: release, -1: roll back to it */
    int (*commit)(void *impl);
    void (*rollback)(void *impl);
    int (*schema_version)(void *impl);
    int (*get)(void *impl, qod_store_table t, const char *key, void (*fn)(void *, const qod_store_row *), void *arg);
    int (*scan)(void *impl, qod_store_table t, const char *owner, int (*fn)(void *, const qod_store_row *), void *arg);
    int (*scan_events)(void *impl, int64_t state, int64_t after_seq, size_t limit,
                       int (*fn)(void *, const qod_store_event *), void *arg);
    int (*scan_idx)(void *impl, qod_store_table t, const char *idx, int (*fn)(void *, const qod_store_row *),
                    void *arg);
    /* Optional: called on the store thread when it has had nothing to write for STORE_IDLE_MS (the PostgreSQL
     * store asks again about transactions of unknown fate, without waiting for the next write). */
    void (*idle)(void *impl);
} qod_store_impl;

/* Op kinds inside a batch, for implementations. */
typedef enum {
    QOD_OP_PUT,
    QOD_OP_INSERT,
    QOD_OP_DEL,
    QOD_OP_EVENT, /* state: 0 pending, 1 delivered (nothing to send) */
    QOD_OP_EVENT_STATE,
    QOD_OP_EVENT_DEL_SESSION,
    QOD_OP_EVENT_REQUEUE,
    QOD_OP_UPDATE,
    QOD_OP_CAP,    /* owner, state = state_below, num = max */
    QOD_OP_NOTIFY, /* key = channel, doc = payload */
    QOD_OP_FENCE   /* key = lease name, owner = holder, num = epoch (the last kind) */
} qod_store_op_kind;

struct qod_store_op {
    qod_store_op_kind kind;
    qod_store_table table;
    char *key, *owner, *idx, *doc;
    int64_t state, num, seq, attempts, next_ms;
    qod_store_op *next;
};

/* True when op is the fence of lease `name` held by holder at this epoch (a fence is needed once per batch, and
 * once per transaction). */
bool qod_store_op_is_fence(const qod_store_op *op, const char *name, const char *holder, int64_t epoch);

/* The SQLite implementation. */
extern const qod_store_impl qod_store_sqlite;
/* The PostgreSQL implementation (libpq), for a database that several nodes share. */
extern const qod_store_impl qod_store_postgres;

#endif
