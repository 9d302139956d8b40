#include "util/time.h"

#include "util/err.h"

#include <curl/curl.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

static _Atomic int64_t g_wall_offset;

int64_t qod_time_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t qod_time_mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

struct timespec qod_time_mono_after(int64_t ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (ms % 1000) * 1000000;
    if (ts.tv_nsec >= 1000000000) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000;
    }
    return ts;
}

void qod_time_lock_pause(void)
{
    nanosleep(&(struct timespec){0, 10000}, NULL);
}

int64_t qod_time_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000 +
           atomic_load_explicit(&g_wall_offset, memory_order_relaxed);
}

void qod_time_set_wall_offset(int64_t offset_ms)
{
    atomic_store(&g_wall_offset, offset_ms);
}

/* The UTC calendar fields of a Unix time: civil from days (Howard Hinnant's algorithm, the inverse of the one in
 * qod_time_parse). gmtime_r would do, but glibc takes its time-zone lock in it, on every HTTP thread. */
static void utc_fields(int64_t t, struct tm *tm)
{
    int64_t days = t / 86400, secs = t % 86400;
    if (secs < 0) {
        secs += 86400;
        days--;
    }
    int64_t z = days + 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    int64_t m = mp < 10 ? mp + 3 : mp - 9;
    *tm = (struct tm){.tm_year = (int)(yoe + era * 400 + (m <= 2) - 1900),
                      .tm_mon = (int)m - 1,
                      .tm_mday = (int)(doy - (153 * mp + 2) / 5 + 1),
                      .tm_hour = (int)(secs / 3600),
                      .tm_min = (int)(secs / 60 % 60),
                      .tm_sec = (int)(secs % 60),
                      .tm_wday = (int)((days % 7 + 11) % 7)}; /* 1970-01-01 was a Thursday */
}

/* Writes v (0 <= v < 10^n) as n decimal digits, with leading zeros; returns the end. */
static char *put_digits(char *p, int v, int n)
{
    for (int i = n - 1; i >= 0; i--, v /= 10)
        p[i] = (char)('0' + v % 10);
    return p + n;
}

/* RFC 3339 UTC, with a millisecond fraction when ms. */
static void fmt_rfc3339(int64_t unix_ms, bool ms, char *out, size_t cap)
{
    int frac = (int)(unix_ms % 1000);
    int64_t secs = unix_ms / 1000 - (frac < 0); /* floored, without a product that could overflow */
    frac += frac < 0 ? 1000 : 0;
    struct tm tm;
    utc_fields(secs, &tm);
    int year = tm.tm_year + 1900;
    if (cap < (ms ? 25u : 21u) || year < 0 || year > 9999) {
        if (ms)
            snprintf(out, cap, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", year, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
                     tm.tm_min, tm.tm_sec, frac);
        else
            snprintf(out, cap, "%04d-%02d-%02dT%02d:%02d:%02dZ", year, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                     tm.tm_sec);
        return;
    }
    /* Written by hand: this runs twice for every session rendered, and snprintf was a visible share of a GET. */
    int f[6] = {year, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec};
    static const char seps[6] = {'-', '-', 'T', ':', ':', '.'};
    char *p = out;
    for (int i = 0; i < 6; i++) {
        p = put_digits(p, f[i], i ? 2 : 4);
        if (i < 5 || ms)
            *p++ = seps[i];
    }
    if (ms)
        p = put_digits(p, frac, 3);
    *p++ = 'Z';
    *p = '\0';
}

void qod_time_fmt(int64_t unix_ms, char *out, size_t cap)
{
    fmt_rfc3339(unix_ms, false, out, cap);
}

void qod_time_fmt_ms(int64_t unix_ms, char *out, size_t cap)
{
    fmt_rfc3339(unix_ms, true, out, cap);
}

void qod_time_http_date(int64_t unix_s, char *out)
{
    static const char wday[7][4] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static const char mon[12][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    struct tm tm;
    utc_fields(unix_s, &tm);
    int year = tm.tm_year + 1900;
    if (year < 0 || year > 9999)
        year = year < 0 ? 0 : 9999;
    char *p = out;
    memcpy(p, wday[tm.tm_wday], 3);
    p += 3;
    *p++ = ',';
    *p++ = ' ';
    p = put_digits(p, tm.tm_mday, 2);
    *p++ = ' ';
    memcpy(p, mon[tm.tm_mon], 3);
    p += 3;
    *p++ = ' ';
    p = put_digits(p, year, 4);
    const int hms[3] = {tm.tm_hour, tm.tm_min, tm.tm_sec};
    for (int k = 0; k < 3; k++) {
        *p++ = k ? ':' : ' ';
        p = put_digits(p, hms[k], 2);
    }
    memcpy(p, " GMT", 5);
}

static int digits(const char *s, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return 0;
}

int qod_time_parse(const char *s, int64_t *unix_ms)
{
    int Y, M, D, h, m, sec;
    size_t n = strlen(s);
    if (n < 20 || n > 40 || s[4] != '-' || s[7] != '-' || (s[10] != 'T' && s[10] != 't') || s[13] != ':' ||
        s[16] != ':')
        return QOD_ERR_INVALID;
    if (digits(s, 4, &Y) || digits(s + 5, 2, &M) || digits(s + 8, 2, &D) || digits(s + 11, 2, &h) ||
        digits(s + 14, 2, &m) || digits(s + 17, 2, &sec))
        return QOD_ERR_INVALID;
    static const int mdays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (Y < 1970 || M < 1 || M > 12 || D < 1 || D > mdays[M - 1] || h > 23 || m > 59 || sec > 60)
        return QOD_ERR_INVALID;
    int leap = (Y % 4 == 0 && Y % 100 != 0) || Y % 400 == 0;
    if (M == 2 && D == 29 && !leap)
        return QOD_ERR_INVALID;
    const char *p = s + 19;
    int ms = 0;
    if (*p == '.') {
        p++;
        int nd = 0;
        while (*p >= '0' && *p <= '9') {
            if (nd < 3)
                ms = ms * 10 + (*p - '0');
            nd++;
            p++;
        }
        if (nd == 0 || nd > 9)
            return QOD_ERR_INVALID;
        for (; nd < 3; nd++)
            ms *= 10;
    }
    int off = 0;
    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        int oh, om;
        if (strlen(p) != 6 || p[3] != ':' || digits(p + 1, 2, &oh) || digits(p + 4, 2, &om) || oh > 23 || om > 59)
            return QOD_ERR_INVALID;
        off = (oh * 60 + om) * (*p == '+' ? 1 : -1);
        p += 6;
    } else {
        return QOD_ERR_INVALID;
    }
    if (*p)
        return QOD_ERR_INVALID;
    /* Days from civil (Howard Hinnant's algorithm), valid for the proleptic Gregorian calendar. */
    int y = Y - (M <= 2);
    int era = y / 400;
    int yoe = y - era * 400;
    int doy = (153 * (M + (M > 2 ? -3 : 9)) + 2) / 5 + D - 1;
    int doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    int64_t days = (int64_t)era * 146097 + doe - 719468;
    int64_t t = days * 86400 + h * 3600 + m * 60 + (sec > 59 ? 59 : sec) - (int64_t)off * 60;
    *unix_ms = t * 1000 + ms;
    return QOD_OK;
}

long qod_time_retry_after(const char *line, size_t len)
{
    static const char name[] = "Retry-After:";
    if (len <= sizeof name - 1 || strncasecmp(line, name, sizeof name - 1) != 0)
        return -1;
    char v[128];
    size_t vl = len - (sizeof name - 1) < sizeof v - 1 ? len - (sizeof name - 1) : sizeof v - 1;
    memcpy(v, line + sizeof name - 1, vl);
    v[vl] = '\0';
    char *p = v;
    while (*p == ' ' || *p == '\t')
        p++;
    p[strcspn(p, "\r\n")] = '\0';
    char *end = NULL;
    long s = strtol(p, &end, 10);
    if (end != p && *end == '\0')
        return s < 0 ? 0 : s;
    time_t t = curl_getdate(p, NULL);
    if (t <= 0)
        return -1;
    long left = (long)(t - qod_time_wall_ms() / 1000);
    return left > 0 ? left : 0;
}
