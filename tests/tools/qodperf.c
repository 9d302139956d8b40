/* qodperf: the load and probe tools of the tc enforcement tests, all over UDP and bounded in time.
 *
 *   qodperf send HOST PORT RATE_KBIT SECONDS [SIZE [SPORT]]
 *       sends SIZE-byte datagrams (default 1400) to HOST:PORT at RATE_KBIT (payload bits) for SECONDS, from
 *       source port SPORT when given; prints {"packets","bytes","seconds"}. The gaps between datagrams vary at
 *       random by +-50% around the mean: strictly periodic senders phase-lock at a full tail-drop queue, and
 *       one of them then takes most of the link, which real traffic does not.
 *   qodperf recv PORT SECONDS [WARMUP]
 *       counts what arrives on UDP PORT from the first datagram on for SECONDS, ignoring the first WARMUP
 *       seconds (default 1); prints {"packets","bytes","window_s","kbps"} where kbps is payload kilobits per
 *       second over the window. Gives up (kbps 0) when nothing arrives within SECONDS + 5 s.
 *   qodperf echo PORT SECONDS
 *       sends every datagram received on UDP PORT back to its sender, for SECONDS.
 *   qodperf ping HOST PORT COUNT INTERVAL_MS [TIMEOUT_MS [SPORT]]
 *       sends COUNT small probes (64 bytes), one every INTERVAL_MS, to an echo server, from source port SPORT when
 *       given, and waits up to TIMEOUT_MS (default 2000) after the last one; prints
 *       {"sent","received","lost","min_ms","p50_ms","p95_ms","p99_ms","max_ms"} over the probes that came back.
 *       A probe carries its sequence number and send time, so late, duplicate or foreign datagrams are known.
 * echo and ping ask for real-time scheduling (when allowed) so that CPU contention from other tests adds as
 * little as possible to what is measured: the network's queueing delay. Durations are at most 600 s. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_SIZE 9000
#define MAX_SECONDS 600.0
#define PROBE_SIZE 64
#define MAX_COUNT 100000
#define MAGIC 0x716f6470u /* "qodp" */

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void sleep_until(int64_t t)
{
    struct timespec ts = {(time_t)(t / 1000000000), (long)(t % 1000000000)};
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
        ;
}

/* xorshift64: cheap, good enough to spread send times. */
static uint64_t next_rand(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static int num(const char *s, double lo, double hi, double *out)
{
    char *end = NULL;
    double v = strtod(s, &end);
    if (end == s || *end || v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

static int bind_port(int fd, int port)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_ANY);
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    return bind(fd, (struct sockaddr *)&a, sizeof a);
}

typedef struct {
    uint32_t magic;
    uint32_t seq;
    int64_t sent_ns;
} probe;

static int do_send(int argc, char **argv)
{
    double port, rate, secs, size = 1400, sport = 0;
    struct sockaddr_in to = {.sin_family = AF_INET};
    if (argc < 6 || inet_pton(AF_INET, argv[2], &to.sin_addr) != 1 || num(argv[3], 1, 65535, &port) ||
        num(argv[4], 1, 1e8, &rate) || num(argv[5], 0.1, MAX_SECONDS, &secs) ||
        (argc > 6 && num(argv[6], 16, MAX_SIZE, &size)) || (argc > 7 && num(argv[7], 1, 65535, &sport)))
        return 2;
    to.sin_port = htons((uint16_t)port);
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    if (fd < 0 || (sport > 0 && bind_port(fd, (int)sport) < 0)) {
        perror("qodperf: socket");
        return 1;
    }
    static char buf[MAX_SIZE];
    memset(buf, 'q', sizeof buf);
    int64_t gap = (int64_t)(size * 8 / (rate * 1000) * 1e9), start = now_ns(), end = start + (int64_t)(secs * 1e9);
    uint64_t rnd = (uint64_t)start ^ ((uint64_t)getpid() << 32) ^ 0x9e3779b97f4a7c15u;
    long long packets = 0, bytes = 0;
    for (int64_t due = start; due < end; due += gap / 2 + (int64_t)(next_rand(&rnd) % (uint64_t)(gap + 1))) {
        sleep_until(due);
        /* A full socket buffer or an ICMP error from the far end is not the sender's business: keep pacing. */
        if (sendto(fd, buf, (size_t)size, 0, (struct sockaddr *)&to, sizeof to) > 0) {
            packets++;
            bytes += (long long)size;
        }
    }
    close(fd);
    printf("{\"packets\":%lld,\"bytes\":%lld,\"seconds\":%.3f}\n", packets, bytes, (now_ns() - start) / 1e9);
    return 0;
}

static int do_recv(int argc, char **argv)
{
    double port, secs, warm = 1;
    if (argc < 4 || num(argv[2], 1, 65535, &port) || num(argv[3], 0.1, MAX_SECONDS, &secs) ||
        (argc > 4 && num(argv[4], 0, MAX_SECONDS, &warm)) || warm >= secs)
        return 2;
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    int big = 4 << 20;
    if (fd < 0 || bind_port(fd, (int)port) < 0) {
        perror("qodperf: bind");
        return 1;
    }
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &big, sizeof big);
    static char buf[65536];
    int64_t t0 = 0, give_up = now_ns() + (int64_t)((secs + 5) * 1e9), from = 0, until = 0;
    long long packets = 0, bytes = 0;
    for (;;) {
        int64_t now = now_ns(), deadline = t0 ? until : give_up;
        if (now >= deadline)
            break;
        struct pollfd p = {fd, POLLIN, 0};
        int ms = (int)((deadline - now) / 1000000) + 1;
        if (poll(&p, 1, ms) <= 0)
            continue;
        ssize_t n = recv(fd, buf, sizeof buf, 0);
        now = now_ns();
        if (n <= 0)
            continue;
        if (!t0) {
            t0 = now;
            from = t0 + (int64_t)(warm * 1e9);
            until = t0 + (int64_t)(secs * 1e9);
        }
        if (now >= from && now < until) {
            packets++;
            bytes += n;
        }
    }
    close(fd);
    double window = secs - warm;
    printf("{\"packets\":%lld,\"bytes\":%lld,\"window_s\":%.3f,\"kbps\":%.1f}\n", packets, bytes, window,
           t0 ? bytes * 8 / window / 1000 : 0.0);
    return 0;
}

static int do_echo(int argc, char **argv)
{
    double port, secs;
    if (argc < 4 || num(argv[2], 1, 65535, &port) || num(argv[3], 0.1, MAX_SECONDS, &secs))
        return 2;
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    if (fd < 0 || bind_port(fd, (int)port) < 0) {
        perror("qodperf: bind");
        return 1;
    }
    int64_t end = now_ns() + (int64_t)(secs * 1e9);
    long long echoed = 0;
    char buf[2048];
    for (int64_t now = now_ns(); now < end; now = now_ns()) {
        struct pollfd p = {fd, POLLIN, 0};
        if (poll(&p, 1, (int)((end - now) / 1000000) + 1) <= 0)
            continue;
        struct sockaddr_in from;
        socklen_t fl = sizeof from;
        ssize_t n = recvfrom(fd, buf, sizeof buf, 0, (struct sockaddr *)&from, &fl);
        if (n > 0 && sendto(fd, buf, (size_t)n, 0, (struct sockaddr *)&from, fl) > 0)
            echoed++;
    }
    close(fd);
    printf("{\"echoed\":%lld}\n", echoed);
    return 0;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

/* Nearest-rank percentile of n sorted values. */
static double pct_ms(const int64_t *v, int n, double pct)
{
    if (n == 0)
        return -1;
    int rank = (int)(pct / 100 * n + 0.999999);
    rank = rank < 1 ? 1 : rank > n ? n : rank;
    return v[rank - 1] / 1e6;
}

/* Receives what is there until deadline; records each first answer's round trip. */
static void collect(int fd, int64_t deadline, int64_t *rtt, int count, int *received)
{
    for (int64_t now = now_ns(); now < deadline; now = now_ns()) {
        struct pollfd p = {fd, POLLIN, 0};
        int ms = (int)((deadline - now + 999999) / 1000000);
        if (poll(&p, 1, ms) <= 0)
            continue;
        probe pr;
        ssize_t n;
        while ((n = recv(fd, &pr, sizeof pr, MSG_DONTWAIT)) > 0) {
            int64_t t = now_ns();
            if ((size_t)n < sizeof pr || pr.magic != MAGIC || pr.seq >= (uint32_t)count || rtt[pr.seq] >= 0)
                continue;
            rtt[pr.seq] = t - pr.sent_ns;
            (*received)++;
        }
    }
}

static int do_ping(int argc, char **argv)
{
    double port, count, interval, timeout = 2000, sport = 0;
    struct sockaddr_in to = {.sin_family = AF_INET};
    if (argc < 6 || inet_pton(AF_INET, argv[2], &to.sin_addr) != 1 || num(argv[3], 1, 65535, &port) ||
        num(argv[4], 1, MAX_COUNT, &count) || num(argv[5], 0.1, 10000, &interval) ||
        (argc > 6 && num(argv[6], 1, 60000, &timeout)) || (argc > 7 && num(argv[7], 1, 65535, &sport)))
        return 2;
    to.sin_port = htons((uint16_t)port);
    int n = (int)count, fd = socket(AF_INET, SOCK_DGRAM, 0);
    if (fd < 0 || (sport > 0 && bind_port(fd, (int)sport) < 0)) {
        perror("qodperf: socket");
        return 1;
    }
    int64_t *rtt = malloc((size_t)n * sizeof *rtt);
    if (!rtt)
        return 1;
    for (int i = 0; i < n; i++)
        rtt[i] = -1;
    int received = 0, sent = 0;
    int64_t start = now_ns(), gap = (int64_t)(interval * 1e6);
    char pkt[PROBE_SIZE];
    memset(pkt, 0, sizeof pkt);
    for (int i = 0; i < n; i++) {
        probe pr = {MAGIC, (uint32_t)i, now_ns()};
        memcpy(pkt, &pr, sizeof pr);
        if (sendto(fd, pkt, sizeof pkt, 0, (struct sockaddr *)&to, sizeof to) > 0)
            sent++;
        collect(fd, start + (int64_t)(i + 1) * gap, rtt, n, &received);
    }
    int64_t last = now_ns() + (int64_t)(timeout * 1e6);
    while (received < sent && now_ns() < last)
        collect(fd, now_ns() + 10000000 < last ? now_ns() + 10000000 : last, rtt, n, &received);
    close(fd);
    int k = 0;
    for (int i = 0; i < n; i++)
        if (rtt[i] >= 0)
            rtt[k++] = rtt[i];
    qsort(rtt, (size_t)k, sizeof *rtt, cmp_i64);
    printf("{\"sent\":%d,\"received\":%d,\"lost\":%d,\"min_ms\":%.3f,\"p50_ms\":%.3f,\"p95_ms\":%.3f,"
           "\"p99_ms\":%.3f,\"max_ms\":%.3f}\n",
           sent, k, sent - k, pct_ms(rtt, k, 0), pct_ms(rtt, k, 50), pct_ms(rtt, k, 95), pct_ms(rtt, k, 99),
           pct_ms(rtt, k, 100));
    free(rtt);
    return 0;
}

static void realtime(void)
{
    struct sched_param sp = {.sched_priority = 10};
    sched_setscheduler(0, SCHED_FIFO, &sp);
}

int main(int argc, char **argv)
{
    int rc = 2;
    const char *cmd = argc > 1 ? argv[1] : "";
    if (strcmp(cmd, "send") == 0) {
        rc = do_send(argc, argv);
    } else if (strcmp(cmd, "recv") == 0) {
        rc = do_recv(argc, argv);
    } else if (strcmp(cmd, "echo") == 0) {
        realtime();
        rc = do_echo(argc, argv);
    } else if (strcmp(cmd, "ping") == 0) {
        realtime();
        rc = do_ping(argc, argv);
    }
    if (rc == 2)
        fprintf(stderr, "usage: qodperf send HOST PORT RATE_KBIT SECONDS [SIZE [SPORT]]\n"
                        "       qodperf recv PORT SECONDS [WARMUP]\n"
                        "       qodperf echo PORT SECONDS\n"
                        "       qodperf ping HOST PORT COUNT INTERVAL_MS [TIMEOUT_MS [SPORT]]\n");
    return rc;
}
