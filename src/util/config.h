/* Table-driven configuration. One table (name, type, bounds, default, help) drives parsing of flags,
 * QOD_<NAME> environment variables and `name = value` lines of a config file, and prints --help.
 * Precedence: command-line flag > environment > config file > default. */
#ifndef QOD_UTIL_CONFIG_H
#define QOD_UTIL_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

typedef enum {
    QOD_CFG_STR,    /* char * (owned by the target struct, freed by qod_config_dispose) */
    QOD_CFG_INT,    /* long long within [min, max] */
    QOD_CFG_DOUBLE, /* double within [min, max] */
    QOD_CFG_BOOL,   /* bool: true/false/yes/no/1/0/on/off; a bare flag means true */
    QOD_CFG_ENUM,   /* char * that must be one of `choices` ("a|b|c") */
} qod_cfg_type;

/* Custom check for a string value: returns 0 when valid, or writes why into err and returns -1. */
typedef int (*qod_cfg_check_fn)(const char *value, char *err, size_t errcap);

typedef struct {
    const char *name; /* flag name without dashes: "listen" -> --listen, QOD_LISTEN */
    qod_cfg_type type;
    size_t offset;          /* offsetof() of the field in the target struct */
    double min, max;        /* bounds for INT and DOUBLE; max length for STR when max > 0 */
    const char *def;        /* default value as text, or NULL for none */
    const char *choices;    /* ENUM: "a|b|c" */
    qod_cfg_check_fn check; /* optional extra validation */
    const char *help;
} qod_cfg_opt;

/* Parses argv/env/file into target. On error writes a one-line message naming the option into err and returns
 * QOD_ERR_INVALID. When --help is present, sets *help and returns QOD_OK without validating the rest.
 * The --config option, when the table has one, names a file read before the environment and the flags. */
int qod_config_parse(const qod_cfg_opt *table, size_t n, void *target, int argc, char **argv, char **envp, bool *help,
                     char *err, size_t errcap);
/* Frees the strings the parser stored into target. */
void qod_config_dispose(const qod_cfg_opt *table, size_t n, void *target);
/* Prints usage and the option table (flag, env name, default, bounds, help). */
void qod_config_help(const qod_cfg_opt *table, size_t n, const char *prog, FILE *out);
/* Parses one value into target as the option's type; used by the file/env/flag paths and by tests. */
int qod_config_set(const qod_cfg_opt *opt, void *target, const char *value, char *err, size_t errcap);

#endif
