/* The store (store.c) on both implementations: SQLite, and PostgreSQL (postgres.c) against a throwaway PostgreSQL
 * 15 cluster that tests/tools/pgtmp.sh starts on a free port in a temporary directory.
 *
 * The behaviour cases run twice, once on PostgreSQL ("pg.") and once on SQLite ("sqlite."), so that the two
 * implementations are held to the same expectations; the "pg." cases after them cover what only PostgreSQL has
 * (migration lock, connection failures and recovery, size limits, leases, fences), and the last "sqlite." cases what
 * only SQLite has (a data directory or a file path). Without the server binaries every "pg." case prints
 * "SKIP name: reason". The server comes from pgfix.h. */
#include "store/pg_lease.h"
#include "store/store.h"

#include "pgfix.h"
#include "qtest.h"
#include "util/err.h"
#include "util/log.h"
#include "util/time.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

typedef enum { BK_PG, BK_SQLITE } backend;
static backend under_test;

/* ---- the fixture: a store on an empty database of the backend under test ---- */

typedef struct {
    char dir[64]; /* SQLite only */
    qod_store *st;
    int64_t answer_ms; /* PostgreSQL: qod_store_opts.answer_max_ms */
    atomic_int late;   /* calls of qod_store_opts.late_commit */
} fixture;

static const char *fixture_uri(fixture *f)
{
    return under_test == BK_PG ? pgfix.uri : f->dir;
}

static void count_late(void *ctx)
{
    atomic_fetch_add(&((fixture *)ctx)->late, 1);
}

static int fixture_reopen(fixture *f, bool sync_full)
{
    qod_store_opts o = {.uri = fixture_uri(f),
                        .sync_full = sync_full,
                        .answer_max_ms = f->answer_ms,
                        .late_commit = count_late,
                        .late_ctx = f};
    return qod_store_open(&o, &f->st);
}

/* A store on an empty database whose PostgreSQL calls wait at most answer_ms (0: no limit). */
static int fixture_open_limited(fixture *f, int64_t answer_ms)
{
    memset(f, 0, sizeof *f);
    f->answer_ms = answer_ms;
    qod_log_setup(QOD_LOG_OFF, QOD_LOG_TEXT);
    if (under_test == BK_PG && pgfix_drop_schema() != 0)
        return -1;
    snprintf(f->dir, sizeof f->dir, "/tmp/qod-pgtest-XXXXXX");
    if (under_test == BK_SQLITE && !mkdtemp(f->dir))
        return -1;
    return fixture_reopen(f, false) == QOD_OK ? 0 : -1;
}

static int fixture_open(fixture *f)
{
    return fixture_open_limited(f, 0);
}

static void fixture_close(fixture *f)
{
    qod_store_close(f->st);
    f->st = NULL;
    if (under_test == BK_SQLITE)
        nftw(f->dir, pgfix_remove_entry, 4, FTW_DEPTH | FTW_PHYS);
}

/* ---- reading back ---- */

typedef struct {
    int calls;
    char key[64], owner[64], idx[64], doc[256];
    int64_t state, num;
} row_copy;

static void copy_row(void *arg, const qod_store_row *r)
{
    row_copy *c = arg;
    c->calls++;
    snprintf(c->key, sizeof c->key, "%s", r->key);
    snprintf(c->owner, sizeof c->owner, "%s", r->owner);
    snprintf(c->idx, sizeof c->idx, "%s", r->idx);
    snprintf(c->doc, sizeof c->doc, "%s", r->doc);
    c->state = r->state;
    c->num = r->num;
}

static int get(fixture *f, qod_store_table t, const char *key, row_copy *c)
{
    memset(c, 0, sizeof *c);
    return qod_store_get(f->st, t, key, copy_row, c);
}

/* The keys a scan returned, joined by spaces; stops after `stop_after` rows when non-zero. */
typedef struct {
    int n, stop_after;
    char keys[512];
} key_list;

static int list_key(void *arg, const qod_store_row *r)
{
    key_list *l = arg;
    size_t used = strlen(l->keys);
    snprintf(l->keys + used, sizeof l->keys - used, "%s%s", used ? " " : "", r->key);
    l->n++;
    return l->stop_after && l->n >= l->stop_after;
}

static int scan(fixture *f, qod_store_table t, const char *owner, int stop_after, key_list *l)
{
    memset(l, 0, sizeof *l);
    l->stop_after = stop_after;
    return qod_store_scan(f->st, t, owner, list_key, l);
}

/* The same for the sessions whose idx is idx. */
static int scan_idx(fixture *f, const char *idx, int stop_after, key_list *l)
{
    memset(l, 0, sizeof *l);
    l->stop_after = stop_after;
    return qod_store_scan_idx(f->st, QOD_TBL_SESSIONS, idx, list_key, l);
}

typedef struct {
    int n;
    qod_store_event ev[8];
    char id[8][32], session[8][32], owner[8][32], doc[8][64];
    char ids[256];
} event_list;

static int list_event(void *arg, const qod_store_event *e)
{
    event_list *l = arg;
    if (l->n < 8) {
        l->ev[l->n] = *e;
        snprintf(l->id[l->n], sizeof l->id[0], "%s", e->id);
        snprintf(l->session[l->n], sizeof l->session[0], "%s", e->session);
        snprintf(l->owner[l->n], sizeof l->owner[0], "%s", e->owner);
        snprintf(l->doc[l->n], sizeof l->doc[0], "%s", e->doc);
    }
    size_t used = strlen(l->ids);
    snprintf(l->ids + used, sizeof l->ids - used, "%s%s", used ? " " : "", e->id);
    l->n++;
    return 0;
}

static int events(fixture *f, int64_t state, int64_t after_seq, size_t limit, event_list *l)
{
    memset(l, 0, sizeof *l);
    return qod_store_scan_events(f->st, state, after_seq, limit, list_event, l);
}

/* ---- writing ---- */

static int put1(fixture *f, qod_store_table t, const char *key, const char *owner, const char *doc)
{
    qod_store_batch *b = qod_store_batch_new();
    int rc = qod_store_batch_put(b, t, key, owner, "idx", 0, 0, doc);
    return rc == QOD_OK ? qod_store_commit(f->st, b) : (qod_store_batch_free(b), rc);
}

static int event_state(fixture *f, int64_t seq, int64_t state)
{
    qod_store_batch *b = qod_store_batch_new();
    qod_store_batch_event_state(b, seq, state, 1, 0);
    return qod_store_commit(f->st, b);
}

/* Commits pending events wh-1 and wh-2 of session s1 in one batch, then wh-3 of s2. */
static int add_events(fixture *f)
{
    qod_store_batch *b = qod_store_batch_new();
    qod_store_batch_event(b, "wh-1", "s1", "app-1", 1000, "{\"n\":1}");
    qod_store_batch_event(b, "wh-2", "s1", "app-1", 2000, "{\"n\":2}");
    int rc = qod_store_commit(f->st, b);
    b = qod_store_batch_new();
    qod_store_batch_event(b, "wh-3", "s2", "app-2", 3000, "{\"n\":3}");
    return rc == QOD_OK ? qod_store_commit(f->st, b) : (qod_store_batch_free(b), rc);
}

/* Completions of asynchronous submits: each slot counts its callbacks, the tracker all of them. */
typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int done;
} tracker;

typedef struct {
    tracker *t;
    atomic_int calls;
    int rc;
} slot;

static void on_done(int rc, void *arg)
{
    slot *s = arg;
    s->rc = rc;
    atomic_fetch_add(&s->calls, 1);
    pthread_mutex_lock(&s->t->mu);
    s->t->done++;
    pthread_cond_broadcast(&s->t->cv);
    pthread_mutex_unlock(&s->t->mu);
}

static void tracker_init(tracker *t)
{
    t->done = 0;
    pthread_mutex_init(&t->mu, NULL);
    pthread_cond_init(&t->cv, NULL);
}

static void tracker_dispose(tracker *t)
{
    pthread_mutex_destroy(&t->mu);
    pthread_cond_destroy(&t->cv);
}

/* Waits until n callbacks ran or 60 s passed; returns the count seen. */
/* How many completions came, once n have or ms have passed. */
static int tracker_wait_ms(tracker *t, int n, int ms)
{
    struct timespec deadline = pgfix_deadline(ms);
    pthread_mutex_lock(&t->mu);
    while (t->done < n && pthread_cond_timedwait(&t->cv, &t->mu, &deadline) == 0)
        ;
    int done = t->done;
    pthread_mutex_unlock(&t->mu);
    return done;
}

static int tracker_wait(tracker *t, int n)
{
    return tracker_wait_ms(t, n, 60000);
}

/* ==== behaviour cases, run on both backends ==== */

/* The schema version each backend migrates to today. */
static int current_version(void)
{
    return under_test == BK_PG ? 2 : 1;
}

QTEST(open_reports_the_current_version_and_answers_ping)
{
    fixture f;
    QT_EQ_INT(fixture_open(&f), 0);
    int version = qod_store_schema_version(f.st), ping = qod_store_ping(f.st, 5000);
    fixture_close(&f);
    QT_EQ_INT(version, current_version());
    QT_EQ_INT(ping, QOD_OK);
}

QTEST(reopen_keeps_the_current_version)
{
    fixture f;
    QT_EQ_INT(fixture_open(&f), 0);
    qod_store_close(f.st);
    int rc = fixture_reopen(&f, true);
    int version = rc == QOD_OK ? qod_store_schema_version(f.st) : -1;
    fixture_close(&f);
    QT_EQ_INT(rc, QOD_OK);
    QT_EQ_INT(version, current_version());
}

QTEST(put_get_round_trip_every_table)
{
    fixture f;
    QT_EQ_INT(fixture_open(&f), 0);
    qod_store_batch *b = qod_store_batch_new();
    for (int t = 0; t < QOD_TBL_COUNT; t++) {
        char doc[32];
        snprintf(doc, sizeof doc, "{\"table\":%d}", t);
        QT_EQ_INT(qod_store_batch_put(b, (qod_store_table)t, "key-1", "app-7", "dev-9", 3 + t, -1780390800123LL, doc),
                  QOD_OK);
    }
    QT_EQ_INT(qod_store_commit(f.st, b), QOD_OK);
    for (int t = 0; t < QOD_TBL_COUNT; t++) {
        row_copy c;
        char doc[32];
        snprintf(doc, sizeof doc, "{\"table\":%d}", t);
        QT_EQ_INT(get(&f, (qod_store_table)t, "key-1", &c), QOD_OK);
        QT_EQ_INT(c.calls, 1);
        QT_EQ_STR(c.key, "key-1");
        QT_EQ_STR(c.owner, "app-7");
        QT_EQ_STR(c.idx, "dev-9");
        QT_EQ_INT(c.state, 3 + t);
        QT_EQ_INT(c.num, -1780390800123LL);
        QT_EQ_STR(c.doc, doc);
    }
    fixture_close(&f);
}

QTEST(get_absent_is_notfound_and_tables_are_separate)
{
    fixture f;
    QT_EQ_INT(fixture_open(&f), 0);
    QT_EQ_INT(put1(&f, QOD_TBL_APPS, "same", "", "{}"), QOD_OK);
    row_copy c;
    int in_devices = get(&f, QOD_TBL_DEVICES, "same", &c);
    int calls = c.calls;
    int in_apps = get(&f, QOD_TBL_APPS, "same", &c);
    fixture_close(&f);
    QT_EQ_INT(in_devices, QOD_ERR_NOTFOUND);
    QT_EQ_INT(calls, 0);
    QT_EQ_INT(in_apps, QOD_OK);
}

QTEST(put_null_strings_stored_empty)
{
    fixture f;
    QT_EQ_INT(fixture_open(&f), 0);
    qod_store_batch *b = qod_store_batch_new();
    QT_EQ_INT(qod_store_batch_put(b, QOD_TBL_META, "k", NULL, NULL, 0, 0, NULL), QOD_OK);
    QT_EQ_INT(qod_store_commit(f.st, b), QOD_OK);
    row_copy c;
    QT_EQ_INT(get(&f, QOD_TBL_META, "k", &c), QOD_OK);
    fixture_close(&f);
    QT_EQ_STR(c.owner, "");
    QT_EQ_STR(c.idx, "");
    QT_EQ_STR(c.doc, "");
}

QTEST(put_existing_key_replaces_every_column)
{
    fixture f;
    QT_EQ_INT(fixture_open(&f), 0);
    QT_EQ_INT(put1(&f, QOD_TBL_SESSIONS, "s1", "app-1", "{\"v\":1}"), QOD_OK);
    qod_store_batch *b = qod_store_batch_new();
    qod_store_batch_put(b, QOD_TBL_SESSIONS, "s1", "app-2", "dev-2", 5, 6, "{\"v\":2}");
    QT_EQ_INT(qod_store_commit(f.st, b), QOD_OK);
    row_copy c;
    QT_EQ_INT(get(&f, QOD_TBL_SESSIONS, "s1", &c), QOD_OK);
    key_list l;
    QT_EQ_INT(scan(&f, QOD_TBL_SESSIONS, NULL, 0, &l), QOD_OK);
    fixture_close(&f);
    QT_EQ_STR(c.owner, "app-2");
    QT_EQ_STR(c.idx, "dev-2");
    QT_EQ_INT(c.state, 5);
    QT_EQ_INT(c.num, 6);
    QT_EQ_STR(c.doc, "{\"v\":2}");
    QT_EQ_INT(l.n, 1);
}

QTEST(update_changes_state_num_doc_only)
{
    fixture f;
    QT_EQ_INT(fixture_open(&f), 0);
    qod_store_batch *b = qod_store_batch_new();
    qod_store_batch_put(b, QOD_TBL_SESSIONS, "s1", "app-1", "dev-1", 1, 10, "{\"v\":1}");
    QT_EQ_INT(qod_store_commit(f.st, b), QOD_OK);
    b = qod_store_batch_new();
    QT_EQ_INT(qod_store_batch_update(b, QOD_TBL_SESSIONS, "s1", 2, 20, "{\"v\":2}"), QOD_OK);
    QT_EQ_INT(qod_store_batch_update(b, QOD_TBL_SESSIONS, "absent", 3, 30, "{}"), QOD_OK);
    QT_EQ_INT(qod_store_commit(f.st, b), QOD_OK);
    row_copy c, absent;
    QT_EQ_INT(get(&f, QOD_TBL_SESSIONS, "s1", &c), QOD_OK);
    int absent_rc = get(&f, QOD_TBL_SESSIONS, "absent", &absent);
    fixture_close(&f);
    QT_EQ_STR(c.owner, "app-1");
    QT_EQ_STR(c.idx, "dev-1");
    QT_EQ_INT(c.state, 2);
    QT_EQ_INT(c.num, 20);
    QT_EQ_STR(c.doc, "{\"v\":2}");
    QT_EQ_INT(absent_rc, QOD_ERR_NOTFOUND);
}

QTEST(scan_returns_rows_in_bytewise_key_order)
{
    fixture f;
    QT_EQ_INT(fixture_open(&f), 0);
    qod_store_batch *b = qod_store_batch_new();
    static const char *const keys[] = {"b", "a-b", "B", "a", "A1", "ab"};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
        qod_store_batch_put(b, QOD_TBL_DEVICES, keys[i], "", "", 0, 0, "{}");
    QT_EQ_INT(qod_store_commit(f.st, b), QOD_OK);
    key_list l;
    QT_EQ_INT(scan(&f, QOD_TBL_DEVICES, NULL, 0, &l), QOD_OK);
    fixture_close(&f);
    QT_EQ_STR(l.keys, "A1 B a a-b ab b");
}

QTEST(scan_with_owner_filter)
{
    fixture f;
    QT_EQ_INT(fixture_open(&f), 0);
    qod_store_batch *b = qod_store_batch_new();
    qod_store_batch_put(b, QOD_TBL_SESSIONS, "s3", "app-1", "", 0, 0, "{}");
    qod_store_batch_put(b, QOD_TBL_SESSIONS, "s1", "app-2", "", 0, 0, "{}");
    qod_store_batch_put(b, QOD_TBL_SESSIONS, "s2", "app-1", "", 0, 0, "{}");
    qod_store_batch_put(b, QOD_TBL_SESSIONS, "s4", "app-10", "", 0, 0, "{}");
    QT_EQ_INT(qod_store_commit(f.st, b), QOD_OK);
    key_list one, none, empty_owner;
    QT_EQ_INT(scan(&f, QOD_TBL_SESSIONS, "app-1", 0, &one), QOD_OK);
    QT_EQ_INT(scan(&f, QOD_TBL_SESSIONS, "app-3", 0, &none), QOD_OK);
    QT_EQ_INT(scan(&f, QOD_TBL_SESSIONS, "", 0, &empty_owner), QOD_OK);
    fixture_close(&f);
    QT_EQ_STR(one.keys, "s2 s3");
    QT_EQ_INT(none.n, 0);
    QT_EQ_INT(empty_owner.n, 0);
}

QTEST(scan_stops_when_callback_says_so_and_reads_go_on)
{
    fixture f;
    QT_EQ_INT(fixture_open(&f), 0);
    qod_store_batch *b = qod_store_batch_new();
    for (int i = 0; i < 50; i++) {
        char key[16];
        snprintf(key, sizeof key, "k%02d", i);
        qod_store_batch_put(b, QOD_TBL_APPS, key, "", "", 0, 0, "{}");
    }
    QT_EQ_INT(qod_store_commit(f.st, b), QOD_OK);
    key_list l;
    QT_EQ_INT(scan(&f, QOD_TBL_APPS, NULL, 2, &l), QOD_OK);
    row_copy c;
    int after = get(&f, QOD_TBL_APPS, "k49", &c);
    fixture_close(&f);
    QT_EQ_STR(l.keys, "k00 k01");
    QT_EQ_INT(after, QOD_OK);
}

QTEST(insert_new_key_ok)
{
    fixture f;
    QT_EQ_INT(fixture_open(&f), 0);
    qod_store_batch *b = qod_store_batch_new();
    QT_EQ_INT(qod_store_batch_insert(b, QOD_TBL_IDEMPOTENCY, "idem-1", "app-1", "s", 0, 99, "{\"r\":1}"), QOD_OK);
    QT_EQ_INT(qod_store_commit(f.st, b), QOD_OK);
    row_copy c;
    QT_EQ_INT(get(&f, QOD_TBL_IDEMPOTENCY, "idem-1", &c), QOD_OK);
    fixture_close(&f);
    QT_EQ_INT(c.num, 99);
    QT_EQ_STR(c.idx, "s");
}

QTEST(insert_existing_key_fails_whole_batch)
{
    fixture f;
    QT_EQ_INT(fixture_open(&f), 0);
    QT_EQ_INT(put1(&f, QOD_TBL_SESSIONS, "taken", "app-1", "{\"v\":1}"), QOD_OK);
    qod_store_batch *b = qod_store_batch_new();
    qod_store_batch_put(b, QOD_TBL_SESSIONS, "before", "app-2", "", 0, 0, "{}");
    qod_store_batch_event(b, "wh-lost", "before", "app-2", 1, "{}");
    qod_store_batch_insert(b, QOD_TBL_SESSIONS, "taken", "app-2", "", 0, 0, "{\"v\":2}");
    qod_store_batch_put(b, QOD_TBL_DEVICES, "after", "app-2", "", 0, 0, "{}");
    QT_EQ_INT(qod_store_commit(f.st, b), QOD_ERR_EXISTS);
    row_copy before, after, taken;
    event_list e;
    int before_rc = get(&f, QOD_TBL_SESSIONS, "before", &before);
    int after_rc = get(&f, QOD_TBL_DEVICES, "after", &after);
    int taken_rc = get(&f, QOD_TBL_SESSIONS, "taken", &taken);
    int ev_rc = events(&f, -1, 0, 0, &e);
    fixture_close(&f);
    QT_EQ_INT(before_rc, QOD_ERR_NOTFOUND);
    QT_EQ_INT(after_rc, QOD_ERR_NOTFOUND);
    QT_EQ_INT(taken_rc, QOD_OK);
    QT_EQ_STR(taken.owner, "app-1");
    QT_EQ_STR(taken.doc, "{\"v\":1}");
    QT_EQ_INT(ev_rc, QOD_OK);
    QT_EQ_INT(e.n, 0);
}

QTEST(insert_twice_in_one_batch_fails)
{
    fixture f;
    QT_EQ_INT(fixture_open(&f), 0);
    qod_store_batch *b = qod_store_batch_new();
    qod_store_batch_insert(b, QOD_TBL_SESSIONS, "dup", "", "", 0, 0, "{}");
    qod_store_batch_insert(b, QOD_TBL_SESSIONS, "dup", "", "", 0, 0, "{}");
    QT_EQ_INT(qod_store_commit(f.st, b), QOD_ERR_EXISTS);
    row_copy c;
    int rc = get(&f, QOD_TBL_SESSIONS, "dup", &c);
    fixture_close(&f);
    QT_EQ_INT(rc, QOD_ERR_NOTFOUND);
}

QTEST(failed_batch_does_not_take_down_its_group)
{
    enum { PAIRS = 8 };
    fixture f;
    QT_EQ_INT(fixture_open(&f), 0);
    QT_EQ_INT(put1(&f, QOD_TBL_SESSIONS, "taken", "app-1", "{}"), QOD_OK);
    tracker t;
    tracker_init(&t);
    static slot losers[PAIRS], winners[PAIRS];
    /* Submitted back to back, so that losers and winners share group commits. */
    for (int i = 0; i < PAIRS; i++) {
        char key[32];
        losers[i] = (slot){.t = &t, .rc = 1};
        winners[i] = (slot){.t = &t, .rc = 1};
        qod_store_batch *lose = qod_store_batch_new(), *win = qod_store_batch_new();
        snprintf(key, sizeof key, "lost-%d", i);
        qod_store_batch_put(lose, QOD_TBL_DEVICES, key, "", "", 0, 0, "{}");
        qod_store_batch_insert(lose, QOD_TBL_SESSIONS, "taken", "app-2", "", 0, 0, "{}");
        snprintf(key, sizeof key, "won-%d", i);
        qod_store_batch_insert(win, QOD_TBL_SESSIONS, key, "app-3", "", 0, 0, "{}");
        qod_store_batch_event(win, key, key, "app-3", i, "{}");
        QT_EQ_INT(qod_store_submit(f.st, lose, on_done, &losers[i]), QOD_OK);
        QT_EQ_INT(qod_store_submit(f.st, win, on_done, &winners[i]), QOD_OK);
    }
    QT_EQ_INT(tracker_wait(&t, 2 * PAIRS), 2 * PAIRS);
    key_list devices, won;
    event_list e;
    QT_EQ_INT(scan(&f, QOD_TBL_DEVICES, NULL, 0, &devices), QOD_OK);
    QT_EQ_INT(scan(&f, QOD_TBL_SESSIONS, "app-3", 0, &won), QOD_OK);
    QT_EQ_INT(events(&f, 0, 0, 0, &e), QOD_OK);
    fixture_close(&f);
    tracker_dispose(&t);
    for (int i = 0; i < PAIRS; i++) {
        QT_EQ_INT(losers[i].rc, QOD_ERR_EXISTS);
        QT_EQ_INT(winners[i].rc, QOD_OK);
        QT_EQ_INT(atomic_load(&losers[i].calls), 1);
        QT_EQ_INT(atomic_load(&winners[i].calls), 1);
    }
    QT_EQ_INT(devices.n, 0);
    QT_EQ_INT(won.n, PAIRS);
    QT_EQ_STR(e.ids, "won-0 won-1 won-2 won-3 won-4 won-5 won-6 won-7");
}

/* Event ids in seq order must be w-00000, w-00001, … without gaps other than `skip`. */
typedef struct {
    int next, skip, bad;
} id_order;

static int check_order(void *arg, const qod_store_event *e)
{
    id_order *o = arg;
    if (o->next == o->skip)
        o->next++;
    char want[16];
    snprintf(want, sizeof want, "w-%05d", o->next++);
    o->bad += strcmp(e->id, want) != 0;
    return 0;
}

QTEST(large_group_with_a_late_failure_keeps_the_rest_in_order)
{
    /* Thousands of statements, so that a PostgreSQL group spans several pipeline segments, with one failing batch
     * near the end: only it fails, and the events of the others keep submission order. */
    enum { N = 1500, LOSER = 1300 };
    fixture f;
    QT_EQ_INT(fixture_open(&f), 0);
    QT_EQ_INT(put1(&f, QOD_TBL_SESSIONS, "taken", "app-1", "{}"), QOD_OK);
    tracker t;
    tracker_init(&t);
    static slot slots[N];
    for (int i = 0; i < N; i++) {
        char key[16];
        snprintf(key, sizeof key, "w-%05d", i);
        slots[i] = (slot){.t = &t, .rc = 1};
        qod_store_batch *b = qod_store_batch_new();
        qod_store_batch_insert(b, QOD_TBL_SESSIONS, i == LOSER ? "taken" : key, "app-2", "", 0, 0, "{}");
        qod_store_batch_event(b, key, key, "app-2", i, "{}");
        QT_EQ_INT(qod_store_submit(f.st, b, on_done, &slots[i]), QOD_OK);
    }
    QT_EQ_INT(tracker_wait(&t, N), N);
    key_list won = {.stop_after = 0};
    id_order order = {.next = 0, .skip = LOSER, .bad = 0};
    QT_EQ_INT(scan(&f, QOD_TBL_SESSIONS, "app-2", 0, &won), QOD_OK);
    QT_EQ_INT(qod_store_scan_events(f.st, 0, 0, 0, check_order, &order), QOD_OK);
    fixture_close(&f);
    tracker_dispose(&t);
    int ok = 0, lost = 0;
    for (int i = 0; i < N; i++) {
        ok += slots[i].rc == QOD_OK;
        lost += slots[i].rc == QOD_ERR_EXISTS;
        QT_EQ_INT(atomic_load(&slots[i].calls), 1);
    }
    QT_EQ_INT(slots[LOSER].rc, QOD_ERR_EXISTS);
    QT_EQ_INT(ok, N - 1);
    QT_EQ_INT(lost, 1);
    QT_EQ_INT(won.n, N - 1);
    QT_EQ_INT(order.next, N);
    QT_EQ_INT(order.bad, 0);
}

QTEST(delete_removes_row_and_absent_is_ok)
{
    fixture f;
    QT_EQ_INT(fixture_open(&f), 0);
    QT_EQ_INT(put1(&f, QOD_TBL_APPS, "gone", "", "{}"), QOD_OK);
    QT_EQ_INT(put1(&f, QOD_TBL_APPS, "kept", "", "{}"), QOD_OK);
    qod_store_batch *b = qod_store_batch_new();
    QT_EQ_INT(qod_store_batch_del(b, QOD_TBL_APPS, "gone"), QOD_OK);
    QT_EQ_INT(qod_store_batch_del(b, QOD_TBL_APPS, "never-was"), QOD_OK);
    QT_EQ_INT(qod_store_commit(f.st, b), QOD_OK);
    key_list l;
    QT_EQ_INT(scan(&f, QOD_TBL_APPS, NULL, 0, &l), QOD_OK);
    fixture_close(&f);
    QT_EQ_STR(l.keys, "kept");
}

QTEST(delete_then_insert_in_one_batch)
{
    fixture f;
    QT_EQ_INT(fixture_open(&f), 0);
    QT_EQ_INT(put1(&f, QOD_TBL_SESSIONS, "k", "old", "{}"), QOD_OK);
    qod_store_batch *b = qod_store_batch_new();
    qod_store_batch_del(b, QOD_TBL_SESSIONS, "k");
    qod_store_batch_insert(b, QOD_TBL_SESSIONS, "k", "new", "", 0, 0, "{}");
    QT_EQ_INT(qod_store_commit(f.st, b), QOD_OK);
    row_copy c;
    QT_EQ_INT(get(&f, QOD_TBL_SESSIONS, "k", &c), QOD_OK);
    fixture_close(&f);
    QT_EQ_STR(c.owner, "new");
}

QTEST(commit_empty_batch_ok)
{
    fixture f;
    QT_EQ_INT(fixture_open(&f), 0);
    int rc = qod_store_commit(f.st, qod_store_batch_new());
    fixture_close(&f);
    QT_EQ_INT(rc, QOD_OK);
}

QTEST(events_scan_in_seq_order_with_every_field)
{
    fixture f;
    QT_EQ_INT(fixture_open(&f), 0);
    QT_EQ_INT(add_events(&f), QOD_OK);
    event_list e;
    QT_EQ_INT(events(&f, 0, 0, 0, &e), QOD_OK);
    fixture_close(&f);
    QT_EQ_STR(e.ids, "wh-1 wh-2 wh-3");
    QT_TRUE(e.ev[0].seq > 0);
    QT_TRUE(e.ev[1].seq > e.ev[0].seq);
    QT_TRUE(e.ev[2].seq > e.ev[1].seq);
    QT_EQ_STR(e.session[1], "s1");
    QT_EQ_STR(e.owner[1], "app-1");
    QT_EQ_STR(e.doc[1], "{\"n\":2}");
    QT_EQ_INT(e.ev[1].created_ms, 2000);
    QT_EQ_INT(e.ev[1].state, 0);
    QT_EQ_INT(e.ev[1].attempts, 0);
    QT_EQ_INT(e.ev[1].next_ms, 2000);
}

QTEST(events_scan_limit_and_after_seq)
{
    fixture f;
    QT_EQ_INT(fixture_open(&f), 0);
    QT_EQ_INT(add_events(&f), QOD_OK);
    event_list two, rest, none;
    QT_EQ_INT(events(&f, 0, 0, 2, &two), QOD_OK);
    QT_EQ_INT(events(&f, 0, two.ev[0].seq, 5, &rest), QOD_OK);
    QT_EQ_INT(events(&f, 0, two.ev[1].seq + 1000, 0, &none), QOD_OK);
    fixture_close(&f);
    QT_EQ_STR(two.ids, "wh-1 wh-2");
    QT_EQ_STR(rest.ids, "wh-2 wh-3");
    QT_EQ_INT(none.n, 0);
}

QTEST(event_with_a_stored_id_is_left_alone)
{
    fixture f;
    QT_EQ_INT(fixture_open(&f), 0);
    QT_EQ_INT(add_events(&f), QOD_OK);
    event_list before;
    QT_EQ_INT(events(&f, 0, 0, 0, &before), QOD_OK);
    QT_EQ_INT(event_state(&f, before.ev[0].seq, 1), QOD_OK);
    qod_store_batch *b = qod_store_batch_new();
    qod_store_batch_event(b, "wh-1", "s9", "app-9", 9000, "{\"retry\":1}");
    qod_store_batch_event(b, "wh-4", "s3", "app-3", 4000, "{}");
    qod_store_batch_event(b, "wh-4", "s3", "app-3", 4001, "{\"again\":1}");
    QT_EQ_INT(qod_store_commit(f.st, b), QOD_OK);
    event_list after;
    QT_EQ_INT(events(&f, -1, 0, 0, &after), QOD_OK);
    fixture_close(&f);
    QT_EQ_STR(after.ids, "wh-1 wh-2 wh-3 wh-4");
    QT_EQ_INT(after.ev[0].seq, before.ev[0].seq);
    QT_EQ_INT(after.ev[0].state, 1);
    QT_EQ_STR(after.session[0], "s1");
    QT_EQ_STR(after.doc[0], "{\"n\":1}");
    QT_EQ_INT(after.ev[3].created_ms, 4000);
    QT_EQ_STR(after.doc[3], "{}");
}

QTEST(event_state_moves_event)
{
    fixture f;
    QT_EQ_INT(fixture_open(&f), 0);
    QT_EQ_INT(add_events(&f), QOD_OK);
    event_list e;
    QT_EQ_INT(events(&f, 0, 0, 0, &e), QOD_OK);
    int64_t seq = e.ev[1].seq;
    qod_store_batch *b = qod_store_batch_new();
    QT_EQ_INT(qod_store_batch_event_state(b, seq, 1, 2, 5000), QOD_OK);
    QT_EQ_INT(qod_store_batch_event_state(b, seq + 1000, 1, 2, 5000), QOD_OK);
    QT_EQ_INT(qod_store_commit(f.st, b), QOD_OK);
    event_list pending, delivered;
    QT_EQ_INT(events(&f, 0, 0, 0, &pending), QOD_OK);
    QT_EQ_INT(events(&f, 1, 0, 0, &delivered), QOD_OK);
    fixture_close(&f);
    QT_EQ_STR(pending.ids, "wh-1 wh-3");
    QT_EQ_STR(delivered.ids, "wh-2");
    QT_EQ_INT(delivered.ev[0].seq, seq);
    QT_EQ_INT(delivered.ev[0].attempts, 2);
    QT_EQ_INT(delivered.ev[0].next_ms, 5000);
}

QTEST(unsent_event_is_stored_delivered_in_seq_order)
{
    fixture f;
    QT_EQ_INT(fixture_open(&f), 0);
    QT_EQ_INT(add_events(&f), QOD_OK);
    qod_store_batch *b = qod_store_batch_new();
    QT_EQ_INT(qod_store_batch_event_unsent(b, "wh-4", "s3", "app-1", 4000, "{\"n\":4}"), QOD_OK);
    QT_EQ_INT(qod_store_commit(f.st, b), QOD_OK);
    event_list pending, delivered, all;
    QT_EQ_INT(events(&f, 0, 0, 0, &pending), QOD_OK);
    QT_EQ_INT(events(&f, 1, 0, 0, &delivered), QOD_OK);
    QT_EQ_INT(events(&f, -1, 0, 0, &all), QOD_OK);
    fixture_close(&f);
    QT_EQ_STR(pending.ids, "wh-1 wh-2 wh-3");
    QT_EQ_STR(delivered.ids, "wh-4");
    QT_EQ_STR(all.ids, "wh-1 wh-2 wh-3 wh-4");
    QT_EQ_INT(delivered.ev[0].attempts, 0);
    QT_EQ_INT(delivered.ev[0].created_ms, 4000);
    QT_EQ_STR(delivered.session[0], "s3");
}

QTEST(event_del_session_removes_only_delivered_events)
{
    fixture f;
    QT_EQ_INT(fixture_open(&f), 0);
    QT_EQ_INT(add_events(&f), QOD_OK);
    qod_store_batch *b = qod_store_batch_new();
    qod_store_batch_event(b, "wh-4", "s1", "app-1", 4000, "{}");
    QT_EQ_INT(qod_store_commit(f.st, b), QOD_OK);
    event_list e;
    QT_EQ_INT(events(&f, 0, 0, 0, &e), QOD_OK);
    /* s1: wh-1 delivered, wh-2 dead, wh-4 pending; s2: wh-3 delivered. */
    QT_EQ_INT(event_state(&f, e.ev[0].seq, 1), QOD_OK);
    QT_EQ_INT(event_state(&f, e.ev[1].seq, 2), QOD_OK);
    QT_EQ_INT(event_state(&f, e.ev[2].seq, 1), QOD_OK);
    b = qod_store_batch_new();
    QT_EQ_INT(qod_store_batch_event_del_session(b, "s1"), QOD_OK);
    QT_EQ_INT(qod_store_commit(f.st, b), QOD_OK);
    event_list left;
    QT_EQ_INT(events(&f, -1, 0, 0, &left), QOD_OK);
    fixture_close(&f);
    QT_EQ_STR(left.ids, "wh-2 wh-3 wh-4");
}

QTEST(event_requeue_replays_the_session_from_seq)
{
    fixture f;
    QT_EQ_INT(fixture_open(&f), 0);
    QT_EQ_INT(add_events(&f), QOD_OK);
    event_list e;
    QT_EQ_INT(events(&f, 0, 0, 0, &e), QOD_OK);
    int64_t s1 = e.ev[0].seq, s2 = e.ev[1].seq, s3 = e.ev[2].seq;
    qod_store_batch *b = qod_store_batch_new();
    qod_store_batch_event_state(b, s1, 1, 3, 0);
    qod_store_batch_event_state(b, s2, 2, 8, 0);
    qod_store_batch_event_state(b, s3, 2, 8, 0);
    QT_EQ_INT(qod_store_commit(f.st, b), QOD_OK);
    b = qod_store_batch_new();
    QT_EQ_INT(qod_store_batch_event_requeue(b, "s1", s2, 777), QOD_OK);
    QT_EQ_INT(qod_store_commit(f.st, b), QOD_OK);
    event_list pending, any;
    QT_EQ_INT(events(&f, 0, 0, 0, &pending), QOD_OK);
    QT_EQ_INT(events(&f, -1, 0, 0, &any), QOD_OK);
    fixture_close(&f);
    QT_EQ_STR(pending.ids, "wh-2");
    QT_EQ_INT(pending.ev[0].seq, s2);
    QT_EQ_INT(pending.ev[0].attempts, 0);
    QT_EQ_INT(pending.ev[0].next_ms, 777);
    QT_EQ_INT(any.ev[0].state, 1);
    QT_EQ_INT(any.ev[0].attempts, 3);
    QT_EQ_INT(any.ev[2].state, 2);
}

QTEST(event_seq_keeps_increasing_after_delete)
{
    fixture f;
    QT_EQ_INT(fixture_open(&f), 0);
    QT_EQ_INT(add_events(&f), QOD_OK);
    event_list e;
    QT_EQ_INT(events(&f, 0, 0, 0, &e), QOD_OK);
    int64_t last = e.ev[2].seq;
    qod_store_batch *b = qod_store_batch_new();
    qod_store_batch_event_state(b, last, 1, 1, 0);
    qod_store_batch_event_del_session(b, "s2");
    QT_EQ_INT(qod_store_commit(f.st, b), QOD_OK);
    b = qod_store_batch_new();
    qod_store_batch_event(b, "wh-4", "s3", "app-3", 4000, "{}");
    QT_EQ_INT(qod_store_commit(f.st, b), QOD_OK);
    QT_EQ_INT(events(&f, 0, 0, 0, &e), QOD_OK);
    fixture_close(&f);
    QT_EQ_STR(e.ids, "wh-1 wh-2 wh-4");
    QT_TRUE(e.ev[2].seq > last);
}

static int count_event(void *arg, const qod_store_event *e)
{
    (void)e;
    (*(int *)arg)++;
    return 0;
}

/* Stores `others + n` delivered events, one per session, then in one batch purges the last n sessions' delivered
 * events, or requeues them (requeue). Returns the seconds that commit took, or -1 when a step failed or the wrong
 * events were touched. */
static double session_ops_seconds(int others, int n, bool requeue)
{
    fixture f;
    if (fixture_open(&f) != 0)
        return -1;
    char id[32], sess[32];
    qod_store_batch *b = qod_store_batch_new();
    for (int i = 0; i < others + n; i++) {
        snprintf(id, sizeof id, "wh-%d", i);
        snprintf(sess, sizeof sess, "s-%d", i);
        qod_store_batch_event_unsent(b, id, sess, "app-1", 1000 + i, "{}");
    }
    int rc = qod_store_commit(f.st, b);
    b = qod_store_batch_new();
    for (int i = others; i < others + n; i++) {
        snprintf(sess, sizeof sess, "s-%d", i);
        if (requeue)
            qod_store_batch_event_requeue(b, sess, 0, 5000);
        else
            qod_store_batch_event_del_session(b, sess);
    }
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    rc = rc ? rc : qod_store_commit(f.st, b);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    int delivered = 0, pending = 0;
    rc = rc ? rc : qod_store_scan_events(f.st, 1, 0, 0, count_event, &delivered);
    rc = rc ? rc : qod_store_scan_events(f.st, 0, 0, 0, count_event, &pending);
    fixture_close(&f);
    if (rc != QOD_OK || delivered != others || pending != (requeue ? n : 0))
        return -1;
    return (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
}

/* Times `n` purges (or requeues) alone and beside 50 times as many other sessions' delivered events, and returns
 * whether the second took less than 10 times the first plus 0.3 s. Walking every event would take about 50 times as
 * long; finding the session's own through its index, hardly longer. A commit that a loaded machine holds up (an
 * fsync, say) can fail one round, so a failing round is measured once more and the better of the two counts. */
static bool session_ops_stay_local(bool requeue, double *big, double *small)
{
    const int n = 1000;
    *big = *small = 1e9;
    for (int round = 0; round < 2; round++) {
        double s = session_ops_seconds(0, n, requeue);
        double b = session_ops_seconds(50 * n, n, requeue);
        if (s < 0 || b < 0)
            return false;
        *small = s < *small ? s : *small;
        *big = b < *big ? b : *big;
        if (*big < 10 * *small + 0.3)
            return true;
    }
    return false;
}

/* A purge finds the session's delivered events through the session index. SQLite's planner chose the state index for
 * `session=? AND state=1`, so every purge walked every delivered event of every session still kept: with a
 * few hundred thousand of them the writer stalled for tens of seconds, and every create and delete waited. */
QTEST(session_purge_does_not_walk_other_sessions_events)
{
    double big, small;
    if (!session_ops_stay_local(false, &big, &small))
        QT_FAIL_("1,000 purges: %.3f s beside 50,000 other delivered events, %.3f s alone", big, small);
}

/* The same for a requeue (`qodctl deliveries retry`, a session that comes back to this node): found by session, not
 * by walking the events after a sequence number. */
QTEST(session_requeue_does_not_walk_other_sessions_events)
{
    double big, small;
    if (!session_ops_stay_local(true, &big, &small))
        QT_FAIL_("1,000 requeues: %.3f s beside 50,000 other delivered events, %.3f s alone", big, small);
}

/* The implementation's savepoints, driven directly as store.c drives them around each batch. */
QTEST(savepoint_rollback_undoes_only_its_batch)
{
    fixture f;
    QT_EQ_INT(fixture_open(&f), 0);
    qod_store_close(f.st);
    f.st = NULL;
    const qod_store_impl *impl = under_test == BK_PG ? &qod_store_postgres : &qod_store_sqlite;
    qod_store_opts o = {.uri = fixture_uri(&f), .sync_full = false};
    void *h = NULL;
    QT_EQ_INT(impl->open(&o, &h), QOD_OK);
    qod_store_op kept = {.kind = QOD_OP_PUT, .table = QOD_TBL_APPS, .key = "kept", .owner = "", .idx = "", .doc = "{}"};
    qod_store_op undone = kept, ev1 = kept, ev2 = kept;
    undone.key = "undone";
    ev1 = (qod_store_op){
        .kind = QOD_OP_EVENT, .table = QOD_TBL_COUNT, .key = "ev-undone", .owner = "o", .idx = "s", .doc = "{}"};
    ev2 = ev1;
    ev2.key = "ev-kept";
    int rc[12];
    int n = 0;
    rc[n++] = impl->begin(h);
    rc[n++] = impl->savepoint(h, 0);
    rc[n++] = impl->apply(h, &kept);
    rc[n++] = impl->savepoint(h, 1);
    rc[n++] = impl->savepoint(h, 0);
    rc[n++] = impl->apply(h, &undone);
    rc[n++] = impl->apply(h, &ev1);
    rc[n++] = impl->savepoint(h, -1);
    rc[n++] = impl->savepoint(h, 0);
    rc[n++] = impl->apply(h, &ev2);
    rc[n++] = impl->savepoint(h, 1);
    rc[n++] = impl->commit(h);
    row_copy k = {0}, u = {0};
    event_list e = {0};
    int k_rc = impl->get(h, QOD_TBL_APPS, "kept", copy_row, &k);
    int u_rc = impl->get(h, QOD_TBL_APPS, "undone", copy_row, &u);
    int e_rc = impl->scan_events(h, -1, 0, 0, list_event, &e);
    impl->close(h);
    fixture_close(&f);
    for (int i = 0; i < n; i++)
        QT_EQ_INT(rc[i], QOD_OK);
    QT_EQ_INT(k_rc, QOD_OK);
    QT_EQ_INT(u_rc, QOD_ERR_NOTFOUND);
    QT_EQ_INT(e_rc, QOD_OK);
    QT_EQ_STR(e.ids, "ev-kept");
}

QTEST(rollback_discards_the_transaction)
{
    fixture f;
    QT_EQ_INT(fixture_open(&f), 0);
    qod_store_close(f.st);
    f.st = NULL;
    const qod_store_impl *impl = under_test == BK_PG ? &qod_store_postgres : &qod_store_sqlite;
    qod_store_opts o = {.uri = fixture_uri(&f), .sync_full = false};
    void *h = NULL;
    QT_EQ_INT(impl->open(&o, &h), QOD_OK);
    qod_store_op op = {.kind = QOD_OP_PUT, .table = QOD_TBL_META, .key = "m", .owner = "", .idx = "", .doc = "{}"};
    int begin_rc = impl->begin(h), apply_rc = impl->apply(h, &op);
    impl->rollback(h);
    row_copy c;
    int get_rc = impl->get(h, QOD_TBL_META, "m", copy_row, &c);
    int again = impl->begin(h);
    impl->rollback(h);
    impl->close(h);
    fixture_close(&f);
    QT_EQ_INT(begin_rc, QOD_OK);
    QT_EQ_INT(apply_rc, QOD_OK);
    QT_EQ_INT(get_rc, QOD_ERR_NOTFOUND);
    QT_EQ_INT(again, QOD_OK);
}

/* Four threads each submit PER_THREAD one-row batches while a fifth reads; every callback runs exactly once. */
enum { THREADS = 4, PER_THREAD = 150 };

typedef struct {
    qod_store *st;
    int thread;
    slot *slots;
    atomic_int *fails;
} submitter;

static void *submit_many(void *arg)
{
    submitter *s = arg;
    for (int i = 0; i < PER_THREAD; i++) {
        char key[32];
        snprintf(key, sizeof key, "t%d-%04d", s->thread, i);
        qod_store_batch *b = qod_store_batch_new();
        if (!b || qod_store_batch_put(b, QOD_TBL_SESSIONS, key, "app-1", "", i, i, "{}") != QOD_OK ||
            qod_store_submit(s->st, b, on_done, &s->slots[s->thread * PER_THREAD + i]) != QOD_OK)
            atomic_fetch_add(s->fails, 1);
    }
    return NULL;
}

static int count_row(void *arg, const qod_store_row *r)
{
    (void)r;
    (*(int *)arg)++;
    return 0;
}

static void *read_many(void *arg)
{
    submitter *s = arg;
    for (int i = 0; i < 40; i++) {
        int n = 0;
        if (qod_store_scan(s->st, QOD_TBL_SESSIONS, "app-1", count_row, &n) != QOD_OK)
            atomic_fetch_add(s->fails, 1);
    }
    return NULL;
}

QTEST(many_async_submits_complete_exactly_once)
{
    fixture f;
    QT_EQ_INT(fixture_open(&f), 0);
    tracker t;
    tracker_init(&t);
    static slot slots[THREADS * PER_THREAD];
    for (int i = 0; i < THREADS * PER_THREAD; i++)
        slots[i] = (slot){.t = &t, .rc = 1};
    atomic_int fails = 0;
    pthread_t th[THREADS + 1];
    submitter sub[THREADS + 1];
    for (int i = 0; i <= THREADS; i++) {
        sub[i] = (submitter){.st = f.st, .thread = i, .slots = slots, .fails = &fails};
        QT_EQ_INT(pthread_create(&th[i], NULL, i < THREADS ? submit_many : read_many, &sub[i]), 0);
    }
    for (int i = 0; i <= THREADS; i++)
        pthread_join(th[i], NULL);
    QT_EQ_INT(tracker_wait(&t, THREADS * PER_THREAD), THREADS * PER_THREAD);
    int rows = 0;
    QT_EQ_INT(qod_store_scan(f.st, QOD_TBL_SESSIONS, "app-1", count_row, &rows), QOD_OK);
    fixture_close(&f);
    int bad = 0;
    for (int i = 0; i < THREADS * PER_THREAD; i++)
        bad += atomic_load(&slots[i].calls) != 1 || slots[i].rc != QOD_OK;
    QT_EQ_INT(atomic_load(&fails), 0);
    QT_EQ_INT(bad, 0);
    QT_EQ_INT(rows, THREADS * PER_THREAD);
    /* Closing runs no callback a second time. */
    QT_EQ_INT(t.done, THREADS * PER_THREAD);
    tracker_dispose(&t);
}

QTEST(close_drains_queued_batches_and_data_survives_reopen)
{
    enum { N = 100 };
    fixture f;
    QT_EQ_INT(fixture_open(&f), 0);
    tracker t;
    tracker_init(&t);
    static slot slots[N];
    for (int i = 0; i < N; i++) {
        char key[32];
        slots[i] = (slot){.t = &t, .rc = 1};
        snprintf(key, sizeof key, "q%03d", i);
        qod_store_batch *b = qod_store_batch_new();
        qod_store_batch_put(b, QOD_TBL_DEVICES, key, "", "", 0, i, "{}");
        if (i == N - 1)
            qod_store_batch_event(b, "wh-last", "s", "app", 5, "{}");
        QT_EQ_INT(qod_store_submit(f.st, b, on_done, &slots[i]), QOD_OK);
    }
    qod_store_close(f.st);
    f.st = NULL;
    int done = t.done, bad = 0;
    for (int i = 0; i < N; i++)
        bad += atomic_load(&slots[i].calls) != 1 || slots[i].rc != QOD_OK;
    QT_EQ_INT(fixture_reopen(&f, false), QOD_OK);
    key_list l;
    row_copy c;
    event_list e;
    QT_EQ_INT(scan(&f, QOD_TBL_DEVICES, NULL, 0, &l), QOD_OK);
    QT_EQ_INT(get(&f, QOD_TBL_DEVICES, "q099", &c), QOD_OK);
    QT_EQ_INT(events(&f, 0, 0, 0, &e), QOD_OK);
    fixture_close(&f);
    tracker_dispose(&t);
    QT_EQ_INT(done, N);
    QT_EQ_INT(bad, 0);
    QT_EQ_INT(l.n, N);
    QT_EQ_INT(c.num, 99);
    QT_EQ_STR(e.ids, "wh-last");
}

/* Commits one batch: an optional cap, then the insert of session key for owner with the given state. */
static int capped_insert(fixture *f, const char *cap_owner, int64_t state_below, int64_t max, const char *key,
                         const char *owner, int64_t state)
{
    qod_store_batch *b = qod_store_batch_new();
    int rc = cap_owner ? qod_store_batch_cap(b, QOD_TBL_SESSIONS, cap_owner, state_below, max) : QOD_OK;
    rc = rc ? rc : qod_store_batch_insert(b, QOD_TBL_SESSIONS, key, owner, "", state, 0, "{}");
    return rc == QOD_OK ? qod_store_commit(f->st, b) : (qod_store_batch_free(b), rc);
}

QTEST(cap_counts_only_the_owners_rows_below_the_state)
{
    fixture f;
    QT_EQ_INT(fixture_open(&f), 0);
    /* app-1 has two sessions below state 20 (0 and 10) and one at 20; app-2 has one; devices has three of app-1. */
    QT_EQ_INT(capped_insert(&f, NULL, 0, 0, "a1", "app-1", 0), QOD_OK);
    QT_EQ_INT(capped_insert(&f, NULL, 0, 0, "a2", "app-1", 10), QOD_OK);
    QT_EQ_INT(capped_insert(&f, NULL, 0, 0, "a3", "app-1", 20), QOD_OK);
    QT_EQ_INT(capped_insert(&f, NULL, 0, 0, "b1", "app-2", 0), QOD_OK);
    qod_store_batch *b = qod_store_batch_new();
    for (int i = 0; i < 3; i++) {
        char key[16];
        snprintf(key, sizeof key, "d%d", i);
        qod_store_batch_put(b, QOD_TBL_DEVICES, key, "app-1", "", 0, 0, "{}");
    }
    QT_EQ_INT(qod_store_commit(f.st, b), QOD_OK);
    int rc[6];
    rc[0] = capped_insert(&f, "app-1", 20, 2, "full", "app-1", 0);  /* 2 of 2: refused */
    rc[1] = capped_insert(&f, "app-1", 20, 3, "fits", "app-1", 0);  /* 2 of 3: now 3 */
    rc[2] = capped_insert(&f, "app-1", 20, 3, "full2", "app-1", 0); /* 3 of 3: refused */
    rc[3] = capped_insert(&f, "app-1", 10, 3, "low", "app-1", 10);  /* state < 10: a1 and fits, 2 of 3 */
    rc[4] = capped_insert(&f, "app-2", 20, 2, "b2", "app-2", 0);    /* other owner: 1 of 2 */
    b = qod_store_batch_new();
    qod_store_batch_cap(b, QOD_TBL_DEVICES, "app-1", 20, 3); /* devices of app-1: 3 of 3 */
    qod_store_batch_put(b, QOD_TBL_DEVICES, "d9", "app-1", "", 0, 0, "{}");
    rc[5] = qod_store_commit(f.st, b);
    row_copy c;
    int full = get(&f, QOD_TBL_SESSIONS, "full", &c), full2 = get(&f, QOD_TBL_SESSIONS, "full2", &c);
    key_list app1;
    QT_EQ_INT(scan(&f, QOD_TBL_SESSIONS, "app-1", 0, &app1), QOD_OK);
    fixture_close(&f);
    QT_EQ_INT(rc[0], QOD_ERR_LIMIT);
    QT_EQ_INT(rc[1], QOD_OK);
    QT_EQ_INT(rc[2], QOD_ERR_LIMIT);
    QT_EQ_INT(rc[3], QOD_OK);
    QT_EQ_INT(rc[4], QOD_OK);
    QT_EQ_INT(rc[5], QOD_ERR_LIMIT);
    QT_EQ_INT(full, QOD_ERR_NOTFOUND);
    QT_EQ_INT(full2, QOD_ERR_NOTFOUND);
    QT_EQ_STR(app1.keys, "a1 a2 a3 fits low");
}

QTEST(failed_cap_undoes_its_batch_but_not_its_group)
{
    enum { N = 12, MAX = 8 };
    fixture f;
    QT_EQ_INT(fixture_open(&f), 0);
    tracker t;
    tracker_init(&t);
    static slot capped[N], plain[N];
    /* Submitted back to back, so that they share group commits: the capped batches count the rows the earlier
     * ones of the same transaction added, and the last N - MAX fail. */
    for (int i = 0; i < N; i++) {
        char key[32];
        capped[i] = (slot){.t = &t, .rc = 1};
        plain[i] = (slot){.t = &t, .rc = 1};
        qod_store_batch *cap = qod_store_batch_new(), *other = qod_store_batch_new();
        snprintf(key, sizeof key, "with-%02d", i);
        qod_store_batch_put(cap, QOD_TBL_DEVICES, key, "", "", 0, 0, "{}");
        qod_store_batch_cap(cap, QOD_TBL_SESSIONS, "app-3", 20, MAX);
        qod_store_batch_insert(cap, QOD_TBL_SESSIONS, key, "app-3", "", 0, 0, "{}");
        qod_store_batch_event(cap, key, key, "app-3", i, "{}");
        snprintf(key, sizeof key, "other-%02d", i);
        qod_store_batch_put(other, QOD_TBL_META, key, "", "", 0, 0, "{}");
        QT_EQ_INT(qod_store_submit(f.st, cap, on_done, &capped[i]), QOD_OK);
        QT_EQ_INT(qod_store_submit(f.st, other, on_done, &plain[i]), QOD_OK);
    }
    QT_EQ_INT(tracker_wait(&t, 2 * N), 2 * N);
    key_list devices, sessions, meta;
    event_list e;
    QT_EQ_INT(scan(&f, QOD_TBL_DEVICES, NULL, 0, &devices), QOD_OK);
    QT_EQ_INT(scan(&f, QOD_TBL_SESSIONS, NULL, 0, &sessions), QOD_OK);
    QT_EQ_INT(scan(&f, QOD_TBL_META, NULL, 0, &meta), QOD_OK);
    QT_EQ_INT(events(&f, -1, 0, 0, &e), QOD_OK);
    fixture_close(&f);
    tracker_dispose(&t);
    for (int i = 0; i < N; i++) {
        QT_EQ_INT(capped[i].rc, i < MAX ? QOD_OK : QOD_ERR_LIMIT);
        QT_EQ_INT(plain[i].rc, QOD_OK);
    }
    static const char want[] = "with-00 with-01 with-02 with-03 with-04 with-05 with-06 with-07";
    QT_EQ_STR(devices.keys, want);
    QT_EQ_STR(sessions.keys, want);
    QT_EQ_INT(e.n, MAX);
    QT_EQ_INT(meta.n, N);
}

/* Commits a batch fenced by (name, holder, epoch) that puts key into sessions; returns the commit's rc. */
static int fenced_put(fixture *f, const char *name, const char *holder, int64_t epoch, const char *key)
{
    qod_store_batch *b = qod_store_batch_new();
    qod_store_batch_fence(b, name, holder, epoch);
    qod_store_batch_put(b, QOD_TBL_SESSIONS, key, "app", "", 0, 0, "{}");
    return qod_store_commit(f->st, b);
}

QTEST(fence_is_a_no_op_on_sqlite_and_needs_a_lease_on_postgres)
{
    fixture f;
    QT_EQ_INT(fixture_open(&f), 0);
    int rc = fenced_put(&f, "shard:00", "http://nobody", 1, "k");
    fixture_close(&f);
    QT_EQ_INT(rc, under_test == BK_PG ? QOD_ERR_BUSY : QOD_OK);
}

QTEST(scan_idx_returns_the_rows_of_one_idx_in_key_order)
{
    fixture f;
    QT_EQ_INT(fixture_open(&f), 0);
    qod_store_batch *b = qod_store_batch_new();
    qod_store_batch_put(b, QOD_TBL_SESSIONS, "k3", "app-1", "dev-1", 0, 0, "{}");
    qod_store_batch_put(b, QOD_TBL_SESSIONS, "k1", "app-2", "dev-1", 30, 0, "{}");
    qod_store_batch_put(b, QOD_TBL_SESSIONS, "k2", "app-1", "dev-2", 0, 0, "{}");
    qod_store_batch_put(b, QOD_TBL_SESSIONS, "K0", "app-1", "dev-1", 20, 0, "{}");
    qod_store_batch_put(b, QOD_TBL_SESSIONS, "k4", "app-1", "dev-10", 0, 0, "{}");
    qod_store_batch_put(b, QOD_TBL_SESSIONS, "k5", "dev-1", "", 0, 0, "{}");
    qod_store_batch_put(b, QOD_TBL_DEVICES, "k6", "app-1", "dev-1", 0, 0, "{}");
    QT_EQ_INT(qod_store_commit(f.st, b), QOD_OK);
    key_list all, first, none, null_idx;
    int rc[4];
    rc[0] = scan_idx(&f, "dev-1", 0, &all);
    rc[1] = scan_idx(&f, "dev-1", 2, &first);
    rc[2] = scan_idx(&f, "dev-3", 0, &none);
    rc[3] = scan_idx(&f, NULL, 0, &null_idx);
    row_copy c;
    int after = get(&f, QOD_TBL_SESSIONS, "k4", &c);
    fixture_close(&f);
    QT_EQ_INT(rc[0], QOD_OK);
    QT_EQ_STR(all.keys, "K0 k1 k3");
    QT_EQ_INT(rc[1], QOD_OK);
    QT_EQ_STR(first.keys, "K0 k1");
    QT_EQ_INT(rc[2], QOD_OK);
    QT_EQ_INT(none.n, 0);
    QT_EQ_INT(rc[3], QOD_ERR_INVALID);
    QT_EQ_INT(null_idx.n, 0);
    QT_EQ_INT(after, QOD_OK);
}

QTEST(notify_commits_with_its_batch)
{
    fixture f;
    QT_EQ_INT(fixture_open(&f), 0);
    qod_store_batch *b = qod_store_batch_new();
    QT_EQ_INT(qod_store_batch_notify(b, "apps", "app-1"), QOD_OK);
    QT_EQ_INT(qod_store_batch_put(b, QOD_TBL_APPS, "app-1", "", "", 0, 0, "{}"), QOD_OK);
    QT_EQ_INT(qod_store_batch_len(b), 2);
    int rc = qod_store_commit(f.st, b);
    b = qod_store_batch_new();
    QT_EQ_INT(qod_store_batch_notify(b, "devices", ""), QOD_OK);
    int alone = qod_store_commit(f.st, b);
    row_copy c;
    int got = get(&f, QOD_TBL_APPS, "app-1", &c);
    fixture_close(&f);
    QT_EQ_INT(rc, QOD_OK);
    QT_EQ_INT(alone, QOD_OK);
    QT_EQ_INT(got, QOD_OK);
}

/* ==== PostgreSQL only ==== */

QTEST(postgresql_scheme_selects_postgres_too)
{
    fixture f;
    QT_EQ_INT(fixture_open(&f), 0);
    QT_EQ_INT(put1(&f, QOD_TBL_APPS, "shared", "", "{\"x\":1}"), QOD_OK);
    char uri[160];
    snprintf(uri, sizeof uri, "postgresql://%s", pgfix.uri + strlen("postgres://"));
    qod_store_opts o = {.uri = uri, .sync_full = true};
    qod_store *st = NULL;
    int rc = qod_store_open(&o, &st);
    row_copy c = {0};
    int get_rc = rc == QOD_OK ? qod_store_get(st, QOD_TBL_APPS, "shared", copy_row, &c) : rc;
    qod_store_close(st);
    fixture_close(&f);
    QT_EQ_INT(rc, QOD_OK);
    QT_EQ_INT(get_rc, QOD_OK);
    QT_EQ_STR(c.doc, "{\"x\":1}");
}

QTEST(a_path_still_selects_sqlite)
{
    char dir[64] = "/tmp/qod-pgtest-XXXXXX", db[96];
    QT_TRUE(mkdtemp(dir) != NULL);
    qod_store_opts o = {.uri = dir, .sync_full = false};
    qod_store *st = NULL;
    int rc = qod_store_open(&o, &st);
    qod_store_close(st);
    snprintf(db, sizeof db, "%s/qod.db", dir);
    int exists = access(db, F_OK) == 0;
    nftw(dir, pgfix_remove_entry, 4, FTW_DEPTH | FTW_PHYS);
    QT_EQ_INT(rc, QOD_OK);
    QT_TRUE(exists);
}

QTEST(schema_has_the_tables_and_one_version_row)
{
    fixture f;
    QT_EQ_INT(fixture_open(&f), 0);
    qod_store_close(f.st);
    QT_EQ_INT(fixture_reopen(&f, false), QOD_OK);
    fixture_close(&f);
    QT_EQ_INT(pgfix_sql_int("SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public' AND"
                            " table_name IN ('apps','devices','sessions','idempotency','meta','events','leases',"
                            "'schema_version')"),
              8);
    QT_EQ_INT(pgfix_sql_int("SELECT count(*) FROM pg_indexes WHERE indexname IN ('sessions_owner','sessions_idx',"
                            "'events_state','events_session')"),
              4);
    QT_EQ_INT(pgfix_sql_int("SELECT count(*) FROM schema_version"), 2);
}

typedef struct {
    pthread_barrier_t *go;
    qod_store *st;
    int rc;
} opener;

static void *open_at_once(void *arg)
{
    opener *o = arg;
    qod_store_opts so = {.uri = pgfix.uri, .sync_full = false};
    pthread_barrier_wait(o->go);
    o->rc = qod_store_open(&so, &o->st);
    return NULL;
}

QTEST(concurrent_opens_migrate_once)
{
    enum { N = 4 };
    qod_log_setup(QOD_LOG_OFF, QOD_LOG_TEXT);
    QT_EQ_INT(pgfix_drop_schema(), 0);
    pthread_barrier_t go;
    pthread_barrier_init(&go, NULL, N);
    opener o[N];
    pthread_t th[N];
    for (int i = 0; i < N; i++) {
        o[i] = (opener){.go = &go, .rc = 1};
        QT_EQ_INT(pthread_create(&th[i], NULL, open_at_once, &o[i]), 0);
    }
    for (int i = 0; i < N; i++)
        pthread_join(th[i], NULL);
    pthread_barrier_destroy(&go);
    int versions[N];
    for (int i = 0; i < N; i++) {
        versions[i] = o[i].rc == QOD_OK ? qod_store_schema_version(o[i].st) : o[i].rc;
        qod_store_close(o[i].st);
    }
    for (int i = 0; i < N; i++) {
        QT_EQ_INT(o[i].rc, QOD_OK);
        QT_EQ_INT(versions[i], 2);
    }
    QT_EQ_INT(pgfix_sql_int("SELECT count(*) FROM schema_version"), 2);
    /* The migration lock was let go: nothing holds an advisory lock any more. */
    QT_EQ_INT(pgfix_sql_int("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"), 0);
}

QTEST(unreachable_server_is_a_store_error)
{
    qod_log_setup(QOD_LOG_OFF, QOD_LOG_TEXT);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    QT_TRUE(fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof a) == 0);
    QT_TRUE(getsockname(fd, (struct sockaddr *)&a, &len) == 0);
    /* Bound but not listening: a connection to it is refused. */
    char uri[128];
    snprintf(uri, sizeof uri, "postgres://qod:qod@127.0.0.1:%d/qod?connect_timeout=2", ntohs(a.sin_port));
    qod_store_opts o = {.uri = uri, .sync_full = false};
    qod_store *st = (qod_store *)1;
    int rc = qod_store_open(&o, &st);
    close(fd);
    QT_EQ_INT(rc, QOD_ERR_STORE);
    QT_TRUE(st == NULL);
}

QTEST(wrong_password_is_a_store_error)
{
    qod_log_setup(QOD_LOG_OFF, QOD_LOG_TEXT);
    char uri[160];
    snprintf(uri, sizeof uri, "postgres://qod:wrong@%s", strchr(pgfix.uri, '@') + 1);
    qod_store_opts o = {.uri = uri, .sync_full = false};
    qod_store *st = (qod_store *)1;
    int rc = qod_store_open(&o, &st);
    QT_EQ_INT(rc, QOD_ERR_STORE);
    QT_TRUE(st == NULL);
}

QTEST(oversized_values_fail_their_batch)
{
    fixture f;
    QT_EQ_INT(fixture_open(&f), 0);
    static char big_key[2050], url_key[2049], big_doc[1024 * 1024 + 2];
    memset(big_key, 'k', sizeof big_key - 1);
    memset(url_key, 'u', sizeof url_key - 1);
    memset(big_doc, 'd', sizeof big_doc - 1);
    int rc[4];
    qod_store_batch *b = qod_store_batch_new();
    qod_store_batch_put(b, QOD_TBL_APPS, "first", "", "", 0, 0, "{}");
    qod_store_batch_put(b, QOD_TBL_META, big_key, "", "", 0, 0, "{}");
    rc[0] = qod_store_commit(f.st, b);
    b = qod_store_batch_new();
    qod_store_batch_event(b, "ev", "s", "o", 0, big_doc);
    rc[1] = qod_store_commit(f.st, b);
    b = qod_store_batch_new();
    qod_store_batch_put(b, QOD_TBL_SESSIONS, "s", "app", big_key, 0, 0, "{}");
    rc[2] = qod_store_commit(f.st, b);
    /* The limits themselves are fine: a 2048-byte key (a notification URL in meta) and a 1 MiB doc. */
    big_doc[sizeof big_doc - 2] = '\0';
    b = qod_store_batch_new();
    qod_store_batch_put(b, QOD_TBL_META, url_key, "gone", "gone", 0, 0, big_doc);
    rc[3] = qod_store_commit(f.st, b);
    row_copy c;
    int first = get(&f, QOD_TBL_APPS, "first", &c);
    event_list e;
    QT_EQ_INT(events(&f, -1, 0, 0, &e), QOD_OK);
    int url = get(&f, QOD_TBL_META, url_key, &c);
    fixture_close(&f);
    QT_EQ_INT(rc[0], QOD_ERR_LIMIT);
    QT_EQ_INT(rc[1], QOD_ERR_LIMIT);
    QT_EQ_INT(rc[2], QOD_ERR_LIMIT);
    QT_EQ_INT(rc[3], QOD_OK);
    QT_EQ_INT(first, QOD_ERR_NOTFOUND);
    QT_EQ_INT(e.n, 0);
    QT_EQ_INT(url, QOD_OK);
}

/* Stops the server under an open store, then starts it again on the same port and data. */
/* A ping the database does not answer (here: the table it reads is locked; in production a frozen server or a cut
 * network) fails with BUSY at its deadline, and so does the next one while the first is still waiting; once the
 * database answers again, so does the ping. */
QTEST(ping_answers_busy_at_its_deadline_when_the_database_does_not_answer)
{
    fixture f;
    QT_EQ_INT(fixture_open(&f), 0);
    int first = qod_store_ping(f.st, 5000);
    int rows;
    PGconn *blocker = pgfix_block("LOCK TABLE schema_version IN ACCESS EXCLUSIVE MODE", &rows);
    int locked = rows == 0;
    int64_t t0 = qod_time_mono_ms();
    int stuck[2] = {qod_store_ping(f.st, 300), qod_store_ping(f.st, 300)};
    int64_t waited = qod_time_mono_ms() - t0;
    pgfix_unblock(blocker);
    int again = qod_store_ping(f.st, 5000);
    fixture_close(&f);
    QT_EQ_INT(first, QOD_OK);
    QT_TRUE(locked);
    QT_EQ_INT(stuck[0], QOD_ERR_BUSY);
    QT_EQ_INT(stuck[1], QOD_ERR_BUSY);
    QT_TRUE(waited >= 600 && waited < 5000);
    QT_EQ_INT(again, QOD_OK);
}

QTEST(stopped_server_fails_with_store_error_then_store_recovers)
{
    fixture f;
    QT_EQ_INT(fixture_open(&f), 0);
    QT_EQ_INT(put1(&f, QOD_TBL_APPS, "before", "", "{}"), QOD_OK);
    QT_EQ_INT(pgfix_script("stop", NULL, 0), 0);
    pgfix_reap();
    row_copy c;
    event_list e;
    int down[5];
    down[0] = put1(&f, QOD_TBL_APPS, "while-down", "", "{}");
    down[1] = get(&f, QOD_TBL_APPS, "before", &c);
    down[2] = events(&f, -1, 0, 0, &e);
    down[3] = qod_store_ping(f.st, 5000);
    key_list l;
    down[4] = scan(&f, QOD_TBL_APPS, NULL, 0, &l);
    int restarted = pgfix_script("start", NULL, 0);
    int up[3];
    up[0] = put1(&f, QOD_TBL_APPS, "after", "", "{}");
    up[1] = get(&f, QOD_TBL_APPS, "before", &c);
    up[2] = qod_store_ping(f.st, 5000);
    QT_EQ_INT(scan(&f, QOD_TBL_APPS, NULL, 0, &l), QOD_OK);
    fixture_close(&f);
    for (int i = 0; i < 5; i++)
        QT_EQ_INT(down[i], QOD_ERR_STORE);
    QT_EQ_INT(restarted, 0);
    for (int i = 0; i < 3; i++)
        QT_EQ_INT(up[i], QOD_OK);
    QT_EQ_STR(l.keys, "after before");
}

typedef struct {
    tracker *t;
    int after; /* terminate the writer's server process once this many batches completed */
    int killed;
} killer;

static void *kill_writer(void *arg)
{
    killer *k = arg;
    struct timespec deadline = pgfix_deadline(30000);
    pthread_mutex_lock(&k->t->mu);
    while (k->t->done < k->after && pthread_cond_timedwait(&k->t->cv, &k->t->mu, &deadline) == 0)
        ;
    pthread_mutex_unlock(&k->t->mu);
    k->killed = pgfix_sql_int("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                              " WHERE application_name = 'qodd-writer'");
    return NULL;
}

/* The writer's connection is cut while groups are in flight (pipelined on PostgreSQL): each batch completes exactly
 * once, with success or a store error (a group whose pipeline broke is applied again on a new connection, batch by
 * batch, so usually none fails), everything acknowledged is there, and the store goes on working. */
QTEST(writer_connection_cut_mid_stream_loses_nothing_acknowledged)
{
    enum { N = 4000 };
    fixture f;
    QT_EQ_INT(fixture_open(&f), 0);
    tracker t;
    tracker_init(&t);
    killer k = {.t = &t, .after = 200, .killed = -1};
    pthread_t th;
    QT_EQ_INT(pthread_create(&th, NULL, kill_writer, &k), 0);
    static slot slots[N];
    for (int i = 0; i < N; i++) {
        char key[16];
        snprintf(key, sizeof key, "c-%05d", i);
        slots[i] = (slot){.t = &t, .rc = 1};
        qod_store_batch *b = qod_store_batch_new();
        qod_store_batch_put(b, QOD_TBL_SESSIONS, key, "app", "", 0, 0, "{}");
        qod_store_batch_event(b, key, key, "app", i, "{}");
        QT_EQ_INT(qod_store_submit(f.st, b, on_done, &slots[i]), QOD_OK);
    }
    int done = tracker_wait(&t, N);
    pthread_join(th, NULL);
    int after = put1(&f, QOD_TBL_APPS, "after", "", "{}");
    int ok = 0, failed = 0, missing = 0;
    for (int i = 0; i < N; i++) {
        ok += slots[i].rc == QOD_OK;
        failed += slots[i].rc == QOD_ERR_STORE;
        if (slots[i].rc == QOD_OK) {
            char key[16];
            row_copy c;
            snprintf(key, sizeof key, "c-%05d", i);
            missing += get(&f, QOD_TBL_SESSIONS, key, &c) != QOD_OK;
        }
    }
    fixture_close(&f);
    tracker_dispose(&t);
    QT_EQ_INT(done, N);
    QT_EQ_INT(k.killed, 1);
    QT_EQ_INT(ok + failed, N);
    QT_EQ_INT(missing, 0);
    QT_TRUE(ok >= k.after);
    QT_EQ_INT(after, QOD_OK);
    for (int i = 0; i < N; i++)
        QT_EQ_INT(atomic_load(&slots[i].calls), 1);
}

/* A write and a read the server does not answer within the limit fail (the table is locked here; in production the
 * server's process is frozen, or the network cut without a reset), nothing of the write is kept, and once the
 * server answers again so does the store, on new connections. */
QTEST(write_and_read_unanswered_within_the_limit_fail_then_recover)
{
    fixture f;
    QT_EQ_INT(fixture_open_limited(&f, 300), 0);
    QT_EQ_INT(put1(&f, QOD_TBL_APPS, "before", "", "{}"), QOD_OK);
    int rows;
    PGconn *blocker = pgfix_block("LOCK TABLE apps IN ACCESS EXCLUSIVE MODE", &rows);
    int locked = rows == 0;
    row_copy c;
    int64_t t0 = qod_time_mono_ms();
    int stuck[2] = {put1(&f, QOD_TBL_APPS, "while-locked", "", "{}"), get(&f, QOD_TBL_APPS, "before", &c)};
    int64_t waited = qod_time_mono_ms() - t0;
    pgfix_unblock(blocker);
    int again[3] = {put1(&f, QOD_TBL_APPS, "after", "", "{}"), get(&f, QOD_TBL_APPS, "before", &c),
                    get(&f, QOD_TBL_APPS, "while-locked", &c)};
    fixture_close(&f);
    QT_TRUE(locked);
    QT_EQ_INT(stuck[0], QOD_ERR_STORE);
    QT_EQ_INT(stuck[1], QOD_ERR_STORE);
    /* the write once, the read twice (it is tried again on a new connection) */
    QT_TRUE(waited >= 900 && waited < 5000);
    QT_EQ_INT(again[0], QOD_OK);
    QT_EQ_INT(again[1], QOD_OK);
    QT_EQ_INT(again[2], QOD_ERR_NOTFOUND);
}

/* A group far larger than the socket buffers, sent to a server process that reads none of it (here its first
 * statement waits for a lock; in production the process is frozen): the writer's call ends within its limit,
 * instead of waiting inside libpq to send the rest, and once the server reads again the store works again. Over
 * TCP the kernel would end such a connection after tcp_user_timeout; the URI turns that off here, as a Unix socket
 * or an operator's URI may. */
QTEST(group_larger_than_the_socket_buffers_unread_by_the_server_fails_within_the_limit)
{
    enum { ROWS = 32, DOC = 1000 * 1000 };
    fixture f;
    QT_EQ_INT(fixture_open_limited(&f, 500), 0);
    qod_store_close(f.st);
    char uri[sizeof pgfix.uri + 32];
    snprintf(uri, sizeof uri, "%s?tcp_user_timeout=0", pgfix.uri);
    qod_store_opts o = {.uri = uri, .answer_max_ms = 500};
    QT_EQ_INT(qod_store_open(&o, &f.st), QOD_OK);
    QT_EQ_INT(put1(&f, QOD_TBL_APPS, "before", "", "{}"), QOD_OK);
    char *doc = malloc(DOC + 16);
    QT_TRUE(doc != NULL);
    memset(doc, 'a', DOC + 16);
    memcpy(doc, "{\"x\":\"", 6);
    memcpy(doc + DOC + 6, "\"}", 3);
    qod_store_batch *b = qod_store_batch_new();
    for (int i = 0; i < ROWS; i++) {
        char key[16];
        snprintf(key, sizeof key, "big-%02d", i);
        qod_store_batch_put(b, QOD_TBL_APPS, key, "", "", 0, 0, doc);
    }
    free(doc);
    int rows;
    PGconn *blocker = pgfix_block("LOCK TABLE apps IN ACCESS EXCLUSIVE MODE", &rows);
    tracker t;
    tracker_init(&t);
    slot sl = {.t = &t, .rc = 1};
    int64_t t0 = qod_time_mono_ms();
    int submitted = qod_store_submit(f.st, b, on_done, &sl);
    int done = tracker_wait_ms(&t, 1, 10000);
    int64_t waited = qod_time_mono_ms() - t0;
    pgfix_unblock(blocker);
    tracker_wait(&t, 1);
    row_copy c;
    int after[2] = {put1(&f, QOD_TBL_APPS, "after", "", "{}"), get(&f, QOD_TBL_APPS, "big-00", &c)};
    fixture_close(&f);
    tracker_dispose(&t);
    QT_EQ_INT(rows, 0);
    QT_EQ_INT(submitted, QOD_OK);
    QT_EQ_INT(done, 1);
    QT_EQ_INT(sl.rc, QOD_ERR_STORE);
    QT_TRUE(waited >= 500 && waited < 5000);
    QT_EQ_INT(after[0], QOD_OK);
    QT_EQ_INT(after[1], QOD_ERR_NOTFOUND);
}

/* A commit made slow on the server: a deferred trigger sleeps seconds at COMMIT, then refuses rows whose key starts
 * with "abort". */
static int slow_commits(int seconds)
{
    char sql[400];
    snprintf(sql, sizeof sql,
             "CREATE OR REPLACE FUNCTION qod_test_slow_commit() RETURNS trigger LANGUAGE plpgsql AS $$"
             " BEGIN PERFORM pg_sleep(%d); IF NEW.key LIKE 'abort%%' THEN RAISE EXCEPTION 'refused at commit';"
             " END IF; RETURN NULL; END $$",
             seconds);
    if (pgfix_sql(sql, NULL, 0) != 0)
        return -1;
    return pgfix_sql("CREATE CONSTRAINT TRIGGER slow_commit AFTER INSERT ON sessions DEFERRABLE INITIALLY DEFERRED"
                     " FOR EACH ROW EXECUTE FUNCTION qod_test_slow_commit()",
                     NULL, 0);
}

/* A session row of its own device. */
static int put_session(fixture *f, const char *key)
{
    qod_store_batch *b = qod_store_batch_new();
    int rc = qod_store_batch_put(b, QOD_TBL_SESSIONS, key, "app", key, 0, 0, "{}");
    return rc == QOD_OK ? qod_store_commit(f->st, b) : (qod_store_batch_free(b), rc);
}

static int writer_pid(void)
{
    return pgfix_sql_int("SELECT coalesce(max(pid), 0) FROM pg_stat_activity WHERE application_name = 'qodd-writer'"
                         " AND state = 'idle'");
}

/* A COMMIT answered later than the writer waits: the writer gives its connection up, asks a new one what became
 * of the transaction, and completes the batch by what the server did, committed or not. So an app is never told
 * that a session failed while it is in the database, nor the reverse. */
QTEST(commit_answered_too_late_completes_by_what_the_server_did)
{
    fixture f;
    QT_EQ_INT(fixture_open_limited(&f, 300), 0);
    int setup = slow_commits(1);
    int warm = put1(&f, QOD_TBL_APPS, "warm", "", "{}");
    int pid0 = writer_pid();
    int64_t t0 = qod_time_mono_ms();
    int kept = put_session(&f, "kept-1");
    int64_t took = qod_time_mono_ms() - t0;
    int pid1 = writer_pid();
    int refused = put_session(&f, "abort-1");
    row_copy c;
    int found[2] = {get(&f, QOD_TBL_SESSIONS, "kept-1", &c), get(&f, QOD_TBL_SESSIONS, "abort-1", &c)};
    int after = put1(&f, QOD_TBL_APPS, "after", "", "{}");
    fixture_close(&f);
    QT_EQ_INT(setup, 0);
    QT_EQ_INT(warm, QOD_OK);
    QT_EQ_INT(kept, QOD_OK);
    QT_TRUE(took >= 1000 && took < 5000); /* the server's answer, learned on the new connection */
    QT_TRUE(pid0 > 0 && pid1 > 0 && pid1 != pid0);
    QT_EQ_INT(refused, QOD_ERR_STORE);
    QT_EQ_INT(found[0], QOD_OK);
    QT_EQ_INT(found[1], QOD_ERR_NOTFOUND);
    QT_EQ_INT(after, QOD_OK);
}

/* A COMMIT whose fate the writer cannot learn in time (the server still busy with it when the lookup gives up, after
 * 5 s): its batch is reported failed (pg_commit_unknown). Once the server has committed it, the writer asks again
 * (while idle, within 2 s; else at the start of the next group), finds it made, and says so once (late_commit), so
 * that what the batch wrote is not left unknown to the process that was told it failed. */
QTEST(commit_found_made_after_it_was_reported_failed_is_reported_late)
{
    fixture f;
    QT_EQ_INT(fixture_open_limited(&f, 300), 0);
    int setup = slow_commits(7);
    int warm = put1(&f, QOD_TBL_APPS, "warm", "", "{}");
    int64_t t0 = qod_time_mono_ms();
    int first = put_session(&f, "late-1");
    int64_t took = qod_time_mono_ms() - t0;
    int late_at_failure = atomic_load(&f.late);
    /* The server finishes the COMMIT 7 s after it began. */
    int seen = 0;
    for (int i = 0; i < 200 && seen != 1; i++) {
        qt_sleep_ms(50);
        seen = pgfix_sql_int("SELECT count(*) FROM sessions WHERE key = 'late-1'");
    }
    /* Nothing else is written: the idle writer finds it. */
    for (int i = 0; i < 100 && atomic_load(&f.late) == 0; i++)
        qt_sleep_ms(50);
    int late_idle = atomic_load(&f.late);
    int after = put1(&f, QOD_TBL_APPS, "after", "", "{}");
    int late_after = atomic_load(&f.late);
    int again = put1(&f, QOD_TBL_APPS, "again", "", "{}");
    row_copy c;
    int found = get(&f, QOD_TBL_SESSIONS, "late-1", &c);
    int late_final = atomic_load(&f.late);
    fixture_close(&f);
    QT_EQ_INT(setup, 0);
    QT_EQ_INT(warm, QOD_OK);
    QT_EQ_INT(first, QOD_ERR_STORE);
    QT_TRUE(took >= 5000 && took < 7000);
    QT_EQ_INT(late_at_failure, 0);
    QT_EQ_INT(seen, 1);
    QT_EQ_INT(late_idle, 1);
    QT_EQ_INT(after, QOD_OK);
    QT_EQ_INT(late_after, 1);
    QT_EQ_INT(again, QOD_OK);
    QT_EQ_INT(found, QOD_OK);
    QT_EQ_INT(late_final, 1);
}

static int lease_fixture(qod_pg_lease **a, qod_pg_lease **b)
{
    qod_log_setup(QOD_LOG_OFF, QOD_LOG_TEXT);
    *a = *b = NULL;
    if (pgfix_drop_schema() != 0 || qod_pg_lease_open(pgfix.uri, 0, a) != QOD_OK)
        return -1;
    return qod_pg_lease_open(pgfix.uri, 0, b) == QOD_OK ? 0 : -1;
}

QTEST(lease_has_one_holder_until_released)
{
    qod_pg_lease *a, *b;
    QT_EQ_INT(lease_fixture(&a, &b), 0);
    int64_t ea = 0, eb = 0, renewed = 0, epoch = 0, left = 0;
    char who[16] = "";
    int rc[7];
    rc[0] = qod_pg_lease_acquire(a, "outbox", "node-a", 10000, &ea);
    rc[1] = qod_pg_lease_acquire(b, "outbox", "node-b", 10000, &eb);
    rc[2] = qod_pg_lease_acquire(a, "outbox", "node-a", 10000, &renewed);
    rc[3] = qod_pg_lease_holder(b, "outbox", who, sizeof who, &epoch, &left);
    rc[4] = qod_pg_lease_release(b, "outbox", "node-b"); /* not the holder: no effect */
    rc[5] = qod_pg_lease_release(a, "outbox", "node-a");
    rc[6] = qod_pg_lease_acquire(b, "outbox", "node-b", 10000, &eb);
    qod_pg_lease_close(a);
    qod_pg_lease_close(b);
    QT_EQ_INT(rc[0], QOD_OK);
    QT_EQ_INT(rc[1], QOD_ERR_BUSY);
    QT_EQ_INT(rc[2], QOD_OK);
    QT_EQ_INT(renewed, ea);
    QT_EQ_INT(rc[3], QOD_OK);
    QT_EQ_STR(who, "node-a");
    QT_EQ_INT(epoch, ea);
    QT_TRUE(left > 5000 && left <= 10000);
    QT_EQ_INT(rc[4], QOD_OK);
    QT_EQ_INT(rc[5], QOD_OK);
    QT_EQ_INT(rc[6], QOD_OK);
    QT_TRUE(eb > ea);
}

QTEST(fence_lets_only_the_lease_holder_at_its_epoch_write)
{
    fixture f;
    QT_EQ_INT(fixture_open(&f), 0);
    qod_pg_lease *l = NULL;
    QT_EQ_INT(qod_pg_lease_open(pgfix.uri, 0, &l), QOD_OK);
    int64_t e = 0, e2 = 0;
    int rc[8];
    rc[0] = qod_pg_lease_acquire(l, "shard:07", "http://a", 60000, &e);
    rc[1] = fenced_put(&f, "shard:07", "http://a", e, "held");
    rc[2] = fenced_put(&f, "shard:07", "http://a", e + 1, "wrong-epoch");
    rc[3] = fenced_put(&f, "shard:07", "http://b", e, "wrong-holder");
    rc[4] = fenced_put(&f, "shard:08", "http://a", e, "no-lease");
    rc[5] = qod_pg_lease_release(l, "shard:07", "http://a");
    rc[6] = fenced_put(&f, "shard:07", "http://a", e, "after-release");
    /* Taken again after it ran out: a new epoch, and only that one writes. */
    rc[7] = qod_pg_lease_acquire(l, "shard:07", "http://a", 60000, &e2);
    int old_epoch = fenced_put(&f, "shard:07", "http://a", e, "old-epoch");
    int new_epoch = fenced_put(&f, "shard:07", "http://a", e2, "new-epoch");
    key_list keys;
    QT_EQ_INT(scan(&f, QOD_TBL_SESSIONS, NULL, 0, &keys), QOD_OK);
    qod_pg_lease_close(l);
    fixture_close(&f);
    QT_EQ_INT(rc[0], QOD_OK);
    QT_EQ_INT(rc[1], QOD_OK);
    QT_EQ_INT(rc[2], QOD_ERR_BUSY);
    QT_EQ_INT(rc[3], QOD_ERR_BUSY);
    QT_EQ_INT(rc[4], QOD_ERR_BUSY);
    QT_EQ_INT(rc[5], QOD_OK);
    QT_EQ_INT(rc[6], QOD_ERR_BUSY);
    QT_EQ_INT(rc[7], QOD_OK);
    QT_TRUE(e2 > e);
    QT_EQ_INT(old_epoch, QOD_ERR_BUSY);
    QT_EQ_INT(new_epoch, QOD_OK);
    QT_EQ_STR(keys.keys, "held new-epoch");
}

/* Fenced batches submitted back to back share group commits (and a pipeline): the ones whose fence fails fail
 * alone. */
QTEST(failed_fence_undoes_its_batch_but_not_its_group)
{
    enum { N = 40 };
    fixture f;
    QT_EQ_INT(fixture_open(&f), 0);
    qod_pg_lease *l = NULL;
    QT_EQ_INT(qod_pg_lease_open(pgfix.uri, 0, &l), QOD_OK);
    int64_t e = 0;
    QT_EQ_INT(qod_pg_lease_acquire(l, "shard:01", "http://a", 60000, &e), QOD_OK);
    tracker t;
    tracker_init(&t);
    static slot slots[N];
    for (int i = 0; i < N; i++) {
        char key[16];
        snprintf(key, sizeof key, "k-%02d", i);
        slots[i] = (slot){.t = &t, .rc = 1};
        qod_store_batch *b = qod_store_batch_new();
        qod_store_batch_fence(b, "shard:01", i % 4 == 3 ? "http://b" : "http://a", e);
        qod_store_batch_put(b, QOD_TBL_SESSIONS, key, "app", "", 0, 0, "{}");
        qod_store_batch_event(b, key, key, "app", i, "{}");
        QT_EQ_INT(qod_store_submit(f.st, b, on_done, &slots[i]), QOD_OK);
    }
    QT_EQ_INT(tracker_wait(&t, N), N);
    key_list keys;
    event_list ev;
    QT_EQ_INT(scan(&f, QOD_TBL_SESSIONS, NULL, 0, &keys), QOD_OK);
    QT_EQ_INT(events(&f, 0, 0, 0, &ev), QOD_OK);
    qod_pg_lease_close(l);
    fixture_close(&f);
    tracker_dispose(&t);
    for (int i = 0; i < N; i++)
        QT_EQ_INT(slots[i].rc, i % 4 == 3 ? QOD_ERR_BUSY : QOD_OK);
    QT_EQ_INT(keys.n, N - N / 4);
    QT_EQ_INT(ev.n, N - N / 4);
    QT_EQ_STR(ev.id[3], "k-04"); /* k-03 was fenced off */
}

QTEST(lease_passes_on_when_it_expires)
{
    qod_pg_lease *a, *b;
    QT_EQ_INT(lease_fixture(&a, &b), 0);
    int64_t ea = 0, eb = 0;
    int rc[4];
    rc[0] = qod_pg_lease_acquire(a, "outbox", "node-a", 50, &ea);
    nanosleep(&(struct timespec){.tv_nsec = 150 * 1000 * 1000}, NULL);
    rc[1] = qod_pg_lease_holder(b, "outbox", NULL, 0, NULL, NULL);
    rc[2] = qod_pg_lease_acquire(b, "outbox", "node-b", 10000, &eb);
    rc[3] = qod_pg_lease_acquire(a, "outbox", "node-a", 10000, NULL);
    qod_pg_lease_close(a);
    qod_pg_lease_close(b);
    QT_EQ_INT(rc[0], QOD_OK);
    QT_EQ_INT(rc[1], QOD_ERR_NOTFOUND);
    QT_EQ_INT(rc[2], QOD_OK);
    QT_TRUE(eb > ea);
    QT_EQ_INT(rc[3], QOD_ERR_BUSY);
}

/* A holder's fenced transaction share-locks its lease row; a take-over of the lapsed lease does not wait for it but
 * answers busy at once, leaves the connection usable, and succeeds once that transaction has ended. */
QTEST(lease_take_does_not_wait_for_a_row_an_open_transaction_locks)
{
    qod_pg_lease *a, *b;
    QT_EQ_INT(lease_fixture(&a, &b), 0);
    int64_t ea = 0, eb = 0;
    int rc[6];
    rc[0] = qod_pg_lease_acquire(a, "shard:05", "node-a", 100, &ea);
    int rows;
    PGconn *blocker = pgfix_block("SELECT 1 FROM leases WHERE name = 'shard:05' FOR SHARE", &rows);
    int locked = rows == 1;
    nanosleep(&(struct timespec){.tv_nsec = 200 * 1000 * 1000}, NULL); /* node-a's lease runs out */
    rc[1] = qod_pg_lease_take(b, "shard:05", "node-b", 10000, &eb);
    rc[2] = qod_pg_lease_holder(b, "shard:05", NULL, 0, NULL, NULL);
    rc[3] = qod_pg_lease_take(b, "shard:06", "node-b", 10000, NULL); /* a row nobody locks: taken */
    pgfix_unblock(blocker);
    rc[4] = qod_pg_lease_take(b, "shard:05", "node-b", 10000, &eb);
    rc[5] = qod_pg_lease_take(a, "shard:05", "node-a", 10000, NULL);
    qod_pg_lease_close(a);
    qod_pg_lease_close(b);
    QT_EQ_INT(rc[0], QOD_OK);
    QT_TRUE(locked);
    QT_EQ_INT(rc[1], QOD_ERR_BUSY);
    QT_EQ_INT(rc[2], QOD_ERR_NOTFOUND);
    QT_EQ_INT(rc[3], QOD_OK);
    QT_EQ_INT(rc[4], QOD_OK);
    QT_EQ_INT(eb, ea + 1);
    QT_EQ_INT(rc[5], QOD_ERR_BUSY);
}

/* A lease call the server does not answer within the limit gives up its connection, is tried once on a new one,
 * then fails; once the server answers again, so do the calls. The table is locked here; in production the
 * server's process is frozen, or the network cut without a reset. */
QTEST(lease_call_unanswered_within_its_limit_fails_then_recovers)
{
    qod_log_setup(QOD_LOG_OFF, QOD_LOG_TEXT);
    qod_pg_lease *l = NULL;
    int open_rc = pgfix_drop_schema() == 0 ? qod_pg_lease_open(pgfix.uri, 300, &l) : -1;
    int first = open_rc == QOD_OK ? qod_pg_lease_acquire(l, "shard:01", "node-a", 10000, NULL) : -1;
    int rows;
    PGconn *blocker = pgfix_block("LOCK TABLE leases IN ACCESS EXCLUSIVE MODE", &rows);
    int locked = rows == 0;
    int64_t t0 = qod_time_mono_ms();
    int stuck = open_rc == QOD_OK ? qod_pg_lease_acquire(l, "shard:01", "node-a", 10000, NULL) : -1;
    int64_t waited = qod_time_mono_ms() - t0;
    pgfix_unblock(blocker);
    int again = open_rc == QOD_OK ? qod_pg_lease_acquire(l, "shard:01", "node-a", 10000, NULL) : -1;
    qod_pg_lease_close(l);
    QT_EQ_INT(open_rc, QOD_OK);
    QT_EQ_INT(first, QOD_OK);
    QT_TRUE(locked);
    QT_EQ_INT(stuck, QOD_ERR_STORE);
    QT_TRUE(waited >= 300 && waited < 5000);
    QT_EQ_INT(again, QOD_OK);
}

QTEST(lease_refuses_bad_arguments)
{
    qod_pg_lease *a, *b;
    QT_EQ_INT(lease_fixture(&a, &b), 0);
    int rc[4];
    rc[0] = qod_pg_lease_acquire(a, "", "node-a", 1000, NULL);
    rc[1] = qod_pg_lease_acquire(a, "x", "", 1000, NULL);
    rc[2] = qod_pg_lease_acquire(a, "x", "node-a", 0, NULL);
    rc[3] = qod_pg_lease_acquire(a, "x", "node-a", 25LL * 3600 * 1000, NULL);
    qod_pg_lease_close(a);
    qod_pg_lease_close(b);
    qod_pg_lease_close(NULL);
    for (int i = 0; i < 4; i++)
        QT_EQ_INT(rc[i], QOD_ERR_INVALID);
}

/* ---- change notifications ---- */

/* What a listener heard, in order; payload NULL is recorded as "(null)". */
typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int n;
    char channel[16][16], payload[16][64];
} heard;

static void heard_init(heard *h)
{
    memset(h, 0, sizeof *h);
    pthread_mutex_init(&h->mu, NULL);
    pthread_cond_init(&h->cv, NULL);
}

static void heard_dispose(heard *h)
{
    pthread_mutex_destroy(&h->mu);
    pthread_cond_destroy(&h->cv);
}

static void on_heard(void *arg, const char *channel, const char *payload)
{
    heard *h = arg;
    pthread_mutex_lock(&h->mu);
    if (h->n < 16) {
        snprintf(h->channel[h->n], sizeof h->channel[0], "%s", channel);
        snprintf(h->payload[h->n], sizeof h->payload[0], "%s", payload ? payload : "(null)");
    }
    h->n++;
    pthread_cond_broadcast(&h->cv);
    pthread_mutex_unlock(&h->mu);
}

/* Waits until n notifications were heard or ms passed; returns the count heard. */
static int heard_wait(heard *h, int n, int ms)
{
    struct timespec deadline = pgfix_deadline(ms);
    pthread_mutex_lock(&h->mu);
    while (h->n < n && pthread_cond_timedwait(&h->cv, &h->mu, &deadline) == 0)
        ;
    int got = h->n;
    pthread_mutex_unlock(&h->mu);
    return got;
}

static int notify1(fixture *f, const char *channel, const char *payload)
{
    qod_store_batch *b = qod_store_batch_new();
    qod_store_batch_notify(b, channel, payload);
    return qod_store_commit(f->st, b);
}

static const char *const listened[] = {"apps", "devices", NULL};

QTEST(listen_needs_postgres)
{
    char dir[64] = "/tmp/qod-pgtest-XXXXXX";
    QT_TRUE(mkdtemp(dir) != NULL);
    qod_store_listener *l = (qod_store_listener *)1;
    heard h;
    heard_init(&h);
    int rc = qod_store_listen(dir, listened, on_heard, &h, &l);
    rmdir(dir);
    qod_store_listen_stop(NULL);
    heard_dispose(&h);
    QT_EQ_INT(rc, QOD_ERR_UNSUPPORTED);
    QT_TRUE(l == NULL);
}

/* A row lock held by another transaction keeps the batch (notify, then put of that row) from committing: the
 * listener must hear nothing until the batch commits, then the channel and payload as given. */
QTEST(notify_reaches_the_listener_at_commit_only)
{
    fixture f;
    QT_EQ_INT(fixture_open(&f), 0);
    QT_EQ_INT(put1(&f, QOD_TBL_APPS, "app-1", "", "{}"), QOD_OK);
    heard h;
    heard_init(&h);
    qod_store_listener *l = NULL;
    int listen_rc = qod_store_listen(pgfix.uri, listened, on_heard, &h, &l);
    int rows;
    PGconn *blocker = pgfix_block("SELECT 1 FROM apps WHERE key = 'app-1' FOR UPDATE", &rows);
    int locked = rows == 1;
    tracker t;
    tracker_init(&t);
    slot s = {.t = &t, .rc = 1};
    qod_store_batch *b = qod_store_batch_new();
    qod_store_batch_notify(b, "apps", "app-1 'quoted' \"too\"");
    qod_store_batch_put(b, QOD_TBL_APPS, "app-1", "", "", 0, 0, "{\"v\":2}");
    int submit_rc = qod_store_submit(f.st, b, on_done, &s);
    int before = heard_wait(&h, 1, 400);
    int blocked = atomic_load(&s.calls) == 0;
    pgfix_unblock(blocker);
    int done = tracker_wait(&t, 1);
    int after = heard_wait(&h, 1, 5000);
    int other_rc = notify1(&f, "devices", "dev-1");
    int both = heard_wait(&h, 2, 5000);
    qod_store_listen_stop(l);
    fixture_close(&f);
    tracker_dispose(&t);
    heard_dispose(&h);
    QT_EQ_INT(listen_rc, QOD_OK);
    QT_TRUE(locked);
    QT_EQ_INT(submit_rc, QOD_OK);
    QT_TRUE(blocked);
    QT_EQ_INT(before, 0);
    QT_EQ_INT(done, 1);
    QT_EQ_INT(s.rc, QOD_OK);
    QT_EQ_INT(after, 1);
    QT_EQ_STR(h.channel[0], "apps");
    QT_EQ_STR(h.payload[0], "app-1 'quoted' \"too\"");
    QT_EQ_INT(other_rc, QOD_OK);
    QT_EQ_INT(both, 2);
    QT_EQ_STR(h.channel[1], "devices");
    QT_EQ_STR(h.payload[1], "dev-1");
}

QTEST(notify_of_a_failed_batch_is_never_delivered)
{
    fixture f;
    QT_EQ_INT(fixture_open(&f), 0);
    QT_EQ_INT(put1(&f, QOD_TBL_APPS, "taken", "", "{}"), QOD_OK);
    heard h;
    heard_init(&h);
    qod_store_listener *l = NULL;
    int listen_rc = qod_store_listen(pgfix.uri, listened, on_heard, &h, &l);
    qod_store_batch *b = qod_store_batch_new();
    qod_store_batch_notify(b, "apps", "lost");
    qod_store_batch_insert(b, QOD_TBL_APPS, "taken", "", "", 0, 0, "{}");
    int failed_rc = qod_store_commit(f.st, b);
    int unheard_rc = notify1(&f, "other", "unheard");
    int kept_rc = notify1(&f, "apps", "kept");
    /* Notifications arrive in commit order: "lost", had it been sent, would come first. */
    int first = heard_wait(&h, 1, 5000);
    int total = heard_wait(&h, 2, 300);
    qod_store_listen_stop(l);
    fixture_close(&f);
    heard_dispose(&h);
    QT_EQ_INT(listen_rc, QOD_OK);
    QT_EQ_INT(failed_rc, QOD_ERR_EXISTS);
    QT_EQ_INT(unheard_rc, QOD_OK);
    QT_EQ_INT(kept_rc, QOD_OK);
    QT_EQ_INT(first, 1);
    QT_EQ_STR(h.payload[0], "kept");
    QT_EQ_INT(total, 1);
}

/* After the server restarts, the listener reconnects, says on every channel that it may have missed something,
 * and hears what follows. */
QTEST(listener_reconnects_after_a_server_restart)
{
    fixture f;
    QT_EQ_INT(fixture_open(&f), 0);
    heard h;
    heard_init(&h);
    qod_store_listener *l = NULL;
    int listen_rc = qod_store_listen(pgfix.uri, listened, on_heard, &h, &l);
    int before_rc = notify1(&f, "apps", "before");
    int before = heard_wait(&h, 1, 5000);
    int stopped = pgfix_script("stop", NULL, 0);
    pgfix_reap();
    int restarted = pgfix_script("start", NULL, 0);
    int refresh = heard_wait(&h, 3, 10000);
    int after_rc = notify1(&f, "devices", "after");
    int after = heard_wait(&h, 4, 5000);
    qod_store_listen_stop(l);
    fixture_close(&f);
    heard_dispose(&h);
    QT_EQ_INT(listen_rc, QOD_OK);
    QT_EQ_INT(before_rc, QOD_OK);
    QT_EQ_INT(before, 1);
    QT_EQ_INT(stopped, 0);
    QT_EQ_INT(restarted, 0);
    QT_EQ_INT(refresh, 3);
    QT_EQ_STR(h.channel[1], "apps");
    QT_EQ_STR(h.payload[1], "(null)");
    QT_EQ_STR(h.channel[2], "devices");
    QT_EQ_STR(h.payload[2], "(null)");
    QT_EQ_INT(after_rc, QOD_OK);
    QT_EQ_INT(after, 4);
    QT_EQ_STR(h.channel[3], "devices");
    QT_EQ_STR(h.payload[3], "after");
}

/* Commits one batch: put or insert of a session. */
static int session_write(fixture *f, bool insert, const char *key, const char *idx, int64_t state)
{
    qod_store_batch *b = qod_store_batch_new();
    if (insert)
        qod_store_batch_insert(b, QOD_TBL_SESSIONS, key, "app-1", idx, state, 0, "{}");
    else
        qod_store_batch_put(b, QOD_TBL_SESSIONS, key, "app-1", idx, state, 0, "{}");
    return qod_store_commit(f->st, b);
}

QTEST(one_active_session_per_device)
{
    fixture f;
    QT_EQ_INT(fixture_open(&f), 0);
    int rc[10];
    rc[0] = session_write(&f, true, "s1", "dev-1", 0);
    rc[1] = session_write(&f, true, "s2", "dev-1", 19); /* both active */
    rc[2] = session_write(&f, false, "s3", "dev-1", 10);
    rc[3] = session_write(&f, true, "s4", "dev-1", 20); /* ended ones do not count */
    rc[4] = session_write(&f, true, "s5", "", 0);       /* nor do rows without a device */
    rc[5] = session_write(&f, true, "s6", "", 0);
    rc[6] = session_write(&f, false, "s1", "dev-1", 5); /* the active row itself may change */
    qod_store_batch *b = qod_store_batch_new();
    qod_store_batch_put(b, QOD_TBL_DEVICES, "undone", "", "", 0, 0, "{}");
    qod_store_batch_insert(b, QOD_TBL_SESSIONS, "s7", "app-2", "dev-1", 0, 0, "{}");
    rc[7] = qod_store_commit(f.st, b);
    b = qod_store_batch_new();
    qod_store_batch_update(b, QOD_TBL_SESSIONS, "s1", 20, 0, "{}");
    rc[8] = qod_store_commit(f.st, b);
    rc[9] = session_write(&f, true, "s8", "dev-1", 0); /* the device is free again */
    row_copy c;
    int undone = get(&f, QOD_TBL_DEVICES, "undone", &c);
    key_list l;
    QT_EQ_INT(scan(&f, QOD_TBL_SESSIONS, NULL, 0, &l), QOD_OK);
    fixture_close(&f);
    QT_EQ_INT(rc[0], QOD_OK);
    QT_EQ_INT(rc[1], QOD_ERR_EXISTS);
    QT_EQ_INT(rc[2], QOD_ERR_EXISTS);
    for (int i = 3; i < 7; i++)
        QT_EQ_INT(rc[i], QOD_OK);
    QT_EQ_INT(rc[7], QOD_ERR_EXISTS);
    QT_EQ_INT(rc[8], QOD_OK);
    QT_EQ_INT(rc[9], QOD_OK);
    QT_EQ_INT(undone, QOD_ERR_NOTFOUND);
    QT_EQ_STR(l.keys, "s1 s4 s5 s6 s8");
}

/* Two stores on one database, as two nodes: the cap holds exactly under concurrent capped inserts. */
typedef struct {
    qod_store *st;
    int node, ok, limited;
} capper;

static void *cap_many(void *arg)
{
    capper *c = arg;
    for (int i = 0; i < 10; i++) {
        char key[32];
        snprintf(key, sizeof key, "n%d-%02d", c->node, i);
        qod_store_batch *b = qod_store_batch_new();
        qod_store_batch_cap(b, QOD_TBL_SESSIONS, "app-1", 20, 5);
        qod_store_batch_insert(b, QOD_TBL_SESSIONS, key, "app-1", "", 0, 0, "{}");
        int rc = qod_store_commit(c->st, b);
        c->ok += rc == QOD_OK;
        c->limited += rc == QOD_ERR_LIMIT;
    }
    return NULL;
}

QTEST(cap_is_exact_across_stores)
{
    fixture f;
    QT_EQ_INT(fixture_open(&f), 0);
    qod_store *other = NULL;
    qod_store_opts o = {.uri = pgfix.uri, .sync_full = false};
    QT_EQ_INT(qod_store_open(&o, &other), QOD_OK);
    capper c[2] = {{.st = f.st, .node = 0}, {.st = other, .node = 1}};
    pthread_t th[2];
    for (int i = 0; i < 2; i++)
        QT_EQ_INT(pthread_create(&th[i], NULL, cap_many, &c[i]), 0);
    for (int i = 0; i < 2; i++)
        pthread_join(th[i], NULL);
    qod_store_close(other);
    key_list l;
    QT_EQ_INT(scan(&f, QOD_TBL_SESSIONS, "app-1", 0, &l), QOD_OK);
    fixture_close(&f);
    QT_EQ_INT(c[0].ok + c[1].ok, 5);
    QT_EQ_INT(c[0].limited + c[1].limited, 15);
    QT_EQ_INT(l.n, 5);
}

/* The names and holders a lease listing returned, as "name=holder" joined by spaces. */
typedef struct {
    int n, stop_after;
    char text[256];
} lease_names;

static int list_lease(void *arg, const char *name, const char *holder)
{
    lease_names *l = arg;
    size_t used = strlen(l->text);
    snprintf(l->text + used, sizeof l->text - used, "%s%s=%s", used ? " " : "", name, holder);
    l->n++;
    return l->stop_after && l->n >= l->stop_after;
}

static int lease_list(qod_pg_lease *pl, const char *prefix, int stop_after, lease_names *l)
{
    memset(l, 0, sizeof *l);
    l->stop_after = stop_after;
    return qod_pg_lease_list(pl, prefix, list_lease, l);
}

QTEST(lease_list_by_prefix_in_name_order_without_expired)
{
    qod_pg_lease *a, *b;
    QT_EQ_INT(lease_fixture(&a, &b), 0);
    static const char *const names[][2] = {{"shard:10", "n-a"}, {"shard:02", "n-b"}, {"shard:01", "n-a"},
                                           {"shard:03", "n-b"}, {"shardx", "n-c"},   {"node:http://a", "n-a"},
                                           {"xa", "n-a"},       {"x%y", "n-b"}};
    int acquired = 0;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        acquired += qod_pg_lease_acquire(i % 2 ? a : b, names[i][0], names[i][1], 60000, NULL) == QOD_OK;
    /* shard:03 runs out. */
    int expired = pgfix_sql("UPDATE leases SET expires_at = now() WHERE name = 'shard:03'", NULL, 0);
    lease_names shards, percent, all, first, none;
    int rc[5];
    rc[0] = lease_list(b, "shard:", 0, &shards);
    rc[1] = lease_list(a, "x%", 0, &percent);
    rc[2] = lease_list(a, "", 0, &all);
    rc[3] = lease_list(a, "shard:", 1, &first);
    rc[4] = lease_list(a, "none", 0, &none);
    qod_pg_lease_close(a);
    qod_pg_lease_close(b);
    QT_EQ_INT(acquired, 8);
    QT_EQ_INT(expired, 0);
    for (int i = 0; i < 5; i++)
        QT_EQ_INT(rc[i], QOD_OK);
    QT_EQ_STR(shards.text, "shard:01=n-a shard:02=n-b shard:10=n-a");
    QT_EQ_STR(percent.text, "x%y=n-b");
    QT_EQ_STR(all.text, "node:http://a=n-a shard:01=n-a shard:02=n-b shard:10=n-a shardx=n-c x%y=n-b xa=n-a");
    QT_EQ_STR(first.text, "shard:01=n-a");
    QT_EQ_INT(none.n, 0);
}

/* ==== SQLite only, and no backend at all ==== */

QTEST(open_accepts_a_db_file_path)
{
    fixture f;
    QT_EQ_INT(fixture_open(&f), 0);
    qod_store_close(f.st);
    f.st = NULL;
    char path[128];
    snprintf(path, sizeof path, "%s/qod.db", f.dir);
    qod_store_opts o = {.uri = path, .sync_full = true};
    int rc = qod_store_open(&o, &f.st);
    int version = rc == QOD_OK ? qod_store_schema_version(f.st) : -1;
    fixture_close(&f);
    QT_EQ_INT(rc, QOD_OK);
    QT_TRUE(version >= 1);
}

QTEST(open_in_a_missing_directory_fails)
{
    qod_log_setup(QOD_LOG_OFF, QOD_LOG_TEXT);
    qod_store *st = (qod_store *)1;
    qod_store_opts o = {.uri = "/nonexistent/qod-store-test", .sync_full = false};
    int rc = qod_store_open(&o, &st);
    QT_TRUE(rc != QOD_OK);
    QT_TRUE(st == NULL);
}

QTEST(close_null_and_batch_free_null_are_noops)
{
    qod_store_close(NULL);
    qod_store_batch_free(NULL);
    QT_TRUE(1);
}

QTEST(batch_len_counts_ops)
{
    qod_store_batch *b = qod_store_batch_new();
    QT_TRUE(b != NULL);
    QT_EQ_INT(qod_store_batch_len(b), 0);
    qod_store_batch_put(b, QOD_TBL_APPS, "a", "", "", 0, 0, "{}");
    qod_store_batch_del(b, QOD_TBL_APPS, "b");
    qod_store_batch_event(b, "e", "s", "o", 1, "{}");
    qod_store_batch_fence(b, "shard:00", "http://a", 1);
    size_t n = qod_store_batch_len(b);
    /* The same fence again is not added twice; another lease or epoch is. */
    qod_store_batch_fence(b, "shard:00", "http://a", 1);
    size_t again = qod_store_batch_len(b);
    qod_store_batch_fence(b, "shard:01", "http://a", 1);
    qod_store_batch_fence(b, "shard:00", "http://a", 2);
    qod_store_batch_fence(b, "shard:01", "http://a", 1);
    size_t more = qod_store_batch_len(b);
    qod_store_batch_free(b);
    QT_EQ_INT(n, 4);
    QT_EQ_INT(again, 4);
    QT_EQ_INT(more, 6);
}

/* A batch of many sessions' writes carries each fence once, ahead of its writes: it commits when every fence holds
 * and fails whole when one does not. */
QTEST(shared_fences_guard_a_whole_batch)
{
    fixture f;
    QT_EQ_INT(fixture_open(&f), 0);
    qod_pg_lease *l = NULL;
    int open_rc = under_test == BK_PG ? qod_pg_lease_open(pgfix.uri, 0, &l) : QOD_OK;
    int64_t e1 = 1, e2 = 1;
    if (l) {
        qod_pg_lease_acquire(l, "shard:01", "http://a", 60000, &e1);
        qod_pg_lease_acquire(l, "shard:02", "http://a", 60000, &e2);
    }
    int rc[2];
    for (int round = 0; round < 2; round++) {
        qod_store_batch *b = qod_store_batch_new();
        for (int i = 0; i < 6; i++) {
            char key[32];
            snprintf(key, sizeof key, "r%d-%d", round, i);
            qod_store_batch_put(b, QOD_TBL_SESSIONS, key, "app", "", 0, 0, "{}");
            /* Round 1 names an epoch of shard:02 that is not the lease's. */
            qod_store_batch_fence(b, i % 2 ? "shard:01" : "shard:02", "http://a", i % 2 ? e1 : e2 + round);
        }
        rc[round] = qod_store_commit(f.st, b);
    }
    key_list keys;
    QT_EQ_INT(scan(&f, QOD_TBL_SESSIONS, NULL, 0, &keys), QOD_OK);
    qod_pg_lease_close(l);
    fixture_close(&f);
    QT_EQ_INT(open_rc, QOD_OK);
    QT_EQ_INT(rc[0], QOD_OK);
    QT_EQ_INT(rc[1], under_test == BK_PG ? QOD_ERR_BUSY : QOD_OK);
    QT_EQ_INT(keys.n, under_test == BK_PG ? 6 : 12);
}

static const qtest_case both[] = {
    QT_CASE(open_reports_the_current_version_and_answers_ping),
    QT_CASE(reopen_keeps_the_current_version),
    QT_CASE(put_get_round_trip_every_table),
    QT_CASE(get_absent_is_notfound_and_tables_are_separate),
    QT_CASE(put_null_strings_stored_empty),
    QT_CASE(put_existing_key_replaces_every_column),
    QT_CASE(update_changes_state_num_doc_only),
    QT_CASE(scan_returns_rows_in_bytewise_key_order),
    QT_CASE(scan_with_owner_filter),
    QT_CASE(scan_stops_when_callback_says_so_and_reads_go_on),
    QT_CASE(insert_new_key_ok),
    QT_CASE(insert_existing_key_fails_whole_batch),
    QT_CASE(insert_twice_in_one_batch_fails),
    QT_CASE(failed_batch_does_not_take_down_its_group),
    QT_CASE(large_group_with_a_late_failure_keeps_the_rest_in_order),
    QT_CASE(delete_removes_row_and_absent_is_ok),
    QT_CASE(delete_then_insert_in_one_batch),
    QT_CASE(commit_empty_batch_ok),
    QT_CASE(events_scan_in_seq_order_with_every_field),
    QT_CASE(events_scan_limit_and_after_seq),
    QT_CASE(event_with_a_stored_id_is_left_alone),
    QT_CASE(event_state_moves_event),
    QT_CASE(unsent_event_is_stored_delivered_in_seq_order),
    QT_CASE(event_del_session_removes_only_delivered_events),
    QT_CASE(session_purge_does_not_walk_other_sessions_events),
    QT_CASE(session_requeue_does_not_walk_other_sessions_events),
    QT_CASE(event_requeue_replays_the_session_from_seq),
    QT_CASE(event_seq_keeps_increasing_after_delete),
    QT_CASE(savepoint_rollback_undoes_only_its_batch),
    QT_CASE(rollback_discards_the_transaction),
    QT_CASE(many_async_submits_complete_exactly_once),
    QT_CASE(close_drains_queued_batches_and_data_survives_reopen),
    QT_CASE(cap_counts_only_the_owners_rows_below_the_state),
    QT_CASE(failed_cap_undoes_its_batch_but_not_its_group),
    QT_CASE(scan_idx_returns_the_rows_of_one_idx_in_key_order),
    QT_CASE(fence_is_a_no_op_on_sqlite_and_needs_a_lease_on_postgres),
    QT_CASE(shared_fences_guard_a_whole_batch),
    QT_CASE(notify_commits_with_its_batch),
};
static const qtest_case pg_only[] = {
    QT_CASE(postgresql_scheme_selects_postgres_too),
    QT_CASE(a_path_still_selects_sqlite),
    QT_CASE(schema_has_the_tables_and_one_version_row),
    QT_CASE(concurrent_opens_migrate_once),
    QT_CASE(unreachable_server_is_a_store_error),
    QT_CASE(wrong_password_is_a_store_error),
    QT_CASE(oversized_values_fail_their_batch),
    QT_CASE(lease_has_one_holder_until_released),
    QT_CASE(lease_passes_on_when_it_expires),
    QT_CASE(lease_take_does_not_wait_for_a_row_an_open_transaction_locks),
    QT_CASE(fence_lets_only_the_lease_holder_at_its_epoch_write),
    QT_CASE(failed_fence_undoes_its_batch_but_not_its_group),
    QT_CASE(lease_call_unanswered_within_its_limit_fails_then_recovers),
    QT_CASE(lease_refuses_bad_arguments),
    QT_CASE(ping_answers_busy_at_its_deadline_when_the_database_does_not_answer),
    QT_CASE(stopped_server_fails_with_store_error_then_store_recovers),
    QT_CASE(writer_connection_cut_mid_stream_loses_nothing_acknowledged),
    QT_CASE(write_and_read_unanswered_within_the_limit_fail_then_recover),
    QT_CASE(group_larger_than_the_socket_buffers_unread_by_the_server_fails_within_the_limit),
    QT_CASE(commit_answered_too_late_completes_by_what_the_server_did),
    QT_CASE(commit_found_made_after_it_was_reported_failed_is_reported_late),
    QT_CASE(listen_needs_postgres),
    QT_CASE(notify_reaches_the_listener_at_commit_only),
    QT_CASE(notify_of_a_failed_batch_is_never_delivered),
    QT_CASE(listener_reconnects_after_a_server_restart),
    QT_CASE(one_active_session_per_device),
    QT_CASE(cap_is_exact_across_stores),
    QT_CASE(lease_list_by_prefix_in_name_order_without_expired),
};

static const qtest_case sqlite_only[] = {
    QT_CASE(open_accepts_a_db_file_path),
    QT_CASE(open_in_a_missing_directory_fails),
    QT_CASE(close_null_and_batch_free_null_are_noops),
    QT_CASE(batch_len_counts_ops),
};

int main(int argc, char **argv)
{
    const char *only = argc > 1 ? argv[1] : NULL;
    int fatal = 0;
    const char *skip = pgfix_start(&fatal);
    int fails = 0;
    if (skip && fatal) {
        printf("FAIL pg.cluster_start: %s\n", skip);
        fails++;
    }
    for (size_t i = 0; i < sizeof both / sizeof both[0]; i++) {
        under_test = BK_PG;
        fails += pgfix_run_case(&both[i], "pg", skip, only);
        under_test = BK_SQLITE;
        fails += pgfix_run_case(&both[i], "sqlite", NULL, only);
    }
    under_test = BK_PG;
    for (size_t i = 0; i < sizeof pg_only / sizeof pg_only[0]; i++)
        fails += pgfix_run_case(&pg_only[i], "pg", skip, only);
    under_test = BK_SQLITE;
    for (size_t i = 0; i < sizeof sqlite_only / sizeof sqlite_only[0]; i++)
        fails += pgfix_run_case(&sqlite_only[i], "sqlite", NULL, only);
    pgfix_stop();
    return fails ? 1 : 0;
}
