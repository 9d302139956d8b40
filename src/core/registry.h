/* The subscriber registry: the live devices the network knows (phone number, IP addresses, serving cell,
 * eligibility). Live apps may only create sessions for devices found here. Persisted in the store, held in
 * memory behind a rwlock, indexed by phone, by IPv4 address and by the /64 of the IPv6 address (a device is found
 * by any address of its /64, as CAMARA allows). */
#ifndef QOD_CORE_REGISTRY_H
#define QOD_CORE_REGISTRY_H

#include "core/device.h"
#include "store/store.h"

#include <stdbool.h>

typedef struct {
    char phone[17];
    char ipv4[16];                   /* "" when none */
    char ipv6[46];                   /* "" when none */
    char ipv6_net[QOD_IPV6_NET_LEN]; /* its /64, by which the device is found ("" when none; set by the registry) */
    int cell;                        /* serving cell id (capacity admission) */
    bool eligible;                   /* false: QoD not applicable to this subscriber */
} qod_subscriber;

typedef struct qod_registry qod_registry;

/* Highest cell id. */
#define QOD_CELL_MAX 1000000000

/* Loads every subscriber from the store (borrowed; must outlive the registry). */
int qod_registry_create(qod_store *st, qod_registry **out);
/* Frees; NULL is a no-op. */
void qod_registry_destroy(qod_registry *r);
/* Adds or replaces a subscriber and commits it; validates every field (why in err). QOD_ERR_EXISTS when one of
 * its IP addresses belongs to another subscriber. */
int qod_registry_put(qod_registry *r, const qod_subscriber *s, char *err, size_t errcap);
/* Removes by phone; QOD_ERR_NOTFOUND when unknown. */
int qod_registry_remove(qod_registry *r, const char *phone);
/* Reads phone's row again from the store (another node changed it), or every row when phone is NULL. */
int qod_registry_refresh(qod_registry *r, const char *phone);
/* Finds the subscriber of one device identifier; QOD_ERR_NOTFOUND when unknown. */
int qod_registry_find(qod_registry *r, const qod_device *d, qod_device_kind k, qod_subscriber *out);
/* Calls fn for every subscriber until it returns non-zero. The read lock is taken for a slice of the registry at a
 * time, so that changes are not held up by a long walk: a subscriber present throughout is seen exactly once, one
 * added or removed meanwhile may or may not be. fn must not call back into the registry. */
void qod_registry_each(qod_registry *r, int (*fn)(void *arg, const qod_subscriber *s), void *arg);
/* Appends a subscriber as JSON. */
int qod_subscriber_to_json(const qod_subscriber *s, qod_buf *out);

#endif
