#include "core/flows.h"

#include "qtest.h"
#include "util/err.h"

#include <stdbool.h>
#include <stdio.h>
#include <string.h>

/* The outcome of one parse: rc, the normalised JSON (on success) and the error text. */
typedef struct {
    int rc;
    char json[2048];
    char err[256];
    qod_app_server as;
    qod_ports ports;
} result;

static void run_parse(const char *text, bool ports, result *r)
{
    qod_buf b;
    qod_buf_init(&b, 0);
    memset(r, 0, sizeof *r);
    cJSON *o = cJSON_Parse(text);
    if (!o) {
        r->rc = -1;
        snprintf(r->err, sizeof r->err, "test JSON does not parse");
    } else if (ports) {
        r->rc = qod_ports_parse(o, "devicePorts", &r->ports, &b, r->err, sizeof r->err);
    } else {
        r->rc = qod_app_server_parse(o, "applicationServer", &r->as, &b, r->err, sizeof r->err);
    }
    if (r->rc == QOD_OK)
        snprintf(r->json, sizeof r->json, "%s", b.data ? b.data : "");
    cJSON_Delete(o);
    qod_buf_dispose(&b);
}

static void server(const char *text, result *r)
{
    run_parse(text, false, r);
}

static void ports(const char *text, result *r)
{
    run_parse(text, true, r);
}

/* {"ports":[first, first+1, …]} with n entries, into out. */
static void port_list(char *out, size_t cap, int n)
{
    size_t len = (size_t)snprintf(out, cap, "{\"ports\":[");
    for (int i = 0; i < n && len < cap; i++)
        len += (size_t)snprintf(out + len, cap - len, "%s%d", i ? "," : "", 1000 + i);
    if (len < cap)
        snprintf(out + len, cap - len, "]}");
}

QTEST(server_ipv4_subnet)
{
    result r;
    server("{\"ipv4Address\":\"198.51.100.0/24\"}", &r);
    QT_EQ_INT(r.rc, QOD_OK);
    QT_EQ_STR(r.as.ipv4, "198.51.100.0");
    QT_EQ_INT(r.as.ipv4_prefix, 24);
    QT_EQ_INT(r.as.ipv6_prefix, -1);
    QT_EQ_STR(r.json, "{\"ipv4Address\":\"198.51.100.0/24\"}");
}

QTEST(server_ipv4_single_address)
{
    result r;
    server("{\"ipv4Address\":\"1.2.3.4\"}", &r);
    QT_EQ_INT(r.rc, QOD_OK);
    QT_EQ_INT(r.as.ipv4_prefix, 32);
    QT_EQ_STR(r.json, "{\"ipv4Address\":\"1.2.3.4\"}");
}

QTEST(server_ipv4_explicit_32_kept)
{
    result r;
    server("{\"ipv4Address\":\"1.2.3.4/32\"}", &r);
    QT_EQ_INT(r.rc, QOD_OK);
    QT_EQ_STR(r.json, "{\"ipv4Address\":\"1.2.3.4/32\"}");
}

QTEST(server_ipv4_mask_33_rejected)
{
    result r;
    server("{\"ipv4Address\":\"198.51.100.0/33\"}", &r);
    QT_EQ_INT(r.rc, QOD_ERR_INVALID);
    QT_TRUE(strstr(r.err, "applicationServer.ipv4Address") != NULL);
}

QTEST(server_ipv4_malformed_masks_rejected)
{
    static const char *const bad[] = {"{\"ipv4Address\":\"1.2.3.4/\"}",      "{\"ipv4Address\":\"1.2.3.4/-1\"}",
                                      "{\"ipv4Address\":\"1.2.3.4/2a\"}",    "{\"ipv4Address\":\"/24\"}",
                                      "{\"ipv4Address\":\"1.2.3.4/00024\"}", "{\"ipv4Address\":\"1.2.3/24\"}"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        result r;
        server(bad[i], &r);
        QT_EQ_INT(r.rc, QOD_ERR_INVALID);
    }
}

QTEST(server_ipv4_given_ipv6_rejected)
{
    result r;
    server("{\"ipv4Address\":\"2001:db8::1\"}", &r);
    QT_EQ_INT(r.rc, QOD_ERR_INVALID);
}

QTEST(server_ipv6_with_prefix_normalised)
{
    result r;
    server("{\"ipv6Address\":\"2001:DB8:0:0::/64\"}", &r);
    QT_EQ_INT(r.rc, QOD_OK);
    QT_EQ_INT(r.as.ipv6_prefix, 64);
    QT_EQ_INT(r.as.ipv4_prefix, -1);
    QT_EQ_STR(r.json, "{\"ipv6Address\":\"2001:db8::/64\"}");
}

QTEST(server_ipv6_single_address)
{
    result r;
    server("{\"ipv6Address\":\"2001:db8:0:0:0:0:0:1\"}", &r);
    QT_EQ_INT(r.rc, QOD_OK);
    QT_EQ_INT(r.as.ipv6_prefix, 128);
    QT_EQ_STR(r.json, "{\"ipv6Address\":\"2001:db8::1\"}");
}

QTEST(server_ipv6_prefix_129_rejected)
{
    result r;
    server("{\"ipv6Address\":\"2001:db8::/129\"}", &r);
    QT_EQ_INT(r.rc, QOD_ERR_INVALID);
    QT_TRUE(strstr(r.err, "applicationServer.ipv6Address") != NULL);
}

QTEST(server_both_families)
{
    result r;
    server("{\"ipv6Address\":\"2001:db8::1\",\"ipv4Address\":\"198.51.100.0/24\"}", &r);
    QT_EQ_INT(r.rc, QOD_OK);
    QT_EQ_STR(r.json, "{\"ipv4Address\":\"198.51.100.0/24\",\"ipv6Address\":\"2001:db8::1\"}");
}

QTEST(server_unknown_member_rejected)
{
    result r;
    server("{\"ipv4Address\":\"1.2.3.4\",\"fqdn\":\"example.com\"}", &r);
    QT_EQ_INT(r.rc, QOD_ERR_INVALID);
}

QTEST(server_empty_object_rejected)
{
    result r;
    server("{}", &r);
    QT_EQ_INT(r.rc, QOD_ERR_INVALID);
    QT_TRUE(strstr(r.err, "applicationServer") != NULL);
}

QTEST(server_only_nulls_rejected)
{
    result r;
    server("{\"ipv4Address\":null}", &r);
    QT_EQ_INT(r.rc, QOD_ERR_INVALID);
    QT_TRUE(strstr(r.err, "needs ipv4Address or ipv6Address") != NULL);
}

QTEST(server_not_object_rejected)
{
    result r;
    server("\"1.2.3.4\"", &r);
    QT_EQ_INT(r.rc, QOD_ERR_INVALID);
    server("{\"ipv4Address\":16909060}", &r);
    QT_EQ_INT(r.rc, QOD_ERR_INVALID);
}

QTEST(ports_ranges_and_list)
{
    result r;
    ports("{\"ranges\":[{\"from\":5010,\"to\":5020},{\"to\":80,\"from\":80}],\"ports\":[5060,5070]}", &r);
    QT_EQ_INT(r.rc, QOD_OK);
    QT_EQ_INT(r.ports.n, 4);
    QT_EQ_INT(r.ports.from[0], 5010);
    QT_EQ_INT(r.ports.to[0], 5020);
    QT_EQ_INT(r.ports.from[3], 5070);
    QT_EQ_INT(r.ports.to[3], 5070);
    QT_EQ_STR(r.json, "{\"ranges\":[{\"from\":5010,\"to\":5020},{\"from\":80,\"to\":80}],\"ports\":[5060,5070]}");
}

QTEST(ports_output_order_is_normalised)
{
    /* "ports" before "ranges" in the input still comes out ranges first, and whitespace is dropped. */
    result r;
    ports("{ \"ports\" : [ 0 , 65535 ] , \"ranges\" : [ { \"from\" : 1 , \"to\" : 2 } ] }", &r);
    QT_EQ_INT(r.rc, QOD_OK);
    QT_EQ_STR(r.json, "{\"ranges\":[{\"from\":1,\"to\":2}],\"ports\":[0,65535]}");
}

QTEST(ports_list_only)
{
    result r;
    ports("{\"ports\":[443]}", &r);
    QT_EQ_INT(r.rc, QOD_OK);
    QT_EQ_STR(r.json, "{\"ports\":[443]}");
}

QTEST(ports_from_greater_than_to_rejected)
{
    result r;
    ports("{\"ranges\":[{\"from\":5020,\"to\":5010}]}", &r);
    QT_EQ_INT(r.rc, QOD_ERR_INVALID);
    QT_TRUE(strstr(r.err, "devicePorts") != NULL);
}

QTEST(ports_65536_rejected)
{
    result r;
    ports("{\"ports\":[65536]}", &r);
    QT_EQ_INT(r.rc, QOD_ERR_INVALID);
    ports("{\"ranges\":[{\"from\":1,\"to\":65536}]}", &r);
    QT_EQ_INT(r.rc, QOD_ERR_INVALID);
}

QTEST(ports_negative_rejected)
{
    result r;
    ports("{\"ports\":[-1]}", &r);
    QT_EQ_INT(r.rc, QOD_ERR_INVALID);
}

QTEST(ports_fraction_rejected)
{
    result r;
    ports("{\"ports\":[1.5]}", &r);
    QT_EQ_INT(r.rc, QOD_ERR_INVALID);
    ports("{\"ranges\":[{\"from\":1.5,\"to\":2}]}", &r);
    QT_EQ_INT(r.rc, QOD_ERR_INVALID);
}

QTEST(ports_string_rejected)
{
    result r;
    ports("{\"ports\":[\"80\"]}", &r);
    QT_EQ_INT(r.rc, QOD_ERR_INVALID);
}

QTEST(ports_empty_arrays_rejected)
{
    result r;
    ports("{\"ports\":[]}", &r);
    QT_EQ_INT(r.rc, QOD_ERR_INVALID);
    ports("{\"ranges\":[]}", &r);
    QT_EQ_INT(r.rc, QOD_ERR_INVALID);
    ports("{\"ranges\":[],\"ports\":[80]}", &r);
    QT_EQ_INT(r.rc, QOD_ERR_INVALID);
}

QTEST(ports_empty_object_rejected)
{
    result r;
    ports("{}", &r);
    QT_EQ_INT(r.rc, QOD_ERR_INVALID);
}

QTEST(ports_unknown_member_rejected)
{
    result r;
    ports("{\"ports\":[80],\"protocol\":\"TCP\"}", &r);
    QT_EQ_INT(r.rc, QOD_ERR_INVALID);
    ports("{\"ranges\":[{\"from\":1,\"to\":2,\"step\":1}]}", &r);
    QT_EQ_INT(r.rc, QOD_ERR_INVALID);
}

QTEST(ports_range_missing_bound_rejected)
{
    result r;
    ports("{\"ranges\":[{\"from\":1}]}", &r);
    QT_EQ_INT(r.rc, QOD_ERR_INVALID);
}

QTEST(ports_not_object_or_array_rejected)
{
    result r;
    ports("[80]", &r);
    QT_EQ_INT(r.rc, QOD_ERR_INVALID);
    ports("{\"ports\":80}", &r);
    QT_EQ_INT(r.rc, QOD_ERR_INVALID);
}

QTEST(ports_64_entries_accepted)
{
    char text[1024];
    result r;
    port_list(text, sizeof text, QOD_PORTS_MAX);
    ports(text, &r);
    QT_EQ_INT(r.rc, QOD_OK);
    QT_EQ_INT(r.ports.n, QOD_PORTS_MAX);
}

QTEST(ports_65_entries_rejected)
{
    char text[1024];
    result r;
    port_list(text, sizeof text, QOD_PORTS_MAX + 1);
    ports(text, &r);
    QT_EQ_INT(r.rc, QOD_ERR_INVALID);
}

QTEST(ports_64_ranges_plus_one_port_rejected)
{
    /* The limit counts ranges and single ports together. */
    char text[4096];
    size_t len = (size_t)snprintf(text, sizeof text, "{\"ranges\":[");
    for (int i = 0; i < QOD_PORTS_MAX; i++)
        len += (size_t)snprintf(text + len, sizeof text - len, "%s{\"from\":%d,\"to\":%d}", i ? "," : "", i, i);
    snprintf(text + len, sizeof text - len, "],\"ports\":[9999]}");
    result r;
    ports(text, &r);
    QT_EQ_INT(r.rc, QOD_ERR_INVALID);
}

QTEST_MAIN(QT_CASE(server_ipv4_subnet), QT_CASE(server_ipv4_single_address), QT_CASE(server_ipv4_explicit_32_kept),
           QT_CASE(server_ipv4_mask_33_rejected), QT_CASE(server_ipv4_malformed_masks_rejected),
           QT_CASE(server_ipv4_given_ipv6_rejected), QT_CASE(server_ipv6_with_prefix_normalised),
           QT_CASE(server_ipv6_single_address), QT_CASE(server_ipv6_prefix_129_rejected), QT_CASE(server_both_families),
           QT_CASE(server_unknown_member_rejected), QT_CASE(server_empty_object_rejected),
           QT_CASE(server_only_nulls_rejected), QT_CASE(server_not_object_rejected), QT_CASE(ports_ranges_and_list),
           QT_CASE(ports_output_order_is_normalised), QT_CASE(ports_list_only),
           QT_CASE(ports_from_greater_than_to_rejected), QT_CASE(ports_65536_rejected),
           QT_CASE(ports_negative_rejected), QT_CASE(ports_fraction_rejected), QT_CASE(ports_string_rejected),
           QT_CASE(ports_empty_arrays_rejected), QT_CASE(ports_empty_object_rejected),
           QT_CASE(ports_unknown_member_rejected), QT_CASE(ports_range_missing_bound_rejected),
           QT_CASE(ports_not_object_or_array_rejected), QT_CASE(ports_64_entries_accepted),
           QT_CASE(ports_65_entries_rejected), QT_CASE(ports_64_ranges_plus_one_port_rejected))
