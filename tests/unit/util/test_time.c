#include "util/time.h"

#include "qtest.h"
#include "util/err.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#define T_2026_06_02_0900 1780390800000LL

/* ms from now on the monotonic clock, with the nanoseconds carried into seconds. */
QTEST(mono_after_adds_to_the_monotonic_clock_and_carries)
{
    for (int64_t ms = 0; ms < 3000; ms += 137) {
        struct timespec before, after;
        clock_gettime(CLOCK_MONOTONIC, &before);
        struct timespec t = qod_time_mono_after(ms);
        clock_gettime(CLOCK_MONOTONIC, &after);
        int64_t at = (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
        QT_TRUE(t.tv_nsec >= 0 && t.tv_nsec < 1000000000);
        QT_TRUE(at >= (int64_t)before.tv_sec * 1000000000 + before.tv_nsec + ms * 1000000);
        QT_TRUE(at <= (int64_t)after.tv_sec * 1000000000 + after.tv_nsec + ms * 1000000);
    }
}

QTEST(fmt_epoch)
{
    char out[32];
    qod_time_fmt(0, out, sizeof out);
    QT_EQ_STR(out, "1970-01-01T00:00:00Z");
}

QTEST(fmt_known_instant)
{
    char out[32];
    qod_time_fmt(T_2026_06_02_0900, out, sizeof out);
    QT_EQ_STR(out, "2026-06-02T09:00:00Z");
}

QTEST(fmt_truncates_milliseconds)
{
    char out[32];
    qod_time_fmt(T_2026_06_02_0900 + 999, out, sizeof out);
    QT_EQ_STR(out, "2026-06-02T09:00:00Z");
}

QTEST(fmt_leap_day)
{
    char out[32];
    int64_t ms = 0;
    QT_EQ_INT(qod_time_parse("2028-02-29T23:59:59Z", &ms), QOD_OK);
    qod_time_fmt(ms, out, sizeof out);
    QT_EQ_STR(out, "2028-02-29T23:59:59Z");
}

/* The calendar is computed by hand: it must agree with the C library's gmtime_r everywhere it is used, from
 * before 1970 to the end of year 9999, across month, year and century boundaries. */
QTEST(fmt_agrees_with_gmtime_r)
{
    static const int64_t fixed[] = {-86400,
                                    -1,
                                    0,
                                    59,
                                    86399,
                                    86400,
                                    951782400 /* 2000-02-29 */,
                                    4107542399LL /* 2100-02-28T23:59:59 */,
                                    4107542400LL,
                                    253402300799LL};
    uint64_t x = 0x9e3779b97f4a7c15u;
    for (int i = 0; i < 200000; i++) {
        int64_t t;
        if (i < (int)(sizeof fixed / sizeof fixed[0])) {
            t = fixed[i];
        } else {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            t = (int64_t)(x % 253402300800ULL); /* 1970-01-01 to 9999-12-31T23:59:59 */
            if (i % 3 == 0)
                t -= t % 86400 + (i % 2); /* a midnight, or the second before it */
        }
        time_t tt = (time_t)t;
        struct tm tm;
        gmtime_r(&tt, &tm);
        char want[80], got[32];
        snprintf(want, sizeof want, "%04d-%02d-%02dT%02d:%02d:%02dZ", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
                 tm.tm_hour, tm.tm_min, tm.tm_sec);
        qod_time_fmt(t * 1000, got, sizeof got);
        QT_EQ_STR(got, want);
        /* The millisecond form of the log lines: the same fields and the fraction, before 1970 too. */
        int frac = (int)(x % 1000);
        char want_ms[80], got_ms[32];
        snprintf(want_ms, sizeof want_ms, "%.19s.%03dZ", want, frac);
        qod_time_fmt_ms(t * 1000 + frac, got_ms, sizeof got_ms);
        QT_EQ_STR(got_ms, want_ms);
    }
}

QTEST(fmt_ms_writes_the_fraction_and_needs_room_for_it)
{
    char out[32];
    qod_time_fmt_ms(T_2026_06_02_0900 + 7, out, sizeof out);
    QT_EQ_STR(out, "2026-06-02T09:00:00.007Z");
    qod_time_fmt_ms(-1, out, sizeof out);
    QT_EQ_STR(out, "1969-12-31T23:59:59.999Z");
    char small[12];
    qod_time_fmt_ms(T_2026_06_02_0900 + 999, small, sizeof small);
    QT_EQ_STR(small, "2026-06-02T");
    /* The extremes (found by fuzz_time: flooring by a product overflowed): any text, no undefined behaviour. */
    qod_time_fmt_ms(INT64_MIN, out, sizeof out);
    qod_time_fmt_ms(INT64_MAX, out, sizeof out);
    QT_TRUE(strlen(out) < sizeof out);
}

/* The HTTP date of the Date header, against strftime in the C locale over gmtime_r. */
QTEST(http_date_agrees_with_strftime)
{
    char out[QOD_HTTP_DATE_LEN + 1];
    qod_time_http_date(784111777, out);
    QT_EQ_STR(out, "Sun, 06 Nov 1994 08:49:37 GMT"); /* RFC 9110's example */
    uint64_t x = 0x2545f4914f6cdd1du;
    for (int i = 0; i < 100000; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        int64_t t = i < 3 ? (int64_t[]){-1, 0, 253402300799LL}[i] : (int64_t)(x % 253402300800ULL);
        time_t tt = (time_t)t;
        struct tm tm;
        gmtime_r(&tt, &tm);
        char want[64];
        strftime(want, sizeof want, "%a, %d %b %Y %H:%M:%S GMT", &tm);
        qod_time_http_date(t, out);
        QT_EQ_STR(out, want);
    }
}

QTEST(fmt_fits_in_21_bytes)
{
    char out[21];
    qod_time_fmt(T_2026_06_02_0900, out, sizeof out);
    QT_EQ_INT(strlen(out), 20);
}

QTEST(parse_utc_z)
{
    int64_t ms = 0;
    QT_EQ_INT(qod_time_parse("2026-06-02T09:00:00Z", &ms), QOD_OK);
    QT_EQ_INT(ms, T_2026_06_02_0900);
}

QTEST(parse_epoch)
{
    int64_t ms = -1;
    QT_EQ_INT(qod_time_parse("1970-01-01T00:00:00Z", &ms), QOD_OK);
    QT_EQ_INT(ms, 0);
}

QTEST(parse_lower_case_t_and_z)
{
    int64_t ms = 0;
    QT_EQ_INT(qod_time_parse("2026-06-02t09:00:00z", &ms), QOD_OK);
    QT_EQ_INT(ms, T_2026_06_02_0900);
}

QTEST(parse_positive_offset)
{
    int64_t ms = 0;
    QT_EQ_INT(qod_time_parse("2026-06-02T11:00:00+02:00", &ms), QOD_OK);
    QT_EQ_INT(ms, T_2026_06_02_0900);
}

QTEST(parse_negative_offset)
{
    int64_t ms = 0;
    QT_EQ_INT(qod_time_parse("2026-06-02T04:30:00-04:30", &ms), QOD_OK);
    QT_EQ_INT(ms, T_2026_06_02_0900);
}

QTEST(parse_offset_crossing_midnight)
{
    int64_t ms = 0;
    QT_EQ_INT(qod_time_parse("2026-06-01T23:00:00-10:00", &ms), QOD_OK);
    QT_EQ_INT(ms, T_2026_06_02_0900);
}

QTEST(parse_fraction_milliseconds)
{
    int64_t ms = 0;
    QT_EQ_INT(qod_time_parse("2026-06-02T09:00:00.123Z", &ms), QOD_OK);
    QT_EQ_INT(ms, T_2026_06_02_0900 + 123);
}

QTEST(parse_fraction_short_is_scaled)
{
    int64_t ms = 0;
    QT_EQ_INT(qod_time_parse("2026-06-02T09:00:00.5Z", &ms), QOD_OK);
    QT_EQ_INT(ms, T_2026_06_02_0900 + 500);
}

QTEST(parse_fraction_long_is_truncated)
{
    int64_t ms = 0;
    QT_EQ_INT(qod_time_parse("2026-06-02T09:00:00.987654321+00:00", &ms), QOD_OK);
    QT_EQ_INT(ms, T_2026_06_02_0900 + 987);
}

QTEST(parse_fraction_empty_invalid)
{
    int64_t ms = 0;
    QT_EQ_INT(qod_time_parse("2026-06-02T09:00:00.Z", &ms), QOD_ERR_INVALID);
}

QTEST(parse_leap_day_2028_ok)
{
    int64_t ms = 0;
    QT_EQ_INT(qod_time_parse("2028-02-29T00:00:00Z", &ms), QOD_OK);
    QT_EQ_INT(ms, 1835395200000LL);
}

QTEST(parse_leap_day_2027_invalid)
{
    int64_t ms = 0;
    QT_EQ_INT(qod_time_parse("2027-02-29T00:00:00Z", &ms), QOD_ERR_INVALID);
}

QTEST(parse_century_leap_rules)
{
    int64_t ms = 0;
    QT_EQ_INT(qod_time_parse("2000-02-29T00:00:00Z", &ms), QOD_OK);
    QT_EQ_INT(qod_time_parse("2100-02-29T00:00:00Z", &ms), QOD_ERR_INVALID);
}

QTEST(parse_day_past_month_end_invalid)
{
    int64_t ms = 0;
    QT_EQ_INT(qod_time_parse("2026-04-31T00:00:00Z", &ms), QOD_ERR_INVALID);
    QT_EQ_INT(qod_time_parse("2026-01-00T00:00:00Z", &ms), QOD_ERR_INVALID);
}

QTEST(parse_month_13_invalid)
{
    int64_t ms = 0;
    QT_EQ_INT(qod_time_parse("2026-13-01T00:00:00Z", &ms), QOD_ERR_INVALID);
    QT_EQ_INT(qod_time_parse("2026-00-01T00:00:00Z", &ms), QOD_ERR_INVALID);
}

QTEST(parse_bad_clock_fields_invalid)
{
    int64_t ms = 0;
    QT_EQ_INT(qod_time_parse("2026-06-02T24:00:00Z", &ms), QOD_ERR_INVALID);
    QT_EQ_INT(qod_time_parse("2026-06-02T09:60:00Z", &ms), QOD_ERR_INVALID);
    QT_EQ_INT(qod_time_parse("2026-06-02T09:00:61Z", &ms), QOD_ERR_INVALID);
}

QTEST(parse_missing_timezone_invalid)
{
    int64_t ms = 0;
    QT_EQ_INT(qod_time_parse("2026-06-02T09:00:00", &ms), QOD_ERR_INVALID);
    QT_EQ_INT(qod_time_parse("2026-06-02T09:00:00.123", &ms), QOD_ERR_INVALID);
}

QTEST(parse_bad_offset_invalid)
{
    int64_t ms = 0;
    QT_EQ_INT(qod_time_parse("2026-06-02T09:00:00+0200", &ms), QOD_ERR_INVALID);
    QT_EQ_INT(qod_time_parse("2026-06-02T09:00:00+02", &ms), QOD_ERR_INVALID);
    QT_EQ_INT(qod_time_parse("2026-06-02T09:00:00+24:00", &ms), QOD_ERR_INVALID);
    QT_EQ_INT(qod_time_parse("2026-06-02T09:00:00+02:60", &ms), QOD_ERR_INVALID);
}

QTEST(parse_garbage_invalid)
{
    static const char *const bad[] = {
        "",
        "now",
        "2026-06-02",
        "2026-06-02 09:00:00Z",
        "2026/06/02T09:00:00Z",
        "2026-06-02T09:00:00ZZ",
        "2026-06-02T09:00:00Z ",
        " 2026-06-02T09:00:00Z",
        "20x6-06-02T09:00:00Z",
        "2026-06-02T09:00:00.1234567890Z",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int64_t ms = 42;
        QT_EQ_INT(qod_time_parse(bad[i], &ms), QOD_ERR_INVALID);
        QT_EQ_INT(ms, 42);
    }
}

QTEST(parse_before_1970_invalid)
{
    int64_t ms = 0;
    QT_EQ_INT(qod_time_parse("1969-12-31T23:59:59Z", &ms), QOD_ERR_INVALID);
}

QTEST(round_trip_fmt_then_parse)
{
    static const int64_t instants[] = {0, 951782400000LL, T_2026_06_02_0900, 1835395200000LL, 4102444799000LL};
    for (size_t i = 0; i < sizeof instants / sizeof instants[0]; i++) {
        char out[32];
        int64_t back = -1;
        qod_time_fmt(instants[i], out, sizeof out);
        QT_EQ_INT(qod_time_parse(out, &back), QOD_OK);
        QT_EQ_INT(back, instants[i]);
    }
}

QTEST(round_trip_every_day_of_2028)
{
    int64_t start = 1830297600000LL; /* 2028-01-01T00:00:00Z */
    for (int d = 0; d < 366; d++) {
        char out[32];
        int64_t t = start + (int64_t)d * 86400000 + 45296000; /* 12:34:56 */
        int64_t back = -1;
        qod_time_fmt(t, out, sizeof out);
        QT_EQ_INT(qod_time_parse(out, &back), QOD_OK);
        QT_EQ_INT(back, t);
    }
}

QTEST(wall_offset_shifts_wall_clock)
{
    int64_t before = qod_time_wall_ms();
    qod_time_set_wall_offset(3600000);
    int64_t shifted = qod_time_wall_ms();
    qod_time_set_wall_offset(0);
    int64_t after = qod_time_wall_ms();
    QT_TRUE(shifted - before >= 3600000 && shifted - before < 3600000 + 5000);
    QT_TRUE(after - before >= 0 && after - before < 5000);
}

QTEST(wall_offset_negative_shifts_back)
{
    int64_t before = qod_time_wall_ms();
    qod_time_set_wall_offset(-86400000);
    int64_t shifted = qod_time_wall_ms();
    qod_time_set_wall_offset(0);
    QT_TRUE(before - shifted <= 86400000 && before - shifted > 86400000 - 5000);
}

QTEST(wall_offset_leaves_monotonic_alone)
{
    int64_t before = qod_time_mono_ms();
    qod_time_set_wall_offset(3600000);
    int64_t during = qod_time_mono_ms();
    qod_time_set_wall_offset(-3600000);
    int64_t after = qod_time_mono_ms();
    qod_time_set_wall_offset(0);
    QT_TRUE(during >= before && during - before < 5000);
    QT_TRUE(after >= during && after - during < 5000);
}

QTEST(wall_clock_is_near_system_time)
{
    /* Past 2020-01-01 and before 2100: a sanity check that the unit is milliseconds. */
    int64_t now = qod_time_wall_ms();
    QT_TRUE(now > 1577836800000LL && now < 4102444800000LL);
}

static long ra(const char *line)
{
    return qod_time_retry_after(line, strlen(line));
}

QTEST(retry_after_reads_seconds_and_http_dates)
{
    QT_EQ_INT(ra("Retry-After: 120\r\n"), 120);
    QT_EQ_INT(ra("retry-after:\t7\r\n"), 7);
    QT_EQ_INT(ra("Retry-After: -3\r\n"), 0);
    QT_EQ_INT(ra("Retry-After: Sun, 06 Nov 1994 08:49:37 GMT\r\n"), 0); /* past */
    char line[64], date[QOD_HTTP_DATE_LEN + 1];
    qod_time_http_date(qod_time_wall_ms() / 1000 + 3600, date);
    snprintf(line, sizeof line, "Retry-After: %s\r\n", date);
    long s = ra(line);
    QT_TRUE(s > 3590 && s <= 3600);
    QT_EQ_INT(ra("Retry-After: soon\r\n"), -1);
    QT_EQ_INT(ra("Retry-After:\r\n"), -1);
    QT_EQ_INT(ra("Location: /x\r\n"), -1);
    QT_EQ_INT(ra("Retry-After"), -1);
}

QTEST_MAIN(QT_CASE(mono_after_adds_to_the_monotonic_clock_and_carries), QT_CASE(fmt_epoch), QT_CASE(fmt_known_instant),
           QT_CASE(fmt_truncates_milliseconds), QT_CASE(fmt_leap_day), QT_CASE(fmt_agrees_with_gmtime_r),
           QT_CASE(fmt_ms_writes_the_fraction_and_needs_room_for_it), QT_CASE(http_date_agrees_with_strftime),
           QT_CASE(fmt_fits_in_21_bytes), QT_CASE(parse_utc_z), QT_CASE(parse_epoch), QT_CASE(parse_lower_case_t_and_z),
           QT_CASE(parse_positive_offset), QT_CASE(parse_negative_offset), QT_CASE(parse_offset_crossing_midnight),
           QT_CASE(parse_fraction_milliseconds), QT_CASE(parse_fraction_short_is_scaled),
           QT_CASE(parse_fraction_long_is_truncated), QT_CASE(parse_fraction_empty_invalid),
           QT_CASE(retry_after_reads_seconds_and_http_dates), QT_CASE(parse_leap_day_2028_ok),
           QT_CASE(parse_leap_day_2027_invalid), QT_CASE(parse_century_leap_rules),
           QT_CASE(parse_day_past_month_end_invalid), QT_CASE(parse_month_13_invalid),
           QT_CASE(parse_bad_clock_fields_invalid), QT_CASE(parse_missing_timezone_invalid),
           QT_CASE(parse_bad_offset_invalid), QT_CASE(parse_garbage_invalid), QT_CASE(parse_before_1970_invalid),
           QT_CASE(round_trip_fmt_then_parse), QT_CASE(round_trip_every_day_of_2028),
           QT_CASE(wall_offset_shifts_wall_clock), QT_CASE(wall_offset_negative_shifts_back),
           QT_CASE(wall_offset_leaves_monotonic_alone), QT_CASE(wall_clock_is_near_system_time))
