#include "util/seal.h"

#include "util/b64.h"
#include "util/err.h"
#include "util/file.h"
#include "util/rand.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define PREFIX "sealed:v1:"
#define NONCE 12
#define TAG 16
#define SEAL_MAX (64 * 1024)

struct qod_seal {
    unsigned char key[32];
};

static int write_key(const char *path, const unsigned char *key)
{
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return -errno;
    int rc = write(fd, key, 32) == 32 && fsync(fd) == 0 ? QOD_OK : -EIO;
    close(fd);
    if (rc == QOD_OK && rename(tmp, path) != 0)
        rc = -errno;
    if (rc != QOD_OK)
        unlink(tmp);
    return rc;
}

int qod_seal_open(const char *path, qod_seal **out)
{
    *out = NULL;
    qod_seal *s = calloc(1, sizeof *s);
    if (!s)
        return QOD_ERR_NOMEM;
    char *buf = NULL, why[256];
    size_t n = 0;
    int rc = qod_file_read(path, 64, &buf, &n, why, sizeof why);
    if (rc == -ENOENT) {
        rc = qod_rand_bytes(s->key, sizeof s->key);
        rc = rc ? rc : write_key(path, s->key);
    } else if (rc == QOD_OK) {
        rc = n == 32 ? QOD_OK : QOD_ERR_CRYPTO;
        if (rc == QOD_OK)
            memcpy(s->key, buf, 32);
        OPENSSL_cleanse(buf, n);
    }
    free(buf);
    if (rc != QOD_OK) {
        qod_seal_close(s);
        return rc;
    }
    *out = s;
    return QOD_OK;
}

void qod_seal_close(qod_seal *s)
{
    if (!s)
        return;
    OPENSSL_cleanse(s->key, sizeof s->key);
    free(s);
}

bool qod_sealed(const char *text)
{
    return strncmp(text, PREFIX, strlen(PREFIX)) == 0;
}

int qod_seal_encrypt(const qod_seal *s, const char *plaintext, qod_buf *out)
{
    size_t n = strlen(plaintext);
    if (n > SEAL_MAX)
        return QOD_ERR_LIMIT;
    unsigned char *raw = malloc(NONCE + n + TAG);
    char *text = malloc(qod_b64_enc_len(NONCE + n + TAG, 1));
    EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
    int len = 0, fin = 0;
    int ok = raw && text && c && qod_rand_bytes(raw, NONCE) == QOD_OK &&
             EVP_EncryptInit_ex(c, EVP_aes_256_gcm(), NULL, s->key, raw) == 1 &&
             EVP_EncryptUpdate(c, raw + NONCE, &len, (const unsigned char *)plaintext, (int)n) == 1 &&
             EVP_EncryptFinal_ex(c, raw + NONCE + len, &fin) == 1 &&
             EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_GET_TAG, TAG, raw + NONCE + n) == 1;
    int rc = ok ? QOD_OK : QOD_ERR_CRYPTO;
    if (ok && qod_b64_encode(raw, NONCE + n + TAG, text, qod_b64_enc_len(NONCE + n + TAG, 1), 1) < 0)
        rc = QOD_ERR_LIMIT;
    if (rc == QOD_OK) {
        rc = qod_buf_puts(out, PREFIX);
        rc = rc ? rc : qod_buf_puts(out, text);
    }
    EVP_CIPHER_CTX_free(c);
    free(raw);
    free(text);
    return rc;
}

int qod_seal_decrypt(const qod_seal *s, const char *text, char **out)
{
    *out = NULL;
    if (!qod_sealed(text)) {
        *out = strdup(text);
        return *out ? QOD_OK : QOD_ERR_NOMEM;
    }
    const char *b = text + strlen(PREFIX);
    size_t bl = strlen(b);
    if (bl > 2 * SEAL_MAX)
        return QOD_ERR_LIMIT;
    unsigned char *raw = malloc(bl);
    long rn = raw ? qod_b64_decode(b, bl, raw, bl, 1) : -1;
    if (rn < NONCE + TAG) {
        free(raw);
        return QOD_ERR_CRYPTO;
    }
    size_t n = (size_t)rn - NONCE - TAG;
    char *plain = malloc(n + 1);
    EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
    int len = 0, fin = 0;
    int ok = plain && c && EVP_DecryptInit_ex(c, EVP_aes_256_gcm(), NULL, s->key, raw) == 1 &&
             EVP_DecryptUpdate(c, (unsigned char *)plain, &len, raw + NONCE, (int)n) == 1 &&
             EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_TAG, TAG, raw + NONCE + n) == 1 &&
             EVP_DecryptFinal_ex(c, (unsigned char *)plain + len, &fin) == 1;
    EVP_CIPHER_CTX_free(c);
    free(raw);
    if (!ok) {
        free(plain);
        return QOD_ERR_CRYPTO;
    }
    plain[n] = '\0';
    *out = plain;
    return QOD_OK;
}
