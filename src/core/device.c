#include "core/device.h"

#include "util/err.h"
#include "util/json.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>

bool qod_phone_valid(const char *s)
{
    if (s[0] != '+' || s[1] < '1' || s[1] > '9')
        return false;
    size_t n = 1;
    for (const char *p = s + 1; *p; p++, n++)
        if (*p < '0' || *p > '9')
            return false;
    return n >= 6 && n <= 16; /* '+' and 5 to 15 digits */
}

bool qod_ipv4_norm(const char *s, char out[16])
{
    struct in_addr a;
    if (strlen(s) > 15 || inet_pton(AF_INET, s, &a) != 1)
        return false;
    return inet_ntop(AF_INET, &a, out, 16) != NULL;
}

bool qod_ipv6_norm(const char *s, char out[46])
{
    struct in6_addr a;
    if (strlen(s) > 45 || inet_pton(AF_INET6, s, &a) != 1)
        return false;
    return inet_ntop(AF_INET6, &a, out, 46) != NULL;
}

bool qod_ipv6_net64(const char *s, char out[QOD_IPV6_NET_LEN])
{
    struct in6_addr a;
    char text[INET6_ADDRSTRLEN];
    if (strlen(s) > 45 || inet_pton(AF_INET6, s, &a) != 1)
        return false;
    memset(a.s6_addr + 8, 0, 8);
    if (!inet_ntop(AF_INET6, &a, text, sizeof text))
        return false;
    int n = snprintf(out, QOD_IPV6_NET_LEN, "%s/64", text);
    return n > 0 && n < QOD_IPV6_NET_LEN;
}

static bool nai_valid(const char *s)
{
    size_t n = strlen(s);
    const char *at = strchr(s, '@');
    if (n < 3 || n > QOD_NAI_MAX || !at || at == s || !at[1] || strchr(at + 1, '@'))
        return false;
    for (const char *p = s; *p; p++)
        if ((unsigned char)*p <= 0x20 || (unsigned char)*p >= 0x7f)
            return false;
    return true;
}

static int parse_ipv4(const cJSON *o, qod_device *d, char *err, size_t errcap)
{
    static const char *const keys[] = {"publicAddress", "privateAddress", "publicPort", NULL};
    const char *bad = NULL, *pub = NULL, *priv = NULL;
    int64_t port = -1;
    if (!cJSON_IsObject(o)) {
        snprintf(err, errcap, "device.ipv4Address must be an object");
        return QOD_ERR_INVALID;
    }
    if (!qod_json_only_keys(o, keys, &bad)) {
        snprintf(err, errcap, "device.ipv4Address has an unknown member '%.64s'", bad);
        return QOD_ERR_INVALID;
    }
    if (qod_json_str(o, "publicAddress", &pub) != QOD_OK || !qod_ipv4_norm(pub, d->ipv4_public)) {
        snprintf(err, errcap, "device.ipv4Address.publicAddress must be a single IPv4 address");
        return QOD_ERR_INVALID;
    }
    int prc = qod_json_str(o, "privateAddress", &priv);
    if (prc == QOD_ERR_INVALID || (prc == QOD_OK && !qod_ipv4_norm(priv, d->ipv4_private))) {
        snprintf(err, errcap, "device.ipv4Address.privateAddress must be a single IPv4 address");
        return QOD_ERR_INVALID;
    }
    int portrc = qod_json_int(o, "publicPort", 0, 65535, &port);
    if (portrc != QOD_OK && portrc != QOD_ERR_NOTFOUND) {
        snprintf(err, errcap, "device.ipv4Address.publicPort must be an integer from 0 to 65535");
        return QOD_ERR_INVALID;
    }
    if (prc != QOD_OK && portrc != QOD_OK) {
        snprintf(err, errcap, "device.ipv4Address needs privateAddress or publicPort besides publicAddress");
        return QOD_ERR_INVALID;
    }
    d->ipv4_port = portrc == QOD_OK ? (int)port : -1;
    d->present |= QOD_DEV_IPV4;
    return QOD_OK;
}

int qod_device_parse(const cJSON *obj, qod_device *d, char *err, size_t errcap)
{
    static const char *const keys[] = {"phoneNumber", "networkAccessIdentifier", "ipv4Address", "ipv6Address", NULL};
    const char *bad = NULL, *s = NULL;
    memset(d, 0, sizeof *d);
    d->ipv4_port = -1;
    if (!cJSON_IsObject(obj)) {
        snprintf(err, errcap, "device must be an object");
        return QOD_ERR_INVALID;
    }
    if (!qod_json_only_keys(obj, keys, &bad)) {
        snprintf(err, errcap, "device has an unknown member '%.64s'", bad);
        return QOD_ERR_INVALID;
    }
    int rc = qod_json_str(obj, "phoneNumber", &s);
    if (rc == QOD_ERR_INVALID || (rc == QOD_OK && !qod_phone_valid(s))) {
        snprintf(err, errcap, "device.phoneNumber must match ^\\+[1-9][0-9]{4,14}$");
        return QOD_ERR_INVALID;
    }
    if (rc == QOD_OK) {
        memcpy(d->phone, s, strlen(s) + 1);
        d->present |= QOD_DEV_PHONE;
    }
    rc = qod_json_str(obj, "networkAccessIdentifier", &s);
    if (rc == QOD_ERR_INVALID || (rc == QOD_OK && !nai_valid(s))) {
        snprintf(err, errcap, "device.networkAccessIdentifier must be local@domain, at most %d bytes", QOD_NAI_MAX);
        return QOD_ERR_INVALID;
    }
    if (rc == QOD_OK) {
        memcpy(d->nai, s, strlen(s) + 1);
        d->present |= QOD_DEV_NAI;
    }
    rc = qod_json_str(obj, "ipv6Address", &s);
    if (rc == QOD_ERR_INVALID || (rc == QOD_OK && !qod_ipv6_norm(s, d->ipv6))) {
        snprintf(err, errcap, "device.ipv6Address must be a single IPv6 address");
        return QOD_ERR_INVALID;
    }
    if (rc == QOD_OK) {
        d->present |= QOD_DEV_IPV6;
        memcpy(d->ipv6_orig, s, strlen(s) + 1);
    }
    const cJSON *v4 = cJSON_GetObjectItemCaseSensitive(obj, "ipv4Address");
    if (v4 && !cJSON_IsNull(v4) && parse_ipv4(v4, d, err, errcap) != QOD_OK)
        return QOD_ERR_INVALID;
    if (!d->present) {
        snprintf(err, errcap, "device must have at least one identifier");
        return QOD_ERR_INVALID;
    }
    return QOD_OK;
}

qod_device_kind qod_device_choose(const qod_device *d)
{
    static const qod_device_kind order[] = {QOD_DEV_PHONE, QOD_DEV_IPV4, QOD_DEV_IPV6, QOD_DEV_NAI};
    for (size_t i = 0; i < 4; i++)
        if (d->present & order[i])
            return order[i];
    return QOD_DEV_NONE;
}

int qod_device_key(const qod_device *d, qod_device_kind k, char *out, size_t cap)
{
    int n;
    switch (k) {
    case QOD_DEV_PHONE:
        n = snprintf(out, cap, "tel:%s", d->phone);
        break;
    case QOD_DEV_IPV4:
        n = snprintf(out, cap, "ipv4:%s/%s:%d", d->ipv4_public, d->ipv4_private, d->ipv4_port);
        break;
    case QOD_DEV_IPV6: {
        char net[QOD_IPV6_NET_LEN];
        if (!qod_ipv6_net64(d->ipv6, net))
            return QOD_ERR_INVALID;
        n = snprintf(out, cap, "ipv6:%s", net);
        break;
    }
    case QOD_DEV_NAI:
        n = snprintf(out, cap, "nai:%s", d->nai);
        break;
    default:
        return QOD_ERR_INVALID;
    }
    return n > 0 && (size_t)n < cap ? QOD_OK : QOD_ERR_LIMIT;
}

int qod_device_to_json(const qod_device *d, qod_device_kind k, qod_buf *out)
{
    int rc;
    switch (k) {
    case QOD_DEV_PHONE:
        rc = qod_buf_puts(out, "{\"phoneNumber\":");
        rc = rc ? rc : qod_buf_json_str(out, d->phone);
        break;
    case QOD_DEV_IPV6:
        rc = qod_buf_puts(out, "{\"ipv6Address\":");
        rc = rc ? rc : qod_buf_json_str(out, d->ipv6_orig[0] ? d->ipv6_orig : d->ipv6);
        break;
    case QOD_DEV_NAI:
        rc = qod_buf_puts(out, "{\"networkAccessIdentifier\":");
        rc = rc ? rc : qod_buf_json_str(out, d->nai);
        break;
    case QOD_DEV_IPV4:
        rc = qod_buf_printf(out, "{\"ipv4Address\":{\"publicAddress\":\"%s\"", d->ipv4_public);
        if (rc == QOD_OK && d->ipv4_private[0])
            rc = qod_buf_printf(out, ",\"privateAddress\":\"%s\"", d->ipv4_private);
        if (rc == QOD_OK && d->ipv4_port >= 0)
            rc = qod_buf_printf(out, ",\"publicPort\":%d", d->ipv4_port);
        rc = rc ? rc : qod_buf_puts(out, "}");
        break;
    default:
        return QOD_ERR_INVALID;
    }
    return rc ? rc : qod_buf_puts(out, "}");
}
