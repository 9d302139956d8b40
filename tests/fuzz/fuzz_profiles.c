/* Fuzzes qod_profiles_parse, which reads the operator's --profiles catalogue (a JSON array of CAMARA QosProfile
 * objects), then serves it with qod_profiles_to_json and filters it with qod_profile_for_device. Properties: an
 * accepted catalogue has 1..256 uniquely named profiles within the documented bounds; the served JSON is an array
 * that the strict parser accepts, one object per profile, without the x-devices extension; a profile without
 * x-devices is offered to everyone and one with x-devices exactly to its listed numbers. */
#include "fuzz.h"

#include "core/device.h"
#include "core/profiles.h"
#include "util/buf.h"
#include "util/err.h"
#include "util/json.h"

static void check_profile(const qod_profiles *ps, const qod_profile *p, const char *other_phone)
{
    FUZZ_CHECK(qod_profiles_find(ps, p->name) == p);
    FUZZ_CHECK(strlen(p->name) >= 3 && strlen(p->name) <= QOD_PROFILE_NAME_MAX);
    FUZZ_CHECK(p->min_duration_s >= 1 && p->max_duration_s >= p->min_duration_s);
    FUZZ_CHECK(p->priority >= 1 && p->priority <= 100);
    FUZZ_CHECK(p->min_down_kbps >= 0 && p->max_down_kbps >= 0 && p->min_up_kbps >= 0 && p->max_up_kbps >= 0);
    FUZZ_CHECK(p->delay_budget_us >= 0);
    FUZZ_CHECK((unsigned)p->status <= QOD_PROFILE_DEPRECATED && p->json);
    FUZZ_CHECK(qod_profile_for_device(p, "") == (p->devices == NULL));
    FUZZ_CHECK(!p->devices || (p->ndevices >= 1 && p->ndevices <= 10000));
    for (int i = 0; i < p->ndevices; i++) {
        FUZZ_CHECK(qod_phone_valid(p->devices[i]) && qod_profile_for_device(p, p->devices[i]));
        /* Listed numbers match whole, not by prefix. */
        char longer[24];
        snprintf(longer, sizeof longer, "%s0", p->devices[i]);
        bool listed = false;
        for (int k = 0; k < p->ndevices; k++)
            listed = listed || strcmp(p->devices[k], longer) == 0;
        FUZZ_CHECK(qod_profile_for_device(p, longer) == listed);
    }
    if (other_phone && p->devices) {
        bool listed = false;
        for (int k = 0; k < p->ndevices; k++)
            listed = listed || strcmp(p->devices[k], other_phone) == 0;
        FUZZ_CHECK(qod_profile_for_device(p, other_phone) == listed);
    }
}

/* The served catalogue is one array with a profile object per entry. */
static void check_served(const qod_profiles *ps)
{
    char err[128];
    cJSON *arr = NULL;
    qod_buf out;
    qod_buf_init(&out, 0);
    FUZZ_CHECK(qod_profiles_to_json(ps, &out) == QOD_OK);
    FUZZ_CHECK(qod_json_parse(out.data, out.len, 8, &arr, err, sizeof err) == QOD_OK && cJSON_IsArray(arr));
    FUZZ_CHECK((size_t)cJSON_GetArraySize(arr) == qod_profiles_count(ps));
    size_t i = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, arr)
    {
        const char *name = NULL;
        FUZZ_CHECK(cJSON_IsObject(it) && qod_json_str(it, "name", &name) == QOD_OK);
        FUZZ_CHECK(!cJSON_GetObjectItemCaseSensitive(it, "x-devices"));
        FUZZ_CHECK(strcmp(name, qod_profiles_at(ps, i++)->name) == 0);
    }
    cJSON_Delete(arr);
    qod_buf_dispose(&out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[256] = "";
    qod_profiles *ps = NULL;
    int rc = qod_profiles_parse((const char *)data, size, &ps, err, sizeof err);
    FUZZ_CHECK((rc == QOD_OK) == (ps != NULL));
    if (rc != QOD_OK) {
        FUZZ_CHECK(err[0] != '\0');
        return 0;
    }
    size_t n = qod_profiles_count(ps);
    FUZZ_CHECK(n >= 1 && n <= QOD_PROFILES_MAX && qod_profiles_at(ps, n) == NULL);
    /* One listed number, if any, is tried against every profile. */
    const char *phone = NULL;
    for (size_t i = 0; i < n && !phone; i++)
        if (qod_profiles_at(ps, i)->ndevices)
            phone = qod_profiles_at(ps, i)->devices[0];
    for (size_t i = 0; i < n; i++)
        check_profile(ps, qod_profiles_at(ps, i), phone);
    check_served(ps);
    qod_profiles_destroy(ps);
    return 0;
}
