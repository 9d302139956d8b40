#include "auth/jwt.h"

#include "qtest.h"
#include "util/b64.h"
#include "util/err.h"

#include <cjson/cJSON.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <openssl/pem.h>

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define ISS "https://qod.example"
#define NOW 1780000000
#define NOW_TEXT "1780000000"
#define EXP_TEXT "1780003600"

/* A temporary data directory with a key created by the module, plus the same key read by OpenSSL directly so that
 * tests can sign tokens of any shape and check that only the property under test makes verification fail. */
typedef struct {
    char dir[64];
    char path[128];
    qod_jwt_key *key;
    EVP_PKEY *pkey;
} fixture;

static int fixture_open(fixture *f)
{
    FILE *fp = NULL;
    memset(f, 0, sizeof *f);
    snprintf(f->dir, sizeof f->dir, "/tmp/qod-jwt-XXXXXX");
    if (!mkdtemp(f->dir))
        return -1;
    snprintf(f->path, sizeof f->path, "%s/jwt.pem", f->dir);
    if (qod_jwt_key_load_or_create(f->path, &f->key) != QOD_OK)
        return -1;
    fp = fopen(f->path, "r");
    f->pkey = fp ? PEM_read_PrivateKey(fp, NULL, NULL, NULL) : NULL;
    if (fp)
        fclose(fp);
    return f->pkey ? 0 : -1;
}

static void fixture_close(fixture *f)
{
    qod_jwt_key_destroy(f->key);
    EVP_PKEY_free(f->pkey);
    unlink(f->path);
    rmdir(f->dir);
}

static qod_jwt_claims sample_claims(void)
{
    qod_jwt_claims c;
    memset(&c, 0, sizeof c);
    snprintf(c.iss, sizeof c.iss, ISS);
    snprintf(c.sub, sizeof c.sub, "app-1");
    snprintf(c.client_id, sizeof c.client_id, "app-1");
    snprintf(c.scope, sizeof c.scope, "qod quality-on-demand:sessions:create");
    snprintf(c.jti, sizeof c.jti, "jti-0001");
    c.iat = NOW;
    c.exp = NOW + 3600;
    return c;
}

static void append_b64url(qod_buf *b, const void *data, size_t n)
{
    char enc[8192];
    long m = qod_b64_encode(data, n, enc, sizeof enc, 1);
    qod_buf_append(b, enc, m > 0 ? (size_t)m : 0);
}

/* Signs input with OpenSSL and converts the DER signature to JWS R || S, independently of the module. */
static void sign_jws(EVP_PKEY *pkey, const char *input, size_t n, unsigned char raw[64])
{
    unsigned char der[80];
    const unsigned char *p = der;
    size_t der_len = sizeof der;
    const BIGNUM *r = NULL, *s = NULL;
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, pkey);
    EVP_DigestSign(md, der, &der_len, (const unsigned char *)input, n);
    ECDSA_SIG *sig = d2i_ECDSA_SIG(NULL, &p, (long)der_len);
    ECDSA_SIG_get0(sig, &r, &s);
    BN_bn2binpad(r, raw, 32);
    BN_bn2binpad(s, raw + 32, 32);
    ECDSA_SIG_free(sig);
    EVP_MD_CTX_free(md);
}

/* header.payload.signature over the given JSON texts; header NULL means the module's own header. */
static void craft(const fixture *f, const char *header, const char *payload, qod_buf *out)
{
    char std[160];
    unsigned char sig[64];
    snprintf(std, sizeof std, "{\"alg\":\"ES256\",\"typ\":\"JWT\",\"kid\":\"%s\"}", qod_jwt_key_kid(f->key));
    header = header ? header : std;
    append_b64url(out, header, strlen(header));
    qod_buf_append(out, ".", 1);
    append_b64url(out, payload, strlen(payload));
    sign_jws(f->pkey, out->data, out->len, sig);
    qod_buf_append(out, ".", 1);
    append_b64url(out, sig, sizeof sig);
}

/* A valid payload as JSON text, without the member named skip (NULL: none), then extra (",\"k\":v…" or NULL). */
static void payload(qod_buf *b, const char *skip, const char *extra)
{
    static const char *const members[][2] = {
        {"iss", "\"" ISS "\""}, {"sub", "\"app-1\""}, {"client_id", "\"app-1\""}, {"scope", "\"qod\""},
        {"iat", NOW_TEXT},      {"exp", EXP_TEXT},    {"jti", "\"jti-0001\""},
    };
    qod_buf_puts(b, "{");
    for (size_t i = 0; i < sizeof members / sizeof members[0]; i++)
        if (!skip || strcmp(skip, members[i][0]) != 0)
            qod_buf_printf(b, "%s\"%s\":%s", b->len > 1 ? "," : "", members[i][0], members[i][1]);
    qod_buf_puts(b, extra ? extra : "");
    qod_buf_puts(b, "}");
}

static int verify_text(const fixture *f, const char *token, size_t len, qod_jwt_claims *out)
{
    return qod_jwt_verify(f->key, token, len, ISS, NOW, out);
}

/* Crafts a token from header (NULL: ours) and payload JSON, and returns what verification says. */
static int verify_crafted(const fixture *f, const char *header, const char *payload_json)
{
    qod_buf tok;
    qod_jwt_claims c;
    qod_buf_init(&tok, 0);
    craft(f, header, payload_json, &tok);
    int rc = verify_text(f, tok.data, tok.len, &c);
    qod_buf_dispose(&tok);
    return rc;
}

/* Same, for a payload that is valid but for skip and extra (see payload()). */
static int verify_payload(const fixture *f, const char *skip, const char *extra)
{
    qod_buf p;
    qod_buf_init(&p, 0);
    payload(&p, skip, extra);
    int rc = verify_crafted(f, NULL, p.data);
    qod_buf_dispose(&p);
    return rc;
}

static int sign_sample(const fixture *f, qod_buf *tok)
{
    qod_jwt_claims c = sample_claims();
    return qod_jwt_sign(f->key, &c, tok);
}

QTEST(sign_then_verify_returns_the_claims)
{
    fixture f;
    qod_buf tok;
    qod_jwt_claims in = sample_claims(), out;
    QT_TRUE(fixture_open(&f) == 0);
    qod_buf_init(&tok, 0);
    int sign_rc = qod_jwt_sign(f.key, &in, &tok);
    int rc = verify_text(&f, tok.data, tok.len, &out);
    qod_buf_dispose(&tok);
    fixture_close(&f);
    QT_EQ_INT(sign_rc, QOD_OK);
    QT_EQ_INT(rc, QOD_OK);
    QT_EQ_STR(out.iss, in.iss);
    QT_EQ_STR(out.sub, in.sub);
    QT_EQ_STR(out.client_id, in.client_id);
    QT_EQ_STR(out.scope, in.scope);
    QT_EQ_STR(out.jti, in.jti);
    QT_EQ_STR(out.device, "");
    QT_EQ_INT(out.iat, in.iat);
    QT_EQ_INT(out.exp, in.exp);
}

QTEST(device_claim_round_trips_as_compact_json)
{
    fixture f;
    qod_buf tok;
    qod_jwt_claims in = sample_claims(), out;
    QT_TRUE(fixture_open(&f) == 0);
    snprintf(in.device, sizeof in.device, "%s",
             "{ \"ipv4Address\": {\"publicAddress\": \"203.0.113.7\", \"publicPort\": 5060} }");
    qod_buf_init(&tok, 0);
    int sign_rc = qod_jwt_sign(f.key, &in, &tok);
    int rc = verify_text(&f, tok.data, tok.len, &out);
    qod_buf_dispose(&tok);
    fixture_close(&f);
    QT_EQ_INT(sign_rc, QOD_OK);
    QT_EQ_INT(rc, QOD_OK);
    QT_EQ_STR(out.device, "{\"ipv4Address\":{\"publicAddress\":\"203.0.113.7\",\"publicPort\":5060}}");
}

QTEST(token_without_device_has_no_device_member)
{
    fixture f;
    qod_buf tok;
    unsigned char json[2048] = {0};
    QT_TRUE(fixture_open(&f) == 0);
    qod_buf_init(&tok, 0);
    int sign_rc = sign_sample(&f, &tok);
    const char *p = strchr(tok.data, '.') + 1;
    long n = qod_b64_decode(p, (size_t)(strchr(p, '.') - p), json, sizeof json - 1, 1);
    qod_buf_dispose(&tok);
    fixture_close(&f);
    QT_EQ_INT(sign_rc, QOD_OK);
    QT_TRUE(n > 0);
    QT_TRUE(strstr((const char *)json, "\"client_id\":\"app-1\"") != NULL);
    QT_TRUE(strstr((const char *)json, "device") == NULL);
}

QTEST(sign_refuses_a_device_that_is_not_an_object)
{
    fixture f;
    qod_buf tok;
    qod_jwt_claims in = sample_claims();
    QT_TRUE(fixture_open(&f) == 0);
    snprintf(in.device, sizeof in.device, "{\"a\":1},\"scope\":\"admin\"");
    qod_buf_init(&tok, 0);
    int rc = qod_jwt_sign(f.key, &in, &tok);
    size_t len = tok.len;
    qod_buf_dispose(&tok);
    fixture_close(&f);
    QT_EQ_INT(rc, QOD_ERR_INVALID);
    QT_EQ_INT(len, 0);
}

/* A claim that fills its array without a terminator would be read past its end; sign must refuse it. */
QTEST(sign_refuses_an_unterminated_claim)
{
    fixture f;
    qod_buf tok;
    qod_jwt_claims a = sample_claims(), b = sample_claims();
    QT_TRUE(fixture_open(&f) == 0);
    memset(a.client_id, 'c', sizeof a.client_id);
    memset(b.device, 'd', sizeof b.device);
    qod_buf_init(&tok, 0);
    int client_rc = qod_jwt_sign(f.key, &a, &tok);
    int device_rc = qod_jwt_sign(f.key, &b, &tok);
    size_t len = tok.len;
    qod_buf_dispose(&tok);
    fixture_close(&f);
    QT_EQ_INT(client_rc, QOD_ERR_INVALID);
    QT_EQ_INT(device_rc, QOD_ERR_INVALID);
    QT_EQ_INT(len, 0);
}

QTEST(key_file_is_created_with_mode_0600)
{
    fixture f;
    struct stat st;
    QT_TRUE(fixture_open(&f) == 0);
    int rc = stat(f.path, &st);
    fixture_close(&f);
    QT_EQ_INT(rc, 0);
    QT_EQ_INT(st.st_mode & 0777, 0600);
    QT_TRUE(S_ISREG(st.st_mode));
}

QTEST(reloading_the_key_file_gives_the_same_kid)
{
    fixture f;
    qod_jwt_key *again = NULL;
    qod_buf tok;
    qod_jwt_claims out;
    QT_TRUE(fixture_open(&f) == 0);
    qod_buf_init(&tok, 0);
    int load_rc = qod_jwt_key_load_or_create(f.path, &again);
    int same = again && strcmp(qod_jwt_key_kid(again), qod_jwt_key_kid(f.key)) == 0;
    int sign_rc = again ? sign_sample(&f, &tok) : -1;
    int rc = again ? qod_jwt_verify(again, tok.data, tok.len, ISS, NOW, &out) : -1;
    qod_buf_dispose(&tok);
    qod_jwt_key_destroy(again);
    fixture_close(&f);
    QT_EQ_INT(load_rc, QOD_OK);
    QT_TRUE(same);
    QT_EQ_INT(sign_rc, QOD_OK);
    QT_EQ_INT(rc, QOD_OK);
}

static int load_pem_text(const char *pem, char *kid, size_t cap)
{
    char dir[] = "/tmp/qod-jwt-XXXXXX", path[64];
    qod_jwt_key *key = NULL;
    FILE *fp = NULL;
    int rc = -1;
    if (!mkdtemp(dir))
        return rc;
    snprintf(path, sizeof path, "%s/jwt.pem", dir);
    fp = fopen(path, "w");
    if (fp) {
        fputs(pem, fp);
        fclose(fp);
        rc = qod_jwt_key_load_or_create(path, &key);
    }
    if (key)
        snprintf(kid, cap, "%s", qod_jwt_key_kid(key));
    qod_jwt_key_destroy(key);
    unlink(path);
    rmdir(dir);
    return rc;
}

/* The expected kid was computed with Python's cryptography package: SHA-256 over
 * {"crv":"P-256","kty":"EC","x":…,"y":…} with x and y from the public numbers, base64url. */
QTEST(kid_is_the_rfc7638_thumbprint)
{
    static const char pem[] = "-----BEGIN PRIVATE KEY-----\n"
                              "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgeBO5nWiSumfbkUaY\n"
                              "HvalZkcbGvTaCQYBtfdM+sWhU16hRANCAAQM8VQTrkdfgbiucBvMkFI26Dj+MYTb\n"
                              "PMgF7DWD5cQj8R/c+pmI+VsL+a/YzgDg+ajkXkKt6sfg8trLBQcxhsUV\n"
                              "-----END PRIVATE KEY-----\n";
    char kid[64] = "";
    int rc = load_pem_text(pem, kid, sizeof kid);
    QT_EQ_INT(rc, QOD_OK);
    QT_EQ_STR(kid, "OFxq14_8fWuiRtRJUVXETcQncsq71aUjZMu-uOfI3x0");
}

QTEST(key_file_with_another_curve_is_refused)
{
    EVP_PKEY *p384 = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-384");
    BIO *bio = BIO_new(BIO_s_mem());
    char *pem = NULL, kid[64];
    PEM_write_bio_PrivateKey(bio, p384, NULL, NULL, 0, NULL, NULL);
    BIO_write(bio, "", 1);
    BIO_get_mem_data(bio, &pem);
    int rc = load_pem_text(pem, kid, sizeof kid);
    BIO_free(bio);
    EVP_PKEY_free(p384);
    QT_EQ_INT(rc, QOD_ERR_CRYPTO);
}

QTEST(key_file_with_junk_is_refused)
{
    char kid[64];
    int rc = load_pem_text("-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n", kid, sizeof kid);
    QT_EQ_INT(rc, QOD_ERR_CRYPTO);
}

QTEST(key_in_a_missing_directory_fails_with_errno)
{
    qod_jwt_key *key = NULL;
    int rc = qod_jwt_key_load_or_create("/tmp/qod-no-such-dir-7f3a/jwt.pem", &key);
    QT_EQ_INT(rc, -ENOENT);
    QT_TRUE(key == NULL);
}

/* Decodes a base64url JWK coordinate member; returns its decoded length. */
static long jwk_coord(const cJSON *jwk, const char *name, unsigned char out[33])
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(jwk, name);
    return cJSON_IsString(v) ? qod_b64_decode(v->valuestring, strlen(v->valuestring), out, 33, 1) : -1;
}

static const char *jwk_str(const cJSON *jwk, const char *name)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(jwk, name);
    return cJSON_IsString(v) ? v->valuestring : "(missing)";
}

QTEST(jwks_has_the_expected_members)
{
    fixture f;
    qod_buf jwks;
    unsigned char x[33], y[33];
    char kid[64];
    QT_TRUE(fixture_open(&f) == 0);
    qod_buf_init(&jwks, 0);
    int rc = qod_jwt_key_jwks(f.key, &jwks);
    snprintf(kid, sizeof kid, "%s", qod_jwt_key_kid(f.key));
    cJSON *doc = cJSON_Parse(jwks.data);
    qod_buf_dispose(&jwks);
    fixture_close(&f);
    const cJSON *keys = cJSON_GetObjectItemCaseSensitive(doc, "keys");
    const cJSON *jwk = cJSON_GetArrayItem(keys, 0);
    long xn = jwk_coord(jwk, "x", x), yn = jwk_coord(jwk, "y", y);
    char kty[16], crv[16], use[16], alg[16], jkid[64];
    snprintf(kty, sizeof kty, "%s", jwk_str(jwk, "kty"));
    snprintf(crv, sizeof crv, "%s", jwk_str(jwk, "crv"));
    snprintf(use, sizeof use, "%s", jwk_str(jwk, "use"));
    snprintf(alg, sizeof alg, "%s", jwk_str(jwk, "alg"));
    snprintf(jkid, sizeof jkid, "%s", jwk_str(jwk, "kid"));
    int nkeys = cJSON_GetArraySize(keys);
    cJSON_Delete(doc);
    QT_EQ_INT(rc, QOD_OK);
    QT_EQ_INT(nkeys, 1);
    QT_EQ_STR(kty, "EC");
    QT_EQ_STR(crv, "P-256");
    QT_EQ_STR(use, "sig");
    QT_EQ_STR(alg, "ES256");
    QT_EQ_STR(jkid, kid);
    QT_EQ_INT(xn, 32);
    QT_EQ_INT(yn, 32);
}

/* Builds a public EVP_PKEY from the JWKS text alone, as a resource server would. */
static EVP_PKEY *pkey_from_jwks(const char *jwks)
{
    unsigned char pub[1 + 2 * 33] = {0x04};
    char group[] = "prime256v1";
    EVP_PKEY *pkey = NULL;
    cJSON *doc = cJSON_Parse(jwks);
    const cJSON *jwk = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(doc, "keys"), 0);
    long xn = jwk_coord(jwk, "x", pub + 1), yn = jwk_coord(jwk, "y", pub + 33);
    OSSL_PARAM params[] = {
        OSSL_PARAM_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, group, 0),
        OSSL_PARAM_octet_string(OSSL_PKEY_PARAM_PUB_KEY, pub, 65),
        OSSL_PARAM_END,
    };
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL);
    if (xn == 32 && yn == 32 && ctx && EVP_PKEY_fromdata_init(ctx) == 1)
        EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params);
    EVP_PKEY_CTX_free(ctx);
    cJSON_Delete(doc);
    return pkey;
}

/* Checks a compact token's ES256 signature with OpenSSL directly: R || S to DER, then EVP_DigestVerify. */
static int openssl_verifies(EVP_PKEY *pkey, const char *token)
{
    unsigned char raw[64], *der = NULL;
    const char *sig = strrchr(token, '.') + 1;
    ECDSA_SIG *es = ECDSA_SIG_new();
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    int ok = 0;
    if (qod_b64_decode(sig, strlen(sig), raw, sizeof raw, 1) == 64 &&
        ECDSA_SIG_set0(es, BN_bin2bn(raw, 32, NULL), BN_bin2bn(raw + 32, 32, NULL))) {
        int der_len = i2d_ECDSA_SIG(es, &der);
        ok = EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, pkey) == 1 &&
             EVP_DigestVerify(md, der, (size_t)der_len, (const unsigned char *)token, (size_t)(sig - 1 - token)) == 1;
    }
    OPENSSL_free(der);
    EVP_MD_CTX_free(md);
    ECDSA_SIG_free(es);
    return ok;
}

QTEST(jwks_key_verifies_our_signature)
{
    fixture f;
    qod_buf jwks, tok;
    QT_TRUE(fixture_open(&f) == 0);
    qod_buf_init(&jwks, 0);
    qod_buf_init(&tok, 0);
    qod_jwt_key_jwks(f.key, &jwks);
    int sign_rc = sign_sample(&f, &tok);
    EVP_PKEY *pub = pkey_from_jwks(jwks.data);
    int ok = pub && openssl_verifies(pub, tok.data);
    EVP_PKEY_free(pub);
    qod_buf_dispose(&jwks);
    qod_buf_dispose(&tok);
    fixture_close(&f);
    QT_EQ_INT(sign_rc, QOD_OK);
    QT_TRUE(ok);
}

QTEST(flipped_payload_byte_is_rejected)
{
    fixture f;
    qod_buf tok;
    qod_jwt_claims out;
    QT_TRUE(fixture_open(&f) == 0);
    qod_buf_init(&tok, 0);
    sign_sample(&f, &tok);
    char *p = strchr(tok.data, '.') + 10;
    *p = *p == 'A' ? 'B' : 'A';
    int rc = verify_text(&f, tok.data, tok.len, &out);
    qod_buf_dispose(&tok);
    fixture_close(&f);
    QT_EQ_INT(rc, QOD_ERR_INVALID);
}

/* A well-formed payload with one changed claim under the original header and signature. */
QTEST(changed_claim_under_the_old_signature_is_rejected)
{
    fixture f;
    qod_buf tok, forged, p;
    qod_jwt_claims out;
    QT_TRUE(fixture_open(&f) == 0);
    qod_buf_init(&tok, 0);
    qod_buf_init(&forged, 0);
    qod_buf_init(&p, 0);
    sign_sample(&f, &tok);
    payload(&p, "scope", ",\"scope\":\"qod admin\"");
    qod_buf_append(&forged, tok.data, (size_t)(strchr(tok.data, '.') + 1 - tok.data));
    append_b64url(&forged, p.data, p.len);
    qod_buf_puts(&forged, strrchr(tok.data, '.'));
    int rc = verify_text(&f, forged.data, forged.len, &out);
    qod_buf_dispose(&tok);
    qod_buf_dispose(&forged);
    qod_buf_dispose(&p);
    fixture_close(&f);
    QT_EQ_INT(rc, QOD_ERR_INVALID);
}

static int verify_unsigned(const fixture *f, const char *header, const char *sig_b64)
{
    qod_buf tok, p;
    qod_jwt_claims out;
    qod_buf_init(&tok, 0);
    qod_buf_init(&p, 0);
    payload(&p, NULL, NULL);
    append_b64url(&tok, header, strlen(header));
    qod_buf_puts(&tok, ".");
    append_b64url(&tok, p.data, p.len);
    qod_buf_printf(&tok, ".%s", sig_b64);
    int rc = verify_text(f, tok.data, tok.len, &out);
    qod_buf_dispose(&tok);
    qod_buf_dispose(&p);
    return rc;
}

QTEST(alg_none_is_rejected)
{
    fixture f;
    char header[160];
    QT_TRUE(fixture_open(&f) == 0);
    snprintf(header, sizeof header, "{\"alg\":\"none\",\"typ\":\"JWT\",\"kid\":\"%s\"}", qod_jwt_key_kid(f.key));
    int rc = verify_unsigned(&f, header, "");
    fixture_close(&f);
    QT_EQ_INT(rc, QOD_ERR_INVALID);
}

/* The classic algorithm confusion: an HMAC keyed with the published JWKS text. */
QTEST(hs256_keyed_with_the_jwks_is_rejected)
{
    fixture f;
    char header[160], sig_b64[64];
    unsigned char mac[32];
    size_t mac_len = 0;
    qod_buf jwks, input, p;
    QT_TRUE(fixture_open(&f) == 0);
    qod_buf_init(&jwks, 0);
    qod_buf_init(&input, 0);
    qod_buf_init(&p, 0);
    qod_jwt_key_jwks(f.key, &jwks);
    snprintf(header, sizeof header, "{\"alg\":\"HS256\",\"typ\":\"JWT\",\"kid\":\"%s\"}", qod_jwt_key_kid(f.key));
    payload(&p, NULL, NULL);
    append_b64url(&input, header, strlen(header));
    qod_buf_puts(&input, ".");
    append_b64url(&input, p.data, p.len);
    EVP_Q_mac(NULL, "HMAC", NULL, "SHA256", NULL, jwks.data, jwks.len, (const unsigned char *)input.data, input.len,
              mac, sizeof mac, &mac_len);
    qod_b64_encode(mac, sizeof mac, sig_b64, sizeof sig_b64, 1);
    int rc = verify_unsigned(&f, header, sig_b64);
    qod_buf_dispose(&jwks);
    qod_buf_dispose(&input);
    qod_buf_dispose(&p);
    fixture_close(&f);
    QT_EQ_INT(mac_len, 32);
    QT_EQ_INT(rc, QOD_ERR_INVALID);
}

QTEST(duplicate_alg_in_the_header_is_rejected)
{
    fixture f;
    char header[192];
    QT_TRUE(fixture_open(&f) == 0);
    snprintf(header, sizeof header, "{\"alg\":\"ES256\",\"alg\":\"none\",\"typ\":\"JWT\",\"kid\":\"%s\"}",
             qod_jwt_key_kid(f.key));
    qod_buf p;
    qod_buf_init(&p, 0);
    payload(&p, NULL, NULL);
    int rc = verify_crafted(&f, header, p.data);
    qod_buf_dispose(&p);
    fixture_close(&f);
    QT_EQ_INT(rc, QOD_ERR_INVALID);
}

static int verify_with_header(const fixture *f, const char *header)
{
    qod_buf p;
    qod_buf_init(&p, 0);
    payload(&p, NULL, NULL);
    int rc = verify_crafted(f, header, p.data);
    qod_buf_dispose(&p);
    return rc;
}

QTEST(header_without_typ_is_accepted)
{
    fixture f;
    char header[160];
    QT_TRUE(fixture_open(&f) == 0);
    snprintf(header, sizeof header, "{\"alg\":\"ES256\",\"kid\":\"%s\"}", qod_jwt_key_kid(f.key));
    int rc = verify_with_header(&f, header);
    fixture_close(&f);
    QT_EQ_INT(rc, QOD_OK);
}

QTEST(typ_other_than_jwt_is_rejected)
{
    fixture f;
    char header[160];
    QT_TRUE(fixture_open(&f) == 0);
    snprintf(header, sizeof header, "{\"alg\":\"ES256\",\"typ\":\"at+jwt\",\"kid\":\"%s\"}", qod_jwt_key_kid(f.key));
    int rc = verify_with_header(&f, header);
    fixture_close(&f);
    QT_EQ_INT(rc, QOD_ERR_INVALID);
}

QTEST(missing_kid_is_rejected)
{
    fixture f;
    QT_TRUE(fixture_open(&f) == 0);
    int rc = verify_with_header(&f, "{\"alg\":\"ES256\",\"typ\":\"JWT\"}");
    fixture_close(&f);
    QT_EQ_INT(rc, QOD_ERR_INVALID);
}

/* Signed with our key, but naming another: the kid must be checked, not only the signature. */
QTEST(wrong_kid_is_rejected)
{
    fixture f;
    QT_TRUE(fixture_open(&f) == 0);
    int rc = verify_with_header(
        &f, "{\"alg\":\"ES256\",\"typ\":\"JWT\",\"kid\":\"OFxq14_8fWuiRtRJUVXETcQncsq71aUjZMu-uOfI3x0\"}");
    fixture_close(&f);
    QT_EQ_INT(rc, QOD_ERR_INVALID);
}

QTEST(unknown_header_member_is_rejected)
{
    fixture f;
    char header[192];
    QT_TRUE(fixture_open(&f) == 0);
    snprintf(header, sizeof header, "{\"alg\":\"ES256\",\"typ\":\"JWT\",\"kid\":\"%s\",%s}", qod_jwt_key_kid(f.key),
             "\"jku\":\"https://evil.example\"");
    int rc = verify_with_header(&f, header);
    fixture_close(&f);
    QT_EQ_INT(rc, QOD_ERR_INVALID);
}

QTEST(token_of_another_key_is_rejected)
{
    fixture f, other;
    qod_buf tok;
    qod_jwt_claims out;
    QT_TRUE(fixture_open(&f) == 0);
    QT_TRUE(fixture_open(&other) == 0);
    qod_buf_init(&tok, 0);
    sign_sample(&other, &tok);
    int rc = verify_text(&f, tok.data, tok.len, &out);
    qod_buf_dispose(&tok);
    fixture_close(&other);
    fixture_close(&f);
    QT_EQ_INT(rc, QOD_ERR_INVALID);
}

/* Replaces the signature of a freshly signed token with the first n bytes of raw (n <= 80). */
static int verify_with_signature(const fixture *f, const unsigned char *raw, size_t n)
{
    qod_buf tok, forged;
    qod_jwt_claims out;
    qod_buf_init(&tok, 0);
    qod_buf_init(&forged, 0);
    sign_sample(f, &tok);
    qod_buf_append(&forged, tok.data, (size_t)(strrchr(tok.data, '.') + 1 - tok.data));
    append_b64url(&forged, raw, n);
    int rc = verify_text(f, forged.data, forged.len, &out);
    qod_buf_dispose(&tok);
    qod_buf_dispose(&forged);
    return rc;
}

QTEST(signature_of_63_or_65_bytes_is_rejected)
{
    fixture f;
    unsigned char raw[65] = {0};
    qod_buf tok;
    QT_TRUE(fixture_open(&f) == 0);
    qod_buf_init(&tok, 0);
    sign_sample(&f, &tok);
    const char *sig = strrchr(tok.data, '.') + 1;
    qod_b64_decode(sig, strlen(sig), raw, 64, 1);
    int rc63 = verify_with_signature(&f, raw, 63);
    int rc65 = verify_with_signature(&f, raw, 65);
    int rc64 = verify_with_signature(&f, raw, 64);
    qod_buf_dispose(&tok);
    fixture_close(&f);
    QT_EQ_INT(rc63, QOD_ERR_INVALID);
    QT_EQ_INT(rc65, QOD_ERR_INVALID);
    QT_EQ_INT(rc64, QOD_OK);
}

/* OpenSSL would accept the DER form; JWS allows only R || S. */
QTEST(der_encoded_signature_is_rejected)
{
    fixture f;
    qod_buf tok;
    unsigned char der[80];
    size_t der_len = sizeof der;
    QT_TRUE(fixture_open(&f) == 0);
    qod_buf_init(&tok, 0);
    sign_sample(&f, &tok);
    size_t input_len = (size_t)(strrchr(tok.data, '.') - tok.data);
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, f.pkey);
    EVP_DigestSign(md, der, &der_len, (const unsigned char *)tok.data, input_len);
    EVP_MD_CTX_free(md);
    int rc = verify_with_signature(&f, der, der_len);
    qod_buf_dispose(&tok);
    fixture_close(&f);
    QT_EQ_INT(rc, QOD_ERR_INVALID);
}

QTEST(token_needs_exactly_three_segments)
{
    fixture f;
    qod_buf tok;
    qod_jwt_claims out;
    QT_TRUE(fixture_open(&f) == 0);
    qod_buf_init(&tok, 0);
    sign_sample(&f, &tok);
    int two = verify_text(&f, tok.data, (size_t)(strrchr(tok.data, '.') - tok.data), &out);
    qod_buf_puts(&tok, ".e30");
    int four = verify_text(&f, tok.data, tok.len, &out);
    qod_buf_dispose(&tok);
    fixture_close(&f);
    QT_EQ_INT(two, QOD_ERR_INVALID);
    QT_EQ_INT(four, QOD_ERR_INVALID);
}

QTEST(junk_segments_are_rejected)
{
    fixture f;
    qod_jwt_claims out;
    QT_TRUE(fixture_open(&f) == 0);
    int a = verify_text(&f, "abc.def.ghi", 11, &out);
    int b = verify_text(&f, "..", 2, &out);
    int c = verify_text(&f, "", 0, &out);
    fixture_close(&f);
    QT_EQ_INT(a, QOD_ERR_INVALID);
    QT_EQ_INT(b, QOD_ERR_INVALID);
    QT_EQ_INT(c, QOD_ERR_INVALID);
}

QTEST(standard_base64_or_padding_is_rejected)
{
    fixture f;
    qod_buf tok;
    qod_jwt_claims out;
    QT_TRUE(fixture_open(&f) == 0);
    qod_buf_init(&tok, 0);
    sign_sample(&f, &tok);
    tok.data[3] = '+';
    int plus = verify_text(&f, tok.data, tok.len, &out);
    qod_buf_reset(&tok);
    sign_sample(&f, &tok);
    qod_buf_puts(&tok, "=");
    int pad = verify_text(&f, tok.data, tok.len, &out);
    qod_buf_dispose(&tok);
    fixture_close(&f);
    QT_EQ_INT(plus, QOD_ERR_INVALID);
    QT_EQ_INT(pad, QOD_ERR_INVALID);
}

static void repeat(char *out, size_t n, char c)
{
    memset(out, c, n);
    out[n] = '\0';
}

/* A token signed by the fixture key whose payload carries an unknown "pad" claim of n bytes. */
static void craft_padded(const fixture *f, size_t n, qod_buf *tok)
{
    char pad[QOD_JWT_MAX_LEN], extra[QOD_JWT_MAX_LEN + 16];
    qod_buf p;
    qod_buf_init(&p, 0);
    repeat(pad, n, 'x');
    snprintf(extra, sizeof extra, ",\"pad\":\"%s\"", pad);
    payload(&p, NULL, extra);
    qod_buf_reset(tok);
    craft(f, NULL, p.data, tok);
    qod_buf_dispose(&p);
}

/* Grows the padding from just below the limit until the signed token crosses QOD_JWT_MAX_LEN: the last token under
 * the limit verifies, the first one over it does not. */
QTEST(length_limit_is_exactly_qod_jwt_max_len)
{
    fixture f;
    qod_buf tok;
    qod_jwt_claims out;
    size_t under = 0, over = 0, n;
    int under_rc = -1, over_rc = -1;
    QT_TRUE(fixture_open(&f) == 0);
    qod_buf_init(&tok, 0);
    craft_padded(&f, 0, &tok);
    /* Each padding byte adds 4/3 of a character; start a few characters short of the limit. */
    for (n = (QOD_JWT_MAX_LEN - tok.len) * 3 / 4 - 4; !over && n < QOD_JWT_MAX_LEN - 100; n++) {
        craft_padded(&f, n, &tok);
        int rc = verify_text(&f, tok.data, tok.len, &out);
        if (tok.len <= QOD_JWT_MAX_LEN) {
            under = tok.len;
            under_rc = rc;
        } else {
            over = tok.len;
            over_rc = rc;
        }
    }
    qod_buf_dispose(&tok);
    fixture_close(&f);
    QT_TRUE(under >= QOD_JWT_MAX_LEN - 2);
    QT_EQ_INT(under_rc, QOD_OK);
    QT_TRUE(over > QOD_JWT_MAX_LEN);
    QT_EQ_INT(over_rc, QOD_ERR_INVALID);
}

QTEST(expired_token_is_out_of_range)
{
    fixture f;
    QT_TRUE(fixture_open(&f) == 0);
    int past = verify_payload(&f, "exp", ",\"exp\":1779999999");
    int now = verify_payload(&f, "exp", ",\"exp\":" NOW_TEXT);
    fixture_close(&f);
    QT_EQ_INT(past, QOD_ERR_RANGE);
    QT_EQ_INT(now, QOD_ERR_RANGE);
}

QTEST(iat_more_than_60s_ahead_is_not_valid_yet)
{
    fixture f;
    QT_TRUE(fixture_open(&f) == 0);
    int rc = verify_payload(&f, "iat", ",\"iat\":1780000061");
    fixture_close(&f);
    QT_EQ_INT(rc, QOD_ERR_STATE);
}

QTEST(iat_60s_ahead_is_accepted)
{
    fixture f;
    QT_TRUE(fixture_open(&f) == 0);
    int rc = verify_payload(&f, "iat", ",\"iat\":1780000060");
    fixture_close(&f);
    QT_EQ_INT(rc, QOD_OK);
}

QTEST(foreign_issuer_is_rejected)
{
    fixture f;
    QT_TRUE(fixture_open(&f) == 0);
    int rc = verify_payload(&f, "iss", ",\"iss\":\"https://other.example\"");
    fixture_close(&f);
    QT_EQ_INT(rc, QOD_ERR_INVALID);
}

QTEST(every_required_claim_is_required)
{
    static const char *const names[] = {"iss", "sub", "client_id", "scope", "iat", "exp", "jti"};
    fixture f;
    int accepted = 0;
    QT_TRUE(fixture_open(&f) == 0);
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (verify_payload(&f, names[i], NULL) != QOD_ERR_INVALID) {
            printf("  accepted without %s\n", names[i]);
            accepted++;
        }
    fixture_close(&f);
    QT_EQ_INT(accepted, 0);
}

QTEST(claims_of_the_wrong_type_are_rejected)
{
    static const char *const cases[][2] = {
        {"iat", ",\"iat\":\"" NOW_TEXT "\""},
        {"exp", ",\"exp\":1780003600.5"},
        {"exp", ",\"exp\":-1"},
        {"sub", ",\"sub\":42"},
        {"scope", ",\"scope\":[\"qod\"]"},
        {"iss", ",\"iss\":null"},
        {NULL, ",\"device\":\"tel:+33612345678\""},
    };
    fixture f;
    int accepted = 0;
    QT_TRUE(fixture_open(&f) == 0);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        if (verify_payload(&f, cases[i][0], cases[i][1]) != QOD_ERR_INVALID) {
            printf("  accepted %s\n", cases[i][1]);
            accepted++;
        }
    fixture_close(&f);
    QT_EQ_INT(accepted, 0);
}

QTEST(claim_longer_than_its_field_is_rejected_not_truncated)
{
    fixture f;
    char id[80], extra[128], value[200], dev[240];
    QT_TRUE(fixture_open(&f) == 0);
    repeat(id, sizeof((qod_jwt_claims *)0)->client_id, 'c');
    snprintf(extra, sizeof extra, ",\"client_id\":\"%s\"", id);
    int client_rc = verify_payload(&f, "client_id", extra);
    /* {"x":"…"} with 154 characters is 162 bytes of compact JSON, more than the 159 the field holds. */
    repeat(value, 154, 'd');
    snprintf(dev, sizeof dev, ",\"device\":{\"x\":\"%s\"}", value);
    int device_rc = verify_payload(&f, NULL, dev);
    fixture_close(&f);
    QT_EQ_INT(client_rc, QOD_ERR_INVALID);
    QT_EQ_INT(device_rc, QOD_ERR_INVALID);
}

QTEST(claim_that_exactly_fills_its_field_is_accepted)
{
    fixture f;
    char id[80], extra[128];
    qod_buf p, tok;
    qod_jwt_claims out;
    QT_TRUE(fixture_open(&f) == 0);
    repeat(id, sizeof out.client_id - 1, 'c');
    snprintf(extra, sizeof extra, ",\"client_id\":\"%s\"", id);
    qod_buf_init(&p, 0);
    qod_buf_init(&tok, 0);
    payload(&p, "client_id", extra);
    craft(&f, NULL, p.data, &tok);
    int rc = verify_text(&f, tok.data, tok.len, &out);
    qod_buf_dispose(&p);
    qod_buf_dispose(&tok);
    fixture_close(&f);
    QT_EQ_INT(rc, QOD_OK);
    QT_EQ_STR(out.client_id, id);
}

QTEST(duplicate_claim_in_the_payload_is_rejected)
{
    fixture f;
    QT_TRUE(fixture_open(&f) == 0);
    int rc = verify_payload(&f, NULL, ",\"sub\":\"other-app\"");
    fixture_close(&f);
    QT_EQ_INT(rc, QOD_ERR_INVALID);
}

QTEST(payload_that_is_not_an_object_is_rejected)
{
    fixture f;
    QT_TRUE(fixture_open(&f) == 0);
    int rc = verify_crafted(&f, NULL, "[\"" ISS "\"]");
    fixture_close(&f);
    QT_EQ_INT(rc, QOD_ERR_INVALID);
}

typedef struct {
    const fixture *f;
    int id;
    int wrong;
} worker;

/* Each thread signs and verifies its own tokens with the one shared key. */
static void *work(void *arg)
{
    worker *w = arg;
    qod_jwt_claims in = sample_claims(), out;
    qod_buf tok;
    qod_buf_init(&tok, 0);
    for (int i = 0; i < 50; i++) {
        snprintf(in.jti, sizeof in.jti, "t%d-%d", w->id, i);
        qod_buf_reset(&tok);
        if (qod_jwt_sign(w->f->key, &in, &tok) != QOD_OK || verify_text(w->f, tok.data, tok.len, &out) != QOD_OK ||
            strcmp(out.jti, in.jti) != 0)
            w->wrong++;
    }
    qod_buf_dispose(&tok);
    return NULL;
}

QTEST(sign_and_verify_from_several_threads)
{
    fixture f;
    pthread_t t[4];
    worker w[4];
    int wrong = 0;
    QT_TRUE(fixture_open(&f) == 0);
    for (int i = 0; i < 4; i++) {
        w[i] = (worker){&f, i, 0};
        pthread_create(&t[i], NULL, work, &w[i]);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        wrong += w[i].wrong;
    }
    fixture_close(&f);
    QT_EQ_INT(wrong, 0);
}

QTEST_MAIN(QT_CASE(sign_then_verify_returns_the_claims), QT_CASE(device_claim_round_trips_as_compact_json),
           QT_CASE(token_without_device_has_no_device_member), QT_CASE(sign_refuses_a_device_that_is_not_an_object),
           QT_CASE(sign_refuses_an_unterminated_claim), QT_CASE(key_file_is_created_with_mode_0600),
           QT_CASE(reloading_the_key_file_gives_the_same_kid), QT_CASE(kid_is_the_rfc7638_thumbprint),
           QT_CASE(key_file_with_another_curve_is_refused), QT_CASE(key_file_with_junk_is_refused),
           QT_CASE(key_in_a_missing_directory_fails_with_errno), QT_CASE(jwks_has_the_expected_members),
           QT_CASE(jwks_key_verifies_our_signature), QT_CASE(flipped_payload_byte_is_rejected),
           QT_CASE(changed_claim_under_the_old_signature_is_rejected), QT_CASE(alg_none_is_rejected),
           QT_CASE(hs256_keyed_with_the_jwks_is_rejected), QT_CASE(duplicate_alg_in_the_header_is_rejected),
           QT_CASE(header_without_typ_is_accepted), QT_CASE(typ_other_than_jwt_is_rejected),
           QT_CASE(missing_kid_is_rejected), QT_CASE(wrong_kid_is_rejected), QT_CASE(unknown_header_member_is_rejected),
           QT_CASE(token_of_another_key_is_rejected), QT_CASE(signature_of_63_or_65_bytes_is_rejected),
           QT_CASE(der_encoded_signature_is_rejected), QT_CASE(token_needs_exactly_three_segments),
           QT_CASE(junk_segments_are_rejected), QT_CASE(standard_base64_or_padding_is_rejected),
           QT_CASE(length_limit_is_exactly_qod_jwt_max_len), QT_CASE(expired_token_is_out_of_range),
           QT_CASE(iat_more_than_60s_ahead_is_not_valid_yet), QT_CASE(iat_60s_ahead_is_accepted),
           QT_CASE(foreign_issuer_is_rejected), QT_CASE(every_required_claim_is_required),
           QT_CASE(claims_of_the_wrong_type_are_rejected),
           QT_CASE(claim_longer_than_its_field_is_rejected_not_truncated),
           QT_CASE(claim_that_exactly_fills_its_field_is_accepted), QT_CASE(duplicate_claim_in_the_payload_is_rejected),
           QT_CASE(payload_that_is_not_an_object_is_rejected), QT_CASE(sign_and_verify_from_several_threads))
