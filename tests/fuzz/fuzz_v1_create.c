/* Fuzzes the validation of the v1 request bodies (CAMARA Quality-on-Demand v1): create, extend and
 * retrieve-by-device. The handlers' parsing in src/api/konera_v1.c is static, so this makes the same calls on the
 * same members: qod_json_parse, the member lists, applicationServer and the ports, qosProfile and duration, sink
 * (qod_url_check) and sinkCredential (qod_time_parse on accessTokenExpiresUtc), device; extend's
 * requestedAdditionalDuration; retrieve's device. One input is checked as each of the three bodies, and every
 * member whatever the others hold. Properties: see fuzz_camara.h; and the stored "extra" text is one JSON object
 * whose first "_": member is the internal one the daemon appends (render_echoed_extra cuts the echoed part there,
 * so no client text may contain it). */
#include "fuzz_camara.h"

#define PUBLIC_URL "https://qod.example.net"

/* sinkCredential: {credentialType, accessToken, accessTokenExpiresUtc, accessTokenType}. */
static int64_t credential(const cJSON *root)
{
    static const char *const keys[] = {"credentialType", "accessToken", "accessTokenExpiresUtc", "accessTokenType",
                                       NULL};
    const cJSON *cred = cJSON_GetObjectItemCaseSensitive(root, "sinkCredential");
    const char *s = NULL, *bad = NULL;
    int64_t expires_ms = 0;
    if (!cJSON_IsObject(cred))
        return 0;
    if (!qod_json_only_keys(cred, keys, &bad))
        FUZZ_CHECK(bad != NULL);
    for (int i = 0; keys[i]; i++)
        if (qod_json_str(cred, keys[i], &s) == QOD_OK && i == 2 && qod_time_parse(s, &expires_ms) != QOD_OK)
            expires_ms = 0;
    return expires_ms;
}

/* sink and its credential; returns the credential's expiry (0 when none). */
static int64_t sink(const cJSON *root)
{
    const char *url = NULL;
    if (qod_json_str(root, "sink", &url) != QOD_OK)
        return 0;
    fuzz_callback_url(url);
    return credential(root);
}

/* The stored extra object: the normalised flow members, then the internal member "_". */
static void extra_object(const cJSON *root, int64_t sink_expires_ms)
{
    qod_buf extra;
    int count = 0;
    const cJSON *as = cJSON_GetObjectItemCaseSensitive(root, "applicationServer");
    qod_buf_init(&extra, 16384);
    qod_buf_puts(&extra, "{");
    if (as && !cJSON_IsNull(as) && fuzz_flows(root, &extra, &count) == QOD_OK) {
        size_t internal = extra.len + 1;
        qod_buf_printf(&extra,
                       ",\"_\":{\"threeLegged\":false,\"sinkExpiresMs\":%lld,\"source\":", (long long)sink_expires_ms);
        qod_buf_json_str(&extra, PUBLIC_URL);
        qod_buf_puts(&extra, "}}");
        fuzz_check_object_text(extra.data, extra.len);
        FUZZ_CHECK(strstr(extra.data, "\"_\":") == extra.data + internal);
    }
    qod_buf_dispose(&extra);
}

/* device, when given: a valid one is acted on unless it is only a networkAccessIdentifier. */
static void device(const cJSON *root)
{
    const cJSON *dev = cJSON_GetObjectItemCaseSensitive(root, "device");
    if (dev && !cJSON_IsNull(dev))
        fuzz_device(dev);
}

static void create(const cJSON *root)
{
    static const char *const keys[] = {"device",     "applicationServer", "devicePorts", "applicationServerPorts",
                                       "qosProfile", "duration",          "sink",        "sinkCredential",
                                       NULL};
    const char *bad = NULL;
    if (!qod_json_only_keys(root, keys, &bad))
        FUZZ_CHECK(bad != NULL);
    fuzz_profile_duration(root);
    extra_object(root, sink(root));
    device(root);
}

static void extend(const cJSON *root)
{
    static const char *const keys[] = {"requestedAdditionalDuration", NULL};
    const char *bad = NULL;
    int64_t add = 0;
    if (qod_json_only_keys(root, keys, &bad) &&
        qod_json_int(root, "requestedAdditionalDuration", 1, INT32_MAX, &add) == QOD_OK)
        FUZZ_CHECK(add >= 1 && add <= INT32_MAX);
}

static void retrieve(const cJSON *root)
{
    static const char *const keys[] = {"device", NULL};
    const char *bad = NULL;
    if (qod_json_only_keys(root, keys, &bad))
        device(root);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[512];
    cJSON *root = NULL;
    if (qod_json_parse((const char *)data, size, 0, &root, err, sizeof err) == QOD_OK && cJSON_IsObject(root)) {
        create(root);
        extend(root);
        retrieve(root);
    }
    cJSON_Delete(root);
    return 0;
}
