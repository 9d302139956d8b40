/* Rate limiting with the generic cell rate algorithm (GCRA, a token bucket kept as one timestamp).
 * A fixed open-addressing table of 64-bit key hashes and atomic timestamps: taking a token is a hash, a probe and
 * one compare-and-swap — no lock, no allocation. Idle slots (full buckets) are reused by new keys, so a table
 * sized for the live keys also serves an unbounded stream of source addresses. */
#ifndef QOD_API_RATELIMIT_H
#define QOD_API_RATELIMIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct qod_ratelimit qod_ratelimit;

typedef struct {
    bool allowed;
    int64_t remaining;    /* whole requests left in the bucket after this one */
    double retry_after_s; /* when refused: seconds until one request is allowed */
    double reset_s;       /* seconds until the bucket is full again */
} qod_rl_result;

/* A table of at least `slots` entries (rounded up to a power of two). NULL on allocation failure. */
qod_ratelimit *qod_ratelimit_create(size_t slots);
/* Frees; NULL is a no-op. */
void qod_ratelimit_destroy(qod_ratelimit *rl);
/* Takes one token of key's bucket (rate per second, burst size >= 1) at now_ns (monotonic). rate <= 0 means no
 * limit (always allowed). When the table is full of busy keys the request is allowed (fail open) and counted. */
void qod_ratelimit_take(qod_ratelimit *rl, const char *key, double rate, double burst, int64_t now_ns,
                        qod_rl_result *out);
/* Requests allowed because the table was full (for metrics). */
uint64_t qod_ratelimit_overflows(const qod_ratelimit *rl);

#endif
