#include "core/device.h"

#include "qtest.h"
#include "util/err.h"

#include <string.h>

/* Parses a JSON text as a Device; returns the rc of qod_device_parse (or -1 when the text is not JSON). */
static int parse_text(const char *json, qod_device *d, char *err, size_t errcap)
{
    cJSON *o = cJSON_Parse(json);
    if (!o)
        return -1;
    int rc = qod_device_parse(o, d, err, errcap);
    cJSON_Delete(o);
    return rc;
}

/* rc of parsing {"phoneNumber": phone}. */
static int parse_phone(const char *phone)
{
    char json[128], err[256];
    qod_device d;
    snprintf(json, sizeof json, "{\"phoneNumber\":\"%s\"}", phone);
    return parse_text(json, &d, err, sizeof err);
}

/* Parses json, emits the chosen identifier, parses the output again and compares the keys of both. */
static bool round_trips(const char *json, char *emitted, size_t cap)
{
    qod_device a, b;
    char err[256], ka[QOD_DEVICE_KEY_MAX], kb[QOD_DEVICE_KEY_MAX];
    qod_buf out;
    bool ok = false;
    qod_buf_init(&out, 0);
    if (parse_text(json, &a, err, sizeof err) == QOD_OK &&
        qod_device_to_json(&a, qod_device_choose(&a), &out) == QOD_OK &&
        parse_text(out.data, &b, err, sizeof err) == QOD_OK && qod_device_choose(&b) == qod_device_choose(&a) &&
        qod_device_key(&a, qod_device_choose(&a), ka, sizeof ka) == QOD_OK &&
        qod_device_key(&b, qod_device_choose(&b), kb, sizeof kb) == QOD_OK && strcmp(ka, kb) == 0) {
        snprintf(emitted, cap, "%s", out.data);
        ok = true;
    }
    qod_buf_dispose(&out);
    return ok;
}

QTEST(phone_valid_lengths)
{
    QT_EQ_INT(parse_phone("+12345"), QOD_OK); /* 5 digits, the minimum */
    QT_EQ_INT(parse_phone("+123456"), QOD_OK);
    QT_EQ_INT(parse_phone("+123456789012345"), QOD_OK); /* 15 digits, the maximum */
}

QTEST(phone_parsed_into_device)
{
    qod_device d;
    char err[256];
    QT_EQ_INT(parse_text("{\"phoneNumber\":\"+14155550123\"}", &d, err, sizeof err), QOD_OK);
    QT_EQ_STR(d.phone, "+14155550123");
    QT_EQ_INT(d.present, QOD_DEV_PHONE);
    QT_EQ_INT(d.ipv4_port, -1);
}

QTEST(phone_without_plus_rejected)
{
    QT_EQ_INT(parse_phone("14155550123"), QOD_ERR_INVALID);
}

QTEST(phone_leading_zero_rejected)
{
    QT_EQ_INT(parse_phone("+04155550123"), QOD_ERR_INVALID);
}

QTEST(phone_four_digits_rejected)
{
    QT_EQ_INT(parse_phone("+1234"), QOD_ERR_INVALID);
}

QTEST(phone_sixteen_digits_rejected)
{
    QT_EQ_INT(parse_phone("+1234567890123456"), QOD_ERR_INVALID);
}

QTEST(phone_letters_rejected)
{
    QT_EQ_INT(parse_phone("+1415555O123"), QOD_ERR_INVALID);
    QT_EQ_INT(parse_phone("+1 415555012"), QOD_ERR_INVALID);
    QT_EQ_INT(parse_phone("+"), QOD_ERR_INVALID);
}

QTEST(phone_not_a_string_rejected)
{
    qod_device d;
    char err[256] = "";
    QT_EQ_INT(parse_text("{\"phoneNumber\":14155550123}", &d, err, sizeof err), QOD_ERR_INVALID);
    QT_TRUE(strstr(err, "phoneNumber") != NULL);
}

QTEST(ipv4_public_and_private)
{
    qod_device d;
    char err[256];
    QT_EQ_INT(parse_text("{\"ipv4Address\":{\"publicAddress\":\"203.0.113.7\",\"privateAddress\":\"10.0.0.7\"}}", &d,
                         err, sizeof err),
              QOD_OK);
    QT_EQ_INT(d.present, QOD_DEV_IPV4);
    QT_EQ_STR(d.ipv4_public, "203.0.113.7");
    QT_EQ_STR(d.ipv4_private, "10.0.0.7");
    QT_EQ_INT(d.ipv4_port, -1);
}

QTEST(ipv4_public_and_port)
{
    qod_device d;
    char err[256];
    QT_EQ_INT(
        parse_text("{\"ipv4Address\":{\"publicAddress\":\"203.0.113.7\",\"publicPort\":59765}}", &d, err, sizeof err),
        QOD_OK);
    QT_EQ_STR(d.ipv4_private, "");
    QT_EQ_INT(d.ipv4_port, 59765);
}

QTEST(ipv4_public_alone_rejected)
{
    qod_device d;
    char err[256] = "";
    QT_EQ_INT(parse_text("{\"ipv4Address\":{\"publicAddress\":\"203.0.113.7\"}}", &d, err, sizeof err),
              QOD_ERR_INVALID);
    QT_TRUE(strstr(err, "privateAddress or publicPort") != NULL);
}

QTEST(ipv4_without_public_rejected)
{
    qod_device d;
    char err[256] = "";
    QT_EQ_INT(parse_text("{\"ipv4Address\":{\"privateAddress\":\"10.0.0.7\",\"publicPort\":80}}", &d, err, sizeof err),
              QOD_ERR_INVALID);
    QT_TRUE(strstr(err, "publicAddress") != NULL);
}

QTEST(ipv4_bad_addresses_rejected)
{
    qod_device d;
    char err[256];
    QT_EQ_INT(
        parse_text("{\"ipv4Address\":{\"publicAddress\":\"203.0.113.0/24\",\"publicPort\":80}}", &d, err, sizeof err),
        QOD_ERR_INVALID);
    QT_EQ_INT(parse_text("{\"ipv4Address\":{\"publicAddress\":\"256.0.0.1\",\"publicPort\":80}}", &d, err, sizeof err),
              QOD_ERR_INVALID);
    QT_EQ_INT(parse_text("{\"ipv4Address\":{\"publicAddress\":\"203.0.113.7\",\"privateAddress\":\"::1\"}}", &d, err,
                         sizeof err),
              QOD_ERR_INVALID);
}

QTEST(ipv4_port_bounds)
{
    qod_device d;
    char err[256];
    QT_EQ_INT(parse_text("{\"ipv4Address\":{\"publicAddress\":\"203.0.113.7\",\"publicPort\":0}}", &d, err, sizeof err),
              QOD_OK);
    QT_EQ_INT(d.ipv4_port, 0);
    QT_EQ_INT(
        parse_text("{\"ipv4Address\":{\"publicAddress\":\"203.0.113.7\",\"publicPort\":65535}}", &d, err, sizeof err),
        QOD_OK);
    QT_EQ_INT(d.ipv4_port, 65535);
}

QTEST(ipv4_port_out_of_range_rejected)
{
    qod_device d;
    char err[256] = "";
    QT_EQ_INT(
        parse_text("{\"ipv4Address\":{\"publicAddress\":\"203.0.113.7\",\"publicPort\":65536}}", &d, err, sizeof err),
        QOD_ERR_INVALID);
    QT_TRUE(strstr(err, "publicPort") != NULL);
    QT_EQ_INT(
        parse_text("{\"ipv4Address\":{\"publicAddress\":\"203.0.113.7\",\"publicPort\":-1}}", &d, err, sizeof err),
        QOD_ERR_INVALID);
}

QTEST(ipv4_port_not_integer_rejected)
{
    qod_device d;
    char err[256];
    QT_EQ_INT(
        parse_text("{\"ipv4Address\":{\"publicAddress\":\"203.0.113.7\",\"publicPort\":80.5}}", &d, err, sizeof err),
        QOD_ERR_INVALID);
    QT_EQ_INT(
        parse_text("{\"ipv4Address\":{\"publicAddress\":\"203.0.113.7\",\"publicPort\":\"80\"}}", &d, err, sizeof err),
        QOD_ERR_INVALID);
}

QTEST(ipv4_unknown_member_rejected)
{
    qod_device d;
    char err[256] = "";
    QT_EQ_INT(parse_text("{\"ipv4Address\":{\"publicAddress\":\"203.0.113.7\",\"publicPort\":80,\"vlan\":3}}", &d, err,
                         sizeof err),
              QOD_ERR_INVALID);
    QT_TRUE(strstr(err, "'vlan'") != NULL);
}

QTEST(ipv4_not_object_rejected)
{
    qod_device d;
    char err[256];
    QT_EQ_INT(parse_text("{\"ipv4Address\":\"203.0.113.7\"}", &d, err, sizeof err), QOD_ERR_INVALID);
}

QTEST(top_level_unknown_member_rejected)
{
    qod_device d;
    char err[256] = "";
    QT_EQ_INT(parse_text("{\"phoneNumber\":\"+14155550123\",\"imsi\":\"001010123456789\"}", &d, err, sizeof err),
              QOD_ERR_INVALID);
    QT_TRUE(strstr(err, "'imsi'") != NULL);
}

QTEST(empty_object_rejected)
{
    qod_device d;
    char err[256] = "";
    QT_EQ_INT(parse_text("{}", &d, err, sizeof err), QOD_ERR_INVALID);
    QT_TRUE(strstr(err, "at least one identifier") != NULL);
}

QTEST(only_nulls_rejected)
{
    qod_device d;
    char err[256];
    QT_EQ_INT(parse_text("{\"phoneNumber\":null,\"ipv4Address\":null}", &d, err, sizeof err), QOD_ERR_INVALID);
}

QTEST(non_object_rejected)
{
    qod_device d;
    char err[256] = "";
    QT_EQ_INT(parse_text("[\"+14155550123\"]", &d, err, sizeof err), QOD_ERR_INVALID);
    QT_EQ_INT(parse_text("\"+14155550123\"", &d, err, sizeof err), QOD_ERR_INVALID);
    QT_EQ_INT(qod_device_parse(NULL, &d, err, sizeof err), QOD_ERR_INVALID);
    QT_TRUE(strstr(err, "must be an object") != NULL);
}

QTEST(ipv6_normalised)
{
    qod_device d;
    char err[256];
    QT_EQ_INT(parse_text("{\"ipv6Address\":\"2001:DB8:0:0:0:0:0:1\"}", &d, err, sizeof err), QOD_OK);
    QT_EQ_INT(d.present, QOD_DEV_IPV6);
    QT_EQ_STR(d.ipv6, "2001:db8::1");
}

QTEST(ipv6_bad_rejected)
{
    qod_device d;
    char err[256];
    QT_EQ_INT(parse_text("{\"ipv6Address\":\"2001:db8::1/64\"}", &d, err, sizeof err), QOD_ERR_INVALID);
    QT_EQ_INT(parse_text("{\"ipv6Address\":\"2001:db8:::1\"}", &d, err, sizeof err), QOD_ERR_INVALID);
    QT_EQ_INT(parse_text("{\"ipv6Address\":\"203.0.113.7\"}", &d, err, sizeof err), QOD_ERR_INVALID);
}

QTEST(ipv6_norm_helpers)
{
    char v6[46], v4[16];
    QT_TRUE(qod_ipv6_norm("0:0:0:0:0:0:0:0", v6));
    QT_EQ_STR(v6, "::");
    QT_TRUE(qod_ipv4_norm("192.0.2.1", v4));
    QT_EQ_STR(v4, "192.0.2.1");
    QT_TRUE(!qod_ipv4_norm("192.0.2", v4));
    QT_TRUE(!qod_ipv6_norm("1:2:3:4:5:6:7:8:9", v6));
}

QTEST(nai_valid)
{
    qod_device d;
    char err[256];
    QT_EQ_INT(parse_text("{\"networkAccessIdentifier\":\"123456789@domain.com\"}", &d, err, sizeof err), QOD_OK);
    QT_EQ_INT(d.present, QOD_DEV_NAI);
    QT_EQ_STR(d.nai, "123456789@domain.com");
}

QTEST(nai_needs_local_at_domain)
{
    static const char *const bad[] = {"domain.com", "@domain.com", "user@", "a@b@c", "us er@domain.com"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char json[128], err[256] = "";
        qod_device d;
        snprintf(json, sizeof json, "{\"networkAccessIdentifier\":\"%s\"}", bad[i]);
        QT_EQ_INT(parse_text(json, &d, err, sizeof err), QOD_ERR_INVALID);
        QT_TRUE(strstr(err, "networkAccessIdentifier") != NULL);
    }
}

/* {"networkAccessIdentifier": "aaa…a@b.c"} with `total` bytes in the identifier. */
static int parse_nai_of_length(size_t total)
{
    char json[400], nai[300], err[256];
    qod_device d;
    memset(nai, 'a', total - 4);
    memcpy(nai + total - 4, "@b.c", 5);
    snprintf(json, sizeof json, "{\"networkAccessIdentifier\":\"%s\"}", nai);
    return parse_text(json, &d, err, sizeof err);
}

QTEST(nai_longest_accepted)
{
    QT_EQ_INT(parse_nai_of_length(QOD_NAI_MAX), QOD_OK);
}

QTEST(nai_too_long_rejected)
{
    QT_EQ_INT(parse_nai_of_length(QOD_NAI_MAX + 1), QOD_ERR_INVALID);
}

QTEST(choose_phone_first)
{
    qod_device d;
    char err[256];
    QT_EQ_INT(parse_text("{\"networkAccessIdentifier\":\"u@d.com\",\"ipv6Address\":\"2001:db8::1\","
                         "\"ipv4Address\":{\"publicAddress\":\"203.0.113.7\",\"publicPort\":80},"
                         "\"phoneNumber\":\"+14155550123\"}",
                         &d, err, sizeof err),
              QOD_OK);
    QT_EQ_INT(d.present, QOD_DEV_PHONE | QOD_DEV_IPV4 | QOD_DEV_IPV6 | QOD_DEV_NAI);
    QT_EQ_INT(qod_device_choose(&d), QOD_DEV_PHONE);
}

QTEST(choose_ipv4_over_ipv6_and_nai)
{
    qod_device d;
    char err[256];
    QT_EQ_INT(parse_text("{\"networkAccessIdentifier\":\"u@d.com\",\"ipv6Address\":\"2001:db8::1\","
                         "\"ipv4Address\":{\"publicAddress\":\"203.0.113.7\",\"publicPort\":80}}",
                         &d, err, sizeof err),
              QOD_OK);
    QT_EQ_INT(qod_device_choose(&d), QOD_DEV_IPV4);
}

QTEST(choose_ipv6_over_nai)
{
    qod_device d;
    char err[256];
    QT_EQ_INT(
        parse_text("{\"networkAccessIdentifier\":\"u@d.com\",\"ipv6Address\":\"2001:db8::1\"}", &d, err, sizeof err),
        QOD_OK);
    QT_EQ_INT(qod_device_choose(&d), QOD_DEV_IPV6);
}

QTEST(choose_nai_last)
{
    qod_device d;
    char err[256];
    QT_EQ_INT(parse_text("{\"networkAccessIdentifier\":\"u@d.com\"}", &d, err, sizeof err), QOD_OK);
    QT_EQ_INT(qod_device_choose(&d), QOD_DEV_NAI);
}

QTEST(choose_none_on_empty_device)
{
    qod_device d;
    memset(&d, 0, sizeof d);
    QT_EQ_INT(qod_device_choose(&d), QOD_DEV_NONE);
}

QTEST(key_formats)
{
    qod_device d;
    char err[256], k[QOD_DEVICE_KEY_MAX];
    QT_EQ_INT(parse_text("{\"networkAccessIdentifier\":\"u@d.com\",\"ipv6Address\":\"2001:DB8::1\","
                         "\"ipv4Address\":{\"publicAddress\":\"203.0.113.7\",\"privateAddress\":\"10.0.0.7\","
                         "\"publicPort\":80},\"phoneNumber\":\"+14155550123\"}",
                         &d, err, sizeof err),
              QOD_OK);
    QT_EQ_INT(qod_device_key(&d, QOD_DEV_PHONE, k, sizeof k), QOD_OK);
    QT_EQ_STR(k, "tel:+14155550123");
    QT_EQ_INT(qod_device_key(&d, QOD_DEV_IPV4, k, sizeof k), QOD_OK);
    QT_EQ_STR(k, "ipv4:203.0.113.7/10.0.0.7:80");
    QT_EQ_INT(qod_device_key(&d, QOD_DEV_IPV6, k, sizeof k), QOD_OK);
    QT_EQ_STR(k, "ipv6:2001:db8::/64"); /* the device is its /64 */
    QT_EQ_INT(qod_device_key(&d, QOD_DEV_NAI, k, sizeof k), QOD_OK);
    QT_EQ_STR(k, "nai:u@d.com");
}

QTEST(key_ipv4_partial_forms)
{
    qod_device d;
    char err[256], k[QOD_DEVICE_KEY_MAX];
    QT_EQ_INT(
        parse_text("{\"ipv4Address\":{\"publicAddress\":\"203.0.113.7\",\"publicPort\":80}}", &d, err, sizeof err),
        QOD_OK);
    QT_EQ_INT(qod_device_key(&d, QOD_DEV_IPV4, k, sizeof k), QOD_OK);
    QT_EQ_STR(k, "ipv4:203.0.113.7/:80");
    QT_EQ_INT(parse_text("{\"ipv4Address\":{\"publicAddress\":\"203.0.113.7\",\"privateAddress\":\"10.0.0.7\"}}", &d,
                         err, sizeof err),
              QOD_OK);
    QT_EQ_INT(qod_device_key(&d, QOD_DEV_IPV4, k, sizeof k), QOD_OK);
    QT_EQ_STR(k, "ipv4:203.0.113.7/10.0.0.7:-1");
}

QTEST(key_none_and_small_buffer)
{
    qod_device d;
    char err[256], k[8];
    QT_EQ_INT(parse_text("{\"phoneNumber\":\"+14155550123\"}", &d, err, sizeof err), QOD_OK);
    QT_EQ_INT(qod_device_key(&d, QOD_DEV_NONE, k, sizeof k), QOD_ERR_INVALID);
    QT_EQ_INT(qod_device_key(&d, QOD_DEV_PHONE, k, sizeof k), QOD_ERR_LIMIT);
}

QTEST(to_json_emits_only_chosen_phone)
{
    char out[512];
    QT_TRUE(round_trips("{\"networkAccessIdentifier\":\"u@d.com\",\"phoneNumber\":\"+14155550123\","
                        "\"ipv6Address\":\"2001:db8::1\"}",
                        out, sizeof out));
    QT_EQ_STR(out, "{\"phoneNumber\":\"+14155550123\"}");
}

QTEST(to_json_ipv4_round_trips)
{
    char out[512];
    QT_TRUE(round_trips("{\"ipv4Address\":{\"publicAddress\":\"203.0.113.7\",\"privateAddress\":\"10.0.0.7\","
                        "\"publicPort\":80},\"networkAccessIdentifier\":\"u@d.com\"}",
                        out, sizeof out));
    QT_EQ_STR(out, "{\"ipv4Address\":{\"publicAddress\":\"203.0.113.7\",\"privateAddress\":\"10.0.0.7\","
                   "\"publicPort\":80}}");
    QT_TRUE(round_trips("{\"ipv4Address\":{\"publicAddress\":\"203.0.113.7\",\"publicPort\":0}}", out, sizeof out));
    QT_EQ_STR(out, "{\"ipv4Address\":{\"publicAddress\":\"203.0.113.7\",\"publicPort\":0}}");
}

/* CAMARA echoes the chosen identifier with its original value; keys use the normalised address. */
QTEST(to_json_ipv6_original_round_trips)
{
    char out[512], key[QOD_DEVICE_KEY_MAX];
    QT_TRUE(round_trips("{\"ipv6Address\":\"2001:DB8:0:0:0:0:0:1\",\"networkAccessIdentifier\":\"u@d.com\"}", out,
                        sizeof out));
    QT_EQ_STR(out, "{\"ipv6Address\":\"2001:DB8:0:0:0:0:0:1\"}");
    cJSON *o = cJSON_Parse(out);
    qod_device d;
    char err[128];
    QT_EQ_INT(qod_device_parse(o, &d, err, sizeof err), QOD_OK);
    cJSON_Delete(o);
    QT_EQ_INT(qod_device_key(&d, QOD_DEV_IPV6, key, sizeof key), QOD_OK);
    QT_EQ_STR(key, "ipv6:2001:db8::/64");
}

QTEST(ipv6_net64_is_the_addresss_64_prefix)
{
    char net[QOD_IPV6_NET_LEN];
    QT_TRUE(qod_ipv6_net64("2001:db8:1:2:3:4:5:6", net));
    QT_EQ_STR(net, "2001:db8:1:2::/64");
    QT_TRUE(qod_ipv6_net64("2001:DB8:1:2::", net));
    QT_EQ_STR(net, "2001:db8:1:2::/64");
    QT_TRUE(qod_ipv6_net64("::1", net));
    QT_EQ_STR(net, "::/64");
    QT_TRUE(!qod_ipv6_net64("203.0.113.7", net));
    QT_TRUE(!qod_ipv6_net64("2001:db8::1/64", net));
    QT_TRUE(!qod_ipv6_net64("", net));
}

QTEST(to_json_nai_round_trips)
{
    char out[512];
    QT_TRUE(round_trips("{\"networkAccessIdentifier\":\"u@d.com\"}", out, sizeof out));
    QT_EQ_STR(out, "{\"networkAccessIdentifier\":\"u@d.com\"}");
}

QTEST(to_json_none_rejected)
{
    qod_device d;
    qod_buf out;
    memset(&d, 0, sizeof d);
    qod_buf_init(&out, 0);
    int rc = qod_device_to_json(&d, QOD_DEV_NONE, &out);
    size_t len = out.len;
    qod_buf_dispose(&out);
    QT_EQ_INT(rc, QOD_ERR_INVALID);
    QT_EQ_INT(len, 0);
}

QTEST_MAIN(QT_CASE(phone_valid_lengths), QT_CASE(phone_parsed_into_device), QT_CASE(phone_without_plus_rejected),
           QT_CASE(phone_leading_zero_rejected), QT_CASE(phone_four_digits_rejected),
           QT_CASE(phone_sixteen_digits_rejected), QT_CASE(phone_letters_rejected),
           QT_CASE(phone_not_a_string_rejected), QT_CASE(ipv4_public_and_private), QT_CASE(ipv4_public_and_port),
           QT_CASE(ipv4_public_alone_rejected), QT_CASE(ipv4_without_public_rejected),
           QT_CASE(ipv4_bad_addresses_rejected), QT_CASE(ipv4_port_bounds), QT_CASE(ipv4_port_out_of_range_rejected),
           QT_CASE(ipv4_port_not_integer_rejected), QT_CASE(ipv4_unknown_member_rejected),
           QT_CASE(ipv4_not_object_rejected), QT_CASE(top_level_unknown_member_rejected),
           QT_CASE(empty_object_rejected), QT_CASE(only_nulls_rejected), QT_CASE(non_object_rejected),
           QT_CASE(ipv6_normalised), QT_CASE(ipv6_bad_rejected), QT_CASE(ipv6_norm_helpers), QT_CASE(nai_valid),
           QT_CASE(nai_needs_local_at_domain), QT_CASE(nai_longest_accepted), QT_CASE(nai_too_long_rejected),
           QT_CASE(choose_phone_first), QT_CASE(choose_ipv4_over_ipv6_and_nai), QT_CASE(choose_ipv6_over_nai),
           QT_CASE(choose_nai_last), QT_CASE(choose_none_on_empty_device), QT_CASE(key_formats),
           QT_CASE(key_ipv4_partial_forms), QT_CASE(key_none_and_small_buffer),
           QT_CASE(to_json_emits_only_chosen_phone), QT_CASE(to_json_ipv4_round_trips),
           QT_CASE(to_json_ipv6_original_round_trips), QT_CASE(ipv6_net64_is_the_addresss_64_prefix),
           QT_CASE(to_json_nai_round_trips), QT_CASE(to_json_none_rejected))
