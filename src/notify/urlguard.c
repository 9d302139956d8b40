#include "notify/urlguard.h"

#include "util/err.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static bool prefix_match(const unsigned char *a, const unsigned char *net, int prefix)
{
    int full = prefix / 8, rest = prefix % 8;
    if (memcmp(a, net, (size_t)full) != 0)
        return false;
    if (!rest)
        return true;
    unsigned char mask = (unsigned char)(0xff << (8 - rest));
    return (a[full] & mask) == (net[full] & mask);
}

int qod_cidrs_parse(const char *text, qod_cidrs *out, char *err, size_t errcap)
{
    out->n = 0;
    const char *p = text;
    while (*p) {
        const char *e = strchr(p, ',');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        char item[80];
        if (n == 0 || n >= sizeof item || out->n >= QOD_CIDRS_MAX) {
            snprintf(err, errcap, "expected a comma-separated list of at most %d CIDRs", QOD_CIDRS_MAX);
            return QOD_ERR_INVALID;
        }
        memcpy(item, p, n);
        item[n] = '\0';
        char *slash = strchr(item, '/');
        if (slash)
            *slash = '\0';
        int fam = strchr(item, ':') ? AF_INET6 : AF_INET;
        int max = fam == AF_INET ? 32 : 128;
        char *end = NULL;
        long pre = slash ? strtol(slash + 1, &end, 10) : max;
        if (inet_pton(fam, item, out->v[out->n].addr) != 1 || (slash && (*end || !slash[1])) || pre < 0 || pre > max) {
            snprintf(err, errcap, "'%.*s' is not an address/prefix", (int)n, p);
            return QOD_ERR_INVALID;
        }
        out->v[out->n].family = fam;
        out->v[out->n].prefix = (int)pre;
        out->n++;
        p += n + (e ? 1 : 0);
        if (e && !*p) {
            snprintf(err, errcap, "a trailing comma leaves an empty CIDR");
            return QOD_ERR_INVALID;
        }
    }
    return QOD_OK;
}

static const char *v4_refusal(const unsigned char *a, bool sandbox)
{
    static const struct {
        unsigned char net[4];
        int prefix;
        const char *why;
    } ranges[] = {
        {{169, 254, 169, 254}, 32, "a cloud metadata address"},
        {{0, 0, 0, 0}, 8, "an unspecified address"},
        {{10, 0, 0, 0}, 8, "a private address"},
        {{100, 64, 0, 0}, 10, "a shared (carrier-grade NAT) address"},
        {{127, 0, 0, 0}, 8, "a loopback address"},
        {{169, 254, 0, 0}, 16, "a link-local address"},
        {{172, 16, 0, 0}, 12, "a private address"},
        {{192, 0, 0, 0}, 24, "a reserved address"},
        {{192, 168, 0, 0}, 16, "a private address"},
        {{198, 18, 0, 0}, 15, "a benchmarking address"},
        {{224, 0, 0, 0}, 4, "a multicast address"},
        {{240, 0, 0, 0}, 4, "a reserved or broadcast address"},
    };
    for (size_t i = 0; i < sizeof ranges / sizeof ranges[0]; i++)
        if (prefix_match(a, ranges[i].net, ranges[i].prefix))
            return sandbox && a[0] == 127 ? NULL : ranges[i].why;
    return NULL;
}

static const char *v6_refusal(const unsigned char *a, bool sandbox)
{
    static const unsigned char zero[16] = {0};
    static const unsigned char loop[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
    static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    static const unsigned char meta[16] = {
        0xfd, 0, 0x0e, 0xc2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x54,
    };
    if (memcmp(a, mapped, 12) == 0 || memcmp(a, zero, 12) == 0) {
        /* IPv4-mapped and IPv4-compatible addresses are judged by the IPv4 address inside. */
        if (memcmp(a, zero, 16) == 0)
            return "an unspecified address";
        if (memcmp(a, loop, 16) == 0)
            return sandbox ? NULL : "a loopback address";
        return v4_refusal(a + 12, sandbox);
    }
    if (memcmp(a, meta, 16) == 0)
        return "a cloud metadata address";
    if ((a[0] & 0xfe) == 0xfc)
        return "a private (unique local) address";
    if (a[0] == 0xfe && (a[1] & 0xc0) == 0x80)
        return "a link-local address";
    if (a[0] == 0xff)
        return "a multicast address";
    if (a[0] == 0x20 && a[1] == 0x01 && a[2] == 0x0d && a[3] == 0xb8)
        return "a documentation address";
    return NULL;
}

const char *qod_addr_refusal(const struct sockaddr *sa, bool sandbox, const qod_cidrs *allow)
{
    unsigned char a[16];
    int fam = sa->sa_family;
    if (fam == AF_INET)
        memcpy(a, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, 4);
    else if (fam == AF_INET6)
        memcpy(a, &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr, 16);
    else
        return "not an IP address";
    for (int i = 0; allow && i < allow->n; i++)
        if (allow->v[i].family == fam && prefix_match(a, allow->v[i].addr, allow->v[i].prefix))
            return NULL;
    return fam == AF_INET ? v4_refusal(a, sandbox) : v6_refusal(a, sandbox);
}

/* Refuses an IP-literal host now; names are checked at connect time. */
static const char *host_refusal(const char *host, bool sandbox, const qod_cidrs *allow)
{
    struct sockaddr_in6 s6 = {.sin6_family = AF_INET6};
    struct sockaddr_in s4 = {.sin_family = AF_INET};
    char h[64];
    size_t n = strlen(host);
    if (host[0] == '[' && n > 2 && n - 2 < sizeof h) {
        memcpy(h, host + 1, n - 2);
        h[n - 2] = '\0';
    } else if (n < sizeof h) {
        memcpy(h, host, n + 1);
    } else {
        return NULL;
    }
    if (inet_pton(AF_INET, h, &s4.sin_addr) == 1)
        return qod_addr_refusal((struct sockaddr *)&s4, sandbox, allow);
    if (inet_pton(AF_INET6, h, &s6.sin6_addr) == 1)
        return qod_addr_refusal((struct sockaddr *)&s6, sandbox, allow);
    /* "localhost." is the same name as "localhost". */
    while (n > 1 && h[n - 1] == '.')
        h[--n] = '\0';
    if (!sandbox && (strcasecmp(h, "localhost") == 0 || (n > 10 && strcasecmp(h + n - 10, ".localhost") == 0)))
        return "a loopback name";
    return NULL;
}

int qod_url_check(const char *url, bool sandbox, const qod_cidrs *allow, char *err, size_t errcap)
{
    size_t n = strlen(url);
    if (n == 0 || n > QOD_URL_MAX) {
        snprintf(err, errcap, "notification URL must be 1 to %d bytes", QOD_URL_MAX);
        return QOD_ERR_INVALID;
    }
    for (const char *p = url; *p; p++)
        if ((unsigned char)*p <= 0x20 || (unsigned char)*p >= 0x7f) {
            snprintf(err, errcap, "notification URL contains a space, control or non-ASCII character");
            return QOD_ERR_INVALID;
        }
    /* An empty authority ("https:///x") is not a host curl should guess. */
    const char *sep = strstr(url, "://");
    if (sep && sep[3] == '/') {
        snprintf(err, errcap, "notification URL is not an absolute URL with a host");
        return QOD_ERR_INVALID;
    }
    CURLU *u = curl_url();
    char *scheme = NULL, *host = NULL, *user = NULL;
    const char *why = NULL;
    int rc = QOD_OK;
    if (!u || curl_url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK || !host || !*host) {
        snprintf(err, errcap, "notification URL is not an absolute URL with a host");
        rc = QOD_ERR_INVALID;
    } else if (strcasecmp(scheme, "https") != 0 && !(sandbox && strcasecmp(scheme, "http") == 0)) {
        snprintf(err, errcap,
                 sandbox ? "notification URL must use http or https" : "notification URL must use https (live apps)");
        rc = QOD_ERR_INVALID;
    } else if (curl_url_get(u, CURLUPART_USER, &user, 0) == CURLUE_OK && user) {
        snprintf(err, errcap, "notification URL must not carry credentials");
        rc = QOD_ERR_INVALID;
    } else if ((why = host_refusal(host, sandbox, allow))) {
        snprintf(err, errcap, "notification URL points to %s, which callbacks may not reach", why);
        rc = QOD_ERR_INVALID;
    }
    curl_free(scheme);
    curl_free(host);
    curl_free(user);
    curl_url_cleanup(u);
    return rc;
}
