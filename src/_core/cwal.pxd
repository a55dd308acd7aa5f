# C declarations of wal.h (see wal.c).
from libc.stdint cimport uint8_t, uint16_t, uint64_t
from oh_status cimport *
from cfileio cimport oh_io_error

cdef extern from "wal.h" nogil:
    enum:
        OH_LOG_VERSION
        OH_LOG_FILE_HEADER
        OH_LOG_RECORD_HEADER
        OH_LOG_MAX_RECORD
    ctypedef enum oh_log_tail:
        OH_LOG_CLEAN
        OH_LOG_TORN_FILE_HEADER
        OH_LOG_TORN_HEADER
        OH_LOG_TORN_RECORD
        OH_LOG_BAD_LENGTH
        OH_LOG_BAD_CRC
        OH_LOG_BAD_MAGIC
        OH_LOG_BAD_HEADER_CRC
        OH_LOG_BAD_VERSION

    ctypedef struct oh_log_reader:
        uint64_t size
        uint64_t valid
        uint64_t count
        int done
        oh_log_tail tail
        uint64_t tail_at
        uint64_t tail_len
        uint16_t version
    int oh_logr_open(oh_log_reader *r, const char *path, oh_io_error *e)
    int oh_logr_next(oh_log_reader *r, const uint8_t **rec, size_t *len)
    int oh_logr_fill(oh_log_reader *r, oh_io_error *e)
    void oh_logr_release(oh_log_reader *r)

    ctypedef struct oh_log_writer:
        pass
    ctypedef struct oh_log_options:
        int sync
        int repair
        double group_window
        size_t max_buffer
    ctypedef struct oh_log_open_info:
        uint64_t records
        uint64_t kept
        uint64_t dropped
        oh_log_tail tail
        uint64_t tail_at
        uint64_t tail_len
        uint16_t version
        int created
    int oh_logw_open(oh_log_writer **out, const char *path, const oh_log_options *opt,
                     oh_log_open_info *info, oh_io_error *e)
    int oh_logw_append(oh_log_writer *w, const void *data, size_t n, uint64_t *seq)
    int oh_logw_wait_durable(oh_log_writer *w, uint64_t seq, double timeout)
    int oh_logw_wait_room(oh_log_writer *w, double timeout)
    int oh_logw_close(oh_log_writer *w, oh_io_error *e)
    void oh_logw_free(oh_log_writer *w)
    uint64_t oh_logw_next_seq(oh_log_writer *w)
    uint64_t oh_logw_durable(oh_log_writer *w)
    uint64_t oh_logw_flushes(oh_log_writer *w)
    int oh_logw_is_closed(oh_log_writer *w)
    int oh_logw_error(oh_log_writer *w, oh_io_error *e)
    int oh_logw_add_notify(oh_log_writer *w, int fd)
    void oh_logw_remove_notify(oh_log_writer *w, int fd)
    void oh_logw_hold(oh_log_writer *w, int on)
