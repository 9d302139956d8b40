/* Structured logging. Each line carries a time, a level, a module tag, an event name and key=value fields;
 * with the json format the same fields become one JSON object per line. The macros test the level before
 * evaluating their arguments, so a disabled debug line costs one comparison. */
#ifndef QOD_UTIL_LOG_H
#define QOD_UTIL_LOG_H

#include <stdbool.h>

typedef enum { QOD_LOG_DEBUG = 0, QOD_LOG_INFO, QOD_LOG_WARN, QOD_LOG_ERROR, QOD_LOG_OFF } qod_log_level;
typedef enum { QOD_LOG_TEXT = 0, QOD_LOG_JSON } qod_log_format;

/* Current threshold; read by the macros without a lock (a plain int written once at start). */
extern int qod_log_threshold;

/* Sets level and format; not thread-safe, call before starting threads. */
void qod_log_setup(qod_log_level level, qod_log_format format);
/* Parses "debug|info|warn|error|off"; returns QOD_OK or QOD_ERR_INVALID. */
int qod_log_level_parse(const char *s, qod_log_level *out);
/* Writes one line to stderr. `fields` is a printf format producing `key=value key2="quoted value"`. */
void qod_log_write(qod_log_level level, const char *mod, const char *event, const char *fields, ...)
    __attribute__((format(printf, 4, 5)));

#define QOD_LOG_AT(lvl, mod, event, ...)                                                                               \
    do {                                                                                                               \
        if ((int)(lvl) >= qod_log_threshold)                                                                           \
            qod_log_write((lvl), (mod), (event), __VA_ARGS__);                                                         \
    } while (0)
#define QOD_DEBUG(mod, event, ...) QOD_LOG_AT(QOD_LOG_DEBUG, mod, event, __VA_ARGS__)
#define QOD_INFO(mod, event, ...) QOD_LOG_AT(QOD_LOG_INFO, mod, event, __VA_ARGS__)
#define QOD_WARN(mod, event, ...) QOD_LOG_AT(QOD_LOG_WARN, mod, event, __VA_ARGS__)
#define QOD_ERROR(mod, event, ...) QOD_LOG_AT(QOD_LOG_ERROR, mod, event, __VA_ARGS__)

#endif
