/* Frames for snapshots and checkpoint deltas: a fixed header, then the body.
 *
 *   offset size  field
 *        0    4  magic "OHSF"
 *        4    2  format version (little-endian, like every field)
 *        6    2  flags: low byte the caller's, high byte format features
 *        8    4  kind: the caller's record kind (snapshot, delta, ...)
 *       12    8  body length in bytes
 *       20    4  CRC32C of bytes 0..19 followed by the body
 *       24       body (msgpack, written by the Cython side with msgspec)
 *
 * These 24 bytes keep this layout in every format version, so any build can
 * check a frame's integrity before it judges the version: a damaged version
 * field reads as corruption, and an intact frame from a newer build reads as
 * incompatible. A newer version may change the body or use a format flag. */
#ifndef OH_CODEC_H
#define OH_CODEC_H

#include <stddef.h>
#include <stdint.h>
#include "oh_status.h"

#define OH_FRAME_MAGIC "OHSF"
#define OH_FRAME_VERSION 1
#define OH_FRAME_HEADER_SIZE 24
#define OH_FRAME_USER_FLAGS 0x00FFu   /* bits the caller may set */
#define OH_FRAME_KNOWN_FORMAT_FLAGS 0u /* format features this build reads */

/* Why a frame was rejected, for the error message. */
typedef enum {
    OH_FRAME_FINE = 0,
    OH_FRAME_SHORT_HEADER, /* fewer than 24 bytes */
    OH_FRAME_BAD_MAGIC,
    OH_FRAME_SHORT_BODY,   /* body length exceeds the bytes present */
    OH_FRAME_TRAILING,     /* bytes after the body */
    OH_FRAME_BAD_CRC,
    OH_FRAME_BAD_VERSION,  /* intact, but a version this build does not read */
    OH_FRAME_BAD_FLAGS     /* intact, but uses format features unknown here */
} oh_frame_problem;

typedef struct {
    uint16_t version;
    uint16_t flags;
    uint32_t kind;
    uint64_t body_len;   /* as declared by the header */
    size_t present;      /* bytes given, header included */
    uint32_t stored_crc;
    uint32_t computed_crc;
    oh_frame_problem problem;
} oh_frame_info;

/* Fill the 24-byte header at `out` for `body` (which may live at out + 24). */
void oh_frame_write_header(uint8_t *out, uint16_t flags, uint32_t kind,
                           const uint8_t *body, uint64_t body_len);

/* Check a whole frame (`n` bytes, nothing after it). Returns OH_OK, OH_TRUNCATED
 * (short header or body), OH_CORRUPT (magic, checksum, trailing bytes) or
 * OH_INCOMPATIBLE (version, format flags); `info` says which and the numbers. */
int oh_frame_check(const uint8_t *data, size_t n, oh_frame_info *info);

#endif
