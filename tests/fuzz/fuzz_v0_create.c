/* Fuzzes the validation of the v0 request bodies: the create body (POST /camara/qod/v0/sessions) and the sandbox
 * network-event body. The handlers' parsing in src/api/konera_v0.c is static, so this makes the same calls on the
 * same members: qod_json_parse, the member list, device, qosProfile and duration, webhook (qod_url_check as a live
 * and as a sandbox app) and the flow members. The handler stops at the first invalid member; here every member is
 * checked whatever the others hold, which reaches every state the handler reaches and more. Properties: see
 * fuzz_camara.h, and the stored "extra" text (the normalised flow members) is one JSON object. */
#include "fuzz_camara.h"

/* webhook: {notificationUrl, notificationAuthToken?}. */
static void webhook(const cJSON *root)
{
    static const char *const keys[] = {"notificationUrl", "notificationAuthToken", NULL};
    const cJSON *wh = NULL;
    const char *bad = NULL, *url = NULL;
    if (qod_json_obj(root, "webhook", &wh) != QOD_OK)
        return;
    if (!qod_json_only_keys(wh, keys, &bad))
        FUZZ_CHECK(bad != NULL);
    if (qod_json_str(wh, "notificationUrl", &url) == QOD_OK)
        fuzz_callback_url(url);
}

/* The flow members, stored as one normalised object when there is any. */
static void flows(const cJSON *root)
{
    qod_buf extra;
    int count = 0;
    qod_buf_init(&extra, 16384);
    qod_buf_puts(&extra, "{");
    if (fuzz_flows(root, &extra, &count) == QOD_OK && count) {
        qod_buf_puts(&extra, "}");
        fuzz_check_object_text(extra.data, extra.len);
    }
    qod_buf_dispose(&extra);
}

/* The sandbox network-event body: {"qosStatus": "AVAILABLE" | "UNAVAILABLE"}. */
static void network_event(const cJSON *root)
{
    static const char *const keys[] = {"qosStatus", NULL};
    const char *bad = NULL, *st = NULL;
    if (qod_json_only_keys(root, keys, &bad) && qod_json_str(root, "qosStatus", &st) == QOD_OK)
        FUZZ_CHECK(st != NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const keys[] = {
        "device", "qosProfile", "duration", "webhook", "applicationServer", "devicePorts", "applicationServerPorts",
        NULL};
    char err[512];
    const char *bad = NULL;
    cJSON *root = NULL;
    if (qod_json_parse((const char *)data, size, 0, &root, err, sizeof err) != QOD_OK || !cJSON_IsObject(root))
        goto out;
    if (!qod_json_only_keys(root, keys, &bad))
        FUZZ_CHECK(bad != NULL);
    const cJSON *dev = cJSON_GetObjectItemCaseSensitive(root, "device");
    if (dev)
        fuzz_device(dev);
    fuzz_profile_duration(root);
    webhook(root);
    flows(root);
    network_event(root);
out:
    cJSON_Delete(root);
    return 0;
}
