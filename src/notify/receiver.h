/* A local webhook receiver for app developers (`qodctl webhook listen`, as `stripe listen`): it verifies each
 * request's Standard Webhooks signature, prints the event, and answers 204 (verified) or 400 (not verified).
 * With a save directory, each request is also written as a JSON file that `qodctl webhook verify` checks. */
#ifndef QOD_NOTIFY_RECEIVER_H
#define QOD_NOTIFY_RECEIVER_H

#include <stdint.h>
#include <stdio.h>

/* Serves on 127.0.0.1:port until SIGINT/SIGTERM. Returns 0, or non-zero when it cannot listen. */
int qod_receiver_run(unsigned port, const char *secret, const char *save_dir, int64_t tolerance_s, FILE *out);
/* Verifies a saved request ({"headers":{…},"body":"…"}); QOD_OK or an error with why. tolerance_s < 0 skips
 * the timestamp age check (saved requests are old by nature). */
int qod_receiver_verify_file(const char *path, const char *secret, int64_t tolerance_s, char *why, size_t cap);

#endif
