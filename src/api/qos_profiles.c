#include "api/qos_profiles.h"

#include "api/errors.h"
#include "api/konera_v1.h"
#include "core/profiles.h"
#include "util/err.h"
#include "util/json.h"

#include <stdio.h>
#include <string.h>

/* The phone of the token's device (3-legged), for restricted profiles; "" otherwise. */
static void token_phone(const qod_call *c, char out[17])
{
    out[0] = '\0';
    cJSON *d = c->claims.device[0] ? cJSON_Parse(c->claims.device) : NULL;
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(d, "phoneNumber");
    if (cJSON_IsString(p) && strlen(p->valuestring) < 17)
        memcpy(out, p->valuestring, strlen(p->valuestring) + 1);
    cJSON_Delete(d);
}

void qod_profiles_get(qod_call *c, qod_req *r)
{
    if (!qod_profile_name_valid(c->params[0])) {
        qod_api_error(r, 400, "INVALID_ARGUMENT", "The profile name must be 3 to 256 characters of [a-zA-Z0-9_.-].");
        return;
    }
    const qod_profile *p = qod_profiles_find(qod_api_deps_of(c->api)->profiles, c->params[0]);
    char phone[17];
    token_phone(c, phone);
    if (!p || !qod_profile_for_device(p, phone)) {
        qod_api_error(r, 404, "NOT_FOUND", "The specified resource is not found.");
        return;
    }
    qod_api_json(r, 200, p->json, strlen(p->json));
}

void qod_profiles_retrieve(qod_call *c, qod_req *r)
{
    static const char *const keys[] = {"device", "name", "status", NULL};
    size_t len;
    const char *body = qod_req_body(r, &len), *bad = NULL, *name = NULL, *status = NULL;
    cJSON *o = NULL;
    char err[256], phone[17] = "";
    if (qod_json_parse(body, len, 0, &o, err, sizeof err) != QOD_OK || !cJSON_IsObject(o) ||
        !qod_json_only_keys(o, keys, &bad) || qod_json_str(o, "name", &name) == QOD_ERR_INVALID ||
        qod_json_str(o, "status", &status) == QOD_ERR_INVALID ||
        (status && strcmp(status, "ACTIVE") && strcmp(status, "INACTIVE") && strcmp(status, "DEPRECATED")) ||
        (name && !qod_profile_name_valid(name))) {
        qod_api_error(r, 400, "INVALID_ARGUMENT",
                      "Body may hold device, name and status (ACTIVE, INACTIVE or DEPRECATED).");
        cJSON_Delete(o);
        return;
    }
    const cJSON *dev = cJSON_GetObjectItemCaseSensitive(o, "device");
    if (dev || c->claims.device[0]) {
        qod_device d;
        qod_device_kind kind;
        bool from_token;
        if (!qod_camara_device(c, r, dev, &d, &kind, &from_token) || !qod_camara_device_known(c, r, &d, kind)) {
            cJSON_Delete(o);
            return;
        }
        if (d.present & QOD_DEV_PHONE)
            memcpy(phone, d.phone, sizeof phone);
    }
    const qod_profiles *ps = qod_api_deps_of(c->api)->profiles;
    qod_buf b;
    qod_buf_init(&b, 0);
    qod_buf_puts(&b, "[");
    bool first = true;
    for (size_t i = 0; i < qod_profiles_count(ps); i++) {
        const qod_profile *p = qod_profiles_at(ps, i);
        if ((name && strcmp(name, p->name) != 0) || (status && strcmp(status, qod_profile_status_name(p->status))) ||
            !qod_profile_for_device(p, phone))
            continue;
        qod_buf_puts(&b, first ? "" : ",");
        qod_buf_puts(&b, p->json);
        first = false;
    }
    qod_buf_puts(&b, "]");
    qod_api_json(r, 200, b.data, b.len);
    qod_buf_dispose(&b);
    cJSON_Delete(o);
}
