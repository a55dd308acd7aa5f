/* CRC32C (Castagnoli, reflected polynomial 0x82F63B78).
 *
 * The value convention is the usual one: oh_crc32c(0, "123456789", 9) is
 * 0xE3069283, and oh_crc32c(oh_crc32c(0, a), b) is the CRC of a followed by b.
 * oh_crc32c picks, once per process, the SSE4.2 (x86_64) or ARMv8 CRC32
 * instructions when the CPU has them, else portable slice-by-8 tables. */
#ifndef OH_CRC32C_H
#define OH_CRC32C_H

#include <stddef.h>
#include <stdint.h>

uint32_t oh_crc32c(uint32_t crc, const void *data, size_t n);
/* Always the portable table implementation (tests compare both paths). */
uint32_t oh_crc32c_sw(uint32_t crc, const void *data, size_t n);
/* 1 when oh_crc32c uses CPU instructions, 0 when it uses the tables. */
int oh_crc32c_hw(void);
/* Name of the implementation in use: "sse4.2", "armv8-crc" or "slice-by-8". */
const char *oh_crc32c_impl(void);

#endif
