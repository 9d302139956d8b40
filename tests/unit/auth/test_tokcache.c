#include "auth/tokcache.h"

#include "qtest.h"
#include "util/time.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>

/* Tokens of realistic length whose bytes differ by series and number. */
static size_t make_token(char *out, size_t cap, char series, int n)
{
    int len = snprintf(out, cap, "eyJhbGciOiJFUzI1NiJ9.%c%07d.c2lnbmF0dXJlLXBhZGRpbmctdG8tbG9vay1yZWFs", series, n);
    return (size_t)len;
}

static qod_jwt_claims make_claims(const char *client_id, int64_t exp)
{
    qod_jwt_claims c;
    memset(&c, 0, sizeof c);
    snprintf(c.iss, sizeof c.iss, "https://qod.example");
    snprintf(c.sub, sizeof c.sub, "tel:+33612345678");
    snprintf(c.client_id, sizeof c.client_id, "%s", client_id);
    snprintf(c.scope, sizeof c.scope, "qod quality-on-demand:sessions:create");
    snprintf(c.jti, sizeof c.jti, "jti-%lld", (long long)exp);
    snprintf(c.device, sizeof c.device, "{\"phoneNumber\":\"+33612345678\"}");
    c.iat = exp - 3600;
    c.exp = exp;
    return c;
}

static int64_t wall_s(void)
{
    return qod_time_wall_ms() / 1000;
}

QTEST(put_then_get_returns_every_claim)
{
    char tok[128];
    size_t len = make_token(tok, sizeof tok, 'a', 1);
    qod_jwt_claims in = make_claims("app-a", wall_s() + 3600), out;
    qod_tokcache *c = qod_tokcache_create(1000);
    memset(&out, 0x55, sizeof out);
    qod_tokcache_put(c, tok, len, &in);
    bool hit = qod_tokcache_get(c, tok, len, wall_s(), &out);
    qod_tokcache_destroy(c);
    QT_TRUE(hit);
    QT_EQ_STR(out.iss, in.iss);
    QT_EQ_STR(out.sub, in.sub);
    QT_EQ_STR(out.client_id, in.client_id);
    QT_EQ_STR(out.scope, in.scope);
    QT_EQ_STR(out.jti, in.jti);
    QT_EQ_STR(out.device, in.device);
    QT_EQ_INT(out.iat, in.iat);
    QT_EQ_INT(out.exp, in.exp);
}

QTEST(unknown_token_misses)
{
    char tok[128];
    size_t len = make_token(tok, sizeof tok, 'a', 1);
    qod_jwt_claims out;
    qod_tokcache *c = qod_tokcache_create(1000);
    bool hit = qod_tokcache_get(c, tok, len, wall_s(), &out);
    qod_tokcache_destroy(c);
    QT_TRUE(!hit);
}

QTEST(different_bytes_of_the_same_length_miss)
{
    char tok[128], other[128];
    size_t len = make_token(tok, sizeof tok, 'a', 1);
    qod_jwt_claims in = make_claims("app-a", wall_s() + 3600), out;
    qod_tokcache *c = qod_tokcache_create(1000);
    memcpy(other, tok, len + 1);
    other[len - 1] ^= 1;
    qod_tokcache_put(c, tok, len, &in);
    bool hit = qod_tokcache_get(c, other, len, wall_s(), &out);
    bool prefix_hit = qod_tokcache_get(c, tok, len - 1, wall_s(), &out);
    qod_tokcache_destroy(c);
    QT_TRUE(!hit);
    QT_TRUE(!prefix_hit);
}

QTEST(entry_expires_at_exp)
{
    char tok[128];
    size_t len = make_token(tok, sizeof tok, 'a', 1);
    int64_t exp = wall_s() + 3600;
    qod_jwt_claims in = make_claims("app-a", exp), out;
    qod_tokcache *c = qod_tokcache_create(1000);
    qod_tokcache_put(c, tok, len, &in);
    bool before = qod_tokcache_get(c, tok, len, exp - 1, &out);
    bool at = qod_tokcache_get(c, tok, len, exp, &out);
    qod_tokcache_destroy(c);
    QT_TRUE(before);
    QT_TRUE(!at);
}

QTEST(already_expired_token_is_not_cached)
{
    char tok[128];
    size_t len = make_token(tok, sizeof tok, 'a', 1);
    int64_t exp = wall_s() - 1;
    qod_jwt_claims in = make_claims("app-a", exp), out;
    qod_tokcache *c = qod_tokcache_create(1000);
    qod_tokcache_put(c, tok, len, &in);
    bool hit = qod_tokcache_get(c, tok, len, exp - 10, &out);
    qod_tokcache_destroy(c);
    QT_TRUE(!hit);
}

QTEST(putting_a_cached_token_again_keeps_it)
{
    char tok[128];
    size_t len = make_token(tok, sizeof tok, 'a', 1);
    qod_jwt_claims in = make_claims("app-a", wall_s() + 3600), out;
    qod_tokcache *c = qod_tokcache_create(1000);
    qod_tokcache_put(c, tok, len, &in);
    qod_tokcache_put(c, tok, len, &in);
    bool hit = qod_tokcache_get(c, tok, len, wall_s(), &out);
    qod_tokcache_destroy(c);
    QT_TRUE(hit);
    QT_EQ_STR(out.jti, in.jti);
}

/* One slot per shard: a thousand puts must evict (and free, as ASan checks) all but the newest per shard. */
QTEST(full_cache_evicts_the_oldest)
{
    char tok[128];
    size_t len = 0;
    qod_jwt_claims in = make_claims("app-a", wall_s() + 3600), out;
    qod_tokcache *c = qod_tokcache_create(64);
    for (int i = 0; i < 1000; i++) {
        len = make_token(tok, sizeof tok, 'a', i);
        qod_tokcache_put(c, tok, len, &in);
    }
    bool newest = qod_tokcache_get(c, tok, len, wall_s(), &out);
    len = make_token(tok, sizeof tok, 'a', 0);
    bool first = qod_tokcache_get(c, tok, len, wall_s(), &out);
    qod_tokcache_destroy(c);
    QT_TRUE(newest);
    QT_TRUE(!first);
}

/* Old long-lived tokens ('a') must outlive a wave of short-lived ones ('e') once those expire: a full shard drops
 * expired entries before its oldest. The counts give every shard about 1 'a', 500 'e' and 700 'n' against 1000
 * slots, so each shard fills at least once while the live entries always fit. */
QTEST(expired_entries_are_evicted_before_the_oldest)
{
    char tok[128];
    int64_t now = wall_s();
    qod_jwt_claims long_lived = make_claims("app-a", now + 7200), short_lived = make_claims("app-e", now + 10), out;
    qod_tokcache *c = qod_tokcache_create(64000);
    int survivors = 0;
    for (int i = 0; i < 64; i++)
        qod_tokcache_put(c, tok, make_token(tok, sizeof tok, 'a', i), &long_lived);
    for (int i = 0; i < 32000; i++)
        qod_tokcache_put(c, tok, make_token(tok, sizeof tok, 'e', i), &short_lived);
    qod_time_set_wall_offset(3600 * 1000);
    for (int i = 0; i < 44800; i++)
        qod_tokcache_put(c, tok, make_token(tok, sizeof tok, 'n', i), &long_lived);
    for (int i = 0; i < 64; i++)
        survivors += qod_tokcache_get(c, tok, make_token(tok, sizeof tok, 'a', i), wall_s(), &out);
    qod_time_set_wall_offset(0);
    qod_tokcache_destroy(c);
    QT_EQ_INT(survivors, 64);
}

QTEST(forget_client_removes_only_that_client)
{
    char tok[128];
    qod_jwt_claims a = make_claims("app-a", wall_s() + 3600), b = make_claims("app-b", wall_s() + 3600), out;
    /* About 38 entries per shard against a limit of 63: nothing is evicted, but removals shift many probe runs. */
    qod_tokcache *c = qod_tokcache_create(4000);
    int a_hits = 0, b_hits = 0;
    for (int i = 0; i < 1200; i++) {
        qod_tokcache_put(c, tok, make_token(tok, sizeof tok, 'a', i), &a);
        qod_tokcache_put(c, tok, make_token(tok, sizeof tok, 'b', i), &b);
    }
    qod_tokcache_forget_client(c, "app-a");
    for (int i = 0; i < 1200; i++) {
        a_hits += qod_tokcache_get(c, tok, make_token(tok, sizeof tok, 'a', i), wall_s(), &out);
        b_hits += qod_tokcache_get(c, tok, make_token(tok, sizeof tok, 'b', i), wall_s(), &out);
    }
    qod_tokcache_destroy(c);
    QT_EQ_INT(a_hits, 0);
    QT_EQ_INT(b_hits, 1200);
}

QTEST(forget_client_matches_the_whole_id)
{
    char tok[128];
    size_t len = make_token(tok, sizeof tok, 'a', 1);
    qod_jwt_claims in = make_claims("app-a", wall_s() + 3600), out;
    qod_tokcache *c = qod_tokcache_create(1000);
    qod_tokcache_put(c, tok, len, &in);
    qod_tokcache_forget_client(c, "app-");
    qod_tokcache_forget_client(c, "app-ab");
    bool hit = qod_tokcache_get(c, tok, len, wall_s(), &out);
    qod_tokcache_destroy(c);
    QT_TRUE(hit);
}

typedef struct {
    qod_tokcache *cache;
    char series;
    int wrong;
} worker;

/* Each thread caches its own tokens and reads them back while the others do the same on shared shards. */
static void *work(void *arg)
{
    worker *w = arg;
    char tok[128], client[16];
    qod_jwt_claims out;
    snprintf(client, sizeof client, "app-%c", w->series);
    qod_jwt_claims in = make_claims(client, wall_s() + 3600);
    for (int i = 0; i < 5000; i++) {
        size_t len = make_token(tok, sizeof tok, w->series, i % 500);
        qod_tokcache_put(w->cache, tok, len, &in);
        if (!qod_tokcache_get(w->cache, tok, len, wall_s(), &out) || strcmp(out.client_id, client) != 0)
            w->wrong++;
    }
    return NULL;
}

QTEST(concurrent_puts_and_gets_see_their_own_entries)
{
    pthread_t t[4];
    worker w[4];
    qod_tokcache *c = qod_tokcache_create(4000);
    int wrong = 0;
    for (int i = 0; i < 4; i++) {
        w[i] = (worker){c, (char)('p' + i), 0};
        pthread_create(&t[i], NULL, work, &w[i]);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        wrong += w[i].wrong;
    }
    qod_tokcache_destroy(c);
    QT_EQ_INT(wrong, 0);
}

QTEST(destroy_null_is_a_no_op)
{
    qod_tokcache_destroy(NULL);
    QT_TRUE(1);
}

QTEST_MAIN(QT_CASE(put_then_get_returns_every_claim), QT_CASE(unknown_token_misses),
           QT_CASE(different_bytes_of_the_same_length_miss), QT_CASE(entry_expires_at_exp),
           QT_CASE(already_expired_token_is_not_cached), QT_CASE(putting_a_cached_token_again_keeps_it),
           QT_CASE(full_cache_evicts_the_oldest), QT_CASE(expired_entries_are_evicted_before_the_oldest),
           QT_CASE(forget_client_removes_only_that_client), QT_CASE(forget_client_matches_the_whole_id),
           QT_CASE(concurrent_puts_and_gets_see_their_own_entries), QT_CASE(destroy_null_is_a_no_op))
