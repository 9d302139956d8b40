#include "daemon/options.h"

#include "notify/delivery.h"
#include "notify/urlguard.h"
#include "util/err.h"

#include <string.h>

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* HOST:PORT or [V6]:PORT with a port from 0 to 65535 (0 picks a free port). */
static int check_listen(const char *v, char *err, size_t errcap)
{
    const char *colon = strrchr(v, ':');
    if (!colon || colon == v) {
        snprintf(err, errcap, "'%s' is not HOST:PORT", v);
        return -1;
    }
    char *end = NULL;
    long port = strtol(colon + 1, &end, 10);
    if (!colon[1] || *end || port < 0 || port > 65535) {
        snprintf(err, errcap, "port in '%s' is out of range [0, 65535]", v);
        return -1;
    }
    return 0;
}

static int check_url(const char *v, char *err, size_t errcap)
{
    if (*v && strncmp(v, "http://", 7) != 0 && strncmp(v, "https://", 8) != 0) {
        snprintf(err, errcap, "'%s' must start with http:// or https://", v);
        return -1;
    }
    return 0;
}

static int check_schedule(const char *v, char *err, size_t errcap)
{
    qod_delivery_opts o;
    return qod_retry_schedule_parse(v, &o, err, errcap) == QOD_OK ? 0 : -1;
}

static int check_cidrs(const char *v, char *err, size_t errcap)
{
    qod_cidrs c;
    return qod_cidrs_parse(v, &c, err, errcap) == QOD_OK ? 0 : -1;
}

/* A rate such as 20mbit, 1gbit or 500kbit. */
static int check_url_or_empty(const char *v, char *err, size_t errcap)
{
    return *v ? check_url(v, err, errcap) : 0;
}

static int check_store(const char *v, char *err, size_t errcap)
{
    if (!*v || strncmp(v, "postgres://", 11) == 0 || strncmp(v, "postgresql://", 13) == 0)
        return 0;
    snprintf(err, errcap, "must be empty (SQLite in --data) or a postgres:// or postgresql:// URI");
    return -1;
}

static int check_rate(const char *v, char *err, size_t errcap)
{
    return qod_options_rate_kbps(v) > 0 ? 0 : (snprintf(err, errcap, "'%s' is not a rate like 20mbit", v), -1);
}

long long qod_options_rate_kbps(const char *v)
{
    char *end = NULL;
    double x = strtod(v, &end);
    if (end == v || x <= 0)
        return -1;
    static const struct {
        const char *unit;
        double kbps;
    } units[] = {{"kbit", 1}, {"mbit", 1e3}, {"gbit", 1e6}, {"kbps", 8}, {"mbps", 8e3}};
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++)
        if (strcmp(end, units[i].unit) == 0 && x * units[i].kbps <= 1e9)
            return (long long)(x * units[i].kbps);
    return -1;
}

#define O(field) offsetof(qod_options, field)

const qod_cfg_opt qod_option_table[] = {
    {"config", QOD_CFG_STR, O(config), 0, 4096, NULL, NULL, NULL, "Read 'name = value' options from FILE."},
    {"listen", QOD_CFG_STR, O(listen), 0, 300, "127.0.0.1:8080", NULL, check_listen,
     "HTTP listen address HOST:PORT (port 0 picks a free one)."},
    {"data", QOD_CFG_STR, O(data), 0, 3000, "./var", NULL, NULL,
     "Data directory (created 0700): SQLite database qod.db, signing-key.pem, secrets.key, admin socket qodd.sock."},
    {"store", QOD_CFG_STR, O(store), 0, 2000, "", NULL, check_store,
     "Where sessions, apps, devices and the callback outbox are kept: empty for the SQLite file in --data, or a "
     "PostgreSQL URI (postgres://USER:PASSWORD@HOST:PORT/DB). Keys and the admin socket stay in --data."},
    {"cluster-node", QOD_CFG_STR, O(cluster_node), 0, 255, "", NULL, check_url_or_empty,
     "Run as one node of several on the --store PostgreSQL database: this node's base URL as the other nodes reach "
     "it (http://HOST:PORT), unique per node. Empty: a single node."},
    {"cluster-lease", QOD_CFG_INT, O(cluster_lease), 1, 300, "10", NULL, NULL,
     "Seconds a node's leases last: how soon the others take over the sessions of a node that died."},
    {"store-timeout", QOD_CFG_INT, O(store_timeout), 0, 3600, "15", NULL, NULL,
     "Seconds qodd waits for a PostgreSQL --store to answer a call before it gives the connection up and opens "
     "another (0: no limit); a cluster node waits at least its --cluster-lease plus 5."},
    {"network", QOD_CFG_ENUM, O(network), 0, 0, "sim", "sim|tc|nef", NULL,
     "Network backend: sim (simulated network, sandbox numbers), tc (Linux traffic control on --tc-dev) or nef "
     "(3GPP NEF AsSessionWithQoS at --nef-url)."},
    {"public-url", QOD_CFG_STR, O(public_url), 0, 200, "", NULL, check_url,
     "Public base URL: token issuer and link base (default http://LISTEN)."},
    {"log-level", QOD_CFG_ENUM, O(log_level), 0, 0, "info", "debug|info|warn|error", NULL, "Lowest level logged."},
    {"log-format", QOD_CFG_ENUM, O(log_format), 0, 0, "text", "text|json", NULL,
     "Log lines as key=value text or JSON objects."},
    {"sync", QOD_CFG_ENUM, O(sync), 0, 0, "full", "full|normal", NULL,
     "full: fsync each group commit before answering; normal: leave it to the OS (faster, may lose the last "
     "commits on power loss)."},
    {"token-ttl", QOD_CFG_INT, O(token_ttl), 60, 86400, "3600", NULL, NULL, "Access token lifetime, seconds."},
    {"threads", QOD_CFG_INT, O(threads), 0, 256, "0", NULL, NULL, "HTTP worker threads (0 = one per core)."},
    {"conn-timeout", QOD_CFG_INT, O(conn_timeout), 1, 3600, "30", NULL, NULL,
     "Idle and slow-client connection timeout, seconds."},
    {"max-conns-per-ip", QOD_CFG_INT, O(max_conns_per_ip), 0, 1000000, "512", NULL, NULL,
     "Connections per client address (0 = no limit)."},
    {"max-conns", QOD_CFG_INT, O(max_conns), 16, 1000000, "10000", NULL, NULL, "Total connections."},
    {"max-body", QOD_CFG_INT, O(max_body), 1024, 10485760, "65536", NULL, NULL,
     "Largest request body, bytes (larger: 413)."},
    {"profiles", QOD_CFG_STR, O(profiles), 0, 4096, "", NULL, NULL,
     "QoS profile catalogue: a JSON array of CAMARA QosProfile objects (default: QOS_L, QOS_M, QOS_S)."},
    {"retention", QOD_CFG_INT, O(retention), 1, 31536000, "360", NULL, NULL,
     "Seconds an ended session stays readable before it is purged. The API promises at least 360; lower "
     "values are for tests."},
    {"sandbox-delay-ms", QOD_CFG_INT, O(sandbox_delay_ms), 0, 600000, "500", NULL, NULL,
     "Provisioning delay of the simulated network, milliseconds."},
    {"sim-cell-capacity", QOD_CFG_INT, O(sim_cell_capacity), 0, 100000000, "100000", NULL, NULL,
     "Guaranteed capacity of each simulated cell, kbit/s (live devices; sessions beyond it are refused)."},
    {"tc-dev", QOD_CFG_STR, O(tc_dev), 0, 15, "", NULL, NULL,
     "tc: the interface toward the devices (downstream traffic is shaped there)."},
    {"tc-uplink-dev", QOD_CFG_STR, O(tc_uplink_dev), 0, 15, "", NULL, NULL,
     "tc: an interface toward the servers, to shape the devices' upstream traffic too."},
    {"tc-link-rate", QOD_CFG_STR, O(tc_link_rate), 0, 32, "100mbit", NULL, check_rate,
     "tc: link rate of the shaped interfaces, e.g. 20mbit, 1gbit, 500kbit."},
    {"tc-guaranteed-share", QOD_CFG_DOUBLE, O(tc_share), 0.05, 1, "0.8", NULL, NULL,
     "tc: share of the link that guaranteed rates may take in all (admission control)."},
    {"token-rate-client", QOD_CFG_DOUBLE, O(token_rate_client), 0, 100000, "10", NULL, NULL,
     "Token endpoint: requests per second per client_id (burst twice that; 0 = no limit)."},
    {"token-rate-ip", QOD_CFG_DOUBLE, O(token_rate_ip), 0, 1000000, "50", NULL, NULL,
     "Token endpoint: requests per second per source address (burst twice that; 0 = no limit)."},
    {"ciba-auto-approve", QOD_CFG_BOOL, O(ciba_auto_approve), 0, 0, "false", NULL, NULL,
     "Approve live apps' 3-legged (CIBA) requests for registered devices without `qodctl consent approve`."},
    {"test-hooks", QOD_CFG_BOOL, O(test_hooks), 0, 0, "false", NULL, NULL,
     "Enables admin commands for fault tests (qodctl test clock, qodctl test hold-rescans). Never in production."},
    {"tls-cert", QOD_CFG_STR, O(tls_cert), 0, 4096, "", NULL, NULL,
     "PEM certificate (chain) to serve HTTPS on --listen; needs --tls-key."},
    {"tls-key", QOD_CFG_STR, O(tls_key), 0, 4096, "", NULL, NULL, "PEM private key of --tls-cert."},
    {"nef-url", QOD_CFG_STR, O(nef_url), 0, 1024, "", NULL, check_url,
     "nef: the NEF's apiRoot, e.g. https://nef.example.net (the backend calls {apiRoot}/3gpp-as-session-with-qos/v1)."},
    {"nef-scs-as-id", QOD_CFG_STR, O(nef_scs_as_id), 0, 128, "konera-qod", NULL, NULL, "nef: our SCS/AS identifier."},
    {"nef-token-url", QOD_CFG_STR, O(nef_token_url), 0, 1024, "", NULL, check_url,
     "nef: OAuth2 token endpoint for client credentials toward the NEF (with --nef-client-id/--nef-client-secret)."},
    {"nef-client-id", QOD_CFG_STR, O(nef_client_id), 0, 256, "", NULL, NULL, "nef: OAuth2 client id."},
    {"nef-client-secret", QOD_CFG_STR, O(nef_client_secret), 0, 512, "", NULL, NULL, "nef: OAuth2 client secret."},
    {"nef-scope", QOD_CFG_STR, O(nef_scope), 0, 500, "", NULL, NULL,
     "nef: the OAuth2 scope asked for with the client credentials (none by default)."},
    {"nef-bearer-token", QOD_CFG_STR, O(nef_bearer), 0, 4096, "", NULL, NULL,
     "nef: a static bearer token instead of OAuth2 client credentials."},
    {"nef-ca", QOD_CFG_STR, O(nef_ca), 0, 4096, "", NULL, NULL,
     "nef: PEM CA certificates that verify the NEF's TLS certificate (and its token endpoint's), instead of the "
     "system's."},
    {"nef-client-cert", QOD_CFG_STR, O(nef_client_cert), 0, 4096, "", NULL, NULL,
     "nef: PEM client certificate for mutual TLS toward the NEF (with --nef-client-key)."},
    {"nef-client-key", QOD_CFG_STR, O(nef_client_key), 0, 4096, "", NULL, NULL,
     "nef: PEM private key of --nef-client-cert."},
    {"nef-timeout", QOD_CFG_DOUBLE, O(nef_timeout_s), 0.1, 120, "10", NULL, NULL, "nef: seconds per NEF request."},
    {"nef-allocation-timeout", QOD_CFG_DOUBLE, O(nef_allocation_timeout_s), 0.1, 3600, "60", NULL, NULL,
     "nef: seconds a new subscription may wait for its resource allocation's outcome before the session is "
     "refused."},
    {"retry-schedule", QOD_CFG_STR, O(retry_schedule), 0, 1000, "0,5,300,1800,7200,18000,36000,36000", NULL,
     check_schedule,
     "Callback attempts: value i is the wait in seconds before attempt i, from the previous failure (±10% "
     "jitter); after the last one the event is dead."},
    {"callback-timeout", QOD_CFG_DOUBLE, O(callback_timeout_s), 0.1, 300, "15", NULL, NULL,
     "Seconds allowed for one callback attempt."},
    {"callback-ca", QOD_CFG_STR, O(callback_ca), 0, 4096, "", NULL, NULL,
     "A PEM CA file trusted for https callbacks, besides the system's CA store."},
    {"callback-allow", QOD_CFG_STR, O(callback_allow), 0, 4000, "", NULL, check_cidrs,
     "Comma-separated CIDRs callbacks may reach although private, loopback or link-local."},
    {"callback-per-host", QOD_CFG_INT, O(callback_per_host), 1, 1000, "8", NULL, NULL,
     "Callback requests in flight per receiving host."},
    {"callback-max-inflight", QOD_CFG_INT, O(callback_max_inflight), 1, 100000, "512", NULL, NULL,
     "Callback requests in flight in all."},
    {"callback-max-loaded", QOD_CFG_INT, O(callback_max_loaded), 16, 10000000, "200000", NULL, NULL,
     "Callback events held in memory; the others wait in the store and are loaded as room frees up."},
    {"callback-gone-max", QOD_CFG_INT, O(callback_gone_max), 1, 10000000, "100000", NULL, NULL,
     "Callback URLs that answered 410 Gone remembered at most (nothing is sent to them); past it the oldest is "
     "forgotten and called again."},
};

const size_t qod_option_count = sizeof qod_option_table / sizeof qod_option_table[0];

/* Rules between options, checked before anything is created. */
static int check_combinations(const qod_options *o, char *err, size_t errcap)
{
    if (!o->tls_cert[0] != !o->tls_key[0]) {
        snprintf(err, errcap, "option 'tls-cert': --tls-cert and --tls-key go together");
        return QOD_ERR_INVALID;
    }
    if (!o->nef_client_cert[0] != !o->nef_client_key[0]) {
        snprintf(err, errcap, "option 'nef-client-cert': --nef-client-cert and --nef-client-key go together");
        return QOD_ERR_INVALID;
    }
    if (strcmp(o->network, "tc") == 0 && !o->tc_dev[0]) {
        snprintf(err, errcap, "option 'tc-dev': --network tc needs the interface toward the devices");
        return QOD_ERR_INVALID;
    }
    if (strcmp(o->network, "nef") == 0 && !o->nef_url[0]) {
        snprintf(err, errcap, "option 'nef-url': --network nef needs the NEF's apiRoot");
        return QOD_ERR_INVALID;
    }
    if (o->cluster_node[0] && strcmp(o->network, "tc") == 0) {
        snprintf(err, errcap,
                 "option 'cluster-node': the tc backend shapes the traffic of the machine it runs on; "
                 "several nodes need --network sim or nef");
        return QOD_ERR_INVALID;
    }
    if (o->cluster_node[0] && !o->store[0]) {
        snprintf(err, errcap, "option 'cluster-node': several nodes need a shared --store postgres://… database");
        return QOD_ERR_INVALID;
    }
    return QOD_OK;
}

int qod_options_parse(qod_options *o, int argc, char **argv, char **envp, bool *help, char *err, size_t errcap)
{
    memset(o, 0, sizeof *o);
    int rc = qod_config_parse(qod_option_table, qod_option_count, o, argc, argv, envp, help, err, errcap);
    return rc || *help ? rc : check_combinations(o, err, errcap);
}

void qod_options_dispose(qod_options *o)
{
    qod_config_dispose(qod_option_table, qod_option_count, o);
}
