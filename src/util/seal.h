/* Secrets at rest: values such as webhook signing secrets and callback bearer tokens are stored sealed
 * (AES-256-GCM under a key file in the data directory, 0600), so the database file never holds them in clear.
 * Sealed text looks like "sealed:v1:<base64url(nonce | ciphertext | tag)>". */
#ifndef QOD_UTIL_SEAL_H
#define QOD_UTIL_SEAL_H

#include "util/buf.h"

#include <stdbool.h>
#include <stddef.h>

typedef struct qod_seal qod_seal;

/* Loads the 32-byte key at path or creates it (0600, written atomically). */
int qod_seal_open(const char *path, qod_seal **out);
/* Frees (and wipes) the key; NULL is a no-op. */
void qod_seal_close(qod_seal *s);
/* Appends the sealed form of plaintext to out. */
int qod_seal_encrypt(const qod_seal *s, const char *plaintext, qod_buf *out);
/* Opens a sealed value into *out (owned by the caller, free). Text that is not sealed is copied as is, so
 * values written before sealing existed still read. QOD_ERR_CRYPTO when the value was tampered with. */
int qod_seal_decrypt(const qod_seal *s, const char *text, char **out);
/* True when text is sealed. */
bool qod_sealed(const char *text);

#endif
