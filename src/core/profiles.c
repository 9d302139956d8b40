#include "core/profiles.h"

#include "core/device.h"
#include "util/err.h"
#include "util/file.h"
#include "util/json.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PROFILES_FILE_MAX (1024 * 1024)

struct qod_profiles {
    qod_profile *v;
    size_t n;
};

/* The default catalogue: the guide's three profiles, with CAMARA QosProfile attributes. */
static const char default_catalogue[] =
    "["
    "{\"name\":\"QOS_L\",\"description\":\"Low latency: cloud gaming, drone and robot control, AR.\","
    "\"status\":\"ACTIVE\",\"targetMinUpstreamRate\":{\"value\":2,\"unit\":\"Mbps\"},"
    "\"maxUpstreamRate\":{\"value\":10,\"unit\":\"Mbps\"},\"targetMinDownstreamRate\":{\"value\":5,\"unit\":\"Mbps\"},"
    "\"maxDownstreamRate\":{\"value\":20,\"unit\":\"Mbps\"},\"minDuration\":{\"value\":1,\"unit\":\"Seconds\"},"
    "\"maxDuration\":{\"value\":86400,\"unit\":\"Seconds\"},\"priority\":10,"
    "\"packetDelayBudget\":{\"value\":10,\"unit\":\"Milliseconds\"},\"jitter\":{\"value\":5,\"unit\":\"Milliseconds\"},"
    "\"packetErrorLossRate\":3},"
    "{\"name\":\"QOS_M\",\"description\":\"Balanced: video calls, telemedicine.\",\"status\":\"ACTIVE\","
    "\"targetMinUpstreamRate\":{\"value\":4,\"unit\":\"Mbps\"},\"maxUpstreamRate\":{\"value\":20,\"unit\":\"Mbps\"},"
    "\"targetMinDownstreamRate\":{\"value\":8,\"unit\":\"Mbps\"},\"maxDownstreamRate\":{\"value\":50,\"unit\":\"Mbps\"},"
    "\"minDuration\":{\"value\":1,\"unit\":\"Seconds\"},\"maxDuration\":{\"value\":86400,\"unit\":\"Seconds\"},"
    "\"priority\":20,\"packetDelayBudget\":{\"value\":50,\"unit\":\"Milliseconds\"},"
    "\"jitter\":{\"value\":20,\"unit\":\"Milliseconds\"},\"packetErrorLossRate\":3},"
    "{\"name\":\"QOS_S\",\"description\":\"Sustained throughput: live video upload, broadcast.\","
    "\"status\":\"ACTIVE\",\"targetMinUpstreamRate\":{\"value\":15,\"unit\":\"Mbps\"},"
    "\"maxUpstreamRate\":{\"value\":50,\"unit\":\"Mbps\"},\"targetMinDownstreamRate\":{\"value\":15,\"unit\":\"Mbps\"},"
    "\"maxDownstreamRate\":{\"value\":100,\"unit\":\"Mbps\"},\"minDuration\":{\"value\":1,\"unit\":\"Seconds\"},"
    "\"maxDuration\":{\"value\":86400,\"unit\":\"Seconds\"},\"priority\":40,"
    "\"packetDelayBudget\":{\"value\":150,\"unit\":\"Milliseconds\"},"
    "\"jitter\":{\"value\":50,\"unit\":\"Milliseconds\"},\"packetErrorLossRate\":6}"
    "]";

const char *qod_profile_status_name(qod_profile_status s)
{
    static const char *const names[] = {"ACTIVE", "INACTIVE", "DEPRECATED"};
    return (unsigned)s < 3 ? names[s] : "ACTIVE";
}

/* A Rate object in kbps; QOD_ERR_NOTFOUND when absent. */
static int rate_kbps(const cJSON *p, const char *key, int64_t *out, char *err, size_t errcap)
{
    static const struct {
        const char *unit;
        double kbps;
    } units[] = {{"bps", 0.001}, {"kbps", 1}, {"Mbps", 1e3}, {"Gbps", 1e6}, {"Tbps", 1e9}};
    const cJSON *r = NULL;
    int rc = qod_json_obj(p, key, &r);
    if (rc == QOD_ERR_NOTFOUND)
        return rc;
    int64_t v = 0;
    const char *u = NULL;
    if (rc == QOD_OK && qod_json_int(r, "value", 0, 1024, &v) == QOD_OK && qod_json_str(r, "unit", &u) == QOD_OK)
        for (size_t i = 0; i < sizeof units / sizeof units[0]; i++)
            if (strcmp(u, units[i].unit) == 0) {
                *out = (int64_t)((double)v * units[i].kbps);
                return QOD_OK;
            }
    snprintf(err, errcap, "%s must be {value: 0..1024, unit: bps|kbps|Mbps|Gbps|Tbps}", key);
    return QOD_ERR_INVALID;
}

/* A Duration object in microseconds; QOD_ERR_NOTFOUND when absent. */
static int duration_us(const cJSON *p, const char *key, int64_t *out, char *err, size_t errcap)
{
    static const struct {
        const char *unit;
        double us;
    } units[] = {{"Days", 864e8},       {"Hours", 36e8},     {"Minutes", 6e7},     {"Seconds", 1e6},
                 {"Milliseconds", 1e3}, {"Microseconds", 1}, {"Nanoseconds", 1e-3}};
    const cJSON *d = NULL;
    int rc = qod_json_obj(p, key, &d);
    if (rc == QOD_ERR_NOTFOUND)
        return rc;
    int64_t v = 0;
    const char *u = NULL;
    if (rc == QOD_OK && qod_json_int(d, "value", 1, 2147483647, &v) == QOD_OK && qod_json_str(d, "unit", &u) == QOD_OK)
        for (size_t i = 0; i < sizeof units / sizeof units[0]; i++)
            /* Past about 290,000 years microseconds leave int64: such a duration is a mistake, not a value. */
            if (strcmp(u, units[i].unit) == 0 && (double)v * units[i].us < 9.2e18) {
                *out = (int64_t)((double)v * units[i].us);
                return QOD_OK;
            }
    snprintf(err, errcap, "%s must be {value: >= 1, unit: Days|Hours|Minutes|Seconds|Milliseconds|…}", key);
    return QOD_ERR_INVALID;
}

bool qod_profile_name_valid(const char *s)
{
    size_t n = strlen(s);
    if (n < 3 || n > QOD_PROFILE_NAME_MAX)
        return false;
    for (const char *c = s; *c; c++)
        if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') || *c == '_' ||
              *c == '.' || *c == '-'))
            return false;
    return true;
}

static int parse_status(const cJSON *o, qod_profile *p, char *err, size_t errcap)
{
    const char *s = NULL;
    if (qod_json_str(o, "status", &s) != QOD_OK) {
        snprintf(err, errcap, "profile %s: status is required", p->name);
        return QOD_ERR_INVALID;
    }
    for (int i = 0; i < 3; i++)
        if (strcmp(s, qod_profile_status_name((qod_profile_status)i)) == 0) {
            p->status = (qod_profile_status)i;
            return QOD_OK;
        }
    snprintf(err, errcap, "profile %s: status must be ACTIVE, INACTIVE or DEPRECATED", p->name);
    return QOD_ERR_INVALID;
}

static int optional(int rc)
{
    return rc == QOD_ERR_NOTFOUND ? QOD_OK : rc;
}

static int parse_numbers(const cJSON *o, qod_profile *p, char *err, size_t errcap)
{
    int64_t v = 0, min_us = 1000000, max_us = 86400000000LL;
    int rc = optional(rate_kbps(o, "targetMinDownstreamRate", &p->min_down_kbps, err, errcap));
    rc = rc ? rc : optional(rate_kbps(o, "maxDownstreamRate", &p->max_down_kbps, err, errcap));
    rc = rc ? rc : optional(rate_kbps(o, "targetMinUpstreamRate", &p->min_up_kbps, err, errcap));
    rc = rc ? rc : optional(rate_kbps(o, "maxUpstreamRate", &p->max_up_kbps, err, errcap));
    rc = rc ? rc : optional(rate_kbps(o, "maxUpstreamBurstRate", &v, err, errcap));
    rc = rc ? rc : optional(rate_kbps(o, "maxDownstreamBurstRate", &v, err, errcap));
    rc = rc ? rc : optional(duration_us(o, "minDuration", &min_us, err, errcap));
    rc = rc ? rc : optional(duration_us(o, "maxDuration", &max_us, err, errcap));
    rc = rc ? rc : optional(duration_us(o, "packetDelayBudget", &p->delay_budget_us, err, errcap));
    rc = rc ? rc : optional(duration_us(o, "jitter", &v, err, errcap));
    if (rc != QOD_OK)
        return rc;
    p->min_duration_s = min_us < 1000000 ? 1 : min_us / 1000000;
    p->max_duration_s = max_us / 1000000;
    if (p->max_duration_s < p->min_duration_s) {
        snprintf(err, errcap, "profile %s: maxDuration is below minDuration", p->name);
        return QOD_ERR_INVALID;
    }
    p->priority = 50;
    int prc = qod_json_int(o, "priority", 1, 100, &v);
    if (prc == QOD_OK)
        p->priority = (int)v;
    int lrc = qod_json_int(o, "packetErrorLossRate", 1, 10, &v);
    if ((prc != QOD_OK && prc != QOD_ERR_NOTFOUND) || (lrc != QOD_OK && lrc != QOD_ERR_NOTFOUND)) {
        snprintf(err, errcap, "profile %s: priority must be 1..100 and packetErrorLossRate 1..10", p->name);
        return QOD_ERR_INVALID;
    }
    return QOD_OK;
}

/* Our extension "x-devices": a profile offered only to these phone numbers. Removed from the served JSON. */
static int parse_devices(cJSON *o, qod_profile *p, char *err, size_t errcap)
{
    cJSON *devs = cJSON_DetachItemFromObjectCaseSensitive(o, "x-devices");
    if (!devs)
        return QOD_OK;
    int n = cJSON_GetArraySize(devs);
    int rc = cJSON_IsArray(devs) && n >= 1 && n <= 10000 ? QOD_OK : QOD_ERR_INVALID;
    if (rc == QOD_OK && !(p->devices = calloc((size_t)n, sizeof *p->devices)))
        rc = QOD_ERR_NOMEM;
    const cJSON *it;
    cJSON_ArrayForEach(it, devs)
    {
        if (rc != QOD_OK)
            break;
        if (!cJSON_IsString(it) || !qod_phone_valid(it->valuestring)) {
            rc = QOD_ERR_INVALID;
            break;
        }
        if (!(p->devices[p->ndevices] = strdup(it->valuestring)))
            rc = QOD_ERR_NOMEM;
        else
            p->ndevices++;
    }
    if (rc != QOD_OK)
        snprintf(err, errcap, "profile %s: x-devices must be an array of E.164 phone numbers", p->name);
    cJSON_Delete(devs);
    return rc;
}

/* Our extension "x-qosReference": the NEF's QoS reference for this profile (3GPP TS 29.122 qosReference). */
static int parse_qos_reference(cJSON *o, qod_profile *p, char *err, size_t errcap)
{
    cJSON *ref = cJSON_DetachItemFromObjectCaseSensitive(o, "x-qosReference");
    int rc = QOD_OK;
    if (ref && (!cJSON_IsString(ref) || !ref->valuestring[0] || strlen(ref->valuestring) >= sizeof p->qos_reference)) {
        snprintf(err, errcap, "profile %s: x-qosReference must be a non-empty string", p->name);
        rc = QOD_ERR_INVALID;
    }
    snprintf(p->qos_reference, sizeof p->qos_reference, "%.127s", rc == QOD_OK && ref ? ref->valuestring : p->name);
    cJSON_Delete(ref);
    /* Our extension "x-provisionable": false keeps a profile out of QoS Provisioning (sessions only). */
    cJSON *prov = cJSON_DetachItemFromObjectCaseSensitive(o, "x-provisionable");
    p->provisionable = !prov || cJSON_IsTrue(prov);
    if (rc == QOD_OK && prov && !cJSON_IsBool(prov)) {
        snprintf(err, errcap, "profile %s: x-provisionable must be true or false", p->name);
        rc = QOD_ERR_INVALID;
    }
    cJSON_Delete(prov);
    return rc;
}

bool qod_profile_for_device(const qod_profile *p, const char *phone)
{
    if (!p->devices)
        return true;
    for (int i = 0; i < p->ndevices; i++)
        if (strcmp(p->devices[i], phone) == 0)
            return true;
    return false;
}

static int parse_one(const cJSON *o, qod_profile *p, char *err, size_t errcap)
{
    const char *name = NULL, *desc = NULL;
    memset(p, 0, sizeof *p);
    if (!cJSON_IsObject(o) || qod_json_str(o, "name", &name) != QOD_OK || !qod_profile_name_valid(name)) {
        snprintf(err, errcap, "each profile needs a name of 3..256 characters from [a-zA-Z0-9_.-]");
        return QOD_ERR_INVALID;
    }
    memcpy(p->name, name, strlen(name) + 1);
    if (qod_json_str(o, "description", &desc) == QOD_ERR_INVALID) {
        snprintf(err, errcap, "profile %s: description must be a string", p->name);
        return QOD_ERR_INVALID;
    }
    int rc = parse_status(o, p, err, errcap);
    rc = rc ? rc : parse_numbers(o, p, err, errcap);
    rc = rc ? rc : parse_devices((cJSON *)o, p, err, errcap);
    rc = rc ? rc : parse_qos_reference((cJSON *)o, p, err, errcap);
    if (rc == QOD_OK) {
        p->json = cJSON_PrintUnformatted(o);
        rc = p->json ? QOD_OK : QOD_ERR_NOMEM;
    }
    return rc;
}

int qod_profiles_parse(const char *json, size_t len, qod_profiles **out, char *err, size_t errcap)
{
    *out = NULL;
    cJSON *root = NULL;
    int rc = qod_json_parse(json, len, 8, &root, err, errcap);
    if (rc == QOD_OK &&
        (!cJSON_IsArray(root) || cJSON_GetArraySize(root) < 1 || cJSON_GetArraySize(root) > QOD_PROFILES_MAX)) {
        snprintf(err, errcap, "the catalogue must be a JSON array of 1 to %d QosProfile objects", QOD_PROFILES_MAX);
        rc = QOD_ERR_INVALID;
    }
    qod_profiles *ps = rc == QOD_OK ? calloc(1, sizeof *ps) : NULL;
    if (rc == QOD_OK && (!ps || !(ps->v = calloc((size_t)cJSON_GetArraySize(root), sizeof *ps->v))))
        rc = QOD_ERR_NOMEM;
    const cJSON *it;
    cJSON_ArrayForEach(it, root)
    {
        if (rc != QOD_OK)
            break;
        rc = parse_one(it, &ps->v[ps->n], err, errcap);
        if (rc != QOD_OK) {
            for (int k = 0; k < ps->v[ps->n].ndevices; k++)
                free(ps->v[ps->n].devices[k]);
            free(ps->v[ps->n].devices);
            free(ps->v[ps->n].json);
        }
        if (rc == QOD_OK && qod_profiles_find(ps, ps->v[ps->n].name)) {
            snprintf(err, errcap, "profile %s is defined twice", ps->v[ps->n].name);
            ps->n++; /* freed with the catalogue */
            rc = QOD_ERR_INVALID;
        }
        if (rc == QOD_OK)
            ps->n++;
    }
    cJSON_Delete(root);
    if (rc != QOD_OK) {
        qod_profiles_destroy(ps);
        return rc;
    }
    *out = ps;
    return QOD_OK;
}

int qod_profiles_default(qod_profiles **out)
{
    char err[256];
    return qod_profiles_parse(default_catalogue, sizeof default_catalogue - 1, out, err, sizeof err);
}

int qod_profiles_load(const char *path, qod_profiles **out, char *err, size_t errcap)
{
    char *buf = NULL;
    size_t n = 0;
    int rc = qod_file_read(path, PROFILES_FILE_MAX, &buf, &n, err, errcap);
    if (rc == QOD_ERR_LIMIT)
        snprintf(err, errcap, "%s is larger than 1 MiB", path);
    if (rc == QOD_OK)
        rc = qod_profiles_parse(buf, n, out, err, errcap);
    free(buf);
    return rc;
}

void qod_profiles_destroy(qod_profiles *p)
{
    if (!p)
        return;
    for (size_t i = 0; i < p->n; i++) {
        free(p->v[i].json);
        for (int k = 0; k < p->v[i].ndevices; k++)
            free(p->v[i].devices[k]);
        free(p->v[i].devices);
    }
    free(p->v);
    free(p);
}

const qod_profile *qod_profiles_find(const qod_profiles *p, const char *name)
{
    for (size_t i = 0; i < p->n; i++)
        if (strcmp(p->v[i].name, name) == 0)
            return &p->v[i];
    return NULL;
}

const qod_profile *qod_profiles_at(const qod_profiles *p, size_t i)
{
    return i < p->n ? &p->v[i] : NULL;
}

size_t qod_profiles_count(const qod_profiles *p)
{
    return p->n;
}

int qod_profiles_to_json(const qod_profiles *p, qod_buf *out)
{
    int rc = qod_buf_puts(out, "[");
    for (size_t i = 0; rc == QOD_OK && i < p->n; i++) {
        if (i)
            rc = qod_buf_puts(out, ",");
        rc = rc ? rc : qod_buf_puts(out, p->v[i].json);
    }
    return rc ? rc : qod_buf_puts(out, "]");
}
