/* Fuzzes qod_jwt_verify, the bearer-token check in front of every authenticated call, with a P-256 key created
 * once per process (in a temporary directory that is removed right away). The first byte picks the mode:
 * - 0x01: a differential check. Claims are built from the rest of the input and signed with qod_jwt_sign; when
 *   signing succeeds, qod_jwt_verify must accept the token and return the same claims (the device claim in the
 *   compact form cJSON prints, which is what the token carries).
 * - 0x02: a valid token is signed, then the rest of the input overwrites part of it; verification must fail
 *   unless the token did not change (base64url has one spelling, and the signature covers header and payload).
 * - anything else: the input itself is verified as a token, which must never crash and rarely passes the header
 *   check (the kid must be ours), so the other modes are what reach the payload parser. */
#include "fuzz.h"

#include "auth/jwt.h"
#include "util/err.h"
#include "util/json.h"

#include <limits.h>
#include <unistd.h>

#define ISSUER "https://qod.example.net"
#define NOW_S 1767225600 /* 2026-01-01T00:00:00Z */

static const qod_jwt_key *key(void)
{
    static qod_jwt_key *k;
    if (!k) {
        char dir[] = "/tmp/qod-fuzz-jwt-XXXXXX", path[PATH_MAX];
        if (!mkdtemp(dir))
            abort();
        snprintf(path, sizeof path, "%s/jwt.key", dir);
        if (qod_jwt_key_load_or_create(path, &k) != QOD_OK)
            abort();
        unlink(path);
        rmdir(dir);
    }
    return k;
}

/* Copies a field into a claim, cut to fit. */
static void set_claim(char *dst, size_t cap, fuzz_in *in)
{
    char *s = fuzz_next(in);
    snprintf(dst, cap, "%s", s);
    free(s);
}

/* True when s is well-formed UTF-8 (Unicode 15, table 3-7): JSON strings carry text, so only such claims can come
 * back byte for byte (the signer writes U+FFFD for anything else). */
static bool utf8_ok(const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        int n = *p < 0x80 ? 1 : *p < 0xc2 ? 0 : *p < 0xe0 ? 2 : *p < 0xf0 ? 3 : *p < 0xf5 ? 4 : 0;
        if (!n)
            return false;
        unsigned lo = *p == 0xe0 ? 0xa0 : *p == 0xf0 ? 0x90 : 0x80, hi = *p == 0xed ? 0x9f : *p == 0xf4 ? 0x8f : 0xbf;
        for (int i = 1; i < n; i++, lo = 0x80, hi = 0xbf)
            if (p[i] < lo || p[i] > hi)
                return false;
        p += n;
    }
    return true;
}

/* The device claim as the token carries it: what cJSON prints from the parsed object; "" when there is none. */
static char *device_as_carried(const char *device)
{
    char err[80];
    cJSON *o = NULL;
    if (!device[0])
        return strdup("");
    if (qod_json_parse(device, strlen(device), 3, &o, err, sizeof err) != QOD_OK || !cJSON_IsObject(o)) {
        cJSON_Delete(o);
        return NULL;
    }
    char *text = cJSON_PrintUnformatted(o);
    char *copy = strdup(text);
    cJSON_free(text);
    cJSON_Delete(o);
    return copy;
}

static void sign_then_verify(fuzz_in *in)
{
    qod_jwt_claims c, got;
    qod_buf tok;
    memset(&c, 0, sizeof c);
    set_claim(c.iss, sizeof c.iss, in);
    set_claim(c.sub, sizeof c.sub, in);
    set_claim(c.client_id, sizeof c.client_id, in);
    set_claim(c.scope, sizeof c.scope, in);
    set_claim(c.jti, sizeof c.jti, in);
    set_claim(c.device, sizeof c.device, in);
    c.iat = NOW_S - (int64_t)fuzz_u32(in) % 100000;
    c.exp = NOW_S + 1 + (int64_t)fuzz_u32(in);
    qod_buf_init(&tok, 0);
    int rc = qod_jwt_sign(key(), &c, &tok);
    char *device = device_as_carried(c.device);
    /* A device claim the signer accepts is one JSON object within its depth. */
    FUZZ_CHECK(rc != QOD_OK || device != NULL);
    bool text = utf8_ok(c.iss) && utf8_ok(c.sub) && utf8_ok(c.client_id) && utf8_ok(c.scope) && utf8_ok(c.jti);
    if (rc == QOD_OK) {
        FUZZ_CHECK(tok.len <= QOD_JWT_MAX_LEN);
        rc = qod_jwt_verify(key(), tok.data, tok.len, c.iss, NOW_S, &got);
        /* A carried device claim longer than the claim's buffer is refused on the way in: see README.md. */
        FUZZ_CHECK(rc == QOD_OK || !text || (rc == QOD_ERR_INVALID && strlen(device) >= sizeof got.device));
    }
    if (rc == QOD_OK && text) {
        FUZZ_CHECK(strcmp(got.iss, c.iss) == 0 && strcmp(got.sub, c.sub) == 0);
        FUZZ_CHECK(strcmp(got.client_id, c.client_id) == 0 && strcmp(got.scope, c.scope) == 0);
        FUZZ_CHECK(strcmp(got.jti, c.jti) == 0 && strcmp(got.device, device) == 0);
        FUZZ_CHECK(got.iat == c.iat && got.exp == c.exp);
        /* The same token is refused once expired, and for another issuer. */
        FUZZ_CHECK(qod_jwt_verify(key(), tok.data, tok.len, c.iss, c.exp, &got) == QOD_ERR_RANGE);
        FUZZ_CHECK(qod_jwt_verify(key(), tok.data, tok.len, "https://other.example", NOW_S, &got) != QOD_OK ||
                   strcmp(c.iss, "https://other.example") == 0);
    }
    free(device);
    qod_buf_dispose(&tok);
}

static void tamper(fuzz_in *in)
{
    static const qod_jwt_claims c = {.iss = ISSUER,
                                     .sub = "app-1",
                                     .client_id = "app-1",
                                     .scope = "qod",
                                     .jti = "3b241101-e2bb-4255-8caf-4136c566a962",
                                     .device = "{\"phoneNumber\":\"+36719991000\"}",
                                     .iat = NOW_S,
                                     .exp = NOW_S + 60};
    qod_jwt_claims got;
    qod_buf tok;
    qod_buf_init(&tok, 0);
    FUZZ_CHECK(qod_jwt_sign(key(), &c, &tok) == QOD_OK);
    char *orig = strdup(tok.data);
    size_t at = fuzz_u32(in) % (tok.len + 1);
    bool cut = fuzz_byte(in) & 1; /* also drop what follows the change */
    size_t n = in->n < tok.len - at ? in->n : tok.len - at;
    memcpy(tok.data + at, in->p, n);
    size_t len = cut ? at + n : tok.len;
    if (qod_jwt_verify(key(), tok.data, len, ISSUER, NOW_S, &got) == QOD_OK)
        FUZZ_CHECK(len == tok.len && memcmp(tok.data, orig, len) == 0);
    free(orig);
    qod_buf_dispose(&tok);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_in in = {data + (size ? 1 : 0), size ? size - 1 : 0};
    qod_jwt_claims got;
    if (size && data[0] == 0x01) {
        sign_then_verify(&in);
    } else if (size && data[0] == 0x02) {
        tamper(&in);
    } else {
        int rc = qod_jwt_verify(key(), (const char *)data, size, ISSUER, NOW_S, &got);
        FUZZ_CHECK(rc == QOD_OK || rc == QOD_ERR_INVALID || rc == QOD_ERR_RANGE || rc == QOD_ERR_STATE ||
                   rc == QOD_ERR_CRYPTO);
    }
    return 0;
}
