#include "core/registry.h"

#include "qtest.h"
#include "util/err.h"
#include "util/log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* A registry over a real store in a fresh temporary directory; fixture_close removes the files. */
typedef struct {
    char dir[64];
    qod_store *st;
    qod_registry *reg;
} fixture;

static int fixture_load(fixture *f)
{
    qod_store_opts o = {.uri = f->dir, .sync_full = false};
    int rc = qod_store_open(&o, &f->st);
    return rc ? rc : qod_registry_create(f->st, &f->reg);
}

static int fixture_open(fixture *f)
{
    memset(f, 0, sizeof *f);
    /* Migrations log at info level; keep the output to results. */
    qod_log_setup(QOD_LOG_WARN, QOD_LOG_TEXT);
    snprintf(f->dir, sizeof f->dir, "/tmp/qod-registry-XXXXXX");
    if (!mkdtemp(f->dir))
        return -1;
    return fixture_load(f);
}

/* Destroys the registry and closes the store, as a daemon shutdown would, then loads both again. */
static int fixture_restart(fixture *f)
{
    qod_registry_destroy(f->reg);
    qod_store_close(f->st);
    f->reg = NULL;
    f->st = NULL;
    return fixture_load(f);
}

static void fixture_close(fixture *f)
{
    static const char *const files[] = {"qod.db", "qod.db-wal", "qod.db-shm", "qod.db-journal"};
    qod_registry_destroy(f->reg);
    qod_store_close(f->st);
    f->reg = NULL;
    f->st = NULL;
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        char p[128];
        snprintf(p, sizeof p, "%s/%s", f->dir, files[i]);
        unlink(p);
    }
    rmdir(f->dir);
}

static qod_subscriber sub(const char *phone, const char *v4, const char *v6, int cell, bool eligible)
{
    qod_subscriber s;
    memset(&s, 0, sizeof s);
    snprintf(s.phone, sizeof s.phone, "%s", phone);
    snprintf(s.ipv4, sizeof s.ipv4, "%s", v4);
    snprintf(s.ipv6, sizeof s.ipv6, "%s", v6);
    s.cell = cell;
    s.eligible = eligible;
    return s;
}

static int put(fixture *f, qod_subscriber s)
{
    char err[256] = "";
    return qod_registry_put(f->reg, &s, err, sizeof err);
}

static int find_phone(fixture *f, const char *phone, qod_subscriber *out)
{
    qod_device d;
    memset(&d, 0, sizeof d);
    snprintf(d.phone, sizeof d.phone, "%s", phone);
    d.present = QOD_DEV_PHONE;
    return qod_registry_find(f->reg, &d, QOD_DEV_PHONE, out);
}

/* Finds by an ipv4Address identifier; priv may be "" (then port 80 stands in, as the schema requires). */
static int find_v4(fixture *f, const char *pub, const char *priv, qod_subscriber *out)
{
    qod_device d;
    memset(&d, 0, sizeof d);
    snprintf(d.ipv4_public, sizeof d.ipv4_public, "%s", pub);
    snprintf(d.ipv4_private, sizeof d.ipv4_private, "%s", priv);
    d.ipv4_port = priv[0] ? -1 : 80;
    d.present = QOD_DEV_IPV4;
    return qod_registry_find(f->reg, &d, QOD_DEV_IPV4, out);
}

static int find_v6(fixture *f, const char *v6, qod_subscriber *out)
{
    qod_device d;
    memset(&d, 0, sizeof d);
    snprintf(d.ipv6, sizeof d.ipv6, "%s", v6);
    d.present = QOD_DEV_IPV6;
    return qod_registry_find(f->reg, &d, QOD_DEV_IPV6, out);
}

static int count_one(void *arg, const qod_subscriber *s)
{
    (void)s;
    (*(int *)arg)++;
    return 0;
}

QTEST(put_then_find_by_phone)
{
    fixture f;
    qod_subscriber out;
    QT_EQ_INT(fixture_open(&f), QOD_OK);
    int prc = put(&f, sub("+14155550101", "10.0.0.1", "2001:db8::1", 7, true));
    int frc = find_phone(&f, "+14155550101", &out);
    fixture_close(&f);
    QT_EQ_INT(prc, QOD_OK);
    QT_EQ_INT(frc, QOD_OK);
    QT_EQ_STR(out.phone, "+14155550101");
    QT_EQ_STR(out.ipv4, "10.0.0.1");
    QT_EQ_STR(out.ipv6, "2001:db8::1");
    QT_EQ_INT(out.cell, 7);
    QT_TRUE(out.eligible);
}

QTEST(unknown_phone_not_found)
{
    fixture f;
    qod_subscriber out;
    QT_EQ_INT(fixture_open(&f), QOD_OK);
    put(&f, sub("+14155550101", "", "", 0, true));
    int frc = find_phone(&f, "+14155550102", &out);
    fixture_close(&f);
    QT_EQ_INT(frc, QOD_ERR_NOTFOUND);
}

QTEST(find_by_ipv4_private_address)
{
    /* Behind NAT the registered address is the device's own (private) one. */
    fixture f;
    qod_subscriber out;
    QT_EQ_INT(fixture_open(&f), QOD_OK);
    put(&f, sub("+14155550101", "10.0.0.1", "", 0, true));
    int frc = find_v4(&f, "203.0.113.9", "10.0.0.1", &out);
    fixture_close(&f);
    QT_EQ_INT(frc, QOD_OK);
    QT_EQ_STR(out.phone, "+14155550101");
}

QTEST(find_by_ipv4_public_address_without_private)
{
    fixture f;
    qod_subscriber out;
    QT_EQ_INT(fixture_open(&f), QOD_OK);
    put(&f, sub("+14155550101", "203.0.113.9", "", 0, true));
    int frc = find_v4(&f, "203.0.113.9", "", &out);
    fixture_close(&f);
    QT_EQ_INT(frc, QOD_OK);
    QT_EQ_STR(out.phone, "+14155550101");
}

QTEST(find_by_ipv4_uses_private_when_given)
{
    /* The public address matches, but a private address was given and is not registered. */
    fixture f;
    qod_subscriber out;
    QT_EQ_INT(fixture_open(&f), QOD_OK);
    put(&f, sub("+14155550101", "203.0.113.9", "", 0, true));
    int frc = find_v4(&f, "203.0.113.9", "10.9.9.9", &out);
    fixture_close(&f);
    QT_EQ_INT(frc, QOD_ERR_NOTFOUND);
}

QTEST(find_by_ipv6_normalised)
{
    fixture f;
    qod_subscriber out;
    QT_EQ_INT(fixture_open(&f), QOD_OK);
    int prc = put(&f, sub("+14155550101", "", "2001:DB8:0:0:0:0:0:5", 0, true));
    int frc = find_v6(&f, "2001:db8::5", &out);
    fixture_close(&f);
    QT_EQ_INT(prc, QOD_OK);
    QT_EQ_INT(frc, QOD_OK);
    QT_EQ_STR(out.phone, "+14155550101");
    QT_EQ_STR(out.ipv6, "2001:db8::5");
}

/* CAMARA: a device is identified by its observed IPv6 address "or by any single IPv6 address from within the subnet
 * allocated to the device (e.g. adding ::0 to the /64 prefix)". Another subscriber cannot take that /64. */
QTEST(find_by_any_address_of_the_ipv6_64_and_one_subscriber_per_64)
{
    fixture f;
    qod_subscriber out;
    QT_EQ_INT(fixture_open(&f), QOD_OK);
    int prc = put(&f, sub("+14155550101", "", "2001:db8:7:8::5", 0, true));
    int frc[3] = {find_v6(&f, "2001:db8:7:8::", &out), find_v6(&f, "2001:db8:7:8:ffff::9", &out),
                  find_v6(&f, "2001:db8:7:9::5", &out)};
    int taken = put(&f, sub("+14155550102", "", "2001:db8:7:8::6", 0, true));
    int other = put(&f, sub("+14155550103", "", "2001:db8:7:9::6", 0, true));
    fixture_close(&f);
    QT_EQ_INT(prc, QOD_OK);
    QT_EQ_INT(frc[0], QOD_OK);
    QT_EQ_INT(frc[1], QOD_OK);
    QT_EQ_INT(frc[2], QOD_ERR_NOTFOUND);
    QT_EQ_INT(taken, QOD_ERR_EXISTS);
    QT_EQ_INT(other, QOD_OK);
}

QTEST(find_by_nai_not_supported)
{
    fixture f;
    qod_subscriber out;
    qod_device d;
    memset(&d, 0, sizeof d);
    snprintf(d.nai, sizeof d.nai, "u@d.com");
    d.present = QOD_DEV_NAI;
    QT_EQ_INT(fixture_open(&f), QOD_OK);
    put(&f, sub("+14155550101", "10.0.0.1", "", 0, true));
    int frc = qod_registry_find(f.reg, &d, QOD_DEV_NAI, &out);
    fixture_close(&f);
    QT_EQ_INT(frc, QOD_ERR_NOTFOUND);
}

QTEST(replace_updates_fields)
{
    fixture f;
    qod_subscriber out;
    QT_EQ_INT(fixture_open(&f), QOD_OK);
    put(&f, sub("+14155550101", "10.0.0.1", "", 1, true));
    int prc = put(&f, sub("+14155550101", "10.0.0.1", "", 2, false));
    int frc = find_phone(&f, "+14155550101", &out);
    int n = 0;
    qod_registry_each(f.reg, count_one, &n);
    fixture_close(&f);
    QT_EQ_INT(prc, QOD_OK);
    QT_EQ_INT(frc, QOD_OK);
    QT_EQ_INT(out.cell, 2);
    QT_TRUE(!out.eligible);
    QT_EQ_INT(n, 1);
}

QTEST(replace_moves_ip_index)
{
    fixture f;
    qod_subscriber old_out, new_out, v6_out;
    QT_EQ_INT(fixture_open(&f), QOD_OK);
    put(&f, sub("+14155550101", "10.0.0.1", "2001:db8::1", 0, true));
    put(&f, sub("+14155550101", "10.0.0.2", "", 0, true));
    int old_rc = find_v4(&f, "203.0.113.9", "10.0.0.1", &old_out);
    int new_rc = find_v4(&f, "203.0.113.9", "10.0.0.2", &new_out);
    int v6_rc = find_v6(&f, "2001:db8::1", &v6_out);
    fixture_close(&f);
    QT_EQ_INT(old_rc, QOD_ERR_NOTFOUND);
    QT_EQ_INT(new_rc, QOD_OK);
    QT_EQ_INT(v6_rc, QOD_ERR_NOTFOUND);
}

QTEST(remove_forgets_phone_and_ips)
{
    fixture f;
    qod_subscriber out;
    QT_EQ_INT(fixture_open(&f), QOD_OK);
    put(&f, sub("+14155550101", "10.0.0.1", "2001:db8::1", 0, true));
    put(&f, sub("+14155550102", "10.0.0.2", "", 0, true));
    int rrc = qod_registry_remove(f.reg, "+14155550101");
    int p_rc = find_phone(&f, "+14155550101", &out);
    int v4_rc = find_v4(&f, "203.0.113.9", "10.0.0.1", &out);
    int v6_rc = find_v6(&f, "2001:db8::1", &out);
    int other_rc = find_phone(&f, "+14155550102", &out);
    fixture_close(&f);
    QT_EQ_INT(rrc, QOD_OK);
    QT_EQ_INT(p_rc, QOD_ERR_NOTFOUND);
    QT_EQ_INT(v4_rc, QOD_ERR_NOTFOUND);
    QT_EQ_INT(v6_rc, QOD_ERR_NOTFOUND);
    QT_EQ_INT(other_rc, QOD_OK);
}

QTEST(remove_unknown_is_notfound)
{
    fixture f;
    QT_EQ_INT(fixture_open(&f), QOD_OK);
    put(&f, sub("+14155550101", "", "", 0, true));
    qod_registry_remove(f.reg, "+14155550101");
    int again = qod_registry_remove(f.reg, "+14155550101");
    int never = qod_registry_remove(f.reg, "+14155550199");
    fixture_close(&f);
    QT_EQ_INT(again, QOD_ERR_NOTFOUND);
    QT_EQ_INT(never, QOD_ERR_NOTFOUND);
}

QTEST(invalid_phone_rejected_with_message)
{
    fixture f;
    char err[256] = "";
    qod_subscriber s = sub("14155550101", "10.0.0.1", "", 0, true);
    QT_EQ_INT(fixture_open(&f), QOD_OK);
    int rc = qod_registry_put(f.reg, &s, err, sizeof err);
    int n = 0;
    qod_registry_each(f.reg, count_one, &n);
    fixture_close(&f);
    QT_EQ_INT(rc, QOD_ERR_INVALID);
    QT_TRUE(strstr(err, "phone") != NULL);
    QT_EQ_INT(n, 0);
}

QTEST(invalid_ipv4_rejected_with_message)
{
    fixture f;
    char err[256] = "";
    qod_subscriber s = sub("+14155550101", "10.0.0.256", "", 0, true);
    QT_EQ_INT(fixture_open(&f), QOD_OK);
    int rc = qod_registry_put(f.reg, &s, err, sizeof err);
    fixture_close(&f);
    QT_EQ_INT(rc, QOD_ERR_INVALID);
    QT_TRUE(strstr(err, "ipv4/ipv6") != NULL);
}

QTEST(invalid_ipv6_rejected_with_message)
{
    fixture f;
    char err[256] = "";
    qod_subscriber s = sub("+14155550101", "", "10.0.0.1", 0, true);
    QT_EQ_INT(fixture_open(&f), QOD_OK);
    int rc = qod_registry_put(f.reg, &s, err, sizeof err);
    fixture_close(&f);
    QT_EQ_INT(rc, QOD_ERR_INVALID);
    QT_TRUE(strstr(err, "ipv4/ipv6") != NULL);
}

QTEST(negative_cell_rejected_with_message)
{
    fixture f;
    char err[256] = "";
    qod_subscriber s = sub("+14155550101", "", "", -1, true);
    QT_EQ_INT(fixture_open(&f), QOD_OK);
    int rc = qod_registry_put(f.reg, &s, err, sizeof err);
    fixture_close(&f);
    QT_EQ_INT(rc, QOD_ERR_INVALID);
    QT_TRUE(strstr(err, "cell") != NULL);
}

QTEST(persists_across_restart)
{
    fixture f;
    qod_subscriber by_phone, by_v4, by_v6;
    QT_EQ_INT(fixture_open(&f), QOD_OK);
    put(&f, sub("+14155550101", "10.0.0.1", "2001:db8::1", 3, false));
    put(&f, sub("+14155550102", "10.0.0.2", "", 4, true));
    int rrc = fixture_restart(&f);
    int p_rc = rrc ? rrc : find_phone(&f, "+14155550101", &by_phone);
    int v4_rc = rrc ? rrc : find_v4(&f, "203.0.113.9", "10.0.0.2", &by_v4);
    int v6_rc = rrc ? rrc : find_v6(&f, "2001:db8::1", &by_v6);
    fixture_close(&f);
    QT_EQ_INT(rrc, QOD_OK);
    QT_EQ_INT(p_rc, QOD_OK);
    QT_EQ_INT(v4_rc, QOD_OK);
    QT_EQ_INT(v6_rc, QOD_OK);
    QT_EQ_STR(by_phone.ipv4, "10.0.0.1");
    QT_EQ_INT(by_phone.cell, 3);
    QT_TRUE(!by_phone.eligible);
    QT_EQ_STR(by_v4.phone, "+14155550102");
    QT_EQ_STR(by_v6.phone, "+14155550101");
}

QTEST(replace_and_remove_persist_across_restart)
{
    fixture f;
    qod_subscriber out;
    QT_EQ_INT(fixture_open(&f), QOD_OK);
    put(&f, sub("+14155550101", "10.0.0.1", "", 0, true));
    put(&f, sub("+14155550101", "10.0.0.5", "", 0, true));
    put(&f, sub("+14155550102", "10.0.0.2", "", 0, true));
    qod_registry_remove(f.reg, "+14155550102");
    int rrc = fixture_restart(&f);
    int old_rc = rrc ? rrc : find_v4(&f, "203.0.113.9", "10.0.0.1", &out);
    int new_rc = rrc ? rrc : find_v4(&f, "203.0.113.9", "10.0.0.5", &out);
    int gone_rc = rrc ? rrc : find_phone(&f, "+14155550102", &out);
    int n = 0;
    if (!rrc)
        qod_registry_each(f.reg, count_one, &n);
    fixture_close(&f);
    QT_EQ_INT(rrc, QOD_OK);
    QT_EQ_INT(old_rc, QOD_ERR_NOTFOUND);
    QT_EQ_INT(new_rc, QOD_OK);
    QT_EQ_INT(gone_rc, QOD_ERR_NOTFOUND);
    QT_EQ_INT(n, 1);
}

/* Every subscriber qod_registry_put accepts must come back after a restart, up to the largest cell id. */
QTEST(large_cell_id_survives_restart)
{
    fixture f;
    qod_subscriber out;
    QT_EQ_INT(fixture_open(&f), QOD_OK);
    int prc = put(&f, sub("+14155550101", "", "", QOD_CELL_MAX, true));
    int over = put(&f, sub("+14155550102", "", "", QOD_CELL_MAX + 1, true));
    int rrc = fixture_restart(&f);
    int frc = rrc ? rrc : find_phone(&f, "+14155550101", &out);
    fixture_close(&f);
    QT_EQ_INT(prc, QOD_OK);
    QT_EQ_INT(over, QOD_ERR_INVALID);
    QT_EQ_INT(rrc, QOD_OK);
    QT_EQ_INT(frc, QOD_OK);
    QT_EQ_INT(out.cell, QOD_CELL_MAX);
}

/* Two subscribers registered with one IP: whichever the registry answers must not change with a restart. */
QTEST(shared_ip_resolves_the_same_after_restart)
{
    fixture f;
    qod_subscriber before, after;
    QT_EQ_INT(fixture_open(&f), QOD_OK);
    put(&f, sub("+14155550102", "10.0.0.7", "", 0, true));
    put(&f, sub("+14155550101", "10.0.0.7", "", 0, true));
    int brc = find_v4(&f, "203.0.113.9", "10.0.0.7", &before);
    int rrc = fixture_restart(&f);
    int arc = rrc ? rrc : find_v4(&f, "203.0.113.9", "10.0.0.7", &after);
    fixture_close(&f);
    QT_EQ_INT(brc, QOD_OK);
    QT_EQ_INT(arc, QOD_OK);
    QT_EQ_STR(after.phone, before.phone);
}

/* Removing one of two subscribers sharing an IP must not leave the other unfindable by it (it is after a restart). */
QTEST(shared_ip_still_found_after_other_holder_removed)
{
    fixture f;
    qod_subscriber out;
    QT_EQ_INT(fixture_open(&f), QOD_OK);
    put(&f, sub("+14155550101", "10.0.0.7", "", 0, true));
    put(&f, sub("+14155550102", "10.0.0.7", "", 0, true));
    qod_registry_remove(f.reg, "+14155550102");
    int live_rc = find_v4(&f, "203.0.113.9", "10.0.0.7", &out);
    int rrc = fixture_restart(&f);
    int restarted_rc = rrc ? rrc : find_v4(&f, "203.0.113.9", "10.0.0.7", &out);
    fixture_close(&f);
    QT_EQ_INT(restarted_rc, QOD_OK);
    QT_EQ_INT(live_rc, restarted_rc);
}

QTEST(each_visits_all)
{
    fixture f;
    int n = 0;
    QT_EQ_INT(fixture_open(&f), QOD_OK);
    put(&f, sub("+14155550101", "", "", 0, true));
    put(&f, sub("+14155550102", "", "", 0, true));
    put(&f, sub("+14155550103", "", "", 0, true));
    qod_registry_each(f.reg, count_one, &n);
    fixture_close(&f);
    QT_EQ_INT(n, 3);
}

#define MANY 3000

typedef struct {
    int seen[MANY];
    int calls, stop_after;
} tally;

static int tally_one(void *arg, const qod_subscriber *s)
{
    tally *t = arg;
    int i = atoi(s->phone + 8); /* +1415555NNNN */
    if (i >= 0 && i < MANY)
        t->seen[i]++;
    return ++t->calls == t->stop_after;
}

/* The walk takes the read lock for a slice at a time (256 buckets): thousands of subscribers, each seen once. */
QTEST(each_visits_every_one_of_many_once_in_slices)
{
    fixture f;
    static tally t;
    int failed = 0, once = 0;
    memset(&t, 0, sizeof t);
    QT_EQ_INT(fixture_open(&f), QOD_OK);
    for (int i = 0; i < MANY; i++) {
        char phone[32];
        snprintf(phone, sizeof phone, "+1415555%04d", i);
        failed += put(&f, sub(phone, "", "", 0, true)) != QOD_OK;
    }
    qod_registry_each(f.reg, tally_one, &t);
    fixture_close(&f);
    for (int i = 0; i < MANY; i++)
        once += t.seen[i] == 1;
    QT_EQ_INT(failed, 0);
    QT_EQ_INT(t.calls, MANY);
    QT_EQ_INT(once, MANY);
}

/* fn returning non-zero ends the walk at once, in whichever slice it is. */
QTEST(each_stops_when_fn_says_so)
{
    fixture f;
    static tally t;
    memset(&t, 0, sizeof t);
    t.stop_after = 700;
    QT_EQ_INT(fixture_open(&f), QOD_OK);
    for (int i = 0; i < 1000; i++) {
        char phone[32];
        snprintf(phone, sizeof phone, "+1415555%04d", i);
        put(&f, sub(phone, "", "", 0, true));
    }
    qod_registry_each(f.reg, tally_one, &t);
    fixture_close(&f);
    QT_EQ_INT(t.calls, 700);
}

QTEST(subscriber_to_json)
{
    qod_subscriber s = sub("+14155550101", "10.0.0.1", "", 12, false);
    qod_buf b;
    qod_buf_init(&b, 0);
    int rc = qod_subscriber_to_json(&s, &b);
    char text[256];
    snprintf(text, sizeof text, "%s", b.data ? b.data : "");
    qod_buf_dispose(&b);
    QT_EQ_INT(rc, QOD_OK);
    QT_EQ_STR(text, "{\"phone\":\"+14155550101\",\"ipv4\":\"10.0.0.1\",\"ipv6\":\"\",\"cell\":12,\"eligible\":false}");
}

QTEST(destroy_null_is_noop)
{
    qod_registry_destroy(NULL);
    QT_TRUE(1);
}

QTEST_MAIN(QT_CASE(put_then_find_by_phone), QT_CASE(unknown_phone_not_found), QT_CASE(find_by_ipv4_private_address),
           QT_CASE(find_by_ipv4_public_address_without_private), QT_CASE(find_by_ipv4_uses_private_when_given),
           QT_CASE(find_by_ipv6_normalised), QT_CASE(find_by_any_address_of_the_ipv6_64_and_one_subscriber_per_64),
           QT_CASE(find_by_nai_not_supported), QT_CASE(replace_updates_fields), QT_CASE(replace_moves_ip_index),
           QT_CASE(remove_forgets_phone_and_ips), QT_CASE(remove_unknown_is_notfound),
           QT_CASE(invalid_phone_rejected_with_message), QT_CASE(invalid_ipv4_rejected_with_message),
           QT_CASE(invalid_ipv6_rejected_with_message), QT_CASE(negative_cell_rejected_with_message),
           QT_CASE(persists_across_restart), QT_CASE(replace_and_remove_persist_across_restart),
           QT_CASE(large_cell_id_survives_restart), QT_CASE(shared_ip_resolves_the_same_after_restart),
           QT_CASE(shared_ip_still_found_after_other_holder_removed), QT_CASE(each_visits_all),
           QT_CASE(each_visits_every_one_of_many_once_in_slices), QT_CASE(each_stops_when_fn_says_so),
           QT_CASE(subscriber_to_json), QT_CASE(destroy_null_is_noop))
