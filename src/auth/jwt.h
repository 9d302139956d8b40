/* ES256 JSON Web Tokens (RFC 7515/7519) signed with a P-256 key kept in the data directory.
 * Verification is strict: alg must be ES256, kid must be ours, the signature must be the 64-byte JWS form,
 * and iss/exp/iat are checked. A verified token's claims can be cached (tokcache.h) so the hot path
 * does not redo ECDSA. */
#ifndef QOD_AUTH_JWT_H
#define QOD_AUTH_JWT_H

#include "util/buf.h"

#include <stddef.h>
#include <stdint.h>

/* Longest token accepted by qod_jwt_verify; longer input is rejected without decoding. */
#define QOD_JWT_MAX_LEN 4096

typedef struct qod_jwt_key qod_jwt_key;

/* Claims of our access tokens. Strings are NUL-terminated and truncated never: over-long values are errors. */
typedef struct {
    char iss[256];      /* issuer: the daemon's public URL */
    char sub[128];      /* subject: client_id (2-legged) or "tel:+…"/"ipv4:…" device (3-legged) */
    char client_id[64]; /* the app */
    char scope[512];    /* space-separated scopes */
    char jti[48];       /* unique token id */
    char device[160];   /* 3-legged device, as a compact JSON object text; empty for 2-legged */
    int64_t iat;        /* issued at, unix seconds */
    int64_t exp;        /* expiry, unix seconds */
} qod_jwt_claims;

/* Loads the PEM P-256 private key at path, or creates it (mode 0600, written atomically) when the file does
 * not exist. *out is owned by the caller. Errors: -errno, QOD_ERR_CRYPTO (unreadable or not a P-256 key). */
int qod_jwt_key_load_or_create(const char *path, qod_jwt_key **out);
/* Frees the key; NULL is a no-op. */
void qod_jwt_key_destroy(qod_jwt_key *key);
/* The key id: the RFC 7638 JWK thumbprint, base64url. Borrowed from the key. */
const char *qod_jwt_key_kid(const qod_jwt_key *key);
/* Appends the JWKS document {"keys":[{kty,crv,x,y,kid,use:"sig",alg:"ES256"}]} to out. */
int qod_jwt_key_jwks(const qod_jwt_key *key, qod_buf *out);

/* Signs claims into a compact JWS (header {"alg":"ES256","typ":"JWT","kid":…}); appends the token to out.
 * The device claim is emitted only when non-empty. Thread-safe. */
int qod_jwt_sign(const qod_jwt_key *key, const qod_jwt_claims *claims, qod_buf *out);
/* Verifies a compact token: QOD_OK and *out filled, or QOD_ERR_INVALID (malformed, bad alg/kid/signature,
 * wrong issuer, missing claim), QOD_ERR_RANGE (expired) or QOD_ERR_STATE (not valid yet: iat more than 60 s in
 * the future). Thread-safe. */
int qod_jwt_verify(const qod_jwt_key *key, const char *token, size_t len, const char *expected_iss, int64_t now_s,
                   qod_jwt_claims *out);

#endif
