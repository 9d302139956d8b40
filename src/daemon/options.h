/* qodd's configuration: one table (options.c) that drives flags, QOD_<NAME> variables, --config files,
 * --help and docs/operations.md. */
#ifndef QOD_DAEMON_OPTIONS_H
#define QOD_DAEMON_OPTIONS_H

#include "util/config.h"

#include <stdbool.h>
#include <stddef.h>

typedef struct {
    char *listen;
    char *data;
    char *store;
    char *cluster_node;
    long long cluster_lease;
    long long store_timeout;
    char *network;
    char *public_url;
    char *log_level;
    char *log_format;
    char *config;
    char *sync;
    long long token_ttl;
    long long threads;
    long long conn_timeout;
    long long max_conns_per_ip;
    long long max_conns;
    long long max_body;
    char *profiles;
    long long retention;
    long long sandbox_delay_ms;
    long long sim_cell_capacity;
    char *retry_schedule;
    double callback_timeout_s;
    char *callback_ca;
    char *callback_allow;
    long long callback_per_host;
    long long callback_max_inflight;
    long long callback_max_loaded;
    long long callback_gone_max;
    char *tc_dev;
    char *tc_uplink_dev;
    char *tc_link_rate;
    double tc_share;
    double token_rate_client;
    double token_rate_ip;
    bool ciba_auto_approve;
    bool test_hooks;
    char *nef_url;
    char *nef_scs_as_id;
    char *nef_token_url;
    char *nef_client_id;
    char *nef_client_secret;
    char *nef_scope;
    char *nef_bearer;
    char *nef_ca;
    char *nef_client_cert;
    char *nef_client_key;
    double nef_timeout_s;
    double nef_allocation_timeout_s;
    char *tls_cert;
    char *tls_key;
} qod_options;

/* The option table and its size. */
extern const qod_cfg_opt qod_option_table[];
extern const size_t qod_option_count;

/* Parses the command line, environment and config file. On error writes a one-line message naming the option. */
int qod_options_parse(qod_options *o, int argc, char **argv, char **envp, bool *help, char *err, size_t errcap);
/* A rate text ("20mbit", "1gbit", "500kbit", "2mbps") in kbit/s, or -1. */
long long qod_options_rate_kbps(const char *v);
/* Frees the strings. */
void qod_options_dispose(qod_options *o);

#endif
