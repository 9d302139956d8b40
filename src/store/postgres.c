/* The PostgreSQL implementation of store.h, chosen by a postgres:// or postgresql:// URI (libpq syntax: host, port,
 * credentials and options such as sslmode all come from the URI), and the leases of pg_lease.h.
 *
 * Like sqlite.c: a writer connection used only by the store thread, and a reader connection behind a mutex for the
 * read calls, which come from other threads. Every statement that carries values is prepared once per connection
 * and run with text parameters. A connection found broken is reopened, and its statements prepared again, at the
 * start of the next transaction or read: after a server restart, only what ran while it was down has failed.
 *
 * Several qodd processes may share one database: migrations run under a session advisory lock, and a transaction
 * that appends events holds a transaction advisory lock from its first event to its commit, so that seq order is
 * commit order across processes too (a reader that pages with after_seq never skips an event committed late).
 * This module owns every PGconn of the project. */
#include "store/pg_lease.h"
#include "store/store.h"

#include "util/err.h"
#include "util/log.h"
#include "util/time.h"

#include <errno.h>
#include <inttypes.h>
#include <libpq-fe.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

/* Keys, owners, idx values, event ids and sessions are all indexed, and a btree entry must stay under about
 * 2700 bytes. 2048 still holds the longest notification URL (urlguard.h), which delivery uses as a meta key. */
#define PG_KEY_MAX 2048
#define PG_DOC_MAX (1024 * 1024)
/* Advisory lock keys, fixed so that every process agrees on them. */
#define PG_LOCK_MIGRATE "7100715001"
#define PG_LOCK_EVENTS "7100715002"
/* Statements sent before each sync point of a pipelined group (pg_apply_many). */
#define PG_PIPE_SEGMENT 512
/* Transactions of unknown fate remembered to be asked again (late_unknown); past it the oldest is forgotten. */
#define PG_UNKNOWN_MAX 64
/* The least time the writer spends learning the fate of a COMMIT that went unanswered (commit_outcome). */
#define OUTCOME_MIN_MS 5000
/* Room for an int64 in decimal. */
#define NUM_LEN 24
/* The longest lease, so that a unit mistake (seconds for ms) cannot lock a name for years. */
#define LEASE_TTL_MAX_MS (24LL * 3600 * 1000)

static const char *const table_names[QOD_TBL_COUNT] = {"apps", "devices", "sessions", "idempotency", "meta"};

/* The columns of every keyed table. COLLATE "C" orders keys bytewise, as SQLite does, whatever the database's
 * locale. */
#define ROW_TABLE(name)                                                                                                \
    "CREATE TABLE " name "(key text COLLATE \"C\" PRIMARY KEY, owner text COLLATE \"C\" NOT NULL,"                     \
    " idx text COLLATE \"C\" NOT NULL, state bigint NOT NULL, num bigint NOT NULL, doc text NOT NULL);"

/* Forward migrations: entry i moves the schema from version i to i+1. Append only. */
/* One statement per line: the formatter would pack the concatenation. */
/* clang-format off */
static const char *const migrations[] = {
    ROW_TABLE("apps") ROW_TABLE("devices") ROW_TABLE("sessions")
    "CREATE INDEX sessions_owner ON sessions(owner);"
    "CREATE INDEX sessions_idx ON sessions(idx);"
    ROW_TABLE("idempotency") ROW_TABLE("meta")
    "CREATE TABLE events(seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, id text COLLATE \"C\" NOT NULL UNIQUE,"
    " session text COLLATE \"C\" NOT NULL, owner text COLLATE \"C\" NOT NULL, created_ms bigint NOT NULL,"
    " state bigint NOT NULL DEFAULT 0, attempts bigint NOT NULL DEFAULT 0, next_ms bigint NOT NULL DEFAULT 0,"
    " doc text NOT NULL);"
    "CREATE INDEX events_state ON events(state, seq);"
    "CREATE INDEX events_session ON events(session);"
    "CREATE TABLE leases(name text COLLATE \"C\" PRIMARY KEY, holder text COLLATE \"C\" NOT NULL,"
    " epoch bigint NOT NULL, expires_at timestamptz NOT NULL);",
    /* 2: one active session or assignment per device across all nodes (state below 20: requested, available). */
    "CREATE UNIQUE INDEX sessions_active_device ON sessions(idx) WHERE state < 20 AND idx <> '';"
    "CREATE INDEX sessions_active_owner ON sessions(owner) WHERE state < 20;",
};
/* clang-format on */
#define N_MIGRATIONS ((int)(sizeof migrations / sizeof migrations[0]))

typedef struct {
    const char *name, *sql;
} pg_stmt;

/* Per-table statements; `%s` is the table name, and the statement's name is the kind followed by the table number. */
static const pg_stmt writer_row_stmts[] = {
    {"put", "INSERT INTO %s(key,owner,idx,state,num,doc) VALUES($1,$2,$3,$4,$5,$6) ON CONFLICT(key) DO UPDATE"
            " SET owner=excluded.owner, idx=excluded.idx, state=excluded.state, num=excluded.num, doc=excluded.doc"},
    {"ins", "INSERT INTO %s(key,owner,idx,state,num,doc) VALUES($1,$2,$3,$4,$5,$6)"},
    {"del", "DELETE FROM %s WHERE key=$1"},
    /* Status changes touch neither owner nor idx, as in sqlite.c. */
    {"upd", "UPDATE %s SET state=$2, num=$3, doc=$4 WHERE key=$1"},
    /* The cap's count; taken under the events' transaction lock (see add_event), so it is exact with several nodes
     * and takes no second lock that could deadlock with it. */
    {"cap", "SELECT count(*) FROM %s WHERE owner=$1 AND state<$2"},
};
static const pg_stmt writer_stmts[] = {
    {"ev_lock", "SELECT pg_advisory_xact_lock(" PG_LOCK_EVENTS ")"},
    {"ev_add", "INSERT INTO events(id,session,owner,created_ms,next_ms,doc,state) VALUES($1,$2,$3,$4,$4,$5,$6)"
               " ON CONFLICT(id) DO NOTHING"},
    {"ev_state", "UPDATE events SET state=$2, attempts=$3, next_ms=$4 WHERE seq=$1"},
    /* `state+0`: the purge must find the session's events through events_session. Without statistics (a young
     * table) the planner may take events_state instead and walk every delivered event of every session. */
    {"ev_del", "DELETE FROM events WHERE session=$1 AND state+0=1"},
    {"ev_requeue", "UPDATE events SET state=0, attempts=0, next_ms=$3 WHERE session=$1 AND seq>=$2"},
    /* A fence (store.h): the lease row is share-locked, so no node can take it over before this transaction ends. */
    {"fence", "SELECT 1 FROM leases WHERE name=$1 AND holder=$2 AND epoch=$3 AND expires_at > now() FOR SHARE"},
    /* Delivered to the listeners at commit, and not at all if the transaction rolls back. */
    {"notify", "SELECT pg_notify('qod_' || $1, $2)"},
    /* 'committed', 'aborted' or 'in progress': the fate of a transaction whose COMMIT went unanswered. */
    {"xact_status", "SELECT pg_xact_status($1::xid8)"},
};
static const pg_stmt reader_row_stmts[] = {
    {"get", "SELECT key,owner,idx,state,num,doc FROM %s WHERE key=$1"},
    {"scan", "SELECT key,owner,idx,state,num,doc FROM %s ORDER BY key"},
    {"scano", "SELECT key,owner,idx,state,num,doc FROM %s WHERE owner=$1 ORDER BY key"},
    {"scani", "SELECT key,owner,idx,state,num,doc FROM %s WHERE idx=$1 ORDER BY key"},
};
/* A NULL limit is no limit. Two event scans rather than `($1 < 0 OR state=$1)`, so both can use their index. */
static const pg_stmt reader_stmts[] = {
    {"version", "SELECT max(version) FROM schema_version"},
    {"ev_scan", "SELECT seq,id,session,owner,created_ms,state,attempts,next_ms,doc FROM events"
                " WHERE state=$1 AND seq>$2 ORDER BY seq LIMIT $3"},
    {"ev_scan_any", "SELECT seq,id,session,owner,created_ms,state,attempts,next_ms,doc FROM events"
                    " WHERE seq>$1 ORDER BY seq LIMIT $2"},
};
/* now() is the statement's start in autocommit; a lease changes hands only when the old one has run out. */
static const pg_stmt lease_stmts[] = {
    {"acquire", "INSERT INTO leases AS l (name,holder,epoch,expires_at) VALUES($1,$2,1,now() + $3 * interval '1 ms')"
                " ON CONFLICT(name) DO UPDATE SET"
                " epoch = CASE WHEN l.holder = excluded.holder AND l.expires_at > now() THEN l.epoch"
                " ELSE l.epoch + 1 END, holder = excluded.holder, expires_at = excluded.expires_at"
                " WHERE l.holder = excluded.holder OR l.expires_at <= now() RETURNING epoch"},
    {"release", "UPDATE leases SET expires_at = now() WHERE name=$1 AND holder=$2 AND expires_at > now()"},
    {"holder", "SELECT holder, epoch, (extract(epoch FROM expires_at - now()) * 1000)::bigint FROM leases"
               " WHERE name=$1 AND expires_at > now()"},
    {"list", "SELECT name, holder FROM leases WHERE left(name, length($1)) = $1 AND expires_at > now() ORDER BY name"},
};

typedef enum { PG_WRITER, PG_READER, PG_LEASE } pg_role;
static const char *const role_names[] = {"qodd-writer", "qodd-reader", "qodd-lease"};

/* One connection and what it needs to be usable: its session settings and prepared statements. */
typedef struct {
    PGconn *c;
    pg_role role;
    bool sync_full;
    int64_t idle_txn_ms; /* idle_in_transaction_session_timeout, 0 for the server's own */
    int64_t answer_ms;   /* the longest wait for the server's answer to a call, 0 for as long as it takes */
    bool ready;          /* settings applied and statements prepared on the current session */
} pg_conn;

typedef struct {
    pg_conn w, r;
    pthread_mutex_t r_mu;
    bool events_locked; /* the open transaction holds the events lock */
    /* The open transaction's id (pg_current_xact_id), to learn its fate when its COMMIT goes unanswered. */
    char xid[NUM_LEN];
    /* Transactions whose fate was still unknown when their batches were reported failed, oldest first: asked
     * again before each later group and when the writer is idle (late_unknown). */
    char unknown[PG_UNKNOWN_MAX][NUM_LEN];
    int nunknown;
    void (*late_commit)(void *ctx);
    void *late_ctx;
} pg;

struct qod_pg_lease {
    pg_conn c;
    pthread_mutex_t mu;
};

static const char *i64(char *buf, int64_t v)
{
    snprintf(buf, NUM_LEN, "%" PRId64, v);
    return buf;
}

static int64_t col_i64(const PGresult *r, int row, int col)
{
    return strtoll(PQgetvalue(r, row, col), NULL, 10);
}

/* The first line of a libpq message, for one-line logs. */
static int line_len(const char *msg)
{
    return (int)strcspn(msg, "\n");
}

static int map_sqlstate(const char *code)
{
    if (!code)
        return QOD_ERR_STORE;       /* no answer from the server: the connection is gone */
    if (strcmp(code, "23505") == 0) /* unique_violation */
        return QOD_ERR_EXISTS;
    if (strcmp(code, "53100") == 0) /* disk_full */
        return QOD_ERR_NOSPACE;
    /* serialization_failure, deadlock_detected, lock_not_available: a retry may succeed, as SQLITE_BUSY. */
    if (strcmp(code, "40001") == 0 || strcmp(code, "40P01") == 0 || strcmp(code, "55P03") == 0)
        return QOD_ERR_BUSY;
    return QOD_ERR_STORE;
}

static bool failed(const PGresult *r)
{
    ExecStatusType s = PQresultStatus(r);
    return s != PGRES_COMMAND_OK && s != PGRES_TUPLES_OK && s != PGRES_SINGLE_TUPLE;
}

/* QOD_OK for a successful result; otherwise logs and maps the failure (a NULL result is a lost connection or
 * no memory). `what` names the statement in the log. */
static int result_rc(const pg_conn *pc, const PGresult *r, const char *what)
{
    if (r && !failed(r))
        return QOD_OK;
    const char *code = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
    const char *msg = r ? PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    if (!msg)
        msg = PQerrorMessage(pc->c);
    int rc = map_sqlstate(code);
    /* A lease row locked by another node's transaction is an answer for a takeover (qod_pg_lease_take), as a
     * unique key already there is for a conditional insert. */
    if (rc == QOD_ERR_EXISTS || (rc == QOD_ERR_BUSY && pc->role == PG_LEASE))
        QOD_DEBUG("store", "pg_conflict", "conn=%s what=\"%.40s\"", role_names[pc->role], what);
    else
        QOD_WARN("store", "pg_failed", "conn=%s what=\"%.40s\" sqlstate=%s err=\"%.*s\"", role_names[pc->role], what,
                 code ? code : "-", line_len(msg), msg);
    return rc;
}

/* Sends what the call in flight left unsent and waits until its answer can be read without blocking, for at most
 * the connection's answer_ms (0: returns at once, and PQgetResult sends and waits as long as the server takes).
 * Such a connection is non-blocking (conn_setup), so that a call larger than the socket buffers does not wait
 * inside libpq for a server that reads nothing. Past the limit the socket is shut down, so that the call fails as
 * on a broken connection, which conn_ensure() opens again: a server that stopped answering (its process frozen,
 * or cut off by the network without a reset) costs a connection, not the calling thread. */
static void await_answer(const pg_conn *pc, const char *what)
{
    if (pc->answer_ms <= 0)
        return;
    int64_t until = qod_time_mono_ms() + pc->answer_ms;
    for (;;) {
        int unsent = PQflush(pc->c);
        if (unsent < 0 || (unsent == 0 && !PQisBusy(pc->c)))
            return;
        int64_t left = until - qod_time_mono_ms();
        struct pollfd p = {.fd = PQsocket(pc->c), .events = POLLIN | (unsent ? POLLOUT : 0)};
        int n = left > 0 ? poll(&p, 1, (int)left) : 0;
        if (n < 0 && errno == EINTR)
            continue;
        if (n == 0) {
            QOD_WARN("store", "pg_no_answer", "conn=%s what=\"%.40s\" waited_ms=%lld unsent=%d", role_names[pc->role],
                     what, (long long)pc->answer_ms, unsent);
            shutdown(PQsocket(pc->c), SHUT_RDWR);
            return;
        }
        if (n < 0 || ((p.revents & ~POLLOUT) && !PQconsumeInput(pc->c)))
            return;
    }
}

/* The result of the call just sent (sent: whether sending worked), waited for as await_answer() allows: its first
 * failed result, or else its last one (as PQexec); NULL when none came (the connection is gone). `what` names the
 * call in the log. */
static PGresult *call_result(const pg_conn *pc, bool sent, const char *what)
{
    PGresult *keep = NULL;
    for (PGresult *r; sent && (await_answer(pc, what), r = PQgetResult(pc->c)) != NULL;) {
        if (keep && failed(keep)) {
            PQclear(r);
        } else {
            PQclear(keep);
            keep = r;
        }
    }
    return keep;
}

/* call_result() mapped to a status. */
static int call_rc(const pg_conn *pc, bool sent, const char *what)
{
    PGresult *r = call_result(pc, sent, what);
    int rc = result_rc(pc, r, what);
    PQclear(r);
    return rc;
}

/* Runs SQL without parameters (transaction control, DDL, session settings). */
static int exec_sql(const pg_conn *pc, const char *sql)
{
    return call_rc(pc, PQsendQuery(pc->c, sql), sql);
}

static int exec_stmt(const pg_conn *pc, const char *name, int n, const char *const *vals)
{
    return call_rc(pc, PQsendQueryPrepared(pc->c, name, n, vals, NULL, NULL, 0), name);
}

/* Server notices (e.g. "relation already exists, skipping") go to our log instead of libpq's stderr printer. */
static void on_notice(void *arg, const PGresult *r)
{
    (void)arg;
    const char *sev = PQresultErrorField(r, PG_DIAG_SEVERITY_NONLOCALIZED);
    const char *msg = PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY);
    msg = msg ? msg : "";
    if (sev && strcmp(sev, "WARNING") == 0)
        QOD_WARN("store", "pg_warning", "msg=\"%.*s\"", line_len(msg), msg);
    else
        QOD_DEBUG("store", "pg_notice", "msg=\"%.*s\"", line_len(msg), msg);
}

static int prepare(const pg_conn *pc, const char *name, const char *sql)
{
    return call_rc(pc, PQsendPrepare(pc->c, name, sql, 0, NULL), name);
}

static int prepare_list(const pg_conn *pc, const pg_stmt *list, size_t n)
{
    int rc = QOD_OK;
    for (size_t i = 0; i < n && rc == QOD_OK; i++)
        rc = prepare(pc, list[i].name, list[i].sql);
    return rc;
}

static const char *row_stmt_name(char *buf, size_t cap, const char *kind, qod_store_table t)
{
    snprintf(buf, cap, "%s%d", kind, (int)t);
    return buf;
}

/* Prepares each per-table statement once for every table. */
static int prepare_rows(const pg_conn *pc, const pg_stmt *list, size_t n)
{
    int rc = QOD_OK;
    for (size_t i = 0; i < n && rc == QOD_OK; i++)
        for (int t = 0; t < QOD_TBL_COUNT && rc == QOD_OK; t++) {
            char name[32], sql[512];
            snprintf(sql, sizeof sql, list[i].sql, table_names[t]);
            rc = prepare(pc, row_stmt_name(name, sizeof name, list[i].name, (qod_store_table)t), sql);
        }
    return rc;
}

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

/* Applies the session settings and prepares the role's statements. DEALLOCATE first makes it safe to run again
 * after a half-done setup. */
static int conn_setup(pg_conn *pc)
{
    pc->ready = false;
    /* A limit on answers covers sending too (await_answer). */
    if (pc->answer_ms > 0 && PQsetnonblocking(pc->c, 1) != 0)
        return result_rc(pc, NULL, "nonblocking");
    int rc = exec_sql(pc, "DEALLOCATE ALL");
    /* Without sync_full a commit returns before its WAL is flushed, like synchronous=NORMAL in sqlite.c. */
    if (rc == QOD_OK && pc->role == PG_WRITER && !pc->sync_full)
        rc = exec_sql(pc, "SET synchronous_commit = off");
    if (rc == QOD_OK && pc->idle_txn_ms > 0) {
        char sql[80];
        snprintf(sql, sizeof sql, "SET idle_in_transaction_session_timeout = %" PRId64, pc->idle_txn_ms);
        rc = exec_sql(pc, sql);
    }
    if (rc == QOD_OK && pc->role == PG_WRITER)
        rc = prepare_rows(pc, writer_row_stmts, COUNT(writer_row_stmts));
    if (rc == QOD_OK && pc->role == PG_WRITER)
        rc = prepare_list(pc, writer_stmts, COUNT(writer_stmts));
    if (rc == QOD_OK && pc->role == PG_READER)
        rc = prepare_rows(pc, reader_row_stmts, COUNT(reader_row_stmts));
    if (rc == QOD_OK && pc->role == PG_READER)
        rc = prepare_list(pc, reader_stmts, COUNT(reader_stmts));
    if (rc == QOD_OK && pc->role == PG_LEASE)
        rc = prepare_list(pc, lease_stmts, COUNT(lease_stmts));
    pc->ready = rc == QOD_OK;
    return rc;
}

/* Opens a connection named `name` (application_name) that gives up connecting after connect_s seconds and, over TCP,
 * notices a server gone silent: keepalive probes after 5 s of quiet find a peer that vanished without a reset (a
 * host that died, a network cut) within about 20 s, and data unacknowledged for user_timeout_ms (0: the kernel's
 * default, about 15 minutes) ends the connection. The URI's own settings override all of these. */
static PGconn *connect_params(const char *uri, const char *name, int64_t connect_s, int64_t user_timeout_ms)
{
    const char *const keys[] = {"connect_timeout",
                                "application_name",
                                "keepalives",
                                "keepalives_idle",
                                "keepalives_interval",
                                "keepalives_count",
                                "tcp_user_timeout",
                                "dbname",
                                NULL};
    char cs[NUM_LEN], ut[NUM_LEN];
    const char *const vals[] = {i64(cs, connect_s), name, "1", "5", "5", "3", i64(ut, user_timeout_ms), uri, NULL};
    return PQconnectdbParams(keys, vals, 1);
}

/* Connects; the URI's own settings override the defaults of connect_params. */
static int conn_open(pg_conn *pc, const char *uri)
{
    /* A connection with a limit on answers gets the same on connecting, in whole seconds (libpq's least is 2), and
     * on data the server leaves unacknowledged. */
    pc->c =
        connect_params(uri, role_names[pc->role], pc->answer_ms > 0 ? (pc->answer_ms + 999) / 1000 : 10, pc->answer_ms);
    if (!pc->c)
        return QOD_ERR_NOMEM;
    PQsetNoticeReceiver(pc->c, on_notice, NULL);
    if (PQstatus(pc->c) != CONNECTION_OK) {
        const char *msg = PQerrorMessage(pc->c);
        QOD_ERROR("store", "pg_connect_failed", "conn=%s err=\"%.*s\"", role_names[pc->role], line_len(msg), msg);
        return QOD_ERR_STORE;
    }
    return QOD_OK;
}

/* Makes the connection usable: reconnects when it broke, prepares again what a new session lacks. */
static int conn_ensure(pg_conn *pc)
{
    if (PQstatus(pc->c) != CONNECTION_OK) {
        QOD_WARN("store", "pg_reconnect", "conn=%s", role_names[pc->role]);
        pc->ready = false;
        PQreset(pc->c);
        if (PQstatus(pc->c) != CONNECTION_OK) {
            const char *msg = PQerrorMessage(pc->c);
            QOD_ERROR("store", "pg_connect_failed", "conn=%s err=\"%.*s\"", role_names[pc->role], line_len(msg), msg);
            return QOD_ERR_STORE;
        }
    }
    return pc->ready ? QOD_OK : conn_setup(pc);
}

/* Called for each row of a result with its row number; returns non-zero to stop. */
typedef int (*row_fn)(void *ctx, const PGresult *r, int row);

/* Runs a prepared statement in single-row mode, so that a scan holds one row in memory at a time, and feeds the
 * rows to fn. After fn asks to stop, the rest of the result is read and dropped. */
static int stream(const pg_conn *pc, const char *name, int n, const char *const *vals, row_fn fn, void *ctx,
                  size_t *rows)
{
    if (!PQsendQueryPrepared(pc->c, name, n, vals, NULL, NULL, 0))
        return result_rc(pc, NULL, name);
    PQsetSingleRowMode(pc->c);
    int rc = QOD_OK;
    bool stop = false;
    for (PGresult *r; (await_answer(pc, name), r = PQgetResult(pc->c)) != NULL; PQclear(r)) {
        ExecStatusType s = PQresultStatus(r);
        if (s == PGRES_SINGLE_TUPLE || s == PGRES_TUPLES_OK) {
            for (int i = 0; i < PQntuples(r) && !stop && rc == QOD_OK; i++) {
                (*rows)++;
                stop = fn(ctx, r, i) != 0;
            }
        } else if (rc == QOD_OK) {
            rc = result_rc(pc, r, name);
        }
    }
    return rc;
}

/* stream() on a connection made usable first; a connection that turns out broken before any row was delivered is
 * reopened and the statement run once more (every statement run this way may safely run twice). */
static int run_rows(pg_conn *pc, const char *name, int n, const char *const *vals, row_fn fn, void *ctx, size_t *rows)
{
    int rc = QOD_ERR_STORE;
    *rows = 0;
    for (int attempt = 0; attempt < 2; attempt++) {
        rc = conn_ensure(pc);
        if (rc == QOD_OK)
            rc = stream(pc, name, n, vals, fn, ctx, rows);
        if (rc == QOD_OK || *rows > 0 || PQstatus(pc->c) == CONNECTION_OK)
            break;
    }
    return rc;
}

/* run_rows() under the mutex that guards the connection. */
static int locked_rows(pthread_mutex_t *mu, pg_conn *pc, const char *name, int n, const char *const *vals, row_fn fn,
                       void *ctx, size_t *rows)
{
    pthread_mutex_lock(mu);
    int rc = run_rows(pc, name, n, vals, fn, ctx, rows);
    pthread_mutex_unlock(mu);
    return rc;
}

static int read_int(void *ctx, const PGresult *r, int row)
{
    *(int64_t *)ctx = PQgetisnull(r, row, 0) ? 0 : col_i64(r, row, 0);
    return 1;
}

static int migrate_step(const pg_conn *pc, int v)
{
    char next[NUM_LEN];
    const char *vals[] = {i64(next, v + 1)};
    int rc = exec_sql(pc, "BEGIN");
    if (rc == QOD_OK)
        rc = exec_sql(pc, migrations[v]);
    if (rc == QOD_OK) {
        PGresult *r =
            PQexecParams(pc->c, "INSERT INTO schema_version(version) VALUES($1)", 1, NULL, vals, NULL, NULL, 0);
        rc = result_rc(pc, r, "schema_version");
        PQclear(r);
    }
    if (rc == QOD_OK)
        rc = exec_sql(pc, "COMMIT");
    else
        exec_sql(pc, "ROLLBACK");
    if (rc == QOD_OK)
        QOD_INFO("store", "migrated", "version=%d backend=postgres", v + 1);
    return rc;
}

/* Brings the schema up to date. The advisory lock makes processes that open the store at once take turns: the
 * first migrates, the others find the work done. */
static int migrate(pg_conn *pc)
{
    int rc = exec_sql(pc, "SELECT pg_advisory_lock(" PG_LOCK_MIGRATE ")");
    if (rc != QOD_OK)
        return rc;
    rc = exec_sql(pc, "CREATE TABLE IF NOT EXISTS schema_version(version integer NOT NULL, applied_ms bigint NOT NULL"
                      " DEFAULT (extract(epoch FROM clock_timestamp()) * 1000)::bigint)");
    int64_t v = 0;
    size_t rows = 0;
    if (rc == QOD_OK) {
        PGresult *r = PQexec(pc->c, "SELECT max(version) FROM schema_version");
        rc = result_rc(pc, r, "schema_version");
        if (rc == QOD_OK && PQntuples(r) == 1) {
            read_int(&v, r, 0);
            rows = 1;
        }
        PQclear(r);
    }
    if (rc == QOD_OK && (rows != 1 || v < 0 || v > N_MIGRATIONS)) {
        QOD_ERROR("store", "schema_too_new", "version=%" PRId64 " known=%d", v, N_MIGRATIONS);
        rc = QOD_ERR_STORE;
    }
    for (int i = (int)v; rc == QOD_OK && i < N_MIGRATIONS; i++)
        rc = migrate_step(pc, i);
    /* On a broken connection the server has dropped the lock with the session. */
    exec_sql(pc, "SELECT pg_advisory_unlock(" PG_LOCK_MIGRATE ")");
    return rc;
}

/* Opens pc with answer_ms (0: none) as its limit on answers, and on connecting (kept by reconnections); brings the
 * schema up to date, waiting as long as another process's migration takes; then makes pc usable. */
static int conn_start(pg_conn *pc, const char *uri, int64_t answer_ms)
{
    int64_t limit = answer_ms > 0 ? answer_ms : 0;
    pc->answer_ms = limit;
    int rc = conn_open(pc, uri);
    pc->answer_ms = 0;
    if (rc == QOD_OK)
        rc = migrate(pc);
    pc->answer_ms = limit;
    return rc == QOD_OK ? conn_setup(pc) : rc;
}

static void pg_close(void *impl)
{
    pg *p = impl;
    if (!p)
        return;
    PQfinish(p->r.c);
    PQfinish(p->w.c);
    pthread_mutex_destroy(&p->r_mu);
    free(p);
}

static int pg_open(const qod_store_opts *opts, void **impl)
{
    *impl = NULL;
    pg *p = calloc(1, sizeof *p);
    if (!p)
        return QOD_ERR_NOMEM;
    pthread_mutex_init(&p->r_mu, NULL);
    p->w = (pg_conn){.role = PG_WRITER, .sync_full = opts->sync_full, .idle_txn_ms = opts->txn_idle_max_ms};
    p->r = (pg_conn){.role = PG_READER, .answer_ms = opts->answer_max_ms > 0 ? opts->answer_max_ms : 0};
    p->late_commit = opts->late_commit;
    p->late_ctx = opts->late_ctx;
    int rc = conn_start(&p->w, opts->uri, opts->answer_max_ms);
    if (rc == QOD_OK)
        rc = conn_open(&p->r, opts->uri);
    if (rc == QOD_OK)
        rc = conn_setup(&p->r);
    if (rc != QOD_OK) {
        pg_close(p);
        return rc;
    }
    *impl = p;
    return QOD_OK;
}

static bool too_long(const char *s, size_t max)
{
    return s && strnlen(s, max + 1) > max;
}

/* The explicit size limits (SQLite has none worth the name; PostgreSQL's btree has one). */
static int check_sizes(const qod_store_op *op)
{
    if (too_long(op->key, PG_KEY_MAX) || too_long(op->owner, PG_KEY_MAX) || too_long(op->idx, PG_KEY_MAX) ||
        too_long(op->doc, PG_DOC_MAX)) {
        QOD_WARN("store", "pg_too_large", "op=%d key_max=%d doc_max=%d", (int)op->kind, PG_KEY_MAX, PG_DOC_MAX);
        return QOD_ERR_LIMIT;
    }
    return QOD_OK;
}

/* Takes the events' transaction lock once per transaction (events and caps both need it). */
static int lock_events(pg *p)
{
    if (p->events_locked)
        return QOD_OK;
    int rc = exec_stmt(&p->w, "ev_lock", 0, NULL);
    p->events_locked = rc == QOD_OK;
    return rc;
}

/* The prepared statement and text parameters that apply one op (vals point into bufs or the op). A cap's
 * statement only counts; the caller compares the count with op->num. */
typedef struct {
    char name[32];
    const char *vals[6];
    int n;
    char bufs[4][NUM_LEN];
} pg_call;

/* An op this store can apply: a known kind, and a table for the row kinds; and values within the size limits. */
static int op_check(const qod_store_op *op)
{
    bool row = op->kind == QOD_OP_PUT || op->kind == QOD_OP_INSERT || op->kind == QOD_OP_UPDATE ||
               op->kind == QOD_OP_DEL || op->kind == QOD_OP_CAP;
    if ((row && op->table >= QOD_TBL_COUNT) || (unsigned)op->kind > QOD_OP_FENCE /* the last kind */)
        return QOD_ERR_INVALID;
    return check_sizes(op);
}

/* Fills c for an op that passed op_check. */
static int op_call(const qod_store_op *op, pg_call *c)
{
    const char **v = c->vals;
    switch (op->kind) {
    case QOD_OP_PUT:
    case QOD_OP_INSERT:
        row_stmt_name(c->name, sizeof c->name, op->kind == QOD_OP_PUT ? "put" : "ins", op->table);
        v[0] = op->key, v[1] = op->owner, v[2] = op->idx, v[3] = i64(c->bufs[0], op->state);
        v[4] = i64(c->bufs[1], op->num), v[5] = op->doc, c->n = 6;
        return QOD_OK;
    case QOD_OP_UPDATE:
        row_stmt_name(c->name, sizeof c->name, "upd", op->table);
        v[0] = op->key, v[1] = i64(c->bufs[0], op->state), v[2] = i64(c->bufs[1], op->num), v[3] = op->doc, c->n = 4;
        return QOD_OK;
    case QOD_OP_DEL:
        row_stmt_name(c->name, sizeof c->name, "del", op->table);
        v[0] = op->key, c->n = 1;
        return QOD_OK;
    case QOD_OP_CAP:
        row_stmt_name(c->name, sizeof c->name, "cap", op->table);
        v[0] = op->owner, v[1] = i64(c->bufs[0], op->state), c->n = 2;
        return QOD_OK;
    case QOD_OP_EVENT:
        /* For events: key = webhook-id, idx = session, num = created time (see store.c). */
        snprintf(c->name, sizeof c->name, "ev_add");
        v[0] = op->key, v[1] = op->idx, v[2] = op->owner, v[3] = i64(c->bufs[0], op->num), v[4] = op->doc;
        v[5] = i64(c->bufs[1], op->state), c->n = 6;
        return QOD_OK;
    case QOD_OP_EVENT_STATE:
        snprintf(c->name, sizeof c->name, "ev_state");
        v[0] = i64(c->bufs[0], op->seq), v[1] = i64(c->bufs[1], op->state), v[2] = i64(c->bufs[2], op->attempts);
        v[3] = i64(c->bufs[3], op->next_ms), c->n = 4;
        return QOD_OK;
    case QOD_OP_EVENT_DEL_SESSION:
        snprintf(c->name, sizeof c->name, "ev_del");
        v[0] = op->idx, c->n = 1;
        return QOD_OK;
    case QOD_OP_EVENT_REQUEUE:
        snprintf(c->name, sizeof c->name, "ev_requeue");
        v[0] = op->idx, v[1] = i64(c->bufs[0], op->seq), v[2] = i64(c->bufs[1], op->next_ms), c->n = 3;
        return QOD_OK;
    case QOD_OP_NOTIFY:
        snprintf(c->name, sizeof c->name, "notify");
        v[0] = op->key, v[1] = op->doc ? op->doc : "", c->n = 2;
        return QOD_OK;
    case QOD_OP_FENCE:
        snprintf(c->name, sizeof c->name, "fence");
        v[0] = op->key, v[1] = op->owner, v[2] = i64(c->bufs[0], op->num), c->n = 3;
        return QOD_OK;
    }
    return QOD_ERR_INVALID;
}

/* Events and caps run under the events' transaction lock (see lock_events). */
static bool needs_events_lock(const qod_store_op *op)
{
    return op->kind == QOD_OP_EVENT || op->kind == QOD_OP_CAP;
}

/* The outcome of an op's statement: a cap fails with QOD_ERR_LIMIT when its count has reached op->num, a fence
 * with QOD_ERR_BUSY when the lease is no longer the holder's at that epoch. */
static int op_result(const pg_conn *pc, const qod_store_op *op, const PGresult *r, const char *name)
{
    int rc = result_rc(pc, r, name);
    if (rc != QOD_OK)
        return rc;
    if (op->kind == QOD_OP_FENCE && PQntuples(r) != 1) {
        QOD_WARN("store", "pg_fenced", "lease=%s holder=%s epoch=%lld", op->key, op->owner, (long long)op->num);
        return QOD_ERR_BUSY;
    }
    if (op->kind != QOD_OP_CAP)
        return QOD_OK;
    int64_t n = PQntuples(r) == 1 ? col_i64(r, 0, 0) : 0;
    return n >= op->num ? QOD_ERR_LIMIT : QOD_OK;
}

static int pg_apply(void *impl, const qod_store_op *op)
{
    pg *p = impl;
    pg_call c;
    int rc = op_check(op);
    if (rc == QOD_OK)
        rc = op_call(op, &c);
    if (rc == QOD_OK && needs_events_lock(op))
        rc = lock_events(p);
    if (rc != QOD_OK)
        return rc;
    PGresult *r = call_result(&p->w, PQsendQueryPrepared(p->w.c, c.name, c.n, c.vals, NULL, NULL, 0), c.name);
    rc = op_result(&p->w, op, r, c.name);
    PQclear(r);
    return rc;
}

/* Reads the results of one pipeline segment of `sent` statements up to its sync point. Entry i of ops is the op of
 * statement i, or NULL for the events lock. Returns the first failure (later statements are then aborted). */
static int pipe_read(pg *p, const qod_store_op *const *ops, size_t sent)
{
    int rc = QOD_OK;
    size_t got = 0, nulls = 0;
    for (;;) {
        await_answer(&p->w, "pipeline");
        PGresult *r = PQgetResult(p->w.c);
        if (!r) {
            /* One NULL ends each statement's results; more than that means the connection gave up. */
            if (++nulls > sent + 1 || PQstatus(p->w.c) != CONNECTION_OK)
                return rc != QOD_OK ? rc : QOD_ERR_STORE;
            continue;
        }
        ExecStatusType st = PQresultStatus(r);
        if (st == PGRES_PIPELINE_SYNC) {
            PQclear(r);
            return got == sent || rc != QOD_OK ? rc : QOD_ERR_STORE;
        }
        if (got < sent && rc == QOD_OK && st != PGRES_PIPELINE_ABORTED) {
            const qod_store_op *op = ops[got];
            rc = op ? op_result(&p->w, op, r, "pipelined op") : result_rc(&p->w, r, "ev_lock");
            if (!op && rc == QOD_OK)
                p->events_locked = true;
        } else if (rc == QOD_OK && st == PGRES_PIPELINE_ABORTED) {
            rc = QOD_ERR_STORE;
        }
        got++;
        PQclear(r);
    }
}

/* Applies a whole group's ops in pipeline mode: statements go out in segments of PG_PIPE_SEGMENT, each ended by a
 * sync point (which neither commits nor ends the transaction that begin opened), so a group costs a round trip per
 * segment instead of one per statement. The first failure fails the call; the store then rolls the transaction
 * back and applies the batches one by one (pg_apply) to find which failed. */
static int pg_apply_many(void *impl, const qod_store_op *const *ops, size_t n)
{
    pg *p = impl;
    for (size_t i = 0; i < n; i++) {
        int rc = op_check(ops[i]); /* nothing is sent for a group that cannot apply */
        if (rc != QOD_OK)
            return rc;
    }
    const qod_store_op *seg[PG_PIPE_SEGMENT + 1];
    if (!PQenterPipelineMode(p->w.c))
        return result_rc(&p->w, NULL, "pipeline");
    int rc = QOD_OK;
    bool locked = p->events_locked;
    /* One fence per lease and epoch is enough for the whole transaction: its lock lasts until the end. */
    const qod_store_op *fences[64];
    size_t nfences = 0;
    for (size_t i = 0; i < n && rc == QOD_OK;) {
        size_t sent = 0;
        for (; i < n && sent < PG_PIPE_SEGMENT && rc == QOD_OK; i++) {
            if (ops[i]->kind == QOD_OP_FENCE) {
                bool seen = false;
                for (size_t k = 0; k < nfences && !seen; k++)
                    seen = qod_store_op_is_fence(fences[k], ops[i]->key, ops[i]->owner, ops[i]->num);
                if (seen)
                    continue;
                if (nfences < sizeof fences / sizeof fences[0])
                    fences[nfences++] = ops[i];
            }
            pg_call c;
            op_call(ops[i], &c);
            if (needs_events_lock(ops[i]) && !locked) {
                locked = true;
                seg[sent++] = NULL;
                if (!PQsendQueryPrepared(p->w.c, "ev_lock", 0, NULL, NULL, NULL, 0))
                    rc = QOD_ERR_STORE;
            }
            seg[sent++] = ops[i];
            if (rc == QOD_OK && !PQsendQueryPrepared(p->w.c, c.name, c.n, c.vals, NULL, NULL, 0))
                rc = QOD_ERR_STORE;
        }
        if (rc != QOD_OK || !PQpipelineSync(p->w.c)) {
            rc = result_rc(&p->w, NULL, "pipeline send");
            break;
        }
        rc = pipe_read(p, seg, sent);
    }
    if (!PQexitPipelineMode(p->w.c)) {
        /* Results left unread (a broken connection): start over on a fresh session. */
        QOD_WARN("store", "pg_pipeline_stuck", "err=\"%.*s\"", line_len(PQerrorMessage(p->w.c)),
                 PQerrorMessage(p->w.c));
        p->w.ready = false;
        PQreset(p->w.c);
        return rc != QOD_OK ? rc : QOD_ERR_STORE;
    }
    return rc;
}

static void late_unknown(pg *p);

/* Opens the group's transaction and learns its id, in one round trip; reconnects first when the writer's
 * connection broke, and asks first what became of the transactions left unknown. */
static int pg_begin(void *impl)
{
    pg *p = impl;
    int rc = QOD_ERR_STORE;
    p->events_locked = false;
    p->xid[0] = '\0';
    for (int attempt = 0; attempt < 2; attempt++) {
        rc = conn_ensure(&p->w);
        if (rc == QOD_OK && p->nunknown)
            late_unknown(p);
        if (rc == QOD_OK) {
            const char *sql = "BEGIN; SELECT pg_current_xact_id()";
            PGresult *r = call_result(&p->w, PQsendQuery(p->w.c, sql), sql);
            rc = result_rc(&p->w, r, sql);
            if (rc == QOD_OK && PQntuples(r) == 1 && strlen(PQgetvalue(r, 0, 0)) < sizeof p->xid)
                snprintf(p->xid, sizeof p->xid, "%s", PQgetvalue(r, 0, 0));
            else if (rc == QOD_OK)
                rc = QOD_ERR_STORE;
            PQclear(r);
        }
        if (rc == QOD_OK || PQstatus(p->w.c) == CONNECTION_OK)
            break;
    }
    return rc;
}

static int read_text(void *ctx, const PGresult *r, int row)
{
    snprintf(ctx, NUM_LEN, "%s", PQgetisnull(r, row, 0) ? "" : PQgetvalue(r, row, 0));
    return 1;
}

/* The fate of the transaction whose COMMIT was sent and whose answer never came (the connection broke, or the
 * server did not answer in time): the server may have committed it all the same. Asked on a new connection, and
 * asked again while the server says it is still in progress (the old session finishing its commit), for at most
 * twice the answer limit, and at least OUTCOME_MIN_MS. QOD_OK when it committed; QOD_ERR_STORE when it did not, or when
 * that could not be learned in time: then its batches fail although they may be in the database (logged as an error).
 */
static int commit_outcome(pg *p)
{
    int64_t until = qod_time_mono_ms() + (2 * p->w.answer_ms > OUTCOME_MIN_MS ? 2 * p->w.answer_ms : OUTCOME_MIN_MS);
    const char *v[] = {p->xid};
    char status[NUM_LEN] = "";
    while (p->xid[0]) {
        size_t rows = 0;
        status[0] = '\0';
        int rc = run_rows(&p->w, "xact_status", 1, v, read_text, status, &rows);
        if (rc == QOD_OK && strcmp(status, "committed") == 0) {
            QOD_WARN("store", "pg_commit_confirmed", "xid=%s", p->xid);
            return QOD_OK;
        }
        if (rc == QOD_OK && strcmp(status, "aborted") == 0) {
            QOD_WARN("store", "pg_commit_aborted", "xid=%s", p->xid);
            return QOD_ERR_STORE;
        }
        if (qod_time_mono_ms() >= until)
            break;
        nanosleep(&(struct timespec){.tv_nsec = 50 * 1000 * 1000}, NULL);
    }
    QOD_ERROR("store", "pg_commit_unknown", "xid=%s status=\"%s\" detail=\"its batches are reported failed\"",
              p->xid[0] ? p->xid : "-", status);
    if (p->xid[0]) {
        if (p->nunknown == PG_UNKNOWN_MAX) {
            QOD_ERROR("store", "pg_commit_unknown_forgotten", "xid=%s", p->unknown[0]);
            memmove(p->unknown[0], p->unknown[1], sizeof p->unknown[0] * (PG_UNKNOWN_MAX - 1));
            p->nunknown--;
        }
        snprintf(p->unknown[p->nunknown++], sizeof p->unknown[0], "%s", p->xid);
    }
    return QOD_ERR_STORE;
}

/* Asks again the fate of the transactions left unknown (on the writer's connection, outside a transaction): one
 * found committed is reported to late_commit (its batches were answered as failed, and are in the store); one
 * aborted, or too old for the server to tell, is forgotten; one still in progress, or not asked (the connection
 * failed), stays. */
static void late_unknown(pg *p)
{
    bool committed = false;
    int kept = 0;
    for (int i = 0; i < p->nunknown; i++) {
        const char *v[] = {p->unknown[i]};
        char status[NUM_LEN] = "";
        size_t rows = 0;
        int rc = PQstatus(p->w.c) == CONNECTION_OK ? run_rows(&p->w, "xact_status", 1, v, read_text, status, &rows)
                                                   : QOD_ERR_STORE;
        if (rc == QOD_OK && strcmp(status, "committed") == 0) {
            QOD_ERROR("store", "pg_commit_found", "xid=%s detail=\"batches reported failed are in the database\"",
                      p->unknown[i]);
            committed = true;
        } else if (rc == QOD_OK && strcmp(status, "in progress") != 0) {
            /* Aborted, or too old for the server to tell (NULL: then nothing more can be learned). */
            QOD_WARN("store", strcmp(status, "aborted") == 0 ? "pg_commit_not_made" : "pg_commit_untold",
                     "xid=%s status=\"%s\"", p->unknown[i], status);
        } else if (rc != QOD_OK && PQstatus(p->w.c) == CONNECTION_OK) {
            /* Refused by a server that answers: an id it never gave (a failover to a server the commit never
             * reached, whose ids are behind). Asking again would fail the same way, or later name another
             * transaction. */
            QOD_WARN("store", "pg_commit_untold", "xid=%s status=\"refused\"", p->unknown[i]);
        } else if (kept != i) {
            memcpy(p->unknown[kept++], p->unknown[i], sizeof p->unknown[0]);
        } else {
            kept++;
        }
    }
    p->nunknown = kept;
    if (committed && p->late_commit)
        p->late_commit(p->late_ctx);
}

static int pg_commit(void *impl)
{
    pg *p = impl;
    /* COMMIT of a failed transaction answers "ROLLBACK" with success: never let that pass for a commit. */
    if (PQtransactionStatus(p->w.c) != PQTRANS_INTRANS) {
        QOD_WARN("store", "commit_failed", "err=\"transaction not open or aborted\"");
        return QOD_ERR_STORE;
    }
    PGresult *r = call_result(&p->w, PQsendQuery(p->w.c, "COMMIT"), "COMMIT");
    int rc = result_rc(&p->w, r, "COMMIT");
    if (rc == QOD_OK && strcmp(PQcmdStatus(r), "COMMIT") != 0)
        rc = QOD_ERR_STORE;
    /* No answer at all: the server may have committed before the connection went. */
    if (rc != QOD_OK && PQstatus(p->w.c) != CONNECTION_OK && !(r && PQresultErrorField(r, PG_DIAG_SQLSTATE)))
        rc = commit_outcome(p);
    PQclear(r);
    return rc;
}

/* The writer had nothing to do for a while: transactions of unknown fate are asked about now rather than at the next
 * write, which may be long in coming. */
static void pg_idle(void *impl)
{
    pg *p = impl;
    if (p->nunknown && conn_ensure(&p->w) == QOD_OK)
        late_unknown(p);
}

static void pg_rollback(void *impl)
{
    pg *p = impl;
    PGTransactionStatusType s = PQtransactionStatus(p->w.c);
    if (s == PQTRANS_INTRANS || s == PQTRANS_INERROR)
        exec_sql(&p->w, "ROLLBACK");
}

static int pg_savepoint(void *impl, int release)
{
    pg *p = impl;
    if (release > 0)
        return exec_sql(&p->w, "RELEASE SAVEPOINT b");
    if (release < 0) {
        /* A lock taken inside the savepoint goes with it. */
        p->events_locked = false;
        int rc = exec_sql(&p->w, "ROLLBACK TO SAVEPOINT b");
        return rc == QOD_OK ? exec_sql(&p->w, "RELEASE SAVEPOINT b") : rc;
    }
    return exec_sql(&p->w, "SAVEPOINT b");
}

static int pg_schema_version(void *impl)
{
    pg *p = impl;
    int64_t v = 0;
    size_t rows;
    int rc = locked_rows(&p->r_mu, &p->r, "version", 0, NULL, read_int, &v, &rows);
    return rc == QOD_OK ? (int)v : rc;
}

/* Where read rows go: a get callback or a scan callback, with its argument. */
typedef struct {
    void (*get)(void *, const qod_store_row *);
    int (*scan)(void *, const qod_store_row *);
    int (*event)(void *, const qod_store_event *);
    void *arg;
} reader_ctx;

static int deliver_row(void *ctx, const PGresult *r, int i)
{
    reader_ctx *c = ctx;
    qod_store_row row = {
        .key = PQgetvalue(r, i, 0),
        .owner = PQgetvalue(r, i, 1),
        .idx = PQgetvalue(r, i, 2),
        .state = col_i64(r, i, 3),
        .num = col_i64(r, i, 4),
        .doc = PQgetvalue(r, i, 5),
    };
    if (c->get) {
        c->get(c->arg, &row);
        return 1;
    }
    return c->scan(c->arg, &row);
}

static int deliver_event(void *ctx, const PGresult *r, int i)
{
    reader_ctx *c = ctx;
    qod_store_event e = {
        .seq = col_i64(r, i, 0),
        .id = PQgetvalue(r, i, 1),
        .session = PQgetvalue(r, i, 2),
        .owner = PQgetvalue(r, i, 3),
        .created_ms = col_i64(r, i, 4),
        .state = col_i64(r, i, 5),
        .attempts = col_i64(r, i, 6),
        .next_ms = col_i64(r, i, 7),
        .doc = PQgetvalue(r, i, 8),
    };
    return c->event(c->arg, &e);
}

static int pg_get(void *impl, qod_store_table t, const char *key, void (*fn)(void *, const qod_store_row *), void *arg)
{
    pg *p = impl;
    if (t >= QOD_TBL_COUNT)
        return QOD_ERR_INVALID;
    char name[32];
    reader_ctx c = {.get = fn, .arg = arg};
    const char *v[] = {key};
    size_t rows;
    int rc = locked_rows(&p->r_mu, &p->r, row_stmt_name(name, sizeof name, "get", t), 1, v, deliver_row, &c, &rows);
    return rc == QOD_OK && rows == 0 ? QOD_ERR_NOTFOUND : rc;
}

static int pg_scan(void *impl, qod_store_table t, const char *owner, int (*fn)(void *, const qod_store_row *),
                   void *arg)
{
    pg *p = impl;
    if (t >= QOD_TBL_COUNT)
        return QOD_ERR_INVALID;
    char name[32];
    reader_ctx c = {.scan = fn, .arg = arg};
    const char *v[] = {owner};
    size_t rows;
    row_stmt_name(name, sizeof name, owner ? "scano" : "scan", t);
    return locked_rows(&p->r_mu, &p->r, name, owner ? 1 : 0, v, deliver_row, &c, &rows);
}

static int pg_scan_idx(void *impl, qod_store_table t, const char *idx, int (*fn)(void *, const qod_store_row *),
                       void *arg)
{
    pg *p = impl;
    if (t >= QOD_TBL_COUNT || !idx)
        return QOD_ERR_INVALID;
    char name[32];
    reader_ctx c = {.scan = fn, .arg = arg};
    const char *v[] = {idx};
    size_t rows;
    row_stmt_name(name, sizeof name, "scani", t);
    return locked_rows(&p->r_mu, &p->r, name, 1, v, deliver_row, &c, &rows);
}

static int pg_scan_events(void *impl, int64_t state, int64_t after_seq, size_t limit,
                          int (*fn)(void *, const qod_store_event *), void *arg)
{
    pg *p = impl;
    char st[NUM_LEN], after[NUM_LEN], lim[NUM_LEN];
    reader_ctx c = {.event = fn, .arg = arg};
    /* A NULL limit is LIMIT ALL; so is a limit beyond what int64 can say. */
    const char *lv = limit && limit <= (size_t)INT64_MAX ? i64(lim, (int64_t)limit) : NULL;
    const char *by_state[] = {i64(st, state), i64(after, after_seq), lv};
    const char *any[] = {after, lv};
    size_t rows;
    if (state < 0)
        return locked_rows(&p->r_mu, &p->r, "ev_scan_any", 2, any, deliver_event, &c, &rows);
    return locked_rows(&p->r_mu, &p->r, "ev_scan", 3, by_state, deliver_event, &c, &rows);
}

const qod_store_impl qod_store_postgres = {
    .name = "postgres",
    .open = pg_open,
    .close = pg_close,
    .begin = pg_begin,
    .apply = pg_apply,
    .apply_many = pg_apply_many,
    .savepoint = pg_savepoint,
    .commit = pg_commit,
    .rollback = pg_rollback,
    .schema_version = pg_schema_version,
    .get = pg_get,
    .scan = pg_scan,
    .scan_events = pg_scan_events,
    .scan_idx = pg_scan_idx,
    .idle = pg_idle,
};

int qod_pg_lease_open(const char *uri, int64_t answer_ms, qod_pg_lease **out)
{
    *out = NULL;
    qod_pg_lease *l = calloc(1, sizeof *l);
    if (!l)
        return QOD_ERR_NOMEM;
    pthread_mutex_init(&l->mu, NULL);
    l->c.role = PG_LEASE;
    int rc = conn_start(&l->c, uri, answer_ms);
    if (rc != QOD_OK) {
        qod_pg_lease_close(l);
        return rc;
    }
    *out = l;
    return QOD_OK;
}

void qod_pg_lease_close(qod_pg_lease *l)
{
    if (!l)
        return;
    PQfinish(l->c.c);
    pthread_mutex_destroy(&l->mu);
    free(l);
}

static bool lease_name_ok(const char *s)
{
    return s && *s && !too_long(s, PG_KEY_MAX);
}

/* The acquire statement, waiting for a locked row or (!wait) not: then inside its own transaction, with a
 * lock_timeout of 1 ms, so that a row locked now fails at once with lock_not_available (mapped to BUSY). */
static int lease_upsert(qod_pg_lease *l, const char *name, const char *holder, int64_t ttl_ms, int64_t *epoch,
                        bool wait)
{
    if (!lease_name_ok(name) || !lease_name_ok(holder) || ttl_ms <= 0 || ttl_ms > LEASE_TTL_MAX_MS)
        return QOD_ERR_INVALID;
    char ttl[NUM_LEN];
    const char *v[] = {name, holder, i64(ttl, ttl_ms)};
    int64_t got = 0;
    size_t rows = 0;
    int rc;
    if (wait) {
        rc = locked_rows(&l->mu, &l->c, "acquire", 3, v, read_int, &got, &rows);
    } else {
        pthread_mutex_lock(&l->mu);
        rc = conn_ensure(&l->c);
        rc = rc ? rc : exec_sql(&l->c, "BEGIN");
        rc = rc ? rc : exec_sql(&l->c, "SET LOCAL lock_timeout = 1");
        rc = rc ? rc : stream(&l->c, "acquire", 3, v, read_int, &got, &rows);
        rc = rc ? rc : exec_sql(&l->c, "COMMIT");
        if (rc != QOD_OK && PQtransactionStatus(l->c.c) != PQTRANS_IDLE)
            exec_sql(&l->c, "ROLLBACK");
        pthread_mutex_unlock(&l->mu);
    }
    if (rc == QOD_OK && rows == 0)
        rc = QOD_ERR_BUSY;
    if (rc == QOD_OK && epoch)
        *epoch = got;
    return rc;
}

int qod_pg_lease_acquire(qod_pg_lease *l, const char *name, const char *holder, int64_t ttl_ms, int64_t *epoch)
{
    return lease_upsert(l, name, holder, ttl_ms, epoch, true);
}

int qod_pg_lease_take(qod_pg_lease *l, const char *name, const char *holder, int64_t ttl_ms, int64_t *epoch)
{
    return lease_upsert(l, name, holder, ttl_ms, epoch, false);
}

int qod_pg_lease_release(qod_pg_lease *l, const char *name, const char *holder)
{
    if (!lease_name_ok(name) || !lease_name_ok(holder))
        return QOD_ERR_INVALID;
    const char *v[] = {name, holder};
    int64_t unused = 0;
    size_t rows;
    int rc = locked_rows(&l->mu, &l->c, "release", 2, v, read_int, &unused, &rows);
    return rc;
}

typedef struct {
    char *holder;
    size_t cap;
    int64_t epoch, remaining_ms;
} lease_view;

static int read_lease(void *ctx, const PGresult *r, int row)
{
    lease_view *v = ctx;
    if (v->holder && v->cap)
        snprintf(v->holder, v->cap, "%s", PQgetvalue(r, row, 0));
    v->epoch = col_i64(r, row, 1);
    v->remaining_ms = col_i64(r, row, 2);
    return 1;
}

int qod_pg_lease_holder(qod_pg_lease *l, const char *name, char *holder, size_t cap, int64_t *epoch,
                        int64_t *remaining_ms)
{
    if (!lease_name_ok(name))
        return QOD_ERR_INVALID;
    lease_view view = {.holder = holder, .cap = cap};
    const char *v[] = {name};
    size_t rows;
    int rc = locked_rows(&l->mu, &l->c, "holder", 1, v, read_lease, &view, &rows);
    if (rc == QOD_OK && rows == 0)
        rc = QOD_ERR_NOTFOUND;
    if (rc == QOD_OK && epoch)
        *epoch = view.epoch;
    if (rc == QOD_OK && remaining_ms)
        *remaining_ms = view.remaining_ms;
    return rc;
}

typedef struct {
    int (*fn)(void *arg, const char *name, const char *holder);
    void *arg;
} lease_list;

static int read_listed(void *ctx, const PGresult *r, int row)
{
    lease_list *l = ctx;
    return l->fn(l->arg, PQgetvalue(r, row, 0), PQgetvalue(r, row, 1));
}

int qod_pg_lease_list(qod_pg_lease *l, const char *prefix, int (*fn)(void *arg, const char *name, const char *holder),
                      void *arg)
{
    if (!prefix || too_long(prefix, PG_KEY_MAX))
        return QOD_ERR_INVALID;
    lease_list ctx = {fn, arg};
    const char *v[] = {prefix};
    size_t rows;
    return locked_rows(&l->mu, &l->c, "list", 1, v, read_listed, &ctx, &rows);
}

/* ---- change notifications (LISTEN) -------------------------------------------------------------------------- */

#define LISTEN_CHANNELS_MAX 8

struct qod_store_listener {
    char *uri;
    char *channels[LISTEN_CHANNELS_MAX];
    int nchannels;
    qod_store_notify_fn fn;
    void *arg;
    PGconn *c;
    pthread_t thread;
    bool started;
    atomic_bool stopping;
};

/* Connects and LISTENs to every channel; false when the server cannot be reached. */
static bool listen_connect(qod_store_listener *l)
{
    PQfinish(l->c);
    l->c = connect_params(l->uri, "qodd-listener", 5, 0);
    if (!l->c || PQstatus(l->c) != CONNECTION_OK)
        return false;
    PQsetNoticeReceiver(l->c, on_notice, NULL);
    for (int i = 0; i < l->nchannels; i++) {
        char sql[96];
        snprintf(sql, sizeof sql, "LISTEN qod_%s", l->channels[i]);
        PGresult *r = PQexec(l->c, sql);
        bool ok = r && PQresultStatus(r) == PGRES_COMMAND_OK;
        PQclear(r);
        if (!ok)
            return false;
    }
    return true;
}

static void *listen_main(void *arg)
{
    qod_store_listener *l = arg;
    pthread_setname_np(pthread_self(), "qod-listen");
    bool up = true;
    while (!atomic_load(&l->stopping)) {
        if (!up) {
            struct timespec ts = {0, 200 * 1000000};
            nanosleep(&ts, NULL);
            if (!(up = listen_connect(l)))
                continue;
            QOD_INFO("store", "listen_reconnected", "%s", "");
            /* What changed while we were away is unknown: every cache refreshes whole. */
            for (int i = 0; i < l->nchannels; i++)
                l->fn(l->arg, l->channels[i], NULL);
        }
        struct pollfd p = {PQsocket(l->c), POLLIN, 0};
        int n = p.fd >= 0 ? poll(&p, 1, 250) : -1;
        if (n < 0 || (n > 0 && !PQconsumeInput(l->c))) {
            QOD_WARN("store", "listen_lost", "%s", "");
            up = false;
            continue;
        }
        for (PGnotify *m; (m = PQnotifies(l->c)) != NULL; PQfreemem(m)) {
            const char *ch = strncmp(m->relname, "qod_", 4) == 0 ? m->relname + 4 : m->relname;
            l->fn(l->arg, ch, m->extra ? m->extra : "");
        }
    }
    return NULL;
}

void qod_store_listen_stop(qod_store_listener *l)
{
    if (!l)
        return;
    atomic_store(&l->stopping, true);
    if (l->started)
        pthread_join(l->thread, NULL);
    PQfinish(l->c);
    for (int i = 0; i < l->nchannels; i++)
        free(l->channels[i]);
    free(l->uri);
    free(l);
}

int qod_store_listen(const char *uri, const char *const *channels, qod_store_notify_fn fn, void *arg,
                     qod_store_listener **out)
{
    *out = NULL;
    if (strncmp(uri, "postgres://", 11) != 0 && strncmp(uri, "postgresql://", 13) != 0)
        return QOD_ERR_UNSUPPORTED;
    qod_store_listener *l = calloc(1, sizeof *l);
    if (!l || !(l->uri = strdup(uri))) {
        free(l);
        return QOD_ERR_NOMEM;
    }
    l->fn = fn;
    l->arg = arg;
    for (; channels[l->nchannels] && l->nchannels < LISTEN_CHANNELS_MAX; l->nchannels++) {
        /* LISTEN takes the name unquoted (folded to lower case): only names that survive that unchanged. */
        const char *ch = channels[l->nchannels];
        if (strlen(ch) > 32 || !*ch || strspn(ch, "abcdefghijklmnopqrstuvwxyz0123456789_") != strlen(ch) ||
            !(l->channels[l->nchannels] = strdup(ch))) {
            qod_store_listen_stop(l);
            return QOD_ERR_INVALID;
        }
    }
    if (!listen_connect(l)) {
        qod_store_listen_stop(l);
        return QOD_ERR_STORE;
    }
    if (pthread_create(&l->thread, NULL, listen_main, l) != 0) {
        qod_store_listen_stop(l);
        return QOD_ERR_NOMEM;
    }
    l->started = true;
    *out = l;
    return QOD_OK;
}
