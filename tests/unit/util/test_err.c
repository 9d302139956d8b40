#include "util/err.h"

#include "qtest.h"

#include <errno.h>
#include <string.h>

static const int all_codes[] = {
    QOD_OK,          QOD_ERR_INVALID, QOD_ERR_NOTFOUND, QOD_ERR_EXISTS,  QOD_ERR_LIMIT, QOD_ERR_CRYPTO,
    QOD_ERR_STORE,   QOD_ERR_STATE,   QOD_ERR_DENIED,   QOD_ERR_RANGE,   QOD_ERR_BUSY,  QOD_ERR_UNSUPPORTED,
    QOD_ERR_NOSPACE, QOD_ERR_CLOSED,  QOD_ERR_NOMEM,    QOD_ERR_NETWORK,
};
#define N_CODES (sizeof all_codes / sizeof all_codes[0])

QTEST(every_code_has_text)
{
    for (size_t i = 0; i < N_CODES; i++) {
        const char *s = qod_strerror(all_codes[i]);
        QT_TRUE(s != NULL);
        QT_TRUE(s[0] != '\0');
        QT_TRUE(strcmp(s, "unknown error") != 0);
    }
}

QTEST(every_code_has_distinct_text)
{
    for (size_t i = 0; i < N_CODES; i++)
        for (size_t j = i + 1; j < N_CODES; j++)
            QT_TRUE(strcmp(qod_strerror(all_codes[i]), qod_strerror(all_codes[j])) != 0);
}

QTEST(codes_are_contiguous_from_minus_1000)
{
    /* Append-only: the project's codes run from -1000 down without gaps, so the table above is complete
     * as long as the value after the last one is unknown. */
    for (int e = QOD_ERR_INVALID; e >= QOD_ERR_NETWORK; e--)
        QT_TRUE(strcmp(qod_strerror(e), "unknown error") != 0);
    QT_EQ_STR(qod_strerror(QOD_ERR_NETWORK - 1), "unknown error");
}

QTEST(ok_is_zero)
{
    QT_EQ_INT(QOD_OK, 0);
    QT_EQ_STR(qod_strerror(QOD_OK), "ok");
}

QTEST(negative_errno_maps_to_strerror)
{
    QT_EQ_STR(qod_strerror(-ENOENT), strerror(ENOENT));
    QT_EQ_STR(qod_strerror(-EACCES), strerror(EACCES));
    QT_EQ_STR(qod_strerror(-ENOSPC), strerror(ENOSPC));
}

QTEST(unknown_values_are_unknown_error)
{
    static const int unknown[] = {1, 42, 1000, -1000000, -2000, QOD_ERR_NETWORK - 1};
    for (size_t i = 0; i < sizeof unknown / sizeof unknown[0]; i++)
        QT_EQ_STR(qod_strerror(unknown[i]), "unknown error");
}

QTEST(extreme_values_are_unknown_error)
{
    QT_EQ_STR(qod_strerror(-2147483647 - 1), "unknown error");
    QT_EQ_STR(qod_strerror(2147483647), "unknown error");
}

QTEST_MAIN(QT_CASE(every_code_has_text), QT_CASE(every_code_has_distinct_text),
           QT_CASE(codes_are_contiguous_from_minus_1000), QT_CASE(ok_is_zero), QT_CASE(negative_errno_maps_to_strerror),
           QT_CASE(unknown_values_are_unknown_error), QT_CASE(extreme_values_are_unknown_error))
