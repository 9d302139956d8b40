/* A tiny unit-test harness: one behaviour per test, one line per result ("PASS name" / "FAIL name: why").
 * Each test binary defines its tests with QTEST and lists them in QTEST_MAIN; tests/run.py counts the lines. */
#ifndef QOD_QTEST_H
#define QOD_QTEST_H

#include <stdio.h>
#include <string.h>
#include <time.h>

typedef struct {
    const char *name;
    void (*fn)(int *failed);
} qtest_case;

#define QTEST(name) static void name(int *qtest_failed_)

/* Sleeps ms milliseconds (polling loops, pauses a test needs). */
static inline void qt_sleep_ms(int ms)
{
    nanosleep(&(struct timespec){.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000}, NULL);
}

#define QT_FAIL_(fmt, ...)                                                                                             \
    do {                                                                                                               \
        printf("  %s:%d: " fmt "\n", __FILE__, __LINE__, __VA_ARGS__);                                                 \
        *qtest_failed_ = 1;                                                                                            \
        return;                                                                                                        \
    } while (0)

#define QT_TRUE(c)                                                                                                     \
    do {                                                                                                               \
        if (!(c))                                                                                                      \
            QT_FAIL_("expected %s", #c);                                                                               \
    } while (0)
#define QT_EQ_INT(a, b)                                                                                                \
    do {                                                                                                               \
        long long qa_ = (long long)(a), qb_ = (long long)(b);                                                          \
        if (qa_ != qb_)                                                                                                \
            QT_FAIL_("%s == %lld, expected %s == %lld", #a, qa_, #b, qb_);                                             \
    } while (0)
#define QT_EQ_STR(a, b)                                                                                                \
    do {                                                                                                               \
        const char *qa_ = (a), *qb_ = (b);                                                                             \
        if (!qa_ || !qb_ || strcmp(qa_, qb_) != 0)                                                                     \
            QT_FAIL_("%s == \"%s\", expected \"%s\"", #a, qa_ ? qa_ : "(null)", qb_ ? qb_ : "(null)");                 \
    } while (0)

#define QTEST_MAIN(...)                                                                                                \
    int main(int argc, char **argv)                                                                                    \
    {                                                                                                                  \
        static const qtest_case cases[] = {__VA_ARGS__};                                                               \
        int fails = 0;                                                                                                 \
        for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {                                                  \
            if (argc > 1 && strcmp(argv[1], cases[i].name) != 0)                                                       \
                continue;                                                                                              \
            int f = 0;                                                                                                 \
            cases[i].fn(&f);                                                                                           \
            printf("%s %s\n", f ? "FAIL" : "PASS", cases[i].name);                                                     \
            fflush(stdout);                                                                                            \
            fails += f;                                                                                                \
        }                                                                                                              \
        return fails ? 1 : 0;                                                                                          \
    }
#define QT_CASE(fn)                                                                                                    \
    {                                                                                                                  \
#fn, fn                                                                                                        \
    }

#endif
