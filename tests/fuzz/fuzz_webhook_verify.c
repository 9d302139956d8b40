/* Fuzzes the Standard Webhooks signatures (src/notify/sign.h) that every callback carries and that
 * `qodctl webhook verify` checks. The input is a secret, a message id, a timestamp text and a webhook-signature
 * header, separated by NUL bytes, then the body. Properties:
 * - verifying arbitrary headers never crashes and returns one of the documented codes;
 * - whenever qod_webhook_sign accepts the secret and id, the signature it makes verifies, also as one entry among
 *   the fuzzed header's; it no longer verifies once the body changes or the timestamp is out of tolerance. */
#include "fuzz.h"

#include "notify/sign.h"
#include "util/err.h"

#define NOW 1767225600 /* 2026-01-01T00:00:00Z */
#define TOLERANCE 300

static void sign_then_verify(const char *secret, const char *id, int64_t ts, const char *other, const char *body,
                             size_t len)
{
    qod_buf sig, header;
    char ts_text[24];
    qod_buf_init(&sig, 0);
    qod_buf_init(&header, 0);
    if (qod_webhook_sign(secret, id, ts, body, len, &sig) == QOD_OK) {
        snprintf(ts_text, sizeof ts_text, "%lld", (long long)ts);
        FUZZ_CHECK(strncmp(sig.data, "v1,", 3) == 0 && sig.len == 3 + 44);
        FUZZ_CHECK(qod_webhook_verify(secret, id, ts_text, sig.data, body, len, ts, 0) == QOD_OK);
        /* One signature among others (a secret being rotated). */
        qod_buf_printf(&header, "%s %s", other, sig.data);
        FUZZ_CHECK(qod_webhook_verify(secret, id, ts_text, header.data, body, len, ts, 0) == QOD_OK);
        FUZZ_CHECK(qod_webhook_verify(secret, id, ts_text, sig.data, body, len, ts + TOLERANCE + 1, TOLERANCE) ==
                   QOD_ERR_RANGE);
        /* A changed body: one byte more. */
        char *longer = malloc(len + 1);
        if (!longer)
            abort();
        memcpy(longer, body, len);
        longer[len] = 'x';
        FUZZ_CHECK(qod_webhook_verify(secret, id, ts_text, sig.data, longer, len + 1, ts, 0) == QOD_ERR_DENIED);
        free(longer);
    }
    qod_buf_dispose(&sig);
    qod_buf_dispose(&header);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_in in = {data, size};
    char *secret = fuzz_next(&in), *id = fuzz_next(&in), *ts = fuzz_next(&in), *header = fuzz_next(&in);
    /* The body is the rest, without a terminator: signatures cover exactly len bytes. */
    const char *body = (const char *)in.p;
    int rc = qod_webhook_verify(secret, id, ts, header, body, in.n, NOW, TOLERANCE);
    FUZZ_CHECK(rc == QOD_OK || rc == QOD_ERR_DENIED || rc == QOD_ERR_RANGE || rc == QOD_ERR_INVALID);
    /* A timestamp near now, derived from the header's length so that it varies with the input. */
    sign_then_verify(secret, id, NOW - (int64_t)(strlen(header) % 1000), header, body, in.n);
    free(secret);
    free(id);
    free(ts);
    free(header);
    return 0;
}
