/* Fuzzes the front of the admin socket protocol (qod_admin_handle, src/api/admin.h): one JSON request line,
 * {"cmd": "...", "args": {...}}, answered by one JSON line. The commands themselves act on the daemon's apps,
 * sessions, store and registry and dereference them, so a request that would reach a known command is skipped:
 * this covers everything before the dispatch (parsing, the cmd and args checks, unknown commands) and the error
 * reply. Property: the reply is one line of JSON, {"ok":false,"error":"..."} as the strict parser reads it. */
#include "fuzz.h"

#include "api/admin.h"
#include "api/admin_cmds.h"
#include "util/buf.h"
#include "util/err.h"
#include "util/json.h"

/* True when qod_admin_handle would call a command for this line. */
static bool reaches_a_command(const char *line, size_t len)
{
    char err[128];
    cJSON *req = NULL;
    const char *cmd = NULL;
    const cJSON *args = NULL;
    bool reaches = qod_json_parse(line, len, 8, &req, err, sizeof err) == QOD_OK &&
                   qod_json_str(req, "cmd", &cmd) == QOD_OK && qod_json_obj(req, "args", &args) != QOD_ERR_INVALID &&
                   qod_admin_find(cmd) != NULL;
    cJSON_Delete(req);
    return reaches;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const qod_admin_deps deps = {0};
    char err[128];
    cJSON *reply = NULL;
    const char *text = NULL;
    bool ok = true;
    if (reaches_a_command((const char *)data, size))
        return 0;
    qod_buf out;
    qod_buf_init(&out, 0);
    qod_admin_handle(&deps, (const char *)data, size, &out);
    FUZZ_CHECK(out.len > 1 && out.data[out.len - 1] == '\n' && !memchr(out.data, '\n', out.len - 1));
    FUZZ_CHECK(qod_json_parse(out.data, out.len - 1, 2, &reply, err, sizeof err) == QOD_OK);
    FUZZ_CHECK(qod_json_bool(reply, "ok", &ok) == QOD_OK && !ok);
    FUZZ_CHECK(qod_json_str(reply, "error", &text) == QOD_OK && text[0] != '\0');
    cJSON_Delete(reply);
    qod_buf_dispose(&out);
    return 0;
}
