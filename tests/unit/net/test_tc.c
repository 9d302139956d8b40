/* The tc backend against a real kernel: each test that needs one runs in a private network namespace holding
 * only a loopback interface, which the backend manages (so nothing outside the test is touched). Without the
 * right to create a namespace (not root), those tests print "SKIP name: reason". */
#include "net/backend.h"
#include "net/tc_nl.h"

#include "core/loop.h"
#include "qtest.h"
#include "util/buf.h"
#include "util/err.h"
#include "util/log.h"

#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define MAX_CALLS 16
#define SANDBOX_DELAY_MS 250

typedef struct {
    char id[64];
    int64_t delay_ms; /* -1 for an immediate report */
    qod_net_outcome o;
} sink_call;

typedef struct {
    int n;
    sink_call c[MAX_CALLS];
} recorder;

static void record(recorder *r, const char *id, int64_t delay_ms, qod_net_outcome o)
{
    if (r->n < MAX_CALLS) {
        snprintf(r->c[r->n].id, sizeof r->c[r->n].id, "%s", id);
        r->c[r->n].delay_ms = delay_ms;
        r->c[r->n].o = o;
    }
    r->n++;
}

static void fake_report(void *ctx, const char *id, qod_net_outcome o, const char *why)
{
    (void)why;
    record(ctx, id, -1, o);
}

static void fake_report_after(void *ctx, const char *id, int64_t delay_ms, qod_net_outcome o, const char *why)
{
    (void)why;
    record(ctx, id, delay_ms, o);
}

typedef struct {
    recorder rec;
    qod_net_sink sink;
    qod_net_config cfg;
    void *self;
    qod_profiles *profiles;
    char err[256];
} fixture;

static void fixture_init(fixture *f, const char *dev)
{
    memset(f, 0, sizeof *f);
    f->sink = (qod_net_sink){&f->rec, fake_report, fake_report_after};
    f->cfg = (qod_net_config){.sandbox_delay_ms = SANDBOX_DELAY_MS,
                              .cell_capacity_kbps = 100000,
                              .tc_dev = dev,
                              .tc_uplink_dev = "",
                              .tc_link_kbps = 20000,
                              .tc_share = 0.8};
    qod_profiles_default(&f->profiles);
}

static int fixture_open(fixture *f)
{
    return qod_net_tc.create(&f->cfg, &f->sink, &f->self, f->err, sizeof f->err);
}

static void fixture_close(fixture *f)
{
    qod_net_tc.destroy(f->self);
    f->self = NULL;
    qod_profiles_destroy(f->profiles);
}

typedef struct {
    qod_device dev;
    qod_subscriber sub;
    qod_net_session ns;
} session;

static void make_session(session *s, fixture *f, const char *id, const char *phone, const char *ipv4,
                         const char *profile, bool sandbox, const char *flows)
{
    memset(s, 0, sizeof *s);
    snprintf(s->dev.phone, sizeof s->dev.phone, "%s", phone);
    s->dev.present = QOD_DEV_PHONE;
    s->dev.ipv4_port = -1;
    snprintf(s->sub.phone, sizeof s->sub.phone, "%s", phone);
    snprintf(s->sub.ipv4, sizeof s->sub.ipv4, "%s", ipv4 ? ipv4 : "");
    s->sub.eligible = true;
    s->ns = (qod_net_session){.id = id,
                              .device = &s->dev,
                              .kind = QOD_DEV_PHONE,
                              .profile = qod_profiles_find(f->profiles, profile),
                              .sandbox = sandbox,
                              .sub = sandbox ? NULL : &s->sub,
                              .flows = flows};
}

/* Session classes (1:100..1:fffd) and session filter priorities on lo. */
static void count_ours(int *classes, int *prios)
{
    qod_tc_nl *nl = NULL;
    qod_tc_state st = {0};
    char err[256];
    int ifindex = 0;
    *classes = *prios = -1;
    if (qod_tc_nl_open(&nl, err, sizeof err) == QOD_OK && qod_tc_nl_ifindex(nl, "lo", &ifindex, err, sizeof err) == 0 &&
        qod_tc_nl_dump(nl, ifindex, &st, err, sizeof err) == QOD_OK) {
        *classes = *prios = 0;
        uint32_t last = 0;
        for (size_t i = 0; i < st.nclasses; i++)
            *classes += st.classes[i].handle >> 16 == 1 && qod_tc_plan_owned(st.classes[i].handle & 0xffff);
        for (size_t i = 0; i < st.nfilters; i++)
            if (qod_tc_plan_owned(st.filters[i].pref) && st.filters[i].pref != last) {
                last = st.filters[i].pref;
                (*prios)++;
            }
    }
    qod_tc_state_dispose(&st);
    qod_tc_nl_close(nl);
}

/* ---- without a kernel ---------------------------------------------------------------------------------------- */

QTEST(registered_by_name)
{
    QT_TRUE(qod_net_find("tc") == &qod_net_tc);
    QT_EQ_STR(qod_net_tc.name, "tc");
}

QTEST(create_needs_a_device_and_a_rate)
{
    fixture f;
    fixture_init(&f, "");
    int rc = fixture_open(&f);
    QT_EQ_INT(rc, QOD_ERR_INVALID);
    QT_TRUE(strstr(f.err, "--tc-dev") != NULL);
    f.cfg.tc_dev = "eth0";
    f.cfg.tc_link_kbps = 0;
    rc = fixture_open(&f);
    fixture_close(&f);
    QT_EQ_INT(rc, QOD_ERR_INVALID);
    QT_TRUE(strstr(f.err, "--tc-link-rate") != NULL);
}

/* ---- in a private network namespace ------------------------------------------------------------------------ */

QTEST(unknown_interface_fails_start)
{
    fixture f;
    fixture_init(&f, "nosuch0");
    int rc = fixture_open(&f);
    fixture_close(&f);
    QT_EQ_INT(rc, QOD_ERR_NOTFOUND);
    QT_TRUE(strstr(f.err, "no network interface named 'nosuch0'") != NULL);
}

QTEST(provision_installs_and_release_removes)
{
    fixture f;
    session s;
    int classes, prios;
    fixture_init(&f, "lo");
    QT_EQ_INT(fixture_open(&f), QOD_OK);
    make_session(&s, &f, "s-l", "+15550000001", "10.0.0.2", "QOS_L", false, NULL);
    QT_EQ_INT(qod_net_tc.check(f.self, &s.ns), QOD_OK);
    QT_EQ_INT(qod_net_tc.provision(f.self, &s.ns), QOD_OK);
    count_ours(&classes, &prios);
    QT_EQ_INT(f.rec.n, 1);
    QT_EQ_STR(f.rec.c[0].id, "s-l");
    QT_EQ_INT(f.rec.c[0].o, QOD_NET_AVAILABLE);
    QT_EQ_INT(f.rec.c[0].delay_ms, 0);
    QT_EQ_INT(classes, 1);
    QT_EQ_INT(prios, 1);
    /* Provisioning again (as at restart) re-installs in place. */
    QT_EQ_INT(qod_net_tc.provision(f.self, &s.ns), QOD_OK);
    count_ours(&classes, &prios);
    QT_EQ_INT(classes, 1);
    qod_net_tc.release(f.self, &s.ns);
    count_ours(&classes, &prios);
    QT_EQ_INT(classes, 0);
    QT_EQ_INT(prios, 0);
    qod_net_tc.release(f.self, &s.ns); /* idempotent */
    fixture_close(&f);
}

QTEST(admission_keeps_guarantees_within_the_share)
{
    fixture f;
    session a, b, c;
    fixture_init(&f, "lo");
    QT_EQ_INT(fixture_open(&f), QOD_OK);
    make_session(&a, &f, "s-a", "+15550000001", "10.0.0.2", "QOS_S", false, NULL);
    make_session(&b, &f, "s-b", "+15550000002", "10.0.0.3", "QOS_S", false, NULL);
    make_session(&c, &f, "s-c", "+15550000003", "10.0.0.4", "QOS_S", false, NULL);
    qod_net_tc.provision(f.self, &a.ns); /* 15 of 16 mbit */
    qod_net_tc.provision(f.self, &b.ns); /* refused */
    qod_net_tc.release(f.self, &a.ns);
    qod_net_tc.provision(f.self, &c.ns); /* fits again */
    qod_net_tc.release(f.self, &b.ns);
    qod_net_tc.release(f.self, &c.ns);
    fixture_close(&f);
    QT_EQ_INT(f.rec.n, 3);
    QT_EQ_INT(f.rec.c[0].o, QOD_NET_AVAILABLE);
    QT_EQ_STR(f.rec.c[1].id, "s-b");
    QT_EQ_INT(f.rec.c[1].o, QOD_NET_TERMINATED);
    QT_EQ_STR(f.rec.c[2].id, "s-c");
    QT_EQ_INT(f.rec.c[2].o, QOD_NET_AVAILABLE);
}

QTEST(check_refuses_what_cannot_be_enforced)
{
    fixture f;
    session noip, v6, ok;
    fixture_init(&f, "lo");
    QT_EQ_INT(fixture_open(&f), QOD_OK);
    make_session(&noip, &f, "s1", "+15550000001", NULL, "QOS_L", false, NULL);
    make_session(&v6, &f, "s2", "+15550000002", "10.0.0.3", "QOS_L", false,
                 "{\"applicationServer\":{\"ipv6Address\":\"2001:db8::1\"}}");
    make_session(&ok, &f, "s3", "+15550000003", "10.0.0.4", "QOS_L", false,
                 "{\"applicationServer\":{\"ipv4Address\":\"192.0.2.0/24\"},\"devicePorts\":{\"ports\":[1,2,3]}}");
    int r1 = qod_net_tc.check(f.self, &noip.ns), r2 = qod_net_tc.check(f.self, &v6.ns);
    int r3 = qod_net_tc.check(f.self, &ok.ns);
    fixture_close(&f);
    QT_EQ_INT(r1, QOD_ERR_UNSUPPORTED);
    QT_EQ_INT(r2, QOD_ERR_UNSUPPORTED);
    QT_EQ_INT(r3, QOD_OK);
}

QTEST(sandbox_goes_to_the_simulated_network)
{
    fixture f;
    session a, b;
    int classes, prios;
    fixture_init(&f, "lo");
    QT_EQ_INT(fixture_open(&f), QOD_OK);
    make_session(&a, &f, "s1", "+99999990404", NULL, "QOS_L", true, NULL);
    make_session(&b, &f, "s2", "+99999991001", NULL, "QOS_L", true, NULL);
    int rc = qod_net_tc.check(f.self, &a.ns);
    qod_net_tc.provision(f.self, &b.ns);
    count_ours(&classes, &prios);
    qod_net_tc.release(f.self, &b.ns);
    fixture_close(&f);
    QT_EQ_INT(rc, QOD_ERR_NOTFOUND);
    QT_EQ_INT(f.rec.n, 1);
    QT_EQ_INT(f.rec.c[0].o, QOD_NET_REFUSED);
    QT_EQ_INT(f.rec.c[0].delay_ms, SANDBOX_DELAY_MS);
    QT_EQ_INT(classes, 0);
}

QTEST(restart_keeps_enforcing_and_removes_what_no_session_claims)
{
    fixture f;
    session a, b;
    qod_loop *loop = NULL;
    int classes, prios;
    fixture_init(&f, "lo");
    QT_EQ_INT(fixture_open(&f), QOD_OK);
    make_session(&a, &f, "s-a", "+15550000001", "10.0.0.2", "QOS_L", false, NULL);
    make_session(&b, &f, "s-b", "+15550000002", "10.0.0.3", "QOS_M", false, NULL);
    qod_net_tc.provision(f.self, &a.ns);
    qod_net_tc.provision(f.self, &b.ns);
    qod_net_tc.destroy(f.self); /* a crash: the kernel keeps both */
    f.self = NULL;
    count_ours(&classes, &prios);
    QT_EQ_INT(classes, 2);
    /* The next start, as the engine runs it: create with the loop, provision the sessions still active (only
     * s-a), then start the loop. Nothing is removed before the loop runs, so enforcement has no gap. */
    QT_EQ_INT(qod_loop_create(&loop), QOD_OK);
    f.cfg.loop = loop;
    QT_EQ_INT(fixture_open(&f), QOD_OK);
    qod_net_tc.provision(f.self, &a.ns);
    count_ours(&classes, &prios);
    QT_EQ_INT(classes, 3);
    QT_EQ_INT(qod_loop_start(loop), QOD_OK);
    for (int i = 0; i < 200 && classes != 1; i++) {
        usleep(10000);
        count_ours(&classes, &prios);
    }
    qod_loop_destroy(loop);
    QT_EQ_INT(classes, 1);
    QT_EQ_INT(prios, 1);
    qod_net_tc.release(f.self, &a.ns);
    count_ours(&classes, &prios);
    fixture_close(&f);
    QT_EQ_INT(classes, 0);
}

QTEST(no_reconciliation_when_start_fails)
{
    fixture f;
    session a;
    qod_loop *loop = NULL;
    int classes, prios;
    fixture_init(&f, "lo");
    QT_EQ_INT(fixture_open(&f), QOD_OK);
    make_session(&a, &f, "s-a", "+15550000001", "10.0.0.2", "QOS_L", false, NULL);
    qod_net_tc.provision(f.self, &a.ns);
    qod_net_tc.destroy(f.self);
    /* A start that fails after the backend was created (say, the store cannot be read) must leave the kernel's
     * classes alone: the loop never runs, so nothing is swept. */
    QT_EQ_INT(qod_loop_create(&loop), QOD_OK);
    f.cfg.loop = loop;
    QT_EQ_INT(fixture_open(&f), QOD_OK);
    qod_loop_destroy(loop);
    qod_net_tc.destroy(f.self);
    f.self = NULL;
    count_ours(&classes, &prios);
    QT_EQ_INT(classes, 1);
    f.cfg.loop = NULL; /* clean up: a start without a loop reconciles at once */
    QT_EQ_INT(fixture_open(&f), QOD_OK);
    count_ours(&classes, &prios);
    fixture_close(&f);
    QT_EQ_INT(classes, 0);
}

QTEST(metrics_report_enforcement)
{
    fixture f;
    session a;
    qod_buf b;
    fixture_init(&f, "lo");
    QT_EQ_INT(fixture_open(&f), QOD_OK);
    make_session(&a, &f, "s-a", "+15550000001", "10.0.0.2", "QOS_S", false, NULL);
    qod_net_tc.provision(f.self, &a.ns);
    qod_buf_init(&b, 1 << 16);
    qod_net_tc.metrics(f.self, &b);
    bool ok = b.data && strstr(b.data, "qod_tc_sessions 1\n") &&
              strstr(b.data, "qod_tc_guaranteed_kbps{direction=\"down\"} 15000\n") &&
              strstr(b.data, "qod_tc_guaranteed_budget_kbps 16000\n");
    qod_buf_dispose(&b);
    qod_net_tc.release(f.self, &a.ns);
    fixture_close(&f);
    QT_TRUE(ok);
}

int main(int argc, char **argv)
{
    static const qtest_case plain[] = {QT_CASE(registered_by_name), QT_CASE(create_needs_a_device_and_a_rate)};
    static const qtest_case kernel[] = {QT_CASE(unknown_interface_fails_start),
                                        QT_CASE(provision_installs_and_release_removes),
                                        QT_CASE(admission_keeps_guarantees_within_the_share),
                                        QT_CASE(check_refuses_what_cannot_be_enforced),
                                        QT_CASE(sandbox_goes_to_the_simulated_network),
                                        QT_CASE(restart_keeps_enforcing_and_removes_what_no_session_claims),
                                        QT_CASE(no_reconciliation_when_start_fails),
                                        QT_CASE(metrics_report_enforcement)};
    qod_log_setup(QOD_LOG_OFF, QOD_LOG_TEXT);
    int fails = 0;
    for (size_t i = 0; i < sizeof plain / sizeof plain[0]; i++) {
        if (argc > 1 && strcmp(argv[1], plain[i].name) != 0)
            continue;
        int f = 0;
        plain[i].fn(&f);
        printf("%s %s\n", f ? "FAIL" : "PASS", plain[i].name);
        fails += f;
    }
    /* A new network namespace holds only a loopback interface: whatever the backend does stays in here. */
    const char *why = unshare(CLONE_NEWNET) == 0 ? NULL : "cannot create a network namespace (needs root)";
    for (size_t i = 0; i < sizeof kernel / sizeof kernel[0]; i++) {
        if (argc > 1 && strcmp(argv[1], kernel[i].name) != 0)
            continue;
        if (why) {
            printf("SKIP %s: %s\n", kernel[i].name, why);
            continue;
        }
        int f = 0;
        kernel[i].fn(&f);
        printf("%s %s\n", f ? "FAIL" : "PASS", kernel[i].name);
        fflush(stdout);
        fails += f;
    }
    return fails ? 1 : 0;
}
