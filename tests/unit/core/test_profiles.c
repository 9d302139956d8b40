#include "core/profiles.h"

#include "qtest.h"
#include "util/err.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Parses a NUL-terminated catalogue; the error text goes to err. */
static int parse(const char *json, qod_profiles **out, char *err, size_t errcap)
{
    return qod_profiles_parse(json, strlen(json), out, err, errcap);
}

/* rc of parsing a one-profile catalogue [{"name":"TEST_P","status":"ACTIVE", <extra>}]. */
static int parse_one_with(const char *extra, char *err, size_t errcap)
{
    char json[1024];
    qod_profiles *p = NULL;
    snprintf(json, sizeof json, "[{\"name\":\"TEST_P\",\"status\":\"ACTIVE\"%s%s}]", extra[0] ? "," : "", extra);
    int rc = parse(json, &p, err, errcap);
    qod_profiles_destroy(p);
    return rc;
}

/* Writes n bytes of text into a new temporary file; returns 0 and its path in path. */
static int temp_file(char path[64], const char *text, size_t n)
{
    snprintf(path, 64, "/tmp/qod-profiles-XXXXXX");
    int fd = mkstemp(path);
    if (fd < 0)
        return -1;
    size_t off = 0;
    while (off < n) {
        ssize_t w = write(fd, text + off, n - off);
        if (w <= 0)
            break;
        off += (size_t)w;
    }
    close(fd);
    return off == n ? 0 : -1;
}

QTEST(default_has_three_active_profiles)
{
    qod_profiles *p = NULL;
    QT_EQ_INT(qod_profiles_default(&p), QOD_OK);
    size_t n = qod_profiles_count(p);
    const qod_profile *l = qod_profiles_find(p, "QOS_L"), *m = qod_profiles_find(p, "QOS_M"),
                      *s = qod_profiles_find(p, "QOS_S");
    bool all_active = l && m && s && l->status == QOD_PROFILE_ACTIVE && m->status == QOD_PROFILE_ACTIVE &&
                      s->status == QOD_PROFILE_ACTIVE;
    qod_profiles_destroy(p);
    QT_EQ_INT(n, 3);
    QT_TRUE(all_active);
}

QTEST(default_durations_are_1s_to_1day)
{
    qod_profiles *p = NULL;
    QT_EQ_INT(qod_profiles_default(&p), QOD_OK);
    int bad = 0;
    for (size_t i = 0; i < qod_profiles_count(p); i++) {
        const qod_profile *q = qod_profiles_at(p, i);
        bad += q->min_duration_s != 1 || q->max_duration_s != 86400;
    }
    qod_profiles_destroy(p);
    QT_EQ_INT(bad, 0);
}

QTEST(default_qos_s_has_largest_min_down_rate)
{
    qod_profiles *p = NULL;
    QT_EQ_INT(qod_profiles_default(&p), QOD_OK);
    int64_t l = qod_profiles_find(p, "QOS_L")->min_down_kbps, m = qod_profiles_find(p, "QOS_M")->min_down_kbps,
            s = qod_profiles_find(p, "QOS_S")->min_down_kbps;
    qod_profiles_destroy(p);
    QT_TRUE(s > m && s > l);
    QT_EQ_INT(l, 5000);
}

QTEST(default_qos_l_has_highest_priority)
{
    qod_profiles *p = NULL;
    QT_EQ_INT(qod_profiles_default(&p), QOD_OK);
    int l = qod_profiles_find(p, "QOS_L")->priority, m = qod_profiles_find(p, "QOS_M")->priority,
        s = qod_profiles_find(p, "QOS_S")->priority;
    qod_profiles_destroy(p);
    QT_TRUE(l < m && l < s);
}

QTEST(find_and_at_out_of_range)
{
    qod_profiles *p = NULL;
    QT_EQ_INT(qod_profiles_default(&p), QOD_OK);
    bool missing = qod_profiles_find(p, "QOS_XL") == NULL && qod_profiles_find(p, "qos_l") == NULL;
    bool past_end = qod_profiles_at(p, 3) == NULL;
    qod_profiles_destroy(p);
    QT_TRUE(missing);
    QT_TRUE(past_end);
}

QTEST(destroy_null_is_noop)
{
    qod_profiles_destroy(NULL);
    QT_TRUE(1);
}

QTEST(custom_catalogue_parsed)
{
    qod_profiles *p = NULL;
    char err[256] = "";
    int rc = parse("[{\"name\":\"GOLD\",\"status\":\"ACTIVE\",\"priority\":5,"
                   "\"targetMinDownstreamRate\":{\"value\":20,\"unit\":\"Mbps\"},"
                   "\"minDuration\":{\"value\":10,\"unit\":\"Seconds\"},"
                   "\"maxDuration\":{\"value\":2,\"unit\":\"Hours\"}},"
                   "{\"name\":\"bronze.v2-x\",\"status\":\"DEPRECATED\"}]",
                   &p, err, sizeof err);
    QT_EQ_INT(rc, QOD_OK);
    const qod_profile *g = qod_profiles_find(p, "GOLD"), *b = qod_profiles_find(p, "bronze.v2-x");
    QT_TRUE(g && b);
    qod_profile gc = *g, bc = *b;
    size_t n = qod_profiles_count(p);
    qod_profiles_destroy(p);
    QT_EQ_INT(n, 2);
    QT_EQ_INT(gc.priority, 5);
    QT_EQ_INT(gc.min_down_kbps, 20000);
    QT_EQ_INT(gc.min_duration_s, 10);
    QT_EQ_INT(gc.max_duration_s, 7200);
    QT_EQ_INT(bc.status, QOD_PROFILE_DEPRECATED);
    QT_EQ_INT(bc.priority, 50);
    QT_EQ_INT(bc.min_duration_s, 1);
    QT_EQ_INT(bc.max_duration_s, 86400);
}

QTEST(not_an_array_rejected)
{
    qod_profiles *p = (qod_profiles *)1;
    char err[256] = "";
    QT_EQ_INT(parse("{\"name\":\"GOLD\",\"status\":\"ACTIVE\"}", &p, err, sizeof err), QOD_ERR_INVALID);
    QT_TRUE(p == NULL);
    QT_TRUE(strstr(err, "JSON array") != NULL);
}

QTEST(malformed_json_rejected)
{
    qod_profiles *p = NULL;
    char err[256] = "";
    QT_EQ_INT(parse("[{\"name\":\"GOLD\",", &p, err, sizeof err), QOD_ERR_INVALID);
    QT_TRUE(p == NULL);
}

QTEST(empty_array_rejected)
{
    qod_profiles *p = NULL;
    char err[256] = "";
    QT_EQ_INT(parse("[]", &p, err, sizeof err), QOD_ERR_INVALID);
    QT_TRUE(p == NULL);
}

QTEST(duplicate_name_rejected)
{
    qod_profiles *p = NULL;
    char err[256] = "";
    QT_EQ_INT(parse("[{\"name\":\"GOLD\",\"status\":\"ACTIVE\"},{\"name\":\"SILVER\",\"status\":\"ACTIVE\"},"
                    "{\"name\":\"GOLD\",\"status\":\"INACTIVE\"}]",
                    &p, err, sizeof err),
              QOD_ERR_INVALID);
    QT_TRUE(p == NULL);
    QT_TRUE(strstr(err, "GOLD is defined twice") != NULL);
}

QTEST(name_too_short_rejected)
{
    qod_profiles *p = NULL;
    char err[256] = "";
    QT_EQ_INT(parse("[{\"name\":\"QS\",\"status\":\"ACTIVE\"}]", &p, err, sizeof err), QOD_ERR_INVALID);
    QT_TRUE(strstr(err, "name") != NULL);
}

QTEST(name_with_space_rejected)
{
    qod_profiles *p = NULL;
    char err[256] = "";
    QT_EQ_INT(parse("[{\"name\":\"QOS L\",\"status\":\"ACTIVE\"}]", &p, err, sizeof err), QOD_ERR_INVALID);
}

QTEST(name_missing_or_not_string_rejected)
{
    qod_profiles *p = NULL;
    char err[256] = "";
    QT_EQ_INT(parse("[{\"status\":\"ACTIVE\"}]", &p, err, sizeof err), QOD_ERR_INVALID);
    QT_EQ_INT(parse("[{\"name\":123,\"status\":\"ACTIVE\"}]", &p, err, sizeof err), QOD_ERR_INVALID);
    QT_EQ_INT(parse("[\"QOS_L\"]", &p, err, sizeof err), QOD_ERR_INVALID);
}

QTEST(bad_status_rejected)
{
    qod_profiles *p = NULL;
    char err[256] = "";
    QT_EQ_INT(parse("[{\"name\":\"GOLD\",\"status\":\"active\"}]", &p, err, sizeof err), QOD_ERR_INVALID);
    QT_TRUE(strstr(err, "status must be") != NULL);
}

QTEST(missing_status_rejected)
{
    qod_profiles *p = NULL;
    char err[256] = "";
    QT_EQ_INT(parse("[{\"name\":\"GOLD\"}]", &p, err, sizeof err), QOD_ERR_INVALID);
    QT_TRUE(strstr(err, "status is required") != NULL);
}

QTEST(description_not_string_rejected)
{
    char err[256] = "";
    QT_EQ_INT(parse_one_with("\"description\":5", err, sizeof err), QOD_ERR_INVALID);
}

QTEST(rate_value_1025_rejected)
{
    char err[256] = "";
    QT_EQ_INT(parse_one_with("\"maxDownstreamRate\":{\"value\":1025,\"unit\":\"Mbps\"}", err, sizeof err),
              QOD_ERR_INVALID);
    QT_TRUE(strstr(err, "maxDownstreamRate") != NULL);
}

QTEST(rate_value_1024_accepted)
{
    char err[256] = "";
    QT_EQ_INT(parse_one_with("\"maxDownstreamRate\":{\"value\":1024,\"unit\":\"Mbps\"}", err, sizeof err), QOD_OK);
}

QTEST(rate_unknown_unit_rejected)
{
    char err[256] = "";
    QT_EQ_INT(parse_one_with("\"targetMinUpstreamRate\":{\"value\":10,\"unit\":\"MBps\"}", err, sizeof err),
              QOD_ERR_INVALID);
    QT_TRUE(strstr(err, "targetMinUpstreamRate") != NULL);
}

QTEST(rate_fractional_value_rejected)
{
    char err[256] = "";
    QT_EQ_INT(parse_one_with("\"targetMinUpstreamRate\":{\"value\":1.5,\"unit\":\"Mbps\"}", err, sizeof err),
              QOD_ERR_INVALID);
}

QTEST(duration_value_0_rejected)
{
    char err[256] = "";
    QT_EQ_INT(parse_one_with("\"minDuration\":{\"value\":0,\"unit\":\"Seconds\"}", err, sizeof err), QOD_ERR_INVALID);
    QT_TRUE(strstr(err, "minDuration") != NULL);
}

QTEST(duration_unknown_unit_rejected)
{
    char err[256] = "";
    QT_EQ_INT(parse_one_with("\"maxDuration\":{\"value\":3,\"unit\":\"Weeks\"}", err, sizeof err), QOD_ERR_INVALID);
}

QTEST(max_duration_below_min_rejected)
{
    char err[256] = "";
    QT_EQ_INT(parse_one_with("\"minDuration\":{\"value\":10,\"unit\":\"Minutes\"},"
                             "\"maxDuration\":{\"value\":599,\"unit\":\"Seconds\"}",
                             err, sizeof err),
              QOD_ERR_INVALID);
    QT_TRUE(strstr(err, "maxDuration is below minDuration") != NULL);
}

/* A duration in Days too large for int64 microseconds must not wrap into a small number. minDuration of
 * 200000000 days (about 1.7e22 µs) is longer than the default maxDuration of one day, so the catalogue is invalid. */
QTEST(huge_min_duration_in_days_not_wrapped)
{
    char err[256] = "";
    QT_EQ_INT(parse_one_with("\"minDuration\":{\"value\":200000000,\"unit\":\"Days\"}", err, sizeof err),
              QOD_ERR_INVALID);
}

/* The same overflow on maxDuration: 200000000 days is above minDuration (1 s), so "below minDuration" is wrong. */
QTEST(huge_max_duration_in_days_not_reported_below_min)
{
    char err[256] = "";
    int rc = parse_one_with("\"maxDuration\":{\"value\":200000000,\"unit\":\"Days\"}", err, sizeof err);
    QT_TRUE(rc == QOD_OK || strstr(err, "below minDuration") == NULL);
}

/* A packetDelayBudget too large for int64 microseconds must be rejected, not stored as a negative budget. */
QTEST(huge_packet_delay_budget_not_negative)
{
    qod_profiles *p = NULL;
    char err[256] = "";
    int rc = parse("[{\"name\":\"TEST_P\",\"status\":\"ACTIVE\","
                   "\"packetDelayBudget\":{\"value\":200000000,\"unit\":\"Days\"}}]",
                   &p, err, sizeof err);
    int64_t pdb = rc == QOD_OK ? qod_profiles_at(p, 0)->delay_budget_us : 0;
    qod_profiles_destroy(p);
    QT_TRUE(rc != QOD_OK || pdb > 0);
}

QTEST(priority_0_rejected)
{
    char err[256] = "";
    QT_EQ_INT(parse_one_with("\"priority\":0", err, sizeof err), QOD_ERR_INVALID);
    QT_TRUE(strstr(err, "priority") != NULL);
}

QTEST(priority_101_rejected)
{
    char err[256] = "";
    QT_EQ_INT(parse_one_with("\"priority\":101", err, sizeof err), QOD_ERR_INVALID);
}

QTEST(priority_bounds_accepted)
{
    char err[256] = "";
    QT_EQ_INT(parse_one_with("\"priority\":1", err, sizeof err), QOD_OK);
    QT_EQ_INT(parse_one_with("\"priority\":100", err, sizeof err), QOD_OK);
}

QTEST(packet_error_loss_rate_out_of_range_rejected)
{
    char err[256] = "";
    QT_EQ_INT(parse_one_with("\"packetErrorLossRate\":11", err, sizeof err), QOD_ERR_INVALID);
}

QTEST(minutes_converted_to_seconds)
{
    qod_profiles *p = NULL;
    char err[256] = "";
    QT_EQ_INT(parse("[{\"name\":\"GOLD\",\"status\":\"ACTIVE\",\"minDuration\":{\"value\":2,\"unit\":\"Minutes\"},"
                    "\"maxDuration\":{\"value\":90,\"unit\":\"Minutes\"}}]",
                    &p, err, sizeof err),
              QOD_OK);
    int64_t min = qod_profiles_at(p, 0)->min_duration_s, max = qod_profiles_at(p, 0)->max_duration_s;
    qod_profiles_destroy(p);
    QT_EQ_INT(min, 120);
    QT_EQ_INT(max, 5400);
}

QTEST(sub_second_min_duration_rounds_up_to_1s)
{
    qod_profiles *p = NULL;
    char err[256] = "";
    QT_EQ_INT(parse("[{\"name\":\"GOLD\",\"status\":\"ACTIVE\","
                    "\"minDuration\":{\"value\":500,\"unit\":\"Milliseconds\"},"
                    "\"packetDelayBudget\":{\"value\":20,\"unit\":\"Milliseconds\"}}]",
                    &p, err, sizeof err),
              QOD_OK);
    int64_t min = qod_profiles_at(p, 0)->min_duration_s, pdb = qod_profiles_at(p, 0)->delay_budget_us;
    qod_profiles_destroy(p);
    QT_EQ_INT(min, 1);
    QT_EQ_INT(pdb, 20000);
}

QTEST(rate_units_converted_to_kbps)
{
    qod_profiles *p = NULL;
    char err[256] = "";
    QT_EQ_INT(parse("[{\"name\":\"GOLD\",\"status\":\"ACTIVE\","
                    "\"targetMinDownstreamRate\":{\"value\":2,\"unit\":\"Gbps\"},"
                    "\"maxDownstreamRate\":{\"value\":1,\"unit\":\"Tbps\"},"
                    "\"targetMinUpstreamRate\":{\"value\":300,\"unit\":\"kbps\"},"
                    "\"maxUpstreamRate\":{\"value\":1000,\"unit\":\"bps\"}}]",
                    &p, err, sizeof err),
              QOD_OK);
    qod_profile q = *qod_profiles_at(p, 0);
    qod_profiles_destroy(p);
    QT_EQ_INT(q.min_down_kbps, 2000000);
    QT_EQ_INT(q.max_down_kbps, 1000000000);
    QT_EQ_INT(q.min_up_kbps, 300);
    QT_EQ_INT(q.max_up_kbps, 1);
}

QTEST(to_json_round_trips)
{
    qod_profiles *p = NULL, *again = NULL;
    char err[256] = "";
    qod_buf out;
    qod_buf_init(&out, 0);
    QT_EQ_INT(qod_profiles_default(&p), QOD_OK);
    int rc = qod_profiles_to_json(p, &out);
    int rc2 = rc ? rc : qod_profiles_parse(out.data, out.len, &again, err, sizeof err);
    bool same = rc2 == QOD_OK && qod_profiles_count(again) == qod_profiles_count(p);
    for (size_t i = 0; same && i < qod_profiles_count(p); i++) {
        const qod_profile *a = qod_profiles_at(p, i), *b = qod_profiles_at(again, i);
        same = strcmp(a->name, b->name) == 0 && strcmp(a->json, b->json) == 0 && a->min_down_kbps == b->min_down_kbps &&
               a->priority == b->priority;
    }
    qod_profiles_destroy(p);
    qod_profiles_destroy(again);
    qod_buf_dispose(&out);
    QT_EQ_INT(rc, QOD_OK);
    QT_EQ_INT(rc2, QOD_OK);
    QT_TRUE(same);
}

QTEST(profile_json_keeps_camara_members)
{
    qod_profiles *p = NULL;
    QT_EQ_INT(qod_profiles_default(&p), QOD_OK);
    const char *j = qod_profiles_find(p, "QOS_M")->json;
    bool ok = strstr(j, "\"name\":\"QOS_M\"") && strstr(j, "\"packetErrorLossRate\":3") && !strchr(j, '\n');
    qod_profiles_destroy(p);
    QT_TRUE(ok);
}

QTEST(status_names)
{
    QT_EQ_STR(qod_profile_status_name(QOD_PROFILE_ACTIVE), "ACTIVE");
    QT_EQ_STR(qod_profile_status_name(QOD_PROFILE_INACTIVE), "INACTIVE");
    QT_EQ_STR(qod_profile_status_name(QOD_PROFILE_DEPRECATED), "DEPRECATED");
}

QTEST(load_from_file)
{
    static const char text[] = "[{\"name\":\"FILE_P\",\"status\":\"INACTIVE\",\"priority\":7}]";
    char path[64], err[256] = "";
    qod_profiles *p = NULL;
    QT_EQ_INT(temp_file(path, text, sizeof text - 1), 0);
    int rc = qod_profiles_load(path, &p, err, sizeof err);
    unlink(path);
    QT_EQ_INT(rc, QOD_OK);
    const qod_profile *f = qod_profiles_find(p, "FILE_P");
    bool ok = f && f->status == QOD_PROFILE_INACTIVE && f->priority == 7 && qod_profiles_count(p) == 1;
    qod_profiles_destroy(p);
    QT_TRUE(ok);
}

QTEST(load_missing_file_fails)
{
    char err[256] = "";
    qod_profiles *p = NULL;
    int rc = qod_profiles_load("/nonexistent/qod-profiles.json", &p, err, sizeof err);
    QT_EQ_INT(rc, -ENOENT);
    QT_TRUE(p == NULL);
    QT_TRUE(strstr(err, "cannot open") != NULL);
}

QTEST(load_invalid_file_fails)
{
    static const char text[] = "[{\"name\":\"X\"}]";
    char path[64], err[256] = "";
    qod_profiles *p = NULL;
    QT_EQ_INT(temp_file(path, text, sizeof text - 1), 0);
    int rc = qod_profiles_load(path, &p, err, sizeof err);
    unlink(path);
    QT_EQ_INT(rc, QOD_ERR_INVALID);
    QT_TRUE(p == NULL);
}

QTEST(load_file_over_1mib_is_limit)
{
    /* Valid JSON padded with whitespace past 1 MiB: the size limit applies before parsing. */
    size_t n = 1024 * 1024 + 1;
    char *text = malloc(n);
    QT_TRUE(text != NULL);
    memset(text, ' ', n);
    memcpy(text, "[{\"name\":\"BIG\",\"status\":\"ACTIVE\"}]", 34);
    char path[64], err[256] = "";
    qod_profiles *p = NULL;
    int wrc = temp_file(path, text, n);
    free(text);
    QT_EQ_INT(wrc, 0);
    int rc = qod_profiles_load(path, &p, err, sizeof err);
    unlink(path);
    QT_EQ_INT(rc, QOD_ERR_LIMIT);
    QT_TRUE(p == NULL);
    QT_TRUE(strstr(err, "larger than 1 MiB") != NULL);
}

QTEST(load_file_of_exactly_1mib_is_parsed)
{
    size_t n = 1024 * 1024;
    char *text = malloc(n);
    QT_TRUE(text != NULL);
    memset(text, ' ', n);
    memcpy(text, "[{\"name\":\"BIG\",\"status\":\"ACTIVE\"}]", 34);
    char path[64], err[256] = "";
    qod_profiles *p = NULL;
    int wrc = temp_file(path, text, n);
    free(text);
    QT_EQ_INT(wrc, 0);
    int rc = qod_profiles_load(path, &p, err, sizeof err);
    unlink(path);
    qod_profiles_destroy(p);
    QT_EQ_INT(rc, QOD_OK);
}

QTEST_MAIN(QT_CASE(default_has_three_active_profiles), QT_CASE(default_durations_are_1s_to_1day),
           QT_CASE(default_qos_s_has_largest_min_down_rate), QT_CASE(default_qos_l_has_highest_priority),
           QT_CASE(find_and_at_out_of_range), QT_CASE(destroy_null_is_noop), QT_CASE(custom_catalogue_parsed),
           QT_CASE(not_an_array_rejected), QT_CASE(malformed_json_rejected), QT_CASE(empty_array_rejected),
           QT_CASE(duplicate_name_rejected), QT_CASE(name_too_short_rejected), QT_CASE(name_with_space_rejected),
           QT_CASE(name_missing_or_not_string_rejected), QT_CASE(bad_status_rejected), QT_CASE(missing_status_rejected),
           QT_CASE(description_not_string_rejected), QT_CASE(rate_value_1025_rejected),
           QT_CASE(rate_value_1024_accepted), QT_CASE(rate_unknown_unit_rejected),
           QT_CASE(rate_fractional_value_rejected), QT_CASE(duration_value_0_rejected),
           QT_CASE(duration_unknown_unit_rejected), QT_CASE(max_duration_below_min_rejected),
           QT_CASE(priority_0_rejected), QT_CASE(priority_101_rejected), QT_CASE(priority_bounds_accepted),
           QT_CASE(packet_error_loss_rate_out_of_range_rejected), QT_CASE(minutes_converted_to_seconds),
           QT_CASE(sub_second_min_duration_rounds_up_to_1s), QT_CASE(rate_units_converted_to_kbps),
           QT_CASE(to_json_round_trips), QT_CASE(profile_json_keeps_camara_members), QT_CASE(status_names),
           QT_CASE(load_from_file), QT_CASE(load_missing_file_fails), QT_CASE(load_invalid_file_fails),
           QT_CASE(load_file_over_1mib_is_limit), QT_CASE(load_file_of_exactly_1mib_is_parsed),
           /* Last: under clang's UBSan (float-cast-overflow) these abort the binary until the bug is fixed. */
           QT_CASE(huge_min_duration_in_days_not_wrapped), QT_CASE(huge_max_duration_in_days_not_reported_below_min),
           QT_CASE(huge_packet_delay_budget_not_negative))
