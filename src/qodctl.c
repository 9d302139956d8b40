/* qodctl: the operator's and developer's command line. Talks to a running qodd over its admin socket
 * (never the HTTP port): `qodctl [--data DIR | --socket PATH] NOUN VERB [ARGS] [--json]`. */
#include "notify/receiver.h"
#include "util/buf.h"
#include "util/err.h"
#include "util/json.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

typedef enum { F_STR, F_NUM, F_SNUM, F_RATE, F_BOOL } flag_type;

typedef struct {
    const char *flag; /* without dashes */
    const char *key;  /* JSON argument name */
    flag_type type;
} flag_spec;

typedef struct {
    const char *noun, *verb;
    const char *positional; /* JSON key of the one positional argument, or NULL */
    const char *usage;
    flag_spec flags[8];
    void (*print)(const cJSON *result);
    int (*local)(const cJSON *args); /* runs here instead of asking qodd */
} cmd_spec;

static void print_app(const cJSON *r);
static void print_app_list(const cJSON *r);
static void print_ok(const cJSON *r);
static int webhook_listen(const cJSON *args);
static int webhook_verify(const cJSON *args);
static void print_sessions(const cJSON *r);
static void print_session(const cJSON *r);
static void print_devices(const cJSON *r);
static void print_deliveries(const cJSON *r);
static void print_requeued(const cJSON *r);
static void print_gone(const cJSON *r);
static void print_consents(const cJSON *r);
static void print_device(const cJSON *r);

static const cmd_spec commands[] = {
    {"app",
     "create",
     NULL,
     "app create --name N [--env sandbox|live] [--scopes \"S ...\"] [--rate-limit R/s] [--burst B] "
     "[--max-sessions N] [--json]",
     {{"name", "name", F_STR},
      {"env", "env", F_STR},
      {"scopes", "scopes", F_STR},
      {"rate-limit", "rate_limit", F_RATE},
      {"burst", "burst", F_NUM},
      {"max-sessions", "max_sessions", F_NUM}},
     print_app},
    {"app", "list", NULL, "app list [--json]", {{0}}, print_app_list},
    {"app", "show", "client_id", "app show CLIENT_ID [--json]", {{0}}, print_app},
    {"app", "delete", "client_id", "app delete CLIENT_ID", {{0}}, print_ok},
    {"app", "rotate-secret", "client_id", "app rotate-secret CLIENT_ID [--json]", {{0}}, print_app},
    {"app",
     "set-limits",
     "client_id",
     "app set-limits CLIENT_ID [--rate-limit R/s] [--burst B] [--max-sessions N] [--json]",
     {{"rate-limit", "rate_limit", F_RATE}, {"burst", "burst", F_NUM}, {"max-sessions", "max_sessions", F_NUM}},
     print_app},
    {"app",
     "rotate-webhook-secret",
     "client_id",
     "app rotate-webhook-secret CLIENT_ID [--grace SECONDS] [--json]",
     {{"grace", "grace_s", F_NUM}},
     print_app},
    {"session",
     "list",
     NULL,
     "session list [--app CLIENT_ID] [--limit N] [--json]",
     {{"app", "client_id", F_STR}, {"limit", "limit", F_NUM}},
     print_sessions},
    {"session", "show", "session_id", "session show SESSION_ID [--json]", {{0}}, print_session},
    {"device",
     "add",
     NULL,
     "device add --phone +E164 [--ipv4 A.B.C.D] [--ipv6 ADDR] [--cell N] [--ineligible] [--json]",
     {{"phone", "phone", F_STR},
      {"ipv4", "ipv4", F_STR},
      {"ipv6", "ipv6", F_STR},
      {"cell", "cell", F_NUM},
      {"ineligible", "ineligible", F_BOOL}},
     print_device},
    {"deliveries",
     "list",
     NULL,
     "deliveries list [--state dead|pending|delivered|all] [--app CLIENT_ID] [--limit N] [--json]",
     {{"state", "state", F_STR}, {"app", "client_id", F_STR}, {"limit", "limit", F_NUM}},
     print_deliveries},
    {"deliveries", "retry", "event_id", "deliveries retry EVENT_ID | --all", {{"all", "all", F_BOOL}}, print_requeued},
    {"deliveries", "gone", NULL, "deliveries gone [--limit N] [--json]", {{"limit", "limit", F_NUM}}, print_gone},
    {"deliveries", "forget-gone", "url", "deliveries forget-gone URL [--json]", {{0}}, print_ok},
    {"device", "list", NULL, "device list [--json]", {{0}}, print_devices},
    {"test",
     "clock",
     NULL,
     "test clock --offset-ms N   (qodd --test-hooks only: shift the wall clock)",
     {{"offset-ms", "offset_ms", F_SNUM}},
     print_ok},
    {"test",
     "hold-rescans",
     NULL,
     "test hold-rescans [--release]   (qodd --test-hooks only: hold the delivery's outbox rescans, or let them run)",
     {{"release", "release", F_BOOL}},
     print_ok},
    {"consent", "approve", "auth_req_id", "consent approve AUTH_REQ_ID", {{0}}, print_ok},
    {"consent", "list", NULL, "consent list [--json]", {{0}}, print_consents},
    {"webhook",
     "listen",
     NULL,
     "webhook listen --port P --secret whsec_... [--save DIR] [--tolerance SECONDS]",
     {{"port", "port", F_NUM}, {"secret", "secret", F_STR}, {"save", "save", F_STR}, {"tolerance", "tolerance", F_NUM}},
     NULL,
     webhook_listen},
    {"webhook",
     "verify",
     NULL,
     "webhook verify --secret whsec_... --file SAVED.json [--tolerance SECONDS]",
     {{"secret", "secret", F_STR}, {"file", "file", F_STR}, {"tolerance", "tolerance", F_NUM}},
     NULL,
     webhook_verify},
    {"device", "remove", NULL, "device remove --phone +E164", {{"phone", "phone", F_STR}}, print_ok},
};
#define N_COMMANDS (sizeof commands / sizeof commands[0])

static void usage(FILE *out)
{
    fprintf(out, "Usage: qodctl [--data DIR | --socket PATH] COMMAND\n\nTalks to a running qodd over its admin "
                 "socket (default ./var/qodd.sock, or $QOD_DATA/qodd.sock).\n\nCommands:\n");
    for (size_t i = 0; i < N_COMMANDS; i++)
        fprintf(out, "  qodctl %s\n", commands[i].usage);
}

static const char *str_of(const cJSON *o, const char *k)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsString(it) ? it->valuestring : "";
}

static double num_of(const cJSON *o, const char *k)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsNumber(it) ? it->valuedouble : 0;
}

static void print_app(const cJSON *r)
{
    static const char *const keys[] = {"client_id", "client_secret", "webhook_secret", "name", "env", "scopes"};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
        if (cJSON_GetObjectItemCaseSensitive(r, keys[i]))
            printf("%-15s %s\n", keys[i], str_of(r, keys[i]));
    printf("%-15s %g/s (burst %g)\n%-15s %.0f\n", "rate_limit", num_of(r, "rate_limit"), num_of(r, "burst"),
           "max_sessions", num_of(r, "max_sessions"));
    if (cJSON_GetObjectItemCaseSensitive(r, "previous_webhook_secret_valid_until"))
        printf("%s %s\n", "previous_webhook_secret_valid_until", str_of(r, "previous_webhook_secret_valid_until"));
    if (cJSON_GetObjectItemCaseSensitive(r, "client_secret"))
        printf("\nThe client secret is shown only now: store it safely.\n");
}

static void print_app_list(const cJSON *r)
{
    printf("%-32s  %-7s  %-10s  %-12s  %s\n", "CLIENT_ID", "ENV", "RATE/S", "MAX_SESSIONS", "NAME");
    const cJSON *a;
    cJSON_ArrayForEach(a, r)
    {
        printf("%-32s  %-7s  %-10g  %-12.0f  %s\n", str_of(a, "client_id"), str_of(a, "env"), num_of(a, "rate_limit"),
               num_of(a, "max_sessions"), str_of(a, "name"));
    }
}

static void print_ok(const cJSON *r)
{
    (void)r;
    printf("ok\n");
}

static void print_session(const cJSON *r)
{
    static const char *const keys[] = {"sessionId",  "client_id", "state",     "reason",  "api",
                                       "qosProfile", "createdAt", "expiresAt", "endedAt", "notificationUrl"};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
        if (*str_of(r, keys[i]))
            printf("%-16s %s\n", keys[i], str_of(r, keys[i]));
    char *dev = cJSON_PrintUnformatted(cJSON_GetObjectItemCaseSensitive(r, "device"));
    printf("%-16s %s\n%-16s %.0f s\n", "device", dev ? dev : "", "duration", num_of(r, "duration"));
    free(dev);
}

static void print_sessions(const cJSON *r)
{
    printf("%-36s  %-9s  %-18s  %-8s  %-20s  %s\n", "SESSION_ID", "STATE", "REASON", "PROFILE", "EXPIRES_AT",
           "CLIENT_ID");
    const cJSON *s;
    cJSON_ArrayForEach(s, r)
    {
        printf("%-36s  %-9s  %-18s  %-8s  %-20s  %s\n", str_of(s, "sessionId"), str_of(s, "state"), str_of(s, "reason"),
               str_of(s, "qosProfile"), str_of(s, "expiresAt"), str_of(s, "client_id"));
    }
}

static void print_device(const cJSON *d)
{
    const cJSON *el = cJSON_GetObjectItemCaseSensitive(d, "eligible");
    printf("%-16s  %-15s  %-39s  %-6.0f  %s\n", str_of(d, "phone"), str_of(d, "ipv4"), str_of(d, "ipv6"),
           num_of(d, "cell"), cJSON_IsTrue(el) ? "yes" : "no");
}

static void print_devices(const cJSON *r)
{
    printf("%-16s  %-15s  %-39s  %-6s  %s\n", "PHONE", "IPV4", "IPV6", "CELL", "ELIGIBLE");
    const cJSON *d;
    cJSON_ArrayForEach(d, r)
    {
        print_device(d);
    }
}

static void print_deliveries(const cJSON *r)
{
    printf("%-36s  %-9s  %-8s  %-22s  %-20s  %s\n", "EVENT_ID", "DELIVERY", "ATTEMPTS", "STATUS", "NEXT_AT", "URL");
    const cJSON *e;
    cJSON_ArrayForEach(e, r)
    {
        printf("%-36s  %-9s  %-8.0f  %-22s  %-20s  %s\n", str_of(e, "event_id"), str_of(e, "delivery"),
               num_of(e, "attempts"), str_of(e, "status"), str_of(e, "next_at"), str_of(e, "url"));
    }
}

static void print_gone(const cJSON *r)
{
    printf("%-20s  %s\n", "SINCE", "URL");
    const cJSON *e;
    cJSON_ArrayForEach(e, r)
    {
        printf("%-20s  %s\n", str_of(e, "since"), str_of(e, "url"));
    }
}

static void print_consents(const cJSON *r)
{
    printf("%-34s  %-32s  %-24s  %s\n", "AUTH_REQ_ID", "CLIENT_ID", "SUBJECT", "EXPIRES_IN");
    const cJSON *e;
    cJSON_ArrayForEach(e, r)
    {
        printf("%-34s  %-32s  %-24s  %.0f s\n", str_of(e, "auth_req_id"), str_of(e, "client_id"), str_of(e, "subject"),
               num_of(e, "expires_in"));
    }
}

static void print_requeued(const cJSON *r)
{
    printf("requeued %.0f event(s)\n", num_of(r, "requeued"));
}

static int webhook_listen(const cJSON *args)
{
    double port = num_of(args, "port");
    const char *secret = str_of(args, "secret"), *save = str_of(args, "save");
    const cJSON *tol = cJSON_GetObjectItemCaseSensitive(args, "tolerance");
    if (port < 1 || port > 65535 || floor(port) != port || !*secret) {
        fprintf(stderr, "qodctl: webhook listen needs --port 1..65535 and --secret whsec_...\n");
        return 2;
    }
    return qod_receiver_run((unsigned)port, secret, *save ? save : NULL, tol ? (int64_t)tol->valuedouble : 300, stdout);
}

static int webhook_verify(const cJSON *args)
{
    const char *secret = str_of(args, "secret"), *file = str_of(args, "file");
    const cJSON *tol = cJSON_GetObjectItemCaseSensitive(args, "tolerance");
    char why[256] = "";
    if (!*secret || !*file) {
        fprintf(stderr, "qodctl: webhook verify needs --secret whsec_... and --file SAVED.json\n");
        return 2;
    }
    if (qod_receiver_verify_file(file, secret, tol ? (int64_t)tol->valuedouble : -1, why, sizeof why) != QOD_OK) {
        printf("NOT verified: %s\n", why);
        return 1;
    }
    printf("verified\n");
    return 0;
}

/* Converts one flag value to JSON; false with a message on bad input. */
static bool add_flag(cJSON *args, const flag_spec *f, const char *v)
{
    if (f->type == F_STR) {
        cJSON_AddStringToObject(args, f->key, v);
        return true;
    }
    char *end = NULL;
    errno = 0;
    double d = strtod(v, &end);
    if (f->type == F_RATE && end && strcmp(end, "/s") == 0)
        end += 2;
    if (errno || end == v || *end || !isfinite(d) || (d < 0 && f->type != F_SNUM)) {
        fprintf(stderr, "qodctl: --%s needs a non-negative number, not '%s'\n", f->flag, v);
        return false;
    }
    cJSON_AddNumberToObject(args, f->key, d);
    return true;
}

/* Parses the command's arguments into a JSON object; NULL after printing an error. */
static cJSON *parse_args(const cmd_spec *c, int argc, char **argv, bool *json)
{
    cJSON *args = cJSON_CreateObject();
    bool have_pos = false;
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0) {
            *json = true;
            continue;
        }
        if (strncmp(argv[i], "--", 2) != 0) {
            if (!c->positional || have_pos) {
                fprintf(stderr, "qodctl: unexpected argument '%s'\nusage: qodctl %s\n", argv[i], c->usage);
                goto fail;
            }
            cJSON_AddStringToObject(args, c->positional, argv[i]);
            have_pos = true;
            continue;
        }
        const flag_spec *f = NULL;
        for (int k = 0; k < 8 && c->flags[k].flag && !f; k++)
            if (strcmp(c->flags[k].flag, argv[i] + 2) == 0)
                f = &c->flags[k];
        if (f && f->type == F_BOOL) {
            cJSON_AddBoolToObject(args, f->key, 1);
            continue;
        }
        if (!f || i + 1 >= argc) {
            fprintf(stderr, "qodctl: %s '%s'\nusage: qodctl %s\n", f ? "missing value for" : "unknown option", argv[i],
                    c->usage);
            goto fail;
        }
        if (!add_flag(args, f, argv[++i]))
            goto fail;
    }
    if (c->positional && !have_pos && !cJSON_GetObjectItemCaseSensitive(args, "all")) {
        fprintf(stderr, "qodctl: missing %s\nusage: qodctl %s\n", c->positional, c->usage);
        goto fail;
    }
    return args;
fail:
    cJSON_Delete(args);
    return NULL;
}

/* Sends one request line and reads one response line. */
static int call(const char *sock, const char *req, qod_buf *resp)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(sock) >= sizeof sa.sun_path) {
        fprintf(stderr, "qodctl: socket path too long: %s\n", sock);
        return -1;
    }
    memcpy(sa.sun_path, sock, strlen(sock) + 1);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        fprintf(stderr, "qodctl: cannot reach qodd at %s: %s (is it running?)\n", sock, strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    size_t len = strlen(req), off = 0;
    int rc = 0;
    while (off < len && rc == 0) {
        ssize_t w = write(fd, req + off, len - off);
        if (w <= 0)
            rc = -1;
        else
            off += (size_t)w;
    }
    char chunk[8192];
    while (rc == 0 && !(resp->len && resp->data[resp->len - 1] == '\n')) {
        ssize_t n = read(fd, chunk, sizeof chunk);
        if (n <= 0 || qod_buf_append(resp, chunk, (size_t)n) != QOD_OK)
            rc = -1;
    }
    close(fd);
    if (rc != 0)
        fprintf(stderr, "qodctl: the connection to qodd failed\n");
    return rc;
}

static int run(const char *sock, const cmd_spec *c, cJSON *args, bool json)
{
    cJSON *req = cJSON_CreateObject();
    cJSON_AddStringToObject(req, "cmd", "");
    char name[64];
    snprintf(name, sizeof name, "%s.%s", c->noun, c->verb);
    cJSON_ReplaceItemInObject(req, "cmd", cJSON_CreateString(name));
    cJSON_AddItemToObject(req, "args", args);
    char *text = cJSON_PrintUnformatted(req);
    cJSON_Delete(req);
    qod_buf line, resp;
    qod_buf_init(&line, 0);
    qod_buf_init(&resp, 64u << 20);
    qod_buf_puts(&line, text);
    qod_buf_puts(&line, "\n");
    free(text);
    int rc = call(sock, line.data, &resp);
    cJSON *r = NULL;
    char err[128];
    if (rc == 0 && qod_json_parse(resp.data, resp.len, 64, &r, err, sizeof err) != QOD_OK) {
        fprintf(stderr, "qodctl: bad answer from qodd: %s\n", err);
        rc = -1;
    }
    if (rc == 0) {
        const cJSON *ok = cJSON_GetObjectItemCaseSensitive(r, "ok");
        const cJSON *result = cJSON_GetObjectItemCaseSensitive(r, "result");
        if (!cJSON_IsTrue(ok)) {
            fprintf(stderr, "qodctl: %s\n", str_of(r, "error"));
            rc = -1;
        } else if (json) {
            char *out = cJSON_Print(result);
            printf("%s\n", out ? out : "null");
            free(out);
        } else {
            c->print(result);
        }
    }
    cJSON_Delete(r);
    qod_buf_dispose(&line);
    qod_buf_dispose(&resp);
    return rc == 0 ? 0 : 1;
}

int main(int argc, char **argv)
{
    char sock[4200];
    const char *data = getenv("QOD_DATA");
    const char *socket_path = getenv("QOD_SOCKET");
    int i = 1;
    for (; i < argc && strncmp(argv[i], "--", 2) == 0; i += 2) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return 0;
        }
        if (i + 1 >= argc) {
            usage(stderr);
            return 2;
        }
        if (strcmp(argv[i], "--data") == 0)
            data = argv[i + 1];
        else if (strcmp(argv[i], "--socket") == 0)
            socket_path = argv[i + 1];
        else {
            fprintf(stderr, "qodctl: unknown option '%s'\n", argv[i]);
            return 2;
        }
    }
    if (socket_path)
        snprintf(sock, sizeof sock, "%s", socket_path);
    else
        snprintf(sock, sizeof sock, "%s/qodd.sock", data ? data : "./var");
    if (argc - i < 2) {
        usage(stderr);
        return 2;
    }
    for (size_t k = 0; k < N_COMMANDS; k++) {
        if (strcmp(commands[k].noun, argv[i]) != 0 || strcmp(commands[k].verb, argv[i + 1]) != 0)
            continue;
        bool json = false;
        cJSON *args = parse_args(&commands[k], argc - i - 2, argv + i + 2, &json);
        if (args && commands[k].local) {
            int rc = commands[k].local(args);
            cJSON_Delete(args);
            return rc;
        }
        return args ? run(sock, &commands[k], args, json) : 2;
    }
    fprintf(stderr, "qodctl: unknown command '%s %s'\n", argv[i], argv[i + 1]);
    usage(stderr);
    return 2;
}
