#include "util/hmap.h"

#include "qtest.h"
#include "util/err.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MANY 100000

/* MANY keys "key-0".."key-99999", each in its own fixed slot so the map can borrow them. */
typedef struct {
    char key[MANY][16];
    int val[MANY];
} key_set;

static key_set *key_set_new(void)
{
    key_set *k = malloc(sizeof *k);
    if (!k)
        return NULL;
    for (int i = 0; i < MANY; i++) {
        snprintf(k->key[i], sizeof k->key[i], "key-%d", i);
        k->val[i] = i;
    }
    return k;
}

/* Visit counter: marks each value seen, counts visits, and can stop after `stop_after` entries. */
typedef struct {
    unsigned char *seen;
    size_t visits, dupes, stop_after;
    bool key_matches;
} visit_ctx;

static int visit(void *arg, const char *key, void *val)
{
    visit_ctx *c = arg;
    int i = *(int *)val;
    char expect[16];
    snprintf(expect, sizeof expect, "key-%d", i);
    if (strcmp(expect, key) != 0)
        c->key_matches = false;
    c->dupes += c->seen[i];
    c->seen[i] = 1;
    c->visits++;
    return c->stop_after && c->visits >= c->stop_after;
}

QTEST(empty_map)
{
    qod_hmap m;
    qod_hmap_init(&m);
    QT_EQ_INT(qod_hmap_count(&m), 0);
    QT_TRUE(qod_hmap_get(&m, "a") == NULL);
    QT_TRUE(qod_hmap_del(&m, "a") == NULL);
    qod_hmap_dispose(&m);
}

QTEST(put_then_get)
{
    qod_hmap m;
    int a = 1, b = 2;
    qod_hmap_init(&m);
    QT_EQ_INT(qod_hmap_put(&m, "alpha", &a), QOD_OK);
    QT_EQ_INT(qod_hmap_put(&m, "beta", &b), QOD_OK);
    void *ga = qod_hmap_get(&m, "alpha"), *gb = qod_hmap_get(&m, "beta"), *gc = qod_hmap_get(&m, "gamma");
    size_t n = qod_hmap_count(&m);
    qod_hmap_dispose(&m);
    QT_TRUE(ga == &a);
    QT_TRUE(gb == &b);
    QT_TRUE(gc == NULL);
    QT_EQ_INT(n, 2);
}

QTEST(get_compares_key_text_not_pointer)
{
    qod_hmap m;
    int a = 1;
    char lookup[8];
    qod_hmap_init(&m);
    qod_hmap_put(&m, "alpha", &a);
    snprintf(lookup, sizeof lookup, "al%s", "pha");
    void *g = qod_hmap_get(&m, lookup);
    qod_hmap_dispose(&m);
    QT_TRUE(g == &a);
}

QTEST(put_replaces_value_without_growing_count)
{
    qod_hmap m;
    int a = 1, b = 2;
    qod_hmap_init(&m);
    qod_hmap_put(&m, "k", &a);
    QT_EQ_INT(qod_hmap_put(&m, "k", &b), QOD_OK);
    void *g = qod_hmap_get(&m, "k");
    size_t n = qod_hmap_count(&m);
    qod_hmap_dispose(&m);
    QT_TRUE(g == &b);
    QT_EQ_INT(n, 1);
}

QTEST(put_replace_takes_new_key_pointer)
{
    /* Keys are borrowed: after a replace the map must use the new key, so the old one can be freed. */
    qod_hmap m;
    int a = 1, b = 2;
    char *k1 = malloc(8), *k2 = malloc(8);
    QT_TRUE(k1 && k2);
    snprintf(k1, 8, "dev-1");
    snprintf(k2, 8, "dev-1");
    qod_hmap_init(&m);
    qod_hmap_put(&m, k1, &a);
    qod_hmap_put(&m, k2, &b);
    free(k1);
    void *g = qod_hmap_get(&m, "dev-1");
    void *d = qod_hmap_del(&m, "dev-1");
    qod_hmap_dispose(&m);
    free(k2);
    QT_TRUE(g == &b);
    QT_TRUE(d == &b);
}

QTEST(del_returns_value_and_removes)
{
    qod_hmap m;
    int a = 1, b = 2;
    qod_hmap_init(&m);
    qod_hmap_put(&m, "alpha", &a);
    qod_hmap_put(&m, "beta", &b);
    void *d = qod_hmap_del(&m, "alpha");
    void *ga = qod_hmap_get(&m, "alpha"), *gb = qod_hmap_get(&m, "beta");
    size_t n = qod_hmap_count(&m);
    qod_hmap_dispose(&m);
    QT_TRUE(d == &a);
    QT_TRUE(ga == NULL);
    QT_TRUE(gb == &b);
    QT_EQ_INT(n, 1);
}

QTEST(del_absent_returns_null)
{
    qod_hmap m;
    int a = 1;
    qod_hmap_init(&m);
    qod_hmap_put(&m, "alpha", &a);
    void *never = qod_hmap_del(&m, "beta");
    void *first = qod_hmap_del(&m, "alpha");
    void *again = qod_hmap_del(&m, "alpha");
    size_t n = qod_hmap_count(&m);
    qod_hmap_dispose(&m);
    QT_TRUE(never == NULL);
    QT_TRUE(first == &a);
    QT_TRUE(again == NULL);
    QT_EQ_INT(n, 0);
}

QTEST(empty_string_is_a_key)
{
    qod_hmap m;
    int a = 1;
    qod_hmap_init(&m);
    qod_hmap_put(&m, "", &a);
    void *g = qod_hmap_get(&m, "");
    qod_hmap_dispose(&m);
    QT_TRUE(g == &a);
}

QTEST(many_keys_with_growth)
{
    key_set *k = key_set_new();
    QT_TRUE(k != NULL);
    qod_hmap m;
    qod_hmap_init(&m);
    int rc = QOD_OK;
    for (int i = 0; i < MANY && rc == QOD_OK; i++)
        rc = qod_hmap_put(&m, k->key[i], &k->val[i]);
    size_t n = qod_hmap_count(&m), wrong = 0;
    for (int i = 0; i < MANY; i++)
        wrong += qod_hmap_get(&m, k->key[i]) != &k->val[i];
    bool absent = qod_hmap_get(&m, "key-100000") == NULL;
    qod_hmap_dispose(&m);
    free(k);
    QT_EQ_INT(rc, QOD_OK);
    QT_EQ_INT(n, MANY);
    QT_EQ_INT(wrong, 0);
    QT_TRUE(absent);
}

QTEST(many_keys_delete_half)
{
    key_set *k = key_set_new();
    QT_TRUE(k != NULL);
    qod_hmap m;
    qod_hmap_init(&m);
    for (int i = 0; i < MANY; i++)
        qod_hmap_put(&m, k->key[i], &k->val[i]);
    size_t wrong = 0;
    for (int i = 0; i < MANY; i += 2)
        wrong += qod_hmap_del(&m, k->key[i]) != &k->val[i];
    for (int i = 0; i < MANY; i++)
        wrong += qod_hmap_get(&m, k->key[i]) != (i % 2 ? &k->val[i] : NULL);
    size_t n = qod_hmap_count(&m);
    qod_hmap_dispose(&m);
    free(k);
    QT_EQ_INT(wrong, 0);
    QT_EQ_INT(n, MANY / 2);
}

QTEST(each_visits_every_entry_once)
{
    key_set *k = key_set_new();
    unsigned char *seen = calloc(MANY, 1);
    QT_TRUE(k && seen);
    qod_hmap m;
    qod_hmap_init(&m);
    for (int i = 0; i < MANY; i++)
        qod_hmap_put(&m, k->key[i], &k->val[i]);
    visit_ctx c = {.seen = seen, .key_matches = true};
    qod_hmap_each(&m, visit, &c);
    size_t missing = 0;
    for (int i = 0; i < MANY; i++)
        missing += !seen[i];
    qod_hmap_dispose(&m);
    free(seen);
    free(k);
    QT_EQ_INT(c.visits, MANY);
    QT_EQ_INT(c.dupes, 0);
    QT_EQ_INT(missing, 0);
    QT_TRUE(c.key_matches);
}

QTEST(each_stops_when_fn_returns_nonzero)
{
    key_set *k = key_set_new();
    unsigned char *seen = calloc(MANY, 1);
    QT_TRUE(k && seen);
    qod_hmap m;
    qod_hmap_init(&m);
    for (int i = 0; i < 100; i++)
        qod_hmap_put(&m, k->key[i], &k->val[i]);
    visit_ctx c = {.seen = seen, .stop_after = 10, .key_matches = true};
    qod_hmap_each(&m, visit, &c);
    qod_hmap_dispose(&m);
    free(seen);
    free(k);
    QT_EQ_INT(c.visits, 10);
}

QTEST(each_on_empty_map_calls_nothing)
{
    qod_hmap m;
    unsigned char seen[1] = {0};
    visit_ctx c = {.seen = seen, .key_matches = true};
    qod_hmap_init(&m);
    qod_hmap_each(&m, visit, &c);
    qod_hmap_dispose(&m);
    QT_EQ_INT(c.visits, 0);
}

/* A scan in steps of a few buckets, with the map doubling several times and losing other entries between steps,
 * visits every entry present throughout exactly once. */
QTEST(scan_visits_every_lasting_entry_once_while_the_map_grows_and_loses_entries)
{
    key_set *k = key_set_new();
    unsigned char *seen = calloc(MANY, 1);
    QT_TRUE(k && seen);
    qod_hmap m;
    qod_hmap_init(&m);
    const int lasting = 1000, removed = 1000;
    for (int i = 0; i < lasting + removed; i++)
        qod_hmap_put(&m, k->key[i], &k->val[i]);
    visit_ctx c = {.seen = seen, .key_matches = true};
    size_t cursor = 0, calls = 0, grew = 0, nb = m.nb;
    int stopped = 0, added = lasting + removed, gone = lasting;
    do {
        cursor = qod_hmap_scan(&m, cursor, 3, visit, &c, &stopped);
        calls++;
        for (int j = 0; j < 40 && added < MANY; j++, added++)
            qod_hmap_put(&m, k->key[added], &k->val[added]);
        if (gone < lasting + removed)
            qod_hmap_del(&m, k->key[gone++]);
        grew += m.nb != nb;
        nb = m.nb;
    } while (cursor && calls < 1000000);
    size_t missing = 0;
    for (int i = 0; i < lasting; i++)
        missing += !seen[i];
    qod_hmap_dispose(&m);
    free(seen);
    free(k);
    QT_EQ_INT(stopped, 0);
    QT_EQ_INT(cursor, 0);
    QT_TRUE(grew >= 3);
    QT_EQ_INT(c.dupes, 0);
    QT_EQ_INT(missing, 0);
    QT_TRUE(c.key_matches);
}

QTEST(scan_stops_when_fn_returns_nonzero_and_ends_at_once_on_an_empty_map)
{
    key_set *k = key_set_new();
    unsigned char *seen = calloc(MANY, 1);
    QT_TRUE(k && seen);
    qod_hmap m;
    qod_hmap_init(&m);
    int stopped = 1;
    visit_ctx c = {.seen = seen, .stop_after = 10, .key_matches = true};
    QT_EQ_INT(qod_hmap_scan(&m, 0, 100, visit, &c, &stopped), 0);
    QT_EQ_INT(stopped, 0);
    for (int i = 0; i < 100; i++)
        qod_hmap_put(&m, k->key[i], &k->val[i]);
    size_t cursor = 0, calls = 0;
    do
        cursor = qod_hmap_scan(&m, cursor, 1, visit, &c, &stopped);
    while (cursor && !stopped && ++calls < 1000);
    qod_hmap_dispose(&m);
    free(seen);
    free(k);
    QT_EQ_INT(stopped, 1);
    QT_EQ_INT(cursor, 0);
    QT_EQ_INT(c.visits, 10);
}

QTEST(dispose_leaves_an_empty_reusable_map)
{
    qod_hmap m;
    int a = 1;
    qod_hmap_init(&m);
    qod_hmap_put(&m, "a", &a);
    qod_hmap_dispose(&m);
    QT_EQ_INT(qod_hmap_count(&m), 0);
    QT_TRUE(qod_hmap_get(&m, "a") == NULL);
    QT_EQ_INT(qod_hmap_put(&m, "a", &a), QOD_OK);
    void *g = qod_hmap_get(&m, "a");
    qod_hmap_dispose(&m);
    QT_TRUE(g == &a);
}

QTEST(hash_is_stable_and_distinguishes)
{
    QT_TRUE(qod_hash_str("abc") == qod_hash_str("abc"));
    QT_TRUE(qod_hash_str("abc") != qod_hash_str("abd"));
    QT_TRUE(qod_hash_str("") != qod_hash_str("a"));
}

QTEST_MAIN(QT_CASE(empty_map), QT_CASE(put_then_get), QT_CASE(get_compares_key_text_not_pointer),
           QT_CASE(put_replaces_value_without_growing_count), QT_CASE(put_replace_takes_new_key_pointer),
           QT_CASE(del_returns_value_and_removes), QT_CASE(del_absent_returns_null), QT_CASE(empty_string_is_a_key),
           QT_CASE(many_keys_with_growth), QT_CASE(many_keys_delete_half), QT_CASE(each_visits_every_entry_once),
           QT_CASE(each_stops_when_fn_returns_nonzero), QT_CASE(each_on_empty_map_calls_nothing),
           QT_CASE(scan_visits_every_lasting_entry_once_while_the_map_grows_and_loses_entries),
           QT_CASE(scan_stops_when_fn_returns_nonzero_and_ends_at_once_on_an_empty_map),
           QT_CASE(dispose_leaves_an_empty_reusable_map), QT_CASE(hash_is_stable_and_distinguishes))
