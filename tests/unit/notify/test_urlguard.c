#include "notify/urlguard.h"
#include "util/err.h"

#include "qtest.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>

/* A sockaddr (IPv4 or IPv6, by the text's shape) for an address literal; no connection is ever made. */
static const struct sockaddr *addr_of(const char *text, struct sockaddr_storage *ss)
{
    memset(ss, 0, sizeof *ss);
    if (strchr(text, ':')) {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons(443);
        if (inet_pton(AF_INET6, text, &s6->sin6_addr) != 1)
            return NULL;
    } else {
        struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
        s4->sin_family = AF_INET;
        s4->sin_port = htons(443);
        if (inet_pton(AF_INET, text, &s4->sin_addr) != 1)
            return NULL;
    }
    return (const struct sockaddr *)ss;
}

/* 1 refused, 0 allowed, -1 the literal does not parse (a test bug). */
static int refused(const char *text, bool sandbox, const qod_cidrs *allow, const char **why)
{
    struct sockaddr_storage ss;
    const struct sockaddr *sa = addr_of(text, &ss);
    if (!sa)
        return -1;
    const char *w = qod_addr_refusal(sa, sandbox, allow);
    if (why)
        *why = w;
    return w != NULL;
}

static const char *const always_refused[] = {
    "10.0.0.1",
    "10.255.255.255",
    "172.16.0.1",
    "172.31.255.254",
    "192.168.1.1",
    "169.254.169.254",
    "169.254.1.1",
    "100.64.0.1",
    "100.127.255.254",
    "224.0.0.1",
    "239.255.255.250",
    "0.0.0.0",
    "0.1.2.3",
    "255.255.255.255",
    "240.0.0.1",
    "fe80::1",
    "fd00::1",
    "fc00::1",
    "ff02::1",
    "::",
    "::ffff:10.0.0.1",
    "::ffff:192.168.0.1",
    "::ffff:169.254.169.254",
    "::ffff:0.0.0.0",
    "fd00:ec2::254",
};

static const char *const public_addrs[] = {
    "8.8.8.8",       "1.1.1.1",     "172.32.0.1",   "172.15.255.254",       "100.128.0.1",    "11.0.0.1",
    "9.255.255.255", "192.169.0.1", "2001:4860::1", "2606:4700:4700::1111", "::ffff:8.8.8.8",
};

QTEST(addr_refuses_private_linklocal_metadata_multicast_unspecified_for_everyone)
{
    for (size_t i = 0; i < sizeof always_refused / sizeof always_refused[0]; i++) {
        const char *why = NULL;
        int live = refused(always_refused[i], false, NULL, &why);
        if (live != 1)
            QT_FAIL_("%s: live refusal = %d, expected refused", always_refused[i], live);
        if (!why || !*why)
            QT_FAIL_("%s: refusal without a reason", always_refused[i]);
        int sbx = refused(always_refused[i], true, NULL, NULL);
        if (sbx != 1)
            QT_FAIL_("%s: sandbox refusal = %d, expected refused", always_refused[i], sbx);
    }
}

QTEST(addr_allows_public_addresses)
{
    for (size_t i = 0; i < sizeof public_addrs / sizeof public_addrs[0]; i++) {
        const char *why = NULL;
        int live = refused(public_addrs[i], false, NULL, &why);
        if (live != 0)
            QT_FAIL_("%s: live refusal = %d (%s), expected allowed", public_addrs[i], live, why ? why : "");
        int sbx = refused(public_addrs[i], true, NULL, &why);
        if (sbx != 0)
            QT_FAIL_("%s: sandbox refusal = %d (%s), expected allowed", public_addrs[i], sbx, why ? why : "");
    }
}

QTEST(addr_loopback_refused_for_live_allowed_for_sandbox)
{
    static const char *const loop[] = {"127.0.0.1", "127.1.2.3", "::1", "::ffff:127.0.0.1"};
    for (size_t i = 0; i < sizeof loop / sizeof loop[0]; i++) {
        const char *why = NULL;
        int live = refused(loop[i], false, NULL, &why);
        if (live != 1)
            QT_FAIL_("%s: live refusal = %d, expected refused", loop[i], live);
        if (!why || !strstr(why, "loopback"))
            QT_FAIL_("%s: reason \"%s\" does not say loopback", loop[i], why ? why : "(null)");
        int sbx = refused(loop[i], true, NULL, &why);
        if (sbx != 0)
            QT_FAIL_("%s: sandbox refusal = %d (%s), expected allowed", loop[i], sbx, why ? why : "");
    }
}

QTEST(addr_reasons_name_the_kind_of_address)
{
    static const struct {
        const char *addr, *word;
    } cases[] = {
        {"169.254.169.254", "metadata"}, {"10.0.0.1", "private"},       {"192.168.1.1", "private"},
        {"172.16.0.1", "private"},       {"169.254.1.1", "link-local"}, {"fe80::1", "link-local"},
        {"224.0.0.1", "multicast"},      {"ff02::1", "multicast"},      {"fd00::1", "private"},
        {"::ffff:10.0.0.1", "private"},  {"0.0.0.0", "unspecified"},    {"::", "unspecified"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *why = NULL;
        refused(cases[i].addr, false, NULL, &why);
        if (!why || !strstr(why, cases[i].word))
            QT_FAIL_("%s: reason \"%s\" does not mention %s", cases[i].addr, why ? why : "(null)", cases[i].word);
    }
}

QTEST(addr_refuses_non_ip_family)
{
    struct sockaddr_un un = {.sun_family = AF_UNIX};
    QT_TRUE(qod_addr_refusal((const struct sockaddr *)&un, true, NULL) != NULL);
}

QTEST(allow_list_reopens_its_ranges_only)
{
    qod_cidrs allow;
    char err[128] = "";
    QT_EQ_INT(qod_cidrs_parse("10.0.0.0/8,fd00::/8", &allow, err, sizeof err), QOD_OK);
    QT_EQ_INT(allow.n, 2);
    static const char *const opened[] = {"10.0.0.1", "10.1.2.3", "10.255.255.255", "fd00::1", "fdff::1"};
    for (size_t i = 0; i < sizeof opened / sizeof opened[0]; i++) {
        const char *why = NULL;
        if (refused(opened[i], false, &allow, &why) != 0)
            QT_FAIL_("%s: live still refused (%s) with the allow list", opened[i], why ? why : "");
        if (refused(opened[i], true, &allow, &why) != 0)
            QT_FAIL_("%s: sandbox still refused (%s) with the allow list", opened[i], why ? why : "");
    }
    static const char *const closed[] = {"11.0.0.0",        "9.255.255.255", "172.16.0.1", "192.168.1.1",
                                         "169.254.169.254", "fc00::1",       "fe80::1",    "127.0.0.1"};
    for (size_t i = 0; i < sizeof closed / sizeof closed[0]; i++) {
        int r = refused(closed[i], false, &allow, NULL);
        /* 11.0.0.0 and 9.255.255.255 are public: allowed anyway; the rest stay refused. */
        int want = strcmp(closed[i], "11.0.0.0") == 0 || strcmp(closed[i], "9.255.255.255") == 0 ? 0 : 1;
        if (r != want)
            QT_FAIL_("%s: refusal %d with the allow list, expected %d", closed[i], r, want);
    }
}

QTEST(allow_list_single_address_and_loopback_for_live)
{
    qod_cidrs allow;
    char err[128] = "";
    QT_EQ_INT(qod_cidrs_parse("169.254.169.254,127.0.0.0/8,::1/128", &allow, err, sizeof err), QOD_OK);
    QT_EQ_INT(allow.n, 3);
    QT_EQ_INT(refused("169.254.169.254", false, &allow, NULL), 0);
    QT_EQ_INT(refused("169.254.169.253", false, &allow, NULL), 1);
    QT_EQ_INT(refused("127.0.0.1", false, &allow, NULL), 0);
    QT_EQ_INT(refused("::1", false, &allow, NULL), 0);
    QT_EQ_INT(refused("::2", false, &allow, NULL), 1);
}

QTEST(cidrs_parse_empty_is_an_empty_list)
{
    qod_cidrs allow;
    char err[128] = "";
    QT_EQ_INT(qod_cidrs_parse("", &allow, err, sizeof err), QOD_OK);
    QT_EQ_INT(allow.n, 0);
    QT_EQ_INT(refused("10.0.0.1", true, &allow, NULL), 1);
}

QTEST(cidrs_parse_rejects_malformed_items)
{
    static const char *const bad[] = {
        "10.0.0.0/33",  "fd00::/129",  "garbage",  "10.0.0.0/8,,fd00::/8", ",10.0.0.0/8", ",",           "10.0.0.0/",
        "10.0.0.0/8x",  "10.0.0.0/-1", "10.0.0/8", "1.2.3.4.5/8",          "10.0.0.0 /8", " 10.0.0.0/8", "fd00::zz/8",
        "10.0.0.0/8/8", "10.0.0.0//8",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        qod_cidrs allow;
        char err[128] = "";
        int rc = qod_cidrs_parse(bad[i], &allow, err, sizeof err);
        if (rc != QOD_ERR_INVALID)
            QT_FAIL_("\"%s\": rc %d, expected QOD_ERR_INVALID", bad[i], rc);
        if (!err[0])
            QT_FAIL_("\"%s\": refused without a message", bad[i]);
    }
}

QTEST(cidrs_parse_rejects_trailing_empty_item)
{
    /* "10.0.0.0/8," has an empty last item, like ",10.0.0.0/8" and "a,,b", which are refused. */
    qod_cidrs allow;
    char err[128] = "";
    QT_EQ_INT(qod_cidrs_parse("10.0.0.0/8,", &allow, err, sizeof err), QOD_ERR_INVALID);
}

QTEST(cidrs_parse_rejects_more_than_the_maximum)
{
    char text[QOD_CIDRS_MAX * 20 + 64] = "";
    for (int i = 0; i <= QOD_CIDRS_MAX; i++) {
        char one[24];
        snprintf(one, sizeof one, "%s10.%d.0.0/16", i ? "," : "", i);
        strcat(text, one);
    }
    qod_cidrs allow;
    char err[128] = "";
    QT_EQ_INT(qod_cidrs_parse(text, &allow, err, sizeof err), QOD_ERR_INVALID);
    /* Exactly the maximum is fine. */
    char *last = strrchr(text, ',');
    *last = '\0';
    QT_EQ_INT(qod_cidrs_parse(text, &allow, err, sizeof err), QOD_OK);
    QT_EQ_INT(allow.n, QOD_CIDRS_MAX);
}

/* ---- qod_url_check ---- */

static int url_rc(const char *url, bool sandbox, const qod_cidrs *allow, char *err, size_t cap)
{
    err[0] = '\0';
    return qod_url_check(url, sandbox, allow, err, cap);
}

QTEST(url_accepts_https_for_live_and_http_for_sandbox)
{
    char err[256];
    QT_EQ_INT(url_rc("https://app.example.com/qod/callbacks", false, NULL, err, sizeof err), QOD_OK);
    QT_EQ_INT(url_rc("https://app.example.com:8443/cb?x=1", false, NULL, err, sizeof err), QOD_OK);
    QT_EQ_INT(url_rc("https://8.8.8.8/cb", false, NULL, err, sizeof err), QOD_OK);
    QT_EQ_INT(url_rc("https://[2001:4860::1]/cb", false, NULL, err, sizeof err), QOD_OK);
    QT_EQ_INT(url_rc("https://app.example.com/cb", true, NULL, err, sizeof err), QOD_OK);
    QT_EQ_INT(url_rc("http://app.example.com/cb", true, NULL, err, sizeof err), QOD_OK);
    QT_EQ_INT(url_rc("HTTP://app.example.com/cb", true, NULL, err, sizeof err), QOD_OK);
}

QTEST(url_live_requires_https)
{
    char err[256];
    QT_EQ_INT(url_rc("http://app.example.com/cb", false, NULL, err, sizeof err), QOD_ERR_INVALID);
    QT_TRUE(strstr(err, "https") != NULL);
}

QTEST(url_refuses_other_schemes)
{
    static const char *const bad[] = {"ftp://example.com/cb", "file:///etc/passwd",        "gopher://example.com/",
                                      "ws://example.com/cb",  "dict://example.com:11211/", "ldap://example.com/"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char err[256];
        for (int sbx = 0; sbx <= 1; sbx++)
            if (url_rc(bad[i], sbx, NULL, err, sizeof err) != QOD_ERR_INVALID || !err[0])
                QT_FAIL_("%s (sandbox=%d) was accepted or refused without a message", bad[i], sbx);
    }
}

QTEST(url_refuses_missing_host_and_relative_urls)
{
    static const char *const bad[] = {"",
                                      "https://",
                                      "http://:8080/cb",
                                      "/cb",
                                      "example.com/cb",
                                      "https:example.com",
                                      "https:////cb",
                                      "https://?x=1",
                                      "https://#frag"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char err[256];
        if (url_rc(bad[i], true, NULL, err, sizeof err) != QOD_ERR_INVALID || !err[0])
            QT_FAIL_("\"%s\" was accepted or refused without a message", bad[i]);
    }
}

QTEST(url_refuses_empty_authority_with_three_slashes)
{
    /* RFC 3986: "https:///cb" has an empty host and the path "/cb". libcurl alone reads it as host "cb", so the
     * guard accepts a URL that every other reader (and the echoed session) sees without a host. */
    char err[256];
    QT_EQ_INT(url_rc("https:///cb", false, NULL, err, sizeof err), QOD_ERR_INVALID);
    QT_EQ_INT(url_rc("http:///cb", true, NULL, err, sizeof err), QOD_ERR_INVALID);
}

QTEST(url_refuses_localhost_with_trailing_dot_for_live)
{
    /* "localhost." is the same name as "localhost" (fully qualified); the creation check refuses the latter. */
    char err[256];
    QT_EQ_INT(url_rc("https://localhost./cb", false, NULL, err, sizeof err), QOD_ERR_INVALID);
    QT_EQ_INT(url_rc("https://api.localhost./cb", false, NULL, err, sizeof err), QOD_ERR_INVALID);
}

QTEST(url_refuses_credentials)
{
    static const char *const bad[] = {"https://user:pw@app.example.com/cb", "https://user@app.example.com/cb",
                                      "http://user:pw@127.0.0.1:8080/cb"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char err[256];
        if (url_rc(bad[i], true, NULL, err, sizeof err) != QOD_ERR_INVALID)
            QT_FAIL_("%s was accepted", bad[i]);
        if (!strstr(err, "credentials"))
            QT_FAIL_("%s: message \"%s\" does not mention credentials", bad[i], err);
    }
}

QTEST(url_refuses_spaces_controls_and_non_ascii)
{
    static const char *const bad[] = {
        "https://app.example.com/a b", "https://app.example.com/a\tb", "https://app.example.com/a\r\nX-Injected: 1",
        " https://app.example.com/",   "https://app.example.com/\x7f", "https://ex\xc3\xa4mple.com/"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char err[256];
        if (url_rc(bad[i], true, NULL, err, sizeof err) != QOD_ERR_INVALID || !err[0])
            QT_FAIL_("case %zu was accepted or refused without a message", i);
    }
}

QTEST(url_length_limit_is_2048_bytes)
{
    static char url[QOD_URL_MAX + 2];
    const char *prefix = "https://app.example.com/";
    size_t pl = strlen(prefix);
    memcpy(url, prefix, pl);
    memset(url + pl, 'a', QOD_URL_MAX - pl);
    url[QOD_URL_MAX] = '\0';
    char err[256];
    QT_EQ_INT(strlen(url), 2048);
    QT_EQ_INT(url_rc(url, false, NULL, err, sizeof err), QOD_OK);
    url[QOD_URL_MAX] = 'a';
    url[QOD_URL_MAX + 1] = '\0';
    QT_EQ_INT(url_rc(url, false, NULL, err, sizeof err), QOD_ERR_INVALID);
    QT_TRUE(err[0] != '\0');
}

QTEST(url_refuses_forbidden_ip_literals_for_live)
{
    static const char *const bad[] = {
        "https://127.0.0.1/",         "https://127.0.0.1:8443/cb",
        "https://10.0.0.1/",          "https://172.16.5.4/",
        "https://192.168.1.1/",       "https://169.254.169.254/latest/meta-data/",
        "https://100.64.0.1/",        "https://0.0.0.0/",
        "https://224.0.0.1/",         "https://[::1]/",
        "https://[fd00::1]/",         "https://[fe80::1]/",
        "https://[ff02::1]/",         "https://[::ffff:127.0.0.1]/",
        "https://[::ffff:10.0.0.1]/", "https://[::ffff:a9fe:a9fe]/",
        "https://[fd00:ec2::254]/",   "https://localhost/",
        "https://LocalHost:8443/cb",  "https://api.localhost/cb",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char err[256];
        if (url_rc(bad[i], false, NULL, err, sizeof err) != QOD_ERR_INVALID)
            QT_FAIL_("%s was accepted for a live app", bad[i]);
        if (!err[0])
            QT_FAIL_("%s refused without a message", bad[i]);
    }
}

QTEST(url_refuses_numeric_ipv4_spellings_of_loopback_for_live)
{
    /* curl connects "127.1", "0x7f.0.0.1", "2130706433" and "0177.0.0.1" to 127.0.0.1. */
    static const char *const bad[] = {"https://127.1/", "https://0x7f.0.0.1/", "https://2130706433/",
                                      "https://0177.0.0.1/", "https://0xa9fea9fe/"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char err[256];
        if (url_rc(bad[i], false, NULL, err, sizeof err) != QOD_ERR_INVALID)
            QT_FAIL_("%s was accepted for a live app", bad[i]);
    }
}

QTEST(url_sandbox_allows_loopback_but_not_private_or_metadata)
{
    static const char *const ok[] = {"http://127.0.0.1:8080/cb", "http://localhost:8080/cb", "http://[::1]:8080/cb",
                                     "https://127.0.0.1/cb"};
    static const char *const bad[] = {"http://10.1.2.3/",  "http://169.254.169.254/", "http://192.168.0.10:8080/cb",
                                      "http://[fd00::1]/", "http://[fe80::1]/",       "http://0.0.0.0:8080/"};
    char err[256];
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++)
        if (url_rc(ok[i], true, NULL, err, sizeof err) != QOD_OK)
            QT_FAIL_("%s refused for a sandbox app: %s", ok[i], err);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (url_rc(bad[i], true, NULL, err, sizeof err) != QOD_ERR_INVALID || !err[0])
            QT_FAIL_("%s accepted for a sandbox app", bad[i]);
}

QTEST(url_allow_list_opens_private_literals)
{
    qod_cidrs allow;
    char err[256] = "";
    QT_EQ_INT(qod_cidrs_parse("10.0.0.0/8,fd00::/8", &allow, err, sizeof err), QOD_OK);
    QT_EQ_INT(url_rc("http://10.1.2.3/cb", true, &allow, err, sizeof err), QOD_OK);
    QT_EQ_INT(url_rc("https://10.1.2.3/cb", false, &allow, err, sizeof err), QOD_OK);
    QT_EQ_INT(url_rc("https://[fd00::1]/cb", false, &allow, err, sizeof err), QOD_OK);
    /* Still https for live, and other ranges stay closed. */
    QT_EQ_INT(url_rc("http://10.1.2.3/cb", false, &allow, err, sizeof err), QOD_ERR_INVALID);
    QT_EQ_INT(url_rc("http://192.168.1.1/cb", true, &allow, err, sizeof err), QOD_ERR_INVALID);
    QT_EQ_INT(url_rc("http://169.254.169.254/cb", true, &allow, err, sizeof err), QOD_ERR_INVALID);
}

QTEST_MAIN(QT_CASE(addr_refuses_private_linklocal_metadata_multicast_unspecified_for_everyone),
           QT_CASE(addr_allows_public_addresses), QT_CASE(addr_loopback_refused_for_live_allowed_for_sandbox),
           QT_CASE(addr_reasons_name_the_kind_of_address), QT_CASE(addr_refuses_non_ip_family),
           QT_CASE(allow_list_reopens_its_ranges_only), QT_CASE(allow_list_single_address_and_loopback_for_live),
           QT_CASE(cidrs_parse_empty_is_an_empty_list), QT_CASE(cidrs_parse_rejects_malformed_items),
           QT_CASE(cidrs_parse_rejects_trailing_empty_item), QT_CASE(cidrs_parse_rejects_more_than_the_maximum),
           QT_CASE(url_accepts_https_for_live_and_http_for_sandbox), QT_CASE(url_live_requires_https),
           QT_CASE(url_refuses_other_schemes), QT_CASE(url_refuses_missing_host_and_relative_urls),
           QT_CASE(url_refuses_empty_authority_with_three_slashes),
           QT_CASE(url_refuses_localhost_with_trailing_dot_for_live), QT_CASE(url_refuses_credentials),
           QT_CASE(url_refuses_spaces_controls_and_non_ascii), QT_CASE(url_length_limit_is_2048_bytes),
           QT_CASE(url_refuses_forbidden_ip_literals_for_live),
           QT_CASE(url_refuses_numeric_ipv4_spellings_of_loopback_for_live),
           QT_CASE(url_sandbox_allows_loopback_but_not_private_or_metadata),
           QT_CASE(url_allow_list_opens_private_literals))
