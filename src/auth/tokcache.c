#include "auth/tokcache.h"

#include "util/ct.h"
#include "util/time.h"

#include <openssl/crypto.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

/* Enough shards that HTTP threads rarely meet on one lock; the shard is picked by the top bits of the hash. */
#define QOD_TOKCACHE_SHARDS 64
#define QOD_TOKCACHE_SHARD_BITS 6
/* A bound on one shard (16M entries) that keeps the table size computation far from overflow. */
#define QOD_TOKCACHE_SHARD_MAX ((size_t)1 << 24)
#define QOD_TOKCACHE_NSTR 6

/* The claim strings kept per entry. client_id comes first so that forget_client finds it without a walk. */
#define QOD_TOKCACHE_FIELD(f)                                                                                          \
    {                                                                                                                  \
        offsetof(qod_jwt_claims, f), sizeof(((qod_jwt_claims *)0)->f)                                                  \
    }
static const struct {
    size_t off;
    size_t cap;
} fields[QOD_TOKCACHE_NSTR] = {
    QOD_TOKCACHE_FIELD(client_id), QOD_TOKCACHE_FIELD(iss), QOD_TOKCACHE_FIELD(sub),
    QOD_TOKCACHE_FIELD(scope),     QOD_TOKCACHE_FIELD(jti), QOD_TOKCACHE_FIELD(device),
};

/* One cached token in a single allocation: the token bytes, then each claim string without its terminator.
 * A qod_jwt_claims is over 1 KiB of mostly unused arrays; packed, a token of about 1 KiB with every scope costs
 * about 1.9 KiB resident (malloc's overhead included), so a full cache of 100k is under 200 MB. */
typedef struct {
    int64_t iat;
    uint32_t token_len;
    uint16_t str_len[QOD_TOKCACHE_NSTR];
    char bytes[];
} record;

typedef struct {
    uint64_t hash;
    int64_t exp;
    uint64_t seq; /* insertion order, to find the oldest entry */
    record *rec;  /* owned; NULL marks a free slot */
} slot;

typedef struct {
    _Alignas(64) pthread_mutex_t lock; /* each shard starts a cache line, so two locks never share one */
    slot *slots;                       /* open addressing with linear probing, mask + 1 slots */
    size_t mask;
    size_t used;
    size_t max; /* at most half the slots are used, which keeps probe runs short */
    uint64_t seq;
} shard;

struct qod_tokcache {
    shard shards[QOD_TOKCACHE_SHARDS];
    size_t ready; /* shards whose mutex is initialised, for a clean partial destroy */
};

static uint64_t mix64(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9u;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebu;
    x ^= x >> 31;
    return x;
}

/* A fast non-cryptographic hash, 8 bytes a step, of the token's last HASH_TAIL bytes and its length. A JWT ends
 * with its signature, which is what differs most between two tokens; hashing the whole token of about 1 KiB was
 * a visible share of a GET. Only tokens that passed verification are cached, so an attacker cannot choose what
 * goes in and cannot flood a probe run; a hit always compares the full token as well. */
#define HASH_TAIL 64
static uint64_t hash_bytes(const char *p, size_t n)
{
    uint64_t h = 0x9e3779b97f4a7c15u ^ n, w;
    if (n > HASH_TAIL) {
        p += n - HASH_TAIL;
        n = HASH_TAIL;
    }
    for (; n >= 8; p += 8, n -= 8) {
        memcpy(&w, p, 8);
        h = (h ^ w) * 0x9e3779b97f4a7c15u;
        h ^= h >> 32;
    }
    w = 0;
    memcpy(&w, p, n);
    return mix64(h ^ w);
}

static shard *shard_of(qod_tokcache *c, uint64_t h)
{
    return &c->shards[h >> (64 - QOD_TOKCACHE_SHARD_BITS)];
}

static bool slot_is(const slot *e, uint64_t h, const char *token, size_t len)
{
    /* Constant time over the token bytes: how much of a guess matched must not show in the timing. */
    return e->hash == h && e->rec->token_len == len && qod_ct_equal(e->rec->bytes, token, len);
}

/* The slot holding token, or the free slot that ends its probe run. */
static size_t probe(const shard *s, uint64_t h, const char *token, size_t len)
{
    size_t i = h & s->mask;
    while (s->slots[i].rec && !slot_is(&s->slots[i], h, token, len))
        i = (i + 1) & s->mask;
    return i;
}

/* Frees slot i and moves later members of its probe run back, so that no lookup meets a hole before its entry
 * (deletion without tombstones). */
static void remove_at(shard *s, size_t i)
{
    free(s->slots[i].rec);
    s->slots[i].rec = NULL;
    s->used--;
    for (size_t j = (i + 1) & s->mask; s->slots[j].rec; j = (j + 1) & s->mask) {
        size_t home = s->slots[j].hash & s->mask;
        /* The entry at j may fill the hole only if its home is not cyclically inside (i, j]. */
        if (((j - home) & s->mask) >= ((j - i) & s->mask)) {
            s->slots[i] = s->slots[j];
            s->slots[j].rec = NULL;
            i = j;
        }
    }
}

/* Removes every entry for which doomed() is true. After a removal the same index is looked at again, because
 * remove_at may have moved a not yet visited entry into it. */
static void remove_if(shard *s, bool (*doomed)(const slot *, const void *), const void *arg)
{
    size_t i = 0;
    while (i <= s->mask) {
        if (s->slots[i].rec && doomed(&s->slots[i], arg))
            remove_at(s, i);
        else
            i++;
    }
}

static bool is_expired(const slot *e, const void *now_s)
{
    return e->exp <= *(const int64_t *)now_s;
}

typedef struct {
    const char *id;
    size_t len;
} client_ref;

static bool is_client(const slot *e, const void *ref)
{
    const client_ref *c = ref;
    return e->rec->str_len[0] == c->len && memcmp(e->rec->bytes + e->rec->token_len, c->id, c->len) == 0;
}

/* Makes room in a full shard: every expired entry goes, or the oldest one when none has expired. The scan is
 * linear, but it runs only on a put into a full shard, after an ECDSA verification that costs far more. */
static void make_room(shard *s, int64_t now_s)
{
    size_t oldest = SIZE_MAX;
    remove_if(s, is_expired, &now_s);
    if (s->used < s->max)
        return;
    for (size_t i = 0; i <= s->mask; i++)
        if (s->slots[i].rec && (oldest == SIZE_MAX || s->slots[i].seq < s->slots[oldest].seq))
            oldest = i;
    if (oldest != SIZE_MAX)
        remove_at(s, oldest);
}

static record *record_pack(const char *token, size_t len, const qod_jwt_claims *claims)
{
    size_t n[QOD_TOKCACHE_NSTR], total = len;
    record *r;
    for (size_t i = 0; i < QOD_TOKCACHE_NSTR; i++) {
        /* Bounded by cap - 1 so that unpacking always leaves room for the terminator. */
        n[i] = strnlen((const char *)claims + fields[i].off, fields[i].cap - 1);
        total += n[i];
    }
    r = malloc(sizeof *r + total);
    if (r) {
        char *p = r->bytes + len;
        r->iat = claims->iat;
        r->token_len = (uint32_t)len;
        memcpy(r->bytes, token, len);
        for (size_t i = 0; i < QOD_TOKCACHE_NSTR; i++) {
            r->str_len[i] = (uint16_t)n[i];
            memcpy(p, (const char *)claims + fields[i].off, n[i]);
            p += n[i];
        }
    }
    return r;
}

static void record_unpack(const record *r, int64_t exp, qod_jwt_claims *out)
{
    const char *p = r->bytes + r->token_len;
    for (size_t i = 0; i < QOD_TOKCACHE_NSTR; i++) {
        char *dst = (char *)out + fields[i].off;
        memcpy(dst, p, r->str_len[i]);
        dst[r->str_len[i]] = '\0';
        p += r->str_len[i];
    }
    out->iat = r->iat;
    out->exp = exp;
}

qod_tokcache *qod_tokcache_create(size_t capacity)
{
    size_t per = capacity / QOD_TOKCACHE_SHARDS + (capacity % QOD_TOKCACHE_SHARDS != 0), size = 2;
    qod_tokcache *c = NULL;
    if (per > QOD_TOKCACHE_SHARD_MAX)
        goto out;
    per = per ? per : 1;
    while (size < 2 * per)
        size *= 2;
    c = aligned_alloc(_Alignof(qod_tokcache), sizeof *c);
    if (!c)
        goto out;
    memset(c, 0, sizeof *c);
    for (; c->ready < QOD_TOKCACHE_SHARDS; c->ready++) {
        shard *s = &c->shards[c->ready];
        s->slots = calloc(size, sizeof *s->slots);
        if (!s->slots || pthread_mutex_init(&s->lock, NULL) != 0) {
            free(s->slots);
            s->slots = NULL;
            qod_tokcache_destroy(c);
            c = NULL;
            goto out;
        }
        s->mask = size - 1;
        s->max = per;
    }
out:
    return c;
}

void qod_tokcache_destroy(qod_tokcache *c)
{
    if (!c)
        return;
    for (size_t k = 0; k < c->ready; k++) {
        shard *s = &c->shards[k];
        for (size_t i = 0; i <= s->mask; i++)
            free(s->slots[i].rec);
        free(s->slots);
        pthread_mutex_destroy(&s->lock);
    }
    free(c);
}

bool qod_tokcache_get(qod_tokcache *c, const char *token, size_t len, int64_t now_s, qod_jwt_claims *out)
{
    uint64_t h = hash_bytes(token, len);
    shard *s = shard_of(c, h);
    bool hit = false;
    pthread_mutex_lock(&s->lock);
    size_t i = probe(s, h, token, len);
    if (s->slots[i].rec && s->slots[i].exp <= now_s) {
        remove_at(s, i);
    } else if (s->slots[i].rec) {
        record_unpack(s->slots[i].rec, s->slots[i].exp, out);
        hit = true;
    }
    pthread_mutex_unlock(&s->lock);
    return hit;
}

void qod_tokcache_put(qod_tokcache *c, const char *token, size_t len, const qod_jwt_claims *claims)
{
    int64_t now_s = qod_time_wall_ms() / 1000;
    uint64_t h = hash_bytes(token, len);
    shard *s = shard_of(c, h);
    /* Packed before taking the lock, so that malloc is not done under it. A failed allocation is only a miss. */
    record *rec = len && len <= QOD_JWT_MAX_LEN && claims->exp > now_s ? record_pack(token, len, claims) : NULL;
    if (!rec)
        return;
    pthread_mutex_lock(&s->lock);
    size_t i = probe(s, h, token, len);
    if (!s->slots[i].rec) {
        if (s->used >= s->max) {
            make_room(s, now_s);
            i = probe(s, h, token, len);
        }
        s->slots[i] = (slot){.hash = h, .exp = claims->exp, .seq = s->seq++, .rec = rec};
        s->used++;
        rec = NULL;
    }
    pthread_mutex_unlock(&s->lock);
    free(rec); /* the token was already cached */
}

void qod_tokcache_forget_client(qod_tokcache *c, const char *client_id)
{
    client_ref ref = {client_id, strlen(client_id)};
    for (size_t k = 0; k < QOD_TOKCACHE_SHARDS; k++) {
        pthread_mutex_lock(&c->shards[k].lock);
        remove_if(&c->shards[k], is_client, &ref);
        pthread_mutex_unlock(&c->shards[k].lock);
    }
}
