/* Fuzzes the application/x-www-form-urlencoded parser of the token and CIBA endpoints (src/api/form.h) and the
 * client authentication beside it. The input is an Authorization header value, a NUL, then the request body.
 * Properties:
 * - an accepted form has at most 16 fields with unique non-empty names, names and values decoded to at most
 *   1024 bytes without control bytes, and qod_form_get returns each field's own value;
 * - qod_form_decode agrees with a reference decoder written from the header's contract, never writes past cap,
 *   and percent-encoding what it decoded decodes back to the same bytes;
 * - the "Basic" credentials path (base64, then both halves form-decoded into the handler's buffers) stays inside
 *   them. */
#include "fuzz.h"

#include "api/form.h"
#include "util/b64.h"
#include "util/err.h"

static int hex(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* The contract of qod_form_decode, written independently: '+' is a space, %XX a byte; a bad escape, a control
 * byte or DEL, or a result that does not fit cap - 1 bytes is -1. */
static long reference_decode(const char *in, size_t n, char *out, size_t cap)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        int c = (unsigned char)in[i];
        if (c == '%') {
            if (n - i < 3 || hex(in[i + 1]) < 0 || hex(in[i + 2]) < 0)
                return -1;
            c = hex(in[i + 1]) * 16 + hex(in[i + 2]);
            i += 2;
        } else if (c == '+') {
            c = ' ';
        }
        if (c < 0x20 || c == 0x7f || o + 1 >= cap)
            return -1;
        out[o++] = (char)c;
    }
    out[o] = '\0';
    return (long)o;
}

/* Decodes into an exactly sized heap buffer (so ASan sees any overrun) and compares with the reference. */
static void check_decode(const char *in, size_t n, size_t cap)
{
    char *out = malloc(cap), *ref = malloc(cap);
    if (!out || !ref)
        abort();
    long got = qod_form_decode(in, n, out, cap), want = reference_decode(in, n, ref, cap);
    FUZZ_CHECK(got == want);
    if (got >= 0) {
        FUZZ_CHECK(memcmp(out, ref, (size_t)got + 1) == 0);
        /* Percent-encoded again, every byte decodes back. */
        char *enc = malloc(3 * (size_t)got + 1), *back = malloc(cap);
        if (!enc || !back)
            abort();
        for (long i = 0; i < got; i++)
            snprintf(enc + 3 * i, 4, "%%%02X", (unsigned char)out[i]);
        FUZZ_CHECK(qod_form_decode(enc, 3 * (size_t)got, back, cap) == got && memcmp(back, out, (size_t)got) == 0);
        free(enc);
        free(back);
    }
    free(out);
    free(ref);
}

static void check_form(const char *body, size_t len)
{
    qod_form f;
    const char *why = NULL;
    int rc = qod_form_parse(body, len, &f, &why);
    FUZZ_CHECK(rc == QOD_OK || rc == QOD_ERR_INVALID || rc == QOD_ERR_LIMIT);
    FUZZ_CHECK((rc == QOD_OK) == (why == NULL));
    if (rc == QOD_OK) {
        FUZZ_CHECK(f.n >= 0 && f.n <= QOD_FORM_MAX_FIELDS);
        for (int i = 0; i < f.n; i++) {
            FUZZ_CHECK(f.names[i][0] != '\0' && strlen(f.names[i]) <= QOD_FORM_MAX_VALUE);
            FUZZ_CHECK(strlen(f.values[i]) <= QOD_FORM_MAX_VALUE);
            FUZZ_CHECK(qod_form_get(&f, f.names[i]) == f.values[i]);
            for (const char *p = f.values[i]; *p; p++)
                FUZZ_CHECK((unsigned char)*p >= 0x20 && *p != 0x7f);
        }
        FUZZ_CHECK(qod_form_get(&f, "") == NULL);
    }
    qod_form_dispose(&f);
    FUZZ_CHECK(f.n == 0);
}

/* Authorization: Basic base64(urlencoded id ":" urlencoded secret), into the token handler's buffers. */
static void check_basic(const char *auth)
{
    unsigned char raw[512];
    char id[128], secret[256];
    const char *b = auth;
    while (*b == ' ')
        b++;
    long n = qod_b64_decode(b, strlen(b), raw, sizeof raw - 1, 0);
    if (n <= 0)
        return;
    FUZZ_CHECK(n < (long)sizeof raw);
    raw[n] = '\0';
    char *colon = memchr(raw, ':', (size_t)n);
    if (!colon)
        return;
    long il = qod_form_decode((char *)raw, (size_t)(colon - (char *)raw), id, sizeof id);
    long sl = qod_form_decode(colon + 1, (size_t)(n - (colon + 1 - (char *)raw)), secret, sizeof secret);
    FUZZ_CHECK(il < (long)sizeof id && sl < (long)sizeof secret);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_in in = {data, size};
    char *auth = fuzz_next(&in);
    /* The body is the rest, passed without a terminator, as the HTTP layer passes it. */
    check_form((const char *)in.p, in.n);
    check_decode((const char *)in.p, in.n, QOD_FORM_MAX_VALUE + 1);
    check_decode((const char *)in.p, in.n, 1 + (size ? data[0] % 32 : 0));
    check_basic(auth);
    free(auth);
    return 0;
}
