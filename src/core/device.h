/* Device identifiers as CAMARA defines them: phoneNumber (E.164 with '+'), networkAccessIdentifier,
 * ipv4Address {publicAddress + privateAddress and/or publicPort} and ipv6Address. Parsing validates and
 * normalises them; one identifier is then chosen to act on and to echo (CAMARA DeviceResponse rule). */
#ifndef QOD_CORE_DEVICE_H
#define QOD_CORE_DEVICE_H

#include "util/buf.h"

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stddef.h>

typedef enum {
    QOD_DEV_NONE = 0,
    QOD_DEV_PHONE = 1,
    QOD_DEV_IPV4 = 2,
    QOD_DEV_IPV6 = 4,
    QOD_DEV_NAI = 8
} qod_device_kind;

#define QOD_NAI_MAX 253
#define QOD_DEVICE_KEY_MAX 320

typedef struct {
    unsigned present; /* bitmask of qod_device_kind given */
    char phone[17];
    char nai[QOD_NAI_MAX + 1];
    char ipv4_public[16];
    char ipv4_private[16]; /* "" when not given */
    int ipv4_port;         /* -1 when not given */
    char ipv6[46];         /* normalised */
    char ipv6_orig[46];    /* as given: echoed back (CAMARA: "with the original value") */
} qod_device;

/* Parses a Device object. QOD_ERR_INVALID with why in err for: not an object, no identifier ({}), an unknown
 * member, or any identifier that breaks its schema. */
int qod_device_parse(const cJSON *obj, qod_device *out, char *err, size_t errcap);
/* The identifier to act on: phone, then ipv4, then ipv6, then NAI. */
qod_device_kind qod_device_choose(const qod_device *d);
/* A canonical key of one identifier ("tel:+…", "ipv4:PUB/PRIV:PORT", "ipv6:PREFIX/64", "nai:…"). An IPv6 device is
 * its /64: CAMARA identifies it by its observed address "or by any single IPv6 address from within the subnet
 * allocated to the device (e.g. adding ::0 to the /64 prefix)". */
int qod_device_key(const qod_device *d, qod_device_kind k, char *out, size_t cap);
/* Appends {"phoneNumber":…} (or the other member) for one identifier. */
int qod_device_to_json(const qod_device *d, qod_device_kind k, qod_buf *out);
/* Validators for single values, shared with the registry and the CLI. */
bool qod_phone_valid(const char *s);
/* Normalises an IPv4 or IPv6 address text into out; false when not an address of that family. */
bool qod_ipv4_norm(const char *s, char out[16]);
bool qod_ipv6_norm(const char *s, char out[46]);
/* The /64 network of an IPv6 address, as "PREFIX::/64" (e.g. "2001:db8:1:2::/64"); false when s is not one. */
#define QOD_IPV6_NET_LEN 50
bool qod_ipv6_net64(const char *s, char out[QOD_IPV6_NET_LEN]);

#endif
