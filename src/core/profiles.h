/* The QoS profile catalogue: each profile with the CAMARA QosProfile attributes, the numbers the engine and
 * the network backends use (durations, guaranteed rates, priority), and its JSON as served by the APIs.
 * The default catalogue (QOS_L, QOS_M, QOS_S) is embedded; --profiles FILE replaces it with a JSON array of
 * QosProfile objects, validated with the same code. Immutable after load, so readers need no lock. */
#ifndef QOD_CORE_PROFILES_H
#define QOD_CORE_PROFILES_H

#include "util/buf.h"

#include <stdbool.h>
#include <stdint.h>

typedef enum { QOD_PROFILE_ACTIVE = 0, QOD_PROFILE_INACTIVE, QOD_PROFILE_DEPRECATED } qod_profile_status;

#define QOD_PROFILE_NAME_MAX 256
#define QOD_PROFILES_MAX 256

typedef struct {
    char name[QOD_PROFILE_NAME_MAX + 1];
    qod_profile_status status;
    int64_t min_duration_s; /* 1 when not given */
    int64_t max_duration_s; /* 86400 when not given */
    int64_t min_down_kbps;  /* targetMinDownstreamRate */
    int64_t max_down_kbps;  /* maxDownstreamRate (0 = none) */
    int64_t min_up_kbps;    /* targetMinUpstreamRate */
    int64_t max_up_kbps;
    int priority;            /* 1 (highest) .. 100 */
    int64_t delay_budget_us; /* packetDelayBudget, 0 when not given */
    char *json;              /* the QosProfile object, compact JSON (without our extension fields) */
    char **devices;          /* "x-devices": phone numbers the profile is restricted to; NULL = everyone */
    char qos_reference[128]; /* "x-qosReference": the NEF's pre-defined QoS reference ("" = the name) */
    bool provisionable;      /* "x-provisionable" (default true): may be assigned by QoS Provisioning */
    int ndevices;
} qod_profile;

typedef struct qod_profiles qod_profiles;

/* Loads the embedded default catalogue. */
int qod_profiles_default(qod_profiles **out);
/* Loads a catalogue from a JSON array text; why goes to err on failure (QOD_ERR_INVALID). */
int qod_profiles_parse(const char *json, size_t len, qod_profiles **out, char *err, size_t errcap);
/* Loads from a file (at most 1 MiB). */
int qod_profiles_load(const char *path, qod_profiles **out, char *err, size_t errcap);
/* Frees; NULL is a no-op. */
void qod_profiles_destroy(qod_profiles *p);
/* The profile with this exact name, or NULL. */
const qod_profile *qod_profiles_find(const qod_profiles *p, const char *name);
/* Profile by index (0..count-1), and count. */
const qod_profile *qod_profiles_at(const qod_profiles *p, size_t i);
size_t qod_profiles_count(const qod_profiles *p);
/* Appends the JSON array of every profile. */
int qod_profiles_to_json(const qod_profiles *p, qod_buf *out);
/* True when the profile may be offered to the device with this phone number ("" = no device given: only
 * unrestricted profiles). */
bool qod_profile_for_device(const qod_profile *p, const char *phone);
/* True when s matches the CAMARA QosProfileName schema (3..256 of [a-zA-Z0-9_.-]). */
bool qod_profile_name_valid(const char *s);
/* "ACTIVE", "INACTIVE", "DEPRECATED". */
const char *qod_profile_status_name(qod_profile_status s);

#endif
