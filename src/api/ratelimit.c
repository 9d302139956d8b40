#include "api/ratelimit.h"

#include "util/hmap.h"

#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>

#define PROBES 16

typedef struct {
    _Atomic uint64_t key; /* hash of the key; 0 = never used */
    _Atomic int64_t tat;  /* theoretical arrival time, ns: the bucket is full when tat <= now */
} slot;

struct qod_ratelimit {
    slot *v;
    size_t mask;
    _Atomic uint64_t overflows;
};

qod_ratelimit *qod_ratelimit_create(size_t slots)
{
    size_t n = 1024;
    while (n < slots)
        n *= 2;
    qod_ratelimit *rl = calloc(1, sizeof *rl);
    if (rl && !(rl->v = calloc(n, sizeof *rl->v))) {
        free(rl);
        return NULL;
    }
    if (rl)
        rl->mask = n - 1;
    return rl;
}

void qod_ratelimit_destroy(qod_ratelimit *rl)
{
    if (!rl)
        return;
    free(rl->v);
    free(rl);
}

uint64_t qod_ratelimit_overflows(const qod_ratelimit *rl)
{
    return atomic_load(&((qod_ratelimit *)rl)->overflows);
}

/* Finds the key's slot, or claims a free or idle one. */
static slot *find(qod_ratelimit *rl, uint64_t h, int64_t now)
{
    for (size_t i = 0; i < PROBES; i++) {
        slot *s = &rl->v[(h + i) & rl->mask];
        uint64_t k = atomic_load_explicit(&s->key, memory_order_acquire);
        if (k == h)
            return s;
        /* A slot whose bucket is full again holds no state worth keeping: take it over. */
        if ((k == 0 || atomic_load_explicit(&s->tat, memory_order_relaxed) <= now) &&
            atomic_compare_exchange_strong(&s->key, &k, h)) {
            atomic_store_explicit(&s->tat, now, memory_order_relaxed);
            return s;
        }
    }
    return NULL;
}

void qod_ratelimit_take(qod_ratelimit *rl, const char *key, double rate, double burst, int64_t now, qod_rl_result *out)
{
    *out = (qod_rl_result){true, 0, 0, 0};
    if (rate <= 0)
        return;
    if (burst < 1)
        burst = 1;
    uint64_t h = qod_hash_str(key) | 1;
    slot *s = find(rl, h, now);
    if (!s) {
        atomic_fetch_add(&rl->overflows, 1);
        return;
    }
    int64_t T = (int64_t)(1e9 / rate);                 /* one token every T ns */
    int64_t tau = (int64_t)((burst - 1) * 1e9 / rate); /* how far ahead of now the bucket may run */
    int64_t tat = atomic_load_explicit(&s->tat, memory_order_relaxed);
    for (;;) {
        int64_t base = tat > now ? tat : now;
        int64_t next = base + T;
        if (next - now > tau + T) {
            out->allowed = false;
            out->retry_after_s = (double)(next - T - tau - now) / 1e9;
            out->reset_s = (double)(tat - now) / 1e9;
            return;
        }
        if (atomic_compare_exchange_weak_explicit(&s->tat, &tat, next, memory_order_relaxed, memory_order_relaxed)) {
            out->remaining = (int64_t)floor((double)(tau + T - (next - now)) / (double)T);
            out->reset_s = (double)(next - now) / 1e9;
            return;
        }
    }
}
