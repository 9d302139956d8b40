/* Embeds docs/openapi/konera-qod-v0.yaml (NUL-terminated) into the binary, so the daemon serves its own
 * OpenAPI file whatever its working directory. */
__asm__(".section .rodata\n"
        ".global qod_openapi_v0\n"
        ".type qod_openapi_v0, @object\n"
        "qod_openapi_v0:\n"
        ".incbin \"docs/openapi/konera-qod-v0.yaml\"\n"
        ".byte 0\n"
        ".previous\n");
