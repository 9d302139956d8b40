/* The callback URL guard against server-side request forgery.
 * - Shape, at session creation: absolute http(s) URL with a host, no credentials; live apps must use https.
 * - Address, at creation for IP literals and at connect time for every address a name resolves to (the
 *   delivery checks the exact address curl is about to connect to, so DNS rebinding cannot slip through):
 *   loopback, private, link-local, multicast, unspecified, shared (CGNAT) and cloud metadata addresses are
 *   refused. Sandbox apps may use loopback so developers can test locally. --callback-allow CIDR,… opens
 *   ranges an operator trusts. */
#ifndef QOD_NOTIFY_URLGUARD_H
#define QOD_NOTIFY_URLGUARD_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

#define QOD_URL_MAX 2048
#define QOD_CIDRS_MAX 64

typedef struct {
    int n;
    struct {
        int family; /* AF_INET or AF_INET6 */
        unsigned char addr[16];
        int prefix;
    } v[QOD_CIDRS_MAX];
} qod_cidrs;

/* Parses "10.0.0.0/8,fd00::/8" (empty: none). QOD_ERR_INVALID with why in err. */
int qod_cidrs_parse(const char *text, qod_cidrs *out, char *err, size_t errcap);
/* NULL when a callback may connect to sa; otherwise why not ("a private address", …). */
const char *qod_addr_refusal(const struct sockaddr *sa, bool sandbox, const qod_cidrs *allow);
/* Checks a callback URL at session creation. QOD_OK, or QOD_ERR_INVALID with why in err. */
int qod_url_check(const char *url, bool sandbox, const qod_cidrs *allow, char *err, size_t errcap);

#endif
