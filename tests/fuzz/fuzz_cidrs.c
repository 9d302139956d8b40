/* Fuzzes the callback URL guard's address rules (src/notify/urlguard.h): qod_cidrs_parse reads the operator's
 * --callback-allow list, qod_addr_refusal judges every address a callback is about to connect to. The input is a
 * CIDR list, a NUL, then addresses: per address one byte (bit 0: IPv6, bit 1: sandbox) and 4 or 16 address bytes.
 * Properties:
 * - an accepted list has at most 64 entries with prefixes within their family;
 * - an address inside an allowed range is never refused; a sandbox app is refused no more than a live app;
 * - an IPv4-mapped IPv6 address (::ffff:a.b.c.d) gets the verdict of the IPv4 address;
 * - qod_url_check on an http(s) URL with the address as its host agrees with qod_addr_refusal. */
#include "fuzz.h"

#include "notify/urlguard.h"
#include "util/err.h"

#include <arpa/inet.h>
#include <netinet/in.h>

static bool in_range(const unsigned char *a, const unsigned char *net, int prefix)
{
    for (int bit = 0; bit < prefix; bit++) {
        int mask = 0x80 >> (bit % 8);
        if ((a[bit / 8] & mask) != (net[bit / 8] & mask))
            return false;
    }
    return true;
}

static bool allowed(const qod_cidrs *allow, int family, const unsigned char *a)
{
    for (int i = 0; allow && i < allow->n; i++)
        if (allow->v[i].family == family && in_range(a, allow->v[i].addr, allow->v[i].prefix))
            return true;
    return false;
}

/* A refusal through the URL check: the address as the host of an https URL (http for sandbox apps). */
static bool url_refused(const struct sockaddr *sa, bool sandbox, const qod_cidrs *allow)
{
    char host[INET6_ADDRSTRLEN], url[96], err[256];
    if (sa->sa_family == AF_INET) {
        inet_ntop(AF_INET, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, host, sizeof host);
        snprintf(url, sizeof url, "%s://%s:8443/cb", sandbox ? "http" : "https", host);
    } else {
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr, host, sizeof host);
        snprintf(url, sizeof url, "%s://[%s]:8443/cb", sandbox ? "http" : "https", host);
    }
    return qod_url_check(url, sandbox, allow, err, sizeof err) != QOD_OK;
}

static void check_address(const uint8_t kind, const uint8_t *bytes, const qod_cidrs *allow)
{
    bool v6 = kind & 1, sandbox = kind & 2;
    struct sockaddr_in s4 = {.sin_family = AF_INET};
    struct sockaddr_in6 s6 = {.sin6_family = AF_INET6};
    const struct sockaddr *sa = v6 ? (const struct sockaddr *)&s6 : (const struct sockaddr *)&s4;
    memcpy(v6 ? (void *)&s6.sin6_addr : (void *)&s4.sin_addr, bytes, v6 ? 16 : 4);
    const char *why = qod_addr_refusal(sa, sandbox, allow);
    if (allowed(allow, v6 ? AF_INET6 : AF_INET, bytes))
        FUZZ_CHECK(why == NULL);
    if (!qod_addr_refusal(sa, false, allow))
        FUZZ_CHECK(qod_addr_refusal(sa, true, allow) == NULL);
    FUZZ_CHECK(url_refused(sa, sandbox, allow) == (why != NULL));
    if (!v6) {
        /* The same address, IPv4-mapped, without an allow list (whose ranges are per family). */
        memset(&s6.sin6_addr, 0, 10);
        memset((unsigned char *)&s6.sin6_addr + 10, 0xff, 2);
        memcpy((unsigned char *)&s6.sin6_addr + 12, bytes, 4);
        bool refused4 = qod_addr_refusal(sa, sandbox, NULL) != NULL;
        FUZZ_CHECK((qod_addr_refusal((const struct sockaddr *)&s6, sandbox, NULL) != NULL) == refused4);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_in in = {data, size};
    char *text = fuzz_next(&in), err[256] = "";
    qod_cidrs allow;
    int rc = qod_cidrs_parse(text, &allow, err, sizeof err);
    FUZZ_CHECK(rc == QOD_OK || (rc == QOD_ERR_INVALID && err[0] != '\0'));
    if (rc == QOD_OK) {
        FUZZ_CHECK(allow.n >= 0 && allow.n <= QOD_CIDRS_MAX && (allow.n > 0 || text[0] == '\0'));
        for (int i = 0; i < allow.n; i++)
            FUZZ_CHECK(allow.v[i].prefix >= 0 && allow.v[i].prefix <= (allow.v[i].family == AF_INET6 ? 128 : 32));
    }
    while (in.n >= 5) {
        uint8_t kind = fuzz_byte(&in);
        size_t len = kind & 1 ? 16 : 4;
        if (in.n < len)
            break;
        check_address(kind, in.p, rc == QOD_OK ? &allow : NULL);
        in.p += len;
        in.n -= len;
    }
    struct sockaddr other = {.sa_family = AF_UNIX};
    FUZZ_CHECK(qod_addr_refusal(&other, true, NULL) != NULL);
    free(text);
    return 0;
}
