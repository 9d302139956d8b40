/* JSON helpers over cJSON: bounded parsing and strict typed field access.
 * Parsing enforces a byte limit, a nesting limit and rejects duplicate keys, so that two parsers
 * (ours and a client's) can never disagree on what a body means. */
#ifndef QOD_UTIL_JSON_H
#define QOD_UTIL_JSON_H

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define QOD_JSON_MAX_DEPTH 16
#define QOD_JSON_MAX_MEMBERS 256

/* Parses n bytes. On success *out is owned by the caller (cJSON_Delete). On failure writes a short reason
 * into err (errcap bytes) and returns QOD_ERR_INVALID (syntax, duplicate key) or QOD_ERR_LIMIT (depth). */
int qod_json_parse(const char *s, size_t n, int max_depth, cJSON **out, char *err, size_t errcap);
/* Parses a document qodd wrote itself (a store row): the same answer for well-formed text, without the scans that
 * guard against hostile input (duplicates, UTF-8, control characters), which cost a third of a restart. cJSON's
 * own nesting limit still bounds it, and only whitespace may follow the value. */
int qod_json_parse_own(const char *s, size_t n, cJSON **out);

/* Field access. Each returns QOD_OK, QOD_ERR_NOTFOUND when absent (or JSON null), or QOD_ERR_INVALID for the wrong
 * type. Strings are borrowed from the cJSON tree. */
int qod_json_str(const cJSON *obj, const char *key, const char **out);
/* A whole number within [min, max]; 1.5 or 1e300 are QOD_ERR_INVALID, out of range QOD_ERR_RANGE. */
int qod_json_int(const cJSON *obj, const char *key, int64_t min, int64_t max, int64_t *out);
int qod_json_bool(const cJSON *obj, const char *key, bool *out);
/* An object member (QOD_ERR_INVALID when present but not an object). */
int qod_json_obj(const cJSON *obj, const char *key, const cJSON **out);
/* True when obj has only keys from the NULL-terminated list; *bad receives the first unknown key. */
bool qod_json_only_keys(const cJSON *obj, const char *const *allowed, const char **bad);
/* True when the number is integral and inside [min, max]. */
bool qod_json_is_int(const cJSON *item, int64_t min, int64_t max);

#endif
