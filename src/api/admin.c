#include "api/admin.h"

#include "api/admin_cmds.h"
#include "util/err.h"
#include "util/json.h"
#include "util/log.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#define ADMIN_MAX_REQUEST (64 * 1024)
#define ADMIN_IO_TIMEOUT_MS 5000

struct qod_admin {
    qod_admin_deps deps;
    int fd;
    int stop_pipe[2];
    pthread_t thread;
    char path[108];
};

void qod_admin_handle(const qod_admin_deps *d, const char *line, size_t len, qod_buf *out)
{
    cJSON *req = NULL;
    char err[512] = "";
    const char *cmd = NULL;
    const cJSON *args = NULL;
    qod_buf res;
    qod_buf_init(&res, QOD_ADMIN_MAX_RESULT);
    int rc = qod_json_parse(line, len, 8, &req, err, sizeof err);
    if (rc == QOD_OK && (qod_json_str(req, "cmd", &cmd) != QOD_OK)) {
        snprintf(err, sizeof err, "request needs a \"cmd\" string");
        rc = QOD_ERR_INVALID;
    }
    if (rc == QOD_OK && qod_json_obj(req, "args", &args) == QOD_ERR_INVALID) {
        snprintf(err, sizeof err, "\"args\" must be an object");
        rc = QOD_ERR_INVALID;
    }
    const qod_admin_cmd *c = rc == QOD_OK ? qod_admin_find(cmd) : NULL;
    if (rc == QOD_OK && !c) {
        snprintf(err, sizeof err, "unknown command '%.64s'", cmd);
        rc = QOD_ERR_INVALID;
    }
    if (rc == QOD_OK) {
        cJSON *empty = args ? NULL : cJSON_CreateObject();
        rc = c->fn(d, args ? args : empty, &res, err, sizeof err);
        cJSON_Delete(empty);
        if (rc != QOD_OK && !err[0])
            snprintf(err, sizeof err, "%s", qod_strerror(rc));
    }
    if (rc == QOD_OK) {
        qod_buf_puts(out, "{\"ok\":true,\"result\":");
        qod_buf_append(out, res.len ? res.data : "null", res.len ? res.len : 4);
        qod_buf_puts(out, "}\n");
    } else {
        qod_buf_puts(out, "{\"ok\":false,\"error\":");
        qod_buf_json_str(out, err);
        qod_buf_puts(out, "}\n");
    }
    qod_buf_dispose(&res);
    cJSON_Delete(req);
}

static int write_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Serves one connection: requests line by line until the peer closes or stalls. */
static void serve_conn(qod_admin *a, int fd)
{
    struct timeval tv = {ADMIN_IO_TIMEOUT_MS / 1000, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    qod_buf in, out;
    qod_buf_init(&in, ADMIN_MAX_REQUEST);
    qod_buf_init(&out, QOD_ADMIN_MAX_RESULT + 1024); /* the result and its envelope */
    char chunk[4096];
    for (;;) {
        char *nl = in.len ? memchr(in.data, '\n', in.len) : NULL;
        if (nl) {
            size_t ll = (size_t)(nl - in.data);
            qod_buf_reset(&out);
            qod_admin_handle(&a->deps, in.data, ll, &out);
            if (write_all(fd, out.data, out.len) != 0)
                break;
            memmove(in.data, nl + 1, in.len - ll - 1);
            in.len -= ll + 1;
            continue;
        }
        ssize_t n = recv(fd, chunk, sizeof chunk, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        if (qod_buf_append(&in, chunk, (size_t)n) != QOD_OK) {
            static const char too_big[] = "{\"ok\":false,\"error\":\"request larger than 64 KiB\"}\n";
            write_all(fd, too_big, sizeof too_big - 1);
            break;
        }
    }
    qod_buf_dispose(&in);
    qod_buf_dispose(&out);
}

static void *admin_main(void *arg)
{
    qod_admin *a = arg;
    for (;;) {
        struct pollfd p[2] = {{a->fd, POLLIN, 0}, {a->stop_pipe[0], POLLIN, 0}};
        if (poll(p, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        if (p[1].revents)
            break;
        if (!(p[0].revents & POLLIN))
            continue;
        int c = accept4(a->fd, NULL, NULL, SOCK_CLOEXEC);
        if (c < 0)
            continue;
        serve_conn(a, c);
        close(c);
    }
    return NULL;
}

int qod_admin_start(const char *path, const qod_admin_deps *deps, qod_admin **out)
{
    *out = NULL;
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof sa.sun_path)
        return QOD_ERR_LIMIT;
    qod_admin *a = calloc(1, sizeof *a);
    if (!a)
        return QOD_ERR_NOMEM;
    a->deps = *deps;
    a->stop_pipe[0] = a->stop_pipe[1] = -1;
    snprintf(a->path, sizeof a->path, "%s", path);
    memcpy(sa.sun_path, path, strlen(path) + 1);
    int rc = QOD_OK;
    a->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (a->fd < 0 || pipe2(a->stop_pipe, O_CLOEXEC) != 0)
        rc = -errno;
    if (rc == QOD_OK) {
        /* The data directory is 0700 and the daemon holds its lock, so a leftover socket is stale. */
        unlink(path);
        mode_t old = umask(0177);
        if (bind(a->fd, (struct sockaddr *)&sa, sizeof sa) != 0)
            rc = -errno;
        umask(old);
    }
    if (rc == QOD_OK && (chmod(path, 0600) != 0 || listen(a->fd, 16) != 0))
        rc = -errno;
    if (rc == QOD_OK && pthread_create(&a->thread, NULL, admin_main, a) != 0)
        rc = QOD_ERR_NOMEM;
    if (rc != QOD_OK) {
        if (a->fd >= 0)
            close(a->fd);
        if (a->stop_pipe[0] >= 0) {
            close(a->stop_pipe[0]);
            close(a->stop_pipe[1]);
        }
        free(a);
        return rc;
    }
    *out = a;
    return QOD_OK;
}

void qod_admin_stop(qod_admin *a)
{
    if (!a)
        return;
    if (write(a->stop_pipe[1], "x", 1) < 0)
        QOD_WARN("admin", "stop_write_failed", "errno=%d", errno);
    pthread_join(a->thread, NULL);
    close(a->fd);
    close(a->stop_pipe[0]);
    close(a->stop_pipe[1]);
    unlink(a->path);
    free(a);
}
