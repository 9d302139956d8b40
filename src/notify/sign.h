/* Standard Webhooks 1.0 signatures: webhook-id, webhook-timestamp and
 * webhook-signature "v1,<base64 HMAC-SHA256(key, id.timestamp.body)>", where key is the base64-decoded part of
 * a "whsec_…" secret. Several signatures are space-separated (used while a rotated secret is in its grace
 * period). */
#ifndef QOD_NOTIFY_SIGN_H
#define QOD_NOTIFY_SIGN_H

#include "util/buf.h"

#include <stddef.h>
#include <stdint.h>

/* Appends "v1,<sig>" for one secret. QOD_ERR_INVALID for a malformed secret. */
int qod_webhook_sign(const char *secret, const char *msg_id, int64_t ts, const char *body, size_t len, qod_buf *out);
/* Verifies a webhook-signature header against secret: QOD_OK when any listed v1 signature matches (constant
 * time), QOD_ERR_DENIED when none does, QOD_ERR_RANGE when |now - ts| > tolerance_s, QOD_ERR_INVALID for a
 * malformed secret or header. */
int qod_webhook_verify(const char *secret, const char *msg_id, const char *ts_text, const char *sig_header,
                       const char *body, size_t len, int64_t now, int64_t tolerance_s);

#endif
