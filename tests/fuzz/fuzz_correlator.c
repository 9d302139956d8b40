/* Fuzzes the request-header checks that need no live request: qod_correlator_valid (the x-correlator header) and
 * the OAuth2 scope lists (src/auth/scope.h) that the token endpoint validates and every call checks. Each is
 * compared with a reference written from its documented rule; any disagreement aborts. The input is the header
 * value, a NUL, then a "want" scope list, a NUL, then a "have" scope list. */
#include "fuzz.h"

#include "api/api.h"
#include "auth/scope.h"

/* CAMARA XCorrelator: ^[a-zA-Z0-9-_:;./<>{}]{0,256}$ */
static bool reference_correlator(const char *s)
{
    static const char allowed[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_:;./<>{}";
    size_t n = strlen(s);
    return n <= QOD_CORRELATOR_MAX && strspn(s, allowed) == n;
}

/* scope.h: 1..32 scopes of printable ASCII without '"' or '\\', single spaces (none leading or trailing), each
 * of at most 128 bytes, total at most cap-1 bytes. */
static bool reference_scope_valid(const char *list, size_t cap)
{
    size_t len = strlen(list), count = 0;
    if (len == 0 || len >= cap)
        return false;
    for (size_t i = 0; i < len;) {
        size_t tok = strcspn(list + i, " ");
        if (tok == 0 || tok > 128 || ++count > 32)
            return false;
        for (size_t k = i; k < i + tok; k++) {
            unsigned char c = (unsigned char)list[k];
            if (c < 0x21 || c > 0x7e || c == '"' || c == '\\')
                return false;
        }
        i += tok;
        if (list[i] == ' ' && (i + 1 == len))
            return false;
        i += list[i] == ' ';
    }
    return true;
}

/* True when the space-separated list holds the n-byte token tok. */
static bool reference_has(const char *list, const char *tok, size_t n)
{
    for (const char *p = list; *p;) {
        size_t len = strcspn(p, " ");
        if (len == n && n && memcmp(p, tok, n) == 0)
            return true;
        p += len + (p[len] == ' ');
    }
    return false;
}

/* Every non-empty token of want is a token of have. */
static bool reference_subset(const char *want, const char *have)
{
    for (const char *p = want; *p;) {
        size_t len = strcspn(p, " ");
        if (len && !reference_has(have, p, len))
            return false;
        p += len + (p[len] == ' ');
    }
    return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_in in = {data, size};
    char *correlator = fuzz_next(&in), *want = fuzz_next(&in), *have = fuzz_next(&in);
    FUZZ_CHECK(qod_correlator_valid(correlator) == reference_correlator(correlator));
    static const size_t caps[] = {512, 64, 8};
    for (size_t i = 0; i < sizeof caps / sizeof caps[0]; i++)
        FUZZ_CHECK(qod_scope_valid(want, caps[i]) == reference_scope_valid(want, caps[i]));
    FUZZ_CHECK(qod_scope_subset(want, have) == reference_subset(want, have));
    FUZZ_CHECK(qod_scope_subset(want, want) && qod_scope_subset("", have));
    FUZZ_CHECK(qod_scope_has(have, want) == reference_has(have, want, strlen(want)));
    const char *bad = NULL;
    size_t badlen = 0;
    if (!qod_scope_known(want, &bad, &badlen))
        FUZZ_CHECK(bad >= want && badlen > 0 && bad + badlen <= want + strlen(want));
    free(correlator);
    free(want);
    free(have);
    return 0;
}
