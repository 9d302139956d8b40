/* Randomness and identifiers: cryptographic random bytes (OpenSSL), UUIDv4, random tokens. */
#ifndef QOD_UTIL_RAND_H
#define QOD_UTIL_RAND_H

#include <stdbool.h>
#include <stddef.h>

#define QOD_UUID_LEN 36

/* Fills buf with n cryptographically random bytes; QOD_OK or QOD_ERR_CRYPTO. */
int qod_rand_bytes(void *buf, size_t n);
/* Writes a random RFC 4122 version-4 UUID, lower case, into out (>= 37 bytes). */
int qod_uuid_v4(char out[QOD_UUID_LEN + 1]);
/* Writes a time-ordered RFC 9562 version-7 UUID (48-bit unix ms, then 74 random bits): keys that follow creation
 * order keep the store's B-trees writing at their end instead of all over. The random bits come from a per-thread
 * pool of RAND_bytes output (identifiers, not secrets). */
int qod_uuid_v7(char out[QOD_UUID_LEN + 1]);
/* Writes a version-4-shaped id from the fast non-cryptographic generator (correlation ids, never secrets). */
void qod_uuid_fast(char out[QOD_UUID_LEN + 1]);
/* True when s is a UUID in 8-4-4-4-12 hex form (any version, either case). */
bool qod_uuid_valid(const char *s);
/* Writes n random bytes as base64url (no padding) into out (cap bytes). */
int qod_rand_token(size_t n, char *out, size_t cap);
/* Uniform random double in [0, 1) from a fast non-cryptographic per-thread generator (jitter, sampling). */
double qod_rand_unit(void);

#endif
