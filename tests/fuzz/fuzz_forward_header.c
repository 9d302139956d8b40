/* Fuzzes how the forwarder reads a peer node's answer headers (src/api/forward.h, qod_forward_header_parse):
 * with several nodes, every answer of another node passes through it before it is relayed to the client.
 * Properties:
 * - the value lies inside the line, after the colon, and has no leading or trailing space or tab;
 * - a line without a name (no colon, colon first, or folded: starting with space or tab) is refused;
 * - a header that is relayed (Content-Type or one of the relayed list) is accepted only when its value has no
 *   control character other than tab and fits QOD_FORWARD_MAX_HEADER, so nothing can be smuggled into the
 *   client's answer; every other header is ignored whatever its value;
 * - the header name is matched case-insensitively: upper-casing the name gives the same verdict. */
#include "fuzz.h"

#include "api/forward.h"
#include "util/err.h"

#include <ctype.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *line = (const char *)data;
    qod_forward_header h;
    int rc = qod_forward_header_parse(line, size, &h);
    const char *colon = memchr(line, ':', size);
    if (!colon || colon == line || line[0] == ' ' || line[0] == '\t') {
        FUZZ_CHECK(rc == QOD_ERR_INVALID);
        return 0;
    }
    FUZZ_CHECK(h.value_at > (size_t)(colon - line) && h.value_at + h.value_len <= size);
    if (h.value_len) {
        char first = line[h.value_at], last = line[h.value_at + h.value_len - 1];
        FUZZ_CHECK(first != ' ' && first != '\t' && last != ' ' && last != '\t');
    }
    if (h.kind == QOD_FORWARD_HDR_IGNORED) {
        FUZZ_CHECK(rc == QOD_OK && h.relayed == -1);
    } else if (rc == QOD_OK) {
        FUZZ_CHECK(h.value_len <= QOD_FORWARD_MAX_HEADER);
        for (size_t i = 0; i < h.value_len; i++) {
            unsigned char c = (unsigned char)line[h.value_at + i];
            FUZZ_CHECK((c >= 0x20 || c == '\t') && c != 0x7f);
        }
    } else {
        FUZZ_CHECK(rc == QOD_ERR_INVALID || rc == QOD_ERR_LIMIT);
    }
    FUZZ_CHECK(h.kind != QOD_FORWARD_HDR_RELAYED || h.relayed >= 0);
    /* The same line with its name upper-cased gets the same verdict. */
    char *up = malloc(size ? size : 1);
    if (up) {
        memcpy(up, line, size);
        for (size_t i = 0; i < (size_t)(colon - line); i++)
            up[i] = (char)toupper((unsigned char)up[i]);
        qod_forward_header h2;
        int rc2 = qod_forward_header_parse(up, size, &h2);
        FUZZ_CHECK(rc2 == rc && h2.kind == h.kind && h2.relayed == h.relayed && h2.value_at == h.value_at &&
                   h2.value_len == h.value_len);
        free(up);
    }
    return 0;
}
