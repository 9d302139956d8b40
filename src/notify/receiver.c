#include "notify/receiver.h"

#include "notify/sign.h"
#include "util/buf.h"
#include "util/err.h"
#include "util/file.h"
#include "util/json.h"
#include "util/time.h"

#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define RECEIVER_MAX_BODY (1024 * 1024)

typedef struct {
    const char *secret;
    const char *save_dir;
    int64_t tolerance_s;
    FILE *out;
    unsigned long count;
} receiver;

typedef struct {
    qod_buf body;
} rreq;

static const char *hdr(struct MHD_Connection *c, const char *name)
{
    const char *v = MHD_lookup_connection_value(c, MHD_HEADER_KIND, name);
    return v ? v : "";
}

static void save(receiver *rv, struct MHD_Connection *c, const char *id, const qod_buf *body)
{
    static const char *const names[] = {"webhook-id", "webhook-timestamp", "webhook-signature", "content-type",
                                        "authorization"};
    qod_buf j;
    qod_buf_init(&j, 0);
    qod_buf_puts(&j, "{\"headers\":{");
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        qod_buf_printf(&j, "%s\"%s\":", i ? "," : "", names[i]);
        qod_buf_json_str(&j, hdr(c, names[i]));
    }
    qod_buf_puts(&j, "},\"body\":");
    qod_buf_json_str(&j, body->data ? body->data : "");
    qod_buf_puts(&j, "}\n");
    char path[4096];
    snprintf(path, sizeof path, "%s/%06lu-%.64s.json", rv->save_dir, rv->count, id[0] ? id : "no-id");
    for (char *p = path + strlen(rv->save_dir) + 1; *p; p++)
        if (*p == '/')
            *p = '_';
    FILE *f = fopen(path, "w");
    if (f) {
        fwrite(j.data, 1, j.len, f);
        fclose(f);
    }
    qod_buf_dispose(&j);
}

static enum MHD_Result respond(struct MHD_Connection *c, unsigned status, const char *text)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(strlen(text), (void *)text, MHD_RESPMEM_MUST_COPY);
    MHD_add_response_header(r, "Content-Type", "text/plain");
    enum MHD_Result ret = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                                  const char *version, const char *data, size_t *size, void **ctx)
{
    (void)version;
    receiver *rv = cls;
    rreq *q = *ctx;
    if (!q) {
        if (!(q = calloc(1, sizeof *q)))
            return MHD_NO;
        qod_buf_init(&q->body, RECEIVER_MAX_BODY);
        *ctx = q;
        return MHD_YES;
    }
    if (*size) {
        if (qod_buf_append(&q->body, data, *size) != QOD_OK)
            return MHD_NO;
        *size = 0;
        return MHD_YES;
    }
    if (strcmp(method, "POST") != 0)
        return respond(c, 405, "POST only\n");
    const char *id = hdr(c, "webhook-id");
    int rc =
        qod_webhook_verify(rv->secret, id, hdr(c, "webhook-timestamp"), hdr(c, "webhook-signature"),
                           q->body.data ? q->body.data : "", q->body.len, qod_time_wall_ms() / 1000, rv->tolerance_s);
    char ts[32];
    qod_time_fmt(qod_time_wall_ms(), ts, sizeof ts);
    rv->count++;
    if (rc == QOD_OK)
        fprintf(rv->out, "%s verified %s %s %s\n", ts, id, url, q->body.data ? q->body.data : "");
    else
        fprintf(rv->out, "%s REJECTED (%s) %s %s %s\n", ts,
                rc == QOD_ERR_RANGE ? "timestamp too old or in the future" : "bad signature", id, url,
                q->body.data ? q->body.data : "");
    fflush(rv->out);
    if (rv->save_dir)
        save(rv, c, id, &q->body);
    return rc == QOD_OK ? respond(c, 204, "") : respond(c, 400, "signature not verified\n");
}

static void on_done(void *cls, struct MHD_Connection *c, void **ctx, enum MHD_RequestTerminationCode toe)
{
    (void)cls;
    (void)c;
    (void)toe;
    rreq *q = *ctx;
    if (q) {
        qod_buf_dispose(&q->body);
        free(q);
    }
    *ctx = NULL;
}

int qod_receiver_run(unsigned port, const char *secret, const char *save_dir, int64_t tolerance_s, FILE *out)
{
    receiver rv = {secret, save_dir, tolerance_s, out, 0};
    if (save_dir && mkdir(save_dir, 0700) != 0 && errno != EEXIST) {
        fprintf(stderr, "cannot create %s: %s\n", save_dir, strerror(errno));
        return 1;
    }
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    struct MHD_Daemon *d =
        MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL, 0, NULL, NULL, on_request, &rv,
                         MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa, MHD_OPTION_NOTIFY_COMPLETED, on_done, NULL,
                         MHD_OPTION_LISTENING_ADDRESS_REUSE, 1u, MHD_OPTION_END);
    if (!d) {
        fprintf(stderr, "cannot listen on 127.0.0.1:%u\n", port);
        return 1;
    }
    fprintf(out, "Listening on http://127.0.0.1:%u/ and verifying signatures; Ctrl-C to stop.\n", port);
    fflush(out);
    int sig;
    sigwait(&set, &sig);
    MHD_stop_daemon(d);
    return 0;
}

int qod_receiver_verify_file(const char *path, const char *secret, int64_t tolerance_s, char *why, size_t cap)
{
    char *buf = NULL;
    size_t n = 0;
    int frc = qod_file_read(path, 4 * RECEIVER_MAX_BODY, &buf, &n, why, cap);
    if (frc != QOD_OK)
        return frc;
    cJSON *o = NULL;
    const cJSON *h = NULL;
    const char *id = NULL, *ts = NULL, *sig = NULL, *body = NULL;
    int rc = qod_json_parse(buf, n, 4, &o, why, cap);
    rc = rc ? rc : qod_json_obj(o, "headers", &h);
    rc = rc ? rc : qod_json_str(h, "webhook-id", &id);
    rc = rc ? rc : qod_json_str(h, "webhook-timestamp", &ts);
    rc = rc ? rc : qod_json_str(h, "webhook-signature", &sig);
    rc = rc ? rc : qod_json_str(o, "body", &body);
    if (rc != QOD_OK && !why[0])
        snprintf(why, cap, "expected {\"headers\":{webhook-id, webhook-timestamp, webhook-signature}, \"body\"}");
    if (rc == QOD_OK) {
        int64_t now = qod_time_wall_ms() / 1000;
        rc = qod_webhook_verify(secret, id, ts, sig, body, strlen(body), tolerance_s < 0 ? 0 : now,
                                tolerance_s < 0 ? INT64_MAX / 4 : tolerance_s);
        if (rc == QOD_ERR_RANGE)
            snprintf(why, cap, "the timestamp is more than %lld s away from now", (long long)tolerance_s);
        else if (rc != QOD_OK)
            snprintf(why, cap, "no signature matches this secret");
    }
    cJSON_Delete(o);
    free(buf);
    return rc;
}
