/* Fuzzes the RFC 3339 timestamps (src/util/time.h): qod_time_parse reads client dates such as v1's
 * sinkCredential.accessTokenExpiresUtc, qod_time_fmt writes every timestamp the APIs return. Properties:
 * - parse -> fmt -> parse gives the same second, for every instant fmt can write in the form parse reads (years
 *   1970 to 9999; see README.md for the instants just outside that parse accepts);
 * - an accepted text lies within a day (the largest offset) of that range;
 * - fmt (and fmt_ms, of the log lines) of any 64-bit millisecond value stays inside its buffer.
 * The first 8 bytes of the input are also read as a millisecond value for fmt. */
#include "fuzz.h"

#include "util/err.h"
#include "util/time.h"

#define DAY_MS 86400000LL
#define YEAR_10000_MS 253402300800000LL /* 10000-01-01T00:00:00Z */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = fuzz_strndup(data, size), out[32];
    int64_t ms = 0, again = 0;
    if (qod_time_parse(s, &ms) == QOD_OK) {
        FUZZ_CHECK(ms > -DAY_MS && ms < YEAR_10000_MS + DAY_MS);
        if (ms >= 0 && ms < YEAR_10000_MS) {
            qod_time_fmt(ms, out, sizeof out);
            FUZZ_CHECK(strlen(out) == 20);
            FUZZ_CHECK(qod_time_parse(out, &again) == QOD_OK && again == ms - ms % 1000);
        }
    }
    if (size >= 8) {
        uint64_t raw = 0;
        memcpy(&raw, data, 8);
        /* A cap of 21 is the documented minimum; the guard bytes after it must stay untouched. */
        memset(out, 'x', sizeof out);
        qod_time_fmt((int64_t)raw, out, 21);
        FUZZ_CHECK(strlen(out) <= 20 && out[21] == 'x');
        /* The log lines' millisecond form: 25 bytes. */
        memset(out, 'x', sizeof out);
        qod_time_fmt_ms((int64_t)raw, out, 25);
        FUZZ_CHECK(strlen(out) <= 24 && out[25] == 'x');
    }
    free(s);
    return 0;
}
