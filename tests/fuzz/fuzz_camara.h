/* Request-body checks shared by the session targets (fuzz_v0_create, fuzz_v1_create). The handlers' own parsing
 * in src/api/konera_v0.c and konera_v1.c is static, so the targets make the same library calls, under the same
 * guards, on the same members; these helpers are the pieces both surfaces have in common. */
#ifndef QOD_FUZZ_CAMARA_H
#define QOD_FUZZ_CAMARA_H

#include "fuzz.h"

#include "core/device.h"
#include "core/flows.h"
#include "core/profiles.h"
#include "notify/urlguard.h"
#include "util/buf.h"
#include "util/err.h"
#include "util/json.h"
#include "util/time.h"

/* The default catalogue (QOS_L, QOS_M, QOS_S), loaded at the first call and never changed. */
static inline const qod_profiles *fuzz_catalogue(void)
{
    static qod_profiles *profiles;
    if (!profiles && qod_profiles_default(&profiles) != QOD_OK)
        abort();
    return profiles;
}

/* --callback-allow ranges an operator might open, parsed at the first call. */
static inline const qod_cidrs *fuzz_callback_allow(void)
{
    static qod_cidrs allow;
    static bool parsed;
    char err[128];
    if (!parsed && qod_cidrs_parse("10.20.0.0/16,192.168.7.0/24,127.0.0.0/8,fd00:7::/64", &allow, err, sizeof err))
        abort();
    parsed = true;
    return &allow;
}

/* The canonical key of the identifier the handlers act on. */
static inline void fuzz_device_key(const qod_device *d, qod_device_kind kind, char key[QOD_DEVICE_KEY_MAX])
{
    FUZZ_CHECK(qod_device_key(d, kind, key, QOD_DEVICE_KEY_MAX) == QOD_OK);
}

/* A Device object: parses it and, when valid, checks that the echoed JSON of the chosen identifier (what responses
 * show and what a 3-legged token carries, parsed back with the token's depth of 4) is the same device again.
 * Returns the chosen kind, or QOD_DEV_NONE when the device is invalid. */
static inline qod_device_kind fuzz_device(const cJSON *dev)
{
    static const qod_device_kind kinds[] = {QOD_DEV_PHONE, QOD_DEV_IPV4, QOD_DEV_IPV6, QOD_DEV_NAI};
    qod_device d, again;
    char err[256] = "", key[QOD_DEVICE_KEY_MAX], key2[QOD_DEVICE_KEY_MAX];
    cJSON *echo = NULL;
    qod_buf json;
    if (qod_device_parse(dev, &d, err, sizeof err) != QOD_OK) {
        FUZZ_CHECK(err[0] != '\0');
        return QOD_DEV_NONE;
    }
    qod_device_kind kind = qod_device_choose(&d);
    FUZZ_CHECK(kind != QOD_DEV_NONE && (d.present & (unsigned)kind));
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++)
        if (d.present & (unsigned)kinds[i])
            fuzz_device_key(&d, kinds[i], key);
    qod_buf_init(&json, 0);
    FUZZ_CHECK(qod_device_to_json(&d, kind, &json) == QOD_OK);
    FUZZ_CHECK(qod_json_parse(json.data, json.len, 4, &echo, err, sizeof err) == QOD_OK);
    FUZZ_CHECK(qod_device_parse(echo, &again, err, sizeof err) == QOD_OK);
    FUZZ_CHECK(qod_device_choose(&again) == kind);
    fuzz_device_key(&d, kind, key);
    fuzz_device_key(&again, kind, key2);
    FUZZ_CHECK(strcmp(key, key2) == 0);
    cJSON_Delete(echo);
    qod_buf_dispose(&json);
    return kind;
}

/* applicationServer, devicePorts and applicationServerPorts, appended to extra as "name":{normalised},… the way
 * both handlers build the stored "extra" object. Returns QOD_OK when every present member is valid; *count gets
 * the number present. */
static inline int fuzz_flows(const cJSON *root, qod_buf *extra, int *count)
{
    static const char *const names[] = {"applicationServer", "devicePorts", "applicationServerPorts"};
    char err[512] = "";
    int rc = QOD_OK;
    *count = 0;
    for (int i = 0; i < 3 && rc == QOD_OK; i++) {
        const cJSON *it = cJSON_GetObjectItemCaseSensitive(root, names[i]);
        if (!it || cJSON_IsNull(it))
            continue;
        qod_buf_printf(extra, "%s\"%s\":", *count ? "," : "", names[i]);
        (*count)++;
        qod_app_server as;
        qod_ports ports;
        rc = i == 0 ? qod_app_server_parse(it, names[i], &as, extra, err, sizeof err)
                    : qod_ports_parse(it, names[i], &ports, extra, err, sizeof err);
        if (rc == QOD_OK && i == 0)
            FUZZ_CHECK(as.ipv4_prefix <= 32 && as.ipv6_prefix <= 128 && (as.ipv4_prefix >= 0 || as.ipv6_prefix >= 0));
        if (rc == QOD_OK && i > 0) {
            FUZZ_CHECK(ports.n >= 1 && ports.n <= QOD_PORTS_MAX);
            for (int k = 0; k < ports.n; k++)
                FUZZ_CHECK(ports.from[k] <= ports.to[k]);
        }
        FUZZ_CHECK(rc == QOD_OK || err[0] != '\0');
    }
    return rc;
}

/* A normalised text the handlers store must be one JSON object, whatever the body held. */
static inline void fuzz_check_object_text(const char *text, size_t len)
{
    char err[128];
    cJSON *o = NULL;
    FUZZ_CHECK(qod_json_parse(text, len, 0, &o, err, sizeof err) == QOD_OK && cJSON_IsObject(o));
    cJSON_Delete(o);
}

/* A callback URL, checked as a live app and as a sandbox app, with and without --callback-allow ranges. Sandbox apps
 * and allowed ranges only ever open more: a URL a live app may use stays usable in every other mode. */
static inline void fuzz_callback_url(const char *url)
{
    char err[256];
    int live = qod_url_check(url, false, NULL, err, sizeof err);
    int sandbox = qod_url_check(url, true, NULL, err, sizeof err);
    int live_allow = qod_url_check(url, false, fuzz_callback_allow(), err, sizeof err);
    int sandbox_allow = qod_url_check(url, true, fuzz_callback_allow(), err, sizeof err);
    FUZZ_CHECK(live != QOD_OK || (sandbox == QOD_OK && live_allow == QOD_OK));
    FUZZ_CHECK(sandbox != QOD_OK || sandbox_allow == QOD_OK);
    FUZZ_CHECK(live_allow != QOD_OK || sandbox_allow == QOD_OK);
}

/* qosProfile and duration, as both handlers read them. */
static inline void fuzz_profile_duration(const cJSON *root)
{
    const char *name = NULL;
    const qod_profile *p = NULL;
    int64_t duration = 0;
    if (qod_json_str(root, "qosProfile", &name) == QOD_OK && (p = qod_profiles_find(fuzz_catalogue(), name)))
        FUZZ_CHECK(strcmp(p->name, name) == 0 && p->min_duration_s >= 1 && p->max_duration_s >= p->min_duration_s);
    if (qod_json_int(root, "duration", INT64_MIN / 4, INT64_MAX / 4, &duration) == QOD_OK)
        FUZZ_CHECK(duration >= INT64_MIN / 4 && duration <= INT64_MAX / 4);
}

#endif
