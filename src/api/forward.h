/* Forwarding an API request to the qodd node of the cluster that owns its session, and relaying the answer.
 *
 * The forwarder runs its own loop thread ("qod-forward") with one libcurl multi handle, so connections to the
 * other nodes are reused and no HTTP thread ever waits on a peer. qod_forward_request runs on an HTTP thread
 * inside the handler: it copies what the exchange needs, hands it to the loop and defers the request; the loop
 * thread later answers it, once, with the peer's status, body and a fixed set of headers, or with
 * 503 UNAVAILABLE + "Retry-After: 1" when the peer cannot be reached, is slower than the timeout or answers
 * something unusable. Redirects are not followed; only http:// and https:// peers are accepted. */
#ifndef QOD_API_FORWARD_H
#define QOD_API_FORWARD_H

#include "api/http.h"

#include <stdbool.h>
#include <stdint.h>

/* The request header that marks a forwarded request; its value is the forwarding node's name. */
#define QOD_FORWARD_HEADER "X-Qod-Forwarded"
/* Exchanges in flight at once; beyond it qod_forward_request returns QOD_ERR_BUSY. */
#define QOD_FORWARD_MAX_INFLIGHT 4096
/* The largest peer response body relayed; a larger one is answered 503. */
#define QOD_FORWARD_MAX_BODY (1024 * 1024)
/* The longest request or response header value copied; a longer one fails the forward. */
#define QOD_FORWARD_MAX_HEADER 8192
/* The longest base URL, and the longest URL once the path and query are appended. */
#define QOD_FORWARD_MAX_BASE 1024
#define QOD_FORWARD_MAX_URL 8192

typedef struct qod_forward qod_forward;

/* Starts the forwarder thread. timeout_ms (> 0) bounds each exchange, connecting and queueing included. */
int qod_forward_create(int64_t timeout_ms, qod_forward **out);
/* Stops the thread and frees; exchanges still in flight are answered 503 first. Call it once no thread can
 * call qod_forward_request any more (their HTTP servers stopped or no longer dispatch here). NULL is a no-op. */
void qod_forward_destroy(qod_forward *f);
/* Forwards r to base_url (borrowed; "http[s]://host[:port]", trailing slashes ignored) + its path and query,
 * from the handler of r on its HTTP thread. Sends the method, the body and the request headers Authorization,
 * Content-Type, Idempotency-Key, x-correlator (the one already set on the response when there is one, so the
 * peer uses the correlator this node answers with) and Accept, plus "X-Qod-Forwarded: from_node" (borrowed;
 * printable ASCII without spaces, at most 255 bytes: a node name or URL).
 * Relays the peer's status, body and its Content-Type, x-correlator, Retry-After, Location, RateLimit,
 * RateLimit-Policy, Idempotent-Replayed, Cache-Control and WWW-Authenticate headers, except those r's response
 * already has. QOD_OK: r is deferred and will be completed exactly once, from the forwarder thread. Otherwise r
 * is untouched and the caller answers it: QOD_ERR_INVALID (bad base URL or node name), QOD_ERR_LIMIT (a header,
 * the URL or the body over its limit), QOD_ERR_BUSY (too many in flight), QOD_ERR_CLOSED, QOD_ERR_NOMEM. */
int qod_forward_request(qod_forward *f, qod_req *r, const char *base_url, const char *from_node);
/* One header line of a peer's answer, as the forwarder reads it (exposed for tests and fuzzing). */
typedef enum {
    QOD_FORWARD_HDR_IGNORED = 0,
    QOD_FORWARD_HDR_CONTENT_TYPE,
    QOD_FORWARD_HDR_RELAYED
} qod_forward_hdr_kind;
typedef struct {
    qod_forward_hdr_kind kind;
    int relayed;     /* index in the relayed list (QOD_FORWARD_HDR_RELAYED), else -1 */
    size_t value_at; /* the value, trimmed, within the line */
    size_t value_len;
} qod_forward_header;
/* Parses "Name: value" (len bytes, no CR LF): QOD_OK, QOD_ERR_INVALID (no name, a folded line, or a control
 * character in a value that would be relayed) or QOD_ERR_LIMIT (a relayed value over QOD_FORWARD_MAX_HEADER). */
int qod_forward_header_parse(const char *line, size_t len, qod_forward_header *out);
/* True when r carries X-Qod-Forwarded: another node forwarded it here, and it must not be forwarded again. */
bool qod_forward_is_forwarded(const qod_req *r);
/* Counters for /metrics: requests answered with the peer's response, and requests that were not (refused by
 * qod_forward_request, or answered 503 by the forwarder). */
void qod_forward_stats(const qod_forward *f, uint64_t *forwarded, uint64_t *failed);

#endif
