#include "store/store.h"

#include "qtest.h"
#include "util/err.h"
#include "util/log.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* A store over a fresh temporary directory; fixture_close removes the database files and the directory. */
typedef struct {
    char dir[64];
    qod_store *st;
} fixture;

static int fixture_reopen(fixture *f)
{
    qod_store_opts o = {.uri = f->dir, .sync_full = false};
    return qod_store_open(&o, &f->st);
}

static int fixture_open(fixture *f)
{
    memset(f, 0, sizeof *f);
    /* The "migrated" info line is expected; keep the test output to results. */
    qod_log_setup(QOD_LOG_WARN, QOD_LOG_TEXT);
    snprintf(f->dir, sizeof f->dir, "/tmp/qod-store-XXXXXX");
    if (!mkdtemp(f->dir))
        return -1;
    return fixture_reopen(f) == QOD_OK ? 0 : -1;
}

static void fixture_close(fixture *f)
{
    static const char *const files[] = {"qod.db", "qod.db-wal", "qod.db-shm", "qod.db-journal"};
    qod_store_close(f->st);
    f->st = NULL;
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        char p[128];
        snprintf(p, sizeof p, "%s/%s", f->dir, files[i]);
        unlink(p);
    }
    rmdir(f->dir);
}

/* A copy of one row, taken inside the callback (the row's strings are borrowed). */
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

/* The keys a scan returned, in order; stops after `stop_after` rows when non-zero. */
typedef struct {
    int n, stop_after;
    char keys[32][64];
} scan_keys;

static int collect_key(void *arg, const qod_store_row *r)
{
    scan_keys *s = arg;
    if (s->n < 32)
        snprintf(s->keys[s->n], sizeof s->keys[0], "%s", r->key);
    s->n++;
    return s->stop_after && s->n >= s->stop_after;
}

static int count_row(void *arg, const qod_store_row *r)
{
    (void)r;
    (*(int *)arg)++;
    return 0;
}

/* A copy of up to 8 events from scan_events. */
typedef struct {
    int n;
    qod_store_event ev[8];
    char id[8][64], session[8][64], owner[8][64], doc[8][128];
} event_copy;

static int copy_event(void *arg, const qod_store_event *e)
{
    event_copy *c = arg;
    if (c->n < 8) {
        c->ev[c->n] = *e;
        snprintf(c->id[c->n], sizeof c->id[0], "%s", e->id);
        snprintf(c->session[c->n], sizeof c->session[0], "%s", e->session);
        snprintf(c->owner[c->n], sizeof c->owner[0], "%s", e->owner);
        snprintf(c->doc[c->n], sizeof c->doc[0], "%s", e->doc);
    }
    c->n++;
    return 0;
}

static int scan_events(fixture *f, int64_t state, size_t limit, event_copy *c)
{
    memset(c, 0, sizeof *c);
    return qod_store_scan_events(f->st, state, 0, limit, copy_event, c);
}

/* Commits one put. */
static int put1(fixture *f, qod_store_table t, const char *key, const char *owner, const char *doc)
{
    qod_store_batch *b = qod_store_batch_new();
    if (!b || qod_store_batch_put(b, t, key, owner, "idx", 0, 0, doc) != QOD_OK) {
        qod_store_batch_free(b);
        return QOD_ERR_NOMEM;
    }
    return qod_store_commit(f->st, b);
}

/* Completion tracking for asynchronous submits: each slot counts its callbacks; `done` counts them all. */
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

static void tracker_init(tracker *t)
{
    pthread_mutex_init(&t->mu, NULL);
    pthread_cond_init(&t->cv, NULL);
    t->done = 0;
}

static void tracker_dispose(tracker *t)
{
    pthread_mutex_destroy(&t->mu);
    pthread_cond_destroy(&t->cv);
}

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

/* Waits until n callbacks ran or 30 s passed; returns the count seen. */
static int tracker_wait(tracker *t, int n)
{
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += 30;
    pthread_mutex_lock(&t->mu);
    while (t->done < n && pthread_cond_timedwait(&t->cv, &t->mu, &deadline) == 0)
        ;
    int done = t->done;
    pthread_mutex_unlock(&t->mu);
    return done;
}

QTEST(open_creates_db_at_version_1)
{
    fixture f;
    QT_EQ_INT(fixture_open(&f), 0);
    char path[128];
    struct stat sb;
    snprintf(path, sizeof path, "%s/qod.db", f.dir);
    int exists = stat(path, &sb) == 0 && S_ISREG(sb.st_mode);
    int version = qod_store_schema_version(f.st);
    int ping = qod_store_ping(f.st);
    fixture_close(&f);
    QT_TRUE(exists);
    QT_EQ_INT(version, 1);
    QT_EQ_INT(ping, QOD_OK);
}

QTEST(reopen_keeps_version_1)
{
    fixture f;
    QT_EQ_INT(fixture_open(&f), 0);
    qod_store_close(f.st);
    f.st = NULL;
    int rc = fixture_reopen(&f);
    int version = rc == QOD_OK ? qod_store_schema_version(f.st) : -1;
    qod_store_close(f.st);
    f.st = NULL;
    int rc2 = fixture_reopen(&f);
    int version2 = rc2 == QOD_OK ? qod_store_schema_version(f.st) : -1;
    fixture_close(&f);
    QT_EQ_INT(rc, QOD_OK);
    QT_EQ_INT(version, 1);
    QT_EQ_INT(rc2, QOD_OK);
    QT_EQ_INT(version2, 1);
}

QTEST(open_accepts_db_file_path)
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
    QT_EQ_INT(version, 1);
}

QTEST(open_missing_directory_fails)
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
    size_t n = qod_store_batch_len(b);
    qod_store_batch_free(b);
    QT_EQ_INT(n, 3);
}

QTEST(put_get_round_trip_every_table)
{
    fixture f;
    QT_EQ_INT(fixture_open(&f), 0);
    qod_store_batch *b = qod_store_batch_new();
    for (int t = 0; t < QOD_TBL_COUNT; t++) {
        char doc[32];
        snprintf(doc, sizeof doc, "{\"table\":%d}", t);
        QT_EQ_INT(qod_store_batch_put(b, (qod_store_table)t, "key-1", "app-7", "dev-9", 3 + t, 1780390800123LL, doc),
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
        QT_EQ_INT(c.num, 1780390800123LL);
        QT_EQ_STR(c.doc, doc);
    }
    fixture_close(&f);
}

QTEST(get_absent_is_notfound)
{
    fixture f;
    QT_EQ_INT(fixture_open(&f), 0);
    row_copy c;
    int rc = get(&f, QOD_TBL_SESSIONS, "nope", &c);
    fixture_close(&f);
    QT_EQ_INT(rc, QOD_ERR_NOTFOUND);
    QT_EQ_INT(c.calls, 0);
}

QTEST(tables_are_separate)
{
    fixture f;
    QT_EQ_INT(fixture_open(&f), 0);
    QT_EQ_INT(put1(&f, QOD_TBL_APPS, "same", "", "{}"), QOD_OK);
    row_copy c;
    int in_apps = get(&f, QOD_TBL_APPS, "same", &c);
    int in_devices = get(&f, QOD_TBL_DEVICES, "same", &c);
    fixture_close(&f);
    QT_EQ_INT(in_apps, QOD_OK);
    QT_EQ_INT(in_devices, QOD_ERR_NOTFOUND);
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
    QT_EQ_STR(c.owner, "");
    QT_EQ_STR(c.idx, "");
    QT_EQ_STR(c.doc, "");
    fixture_close(&f);
}

QTEST(put_existing_key_replaces)
{
    fixture f;
    QT_EQ_INT(fixture_open(&f), 0);
    QT_EQ_INT(put1(&f, QOD_TBL_SESSIONS, "s1", "app-1", "{\"v\":1}"), QOD_OK);
    QT_EQ_INT(put1(&f, QOD_TBL_SESSIONS, "s1", "app-2", "{\"v\":2}"), QOD_OK);
    row_copy c;
    QT_EQ_INT(get(&f, QOD_TBL_SESSIONS, "s1", &c), QOD_OK);
    QT_EQ_STR(c.owner, "app-2");
    QT_EQ_STR(c.doc, "{\"v\":2}");
    int n = 0;
    QT_EQ_INT(qod_store_scan(f.st, QOD_TBL_SESSIONS, NULL, count_row, &n), QOD_OK);
    QT_EQ_INT(n, 1);
    fixture_close(&f);
}

QTEST(scan_returns_rows_in_key_order)
{
    fixture f;
    QT_EQ_INT(fixture_open(&f), 0);
    qod_store_batch *b = qod_store_batch_new();
    qod_store_batch_put(b, QOD_TBL_DEVICES, "c", "app-1", "", 0, 0, "{}");
    qod_store_batch_put(b, QOD_TBL_DEVICES, "a", "app-2", "", 0, 0, "{}");
    qod_store_batch_put(b, QOD_TBL_DEVICES, "b", "app-1", "", 0, 0, "{}");
    QT_EQ_INT(qod_store_commit(f.st, b), QOD_OK);
    scan_keys s = {0};
    QT_EQ_INT(qod_store_scan(f.st, QOD_TBL_DEVICES, NULL, collect_key, &s), QOD_OK);
    QT_EQ_INT(s.n, 3);
    QT_EQ_STR(s.keys[0], "a");
    QT_EQ_STR(s.keys[1], "b");
    QT_EQ_STR(s.keys[2], "c");
    fixture_close(&f);
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
    scan_keys s = {0};
    QT_EQ_INT(qod_store_scan(f.st, QOD_TBL_SESSIONS, "app-1", collect_key, &s), QOD_OK);
    QT_EQ_INT(s.n, 2);
    QT_EQ_STR(s.keys[0], "s2");
    QT_EQ_STR(s.keys[1], "s3");
    scan_keys none = {0};
    QT_EQ_INT(qod_store_scan(f.st, QOD_TBL_SESSIONS, "app-3", collect_key, &none), QOD_OK);
    QT_EQ_INT(none.n, 0);
    fixture_close(&f);
}

QTEST(scan_stops_when_callback_says_so)
{
    fixture f;
    QT_EQ_INT(fixture_open(&f), 0);
    qod_store_batch *b = qod_store_batch_new();
    qod_store_batch_put(b, QOD_TBL_APPS, "a", "", "", 0, 0, "{}");
    qod_store_batch_put(b, QOD_TBL_APPS, "b", "", "", 0, 0, "{}");
    qod_store_batch_put(b, QOD_TBL_APPS, "c", "", "", 0, 0, "{}");
    QT_EQ_INT(qod_store_commit(f.st, b), QOD_OK);
    scan_keys s = {.stop_after = 2};
    QT_EQ_INT(qod_store_scan(f.st, QOD_TBL_APPS, NULL, collect_key, &s), QOD_OK);
    QT_EQ_INT(s.n, 2);
    fixture_close(&f);
}

QTEST(insert_new_key_ok)
{
    fixture f;
    QT_EQ_INT(fixture_open(&f), 0);
    qod_store_batch *b = qod_store_batch_new();
    QT_EQ_INT(qod_store_batch_insert(b, QOD_TBL_IDEMPOTENCY, "idem-1", "app-1", "", 0, 99, "{\"r\":1}"), QOD_OK);
    QT_EQ_INT(qod_store_commit(f.st, b), QOD_OK);
    row_copy c;
    QT_EQ_INT(get(&f, QOD_TBL_IDEMPOTENCY, "idem-1", &c), QOD_OK);
    QT_EQ_INT(c.num, 99);
    fixture_close(&f);
}

QTEST(insert_existing_key_fails_whole_batch)
{
    fixture f;
    QT_EQ_INT(fixture_open(&f), 0);
    QT_EQ_INT(put1(&f, QOD_TBL_SESSIONS, "taken", "app-1", "{\"v\":1}"), QOD_OK);
    qod_store_batch *b = qod_store_batch_new();
    qod_store_batch_put(b, QOD_TBL_SESSIONS, "before", "app-2", "", 0, 0, "{}");
    qod_store_batch_insert(b, QOD_TBL_SESSIONS, "taken", "app-2", "", 0, 0, "{\"v\":2}");
    qod_store_batch_put(b, QOD_TBL_DEVICES, "after", "app-2", "", 0, 0, "{}");
    QT_EQ_INT(qod_store_commit(f.st, b), QOD_ERR_EXISTS);
    row_copy c;
    QT_EQ_INT(get(&f, QOD_TBL_SESSIONS, "before", &c), QOD_ERR_NOTFOUND);
    QT_EQ_INT(get(&f, QOD_TBL_DEVICES, "after", &c), QOD_ERR_NOTFOUND);
    QT_EQ_INT(get(&f, QOD_TBL_SESSIONS, "taken", &c), QOD_OK);
    QT_EQ_STR(c.owner, "app-1");
    QT_EQ_STR(c.doc, "{\"v\":1}");
    fixture_close(&f);
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
    QT_EQ_INT(get(&f, QOD_TBL_SESSIONS, "dup", &c), QOD_ERR_NOTFOUND);
    fixture_close(&f);
}

QTEST(failed_batch_does_not_take_down_concurrent_batches)
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
        qod_store_batch *lose = qod_store_batch_new();
        snprintf(key, sizeof key, "lost-%d", i);
        qod_store_batch_put(lose, QOD_TBL_DEVICES, key, "", "", 0, 0, "{}");
        qod_store_batch_insert(lose, QOD_TBL_SESSIONS, "taken", "app-2", "", 0, 0, "{}");
        qod_store_batch *win = qod_store_batch_new();
        snprintf(key, sizeof key, "won-%d", i);
        qod_store_batch_insert(win, QOD_TBL_SESSIONS, key, "app-3", "", 0, 0, "{}");
        QT_EQ_INT(qod_store_submit(f.st, lose, on_done, &losers[i]), QOD_OK);
        QT_EQ_INT(qod_store_submit(f.st, win, on_done, &winners[i]), QOD_OK);
    }
    QT_EQ_INT(tracker_wait(&t, 2 * PAIRS), 2 * PAIRS);
    for (int i = 0; i < PAIRS; i++) {
        char key[32];
        row_copy c;
        QT_EQ_INT(losers[i].rc, QOD_ERR_EXISTS);
        QT_EQ_INT(winners[i].rc, QOD_OK);
        QT_EQ_INT(atomic_load(&losers[i].calls), 1);
        QT_EQ_INT(atomic_load(&winners[i].calls), 1);
        snprintf(key, sizeof key, "won-%d", i);
        QT_EQ_INT(get(&f, QOD_TBL_SESSIONS, key, &c), QOD_OK);
        snprintf(key, sizeof key, "lost-%d", i);
        QT_EQ_INT(get(&f, QOD_TBL_DEVICES, key, &c), QOD_ERR_NOTFOUND);
    }
    row_copy c;
    QT_EQ_INT(get(&f, QOD_TBL_SESSIONS, "taken", &c), QOD_OK);
    QT_EQ_STR(c.owner, "app-1");
    fixture_close(&f);
    tracker_dispose(&t);
}

QTEST(delete_removes_row)
{
    fixture f;
    QT_EQ_INT(fixture_open(&f), 0);
    QT_EQ_INT(put1(&f, QOD_TBL_APPS, "gone", "", "{}"), QOD_OK);
    QT_EQ_INT(put1(&f, QOD_TBL_APPS, "kept", "", "{}"), QOD_OK);
    qod_store_batch *b = qod_store_batch_new();
    QT_EQ_INT(qod_store_batch_del(b, QOD_TBL_APPS, "gone"), QOD_OK);
    QT_EQ_INT(qod_store_commit(f.st, b), QOD_OK);
    row_copy c;
    QT_EQ_INT(get(&f, QOD_TBL_APPS, "gone", &c), QOD_ERR_NOTFOUND);
    QT_EQ_INT(get(&f, QOD_TBL_APPS, "kept", &c), QOD_OK);
    fixture_close(&f);
}

QTEST(delete_absent_is_ok)
{
    fixture f;
    QT_EQ_INT(fixture_open(&f), 0);
    qod_store_batch *b = qod_store_batch_new();
    QT_EQ_INT(qod_store_batch_del(b, QOD_TBL_APPS, "never-was"), QOD_OK);
    int rc = qod_store_commit(f.st, b);
    fixture_close(&f);
    QT_EQ_INT(rc, QOD_OK);
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
    QT_EQ_STR(c.owner, "new");
    fixture_close(&f);
}

QTEST(commit_empty_batch_ok)
{
    fixture f;
    QT_EQ_INT(fixture_open(&f), 0);
    int rc = qod_store_commit(f.st, qod_store_batch_new());
    fixture_close(&f);
    QT_EQ_INT(rc, QOD_OK);
}

/* Commits two pending events of session s1 and one of s2. */
static int add_events(fixture *f)
{
    qod_store_batch *b = qod_store_batch_new();
    qod_store_batch_event(b, "wh-1", "s1", "app-1", 1000, "{\"n\":1}");
    qod_store_batch_event(b, "wh-2", "s1", "app-1", 2000, "{\"n\":2}");
    int rc = qod_store_commit(f->st, b);
    if (rc != QOD_OK)
        return rc;
    b = qod_store_batch_new();
    qod_store_batch_event(b, "wh-3", "s2", "app-2", 3000, "{\"n\":3}");
    return qod_store_commit(f->st, b);
}

QTEST(events_scan_in_seq_order)
{
    fixture f;
    QT_EQ_INT(fixture_open(&f), 0);
    QT_EQ_INT(add_events(&f), QOD_OK);
    event_copy e;
    QT_EQ_INT(scan_events(&f, 0, 0, &e), QOD_OK);
    QT_EQ_INT(e.n, 3);
    QT_EQ_STR(e.id[0], "wh-1");
    QT_EQ_STR(e.id[1], "wh-2");
    QT_EQ_STR(e.id[2], "wh-3");
    QT_TRUE(e.ev[0].seq > 0);
    QT_TRUE(e.ev[1].seq > e.ev[0].seq);
    QT_TRUE(e.ev[2].seq > e.ev[1].seq);
    fixture_close(&f);
}

QTEST(events_fields_round_trip)
{
    fixture f;
    QT_EQ_INT(fixture_open(&f), 0);
    QT_EQ_INT(add_events(&f), QOD_OK);
    event_copy e;
    QT_EQ_INT(scan_events(&f, 0, 0, &e), QOD_OK);
    QT_EQ_INT(e.n, 3);
    QT_EQ_STR(e.session[1], "s1");
    QT_EQ_STR(e.owner[1], "app-1");
    QT_EQ_STR(e.doc[1], "{\"n\":2}");
    QT_EQ_INT(e.ev[1].created_ms, 2000);
    QT_EQ_INT(e.ev[1].state, 0);
    QT_EQ_INT(e.ev[1].attempts, 0);
    QT_EQ_INT(e.ev[1].next_ms, 2000);
    fixture_close(&f);
}

QTEST(events_scan_limit)
{
    fixture f;
    QT_EQ_INT(fixture_open(&f), 0);
    QT_EQ_INT(add_events(&f), QOD_OK);
    event_copy e;
    QT_EQ_INT(scan_events(&f, 0, 2, &e), QOD_OK);
    QT_EQ_INT(e.n, 2);
    QT_EQ_STR(e.id[0], "wh-1");
    QT_EQ_STR(e.id[1], "wh-2");
    fixture_close(&f);
}

QTEST(event_state_moves_event)
{
    fixture f;
    QT_EQ_INT(fixture_open(&f), 0);
    QT_EQ_INT(add_events(&f), QOD_OK);
    event_copy e;
    QT_EQ_INT(scan_events(&f, 0, 0, &e), QOD_OK);
    QT_EQ_INT(e.n, 3);
    int64_t seq = e.ev[1].seq;
    qod_store_batch *b = qod_store_batch_new();
    QT_EQ_INT(qod_store_batch_event_state(b, seq, 1, 2, 5000), QOD_OK);
    QT_EQ_INT(qod_store_commit(f.st, b), QOD_OK);
    QT_EQ_INT(scan_events(&f, 0, 0, &e), QOD_OK);
    QT_EQ_INT(e.n, 2);
    QT_EQ_STR(e.id[0], "wh-1");
    QT_EQ_STR(e.id[1], "wh-3");
    QT_EQ_INT(scan_events(&f, 1, 0, &e), QOD_OK);
    QT_EQ_INT(e.n, 1);
    QT_EQ_STR(e.id[0], "wh-2");
    QT_EQ_INT(e.ev[0].seq, seq);
    QT_EQ_INT(e.ev[0].state, 1);
    QT_EQ_INT(e.ev[0].attempts, 2);
    QT_EQ_INT(e.ev[0].next_ms, 5000);
    fixture_close(&f);
}

QTEST(event_del_session_removes_only_delivered_events)
{
    fixture f;
    QT_EQ_INT(fixture_open(&f), 0);
    QT_EQ_INT(add_events(&f), QOD_OK);
    event_copy e;
    QT_EQ_INT(scan_events(&f, 0, 0, &e), QOD_OK);
    qod_store_batch *b = qod_store_batch_new();
    QT_EQ_INT(qod_store_batch_event_state(b, e.ev[0].seq, 1, 1, 0), QOD_OK);
    QT_EQ_INT(qod_store_commit(f.st, b), QOD_OK);
    b = qod_store_batch_new();
    QT_EQ_INT(qod_store_batch_event_del_session(b, "s1"), QOD_OK);
    QT_EQ_INT(qod_store_commit(f.st, b), QOD_OK);
    QT_EQ_INT(scan_events(&f, 1, 0, &e), QOD_OK);
    QT_EQ_INT(e.n, 0);
    QT_EQ_INT(scan_events(&f, 0, 0, &e), QOD_OK);
    QT_EQ_INT(e.n, 2);
    QT_EQ_STR(e.id[0], "wh-2");
    QT_EQ_STR(e.id[1], "wh-3");
    fixture_close(&f);
}

QTEST(event_requeue_replays_the_session_from_seq)
{
    fixture f;
    QT_EQ_INT(fixture_open(&f), 0);
    QT_EQ_INT(add_events(&f), QOD_OK);
    event_copy e;
    QT_EQ_INT(scan_events(&f, 0, 0, &e), QOD_OK);
    int64_t s1 = e.ev[0].seq, s2 = e.ev[1].seq;
    qod_store_batch *b = qod_store_batch_new();
    qod_store_batch_event_state(b, s1, 2, 8, 0);
    qod_store_batch_event_state(b, s2, 1, 1, 0);
    QT_EQ_INT(qod_store_commit(f.st, b), QOD_OK);
    b = qod_store_batch_new();
    QT_EQ_INT(qod_store_batch_event_requeue(b, "s1", s1, 777), QOD_OK);
    QT_EQ_INT(qod_store_commit(f.st, b), QOD_OK);
    QT_EQ_INT(scan_events(&f, 0, 0, &e), QOD_OK);
    QT_EQ_INT(e.n, 3);
    QT_EQ_INT(e.ev[0].attempts, 0);
    QT_EQ_INT(e.ev[0].next_ms, 777);
    QT_EQ_INT(e.ev[1].seq, s2);
    fixture_close(&f);
}

QTEST(event_scan_after_seq_and_any_state)
{
    fixture f;
    QT_EQ_INT(fixture_open(&f), 0);
    QT_EQ_INT(add_events(&f), QOD_OK);
    event_copy e;
    QT_EQ_INT(scan_events(&f, 0, 0, &e), QOD_OK);
    int64_t first = e.ev[0].seq;
    qod_store_batch *b = qod_store_batch_new();
    qod_store_batch_event_state(b, first, 2, 1, 0);
    QT_EQ_INT(qod_store_commit(f.st, b), QOD_OK);
    e.n = 0;
    QT_EQ_INT(qod_store_scan_events(f.st, -1, first, 0, copy_event, &e), QOD_OK);
    QT_EQ_INT(e.n, 2);
    QT_EQ_STR(e.id[0], "wh-2");
    fixture_close(&f);
}

QTEST(event_seq_keeps_increasing_after_delete)
{
    fixture f;
    QT_EQ_INT(fixture_open(&f), 0);
    QT_EQ_INT(add_events(&f), QOD_OK);
    event_copy e;
    QT_EQ_INT(scan_events(&f, 0, 0, &e), QOD_OK);
    int64_t last = e.ev[2].seq;
    qod_store_batch *b = qod_store_batch_new();
    qod_store_batch_event_state(b, e.ev[2].seq, 1, 1, 0);
    qod_store_batch_event_del_session(b, "s2");
    QT_EQ_INT(qod_store_commit(f.st, b), QOD_OK);
    b = qod_store_batch_new();
    qod_store_batch_event(b, "wh-4", "s3", "app-3", 4000, "{}");
    QT_EQ_INT(qod_store_commit(f.st, b), QOD_OK);
    QT_EQ_INT(scan_events(&f, 0, 0, &e), QOD_OK);
    QT_EQ_INT(e.n, 3);
    QT_EQ_STR(e.id[2], "wh-4");
    QT_TRUE(e.ev[2].seq > last);
    fixture_close(&f);
}

/* Four threads each submit PER_THREAD one-row batches; every callback must run exactly once. */
enum { THREADS = 4, PER_THREAD = 500 };

typedef struct {
    qod_store *st;
    int thread;
    slot *slots;
    atomic_int *submit_fail;
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
            atomic_fetch_add(s->submit_fail, 1);
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
    atomic_int submit_fail = 0;
    pthread_t th[THREADS];
    submitter sub[THREADS];
    for (int i = 0; i < THREADS; i++) {
        sub[i] = (submitter){.st = f.st, .thread = i, .slots = slots, .submit_fail = &submit_fail};
        QT_EQ_INT(pthread_create(&th[i], NULL, submit_many, &sub[i]), 0);
    }
    for (int i = 0; i < THREADS; i++)
        pthread_join(th[i], NULL);
    QT_EQ_INT(atomic_load(&submit_fail), 0);
    QT_EQ_INT(tracker_wait(&t, THREADS * PER_THREAD), THREADS * PER_THREAD);
    int bad_calls = 0, bad_rc = 0;
    for (int i = 0; i < THREADS * PER_THREAD; i++) {
        bad_calls += atomic_load(&slots[i].calls) != 1;
        bad_rc += slots[i].rc != QOD_OK;
    }
    QT_EQ_INT(bad_calls, 0);
    QT_EQ_INT(bad_rc, 0);
    int rows = 0;
    QT_EQ_INT(qod_store_scan(f.st, QOD_TBL_SESSIONS, "app-1", count_row, &rows), QOD_OK);
    QT_EQ_INT(rows, THREADS * PER_THREAD);
    row_copy c;
    QT_EQ_INT(get(&f, QOD_TBL_SESSIONS, "t3-0499", &c), QOD_OK);
    QT_EQ_INT(c.num, 499);
    fixture_close(&f);
    /* Closing runs no callback a second time. */
    QT_EQ_INT(t.done, THREADS * PER_THREAD);
    tracker_dispose(&t);
}

QTEST(close_drains_queued_batches)
{
    enum { N = 200 };
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
        qod_store_batch_put(b, QOD_TBL_DEVICES, key, "", "", 0, 0, "{}");
        QT_EQ_INT(qod_store_submit(f.st, b, on_done, &slots[i]), QOD_OK);
    }
    qod_store_close(f.st);
    f.st = NULL;
    /* Every callback ran before close returned. */
    QT_EQ_INT(t.done, N);
    for (int i = 0; i < N; i++) {
        QT_EQ_INT(atomic_load(&slots[i].calls), 1);
        QT_EQ_INT(slots[i].rc, QOD_OK);
    }
    QT_EQ_INT(fixture_reopen(&f), QOD_OK);
    int rows = 0;
    QT_EQ_INT(qod_store_scan(f.st, QOD_TBL_DEVICES, NULL, count_row, &rows), QOD_OK);
    QT_EQ_INT(rows, N);
    fixture_close(&f);
    tracker_dispose(&t);
}

QTEST(data_survives_close_and_reopen)
{
    fixture f;
    QT_EQ_INT(fixture_open(&f), 0);
    qod_store_batch *b = qod_store_batch_new();
    qod_store_batch_put(b, QOD_TBL_APPS, "app-1", "", "", 1, 42, "{\"name\":\"demo\"}");
    qod_store_batch_put(b, QOD_TBL_SESSIONS, "s1", "app-1", "dev-1", 2, 1780390800000LL, "{}");
    qod_store_batch_event(b, "wh-1", "s1", "app-1", 1000, "{}");
    QT_EQ_INT(qod_store_commit(f.st, b), QOD_OK);
    qod_store_close(f.st);
    f.st = NULL;
    QT_EQ_INT(fixture_reopen(&f), QOD_OK);
    row_copy c;
    QT_EQ_INT(get(&f, QOD_TBL_APPS, "app-1", &c), QOD_OK);
    QT_EQ_STR(c.doc, "{\"name\":\"demo\"}");
    QT_EQ_INT(c.num, 42);
    QT_EQ_INT(get(&f, QOD_TBL_SESSIONS, "s1", &c), QOD_OK);
    QT_EQ_STR(c.idx, "dev-1");
    QT_EQ_INT(c.num, 1780390800000LL);
    event_copy e;
    QT_EQ_INT(scan_events(&f, 0, 0, &e), QOD_OK);
    QT_EQ_INT(e.n, 1);
    QT_EQ_STR(e.id[0], "wh-1");
    fixture_close(&f);
}

QTEST_MAIN(QT_CASE(open_creates_db_at_version_1), QT_CASE(reopen_keeps_version_1), QT_CASE(open_accepts_db_file_path),
           QT_CASE(open_missing_directory_fails), QT_CASE(close_null_and_batch_free_null_are_noops),
           QT_CASE(batch_len_counts_ops), QT_CASE(put_get_round_trip_every_table), QT_CASE(get_absent_is_notfound),
           QT_CASE(tables_are_separate), QT_CASE(put_null_strings_stored_empty), QT_CASE(put_existing_key_replaces),
           QT_CASE(scan_returns_rows_in_key_order), QT_CASE(scan_with_owner_filter),
           QT_CASE(scan_stops_when_callback_says_so), QT_CASE(insert_new_key_ok),
           QT_CASE(insert_existing_key_fails_whole_batch), QT_CASE(insert_twice_in_one_batch_fails),
           QT_CASE(failed_batch_does_not_take_down_concurrent_batches), QT_CASE(delete_removes_row),
           QT_CASE(delete_absent_is_ok), QT_CASE(delete_then_insert_in_one_batch), QT_CASE(commit_empty_batch_ok),
           QT_CASE(events_scan_in_seq_order), QT_CASE(events_fields_round_trip), QT_CASE(events_scan_limit),
           QT_CASE(event_state_moves_event), QT_CASE(event_del_session_removes_only_delivered_events), QT_CASE(event_requeue_replays_the_session_from_seq),
           QT_CASE(event_scan_after_seq_and_any_state),
           QT_CASE(event_seq_keeps_increasing_after_delete), QT_CASE(many_async_submits_complete_exactly_once),
           QT_CASE(close_drains_queued_batches), QT_CASE(data_survives_close_and_reopen))
