# C declarations of crc32c.h (see crc32c.c).
from libc.stdint cimport uint32_t

cdef extern from "crc32c.h" nogil:
    uint32_t oh_crc32c(uint32_t crc, const void *data, size_t n)
    uint32_t oh_crc32c_sw(uint32_t crc, const void *data, size_t n)
    int oh_crc32c_hw()
    const char *oh_crc32c_impl()
