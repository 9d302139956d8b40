#include "auth/jwt.h"

#include "util/b64.h"
#include "util/err.h"
#include "util/json.h"

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/obj_mac.h>
#include <openssl/pem.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* A P-256 coordinate and a SHA-256 digest are both 32 bytes: 43 base64url characters and a NUL. */
#define QOD_JWT_B64_32 44
/* A JWS ES256 signature is R || S, 32 bytes each (RFC 7518 §3.4). */
#define QOD_JWT_SIG_LEN 64
/* The DER form of a P-256 ECDSA signature is at most 72 bytes. */
#define QOD_JWT_DER_MAX 80
/* Our key file is about 240 bytes of PEM; a much larger file is not one we wrote. */
#define QOD_JWT_KEY_FILE_MAX 16384
/* Clock skew tolerated on iat, for tokens issued by another node of the same deployment. */
#define QOD_JWT_IAT_LEEWAY_S 60
/* Deep enough for a device object such as {"ipv4Address":{"publicAddress":…}} inside the payload. */
#define QOD_JWT_PAYLOAD_DEPTH 4
/* The largest decoded segment of a token that passed the QOD_JWT_MAX_LEN check. */
#define QOD_JWT_SEG_MAX (QOD_JWT_MAX_LEN / 4 * 3 + 3)

struct qod_jwt_key {
    EVP_PKEY *pkey;
    char x[QOD_JWT_B64_32];
    char y[QOD_JWT_B64_32];
    char kid[QOD_JWT_B64_32];
    char header_b64[128]; /* the encoded JWS header, the same for every token we sign */
};

/* The string claims, in the order they are signed; one table serves signing and verification. */
typedef struct {
    const char *name;
    size_t off;
    size_t cap;
} str_claim;

#define QOD_JWT_STR_CLAIM(f)                                                                                           \
    {                                                                                                                  \
#f, offsetof(qod_jwt_claims, f), sizeof(((qod_jwt_claims *)0)->f)                                              \
    }
static const str_claim str_claims[] = {
    QOD_JWT_STR_CLAIM(iss),   QOD_JWT_STR_CLAIM(sub), QOD_JWT_STR_CLAIM(client_id),
    QOD_JWT_STR_CLAIM(scope), QOD_JWT_STR_CLAIM(jti),
};

/* The key file is never encrypted; without this callback OpenSSL would prompt on the terminal for a passphrase. */
static int no_passphrase(char *buf, int size, int rwflag, void *u)
{
    (void)buf;
    (void)size;
    (void)rwflag;
    (void)u;
    return -1;
}

/* Reads at most cap - 1 bytes; a file that fills the buffer is too large to be our key. */
static int read_small(int fd, char *buf, size_t cap, size_t *len)
{
    size_t n = 0;
    int rc = QOD_OK;
    for (;;) {
        ssize_t r = read(fd, buf + n, cap - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            rc = r < 0 ? -errno : QOD_OK;
            break;
        }
        n += (size_t)r;
        if (n == cap) {
            rc = QOD_ERR_CRYPTO;
            break;
        }
    }
    *len = n;
    return rc;
}

static int write_all(int fd, const char *data, size_t len)
{
    int rc = QOD_OK;
    while (len > 0 && rc == QOD_OK) {
        ssize_t w = write(fd, data, len);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0) {
            rc = -errno;
        } else {
            data += w;
            len -= (size_t)w;
        }
    }
    return rc;
}

/* Makes a rename in path's directory durable: without this a crash can leave no key file at all. */
static int fsync_parent_dir(const char *path)
{
    char dir[PATH_MAX] = ".";
    const char *slash = strrchr(path, '/');
    int rc = QOD_OK, fd = -1;
    if (slash) {
        size_t n = slash == path ? 1 : (size_t)(slash - path);
        memcpy(dir, path, n);
        dir[n] = '\0';
    }
    fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0 || fsync(fd) != 0)
        rc = -errno;
    if (fd >= 0)
        close(fd);
    return rc;
}

/* Writes data to path through a temporary file in the same directory, so that path is either absent or complete,
 * and fsyncs file and directory so that a key whose tokens are already out survives a crash. */
static int write_file_atomic(const char *path, const char *data, size_t len)
{
    char tmp[PATH_MAX];
    int fd = -1, rc = QOD_OK;
    if (snprintf(tmp, sizeof tmp, "%s.tmp-XXXXXX", path) >= (int)sizeof tmp) {
        rc = -ENAMETOOLONG;
        goto out;
    }
    fd = mkostemp(tmp, O_CLOEXEC);
    if (fd < 0) {
        rc = -errno;
        goto out;
    }
    /* mkostemp already uses 0600, but the mode is the key's only protection, so it is set explicitly. */
    rc = fchmod(fd, 0600) == 0 ? write_all(fd, data, len) : -errno;
    if (rc == QOD_OK && fsync(fd) != 0)
        rc = -errno;
    if (close(fd) != 0 && rc == QOD_OK)
        rc = -errno;
    if (rc == QOD_OK && rename(tmp, path) != 0)
        rc = -errno;
    if (rc != QOD_OK)
        unlink(tmp);
    else
        rc = fsync_parent_dir(path);
out:
    return rc;
}

/* Decodes a PEM private key and accepts it only when it is an EC key on P-256. */
static int pkey_from_pem(const char *pem, size_t len, EVP_PKEY **out)
{
    char group[32];
    int rc = QOD_ERR_CRYPTO;
    BIO *bio = BIO_new_mem_buf(pem, (int)len);
    EVP_PKEY *pkey = bio ? PEM_read_bio_PrivateKey(bio, NULL, no_passphrase, NULL) : NULL;
    if (!pkey || !EVP_PKEY_is_a(pkey, "EC"))
        goto out;
    if (!EVP_PKEY_get_utf8_string_param(pkey, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof group, NULL) ||
        strcmp(group, SN_X9_62_prime256v1) != 0)
        goto out;
    *out = pkey;
    pkey = NULL;
    rc = QOD_OK;
out:
    EVP_PKEY_free(pkey);
    BIO_free(bio);
    return rc;
}

static int key_load(const char *path, EVP_PKEY **out)
{
    char pem[QOD_JWT_KEY_FILE_MAX];
    size_t len = 0;
    int rc, fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        rc = -errno;
        goto out;
    }
    rc = read_small(fd, pem, sizeof pem, &len);
    close(fd);
    if (rc == QOD_OK)
        rc = pkey_from_pem(pem, len, out);
    OPENSSL_cleanse(pem, len);
out:
    return rc;
}

/* Generates a P-256 key and stores it at path as unencrypted PKCS#8 PEM. */
static int key_create(const char *path, EVP_PKEY **out)
{
    char *pem = NULL;
    long len;
    int rc = QOD_ERR_CRYPTO;
    /* A secure-memory BIO wipes the PEM text of the private key when it is freed. */
    BIO *bio = BIO_new(BIO_s_secmem());
    EVP_PKEY *pkey = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    if (!bio || !pkey || !PEM_write_bio_PrivateKey(bio, pkey, NULL, NULL, 0, NULL, NULL))
        goto out;
    len = BIO_get_mem_data(bio, &pem);
    if (len <= 0)
        goto out;
    rc = write_file_atomic(path, pem, (size_t)len);
    if (rc == QOD_OK) {
        *out = pkey;
        pkey = NULL;
    }
out:
    EVP_PKEY_free(pkey);
    BIO_free(bio);
    return rc;
}

static void b64url_32(const unsigned char in[32], char out[QOD_JWT_B64_32])
{
    qod_b64_encode(in, 32, out, QOD_JWT_B64_32, 1);
}

/* Fills x, y, the RFC 7638 thumbprint used as kid, and the encoded header from the public point. */
static int key_derive_ids(qod_jwt_key *key)
{
    unsigned char x[32], y[32], md[32];
    char text[160];
    unsigned int md_len = 0;
    BIGNUM *bx = NULL, *by = NULL;
    int n, rc = QOD_ERR_CRYPTO;
    if (!EVP_PKEY_get_bn_param(key->pkey, OSSL_PKEY_PARAM_EC_PUB_X, &bx) ||
        !EVP_PKEY_get_bn_param(key->pkey, OSSL_PKEY_PARAM_EC_PUB_Y, &by) || BN_bn2binpad(bx, x, 32) != 32 ||
        BN_bn2binpad(by, y, 32) != 32)
        goto out;
    b64url_32(x, key->x);
    b64url_32(y, key->y);
    /* RFC 7638: the required members only, in lexicographic order, no whitespace. */
    n = snprintf(text, sizeof text, "{\"crv\":\"P-256\",\"kty\":\"EC\",\"x\":\"%s\",\"y\":\"%s\"}", key->x, key->y);
    if (!EVP_Digest(text, (size_t)n, md, &md_len, EVP_sha256(), NULL) || md_len != sizeof md)
        goto out;
    b64url_32(md, key->kid);
    n = snprintf(text, sizeof text, "{\"alg\":\"ES256\",\"typ\":\"JWT\",\"kid\":\"%s\"}", key->kid);
    if (qod_b64_encode(text, (size_t)n, key->header_b64, sizeof key->header_b64, 1) < 0)
        goto out;
    rc = QOD_OK;
out:
    BN_free(bx);
    BN_free(by);
    return rc;
}

int qod_jwt_key_load_or_create(const char *path, qod_jwt_key **out)
{
    EVP_PKEY *pkey = NULL;
    qod_jwt_key *key = NULL;
    int rc = key_load(path, &pkey);
    *out = NULL;
    if (rc == -ENOENT)
        rc = key_create(path, &pkey);
    if (rc != QOD_OK)
        goto out;
    key = calloc(1, sizeof *key);
    if (!key) {
        rc = QOD_ERR_NOMEM;
        goto out;
    }
    key->pkey = pkey;
    pkey = NULL;
    rc = key_derive_ids(key);
    if (rc == QOD_OK) {
        *out = key;
        key = NULL;
    }
out:
    if (rc != QOD_OK)
        ERR_clear_error();
    EVP_PKEY_free(pkey);
    qod_jwt_key_destroy(key);
    return rc;
}

void qod_jwt_key_destroy(qod_jwt_key *key)
{
    if (!key)
        return;
    EVP_PKEY_free(key->pkey);
    free(key);
}

const char *qod_jwt_key_kid(const qod_jwt_key *key)
{
    return key->kid;
}

int qod_jwt_key_jwks(const qod_jwt_key *key, qod_buf *out)
{
    return qod_buf_printf(out,
                          "{\"keys\":[{\"kty\":\"EC\",\"crv\":\"P-256\",\"x\":\"%s\",\"y\":\"%s\",\"kid\":\"%s\","
                          "\"use\":\"sig\",\"alg\":\"ES256\"}]}",
                          key->x, key->y, key->kid);
}

static int append_b64url(qod_buf *b, const void *data, size_t n)
{
    char enc[QOD_JWT_MAX_LEN + 1];
    long m = qod_b64_encode(data, n, enc, sizeof enc, 1);
    return m < 0 ? QOD_ERR_LIMIT : qod_buf_append(b, enc, (size_t)m);
}

/* Appends ,"device":{…} after checking that the claim is one JSON object, so that it cannot inject other members. */
static int append_device(qod_buf *b, const char *device)
{
    char err[80];
    char *text = NULL;
    cJSON *obj = NULL;
    int rc = qod_json_parse(device, strlen(device), QOD_JWT_PAYLOAD_DEPTH - 1, &obj, err, sizeof err);
    if (rc != QOD_OK || !cJSON_IsObject(obj)) {
        rc = QOD_ERR_INVALID;
        goto out;
    }
    text = cJSON_PrintUnformatted(obj);
    rc = text ? qod_buf_puts(b, ",\"device\":") : QOD_ERR_NOMEM;
    if (rc == QOD_OK)
        rc = qod_buf_puts(b, text);
out:
    cJSON_free(text);
    cJSON_Delete(obj);
    return rc;
}

static int payload_json(const qod_jwt_claims *c, qod_buf *b)
{
    int rc = qod_buf_puts(b, "{");
    for (size_t i = 0; rc == QOD_OK && i < sizeof str_claims / sizeof str_claims[0]; i++) {
        const char *v = (const char *)c + str_claims[i].off;
        if (strnlen(v, str_claims[i].cap) == str_claims[i].cap)
            rc = QOD_ERR_INVALID;
        if (rc == QOD_OK)
            rc = qod_buf_printf(b, "%s\"%s\":", i ? "," : "", str_claims[i].name);
        if (rc == QOD_OK)
            rc = qod_buf_json_str(b, v);
    }
    if (rc == QOD_OK)
        rc = qod_buf_printf(b, ",\"iat\":%lld,\"exp\":%lld", (long long)c->iat, (long long)c->exp);
    if (rc == QOD_OK && strnlen(c->device, sizeof c->device) == sizeof c->device)
        rc = QOD_ERR_INVALID;
    if (rc == QOD_OK && c->device[0])
        rc = append_device(b, c->device);
    if (rc == QOD_OK)
        rc = qod_buf_puts(b, "}");
    return rc;
}

/* Turns OpenSSL's DER ECDSA-Sig-Value into the fixed-width R || S that JWS uses. */
static int der_to_raw(const unsigned char *der, size_t len, unsigned char raw[QOD_JWT_SIG_LEN])
{
    const unsigned char *p = der;
    const BIGNUM *r = NULL, *s = NULL;
    ECDSA_SIG *sig = d2i_ECDSA_SIG(NULL, &p, (long)len);
    int rc = QOD_ERR_CRYPTO;
    if (sig) {
        ECDSA_SIG_get0(sig, &r, &s);
        if (BN_bn2binpad(r, raw, 32) == 32 && BN_bn2binpad(s, raw + 32, 32) == 32)
            rc = QOD_OK;
    }
    ECDSA_SIG_free(sig);
    return rc;
}

/* The inverse of der_to_raw; returns the DER length (*der freed with OPENSSL_free) or -1. */
static int raw_to_der(const unsigned char raw[QOD_JWT_SIG_LEN], unsigned char **der)
{
    ECDSA_SIG *sig = ECDSA_SIG_new();
    BIGNUM *r = BN_bin2bn(raw, 32, NULL), *s = BN_bin2bn(raw + 32, 32, NULL);
    int len = -1;
    if (sig && r && s && ECDSA_SIG_set0(sig, r, s)) {
        r = s = NULL; /* now owned by sig */
        len = i2d_ECDSA_SIG(sig, der);
    }
    BN_free(r);
    BN_free(s);
    ECDSA_SIG_free(sig);
    return len;
}

static int sign_raw(const qod_jwt_key *key, const char *input, size_t n, unsigned char raw[QOD_JWT_SIG_LEN])
{
    unsigned char der[QOD_JWT_DER_MAX];
    size_t der_len = sizeof der;
    int rc = QOD_ERR_CRYPTO;
    /* EVP_PKEY is read-only during signing; the per-call context is what makes this thread-safe. */
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    if (md && EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, key->pkey) == 1 &&
        EVP_DigestSign(md, der, &der_len, (const unsigned char *)input, n) == 1)
        rc = der_to_raw(der, der_len, raw);
    if (rc != QOD_OK)
        ERR_clear_error();
    EVP_MD_CTX_free(md);
    return rc;
}

int qod_jwt_sign(const qod_jwt_key *key, const qod_jwt_claims *claims, qod_buf *out)
{
    qod_buf payload;
    unsigned char sig[QOD_JWT_SIG_LEN];
    size_t start = out->len;
    int rc;
    qod_buf_init(&payload, QOD_JWT_MAX_LEN);
    rc = payload_json(claims, &payload);
    if (rc == QOD_OK)
        rc = qod_buf_printf(out, "%s.", key->header_b64);
    if (rc == QOD_OK)
        rc = append_b64url(out, payload.data, payload.len);
    if (rc == QOD_OK)
        rc = sign_raw(key, out->data + start, out->len - start, sig);
    if (rc == QOD_OK)
        rc = qod_buf_append(out, ".", 1);
    if (rc == QOD_OK)
        rc = append_b64url(out, sig, sizeof sig);
    /* A token that qod_jwt_verify would refuse must not be issued at all. */
    if (rc == QOD_OK && out->len - start > QOD_JWT_MAX_LEN)
        rc = QOD_ERR_LIMIT;
    if (rc != QOD_OK && out->data) {
        out->len = start;
        out->data[start] = '\0';
    }
    qod_buf_dispose(&payload);
    return rc;
}

/* Decodes one base64url segment and parses it as a JSON object (strict: limits, no duplicate keys). */
static int decode_object(const char *seg, size_t n, int depth, cJSON **out)
{
    unsigned char raw[QOD_JWT_SEG_MAX];
    char err[80];
    long m = qod_b64_decode(seg, n, raw, sizeof raw, 1);
    int rc = QOD_ERR_INVALID;
    *out = NULL;
    if (m >= 0 && qod_json_parse((const char *)raw, (size_t)m, depth, out, err, sizeof err) == QOD_OK &&
        cJSON_IsObject(*out))
        rc = QOD_OK;
    if (rc != QOD_OK) {
        cJSON_Delete(*out);
        *out = NULL;
    }
    return rc;
}

/* Only our own header shape is accepted: members such as jku, jwk or crit would ask us to trust something else. */
static int check_header(const qod_jwt_key *key, const char *seg, size_t n)
{
    static const char *const allowed[] = {"alg", "typ", "kid", NULL};
    const char *alg = NULL, *kid = NULL, *typ = NULL, *bad = NULL;
    cJSON *h = NULL;
    int typ_rc, rc = decode_object(seg, n, 1, &h);
    if (rc != QOD_OK)
        goto out;
    rc = QOD_ERR_INVALID;
    if (!qod_json_only_keys(h, allowed, &bad))
        goto out;
    if (qod_json_str(h, "alg", &alg) != QOD_OK || strcmp(alg, "ES256") != 0)
        goto out;
    if (qod_json_str(h, "kid", &kid) != QOD_OK || strcmp(kid, key->kid) != 0)
        goto out;
    typ_rc = qod_json_str(h, "typ", &typ);
    if (typ_rc == QOD_ERR_INVALID || (typ_rc == QOD_OK && strcmp(typ, "JWT") != 0))
        goto out;
    rc = QOD_OK;
out:
    cJSON_Delete(h);
    return rc;
}

static int check_signature(const qod_jwt_key *key, const char *input, size_t input_len, const char *seg, size_t n)
{
    unsigned char raw[QOD_JWT_SIG_LEN], *der = NULL;
    EVP_MD_CTX *md = NULL;
    int der_len, rc = QOD_ERR_INVALID;
    /* The buffer holds exactly 64 bytes, so a longer signature fails to decode and a shorter one is caught here. */
    if (qod_b64_decode(seg, n, raw, sizeof raw, 1) != QOD_JWT_SIG_LEN)
        goto out;
    der_len = raw_to_der(raw, &der);
    md = EVP_MD_CTX_new();
    if (der_len <= 0 || !md || EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, key->pkey) != 1) {
        rc = QOD_ERR_CRYPTO;
        goto out;
    }
    if (EVP_DigestVerify(md, der, (size_t)der_len, (const unsigned char *)input, input_len) == 1)
        rc = QOD_OK;
out:
    if (rc != QOD_OK)
        ERR_clear_error();
    EVP_MD_CTX_free(md);
    OPENSSL_free(der);
    return rc;
}

static int copy_str_claim(const cJSON *p, const str_claim *f, qod_jwt_claims *c)
{
    const char *v = NULL;
    int rc = QOD_ERR_INVALID;
    if (qod_json_str(p, f->name, &v) == QOD_OK && strlen(v) < f->cap) {
        memcpy((char *)c + f->off, v, strlen(v) + 1);
        rc = QOD_OK;
    }
    return rc;
}

/* Stores the optional device object as compact JSON text; an absent device leaves the field empty. */
static int copy_device_claim(const cJSON *p, qod_jwt_claims *c)
{
    const cJSON *dev = NULL;
    char *text = NULL;
    int rc = qod_json_obj(p, "device", &dev);
    if (rc == QOD_ERR_NOTFOUND) {
        rc = QOD_OK;
        goto out;
    }
    if (rc != QOD_OK)
        goto out;
    text = cJSON_PrintUnformatted(dev);
    rc = !text ? QOD_ERR_NOMEM : strlen(text) < sizeof c->device ? QOD_OK : QOD_ERR_INVALID;
    if (rc == QOD_OK)
        memcpy(c->device, text, strlen(text) + 1);
out:
    cJSON_free(text);
    return rc;
}

static int parse_claims(const char *seg, size_t n, qod_jwt_claims *c)
{
    cJSON *p = NULL;
    int rc = decode_object(seg, n, QOD_JWT_PAYLOAD_DEPTH, &p);
    memset(c, 0, sizeof *c);
    for (size_t i = 0; rc == QOD_OK && i < sizeof str_claims / sizeof str_claims[0]; i++)
        rc = copy_str_claim(p, &str_claims[i], c);
    if (rc == QOD_OK && qod_json_int(p, "iat", 0, INT64_MAX, &c->iat) != QOD_OK)
        rc = QOD_ERR_INVALID;
    if (rc == QOD_OK && qod_json_int(p, "exp", 0, INT64_MAX, &c->exp) != QOD_OK)
        rc = QOD_ERR_INVALID;
    if (rc == QOD_OK)
        rc = copy_device_claim(p, c);
    cJSON_Delete(p);
    return rc;
}

static int check_claims(const qod_jwt_claims *c, const char *expected_iss, int64_t now_s)
{
    int rc = QOD_OK;
    if (!expected_iss || strcmp(c->iss, expected_iss) != 0)
        rc = QOD_ERR_INVALID;
    else if (c->exp <= now_s)
        rc = QOD_ERR_RANGE;
    /* iat is at most 2^53 (qod_json_int), so the subtraction cannot overflow. */
    else if (c->iat - QOD_JWT_IAT_LEEWAY_S > now_s)
        rc = QOD_ERR_STATE; /* not valid yet: issued in the future */
    return rc;
}

int qod_jwt_verify(const qod_jwt_key *key, const char *token, size_t len, const char *expected_iss, int64_t now_s,
                   qod_jwt_claims *out)
{
    qod_jwt_claims c;
    const char *dot1 = NULL, *dot2 = NULL, *end = token + len;
    int rc = QOD_ERR_INVALID;
    if (!token || len > QOD_JWT_MAX_LEN)
        goto out;
    dot1 = memchr(token, '.', len);
    dot2 = dot1 ? memchr(dot1 + 1, '.', (size_t)(end - dot1 - 1)) : NULL;
    if (!dot2 || memchr(dot2 + 1, '.', (size_t)(end - dot2 - 1)))
        goto out;
    /* The signature is checked before the payload is parsed, so unauthenticated bytes only reach the header parser. */
    rc = check_header(key, token, (size_t)(dot1 - token));
    if (rc == QOD_OK)
        rc = check_signature(key, token, (size_t)(dot2 - token), dot2 + 1, (size_t)(end - dot2 - 1));
    if (rc == QOD_OK)
        rc = parse_claims(dot1 + 1, (size_t)(dot2 - dot1 - 1), &c);
    if (rc == QOD_OK)
        rc = check_claims(&c, expected_iss, now_s);
    if (rc == QOD_OK)
        *out = c;
out:
    return rc;
}
