#include "codec.h"

#include <string.h>
#include "crc32c.h"

#define CRC_AT 20

static inline void put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

static inline void put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static inline void put64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static inline uint16_t get16(const uint8_t *p)
{
    return (uint16_t)(p[0] | (p[1] << 8));
}

static inline uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) |
           ((uint32_t)p[3] << 24);
}

static inline uint64_t get64(const uint8_t *p)
{
    return (uint64_t)get32(p) | ((uint64_t)get32(p + 4) << 32);
}

void oh_frame_write_header(uint8_t *out, uint16_t flags, uint32_t kind,
                           const uint8_t *body, uint64_t body_len)
{
    uint32_t crc;
    memcpy(out, OH_FRAME_MAGIC, 4);
    put16(out + 4, OH_FRAME_VERSION);
    put16(out + 6, flags);
    put32(out + 8, kind);
    put64(out + 12, body_len);
    crc = oh_crc32c(0, out, CRC_AT);
    crc = oh_crc32c(crc, body, (size_t)body_len);
    put32(out + CRC_AT, crc);
}

int oh_frame_check(const uint8_t *data, size_t n, oh_frame_info *info)
{
    size_t have_body;
    memset(info, 0, sizeof(*info));
    info->present = n;
    if (n < OH_FRAME_HEADER_SIZE) {
        /* A prefix of a frame is "truncated"; anything else is not a frame. */
        size_t m = n < 4 ? n : 4;
        info->problem = memcmp(data, OH_FRAME_MAGIC, m) == 0 ? OH_FRAME_SHORT_HEADER
                                                              : OH_FRAME_BAD_MAGIC;
        return info->problem == OH_FRAME_SHORT_HEADER ? OH_TRUNCATED : OH_CORRUPT;
    }
    if (memcmp(data, OH_FRAME_MAGIC, 4) != 0) {
        info->problem = OH_FRAME_BAD_MAGIC;
        return OH_CORRUPT;
    }
    info->version = get16(data + 4);
    info->flags = get16(data + 6);
    info->kind = get32(data + 8);
    info->body_len = get64(data + 12);
    info->stored_crc = get32(data + CRC_AT);
    have_body = n - OH_FRAME_HEADER_SIZE;
    if (info->body_len > (uint64_t)have_body) {
        info->problem = OH_FRAME_SHORT_BODY;
        return OH_TRUNCATED;
    }
    if (info->body_len < (uint64_t)have_body) {
        info->problem = OH_FRAME_TRAILING;
        return OH_CORRUPT;
    }
    info->computed_crc = oh_crc32c(oh_crc32c(0, data, CRC_AT), data + OH_FRAME_HEADER_SIZE,
                                   have_body);
    if (info->computed_crc != info->stored_crc) {
        info->problem = OH_FRAME_BAD_CRC;
        return OH_CORRUPT;
    }
    /* Intact from here on: anything unknown means "written by a newer build". */
    if (info->version == 0 || info->version > OH_FRAME_VERSION) {
        info->problem = OH_FRAME_BAD_VERSION;
        return OH_INCOMPATIBLE;
    }
    if ((info->flags & ~OH_FRAME_USER_FLAGS) & ~(uint16_t)OH_FRAME_KNOWN_FORMAT_FLAGS) {
        info->problem = OH_FRAME_BAD_FLAGS;
        return OH_INCOMPATIBLE;
    }
    return OH_OK;
}
