#include "net/nef_msg.h"

#include "qtest.h"
#include "util/buf.h"
#include "util/err.h"

#include <stdbool.h>
#include <string.h>

static const char *const ALL_EVENTS = "\"events\":[\"SUCCESSFUL_RESOURCES_ALLOCATION\",\"FAILED_RESOURCES_ALLOCATION\","
                                      "\"SESSION_TERMINATION\",\"QOS_GUARANTEED\",\"QOS_NOT_GUARANTEED\"]";

QTEST(flow_descriptions_with_server_and_ports)
{
    char dl[256], ul[256], err[128];
    const char *flows = "{\"applicationServer\":{\"ipv4Address\":\"192.0.2.0/24\"},\"devicePorts\":{\"ports\":[5000,"
                        "5002]},\"applicationServerPorts\":{\"ranges\":[{\"from\":80,\"to\":90}]}}";
    QT_EQ_INT(qod_nef_flow_descriptions("10.0.0.1", flows, dl, ul, sizeof dl, err, sizeof err), QOD_OK);
    QT_EQ_STR(dl, "permit out ip from 192.0.2.0/24 80-90 to 10.0.0.1 5000,5002");
    QT_EQ_STR(ul, "permit in ip from 10.0.0.1 5000,5002 to 192.0.2.0/24 80-90");
}

QTEST(flow_descriptions_without_flows_or_address)
{
    char dl[256], ul[256], err[128];
    QT_EQ_INT(qod_nef_flow_descriptions("", NULL, dl, ul, sizeof dl, err, sizeof err), QOD_OK);
    /* TS 29.214 clause 5.3.8: the keyword "assigned" shall not be used. */
    QT_EQ_STR(dl, "permit out ip from any to any");
    QT_EQ_STR(ul, "permit in ip from any to any");
}

QTEST(flow_descriptions_family_mismatch_is_unsupported)
{
    char dl[256], ul[256], err[128];
    const char *flows = "{\"applicationServer\":{\"ipv6Address\":\"2001:db8::1\"}}";
    QT_EQ_INT(qod_nef_flow_descriptions("10.0.0.1", flows, dl, ul, sizeof dl, err, sizeof err), QOD_ERR_UNSUPPORTED);
}

QTEST(subscription_prefers_ip_over_gpsi)
{
    char err[128];
    qod_buf b;
    qod_buf_init(&b, 0);
    qod_nef_sub_spec s = {"http://q/nef/v1/notifications/T", "10.0.0.1", "", "15550001", "QOS_L", NULL};
    int rc = qod_nef_subscription_body(&s, &b, err, sizeof err);
    bool ok = rc == QOD_OK && strstr(b.data, "\"ueIpv4Addr\":\"10.0.0.1\"") && !strstr(b.data, "gpsi") &&
              strstr(b.data, "\"supportedFeatures\":\"0\"") && strstr(b.data, "\"qosReference\":\"QOS_L\"") &&
              strstr(b.data, ALL_EVENTS) && strstr(b.data, "\"flowId\":1");
    qod_buf_dispose(&b);
    QT_TRUE(ok);
}

QTEST(subscription_gpsi_without_ip)
{
    char err[128];
    qod_buf b;
    qod_buf_init(&b, 0);
    qod_nef_sub_spec s = {"http://q/n/T", "", "", "15550001", "REF", NULL};
    int rc = qod_nef_subscription_body(&s, &b, err, sizeof err);
    bool ok = rc == QOD_OK && strstr(b.data, "\"gpsi\":\"msisdn-15550001\"") && !strstr(b.data, "ueIpv");
    qod_buf_dispose(&b);
    QT_TRUE(ok);
}

QTEST(subscription_needs_an_identifier)
{
    char err[128];
    qod_buf b;
    qod_buf_init(&b, 0);
    qod_nef_sub_spec s = {"http://q/n/T", "", "", "12", "REF", NULL};
    int rc = qod_nef_subscription_body(&s, &b, err, sizeof err);
    qod_buf_dispose(&b);
    QT_EQ_INT(rc, QOD_ERR_INVALID);
}

QTEST(notification_events_in_order)
{
    const char *body = "{\"transaction\":\"t\",\"eventReports\":[{\"event\":\"QOS_NOT_GUARANTEED\"},"
                       "{\"event\":\"SESSION_TERMINATION\"},{\"event\":\"PLMN_CHG\"}]}";
    qod_nef_notification n;
    char err[128];
    QT_EQ_INT(qod_nef_notification_parse(body, strlen(body), &n, err, sizeof err), QOD_OK);
    QT_EQ_INT(n.n, 3);
    QT_EQ_INT(n.ev[0], QOD_NEF_EV_QOS_NOT_GUARANTEED);
    QT_EQ_INT(n.ev[1], QOD_NEF_EV_SESSION_TERMINATION);
    QT_EQ_INT(n.ev[2], QOD_NEF_EV_OTHER);
}

QTEST(notification_malformed_is_invalid)
{
    static const char *const bad[] = {
        "",
        "{",
        "[]",
        "{\"eventReports\":[{\"event\":\"X\"}]}",
        "{\"transaction\":\"t\",\"eventReports\":[]}",
        "{\"transaction\":\"t\",\"eventReports\":[{\"event\":1}]}",
        "{\"transaction\":\"t\",\"transaction\":\"u\",\"eventReports\":[{\"event\":\"X\"}]}"};
    qod_nef_notification n;
    char err[128];
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        QT_EQ_INT(qod_nef_notification_parse(bad[i], strlen(bad[i]), &n, err, sizeof err), QOD_ERR_INVALID);
}

QTEST(notification_names_its_subscription)
{
    const char *body = "{\"transaction\":\"http://nef:8/3gpp-as-session-with-qos/v1/scs/subscriptions/sub-7/\","
                       "\"eventReports\":[{\"event\":\"QOS_GUARANTEED\"}]}";
    qod_nef_notification n;
    char err[128];
    QT_EQ_INT(qod_nef_notification_parse(body, strlen(body), &n, err, sizeof err), QOD_OK);
    QT_EQ_STR(n.subscription, "sub-7");
    body = "{\"transaction\":\"http://nef:8\",\"eventReports\":[{\"event\":\"QOS_GUARANTEED\"}]}";
    QT_EQ_INT(qod_nef_notification_parse(body, strlen(body), &n, err, sizeof err), QOD_OK);
    QT_EQ_STR(n.subscription, ""); /* no path: nothing to compare */
}

QTEST(resource_id_is_the_last_path_segment)
{
    char id[16];
    QT_TRUE(qod_nef_resource_id("http://h/a/subscriptions/42?x=/y#z", id, sizeof id));
    QT_EQ_STR(id, "42");
    QT_TRUE(qod_nef_resource_id("/a/b%2Fc//", id, sizeof id));
    QT_EQ_STR(id, "b%2Fc");
    QT_TRUE(qod_nef_resource_id("sub1", id, sizeof id));
    QT_EQ_STR(id, "sub1");
    QT_TRUE(!qod_nef_resource_id("http://host", id, sizeof id));
    QT_TRUE(!qod_nef_resource_id("http://host/", id, sizeof id));
    QT_TRUE(!qod_nef_resource_id("", id, sizeof id));
    QT_TRUE(!qod_nef_resource_id("/a/b c", id, sizeof id));
    QT_TRUE(!qod_nef_resource_id("/a/0123456789abcdef", id, sizeof id)); /* does not fit */
}

QTEST(a_terminal_event_past_the_kept_reports_is_kept)
{
    qod_buf b;
    qod_buf_init(&b, 0);
    qod_buf_puts(&b, "{\"transaction\":\"t\",\"eventReports\":[");
    for (int i = 0; i < QOD_NEF_REPORTS_MAX + 8; i++)
        qod_buf_puts(&b, "{\"event\":\"QOS_GUARANTEED\"},");
    qod_buf_puts(&b, "{\"event\":\"SESSION_TERMINATION\"},{\"event\":\"QOS_GUARANTEED\"}]}");
    qod_nef_notification n;
    char err[128];
    int rc = qod_nef_notification_parse(b.data, b.len, &n, err, sizeof err);
    qod_buf_dispose(&b);
    QT_EQ_INT(rc, QOD_OK);
    QT_EQ_INT(n.n, QOD_NEF_REPORTS_MAX);
    QT_EQ_INT(n.ev[QOD_NEF_REPORTS_MAX - 1], QOD_NEF_EV_SESSION_TERMINATION);
}

QTEST(problem_text_is_cause_and_detail_made_printable)
{
    char out[64];
    const char *b = "{\"status\":403,\"cause\":\"QUOTA_EXCEEDED\",\"detail\":\"too \\\"many\\\"\\nsubs\"}";
    QT_TRUE(qod_nef_problem_text(b, strlen(b), out, sizeof out));
    QT_EQ_STR(out, "QUOTA_EXCEEDED: too ?many??subs");
    b = "{\"cause\":\"X\"}";
    QT_TRUE(qod_nef_problem_text(b, strlen(b), out, sizeof out));
    QT_EQ_STR(out, "X");
    QT_TRUE(!qod_nef_problem_text("{}", 2, out, sizeof out) && out[0] == '\0');
    QT_TRUE(!qod_nef_problem_text("<html>", 6, out, sizeof out));
    QT_TRUE(!qod_nef_problem_text("[1]", 3, out, sizeof out));
}

static void count_listed(void *arg, const qod_nef_listed *s)
{
    int *n = arg;
    if (strcmp(s->self, "http://nef/s/1") == 0 && strcmp(s->ue_ipv4, "10.0.0.1") == 0)
        (*n)++;
}

QTEST(list_parse_calls_back_per_object)
{
    const char *body = "[{\"self\":\"http://nef/s/1\",\"ueIpv4Addr\":\"10.0.0.1\"},3,{\"self\":\"x\"}]";
    int n = 0;
    char err[128];
    QT_EQ_INT(qod_nef_list_parse(body, strlen(body), count_listed, &n, err, sizeof err), QOD_OK);
    QT_EQ_INT(n, 1);
    QT_EQ_INT(qod_nef_list_parse("{}", 2, count_listed, &n, err, sizeof err), QOD_ERR_INVALID);
}

QTEST(token_of_accepts_only_our_prefix)
{
    char t[64];
    QT_TRUE(qod_nef_token_of("http://q/nef/v1/notifications/abc_-9", "http://q/nef/v1/notifications/", t, sizeof t));
    QT_EQ_STR(t, "abc_-9");
    QT_TRUE(!qod_nef_token_of("http://other/nef/v1/notifications/abc", "http://q/nef/v1/notifications/", t, sizeof t));
    QT_TRUE(!qod_nef_token_of("http://q/nef/v1/notifications/a/b", "http://q/nef/v1/notifications/", t, sizeof t));
    QT_TRUE(!qod_nef_token_of("http://q/nef/v1/notifications/", "http://q/nef/v1/notifications/", t, sizeof t));
}

QTEST_MAIN(QT_CASE(flow_descriptions_with_server_and_ports), QT_CASE(flow_descriptions_without_flows_or_address),
           QT_CASE(flow_descriptions_family_mismatch_is_unsupported), QT_CASE(subscription_prefers_ip_over_gpsi),
           QT_CASE(subscription_gpsi_without_ip), QT_CASE(subscription_needs_an_identifier),
           QT_CASE(notification_events_in_order), QT_CASE(notification_malformed_is_invalid),
           QT_CASE(list_parse_calls_back_per_object), QT_CASE(token_of_accepts_only_our_prefix),
           QT_CASE(notification_names_its_subscription), QT_CASE(resource_id_is_the_last_path_segment),
           QT_CASE(a_terminal_event_past_the_kept_reports_is_kept),
           QT_CASE(problem_text_is_cause_and_detail_made_printable))
