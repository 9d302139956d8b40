/* Fuzzes qod_nef_notification_parse, the parser of the UserPlaneNotificationData a NEF (or anyone who learnt a
 * notification path) POSTs to /nef/v1/notifications/{token}, and qod_nef_list_parse on the same bytes. Besides
 * memory errors it checks:
 * - the result is QOD_OK or QOD_ERR_INVALID, and an invalid body yields no events;
 * - an accepted body holds 1..QOD_NEF_REPORTS_MAX events, each a known event or QOD_NEF_EV_OTHER, with a name;
 * - the subscription its transaction names is "" or made of URI unreserved characters and '%';
 * - the list parser answers QOD_OK or QOD_ERR_INVALID and hands out non-NULL strings only;
 * - qod_nef_problem_text (on the same bytes) writes printable ASCII without quotes or backslashes. */
#include "fuzz.h"

#include "net/nef_msg.h"
#include "util/err.h"

#include <ctype.h>
#include <stdbool.h>
#include <string.h>

static void on_listed(void *arg, const qod_nef_listed *s)
{
    (void)arg;
    FUZZ_CHECK(s->self && s->notification_destination && s->ue_ipv4 && s->ue_ipv6 && s->gpsi && s->qos_reference);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[160];
    qod_nef_notification n;
    int rc = qod_nef_notification_parse((const char *)data, size, &n, err, sizeof err);
    FUZZ_CHECK(rc == QOD_OK || rc == QOD_ERR_INVALID);
    FUZZ_CHECK(rc == QOD_OK ? n.n >= 1 && n.n <= QOD_NEF_REPORTS_MAX : n.n == 0);
    for (int i = 0; i < n.n; i++) {
        FUZZ_CHECK(n.ev[i] >= 0 && n.ev[i] <= QOD_NEF_EV_OTHER);
        FUZZ_CHECK(qod_nef_event_name(n.ev[i])[0] != '\0');
    }
    for (const char *p = n.subscription; *p; p++)
        FUZZ_CHECK(isalnum((unsigned char)*p) || strchr("-._~%", *p));
    rc = qod_nef_list_parse((const char *)data, size, on_listed, NULL, err, sizeof err);
    FUZZ_CHECK(rc == QOD_OK || rc == QOD_ERR_INVALID);
    char problem[96];
    bool got = qod_nef_problem_text((const char *)data, size, problem, sizeof problem);
    FUZZ_CHECK(got == (problem[0] != '\0'));
    for (const char *p = problem; *p; p++)
        FUZZ_CHECK(*p >= 0x20 && *p <= 0x7e && *p != '"' && *p != '\\');
    return 0;
}
