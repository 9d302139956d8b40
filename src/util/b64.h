/* Base64 (RFC 4648 §4) and base64url without padding (§5, as JWT and JWK use it). */
#ifndef QOD_UTIL_B64_H
#define QOD_UTIL_B64_H

#include <stddef.h>

/* Encoded length including the NUL terminator. */
size_t qod_b64_enc_len(size_t n, int url);
/* Encodes n bytes into out (cap bytes, NUL-terminated). url=1: base64url without padding. Returns length or -1. */
long qod_b64_encode(const void *in, size_t n, char *out, size_t cap, int url);
/* Decodes; url=1 accepts base64url without padding, url=0 standard with padding. Rejects any other byte.
 * Returns the decoded length, or -1 on malformed input or when out (cap bytes) is too small. */
long qod_b64_decode(const char *in, size_t n, unsigned char *out, size_t cap, int url);

#endif
