/* The SQLite implementation of store.h: one file in the data directory, WAL mode, a writer connection used
 * only by the store thread and a reader connection (behind a mutex) for loads and admin reads.
 * This module owns every sqlite3 handle and prepared statement of the project. */
#include "store/store.h"

#include "util/err.h"
#include "util/log.h"

#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const table_names[QOD_TBL_COUNT] = {"apps", "devices", "sessions", "idempotency", "meta"};

/* Forward migrations: entry i moves the schema from version i to i+1. Append only. */
static const char *const migrations[] = {
    "CREATE TABLE apps(key TEXT PRIMARY KEY, owner TEXT NOT NULL, idx TEXT NOT NULL, state INTEGER NOT NULL,"
    " num INTEGER NOT NULL, doc TEXT NOT NULL) WITHOUT ROWID;"
    "CREATE TABLE devices(key TEXT PRIMARY KEY, owner TEXT NOT NULL, idx TEXT NOT NULL, state INTEGER NOT NULL,"
    " num INTEGER NOT NULL, doc TEXT NOT NULL) WITHOUT ROWID;"
    "CREATE TABLE sessions(key TEXT PRIMARY KEY, owner TEXT NOT NULL, idx TEXT NOT NULL, state INTEGER NOT NULL,"
    " num INTEGER NOT NULL, doc TEXT NOT NULL) WITHOUT ROWID;"
    "CREATE INDEX sessions_owner ON sessions(owner);"
    "CREATE INDEX sessions_idx ON sessions(idx);"
    "CREATE TABLE idempotency(key TEXT PRIMARY KEY, owner TEXT NOT NULL, idx TEXT NOT NULL, state INTEGER NOT NULL,"
    " num INTEGER NOT NULL, doc TEXT NOT NULL) WITHOUT ROWID;"
    "CREATE TABLE meta(key TEXT PRIMARY KEY, owner TEXT NOT NULL, idx TEXT NOT NULL, state INTEGER NOT NULL,"
    " num INTEGER NOT NULL, doc TEXT NOT NULL) WITHOUT ROWID;"
    "CREATE TABLE events(seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, session TEXT NOT NULL,"
    " owner TEXT NOT NULL, created_ms INTEGER NOT NULL, state INTEGER NOT NULL DEFAULT 0,"
    " attempts INTEGER NOT NULL DEFAULT 0, next_ms INTEGER NOT NULL DEFAULT 0, doc TEXT NOT NULL);"
    "CREATE INDEX events_state ON events(state, seq);"
    "CREATE INDEX events_session ON events(session);",
};
#define N_MIGRATIONS ((int)(sizeof migrations / sizeof migrations[0]))

enum { S_PUT, S_INSERT, S_DEL, S_UPDATE, S_CAP, S_COUNT_ROW };

typedef struct {
    sqlite3 *w, *r;
    pthread_mutex_t r_mu;
    sqlite3_stmt *row[QOD_TBL_COUNT][S_COUNT_ROW];
    sqlite3_stmt *ev_add, *ev_state, *ev_del_session, *ev_requeue;
    sqlite3_stmt *sp_set, *sp_release, *sp_rollback; /* one savepoint per batch: prepared, not parsed each time */
    sqlite3_stmt *ev_scan[2]; /* reader: events by state, and all events (prepared on first use, under r_mu) */
    int version;
} sq;

static int map_rc(int rc)
{
    switch (rc & 0xff) {
    case SQLITE_OK:
    case SQLITE_DONE:
    case SQLITE_ROW:
        return QOD_OK;
    case SQLITE_FULL:
        return QOD_ERR_NOSPACE;
    case SQLITE_CONSTRAINT:
        return QOD_ERR_EXISTS;
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
        return QOD_ERR_BUSY;
    default:
        return QOD_ERR_STORE;
    }
}

static int exec(sqlite3 *db, const char *sql)
{
    char *msg = NULL;
    int rc = sqlite3_exec(db, sql, NULL, NULL, &msg);
    if (rc != SQLITE_OK) {
        QOD_ERROR("store", "sql_failed", "err=\"%s\"", msg ? msg : sqlite3_errstr(rc));
        sqlite3_free(msg);
    }
    return map_rc(rc);
}

static int open_conn(const char *path, bool sync_full, sqlite3 **out)
{
    int rc = sqlite3_open_v2(path, out, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK) {
        QOD_ERROR("store", "open_failed", "path=%s err=\"%s\"", path, sqlite3_errstr(rc));
        return QOD_ERR_STORE;
    }
    sqlite3_busy_timeout(*out, 5000);
    /* A 64 MiB page cache keeps the indexes' hot pages in memory instead of spilling mid-transaction. */
    rc = exec(*out, "PRAGMA journal_mode=WAL; PRAGMA foreign_keys=ON; PRAGMA cache_size=-65536; "
                    "PRAGMA temp_store=MEMORY;");
    if (rc == QOD_OK)
        rc = exec(*out, sync_full ? "PRAGMA synchronous=FULL;" : "PRAGMA synchronous=NORMAL;");
    return rc;
}

static int read_version(sqlite3 *db, int *version)
{
    sqlite3_stmt *s = NULL;
    int rc = map_rc(sqlite3_prepare_v2(db, "SELECT max(version) FROM schema_version", -1, &s, NULL));
    if (rc == QOD_OK && sqlite3_step(s) == SQLITE_ROW)
        *version = sqlite3_column_int(s, 0);
    sqlite3_finalize(s);
    return rc;
}

static int migrate(sq *q)
{
    int rc = exec(q->w, "CREATE TABLE IF NOT EXISTS schema_version(version INTEGER NOT NULL,"
                        " applied_ms INTEGER NOT NULL DEFAULT (CAST(strftime('%s','now') AS INTEGER) * 1000))");
    int v = 0;
    if (rc == QOD_OK)
        rc = read_version(q->w, &v);
    if (rc == QOD_OK && v > N_MIGRATIONS) {
        QOD_ERROR("store", "schema_too_new", "version=%d known=%d", v, N_MIGRATIONS);
        rc = QOD_ERR_STORE;
    }
    for (; rc == QOD_OK && v < N_MIGRATIONS; v++) {
        char ins[96];
        snprintf(ins, sizeof ins, "INSERT INTO schema_version(version) VALUES(%d);", v + 1);
        rc = exec(q->w, "BEGIN IMMEDIATE");
        if (rc == QOD_OK)
            rc = exec(q->w, migrations[v]);
        if (rc == QOD_OK)
            rc = exec(q->w, ins);
        if (rc == QOD_OK)
            rc = exec(q->w, "COMMIT");
        else
            exec(q->w, "ROLLBACK");
        if (rc == QOD_OK)
            QOD_INFO("store", "migrated", "version=%d", v + 1);
    }
    q->version = v;
    return rc;
}

static int prepare_all(sq *q)
{
    char sql[512];
    int rc = SQLITE_OK;
    for (int t = 0; t < QOD_TBL_COUNT && rc == SQLITE_OK; t++) {
        const char *n = table_names[t];
        snprintf(sql, sizeof sql,
                 "INSERT INTO %s(key,owner,idx,state,num,doc) VALUES(?1,?2,?3,?4,?5,?6) ON CONFLICT(key) DO UPDATE"
                 " SET owner=excluded.owner, idx=excluded.idx, state=excluded.state, num=excluded.num,"
                 " doc=excluded.doc",
                 n);
        rc = sqlite3_prepare_v3(q->w, sql, -1, SQLITE_PREPARE_PERSISTENT, &q->row[t][S_PUT], NULL);
        snprintf(sql, sizeof sql, "INSERT INTO %s(key,owner,idx,state,num,doc) VALUES(?1,?2,?3,?4,?5,?6)", n);
        if (rc == SQLITE_OK)
            rc = sqlite3_prepare_v3(q->w, sql, -1, SQLITE_PREPARE_PERSISTENT, &q->row[t][S_INSERT], NULL);
        snprintf(sql, sizeof sql, "DELETE FROM %s WHERE key=?1", n);
        if (rc == SQLITE_OK)
            rc = sqlite3_prepare_v3(q->w, sql, -1, SQLITE_PREPARE_PERSISTENT, &q->row[t][S_DEL], NULL);
        /* Status changes touch neither owner nor idx: leaving them out spares both indexes a page write. */
        snprintf(sql, sizeof sql, "UPDATE %s SET state=?4, num=?5, doc=?6 WHERE key=?1", n);
        if (rc == SQLITE_OK)
            rc = sqlite3_prepare_v3(q->w, sql, -1, SQLITE_PREPARE_PERSISTENT, &q->row[t][S_UPDATE], NULL);
        snprintf(sql, sizeof sql, "SELECT count(*) FROM %s WHERE owner=?1 AND state<?2", n);
        if (rc == SQLITE_OK)
            rc = sqlite3_prepare_v3(q->w, sql, -1, SQLITE_PREPARE_PERSISTENT, &q->row[t][S_CAP], NULL);
    }
    if (rc == SQLITE_OK)
        rc = sqlite3_prepare_v3(q->w,
                                "INSERT INTO events(id,session,owner,created_ms,next_ms,doc,state)"
                                " VALUES(?1,?2,?3,?4,?4,?5,?6) ON CONFLICT(id) DO NOTHING",
                                -1, SQLITE_PREPARE_PERSISTENT, &q->ev_add, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_prepare_v3(q->w, "UPDATE events SET state=?2, attempts=?3, next_ms=?4 WHERE seq=?1", -1,
                                SQLITE_PREPARE_PERSISTENT, &q->ev_state, NULL);
    if (rc == SQLITE_OK)
        /* INDEXED BY: for `session=? AND state=1` the planner takes events_state, and a purge then walks every
         * delivered event of every session still kept (the writer stalled for tens of seconds under load). */
        rc = sqlite3_prepare_v3(q->w, "DELETE FROM events INDEXED BY events_session WHERE session=?1 AND state=1", -1,
                                SQLITE_PREPARE_PERSISTENT, &q->ev_del_session, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_prepare_v3(q->w, "UPDATE events SET state=0, attempts=0, next_ms=?3 WHERE session=?1 AND seq>=?2",
                                -1, SQLITE_PREPARE_PERSISTENT, &q->ev_requeue, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_prepare_v3(q->w, "SAVEPOINT b", -1, SQLITE_PREPARE_PERSISTENT, &q->sp_set, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_prepare_v3(q->w, "RELEASE b", -1, SQLITE_PREPARE_PERSISTENT, &q->sp_release, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_prepare_v3(q->w, "ROLLBACK TO b", -1, SQLITE_PREPARE_PERSISTENT, &q->sp_rollback, NULL);
    if (rc != SQLITE_OK)
        QOD_ERROR("store", "prepare_failed", "err=\"%s\"", sqlite3_errmsg(q->w));
    return map_rc(rc);
}

static void sq_close(void *impl)
{
    sq *q = impl;
    if (!q)
        return;
    for (int t = 0; t < QOD_TBL_COUNT; t++)
        for (int k = 0; k < S_COUNT_ROW; k++)
            sqlite3_finalize(q->row[t][k]);
    sqlite3_finalize(q->ev_add);
    sqlite3_finalize(q->ev_state);
    sqlite3_finalize(q->ev_del_session);
    sqlite3_finalize(q->ev_requeue);
    sqlite3_finalize(q->sp_set);
    sqlite3_finalize(q->sp_release);
    sqlite3_finalize(q->sp_rollback);
    sqlite3_finalize(q->ev_scan[0]);
    sqlite3_finalize(q->ev_scan[1]);
    sqlite3_close(q->r);
    sqlite3_close(q->w);
    pthread_mutex_destroy(&q->r_mu);
    free(q);
}

static int sq_open(const qod_store_opts *opts, void **impl)
{
    *impl = NULL;
    sq *q = calloc(1, sizeof *q);
    if (!q)
        return QOD_ERR_NOMEM;
    pthread_mutex_init(&q->r_mu, NULL);
    char path[4096];
    size_t ul = strlen(opts->uri);
    if (ul > 3 && strcmp(opts->uri + ul - 3, ".db") == 0)
        snprintf(path, sizeof path, "%s", opts->uri);
    else
        snprintf(path, sizeof path, "%s/qod.db", opts->uri);
    int rc = open_conn(path, opts->sync_full, &q->w);
    if (rc == QOD_OK)
        rc = migrate(q);
    if (rc == QOD_OK)
        rc = open_conn(path, opts->sync_full, &q->r);
    if (rc == QOD_OK)
        rc = prepare_all(q);
    if (rc != QOD_OK) {
        sq_close(q);
        return rc;
    }
    *impl = q;
    return QOD_OK;
}

static int step_done(sqlite3_stmt *s)
{
    int rc = sqlite3_step(s);
    sqlite3_reset(s);
    sqlite3_clear_bindings(s);
    return map_rc(rc);
}

static void bind_text(sqlite3_stmt *s, int i, const char *v)
{
    sqlite3_bind_text(s, i, v, -1, SQLITE_STATIC);
}

static int sq_apply(void *impl, const qod_store_op *op)
{
    sq *q = impl;
    sqlite3_stmt *s;
    switch (op->kind) {
    case QOD_OP_PUT:
    case QOD_OP_INSERT:
    case QOD_OP_UPDATE:
        if (op->table >= QOD_TBL_COUNT)
            return QOD_ERR_INVALID;
        s = q->row[op->table][op->kind == QOD_OP_PUT ? S_PUT : op->kind == QOD_OP_INSERT ? S_INSERT : S_UPDATE];
        bind_text(s, 1, op->key);
        if (op->kind != QOD_OP_UPDATE) {
            bind_text(s, 2, op->owner);
            bind_text(s, 3, op->idx);
        }
        sqlite3_bind_int64(s, 4, op->state);
        sqlite3_bind_int64(s, 5, op->num);
        bind_text(s, 6, op->doc);
        return step_done(s);
    case QOD_OP_NOTIFY:
        return QOD_OK; /* one node: nobody to tell */
    case QOD_OP_FENCE:
        return QOD_OK; /* one node: no leases to lose */
    case QOD_OP_CAP: {
        if (op->table >= QOD_TBL_COUNT)
            return QOD_ERR_INVALID;
        s = q->row[op->table][S_CAP];
        bind_text(s, 1, op->owner);
        sqlite3_bind_int64(s, 2, op->state);
        int step = sqlite3_step(s);
        int64_t n = step == SQLITE_ROW ? sqlite3_column_int64(s, 0) : 0;
        sqlite3_reset(s);
        sqlite3_clear_bindings(s);
        if (step != SQLITE_ROW)
            return map_rc(step);
        return n >= op->num ? QOD_ERR_LIMIT : QOD_OK;
    }
    case QOD_OP_DEL:
        if (op->table >= QOD_TBL_COUNT)
            return QOD_ERR_INVALID;
        s = q->row[op->table][S_DEL];
        bind_text(s, 1, op->key);
        return step_done(s);
    case QOD_OP_EVENT:
        s = q->ev_add;
        bind_text(s, 1, op->key);
        bind_text(s, 2, op->idx);
        bind_text(s, 3, op->owner);
        sqlite3_bind_int64(s, 4, op->num);
        bind_text(s, 5, op->doc);
        sqlite3_bind_int64(s, 6, op->state);
        return step_done(s);
    case QOD_OP_EVENT_STATE:
        s = q->ev_state;
        sqlite3_bind_int64(s, 1, op->seq);
        sqlite3_bind_int64(s, 2, op->state);
        sqlite3_bind_int64(s, 3, op->attempts);
        sqlite3_bind_int64(s, 4, op->next_ms);
        return step_done(s);
    case QOD_OP_EVENT_DEL_SESSION:
        s = q->ev_del_session;
        bind_text(s, 1, op->idx);
        return step_done(s);
    case QOD_OP_EVENT_REQUEUE:
        s = q->ev_requeue;
        bind_text(s, 1, op->idx);
        sqlite3_bind_int64(s, 2, op->seq);
        sqlite3_bind_int64(s, 3, op->next_ms);
        return step_done(s);
    }
    return QOD_ERR_INVALID;
}

static int sq_begin(void *impl)
{
    return exec(((sq *)impl)->w, "BEGIN IMMEDIATE");
}

static int sq_commit(void *impl)
{
    sq *q = impl;
    int rc = sqlite3_exec(q->w, "COMMIT", NULL, NULL, NULL);
    if (rc != SQLITE_OK)
        QOD_WARN("store", "commit_failed", "err=\"%s\"", sqlite3_errmsg(q->w));
    return map_rc(rc);
}

static void sq_rollback(void *impl)
{
    sq *q = impl;
    if (!sqlite3_get_autocommit(q->w))
        sqlite3_exec(q->w, "ROLLBACK", NULL, NULL, NULL);
}

static int sq_savepoint(void *impl, int release)
{
    sq *q = impl;
    if (release > 0)
        return step_done(q->sp_release);
    if (release < 0) {
        int rc = step_done(q->sp_rollback);
        return rc == QOD_OK ? step_done(q->sp_release) : rc;
    }
    return step_done(q->sp_set);
}

static int sq_schema_version(void *impl)
{
    sq *q = impl;
    int v = 0;
    pthread_mutex_lock(&q->r_mu);
    int rc = read_version(q->r, &v);
    pthread_mutex_unlock(&q->r_mu);
    return rc == QOD_OK ? v : rc;
}

static void fill_row(sqlite3_stmt *s, qod_store_row *r)
{
    r->key = (const char *)sqlite3_column_text(s, 0);
    r->owner = (const char *)sqlite3_column_text(s, 1);
    r->idx = (const char *)sqlite3_column_text(s, 2);
    r->state = sqlite3_column_int64(s, 3);
    r->num = sqlite3_column_int64(s, 4);
    r->doc = (const char *)sqlite3_column_text(s, 5);
}

static int sq_get(void *impl, qod_store_table t, const char *key, void (*fn)(void *, const qod_store_row *), void *arg)
{
    sq *q = impl;
    if (t >= QOD_TBL_COUNT)
        return QOD_ERR_INVALID;
    char sql[128];
    snprintf(sql, sizeof sql, "SELECT key,owner,idx,state,num,doc FROM %s WHERE key=?1", table_names[t]);
    pthread_mutex_lock(&q->r_mu);
    sqlite3_stmt *s = NULL;
    int rc = map_rc(sqlite3_prepare_v2(q->r, sql, -1, &s, NULL));
    if (rc == QOD_OK) {
        bind_text(s, 1, key);
        int src = sqlite3_step(s);
        if (src == SQLITE_ROW) {
            qod_store_row r;
            fill_row(s, &r);
            fn(arg, &r);
        } else {
            rc = src == SQLITE_DONE ? QOD_ERR_NOTFOUND : map_rc(src);
        }
    }
    sqlite3_finalize(s);
    pthread_mutex_unlock(&q->r_mu);
    return rc;
}

/* Scans the table, all of it or the rows whose column col equals val. */
static int scan_by(sq *q, qod_store_table t, const char *col, const char *val, int (*fn)(void *, const qod_store_row *),
                   void *arg)
{
    if (t >= QOD_TBL_COUNT)
        return QOD_ERR_INVALID;
    char sql[160];
    snprintf(sql, sizeof sql, "SELECT key,owner,idx,state,num,doc FROM %s%s%s%s ORDER BY key", table_names[t],
             val ? " WHERE " : "", val ? col : "", val ? "=?1" : "");
    pthread_mutex_lock(&q->r_mu);
    sqlite3_stmt *s = NULL;
    int rc = map_rc(sqlite3_prepare_v2(q->r, sql, -1, &s, NULL));
    if (rc == QOD_OK && val)
        bind_text(s, 1, val);
    int src = SQLITE_DONE;
    while (rc == QOD_OK && (src = sqlite3_step(s)) == SQLITE_ROW) {
        qod_store_row r;
        fill_row(s, &r);
        if (fn(arg, &r) != 0)
            break;
    }
    if (rc == QOD_OK && src != SQLITE_ROW && src != SQLITE_DONE)
        rc = map_rc(src);
    sqlite3_finalize(s);
    pthread_mutex_unlock(&q->r_mu);
    return rc;
}

static int sq_scan(void *impl, qod_store_table t, const char *owner, int (*fn)(void *, const qod_store_row *),
                   void *arg)
{
    return scan_by(impl, t, "owner", owner, fn, arg);
}

static int sq_scan_idx(void *impl, qod_store_table t, const char *idx, int (*fn)(void *, const qod_store_row *),
                       void *arg)
{
    return idx ? scan_by(impl, t, "idx", idx, fn, arg) : QOD_ERR_INVALID;
}

static int sq_scan_events(void *impl, int64_t state, int64_t after_seq, size_t limit,
                          int (*fn)(void *, const qod_store_event *), void *arg)
{
    sq *q = impl;
    pthread_mutex_lock(&q->r_mu);
    /* Two statements rather than `(?1 < 0 OR state=?1)`, which SQLite can only answer by walking every event
     * after ?3 in seq order: the delivery's look for new pending events would then read all the delivered ones.
     * Kept prepared: the delivery scans after every commit that adds events. */
    sqlite3_stmt **slot = &q->ev_scan[state < 0];
    int rc = *slot ? QOD_OK
                   : map_rc(sqlite3_prepare_v3(q->r,
                                               state < 0 ? "SELECT seq,id,session,owner,created_ms,state,attempts,"
                                                           "next_ms,doc FROM events WHERE seq>?3 ORDER BY seq LIMIT ?2"
                                                         : "SELECT seq,id,session,owner,created_ms,state,attempts,"
                                                           "next_ms,doc FROM events WHERE state=?1 AND seq>?3"
                                                           " ORDER BY seq LIMIT ?2",
                                               -1, SQLITE_PREPARE_PERSISTENT, slot, NULL));
    sqlite3_stmt *s = *slot;
    if (rc == QOD_OK) {
        sqlite3_bind_int64(s, 1, state);
        sqlite3_bind_int64(s, 2, limit ? (sqlite3_int64)limit : -1);
        sqlite3_bind_int64(s, 3, after_seq);
    }
    int src = SQLITE_DONE;
    while (rc == QOD_OK && (src = sqlite3_step(s)) == SQLITE_ROW) {
        qod_store_event e = {
            .seq = sqlite3_column_int64(s, 0),
            .id = (const char *)sqlite3_column_text(s, 1),
            .session = (const char *)sqlite3_column_text(s, 2),
            .owner = (const char *)sqlite3_column_text(s, 3),
            .created_ms = sqlite3_column_int64(s, 4),
            .state = sqlite3_column_int64(s, 5),
            .attempts = sqlite3_column_int64(s, 6),
            .next_ms = sqlite3_column_int64(s, 7),
            .doc = (const char *)sqlite3_column_text(s, 8),
        };
        if (fn(arg, &e) != 0)
            break;
    }
    if (rc == QOD_OK && src != SQLITE_ROW && src != SQLITE_DONE)
        rc = map_rc(src);
    if (s) {
        sqlite3_reset(s); /* ends the read transaction */
        sqlite3_clear_bindings(s);
    }
    pthread_mutex_unlock(&q->r_mu);
    return rc;
}

const qod_store_impl qod_store_sqlite = {
    .name = "sqlite",
    .open = sq_open,
    .close = sq_close,
    .begin = sq_begin,
    .apply = sq_apply,
    .savepoint = sq_savepoint,
    .commit = sq_commit,
    .rollback = sq_rollback,
    .schema_version = sq_schema_version,
    .get = sq_get,
    .scan = sq_scan,
    .scan_events = sq_scan_events,
    .scan_idx = sq_scan_idx,
};
