#include "notify/sign.h"
#include "util/buf.h"
#include "util/err.h"

#include "qtest.h"

#include <pthread.h>
#include <stdint.h>
#include <string.h>

/* The published Standard Webhooks test vector (standard-webhooks/standard-webhooks, libraries' tests). */
#define VEC_SECRET "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
#define VEC_ID "msg_p5jXN8AQM9LWM0D4loKWxJek"
#define VEC_TS 1614265330
#define VEC_TS_TEXT "1614265330"
#define VEC_BODY "{\"test\": 2432232314}"
#define VEC_SIG "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
/* Another valid secret (32 bytes of key). */
#define OTHER_SECRET "whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="

static int verify_vec(const char *secret, const char *id, const char *ts, const char *sig, const char *body,
                      int64_t now)
{
    return qod_webhook_verify(secret, id, ts, sig, body, strlen(body), now, 300);
}

/* Signs the published vector's message; the signature header goes to got. */
static int sign_vec(char got[128])
{
    qod_buf b;
    qod_buf_init(&b, 0);
    int rc = qod_webhook_sign(VEC_SECRET, VEC_ID, VEC_TS, VEC_BODY, strlen(VEC_BODY), &b);
    snprintf(got, 128, "%s", b.data ? b.data : "");
    qod_buf_dispose(&b);
    return rc;
}

QTEST(sign_matches_published_vector)
{
    char got[128];
    QT_EQ_INT(sign_vec(got), QOD_OK);
    QT_EQ_STR(got, VEC_SIG);
}

QTEST(sign_accepts_secret_without_prefix)
{
    qod_buf b;
    qod_buf_init(&b, 0);
    int rc = qod_webhook_sign(&VEC_SECRET[sizeof "whsec_" - 1], VEC_ID, VEC_TS, VEC_BODY, strlen(VEC_BODY), &b);
    char got[128];
    snprintf(got, sizeof got, "%s", b.data ? b.data : "");
    qod_buf_dispose(&b);
    QT_EQ_INT(rc, QOD_OK);
    QT_EQ_STR(got, VEC_SIG);
}

QTEST(sign_appends_so_two_secrets_make_a_two_signature_header)
{
    qod_buf b;
    qod_buf_init(&b, 0);
    int rc1 = qod_webhook_sign(OTHER_SECRET, VEC_ID, VEC_TS, VEC_BODY, strlen(VEC_BODY), &b);
    int rc2 = qod_buf_puts(&b, " ");
    int rc3 = qod_webhook_sign(VEC_SECRET, VEC_ID, VEC_TS, VEC_BODY, strlen(VEC_BODY), &b);
    char hdr[256];
    snprintf(hdr, sizeof hdr, "%s", b.data ? b.data : "");
    qod_buf_dispose(&b);
    QT_EQ_INT(rc1, QOD_OK);
    QT_EQ_INT(rc2, QOD_OK);
    QT_EQ_INT(rc3, QOD_OK);
    const char *sp = strchr(hdr, ' ');
    QT_TRUE(sp != NULL);
    QT_EQ_STR(sp + 1, VEC_SIG);
    QT_TRUE(strncmp(hdr, "v1,", 3) == 0);
    QT_EQ_INT(verify_vec(VEC_SECRET, VEC_ID, VEC_TS_TEXT, hdr, VEC_BODY, VEC_TS), QOD_OK);
    QT_EQ_INT(verify_vec(OTHER_SECRET, VEC_ID, VEC_TS_TEXT, hdr, VEC_BODY, VEC_TS), QOD_OK);
}

QTEST(sign_rejects_malformed_secret)
{
    static const char *const bad[] = {"whsec_", "whsec_!!!!notbase64!!!!", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaS", ""};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        qod_buf b;
        qod_buf_init(&b, 0);
        int rc = qod_webhook_sign(bad[i], VEC_ID, VEC_TS, VEC_BODY, strlen(VEC_BODY), &b);
        qod_buf_dispose(&b);
        if (rc != QOD_ERR_INVALID)
            QT_FAIL_("secret \"%s\": rc %d, expected QOD_ERR_INVALID", bad[i], rc);
    }
}

QTEST(verify_accepts_published_vector)
{
    QT_EQ_INT(verify_vec(VEC_SECRET, VEC_ID, VEC_TS_TEXT, VEC_SIG, VEC_BODY, VEC_TS), QOD_OK);
}

QTEST(verify_accepts_timestamp_at_the_tolerance_edges)
{
    QT_EQ_INT(verify_vec(VEC_SECRET, VEC_ID, VEC_TS_TEXT, VEC_SIG, VEC_BODY, VEC_TS + 300), QOD_OK);
    QT_EQ_INT(verify_vec(VEC_SECRET, VEC_ID, VEC_TS_TEXT, VEC_SIG, VEC_BODY, VEC_TS - 300), QOD_OK);
}

QTEST(verify_rejects_flipped_body)
{
    QT_EQ_INT(verify_vec(VEC_SECRET, VEC_ID, VEC_TS_TEXT, VEC_SIG, "{\"test\": 2432232315}", VEC_TS), QOD_ERR_DENIED);
    QT_EQ_INT(verify_vec(VEC_SECRET, VEC_ID, VEC_TS_TEXT, VEC_SIG, "{\"test\":2432232314}", VEC_TS), QOD_ERR_DENIED);
}

QTEST(verify_rejects_wrong_secret)
{
    QT_EQ_INT(verify_vec(OTHER_SECRET, VEC_ID, VEC_TS_TEXT, VEC_SIG, VEC_BODY, VEC_TS), QOD_ERR_DENIED);
}

QTEST(verify_rejects_other_id_or_timestamp)
{
    QT_EQ_INT(verify_vec(VEC_SECRET, "msg_p5jXN8AQM9LWM0D4loKWxJeK", VEC_TS_TEXT, VEC_SIG, VEC_BODY, VEC_TS),
              QOD_ERR_DENIED);
    /* A signature is bound to its timestamp: moving the timestamp by one second (still within tolerance)
     * must not verify. */
    QT_EQ_INT(verify_vec(VEC_SECRET, VEC_ID, "1614265331", VEC_SIG, VEC_BODY, VEC_TS), QOD_ERR_DENIED);
}

QTEST(verify_rejects_timestamp_beyond_tolerance)
{
    /* Too old (replay) and too far in the future. */
    QT_EQ_INT(verify_vec(VEC_SECRET, VEC_ID, VEC_TS_TEXT, VEC_SIG, VEC_BODY, VEC_TS + 301), QOD_ERR_RANGE);
    QT_EQ_INT(verify_vec(VEC_SECRET, VEC_ID, VEC_TS_TEXT, VEC_SIG, VEC_BODY, VEC_TS + 86400), QOD_ERR_RANGE);
    QT_EQ_INT(verify_vec(VEC_SECRET, VEC_ID, VEC_TS_TEXT, VEC_SIG, VEC_BODY, VEC_TS - 301), QOD_ERR_RANGE);
}

QTEST(verify_rejects_malformed_secret)
{
    QT_EQ_INT(verify_vec("whsec_!!!!notbase64!!!!", VEC_ID, VEC_TS_TEXT, VEC_SIG, VEC_BODY, VEC_TS), QOD_ERR_INVALID);
    QT_EQ_INT(verify_vec("whsec_", VEC_ID, VEC_TS_TEXT, VEC_SIG, VEC_BODY, VEC_TS), QOD_ERR_INVALID);
}

QTEST(verify_rejects_malformed_timestamp)
{
    static const char *const bad[] = {"", "abc", "1614265330x", "1614265330.5"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int rc = verify_vec(VEC_SECRET, VEC_ID, bad[i], VEC_SIG, VEC_BODY, VEC_TS);
        if (rc != QOD_ERR_INVALID)
            QT_FAIL_("timestamp \"%s\": rc %d, expected QOD_ERR_INVALID", bad[i], rc);
    }
}

QTEST(verify_accepts_when_second_of_several_signatures_matches)
{
    const char *hdr = "v1,Kd1YbqQAEnRUy2qbIHN/t8m3k13yw9x3q4pyO+KYo2Y= " VEC_SIG;
    QT_EQ_INT(verify_vec(VEC_SECRET, VEC_ID, VEC_TS_TEXT, hdr, VEC_BODY, VEC_TS), QOD_OK);
    /* Unknown schemes and junk around the matching one are skipped. */
    const char *hdr2 = "v1a,abc v2,Kd1YbqQAEnRUy2qbIHN/t8m3k13yw9x3q4pyO+KYo2Y= garbage " VEC_SIG;
    QT_EQ_INT(verify_vec(VEC_SECRET, VEC_ID, VEC_TS_TEXT, hdr2, VEC_BODY, VEC_TS), QOD_OK);
}

QTEST(verify_rejects_when_no_signature_matches)
{
    const char *sig_b64 = &VEC_SIG[3];
    char hdr[128];
    /* The right bytes under another scheme name do not count. */
    snprintf(hdr, sizeof hdr, "v2,%s", sig_b64);
    QT_EQ_INT(verify_vec(VEC_SECRET, VEC_ID, VEC_TS_TEXT, hdr, VEC_BODY, VEC_TS), QOD_ERR_DENIED);
    snprintf(hdr, sizeof hdr, "v1a,%s", sig_b64);
    QT_EQ_INT(verify_vec(VEC_SECRET, VEC_ID, VEC_TS_TEXT, hdr, VEC_BODY, VEC_TS), QOD_ERR_DENIED);
    /* Without a scheme, truncated, or empty. */
    QT_EQ_INT(verify_vec(VEC_SECRET, VEC_ID, VEC_TS_TEXT, sig_b64, VEC_BODY, VEC_TS), QOD_ERR_DENIED);
    QT_EQ_INT(
        verify_vec(VEC_SECRET, VEC_ID, VEC_TS_TEXT, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ", VEC_BODY, VEC_TS),
        QOD_ERR_DENIED);
    QT_EQ_INT(verify_vec(VEC_SECRET, VEC_ID, VEC_TS_TEXT, "", VEC_BODY, VEC_TS), QOD_ERR_DENIED);
    QT_EQ_INT(verify_vec(VEC_SECRET, VEC_ID, VEC_TS_TEXT, "v1,", VEC_BODY, VEC_TS), QOD_ERR_DENIED);
    /* One bit flipped in the signature. */
    QT_EQ_INT(verify_vec(VEC_SECRET, VEC_ID, VEC_TS_TEXT, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OA=", VEC_BODY,
                         VEC_TS),
              QOD_ERR_DENIED);
}

QTEST(sign_and_verify_cover_the_exact_body_bytes)
{
    /* The body length is explicit: bytes after a NUL are signed too. */
    static const char body[] = {'{', '}', '\0', 'x'};
    qod_buf b;
    qod_buf_init(&b, 0);
    int rc = qod_webhook_sign(VEC_SECRET, VEC_ID, VEC_TS, body, sizeof body, &b);
    char sig[128];
    snprintf(sig, sizeof sig, "%s", b.data ? b.data : "");
    qod_buf_dispose(&b);
    QT_EQ_INT(rc, QOD_OK);
    QT_EQ_INT(qod_webhook_verify(VEC_SECRET, VEC_ID, VEC_TS_TEXT, sig, body, sizeof body, VEC_TS, 300), QOD_OK);
    QT_EQ_INT(qod_webhook_verify(VEC_SECRET, VEC_ID, VEC_TS_TEXT, sig, body, 2, VEC_TS, 300), QOD_ERR_DENIED);
}

QTEST(sign_and_verify_round_trip_empty_body)
{
    qod_buf b;
    qod_buf_init(&b, 0);
    int rc = qod_webhook_sign(OTHER_SECRET, "msg_1", 1700000000, "", 0, &b);
    char sig[128];
    snprintf(sig, sizeof sig, "%s", b.data ? b.data : "");
    qod_buf_dispose(&b);
    QT_EQ_INT(rc, QOD_OK);
    QT_EQ_INT(strlen(sig), 3 + 44);
    QT_EQ_INT(qod_webhook_verify(OTHER_SECRET, "msg_1", "1700000000", sig, "", 0, 1700000000, 300), QOD_OK);
    QT_EQ_INT(qod_webhook_verify(OTHER_SECRET, "msg_2", "1700000000", sig, "", 0, 1700000000, 300), QOD_ERR_DENIED);
}

/* Each thread keeps one HMAC context and only changes its key per message: signing with another secret, a long
 * body and an empty one in between must not leak into the next signature. */
QTEST(sign_reused_context_changes_key_and_message_cleanly)
{
    static char big[70000];
    memset(big, 'x', sizeof big - 1);
    const char *bodies[] = {big, "", VEC_BODY};
    for (int round = 0; round < 3; round++) {
        for (size_t i = 0; i < sizeof bodies / sizeof bodies[0]; i++) {
            qod_buf o;
            qod_buf_init(&o, 0);
            QT_EQ_INT(qod_webhook_sign(OTHER_SECRET, "msg_other", 1700000000, bodies[i], strlen(bodies[i]), &o),
                      QOD_OK);
            QT_EQ_INT(qod_webhook_verify(OTHER_SECRET, "msg_other", "1700000000", o.data, bodies[i], strlen(bodies[i]),
                                         1700000000, 300),
                      QOD_OK);
            qod_buf_dispose(&o);
        }
        char got[128];
        QT_EQ_INT(sign_vec(got), QOD_OK);
        QT_EQ_STR(got, VEC_SIG);
    }
}

/* The HMAC implementation is fetched once and shared: threads signing at the same time get the vector. */
static void *sign_vec_many(void *arg)
{
    int *ok = arg;
    for (int i = 0; i < 200; i++) {
        qod_buf b;
        qod_buf_init(&b, 0);
        int rc = qod_webhook_sign(VEC_SECRET, VEC_ID, VEC_TS, VEC_BODY, strlen(VEC_BODY), &b);
        if (rc != QOD_OK || !b.data || strcmp(b.data, VEC_SIG) != 0)
            *ok = 0;
        qod_buf_dispose(&b);
    }
    return NULL;
}

QTEST(sign_from_several_threads_matches_published_vector)
{
    pthread_t t[4];
    int ok[4] = {1, 1, 1, 1};
    for (int i = 0; i < 4; i++)
        QT_EQ_INT(pthread_create(&t[i], NULL, sign_vec_many, &ok[i]), 0);
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        QT_EQ_INT(ok[i], 1);
    }
}

QTEST_MAIN(QT_CASE(sign_matches_published_vector), QT_CASE(sign_accepts_secret_without_prefix),
           QT_CASE(sign_appends_so_two_secrets_make_a_two_signature_header), QT_CASE(sign_rejects_malformed_secret),
           QT_CASE(verify_accepts_published_vector), QT_CASE(verify_accepts_timestamp_at_the_tolerance_edges),
           QT_CASE(verify_rejects_flipped_body), QT_CASE(verify_rejects_wrong_secret),
           QT_CASE(verify_rejects_other_id_or_timestamp), QT_CASE(verify_rejects_timestamp_beyond_tolerance),
           QT_CASE(verify_rejects_malformed_secret), QT_CASE(verify_rejects_malformed_timestamp),
           QT_CASE(verify_accepts_when_second_of_several_signatures_matches),
           QT_CASE(verify_rejects_when_no_signature_matches), QT_CASE(sign_and_verify_cover_the_exact_body_bytes),
           QT_CASE(sign_and_verify_round_trip_empty_body), QT_CASE(sign_reused_context_changes_key_and_message_cleanly),
           QT_CASE(sign_from_several_threads_matches_published_vector))
