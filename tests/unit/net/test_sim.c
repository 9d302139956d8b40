#include "net/backend.h"

#include "qtest.h"
#include "util/err.h"

#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#define DELAY_MS 250

/* ASan (gcc spells it __SANITIZE_ADDRESS__, clang __has_feature) does not honour RLIMIT_AS like malloc does. */
#if defined(__SANITIZE_ADDRESS__)
#define UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define UNDER_ASAN 1
#endif
#endif
#define MAX_CALLS 16

/* One call the backend made on the sink; delay_ms is -1 for an immediate report. */
typedef struct {
    char id[64];
    int64_t delay_ms;
    qod_net_outcome o;
    char why[64];
} sink_call;

typedef struct {
    int n;
    sink_call c[MAX_CALLS];
} recorder;

static void record(recorder *r, const char *id, int64_t delay_ms, qod_net_outcome o, const char *why)
{
    if (r->n < MAX_CALLS) {
        sink_call *c = &r->c[r->n];
        snprintf(c->id, sizeof c->id, "%s", id);
        snprintf(c->why, sizeof c->why, "%s", why ? why : "");
        c->delay_ms = delay_ms;
        c->o = o;
    }
    r->n++;
}

static void fake_report(void *ctx, const char *id, qod_net_outcome o, const char *why)
{
    record(ctx, id, -1, o, why);
}

static void fake_report_after(void *ctx, const char *id, int64_t delay_ms, qod_net_outcome o, const char *why)
{
    record(ctx, id, delay_ms, o, why);
}

/* A sim backend with its recorder, the default profiles and room for a few sessions. */
typedef struct {
    recorder rec;
    qod_net_sink sink;
    void *self;
    qod_profiles *profiles;
    const qod_profile *qos_l;
} fixture;

static int fixture_open(fixture *f, int64_t cell_capacity_kbps)
{
    char err[128];
    memset(f, 0, sizeof *f);
    f->sink = (qod_net_sink){&f->rec, fake_report, fake_report_after};
    qod_net_config cfg = {.sandbox_delay_ms = DELAY_MS, .cell_capacity_kbps = cell_capacity_kbps};
    int rc = qod_profiles_default(&f->profiles);
    if (rc == QOD_OK)
        f->qos_l = qod_profiles_find(f->profiles, "QOS_L");
    if (rc == QOD_OK && !f->qos_l)
        rc = QOD_ERR_NOTFOUND;
    return rc ? rc : qod_net_sim.create(&cfg, &f->sink, &f->self, err, sizeof err);
}

static void fixture_close(fixture *f)
{
    qod_net_sim.destroy(f->self);
    qod_profiles_destroy(f->profiles);
}

/* A session's view with the device and subscriber it points to (kept together so pointers stay valid). */
typedef struct {
    qod_device dev;
    qod_subscriber sub;
    qod_net_session ns;
} session;

static void sandbox_session(session *s, const char *id, const char *phone, const qod_profile *p)
{
    memset(s, 0, sizeof *s);
    snprintf(s->dev.phone, sizeof s->dev.phone, "%s", phone);
    s->dev.present = QOD_DEV_PHONE;
    s->dev.ipv4_port = -1;
    s->ns = (qod_net_session){.id = id, .device = &s->dev, .kind = QOD_DEV_PHONE, .profile = p, .sandbox = true};
}

static void live_session(session *s, const char *id, const char *phone, int cell, const qod_profile *p)
{
    sandbox_session(s, id, phone, p);
    snprintf(s->sub.phone, sizeof s->sub.phone, "%s", phone);
    s->sub.cell = cell;
    s->sub.eligible = true;
    s->ns.sandbox = false;
    s->ns.sub = &s->sub;
}

/* Provisions a live session in cell and returns the outcome it was given (-1 when it reported nothing new). */
static int provision_live(fixture *f, const char *id, int cell)
{
    session s;
    char phone[17];
    snprintf(phone, sizeof phone, "+1415555%04d", cell % 10000);
    live_session(&s, id, phone, cell, f->qos_l);
    int before = f->rec.n;
    if (qod_net_sim.provision(f->self, &s.ns) != QOD_OK || f->rec.n != before + 1 || f->rec.n > MAX_CALLS)
        return -1;
    return (int)f->rec.c[f->rec.n - 1].o;
}

static void release_live(fixture *f, const char *id, int cell)
{
    session s;
    live_session(&s, id, "+14155550000", cell, f->qos_l);
    qod_net_sim.release(f->self, &s.ns);
}

QTEST(registered_by_name)
{
    QT_TRUE(qod_net_find("sim") == &qod_net_sim);
    QT_TRUE(qod_net_find("no-such-backend") == NULL);
    QT_EQ_STR(qod_net_sim.name, "sim");
}

QTEST(check_sandbox_404_is_notfound)
{
    fixture f;
    session s;
    QT_EQ_INT(fixture_open(&f, 10000), QOD_OK);
    sandbox_session(&s, "s1", "+99999990404", f.qos_l);
    int rc = qod_net_sim.check(f.self, &s.ns);
    fixture_close(&f);
    QT_EQ_INT(rc, QOD_ERR_NOTFOUND);
}

QTEST(check_sandbox_422_is_unsupported)
{
    fixture f;
    session s;
    QT_EQ_INT(fixture_open(&f, 10000), QOD_OK);
    sandbox_session(&s, "s1", "+99999990422", f.qos_l);
    int rc = qod_net_sim.check(f.self, &s.ns);
    fixture_close(&f);
    QT_EQ_INT(rc, QOD_ERR_UNSUPPORTED);
}

QTEST(check_other_numbers_ok)
{
    fixture f;
    session a, b;
    QT_EQ_INT(fixture_open(&f, 10000), QOD_OK);
    sandbox_session(&a, "s1", "+99999991000", f.qos_l);
    live_session(&b, "s2", "+99999990404", 1, f.qos_l); /* the sandbox table does not apply to live devices */
    int ra = qod_net_sim.check(f.self, &a.ns), rb = qod_net_sim.check(f.self, &b.ns);
    fixture_close(&f);
    QT_EQ_INT(ra, QOD_OK);
    QT_EQ_INT(rb, QOD_OK);
    QT_EQ_INT(f.rec.n, 0);
}

QTEST(provision_1001_refused_after_delay)
{
    fixture f;
    session s;
    QT_EQ_INT(fixture_open(&f, 10000), QOD_OK);
    sandbox_session(&s, "s1", "+99999991001", f.qos_l);
    int rc = qod_net_sim.provision(f.self, &s.ns);
    fixture_close(&f);
    QT_EQ_INT(rc, QOD_OK);
    QT_EQ_INT(f.rec.n, 1);
    QT_EQ_STR(f.rec.c[0].id, "s1");
    QT_EQ_INT(f.rec.c[0].o, QOD_NET_REFUSED);
    QT_EQ_INT(f.rec.c[0].delay_ms, DELAY_MS);
}

QTEST(provision_1003_available_after_10s)
{
    fixture f;
    session s;
    QT_EQ_INT(fixture_open(&f, 10000), QOD_OK);
    sandbox_session(&s, "s1", "+99999991003", f.qos_l);
    qod_net_sim.provision(f.self, &s.ns);
    fixture_close(&f);
    QT_EQ_INT(f.rec.n, 1);
    QT_EQ_INT(f.rec.c[0].o, QOD_NET_AVAILABLE);
    QT_EQ_INT(f.rec.c[0].delay_ms, 10000);
}

QTEST(provision_sandbox_available_after_delay)
{
    fixture f;
    session s;
    QT_EQ_INT(fixture_open(&f, 10000), QOD_OK);
    sandbox_session(&s, "s1", "+99999990200", f.qos_l);
    qod_net_sim.provision(f.self, &s.ns);
    fixture_close(&f);
    QT_EQ_INT(f.rec.n, 1);
    QT_EQ_STR(f.rec.c[0].id, "s1");
    QT_EQ_INT(f.rec.c[0].o, QOD_NET_AVAILABLE);
    QT_EQ_INT(f.rec.c[0].delay_ms, DELAY_MS);
}

QTEST(sandbox_sessions_take_no_capacity)
{
    /* A cell too small for one QOS_L grant still lets sandbox sessions through. */
    fixture f;
    session a, b;
    QT_EQ_INT(fixture_open(&f, 1), QOD_OK);
    sandbox_session(&a, "s1", "+99999990200", f.qos_l);
    sandbox_session(&b, "s2", "+99999990201", f.qos_l);
    qod_net_sim.provision(f.self, &a.ns);
    qod_net_sim.provision(f.self, &b.ns);
    fixture_close(&f);
    QT_EQ_INT(f.rec.n, 2);
    QT_EQ_INT(f.rec.c[0].o, QOD_NET_AVAILABLE);
    QT_EQ_INT(f.rec.c[1].o, QOD_NET_AVAILABLE);
}

QTEST(activated_1002_terminated_after_5s)
{
    fixture f;
    session s;
    QT_EQ_INT(fixture_open(&f, 10000), QOD_OK);
    sandbox_session(&s, "s1", "+99999991002", f.qos_l);
    qod_net_sim.activated(f.self, &s.ns);
    fixture_close(&f);
    QT_EQ_INT(f.rec.n, 1);
    QT_EQ_STR(f.rec.c[0].id, "s1");
    QT_EQ_INT(f.rec.c[0].o, QOD_NET_TERMINATED);
    QT_EQ_INT(f.rec.c[0].delay_ms, 5000);
}

QTEST(activated_other_numbers_report_nothing)
{
    fixture f;
    session a, b;
    QT_EQ_INT(fixture_open(&f, 10000), QOD_OK);
    sandbox_session(&a, "s1", "+99999990200", f.qos_l);
    live_session(&b, "s2", "+99999991002", 1, f.qos_l);
    qod_net_sim.activated(f.self, &a.ns);
    qod_net_sim.activated(f.self, &b.ns);
    fixture_close(&f);
    QT_EQ_INT(f.rec.n, 0);
}

QTEST(live_admission_fills_a_cell)
{
    fixture f;
    QT_EQ_INT(fixture_open(&f, 10000), QOD_OK);
    int a = provision_live(&f, "a", 1), b = provision_live(&f, "b", 1), c = provision_live(&f, "c", 1);
    int64_t delay = f.rec.c[2].delay_ms;
    fixture_close(&f);
    QT_EQ_INT(a, QOD_NET_AVAILABLE);
    QT_EQ_INT(b, QOD_NET_AVAILABLE);
    QT_EQ_INT(c, QOD_NET_REFUSED);
    QT_EQ_INT(delay, DELAY_MS);
}

QTEST(live_admission_is_per_cell)
{
    fixture f;
    QT_EQ_INT(fixture_open(&f, 10000), QOD_OK);
    provision_live(&f, "a", 1);
    provision_live(&f, "b", 1);
    int c = provision_live(&f, "c", 1), d = provision_live(&f, "d", 2);
    fixture_close(&f);
    QT_EQ_INT(c, QOD_NET_REFUSED);
    QT_EQ_INT(d, QOD_NET_AVAILABLE);
}

QTEST(live_admission_without_registry_entry_uses_cell_0)
{
    fixture f;
    session s;
    QT_EQ_INT(fixture_open(&f, 10000), QOD_OK);
    live_session(&s, "x", "+14155550000", 0, f.qos_l);
    s.ns.sub = NULL;
    qod_net_sim.provision(f.self, &s.ns);
    int c0 = provision_live(&f, "a", 0), c0b = provision_live(&f, "b", 0);
    fixture_close(&f);
    QT_EQ_INT(f.rec.c[0].o, QOD_NET_AVAILABLE);
    QT_EQ_INT(c0, QOD_NET_AVAILABLE);
    QT_EQ_INT(c0b, QOD_NET_REFUSED);
}

QTEST(release_frees_capacity)
{
    fixture f;
    QT_EQ_INT(fixture_open(&f, 10000), QOD_OK);
    provision_live(&f, "a", 1);
    provision_live(&f, "b", 1);
    int full = provision_live(&f, "c", 1);
    release_live(&f, "a", 1);
    int after = provision_live(&f, "d", 1);
    fixture_close(&f);
    QT_EQ_INT(full, QOD_NET_REFUSED);
    QT_EQ_INT(after, QOD_NET_AVAILABLE);
}

QTEST(release_twice_is_harmless)
{
    fixture f;
    QT_EQ_INT(fixture_open(&f, 10000), QOD_OK);
    provision_live(&f, "a", 1);
    provision_live(&f, "b", 1);
    release_live(&f, "a", 1);
    release_live(&f, "a", 1); /* must not free a second slot */
    int c = provision_live(&f, "c", 1), d = provision_live(&f, "d", 1);
    fixture_close(&f);
    QT_EQ_INT(c, QOD_NET_AVAILABLE);
    QT_EQ_INT(d, QOD_NET_REFUSED);
}

QTEST(release_of_unknown_session_is_harmless)
{
    fixture f;
    QT_EQ_INT(fixture_open(&f, 10000), QOD_OK);
    release_live(&f, "never", 1);
    release_live(&f, "never", 5000);
    int a = provision_live(&f, "a", 1), b = provision_live(&f, "b", 1), c = provision_live(&f, "c", 1);
    fixture_close(&f);
    QT_EQ_INT(f.rec.n, 3);
    QT_EQ_INT(a, QOD_NET_AVAILABLE);
    QT_EQ_INT(b, QOD_NET_AVAILABLE);
    QT_EQ_INT(c, QOD_NET_REFUSED);
}

QTEST(release_of_refused_session_frees_nothing)
{
    fixture f;
    QT_EQ_INT(fixture_open(&f, 10000), QOD_OK);
    provision_live(&f, "a", 1);
    provision_live(&f, "b", 1);
    provision_live(&f, "c", 1); /* refused: holds nothing */
    release_live(&f, "c", 1);
    int d = provision_live(&f, "d", 1);
    fixture_close(&f);
    QT_EQ_INT(d, QOD_NET_REFUSED);
}

QTEST(provision_twice_does_not_double_count)
{
    fixture f;
    QT_EQ_INT(fixture_open(&f, 10000), QOD_OK);
    int first = provision_live(&f, "a", 1), again = provision_live(&f, "a", 1);
    int b = provision_live(&f, "b", 1), c = provision_live(&f, "c", 1);
    fixture_close(&f);
    QT_EQ_INT(first, QOD_NET_AVAILABLE);
    QT_EQ_INT(again, QOD_NET_AVAILABLE);
    QT_EQ_INT(b, QOD_NET_AVAILABLE);
    QT_EQ_INT(c, QOD_NET_REFUSED);
}

QTEST(destroy_with_grants_outstanding)
{
    /* Grants still held at shutdown are freed by destroy (the sanitizer build checks for leaks). */
    fixture f;
    QT_EQ_INT(fixture_open(&f, 10000), QOD_OK);
    provision_live(&f, "a", 1);
    provision_live(&f, "b", 40);
    fixture_close(&f);
    QT_EQ_INT(f.rec.n, 2);
}

#ifndef UNDER_ASAN
/* Runs in a child whose address space may grow by at most 512 MiB: exits 0 when a live session in `cell` is
 * admitted into an empty cell, 1 when refused, 2 on setup failure. */
static int admit_in_bounded_child(int cell)
{
    pid_t pid = fork();
    if (pid == 0) {
        long pages = 0;
        FILE *statm = fopen("/proc/self/statm", "r");
        if (!statm || fscanf(statm, "%ld", &pages) != 1)
            _exit(2);
        fclose(statm);
        struct rlimit rl = {.rlim_cur = (rlim_t)pages * (rlim_t)sysconf(_SC_PAGESIZE) + (512u << 20)};
        rl.rlim_max = rl.rlim_cur;
        fixture f;
        if (setrlimit(RLIMIT_AS, &rl) != 0 || fixture_open(&f, 10000) != QOD_OK)
            _exit(2);
        int o = provision_live(&f, "a", cell);
        fixture_close(&f);
        _exit(o == QOD_NET_AVAILABLE ? 0 : 1);
    }
    int status = 0;
    if (pid < 0 || waitpid(pid, &status, 0) != pid || !WIFEXITED(status))
        return -1;
    return WEXITSTATUS(status);
}

/* Cell ids up to 1e9 are accepted by `qodctl device add --cell`; admitting a session in such a cell must not need
 * memory proportional to the cell id (the sim keeps one int64 per cell id up to the highest seen: 8 GB here).
 * Not built under ASan. */
QTEST(live_admission_in_cell_1e9_needs_no_gigabytes)
{
    QT_EQ_INT(admit_in_bounded_child(10), 0);
    QT_EQ_INT(admit_in_bounded_child(1000000000), 0);
}
#define BOUNDED_MEMORY_CASES , QT_CASE(live_admission_in_cell_1e9_needs_no_gigabytes)
#else
#define BOUNDED_MEMORY_CASES
#endif

QTEST(destroy_null_is_noop)
{
    qod_net_sim.destroy(NULL);
    QT_TRUE(1);
}

QTEST_MAIN(QT_CASE(registered_by_name), QT_CASE(check_sandbox_404_is_notfound),
           QT_CASE(check_sandbox_422_is_unsupported), QT_CASE(check_other_numbers_ok),
           QT_CASE(provision_1001_refused_after_delay), QT_CASE(provision_1003_available_after_10s),
           QT_CASE(provision_sandbox_available_after_delay), QT_CASE(sandbox_sessions_take_no_capacity),
           QT_CASE(activated_1002_terminated_after_5s), QT_CASE(activated_other_numbers_report_nothing),
           QT_CASE(live_admission_fills_a_cell), QT_CASE(live_admission_is_per_cell),
           QT_CASE(live_admission_without_registry_entry_uses_cell_0), QT_CASE(release_frees_capacity),
           QT_CASE(release_twice_is_harmless), QT_CASE(release_of_unknown_session_is_harmless),
           QT_CASE(release_of_refused_session_frees_nothing), QT_CASE(provision_twice_does_not_double_count),
           QT_CASE(destroy_with_grants_outstanding), QT_CASE(destroy_null_is_noop) BOUNDED_MEMORY_CASES)
