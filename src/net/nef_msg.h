/* The TS 29.122 AsSessionWithQoS messages of the nef backend, as pure functions (no I/O, no state) so that
 * every mapping can be unit-tested and the notification parser fuzzed:
 * - the AsSessionWithQoSSubscription body of a POST (UE address or GPSI, qosReference, flowInfo, events);
 * - the UserPlaneNotificationData the NEF POSTs to our notification destination;
 * - the subscription list (GET …/subscriptions) read at start for reconciliation. */
#ifndef QOD_NET_NEF_MSG_H
#define QOD_NET_NEF_MSG_H

#include "util/buf.h"

#include <stdbool.h>
#include <stddef.h>

/* The largest notification body we parse, and the most event reports we act on in one notification. */
#define QOD_NEF_NOTIFICATION_MAX 65536
#define QOD_NEF_REPORTS_MAX 32
/* The largest subscription list we read at start. */
#define QOD_NEF_LIST_MAX (4u << 20)
/* The longest subscription id (the last path segment of its resource URI) we compare or address. */
#define QOD_NEF_RES_ID_MAX 128

/* The user plane events we subscribe to and act on; QOD_NEF_EV_OTHER stands for any other (ignored) value. */
typedef enum {
    QOD_NEF_EV_SUCCESSFUL_RESOURCES_ALLOCATION = 0,
    QOD_NEF_EV_FAILED_RESOURCES_ALLOCATION,
    QOD_NEF_EV_SESSION_TERMINATION,
    QOD_NEF_EV_QOS_GUARANTEED,
    QOD_NEF_EV_QOS_NOT_GUARANTEED,
    QOD_NEF_EV_OTHER,
    QOD_NEF_EV_COUNT
} qod_nef_event;

/* The UserPlaneEvent name of an event ("OTHER" for QOD_NEF_EV_OTHER). */
const char *qod_nef_event_name(qod_nef_event ev);

/* What a subscription is made of; all borrowed. Exactly one UE identifier is sent: ue_ipv4, else ue_ipv6, else
 * gpsi_msisdn (digits only, 5 to 15). flows is the session's flow JSON or NULL. */
typedef struct {
    const char *notification_destination;
    const char *ue_ipv4; /* "" or NULL when unknown */
    const char *ue_ipv6;
    const char *gpsi_msisdn;
    const char *qos_reference;
    const char *flows;
} qod_nef_sub_spec;

/* The flowDescriptions of a session as 3GPP IPFilterRules (TS 29.214 clause 5.3.8): dl is
 * "permit out ip from <AS> [ports] to <UE> [ports]", ul "permit in ip from <UE> [ports] to <AS> [ports]". <AS> is
 * the applicationServer address (or "any"), <UE> the device address (or "any" without one: TS 29.214 forbids the
 * keyword "assigned"). cap bytes each.
 * QOD_ERR_UNSUPPORTED (why in err) when the application server has no address of the device's family. */
int qod_nef_flow_descriptions(const char *ue_addr, const char *flows, char *dl, char *ul, size_t cap, char *err,
                              size_t errcap);

/* Appends the AsSessionWithQoSSubscription JSON of spec to out; QOD_ERR_INVALID/UNSUPPORTED with why in err. */
int qod_nef_subscription_body(const qod_nef_sub_spec *spec, qod_buf *out, char *err, size_t errcap);

/* A parsed UserPlaneNotificationData: its events in order (at most QOD_NEF_REPORTS_MAX are kept; past them a
 * terminal event, FAILED_RESOURCES_ALLOCATION or SESSION_TERMINATION, takes the last place), and the id of the
 * subscription its transaction names ("" when the transaction is not a URI we can read one from). */
typedef struct {
    int n;
    qod_nef_event ev[QOD_NEF_REPORTS_MAX];
    char subscription[QOD_NEF_RES_ID_MAX];
} qod_nef_notification;

/* The id of the subscription resource uri names: its last non-empty path segment (query and fragment ignored),
 * made only of URI unreserved characters and '%'. False when there is none, or it does not fit cap. */
bool qod_nef_resource_id(const char *uri, char *out, size_t cap);

/* Parses len bytes of UserPlaneNotificationData: an object with a string "transaction" and a non-empty array
 * "eventReports" of objects each with a string "event". QOD_OK, or QOD_ERR_INVALID with why in err. */
int qod_nef_notification_parse(const char *body, size_t len, qod_nef_notification *out, char *err, size_t errcap);

/* The cause and detail of a TS 29.571 ProblemDetails body, as "cause: detail" (either alone when the other is absent)
 * for a log line: printable ASCII only (others, quotes and backslashes become '?'), cut to cap. False, out "", when
 * body is not a JSON object with a string cause or detail. */
bool qod_nef_problem_text(const char *body, size_t len, char *out, size_t cap);

/* One subscription of a GET …/subscriptions answer; strings borrowed for the callback only, "" when absent. */
typedef struct {
    const char *self;
    const char *notification_destination;
    const char *ue_ipv4;
    const char *ue_ipv6;
    const char *gpsi;
    const char *qos_reference;
} qod_nef_listed;

/* Parses a subscription list (a JSON array of AsSessionWithQoSSubscription) and calls fn for each object
 * member; non-objects are skipped. QOD_OK or QOD_ERR_INVALID with why in err. */
int qod_nef_list_parse(const char *body, size_t len, void (*fn)(void *arg, const qod_nef_listed *s), void *arg,
                       char *err, size_t errcap);

/* The notification token at the end of a notification destination of ours: url must be exactly
 * prefix + a token of base64url characters (1..63). Writes it into out (cap >= 64); false otherwise. */
bool qod_nef_token_of(const char *url, const char *prefix, char *out, size_t cap);

#endif
