/* A bounded cache of verified access tokens, so an authenticated request costs a hash lookup instead of an
 * ECDSA verification. Sharded with one short lock per shard; no allocation on a hit. */
#ifndef QOD_AUTH_TOKCACHE_H
#define QOD_AUTH_TOKCACHE_H

#include "auth/jwt.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct qod_tokcache qod_tokcache;

/* Creates a cache holding at most `capacity` tokens (rounded up per shard). NULL on allocation failure. */
qod_tokcache *qod_tokcache_create(size_t capacity);
/* Frees the cache; NULL is a no-op. */
void qod_tokcache_destroy(qod_tokcache *c);
/* True and *out filled when token (exact bytes) was cached and has not expired at now_s. */
bool qod_tokcache_get(qod_tokcache *c, const char *token, size_t len, int64_t now_s, qod_jwt_claims *out);
/* Caches a verified token until claims->exp. When a shard is full, expired or oldest entries are evicted. */
void qod_tokcache_put(qod_tokcache *c, const char *token, size_t len, const qod_jwt_claims *claims);
/* Removes every cached token of client_id (app deleted or secret rotated). */
void qod_tokcache_forget_client(qod_tokcache *c, const char *client_id);

#endif
