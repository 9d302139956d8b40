#include "notify/sign.h"

#include "util/b64.h"
#include "util/err.h"

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SECRET_PREFIX "whsec_"
#define MAX_KEY 128

static long secret_key(const char *secret, unsigned char *key, size_t cap)
{
    const char *b = secret;
    if (strncmp(b, SECRET_PREFIX, strlen(SECRET_PREFIX)) == 0)
        b += strlen(SECRET_PREFIX);
    long n = qod_b64_decode(b, strlen(b), key, cap, 0);
    return n > 0 ? n : -1;
}

static EVP_MAC *hmac_alg;
static pthread_key_t hmac_key;
static pthread_once_t hmac_once = PTHREAD_ONCE_INIT;

static void free_ctx(void *ctx)
{
    EVP_MAC_CTX_free(ctx);
}

/* The HMAC implementation is fetched once: a fetch takes a lock and searches the provider store, which cost as
 * much as the MAC itself for a callback. It stays for the life of the process. */
static void fetch_hmac(void)
{
    hmac_alg = EVP_MAC_fetch(NULL, "HMAC", NULL);
    if (pthread_key_create(&hmac_key, free_ctx) != 0) {
        EVP_MAC_free(hmac_alg);
        hmac_alg = NULL;
    }
}

/* This thread's HMAC-SHA256 context. Setting the digest fetches SHA-256 from the provider store, so it is done
 * once per thread; each message then only sets its key (EVP_MAC_init without parameters keeps the digest). Freed
 * when the thread ends. */
static EVP_MAC_CTX *thread_ctx(void)
{
    pthread_once(&hmac_once, fetch_hmac);
    if (!hmac_alg)
        return NULL;
    EVP_MAC_CTX *ctx = pthread_getspecific(hmac_key);
    if (ctx)
        return ctx;
    ctx = EVP_MAC_CTX_new(hmac_alg);
    OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string("digest", (char *)"SHA256", 0), OSSL_PARAM_END};
    if (!ctx || !EVP_MAC_CTX_set_params(ctx, params) || pthread_setspecific(hmac_key, ctx) != 0) {
        EVP_MAC_CTX_free(ctx);
        return NULL;
    }
    return ctx;
}

/* Raw HMAC-SHA256 of "id.ts.body". */
static int mac(const unsigned char *key, size_t klen, const char *msg_id, int64_t ts, const char *body, size_t len,
               unsigned char out[32])
{
    char prefix[256];
    int pl = snprintf(prefix, sizeof prefix, "%s.%lld.", msg_id, (long long)ts);
    if (pl < 0 || (size_t)pl >= sizeof prefix)
        return QOD_ERR_INVALID;
    EVP_MAC_CTX *ctx = thread_ctx();
    size_t olen = 0;
    int ok = ctx && EVP_MAC_init(ctx, key, klen, NULL) &&
             EVP_MAC_update(ctx, (const unsigned char *)prefix, (size_t)pl) &&
             EVP_MAC_update(ctx, (const unsigned char *)body, len) && EVP_MAC_final(ctx, out, &olen, 32) && olen == 32;
    return ok ? QOD_OK : QOD_ERR_CRYPTO;
}

int qod_webhook_sign(const char *secret, const char *msg_id, int64_t ts, const char *body, size_t len, qod_buf *out)
{
    unsigned char key[MAX_KEY], sig[32];
    long klen = secret_key(secret, key, sizeof key);
    if (klen < 0)
        return QOD_ERR_INVALID;
    int rc = mac(key, (size_t)klen, msg_id, ts, body, len, sig);
    char b64[64];
    if (rc == QOD_OK && qod_b64_encode(sig, sizeof sig, b64, sizeof b64, 0) < 0)
        rc = QOD_ERR_LIMIT;
    OPENSSL_cleanse(key, sizeof key);
    return rc ? rc : qod_buf_printf(out, "v1,%s", b64);
}

int qod_webhook_verify(const char *secret, const char *msg_id, const char *ts_text, const char *sig_header,
                       const char *body, size_t len, int64_t now, int64_t tolerance_s)
{
    char *end = NULL;
    long long ts = strtoll(ts_text, &end, 10);
    if (!*ts_text || *end)
        return QOD_ERR_INVALID;
    if (ts > now + tolerance_s || ts < now - tolerance_s)
        return QOD_ERR_RANGE;
    unsigned char key[MAX_KEY], want[32];
    long klen = secret_key(secret, key, sizeof key);
    if (klen < 0 || mac(key, (size_t)klen, msg_id, ts, body, len, want) != QOD_OK)
        return QOD_ERR_INVALID;
    OPENSSL_cleanse(key, sizeof key);
    int rc = QOD_ERR_DENIED;
    for (const char *p = sig_header; *p;) {
        while (*p == ' ')
            p++;
        const char *e = strchr(p, ' ');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        unsigned char got[40];
        if (n > 3 && strncmp(p, "v1,", 3) == 0) {
            long gl = qod_b64_decode(p + 3, n - 3, got, sizeof got, 0);
            if (gl == 32 && CRYPTO_memcmp(got, want, 32) == 0)
                rc = QOD_OK;
        }
        p += n;
    }
    return rc;
}
