/* A throwaway PostgreSQL 15 server for the unit tests that need one (test_store.c, core/test_cluster.c):
 * tests/tools/pgtmp.sh starts it on a free port below the ephemeral range in a temporary directory, and a guardian
 * process stops it and removes the directory when the test process ends, however it ends.
 *
 * Header-only, as each unit test is one source file: include it once, from the test's .c file. Cases run through
 * pgfix_run_case, which prints "SKIP name: reason" instead of running them when the server could not start. */
#ifndef QOD_TESTS_PGFIX_H
#define QOD_TESTS_PGFIX_H

#include "qtest.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <libpq-fe.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* The server shared by every case of the test binary; each case starts from an empty schema. */
static struct {
    char dir[64];
    char script[PATH_MAX];
    char uri[128];
    char port[16];
    pid_t guardian;
    int guard_fd;
} pgfix = {.guardian = -1, .guard_fd = -1};

/* ---- running the helper script ---- */

/* Runs argv; its stdout (first line, newline dropped) goes to out when out is non-NULL. Returns the exit status. */
static int pgfix_run(char *const argv[], char *out, size_t cap)
{
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0)
        return -1;
    pid_t pid = fork();
    if (pid == 0) {
        dup2(fds[1], STDOUT_FILENO);
        execv(argv[0], argv);
        _exit(127);
    }
    close(fds[1]);
    char buf[512];
    size_t n = 0;
    ssize_t got;
    while ((got = read(fds[0], buf + n, sizeof buf - 1 - n)) > 0 || (got < 0 && errno == EINTR))
        n += got > 0 ? (size_t)got : 0;
    close(fds[0]);
    buf[n] = '\0';
    buf[strcspn(buf, "\n")] = '\0';
    if (out && cap) {
        size_t len = strlen(buf) < cap ? strlen(buf) : cap - 1;
        memcpy(out, buf, len);
        out[len] = '\0';
    }
    int status = 0;
    if (pid < 0 || waitpid(pid, &status, 0) != pid)
        return -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* tests/tools/pgtmp.sh, from the working directory or from a parent of this binary's directory. */
static int pgfix_find_script(void)
{
    if (access("tests/tools/pgtmp.sh", X_OK) == 0 && realpath("tests/tools/pgtmp.sh", pgfix.script))
        return 0;
    char dir[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", dir, sizeof dir - 1);
    if (n <= 0)
        return -1;
    dir[n] = '\0';
    for (char *slash; (slash = strrchr(dir, '/')) != NULL && slash != dir;) {
        *slash = '\0';
        snprintf(pgfix.script, sizeof pgfix.script, "%.*s/tests/tools/pgtmp.sh", PATH_MAX - 24, dir);
        if (access(pgfix.script, X_OK) == 0)
            return 0;
    }
    return -1;
}

static int pgfix_script(const char *verb, char *out, size_t cap)
{
    char *argv[] = {pgfix.script, (char *)verb, pgfix.dir, strcmp(verb, "start") == 0 ? pgfix.port : NULL, NULL};
    return pgfix_run(argv, out, cap);
}

static int pgfix_remove_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb, (void)flag, (void)ftw;
    remove(path);
    return 0;
}

/* Reaps the stopped servers: this process is their subreaper, so they do not linger as zombies. */
static void pgfix_reap(void)
{
    pid_t pid;
    while ((pid = waitpid(-1, NULL, WNOHANG)) > 0)
        if (pid == pgfix.guardian)
            pgfix.guardian = -1;
}

/* Forks the process that waits for this one to end (its pipe closes) and then stops the cluster and removes the
 * directory. */
static int pgfix_start_guardian(void)
{
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0)
        return -1;
    pgfix.guardian = fork();
    if (pgfix.guardian == 0) {
        close(fds[1]);
        for (;;) {
            char c;
            ssize_t got = read(fds[0], &c, 1);
            if (got == 0 || (got < 0 && errno != EINTR))
                break;
        }
        pgfix_script("stop", NULL, 0);
        nftw(pgfix.dir, pgfix_remove_entry, 16, FTW_DEPTH | FTW_PHYS);
        _exit(0);
    }
    close(fds[0]);
    if (pgfix.guardian < 0) {
        close(fds[1]);
        return -1;
    }
    pgfix.guard_fd = fds[1];
    return 0;
}

/* True when nothing holds port on 127.0.0.1, not even a connection in TIME_WAIT. */
static bool pgfix_port_free(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {
        .sin_family = AF_INET, .sin_port = htons((uint16_t)port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    bool ok = fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof a) == 0;
    if (fd >= 0)
        close(fd);
    return ok;
}

/* A free port below the kernel's ephemeral range, so that no outgoing connection of a busy machine can take it
 * between the probe and the server's bind, nor while the recovery case restarts the server on it. */
static void pgfix_pick_port(void)
{
    int low = 32768, high = 0, port = 0;
    FILE *f = fopen("/proc/sys/net/ipv4/ip_local_port_range", "r");
    if (f && fscanf(f, "%d %d", &low, &high) != 2)
        low = 32768;
    if (f)
        fclose(f);
    int base = low > 12000 ? low - 11000 : 1024;
    unsigned seed = (unsigned)getpid() ^ (unsigned)time(NULL);
    for (int i = 0; i < 64 && !port; i++) {
        int p = base + (int)(rand_r(&seed) % 10000u);
        port = pgfix_port_free(p) ? p : 0;
    }
    snprintf(pgfix.port, sizeof pgfix.port, "%d", port ? port : base);
}

/* NULL when the server runs; otherwise why the cases that need it skip. *fatal when that is a failure, not a skip. */
static const char *pgfix_start(int *fatal)
{
    const char *bindir = getenv("PG_BINDIR") ? getenv("PG_BINDIR") : "/usr/lib/postgresql/15/bin";
    char initdb[PATH_MAX];
    snprintf(initdb, sizeof initdb, "%s/initdb", bindir);
    *fatal = 0;
    if (access(initdb, X_OK) != 0)
        return "PostgreSQL 15 server binaries not installed (apt-get install postgresql)";
    *fatal = 1;
    /* The servers pg_ctl starts become our children once it exits, so that we can reap them after a stop. */
    prctl(PR_SET_CHILD_SUBREAPER, 1);
    if (pgfix_find_script() != 0)
        return "tests/tools/pgtmp.sh not found";
    snprintf(pgfix.dir, sizeof pgfix.dir, "/tmp/qod-pg-XXXXXX");
    if (!mkdtemp(pgfix.dir))
        return "mkdtemp failed";
    if (pgfix_start_guardian() != 0)
        return "cannot fork the guardian";
    /* Another process may take the port between the probe and the server's bind: try a few. */
    for (int attempt = 0; attempt < 4; attempt++) {
        pgfix_pick_port();
        if (pgfix_script("start", pgfix.uri, sizeof pgfix.uri) == 0 && strncmp(pgfix.uri, "postgres://", 11) == 0)
            return NULL;
    }
    return "pgtmp.sh start failed";
}

/* Stops the server (through the guardian) and removes its directory. */
static void pgfix_stop(void)
{
    if (pgfix.guard_fd >= 0)
        close(pgfix.guard_fd);
    pgfix.guard_fd = -1;
    if (pgfix.guardian > 0)
        waitpid(pgfix.guardian, NULL, 0);
    pgfix.guardian = -1;
    pgfix_reap();
}

/* ---- direct SQL, for setup and for checks the store API cannot make ---- */

/* Runs sql as the application role; the first value of the result goes to out (may be NULL). */
static int pgfix_sql(const char *q, char *out, size_t cap)
{
    PGconn *c = PQconnectdb(pgfix.uri);
    int rc = -1;
    if (PQstatus(c) == CONNECTION_OK) {
        PGresult *r = PQexec(c, q);
        ExecStatusType s = PQresultStatus(r);
        rc = s == PGRES_COMMAND_OK || s == PGRES_TUPLES_OK ? 0 : -1;
        if (rc == 0 && out)
            snprintf(out, cap, "%s", PQntuples(r) > 0 ? PQgetvalue(r, 0, 0) : "");
        if (rc != 0)
            printf("  sql failed: %s", PQerrorMessage(c));
        PQclear(r);
    }
    PQfinish(c);
    return rc;
}

/* A connection of its own that opens a transaction, runs sql in it (a statement that takes a lock) and leaves it
 * open, holding what it took, until pgfix_unblock() commits and closes. *rows: the rows sql returned (0 for a
 * command), -1 when it failed. */
static PGconn *pgfix_block(const char *sql, int *rows)
{
    PGconn *c = PQconnectdb(pgfix.uri);
    PGresult *r = PQexec(c, "BEGIN");
    bool begun = PQresultStatus(r) == PGRES_COMMAND_OK;
    PQclear(r);
    r = begun ? PQexec(c, sql) : NULL;
    ExecStatusType s = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;
    *rows = s == PGRES_TUPLES_OK ? PQntuples(r) : s == PGRES_COMMAND_OK ? 0 : -1;
    PQclear(r);
    return c;
}

static void pgfix_unblock(PGconn *c)
{
    PQclear(PQexec(c, "COMMIT"));
    PQfinish(c);
}

static int pgfix_sql_int(const char *q)
{
    char v[32] = "";
    return pgfix_sql(q, v, sizeof v) == 0 ? atoi(v) : -1;
}

static int pgfix_drop_schema(void)
{
    return pgfix_sql("SET client_min_messages = warning; DROP TABLE IF EXISTS apps, devices, sessions, idempotency,"
                     " meta, events, leases, schema_version",
                     NULL, 0);
}

/* CLOCK_REALTIME ms from now, for pthread_cond_timedwait: waits in these tests are bounded and end as soon as what
 * they wait for happened. */
static struct timespec pgfix_deadline(int ms)
{
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    t.tv_sec += ms / 1000;
    t.tv_nsec += (ms % 1000) * 1000000L;
    if (t.tv_nsec >= 1000000000L) {
        t.tv_sec++;
        t.tv_nsec -= 1000000000L;
    }
    return t;
}

/* Runs one case as "<prefix>.<name>", or prints why it skips; only, when non-NULL, selects by substring. Returns 1
 * when the case failed. */
static int pgfix_run_case(const qtest_case *c, const char *prefix, const char *skip, const char *only)
{
    char name[160];
    snprintf(name, sizeof name, "%s.%s", prefix, c->name);
    if (only && !strstr(name, only))
        return 0;
    if (skip) {
        printf("SKIP %s: %s\n", name, skip);
        fflush(stdout);
        return 0;
    }
    int failed = 0;
    c->fn(&failed);
    printf("%s %s\n", failed ? "FAIL" : "PASS", name);
    fflush(stdout);
    return failed;
}

#endif
