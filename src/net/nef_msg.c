#include "net/nef_msg.h"

#include "core/flows.h"
#include "util/err.h"
#include "util/json.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>

#define TOKEN_MAX 63

static const char *const event_names[QOD_NEF_EV_COUNT] = {"SUCCESSFUL_RESOURCES_ALLOCATION",
                                                          "FAILED_RESOURCES_ALLOCATION",
                                                          "SESSION_TERMINATION",
                                                          "QOS_GUARANTEED",
                                                          "QOS_NOT_GUARANTEED",
                                                          "OTHER"};

const char *qod_nef_event_name(qod_nef_event ev)
{
    return ev >= 0 && ev < QOD_NEF_EV_COUNT ? event_names[ev] : "OTHER";
}

static bool has(const char *s)
{
    return s && *s;
}

/* One IPFilterRule port list ("p" or "a-b", comma-separated, no spaces), "" when absent. */
static int ports_text(bool has_ports, const qod_ports *p, const char *key, char *out, size_t cap, char *err,
                      size_t errcap)
{
    out[0] = '\0';
    size_t len = 0;
    int rc = QOD_OK;
    for (int i = 0; has_ports && rc == QOD_OK && i < p->n; i++) {
        int k = p->from[i] == p->to[i] ? snprintf(out + len, cap - len, "%s%u", i ? "," : "", p->from[i])
                                       : snprintf(out + len, cap - len, "%s%u-%u", i ? "," : "", p->from[i], p->to[i]);
        if (k < 0 || (size_t)k >= cap - len) {
            snprintf(err, errcap, "%s has too many ports for a flow description", key);
            rc = QOD_ERR_UNSUPPORTED;
        } else {
            len += (size_t)k;
        }
    }
    return rc;
}

/* The application server address matching the device's family: "a.b.c.d[/n]", "x::y[/n]" or "any". */
static int server_text(const qod_flows *f, const char *ue_addr, char *out, size_t cap, char *err, size_t errcap)
{
    snprintf(out, cap, "any");
    if (!f->has_server)
        return QOD_OK;
    const qod_app_server *as = &f->server;
    bool v6 = has(ue_addr) && strchr(ue_addr, ':');
    bool v4 = has(ue_addr) && !v6;
    if ((v4 || !has(ue_addr)) && as->ipv4_prefix >= 0) {
        if (as->ipv4_prefix == 32)
            snprintf(out, cap, "%s", as->ipv4);
        else
            snprintf(out, cap, "%s/%d", as->ipv4, as->ipv4_prefix);
    } else if ((v6 || !has(ue_addr)) && as->ipv6_prefix >= 0) {
        if (as->ipv6_prefix == 128)
            snprintf(out, cap, "%s", as->ipv6);
        else
            snprintf(out, cap, "%s/%d", as->ipv6, as->ipv6_prefix);
    } else {
        snprintf(err, errcap, "the application server has no %s address for the device", v6 ? "IPv6" : "IPv4");
        return QOD_ERR_UNSUPPORTED;
    }
    return QOD_OK;
}

int qod_nef_flow_descriptions(const char *ue_addr, const char *flows, char *dl, char *ul, size_t cap, char *err,
                              size_t errcap)
{
    char as[64] = "any", asp[512] = "", uep[512] = "";
    const char *ue = has(ue_addr) ? ue_addr : "any";
    qod_flows f;
    int rc = qod_flows_read(flows, &f, err, errcap);
    rc = rc ? rc : server_text(&f, ue_addr, as, sizeof as, err, errcap);
    rc = rc ? rc
            : ports_text(f.has_server_ports, &f.server_ports, "applicationServerPorts", asp, sizeof asp, err, errcap);
    rc = rc ? rc : ports_text(f.has_device_ports, &f.device_ports, "devicePorts", uep, sizeof uep, err, errcap);
    if (rc != QOD_OK)
        return rc;
    int a =
        snprintf(dl, cap, "permit out ip from %s%s%s to %s%s%s", as, *asp ? " " : "", asp, ue, *uep ? " " : "", uep);
    int b = snprintf(ul, cap, "permit in ip from %s%s%s to %s%s%s", ue, *uep ? " " : "", uep, as, *asp ? " " : "", asp);
    if (a < 0 || b < 0 || (size_t)a >= cap || (size_t)b >= cap) {
        snprintf(err, errcap, "the flow description is too long");
        return QOD_ERR_UNSUPPORTED;
    }
    return QOD_OK;
}

static bool msisdn_ok(const char *s)
{
    size_t n = strlen(s);
    return n >= 5 && n <= 15 && strspn(s, "0123456789") == n;
}

int qod_nef_subscription_body(const qod_nef_sub_spec *spec, qod_buf *out, char *err, size_t errcap)
{
    char dl[1200], ul[1200];
    const char *ue = has(spec->ue_ipv4) ? spec->ue_ipv4 : has(spec->ue_ipv6) ? spec->ue_ipv6 : "";
    if (!*ue && !(has(spec->gpsi_msisdn) && msisdn_ok(spec->gpsi_msisdn))) {
        snprintf(err, errcap, "the device has neither an IP address nor an MSISDN");
        return QOD_ERR_INVALID;
    }
    if (!has(spec->notification_destination) || !has(spec->qos_reference)) {
        snprintf(err, errcap, "notificationDestination and qosReference are required");
        return QOD_ERR_INVALID;
    }
    int rc = qod_nef_flow_descriptions(ue, spec->flows, dl, ul, sizeof dl, err, errcap);
    if (rc != QOD_OK)
        return rc;
    /* supportedFeatures "0": no optional feature of the API is used (TS 29.122 clause 5.2.7, feature negotiation). */
    rc = qod_buf_puts(out, "{\"notificationDestination\":");
    rc = rc ? rc : qod_buf_json_str(out, spec->notification_destination);
    rc = rc ? rc : qod_buf_puts(out, ",\"supportedFeatures\":\"0\"");
    if (has(spec->ue_ipv4)) {
        rc = rc ? rc : qod_buf_puts(out, ",\"ueIpv4Addr\":");
        rc = rc ? rc : qod_buf_json_str(out, spec->ue_ipv4);
    } else if (has(spec->ue_ipv6)) {
        rc = rc ? rc : qod_buf_puts(out, ",\"ueIpv6Addr\":");
        rc = rc ? rc : qod_buf_json_str(out, spec->ue_ipv6);
    } else {
        rc = rc ? rc : qod_buf_printf(out, ",\"gpsi\":\"msisdn-%s\"", spec->gpsi_msisdn);
    }
    rc = rc ? rc : qod_buf_puts(out, ",\"qosReference\":");
    rc = rc ? rc : qod_buf_json_str(out, spec->qos_reference);
    rc = rc ? rc : qod_buf_puts(out, ",\"flowInfo\":[{\"flowId\":1,\"flowDescriptions\":[");
    rc = rc ? rc : qod_buf_json_str(out, dl);
    rc = rc ? rc : qod_buf_puts(out, ",");
    rc = rc ? rc : qod_buf_json_str(out, ul);
    rc = rc ? rc : qod_buf_puts(out, "]}],\"events\":[");
    for (int i = 0; rc == QOD_OK && i < QOD_NEF_EV_OTHER; i++)
        rc = qod_buf_printf(out, "%s\"%s\"", i ? "," : "", event_names[i]);
    rc = rc ? rc : qod_buf_puts(out, "]}");
    if (rc != QOD_OK)
        snprintf(err, errcap, "cannot build the subscription: %s", qod_strerror(rc));
    return rc;
}

static qod_nef_event event_of(const char *s)
{
    for (int i = 0; i < QOD_NEF_EV_OTHER; i++)
        if (strcmp(s, event_names[i]) == 0)
            return (qod_nef_event)i;
    return QOD_NEF_EV_OTHER;
}

static bool terminal(qod_nef_event ev)
{
    return ev == QOD_NEF_EV_FAILED_RESOURCES_ALLOCATION || ev == QOD_NEF_EV_SESSION_TERMINATION;
}

bool qod_nef_resource_id(const char *uri, char *out, size_t cap)
{
    size_t end = strcspn(uri, "?#");
    while (end && uri[end - 1] == '/')
        end--;
    size_t start = end;
    while (start && uri[start - 1] != '/')
        start--;
    size_t n = end - start;
    const char *scheme_end = strstr(uri, "://");
    if (!n || n >= cap || (scheme_end && uri + start <= scheme_end + 3))
        return false; /* no segment, too long, or the authority of "scheme://host" */
    for (size_t i = start; i < end; i++)
        if (!isalnum((unsigned char)uri[i]) && !strchr("-._~%", uri[i]))
            return false;
    memcpy(out, uri + start, n);
    out[n] = '\0';
    return true;
}

int qod_nef_notification_parse(const char *body, size_t len, qod_nef_notification *out, char *err, size_t errcap)
{
    cJSON *root = NULL;
    const char *transaction = NULL;
    out->n = 0;
    out->subscription[0] = '\0';
    if (len > QOD_NEF_NOTIFICATION_MAX) {
        snprintf(err, errcap, "notification larger than %d bytes", QOD_NEF_NOTIFICATION_MAX);
        return QOD_ERR_INVALID;
    }
    int rc = qod_json_parse(body, len, 8, &root, err, errcap);
    if (rc != QOD_OK) {
        rc = QOD_ERR_INVALID;
    } else if (!cJSON_IsObject(root) || qod_json_str(root, "transaction", &transaction) != QOD_OK) {
        snprintf(err, errcap, "UserPlaneNotificationData needs a string transaction");
        rc = QOD_ERR_INVALID;
    }
    const cJSON *reports = rc == QOD_OK ? cJSON_GetObjectItemCaseSensitive(root, "eventReports") : NULL;
    if (rc == QOD_OK && (!cJSON_IsArray(reports) || !reports->child)) {
        snprintf(err, errcap, "eventReports must be a non-empty array");
        rc = QOD_ERR_INVALID;
    }
    for (const cJSON *r = reports ? reports->child : NULL; rc == QOD_OK && r; r = r->next) {
        const char *ev = NULL;
        if (!cJSON_IsObject(r) || qod_json_str(r, "event", &ev) != QOD_OK) {
            snprintf(err, errcap, "each event report needs a string event");
            rc = QOD_ERR_INVALID;
        } else if (out->n < QOD_NEF_REPORTS_MAX) {
            out->ev[out->n++] = event_of(ev);
        } else if (terminal(event_of(ev))) {
            out->ev[QOD_NEF_REPORTS_MAX - 1] = event_of(ev); /* the end of the session is never dropped */
        }
    }
    if (rc == QOD_OK && !qod_nef_resource_id(transaction, out->subscription, sizeof out->subscription))
        out->subscription[0] = '\0';
    if (rc != QOD_OK)
        out->n = 0;
    cJSON_Delete(root);
    return rc;
}

static const char *str_or_empty(const cJSON *o, const char *key)
{
    const char *s = NULL;
    return qod_json_str(o, key, &s) == QOD_OK ? s : "";
}

bool qod_nef_problem_text(const char *body, size_t len, char *out, size_t cap)
{
    cJSON *root = NULL;
    char err[64];
    out[0] = '\0';
    if (!cap || len > QOD_NEF_NOTIFICATION_MAX || qod_json_parse(body, len, 4, &root, err, sizeof err) != QOD_OK)
        return false;
    const char *cause = cJSON_IsObject(root) ? str_or_empty(root, "cause") : "";
    const char *detail = cJSON_IsObject(root) ? str_or_empty(root, "detail") : "";
    snprintf(out, cap, "%s%s%s", cause, *cause && *detail ? ": " : "", detail);
    for (char *p = out; *p; p++)
        if (*p < 0x20 || *p > 0x7e || *p == '"' || *p == '\\')
            *p = '?';
    cJSON_Delete(root);
    return out[0] != '\0';
}

int qod_nef_list_parse(const char *body, size_t len, void (*fn)(void *arg, const qod_nef_listed *s), void *arg,
                       char *err, size_t errcap)
{
    cJSON *root = NULL;
    if (len > QOD_NEF_LIST_MAX) {
        snprintf(err, errcap, "subscription list larger than %u bytes", QOD_NEF_LIST_MAX);
        return QOD_ERR_INVALID;
    }
    int rc = qod_json_parse(body, len, 16, &root, err, errcap);
    if (rc == QOD_OK && !cJSON_IsArray(root)) {
        snprintf(err, errcap, "the subscription list is not an array");
        rc = QOD_ERR_INVALID;
    } else if (rc != QOD_OK) {
        rc = QOD_ERR_INVALID;
    }
    for (const cJSON *o = rc == QOD_OK ? root->child : NULL; o; o = o->next) {
        if (!cJSON_IsObject(o))
            continue;
        qod_nef_listed s = {str_or_empty(o, "self"),       str_or_empty(o, "notificationDestination"),
                            str_or_empty(o, "ueIpv4Addr"), str_or_empty(o, "ueIpv6Addr"),
                            str_or_empty(o, "gpsi"),       str_or_empty(o, "qosReference")};
        fn(arg, &s);
    }
    cJSON_Delete(root);
    return rc;
}

bool qod_nef_token_of(const char *url, const char *prefix, char *out, size_t cap)
{
    size_t pl = strlen(prefix);
    if (strncmp(url, prefix, pl) != 0)
        return false;
    const char *t = url + pl;
    size_t n = strlen(t);
    static const char b64url[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    if (n == 0 || n > TOKEN_MAX || n >= cap || strspn(t, b64url) != n)
        return false;
    memcpy(out, t, n + 1);
    return true;
}
