/* Flow descriptions shared by the QoD surfaces and the network backends: the application server
 * (IPv4/IPv6 address or address/mask) and port specifications ({ranges:[{from,to}], ports:[…]}).
 * Parsing validates against the CAMARA schema and writes a normalised compact JSON. */
#ifndef QOD_CORE_FLOWS_H
#define QOD_CORE_FLOWS_H

#include "util/buf.h"

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define QOD_PORTS_MAX 64

typedef struct {
    char ipv4[16];
    int ipv4_prefix; /* 0..32, -1 when no IPv4 */
    char ipv6[46];
    int ipv6_prefix; /* 0..128, -1 when no IPv6 */
} qod_app_server;

typedef struct {
    int n;
    uint16_t from[QOD_PORTS_MAX];
    uint16_t to[QOD_PORTS_MAX]; /* single ports have from == to */
} qod_ports;

/* Parses an ApplicationServer object ("what" names the field in messages). Appends normalised JSON. */
int qod_app_server_parse(const cJSON *o, const char *what, qod_app_server *out, qod_buf *json, char *err,
                         size_t errcap);
/* Parses a PortsSpec object. Appends normalised JSON. */
int qod_ports_parse(const cJSON *o, const char *what, qod_ports *out, qod_buf *json, char *err, size_t errcap);

/* The flows of a session as stored (JSON object text with optional applicationServer, devicePorts and
 * applicationServerPorts), read back for the network backends. */
typedef struct {
    bool has_server;
    qod_app_server server;
    bool has_device_ports;
    qod_ports device_ports;
    bool has_server_ports;
    qod_ports server_ports;
} qod_flows;

/* Reads stored flows; NULL or "" means none (all false). QOD_ERR_INVALID with why in err when malformed. */
int qod_flows_read(const char *json, qod_flows *out, char *err, size_t errcap);

#endif
