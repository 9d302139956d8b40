/* qodload: a paced UDP bulk sender and a receiver that measures the rate it gets, for the tc enforcement tests.
 *
 *   qodload send HOST PORT RATE_KBIT SECONDS [SIZE [SPORT]]
 *       sends SIZE-byte datagrams (default 1400) to HOST:PORT at RATE_KBIT (payload bits) for SECONDS, from
 *       source port SPORT when given; prints {"packets","bytes","seconds"}. The gaps between datagrams vary at
 *       random by +-50% around the mean: strictly periodic senders phase-lock at a full tail-drop queue, and
 *       one of them then takes most of the link, which real traffic does not.
 *   qodload recv PORT SECONDS [WARMUP]
 *       counts what arrives on UDP PORT from the first datagram on for SECONDS, ignoring the first WARMUP
 *       seconds (default 1); prints {"packets","bytes","window_s","kbps"} where kbps is payload kilobits per
 *       second over the window. Gives up (kbps 0) when nothing arrives within SECONDS + 5 s.
 * Everything is bounded by SECONDS (at most 600). */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_SIZE 9000
#define MAX_SECONDS 600.0

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
        perror("qodload: socket");
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
        perror("qodload: bind");
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

int main(int argc, char **argv)
{
    int rc = 2;
    if (argc > 1 && strcmp(argv[1], "send") == 0)
        rc = do_send(argc, argv);
    else if (argc > 1 && strcmp(argv[1], "recv") == 0)
        rc = do_recv(argc, argv);
    if (rc == 2)
        fprintf(stderr, "usage: qodload send HOST PORT RATE_KBIT SECONDS [SIZE [SPORT]]\n"
                        "       qodload recv PORT SECONDS [WARMUP]\n");
    return rc;
}
