#include "util/rand.h"

#include "qtest.h"
#include "util/b64.h"
#include "util/err.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* True when c is a lower-case hex digit. */
static bool lower_hex(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
}

QTEST(rand_bytes_fills_buffer)
{
    unsigned char a[32], b[32];
    memset(a, 0, sizeof a);
    memset(b, 0, sizeof b);
    QT_EQ_INT(qod_rand_bytes(a, sizeof a), QOD_OK);
    QT_EQ_INT(qod_rand_bytes(b, sizeof b), QOD_OK);
    /* Two 256-bit draws are equal (or all zero) with negligible probability. */
    QT_TRUE(memcmp(a, b, sizeof a) != 0);
    static const unsigned char zero[32];
    QT_TRUE(memcmp(a, zero, sizeof a) != 0);
}

QTEST(uuid_v4_format)
{
    for (int k = 0; k < 200; k++) {
        char u[QOD_UUID_LEN + 1];
        memset(u, 'X', sizeof u);
        QT_EQ_INT(qod_uuid_v4(u), QOD_OK);
        QT_EQ_INT(strlen(u), QOD_UUID_LEN);
        for (int i = 0; i < QOD_UUID_LEN; i++) {
            if (i == 8 || i == 13 || i == 18 || i == 23)
                QT_EQ_INT(u[i], '-');
            else
                QT_TRUE(lower_hex(u[i]));
        }
    }
}

QTEST(uuid_v4_version_nibble_is_4)
{
    for (int k = 0; k < 200; k++) {
        char u[QOD_UUID_LEN + 1];
        QT_EQ_INT(qod_uuid_v4(u), QOD_OK);
        QT_EQ_INT(u[14], '4');
    }
}

QTEST(uuid_v4_variant_is_rfc4122)
{
    for (int k = 0; k < 200; k++) {
        char u[QOD_UUID_LEN + 1];
        QT_EQ_INT(qod_uuid_v4(u), QOD_OK);
        QT_TRUE(u[19] == '8' || u[19] == '9' || u[19] == 'a' || u[19] == 'b');
    }
}

QTEST(uuid_v4_distinct)
{
    char a[QOD_UUID_LEN + 1], b[QOD_UUID_LEN + 1];
    QT_EQ_INT(qod_uuid_v4(a), QOD_OK);
    QT_EQ_INT(qod_uuid_v4(b), QOD_OK);
    QT_TRUE(strcmp(a, b) != 0);
}

QTEST(uuid_v4_passes_own_validator)
{
    char u[QOD_UUID_LEN + 1];
    QT_EQ_INT(qod_uuid_v4(u), QOD_OK);
    QT_TRUE(qod_uuid_valid(u));
}

/* Enough ids to drain the per-thread pool many times over. */
#define V7_MANY 3000

static int cmp_str(const void *a, const void *b)
{
    return strcmp((const char *)a, (const char *)b);
}

QTEST(uuid_v7_version_variant_and_time_prefix)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    long long before = (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    char u[QOD_UUID_LEN + 1];
    QT_EQ_INT(qod_uuid_v7(u), QOD_OK);
    clock_gettime(CLOCK_REALTIME, &ts);
    long long after = (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    QT_TRUE(qod_uuid_valid(u));
    QT_EQ_INT(u[14], '7');
    QT_TRUE(u[19] == '8' || u[19] == '9' || u[19] == 'a' || u[19] == 'b');
    char hex[13];
    memcpy(hex, u, 8);
    memcpy(hex + 8, u + 9, 4);
    hex[12] = '\0';
    long long ms = strtoll(hex, NULL, 16);
    QT_TRUE(ms >= before && ms <= after);
}

/* Many ids from one thread: all distinct (the pool never hands out the same bytes twice), none all-zero in their
 * random part, and in time order at millisecond grain. */
QTEST(uuid_v7_distinct_across_pool_refills_and_time_ordered)
{
    static char ids[V7_MANY][QOD_UUID_LEN + 1];
    for (int i = 0; i < V7_MANY; i++) {
        QT_EQ_INT(qod_uuid_v7(ids[i]), QOD_OK);
        QT_TRUE(strcmp(ids[i] + 24, "000000000000") != 0);
        if (i)
            QT_TRUE(strncmp(ids[i - 1], ids[i], 13) <= 0);
    }
    qsort(ids, V7_MANY, sizeof ids[0], cmp_str);
    for (int i = 1; i < V7_MANY; i++)
        QT_TRUE(strcmp(ids[i - 1], ids[i]) != 0);
}

static char thread_ids[2][V7_MANY][QOD_UUID_LEN + 1];

static void *make_ids(void *arg)
{
    char(*out)[QOD_UUID_LEN + 1] = arg;
    for (int i = 0; i < V7_MANY; i++)
        if (qod_uuid_v7(out[i]) != QOD_OK)
            out[i][0] = '\0';
    return NULL;
}

/* Two threads have pools of their own: no id is produced twice. */
QTEST(uuid_v7_distinct_across_threads)
{
    pthread_t t[2];
    for (int k = 0; k < 2; k++)
        QT_EQ_INT(pthread_create(&t[k], NULL, make_ids, thread_ids[k]), 0);
    for (int k = 0; k < 2; k++)
        pthread_join(t[k], NULL);
    static char all[2 * V7_MANY][QOD_UUID_LEN + 1];
    memcpy(all, thread_ids, sizeof all);
    qsort(all, 2 * V7_MANY, sizeof all[0], cmp_str);
    QT_TRUE(all[0][0] != '\0');
    for (int i = 1; i < 2 * V7_MANY; i++)
        QT_TRUE(strcmp(all[i - 1], all[i]) != 0);
}

QTEST(uuid_valid_accepts_lower_and_upper)
{
    QT_TRUE(qod_uuid_valid("123e4567-e89b-12d3-a456-426614174000"));
    QT_TRUE(qod_uuid_valid("123E4567-E89B-12D3-A456-426614174000"));
    QT_TRUE(qod_uuid_valid("AbCdEf01-2345-6789-aBcD-eF0123456789"));
    QT_TRUE(qod_uuid_valid("00000000-0000-0000-0000-000000000000"));
}

QTEST(uuid_valid_rejects_wrong_length)
{
    QT_TRUE(!qod_uuid_valid(""));
    QT_TRUE(!qod_uuid_valid("123e4567-e89b-12d3-a456-42661417400"));
    QT_TRUE(!qod_uuid_valid("123e4567-e89b-12d3-a456-4266141740000"));
    QT_TRUE(!qod_uuid_valid("123e4567-e89b-12d3-a456-426614174000 "));
}

QTEST(uuid_valid_rejects_misplaced_dashes)
{
    QT_TRUE(!qod_uuid_valid("123e4567e89b-12d3-a456-426614174000-"));
    QT_TRUE(!qod_uuid_valid("123e456-7e89b-12d3-a456-426614174000"));
    QT_TRUE(!qod_uuid_valid("123e4567-e89b-12d3-a456-42661417-000"));
    QT_TRUE(!qod_uuid_valid("123e4567xe89b-12d3-a456-426614174000"));
    QT_TRUE(!qod_uuid_valid("123e4567e89b12d3a456426614174000"));
}

QTEST(uuid_valid_rejects_non_hex)
{
    QT_TRUE(!qod_uuid_valid("123e4567-e89b-12d3-a456-42661417400g"));
    QT_TRUE(!qod_uuid_valid("g23e4567-e89b-12d3-a456-426614174000"));
    QT_TRUE(!qod_uuid_valid("123e4567-e89b-12d3-a456-42661417400 "));
    QT_TRUE(!qod_uuid_valid("{23e4567-e89b-12d3-a456-426614174000"));
    QT_TRUE(!qod_uuid_valid("123e4567-e89b-12d3-a456-4266141740\xc3\xa9"));
}

QTEST(rand_token_length)
{
    for (size_t n = 0; n <= 128; n += 16) {
        char out[256];
        QT_EQ_INT(qod_rand_token(n, out, sizeof out), QOD_OK);
        QT_EQ_INT(strlen(out), qod_b64_enc_len(n, 1) - 1);
    }
}

QTEST(rand_token_32_bytes_is_43_url_chars)
{
    char out[64];
    QT_EQ_INT(qod_rand_token(32, out, sizeof out), QOD_OK);
    QT_EQ_INT(strlen(out), 43);
    for (const char *p = out; *p; p++)
        QT_TRUE((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '-' ||
                *p == '_');
    unsigned char back[32];
    QT_EQ_INT(qod_b64_decode(out, 43, back, sizeof back, 1), 32);
}

QTEST(rand_token_distinct)
{
    char a[64], b[64];
    QT_EQ_INT(qod_rand_token(32, a, sizeof a), QOD_OK);
    QT_EQ_INT(qod_rand_token(32, b, sizeof b), QOD_OK);
    QT_TRUE(strcmp(a, b) != 0);
}

QTEST(rand_token_small_output_is_limit)
{
    char out[43];
    QT_EQ_INT(qod_rand_token(32, out, sizeof out), QOD_ERR_LIMIT);
}

QTEST(rand_token_too_many_bytes_is_limit)
{
    char out[512];
    QT_EQ_INT(qod_rand_token(129, out, sizeof out), QOD_ERR_LIMIT);
}

QTEST(rand_unit_in_range)
{
    for (int i = 0; i < 10000; i++) {
        double d = qod_rand_unit();
        QT_TRUE(d >= 0.0 && d < 1.0);
    }
}

QTEST(rand_unit_spreads_over_interval)
{
    /* 10 buckets over 10000 draws: each expects 1000; a fair generator stays far inside [700, 1300]. */
    int buckets[10] = {0};
    double sum = 0;
    for (int i = 0; i < 10000; i++) {
        double d = qod_rand_unit();
        sum += d;
        int k = (int)(d * 10);
        if (k >= 0 && k < 10)
            buckets[k]++;
    }
    for (int k = 0; k < 10; k++)
        QT_TRUE(buckets[k] > 700 && buckets[k] < 1300);
    QT_TRUE(sum / 10000 > 0.45 && sum / 10000 < 0.55);
}

QTEST_MAIN(QT_CASE(rand_bytes_fills_buffer), QT_CASE(uuid_v4_format), QT_CASE(uuid_v4_version_nibble_is_4),
           QT_CASE(uuid_v4_variant_is_rfc4122), QT_CASE(uuid_v4_distinct), QT_CASE(uuid_v4_passes_own_validator),
           QT_CASE(uuid_v7_version_variant_and_time_prefix),
           QT_CASE(uuid_v7_distinct_across_pool_refills_and_time_ordered), QT_CASE(uuid_v7_distinct_across_threads),
           QT_CASE(uuid_valid_accepts_lower_and_upper), QT_CASE(uuid_valid_rejects_wrong_length),
           QT_CASE(uuid_valid_rejects_misplaced_dashes), QT_CASE(uuid_valid_rejects_non_hex),
           QT_CASE(rand_token_length), QT_CASE(rand_token_32_bytes_is_43_url_chars), QT_CASE(rand_token_distinct),
           QT_CASE(rand_token_small_output_is_limit), QT_CASE(rand_token_too_many_bytes_is_limit),
           QT_CASE(rand_unit_in_range), QT_CASE(rand_unit_spreads_over_interval))
