# C declarations of codec.h (see codec.c).
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from oh_status cimport *

cdef extern from "codec.h" nogil:
    enum:
        OH_FRAME_VERSION
        OH_FRAME_HEADER_SIZE
        OH_FRAME_USER_FLAGS
        OH_FRAME_KNOWN_FORMAT_FLAGS
    ctypedef enum oh_frame_problem:
        OH_FRAME_FINE
        OH_FRAME_SHORT_HEADER
        OH_FRAME_BAD_MAGIC
        OH_FRAME_SHORT_BODY
        OH_FRAME_TRAILING
        OH_FRAME_BAD_CRC
        OH_FRAME_BAD_VERSION
        OH_FRAME_BAD_FLAGS
    ctypedef struct oh_frame_info:
        uint16_t version
        uint16_t flags
        uint32_t kind
        uint64_t body_len
        size_t present
        uint32_t stored_crc
        uint32_t computed_crc
        oh_frame_problem problem
    void oh_frame_write_header(uint8_t *out, uint16_t flags, uint32_t kind,
                               const uint8_t *body, uint64_t body_len)
    int oh_frame_check(const uint8_t *data, size_t n, oh_frame_info *info)
