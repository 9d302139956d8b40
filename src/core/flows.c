#include "core/flows.h"

#include "core/device.h"
#include "util/err.h"
#include "util/json.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* "addr" or "addr/len" of one family; normalises the address. */
static int parse_prefixed(const char *s, bool v6, char *addr, int *prefix)
{
    char tmp[64];
    const char *slash = strchr(s, '/');
    size_t al = slash ? (size_t)(slash - s) : strlen(s);
    if (al == 0 || al >= sizeof tmp)
        return QOD_ERR_INVALID;
    memcpy(tmp, s, al);
    tmp[al] = '\0';
    if (!(v6 ? qod_ipv6_norm(tmp, addr) : qod_ipv4_norm(tmp, addr)))
        return QOD_ERR_INVALID;
    int max = v6 ? 128 : 32;
    *prefix = max;
    if (slash) {
        const char *p = slash + 1;
        int v = 0, digits = 0;
        for (; *p >= '0' && *p <= '9' && digits < 4; p++, digits++)
            v = v * 10 + (*p - '0');
        if (!digits || *p || v > max)
            return QOD_ERR_INVALID;
        *prefix = v;
    }
    return QOD_OK;
}

int qod_app_server_parse(const cJSON *o, const char *what, qod_app_server *out, qod_buf *json, char *err, size_t errcap)
{
    static const char *const keys[] = {"ipv4Address", "ipv6Address", NULL};
    const char *bad = NULL, *v4 = NULL, *v6 = NULL;
    out->ipv4_prefix = out->ipv6_prefix = -1;
    if (!cJSON_IsObject(o) || !qod_json_only_keys(o, keys, &bad) || !o->child) {
        snprintf(err, errcap, "%s must be an object with ipv4Address and/or ipv6Address", what);
        return QOD_ERR_INVALID;
    }
    int r4 = qod_json_str(o, "ipv4Address", &v4), r6 = qod_json_str(o, "ipv6Address", &v6);
    if (r4 == QOD_ERR_INVALID || (r4 == QOD_OK && parse_prefixed(v4, false, out->ipv4, &out->ipv4_prefix))) {
        snprintf(err, errcap, "%s.ipv4Address must be an IPv4 address or address/mask", what);
        return QOD_ERR_INVALID;
    }
    if (r6 == QOD_ERR_INVALID || (r6 == QOD_OK && parse_prefixed(v6, true, out->ipv6, &out->ipv6_prefix))) {
        snprintf(err, errcap, "%s.ipv6Address must be an IPv6 address or address/mask", what);
        return QOD_ERR_INVALID;
    }
    if (r4 != QOD_OK && r6 != QOD_OK) {
        snprintf(err, errcap, "%s needs ipv4Address or ipv6Address", what);
        return QOD_ERR_INVALID;
    }
    qod_buf_puts(json, "{");
    if (r4 == QOD_OK) {
        if (out->ipv4_prefix == 32 && !strchr(v4, '/'))
            qod_buf_printf(json, "\"ipv4Address\":\"%s\"", out->ipv4);
        else
            qod_buf_printf(json, "\"ipv4Address\":\"%s/%d\"", out->ipv4, out->ipv4_prefix);
    }
    if (r6 == QOD_OK) {
        qod_buf_puts(json, r4 == QOD_OK ? "," : "");
        if (out->ipv6_prefix == 128 && !strchr(v6, '/'))
            qod_buf_printf(json, "\"ipv6Address\":\"%s\"", out->ipv6);
        else
            qod_buf_printf(json, "\"ipv6Address\":\"%s/%d\"", out->ipv6, out->ipv6_prefix);
    }
    return qod_buf_puts(json, "}");
}

static int port_of(const cJSON *it, uint16_t *out)
{
    if (!qod_json_is_int(it, 0, 65535))
        return QOD_ERR_INVALID;
    *out = (uint16_t)it->valuedouble;
    return QOD_OK;
}

static int parse_ranges(const cJSON *arr, qod_ports *out, qod_buf *json)
{
    static const char *const keys[] = {"from", "to", NULL};
    const char *bad;
    const cJSON *it;
    if (!cJSON_IsArray(arr) || cJSON_GetArraySize(arr) < 1)
        return QOD_ERR_INVALID;
    qod_buf_puts(json, "\"ranges\":[");
    cJSON_ArrayForEach(it, arr)
    {
        uint16_t f, t;
        if (out->n >= QOD_PORTS_MAX || !cJSON_IsObject(it) || !qod_json_only_keys(it, keys, &bad) ||
            port_of(cJSON_GetObjectItemCaseSensitive(it, "from"), &f) ||
            port_of(cJSON_GetObjectItemCaseSensitive(it, "to"), &t) || f > t)
            return QOD_ERR_INVALID;
        qod_buf_printf(json, "%s{\"from\":%u,\"to\":%u}", out->n ? "," : "", f, t);
        out->from[out->n] = f;
        out->to[out->n++] = t;
    }
    return qod_buf_puts(json, "]");
}

static int parse_port_list(const cJSON *arr, qod_ports *out, qod_buf *json)
{
    const cJSON *it;
    bool first = true;
    if (!cJSON_IsArray(arr) || cJSON_GetArraySize(arr) < 1)
        return QOD_ERR_INVALID;
    qod_buf_puts(json, "\"ports\":[");
    cJSON_ArrayForEach(it, arr)
    {
        uint16_t p;
        if (out->n >= QOD_PORTS_MAX || port_of(it, &p))
            return QOD_ERR_INVALID;
        qod_buf_printf(json, "%s%u", first ? "" : ",", p);
        first = false;
        out->from[out->n] = out->to[out->n] = p;
        out->n++;
    }
    return qod_buf_puts(json, "]");
}

int qod_ports_parse(const cJSON *o, const char *what, qod_ports *out, qod_buf *json, char *err, size_t errcap)
{
    static const char *const keys[] = {"ranges", "ports", NULL};
    const char *bad = NULL;
    out->n = 0;
    const cJSON *ranges = cJSON_GetObjectItemCaseSensitive(o, "ranges");
    const cJSON *ports = cJSON_GetObjectItemCaseSensitive(o, "ports");
    int rc = cJSON_IsObject(o) && qod_json_only_keys(o, keys, &bad) && (ranges || ports) ? QOD_OK : QOD_ERR_INVALID;
    qod_buf_puts(json, "{");
    if (rc == QOD_OK && ranges)
        rc = parse_ranges(ranges, out, json);
    if (rc == QOD_OK && ports) {
        qod_buf_puts(json, ranges ? "," : "");
        rc = parse_port_list(ports, out, json);
    }
    if (rc != QOD_OK) {
        snprintf(err, errcap,
                 "%s must be {ranges: [{from, to}], ports: [...]} with ports 0..65535, from <= to, at most %d entries",
                 what, QOD_PORTS_MAX);
        return QOD_ERR_INVALID;
    }
    return qod_buf_puts(json, "}");
}

int qod_flows_read(const char *json, qod_flows *out, char *err, size_t errcap)
{
    memset(out, 0, sizeof *out);
    if (!json || !*json)
        return QOD_OK;
    cJSON *root = NULL;
    qod_buf scratch;
    qod_buf_init(&scratch, 16384);
    int rc = qod_json_parse(json, strlen(json), 8, &root, err, errcap);
    if (rc == QOD_OK && !cJSON_IsObject(root)) {
        snprintf(err, errcap, "the flow description is not a JSON object");
        rc = QOD_ERR_INVALID;
    }
    const cJSON *as = rc == QOD_OK ? cJSON_GetObjectItemCaseSensitive(root, "applicationServer") : NULL;
    const cJSON *dp = rc == QOD_OK ? cJSON_GetObjectItemCaseSensitive(root, "devicePorts") : NULL;
    const cJSON *sp = rc == QOD_OK ? cJSON_GetObjectItemCaseSensitive(root, "applicationServerPorts") : NULL;
    out->has_server = as && !cJSON_IsNull(as);
    out->has_device_ports = dp && !cJSON_IsNull(dp);
    out->has_server_ports = sp && !cJSON_IsNull(sp);
    if (rc == QOD_OK && out->has_server)
        rc = qod_app_server_parse(as, "applicationServer", &out->server, &scratch, err, errcap);
    if (rc == QOD_OK && out->has_device_ports)
        rc = qod_ports_parse(dp, "devicePorts", &out->device_ports, &scratch, err, errcap);
    if (rc == QOD_OK && out->has_server_ports)
        rc = qod_ports_parse(sp, "applicationServerPorts", &out->server_ports, &scratch, err, errcap);
    qod_buf_dispose(&scratch);
    cJSON_Delete(root);
    return rc;
}
