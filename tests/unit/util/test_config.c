#include "util/config.h"

#include "qtest.h"
#include "util/err.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The target struct of the test table: one field per option type. */
typedef struct {
    char *config;
    char *name;
    long long port;
    double ratio;
    bool verbose;
    char *mode;
    char *api_token;
} cfg;

/* A custom check: API tokens start with "tok_". */
static int check_token(const char *v, char *err, size_t errcap)
{
    if (strncmp(v, "tok_", 4) != 0) {
        snprintf(err, errcap, "'%s' does not start with tok_", v);
        return -1;
    }
    return 0;
}

#define O(field) offsetof(cfg, field)

static const qod_cfg_opt table[] = {
    {"config", QOD_CFG_STR, O(config), 0, 4096, NULL, NULL, NULL, "Read options from FILE."},
    {"name", QOD_CFG_STR, O(name), 0, 16, "qod", NULL, NULL, "Instance name."},
    {"port", QOD_CFG_INT, O(port), 1, 65535, "8080", NULL, NULL, "TCP port."},
    {"ratio", QOD_CFG_DOUBLE, O(ratio), 0, 1, "0.5", NULL, NULL, "Sampling ratio."},
    {"verbose", QOD_CFG_BOOL, O(verbose), 0, 0, "false", NULL, NULL, "Log more."},
    {"mode", QOD_CFG_ENUM, O(mode), 0, 0, "sim", "sim|tc|off", NULL, "Network backend."},
    {"api-token", QOD_CFG_STR, O(api_token), 0, 0, NULL, NULL, check_token, "Upstream API token."},
};
#define N_OPTS (sizeof table / sizeof table[0])

/* Number of arguments in a NULL-terminated argv array literal. */
#define ARGC(a) ((int)(sizeof(a) / sizeof((a)[0])) - 1)

static char *no_env[] = {NULL};

/* Parses into a zeroed c. */
static int parse(cfg *c, int argc, char **argv, char **envp, bool *help, char *err, size_t errcap)
{
    memset(c, 0, sizeof *c);
    err[0] = '\0';
    return qod_config_parse(table, N_OPTS, c, argc, argv, envp, help, err, errcap);
}

/* Writes text to a new temporary file; path receives its name. Returns 0 or -1. */
static int write_temp(char *path, size_t cap, const char *text)
{
    snprintf(path, cap, "/tmp/qod-cfg-XXXXXX");
    int fd = mkstemp(path);
    if (fd < 0)
        return -1;
    size_t n = strlen(text);
    int rc = write(fd, text, n) == (ssize_t)n ? 0 : -1;
    close(fd);
    return rc;
}

/* Parses with a config file holding text, named by --config. */
static int parse_with_file(cfg *c, const char *text, char **extra_argv, char **envp, char *err, size_t errcap)
{
    char path[64];
    char *argv[16] = {"prog", "--config", path};
    int argc = 3;
    bool help = false;
    if (write_temp(path, sizeof path, text) != 0) {
        snprintf(err, errcap, "cannot write temp file");
        return -1;
    }
    for (; extra_argv && *extra_argv && argc < 15; extra_argv++)
        argv[argc++] = *extra_argv;
    argv[argc] = NULL;
    int rc = parse(c, argc, argv, envp, &help, err, errcap);
    unlink(path);
    return rc;
}

QTEST(defaults_applied)
{
    cfg c;
    bool help = true;
    char err[256];
    char *argv[] = {"prog", NULL};
    QT_EQ_INT(parse(&c, ARGC(argv), argv, no_env, &help, err, sizeof err), QOD_OK);
    QT_TRUE(!help);
    QT_EQ_STR(c.name, "qod");
    QT_EQ_INT(c.port, 8080);
    QT_TRUE(c.ratio == 0.5);
    QT_TRUE(!c.verbose);
    QT_EQ_STR(c.mode, "sim");
    QT_TRUE(c.api_token == NULL);
    QT_TRUE(c.config == NULL);
    qod_config_dispose(table, N_OPTS, &c);
}

QTEST(flag_with_separate_value)
{
    cfg c;
    bool help;
    char err[256];
    char *argv[] = {"prog", "--port", "9000", "--name", "edge", "--ratio", "0.25", "--mode", "tc", NULL};
    QT_EQ_INT(parse(&c, ARGC(argv), argv, no_env, &help, err, sizeof err), QOD_OK);
    QT_EQ_INT(c.port, 9000);
    QT_EQ_STR(c.name, "edge");
    QT_TRUE(c.ratio == 0.25);
    QT_EQ_STR(c.mode, "tc");
    qod_config_dispose(table, N_OPTS, &c);
}

QTEST(flag_with_equals_value)
{
    cfg c;
    bool help;
    char err[256];
    char *argv[] = {"prog", "--port=9001", "--name=a=b", "--api-token=tok_x", NULL};
    QT_EQ_INT(parse(&c, ARGC(argv), argv, no_env, &help, err, sizeof err), QOD_OK);
    QT_EQ_INT(c.port, 9001);
    QT_EQ_STR(c.name, "a=b");
    QT_EQ_STR(c.api_token, "tok_x");
    qod_config_dispose(table, N_OPTS, &c);
}

QTEST(flag_repeated_last_wins)
{
    cfg c;
    bool help;
    char err[256];
    char *argv[] = {"prog", "--name", "one", "--name", "two", NULL};
    QT_EQ_INT(parse(&c, ARGC(argv), argv, no_env, &help, err, sizeof err), QOD_OK);
    QT_EQ_STR(c.name, "two");
    qod_config_dispose(table, N_OPTS, &c);
}

QTEST(env_sets_option)
{
    cfg c;
    bool help;
    char err[256];
    char *argv[] = {"prog", NULL};
    char *envp[] = {"HOME=/root", "QOD_PORT=7000", "QOD_VERBOSE=yes", "QOD_MODE=off", NULL};
    QT_EQ_INT(parse(&c, ARGC(argv), argv, envp, &help, err, sizeof err), QOD_OK);
    QT_EQ_INT(c.port, 7000);
    QT_TRUE(c.verbose);
    QT_EQ_STR(c.mode, "off");
    qod_config_dispose(table, N_OPTS, &c);
}

QTEST(env_dash_maps_to_underscore)
{
    cfg c;
    bool help;
    char err[256];
    char *argv[] = {"prog", NULL};
    char *envp[] = {"QOD_API_TOKEN=tok_env", NULL};
    QT_EQ_INT(parse(&c, ARGC(argv), argv, envp, &help, err, sizeof err), QOD_OK);
    QT_EQ_STR(c.api_token, "tok_env");
    qod_config_dispose(table, N_OPTS, &c);
}

QTEST(env_name_must_be_upper_case_exact)
{
    cfg c;
    bool help;
    char err[256];
    char *argv[] = {"prog", NULL};
    char *envp[] = {"QOD_port=1", "QOD_API-TOKEN=tok_dash", "qod_name=lower", "QOD_PORTX=2", "QOD_POR=3", NULL};
    QT_EQ_INT(parse(&c, ARGC(argv), argv, envp, &help, err, sizeof err), QOD_OK);
    QT_EQ_INT(c.port, 8080);
    QT_TRUE(c.api_token == NULL);
    QT_EQ_STR(c.name, "qod");
    qod_config_dispose(table, N_OPTS, &c);
}

QTEST(env_unknown_qod_variable_ignored)
{
    cfg c;
    bool help;
    char err[256];
    char *argv[] = {"prog", NULL};
    char *envp[] = {"QOD_BUILD=/somewhere", "QOD_=x", "QOD_NOVALUE", NULL};
    QT_EQ_INT(parse(&c, ARGC(argv), argv, envp, &help, err, sizeof err), QOD_OK);
    qod_config_dispose(table, N_OPTS, &c);
}

QTEST(env_bad_value_names_option)
{
    cfg c;
    bool help;
    char err[256];
    char *argv[] = {"prog", NULL};
    char *envp[] = {"QOD_PORT=many", NULL};
    QT_TRUE(parse(&c, ARGC(argv), argv, envp, &help, err, sizeof err) != QOD_OK);
    QT_TRUE(strstr(err, "port") != NULL);
    qod_config_dispose(table, N_OPTS, &c);
}

QTEST(file_sets_options)
{
    cfg c;
    char err[256];
    QT_EQ_INT(parse_with_file(&c,
                              "# a comment\n"
                              "\n"
                              "   \n"
                              "port = 6000\n"
                              "  name=filed  \n"
                              "\t# indented comment\n"
                              "ratio =0.75\r\n"
                              "verbose = on\n"
                              "mode = off",
                              NULL, no_env, err, sizeof err),
              QOD_OK);
    QT_EQ_INT(c.port, 6000);
    QT_EQ_STR(c.name, "filed");
    QT_TRUE(c.ratio == 0.75);
    QT_TRUE(c.verbose);
    QT_EQ_STR(c.mode, "off");
    QT_TRUE(c.config != NULL);
    qod_config_dispose(table, N_OPTS, &c);
}

QTEST(file_named_by_env)
{
    cfg c;
    bool help;
    char err[256], path[64], envvar[96];
    QT_EQ_INT(write_temp(path, sizeof path, "port = 6001\n"), 0);
    snprintf(envvar, sizeof envvar, "QOD_CONFIG=%s", path);
    char *argv[] = {"prog", NULL};
    char *envp[] = {envvar, NULL};
    int rc = parse(&c, ARGC(argv), argv, envp, &help, err, sizeof err);
    unlink(path);
    QT_EQ_INT(rc, QOD_OK);
    QT_EQ_INT(c.port, 6001);
    QT_EQ_STR(c.config, path);
    qod_config_dispose(table, N_OPTS, &c);
}

QTEST(file_named_by_equals_flag)
{
    cfg c;
    bool help;
    char err[256], path[64], flag[96];
    QT_EQ_INT(write_temp(path, sizeof path, "port = 6002\n"), 0);
    snprintf(flag, sizeof flag, "--config=%s", path);
    char *argv[] = {"prog", flag, NULL};
    int rc = parse(&c, ARGC(argv), argv, no_env, &help, err, sizeof err);
    unlink(path);
    QT_EQ_INT(rc, QOD_OK);
    QT_EQ_INT(c.port, 6002);
    qod_config_dispose(table, N_OPTS, &c);
}

QTEST(file_unknown_key_named)
{
    cfg c;
    char err[256];
    QT_EQ_INT(parse_with_file(&c, "port = 1\nfrobnicate = 3\n", NULL, no_env, err, sizeof err), QOD_ERR_INVALID);
    QT_TRUE(strstr(err, "frobnicate") != NULL);
    qod_config_dispose(table, N_OPTS, &c);
}

QTEST(file_cannot_name_config)
{
    cfg c;
    char err[256];
    QT_EQ_INT(parse_with_file(&c, "config = /etc/other\n", NULL, no_env, err, sizeof err), QOD_ERR_INVALID);
    QT_TRUE(strstr(err, "config") != NULL);
    qod_config_dispose(table, N_OPTS, &c);
}

QTEST(file_line_without_equals_rejected)
{
    cfg c;
    char err[256];
    QT_EQ_INT(parse_with_file(&c, "port 1\n", NULL, no_env, err, sizeof err), QOD_ERR_INVALID);
    QT_TRUE(err[0] != '\0');
    qod_config_dispose(table, N_OPTS, &c);
}

QTEST(file_bad_value_names_option)
{
    cfg c;
    char err[256];
    QT_TRUE(parse_with_file(&c, "ratio = 2\n", NULL, no_env, err, sizeof err) != QOD_OK);
    QT_TRUE(strstr(err, "ratio") != NULL);
    qod_config_dispose(table, N_OPTS, &c);
}

QTEST(file_missing_is_error)
{
    cfg c;
    bool help;
    char err[256];
    char *argv[] = {"prog", "--config", "/nonexistent/qod-test.conf", NULL};
    QT_EQ_INT(parse(&c, ARGC(argv), argv, no_env, &help, err, sizeof err), QOD_ERR_INVALID);
    QT_TRUE(strstr(err, "/nonexistent/qod-test.conf") != NULL);
    qod_config_dispose(table, N_OPTS, &c);
}

QTEST(precedence_flag_env_file_default)
{
    cfg c;
    char err[256];
    char *extra[] = {"--port", "3000", NULL};
    char *envp[] = {"QOD_PORT=2000", "QOD_RATIO=0.2", NULL};
    QT_EQ_INT(parse_with_file(&c, "port = 1000\nratio = 0.1\nname = fromfile\n", extra, envp, err, sizeof err), QOD_OK);
    QT_EQ_INT(c.port, 3000);       /* flag over env and file */
    QT_TRUE(c.ratio == 0.2);       /* env over file */
    QT_EQ_STR(c.name, "fromfile"); /* file over default */
    QT_EQ_STR(c.mode, "sim");      /* default */
    qod_config_dispose(table, N_OPTS, &c);
}

QTEST(unknown_flag_named)
{
    cfg c;
    bool help;
    char err[256];
    char *argv[] = {"prog", "--port", "1", "--frobnicate=3", NULL};
    QT_EQ_INT(parse(&c, ARGC(argv), argv, no_env, &help, err, sizeof err), QOD_ERR_INVALID);
    QT_TRUE(strstr(err, "frobnicate") != NULL);
    QT_TRUE(strstr(err, "=3") == NULL);
    qod_config_dispose(table, N_OPTS, &c);
}

QTEST(option_prefix_is_not_a_match)
{
    cfg c;
    bool help;
    char err[256];
    char *argv[] = {"prog", "--po", "1", NULL};
    QT_EQ_INT(parse(&c, ARGC(argv), argv, no_env, &help, err, sizeof err), QOD_ERR_INVALID);
    QT_TRUE(strstr(err, "po") != NULL);
    qod_config_dispose(table, N_OPTS, &c);
}

QTEST(positional_argument_rejected)
{
    cfg c;
    bool help;
    char err[256];
    char *argv[] = {"prog", "stray", NULL};
    QT_EQ_INT(parse(&c, ARGC(argv), argv, no_env, &help, err, sizeof err), QOD_ERR_INVALID);
    QT_TRUE(strstr(err, "stray") != NULL);
    qod_config_dispose(table, N_OPTS, &c);
}

QTEST(int_out_of_range_names_option)
{
    cfg c;
    bool help;
    char err[256];
    char *argv[] = {"prog", "--port", "70000", NULL};
    QT_TRUE(parse(&c, ARGC(argv), argv, no_env, &help, err, sizeof err) != QOD_OK);
    QT_TRUE(strstr(err, "port") != NULL);
    QT_TRUE(strstr(err, "70000") != NULL);
    qod_config_dispose(table, N_OPTS, &c);
}

QTEST(int_bounds_inclusive)
{
    cfg c;
    bool help;
    char err[256];
    char *lo[] = {"prog", "--port", "1", NULL};
    char *hi[] = {"prog", "--port", "65535", NULL};
    char *below[] = {"prog", "--port", "0", NULL};
    QT_EQ_INT(parse(&c, ARGC(lo), lo, no_env, &help, err, sizeof err), QOD_OK);
    QT_EQ_INT(c.port, 1);
    qod_config_dispose(table, N_OPTS, &c);
    QT_EQ_INT(parse(&c, ARGC(hi), hi, no_env, &help, err, sizeof err), QOD_OK);
    QT_EQ_INT(c.port, 65535);
    qod_config_dispose(table, N_OPTS, &c);
    QT_TRUE(parse(&c, ARGC(below), below, no_env, &help, err, sizeof err) != QOD_OK);
    qod_config_dispose(table, N_OPTS, &c);
}

/* config.h: "On error writes a one-line message naming the option into err and returns QOD_ERR_INVALID." */
QTEST(int_out_of_range_returns_invalid_as_documented)
{
    cfg c;
    bool help;
    char err[256];
    char *argv[] = {"prog", "--port", "70000", NULL};
    int rc = parse(&c, ARGC(argv), argv, no_env, &help, err, sizeof err);
    qod_config_dispose(table, N_OPTS, &c);
    QT_EQ_INT(rc, QOD_ERR_INVALID);
}

QTEST(int_not_a_number_rejected)
{
    static const char *const bad[] = {"80x", "", "eighty", "nan", "inf", "80 "};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        cfg c;
        bool help;
        char err[256];
        char *argv[] = {"prog", "--port", (char *)bad[i], NULL};
        int rc = parse(&c, ARGC(argv), argv, no_env, &help, err, sizeof err);
        qod_config_dispose(table, N_OPTS, &c);
        QT_EQ_INT(rc, QOD_ERR_INVALID);
        QT_TRUE(strstr(err, "port") != NULL);
    }
}

QTEST(int_fraction_rejected)
{
    cfg c;
    bool help;
    char err[256];
    char *argv[] = {"prog", "--port", "80.5", NULL};
    QT_EQ_INT(parse(&c, ARGC(argv), argv, no_env, &help, err, sizeof err), QOD_ERR_INVALID);
    QT_TRUE(strstr(err, "port") != NULL);
    qod_config_dispose(table, N_OPTS, &c);
}

QTEST(double_out_of_range_names_option)
{
    cfg c;
    bool help;
    char err[256];
    char *argv[] = {"prog", "--ratio", "1.01", NULL};
    QT_TRUE(parse(&c, ARGC(argv), argv, no_env, &help, err, sizeof err) != QOD_OK);
    QT_TRUE(strstr(err, "ratio") != NULL);
    qod_config_dispose(table, N_OPTS, &c);
}

QTEST(enum_bad_choice_rejected)
{
    cfg c;
    bool help;
    char err[256];
    char *argv[] = {"prog", "--mode", "si", NULL};
    QT_EQ_INT(parse(&c, ARGC(argv), argv, no_env, &help, err, sizeof err), QOD_ERR_INVALID);
    QT_TRUE(strstr(err, "mode") != NULL);
    QT_TRUE(strstr(err, "sim|tc|off") != NULL);
    qod_config_dispose(table, N_OPTS, &c);
}

QTEST(enum_is_case_sensitive_and_whole)
{
    static const char *const bad[] = {"SIM", "sim|tc", "tcx", "|"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        cfg c;
        bool help;
        char err[256];
        char *argv[] = {"prog", "--mode", (char *)bad[i], NULL};
        int rc = parse(&c, ARGC(argv), argv, no_env, &help, err, sizeof err);
        qod_config_dispose(table, N_OPTS, &c);
        QT_EQ_INT(rc, QOD_ERR_INVALID);
    }
}

QTEST(bool_bare_flag_at_end_is_true)
{
    cfg c;
    bool help;
    char err[256];
    char *argv[] = {"prog", "--verbose", NULL};
    QT_EQ_INT(parse(&c, ARGC(argv), argv, no_env, &help, err, sizeof err), QOD_OK);
    QT_TRUE(c.verbose);
    qod_config_dispose(table, N_OPTS, &c);
}

QTEST(bool_bare_flag_before_flag_is_true)
{
    cfg c;
    bool help;
    char err[256];
    char *argv[] = {"prog", "--verbose", "--port", "5", NULL};
    QT_EQ_INT(parse(&c, ARGC(argv), argv, no_env, &help, err, sizeof err), QOD_OK);
    QT_TRUE(c.verbose);
    QT_EQ_INT(c.port, 5);
    qod_config_dispose(table, N_OPTS, &c);
}

QTEST(bool_explicit_values)
{
    static const struct {
        const char *v;
        bool want;
    } cases[] = {{"true", true},   {"YES", true}, {"1", true},  {"On", true},
                 {"false", false}, {"no", false}, {"0", false}, {"OFF", false}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        cfg c;
        bool help;
        char err[256];
        char *argv[] = {"prog", "--verbose", (char *)cases[i].v, NULL};
        char *envp[] = {cases[i].want ? "QOD_VERBOSE=0" : "QOD_VERBOSE=1", NULL};
        int rc = parse(&c, ARGC(argv), argv, envp, &help, err, sizeof err);
        bool got = c.verbose;
        qod_config_dispose(table, N_OPTS, &c);
        QT_EQ_INT(rc, QOD_OK);
        QT_EQ_INT(got, cases[i].want);
    }
}

QTEST(bool_bad_value_rejected)
{
    cfg c;
    bool help;
    char err[256];
    char *argv[] = {"prog", "--verbose=maybe", NULL};
    QT_EQ_INT(parse(&c, ARGC(argv), argv, no_env, &help, err, sizeof err), QOD_ERR_INVALID);
    QT_TRUE(strstr(err, "verbose") != NULL);
    qod_config_dispose(table, N_OPTS, &c);
}

QTEST(help_sets_help)
{
    cfg c;
    bool help = false;
    char err[256];
    char *argv[] = {"prog", "--help", NULL};
    QT_EQ_INT(parse(&c, ARGC(argv), argv, no_env, &help, err, sizeof err), QOD_OK);
    QT_TRUE(help);
    qod_config_dispose(table, N_OPTS, &c);
}

QTEST(help_short_flag_sets_help)
{
    cfg c;
    bool help = false;
    char err[256];
    char *argv[] = {"prog", "-h", NULL};
    QT_EQ_INT(parse(&c, ARGC(argv), argv, no_env, &help, err, sizeof err), QOD_OK);
    QT_TRUE(help);
    qod_config_dispose(table, N_OPTS, &c);
}

QTEST(help_skips_validation_of_the_rest)
{
    cfg c;
    bool help = false;
    char err[256];
    char *argv[] = {"prog", "--port", "0", "--bogus", "--help", NULL};
    char *envp[] = {"QOD_PORT=zero", NULL};
    QT_EQ_INT(parse(&c, ARGC(argv), argv, envp, &help, err, sizeof err), QOD_OK);
    QT_TRUE(help);
    qod_config_dispose(table, N_OPTS, &c);
}

QTEST(missing_value_at_end_rejected)
{
    cfg c;
    bool help;
    char err[256];
    char *argv[] = {"prog", "--port", NULL};
    QT_EQ_INT(parse(&c, ARGC(argv), argv, no_env, &help, err, sizeof err), QOD_ERR_INVALID);
    QT_TRUE(strstr(err, "port") != NULL);
    qod_config_dispose(table, N_OPTS, &c);
}

QTEST(missing_value_before_next_flag_rejected)
{
    cfg c;
    bool help;
    char err[256];
    char *argv[] = {"prog", "--port", "--verbose", NULL};
    QT_EQ_INT(parse(&c, ARGC(argv), argv, no_env, &help, err, sizeof err), QOD_ERR_INVALID);
    QT_TRUE(strstr(err, "port") != NULL);
    qod_config_dispose(table, N_OPTS, &c);
}

QTEST(check_fn_rejects_with_its_reason)
{
    cfg c;
    bool help;
    char err[256];
    char *argv[] = {"prog", "--api-token", "secret", NULL};
    QT_EQ_INT(parse(&c, ARGC(argv), argv, no_env, &help, err, sizeof err), QOD_ERR_INVALID);
    QT_TRUE(strstr(err, "api-token") != NULL);
    QT_TRUE(strstr(err, "does not start with tok_") != NULL);
    QT_TRUE(c.api_token == NULL);
    qod_config_dispose(table, N_OPTS, &c);
}

QTEST(str_longer_than_max_rejected)
{
    cfg c;
    bool help;
    char err[256];
    char *ok[] = {"prog", "--name", "0123456789abcdef", NULL};
    char *bad[] = {"prog", "--name", "0123456789abcdefg", NULL};
    QT_EQ_INT(parse(&c, ARGC(ok), ok, no_env, &help, err, sizeof err), QOD_OK);
    qod_config_dispose(table, N_OPTS, &c);
    QT_TRUE(parse(&c, ARGC(bad), bad, no_env, &help, err, sizeof err) != QOD_OK);
    QT_TRUE(strstr(err, "name") != NULL);
    qod_config_dispose(table, N_OPTS, &c);
}

QTEST(config_set_direct)
{
    cfg c;
    char err[256];
    memset(&c, 0, sizeof c);
    QT_EQ_INT(qod_config_set(&table[2], &c, "42", err, sizeof err), QOD_OK);
    QT_EQ_INT(c.port, 42);
    QT_EQ_INT(qod_config_set(&table[1], &c, "x", err, sizeof err), QOD_OK);
    QT_EQ_INT(qod_config_set(&table[1], &c, "y", err, sizeof err), QOD_OK); /* the old string is freed */
    QT_EQ_STR(c.name, "y");
    qod_config_dispose(table, N_OPTS, &c);
}

QTEST(dispose_frees_and_clears_strings)
{
    cfg c;
    bool help;
    char err[256];
    char *argv[] = {"prog", "--api-token", "tok_1", NULL};
    QT_EQ_INT(parse(&c, ARGC(argv), argv, no_env, &help, err, sizeof err), QOD_OK);
    qod_config_dispose(table, N_OPTS, &c);
    QT_TRUE(c.name == NULL);
    QT_TRUE(c.mode == NULL);
    QT_TRUE(c.api_token == NULL);
    qod_config_dispose(table, N_OPTS, &c); /* a second dispose is harmless */
}

QTEST(dispose_after_failed_parse_frees)
{
    cfg c;
    bool help;
    char err[256];
    char *argv[] = {"prog", "--name", "set", "--mode", "bad", NULL};
    QT_TRUE(parse(&c, ARGC(argv), argv, no_env, &help, err, sizeof err) != QOD_OK);
    qod_config_dispose(table, N_OPTS, &c); /* ASan reports a leak if "set" or the defaults survive */
    QT_TRUE(c.name == NULL);
}

QTEST(help_lists_every_option)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    QT_TRUE(f != NULL);
    qod_config_help(table, N_OPTS, "prog", f);
    fclose(f);
    int missing = 0;
    for (size_t i = 0; i < N_OPTS; i++) {
        char flag[64];
        snprintf(flag, sizeof flag, "--%s ", table[i].name);
        if (!strstr(text, flag)) {
            printf("  missing %s\n", flag);
            missing++;
        }
    }
    int has_env = strstr(text, "QOD_API_TOKEN") != NULL && strstr(text, "QOD_PORT") != NULL;
    int has_prog = strstr(text, "prog") != NULL;
    int has_range = strstr(text, "[1, 65535]") != NULL;
    int has_choices = strstr(text, "sim|tc|off") != NULL;
    int has_default = strstr(text, "default 8080") != NULL;
    free(text);
    QT_EQ_INT(missing, 0);
    QT_TRUE(has_env);
    QT_TRUE(has_prog);
    QT_TRUE(has_range);
    QT_TRUE(has_choices);
    QT_TRUE(has_default);
}

QTEST_MAIN(QT_CASE(defaults_applied), QT_CASE(flag_with_separate_value), QT_CASE(flag_with_equals_value),
           QT_CASE(flag_repeated_last_wins), QT_CASE(env_sets_option), QT_CASE(env_dash_maps_to_underscore),
           QT_CASE(env_name_must_be_upper_case_exact), QT_CASE(env_unknown_qod_variable_ignored),
           QT_CASE(env_bad_value_names_option), QT_CASE(file_sets_options), QT_CASE(file_named_by_env),
           QT_CASE(file_named_by_equals_flag), QT_CASE(file_unknown_key_named), QT_CASE(file_cannot_name_config),
           QT_CASE(file_line_without_equals_rejected), QT_CASE(file_bad_value_names_option),
           QT_CASE(file_missing_is_error), QT_CASE(precedence_flag_env_file_default), QT_CASE(unknown_flag_named),
           QT_CASE(option_prefix_is_not_a_match), QT_CASE(positional_argument_rejected),
           QT_CASE(int_out_of_range_names_option), QT_CASE(int_bounds_inclusive),
           QT_CASE(int_out_of_range_returns_invalid_as_documented), QT_CASE(int_not_a_number_rejected),
           QT_CASE(int_fraction_rejected), QT_CASE(double_out_of_range_names_option), QT_CASE(enum_bad_choice_rejected),
           QT_CASE(enum_is_case_sensitive_and_whole), QT_CASE(bool_bare_flag_at_end_is_true),
           QT_CASE(bool_bare_flag_before_flag_is_true), QT_CASE(bool_explicit_values), QT_CASE(bool_bad_value_rejected),
           QT_CASE(help_sets_help), QT_CASE(help_short_flag_sets_help), QT_CASE(help_skips_validation_of_the_rest),
           QT_CASE(missing_value_at_end_rejected), QT_CASE(missing_value_before_next_flag_rejected),
           QT_CASE(check_fn_rejects_with_its_reason), QT_CASE(str_longer_than_max_rejected), QT_CASE(config_set_direct),
           QT_CASE(dispose_frees_and_clears_strings), QT_CASE(dispose_after_failed_parse_frees),
           QT_CASE(help_lists_every_option))
