/* Clocks. Timers use the monotonic clock; timestamps shown to users use the wall clock.
 * A test hook (qod_time_set_wall_offset) shifts the wall clock to simulate clock jumps. */
#ifndef QOD_UTIL_TIME_H
#define QOD_UTIL_TIME_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

/* Milliseconds on the monotonic clock (never jumps). */
int64_t qod_time_mono_ms(void);
/* Nanoseconds on the monotonic clock (durations, rate limiter buckets). */
int64_t qod_time_mono_ns(void);
/* The monotonic time ms milliseconds from now, for pthread_cond_timedwait on a CLOCK_MONOTONIC condition. */
struct timespec qod_time_mono_after(int64_t ms);
/* The pause (10 µs) between two holds of a lock by one long walk (an engine tick past its budget, a list, a shard's
 * adoption), for the threads that waited to take it: the lock is not fair, and taking it again at once would win
 * it back before a woken waiter runs. */
void qod_time_lock_pause(void);
/* Unix time in milliseconds on the wall clock, plus the test offset. */
int64_t qod_time_wall_ms(void);
/* Shifts qod_time_wall_ms by offset_ms (tests only). */
void qod_time_set_wall_offset(int64_t offset_ms);
/* Formats unix ms as RFC 3339 UTC with second precision: "2026-06-02T09:00:00Z". Needs cap >= 21. */
void qod_time_fmt(int64_t unix_ms, char *out, size_t cap);
/* The same with milliseconds: "2026-06-02T09:00:00.123Z" (log lines). Needs cap >= 25. */
void qod_time_fmt_ms(int64_t unix_ms, char *out, size_t cap);
/* Writes unix_s as an HTTP date (IMF-fixdate, RFC 9110 5.6.7: "Sun, 06 Nov 1994 08:49:37 GMT") into out, which
 * holds QOD_HTTP_DATE_LEN + 1 bytes. */
#define QOD_HTTP_DATE_LEN 29
void qod_time_http_date(int64_t unix_s, char *out);
/* Parses RFC 3339 ("...Z" or "+hh:mm", optional fraction). Returns QOD_OK and unix ms, or QOD_ERR_INVALID. */
int qod_time_parse(const char *s, int64_t *unix_ms);
/* For a libcurl header callback: when the len bytes at line are a Retry-After header (RFC 9110 10.2.3: delay
 * seconds, or an HTTP date), the seconds it asks to wait (0 for a date past); -1 for any other line, or a value
 * that is neither. */
long qod_time_retry_after(const char *line, size_t len);

#endif
