# C declarations of tokbuf.h (see tokbuf.c).
from libc.stdint cimport int32_t, uint64_t
from oh_status cimport *

cdef extern from "tokbuf.h" nogil:
    enum:
        OH_TB_OPEN
        OH_TB_FINISHED
        OH_TB_STOPPED
        OH_TB_FAILED
        OH_TB_EV_TEXT
        OH_TB_EV_END

    ctypedef struct oh_tokbuf:
        pass

    ctypedef struct oh_tb_info:
        uint64_t n_tokens
        uint64_t base_bytes
        uint64_t base_chars
        uint64_t emitted_bytes
        uint64_t emitted_chars
        uint64_t held_bytes
        size_t n_readers
        int end
        int32_t stop_index

    int oh_tb_init(oh_tokbuf *tb, const char *const *stops, const size_t *stop_lens,
                   size_t n_stops, size_t max_bytes, size_t retain_bytes, int keep_ids)
    void oh_tb_destroy(oh_tokbuf *tb)
    int oh_tb_append(oh_tokbuf *tb, int32_t id, const char *piece, size_t n, unsigned *events)
    int oh_tb_append_many(oh_tokbuf *tb, const int32_t *ids, const char *const *pieces,
                          const size_t *lens, size_t n, size_t *taken, unsigned *events)
    int oh_tb_finish(oh_tokbuf *tb, int failed, unsigned *events)
    void oh_tb_get_info(oh_tokbuf *tb, oh_tb_info *out)
    int oh_tb_reader_open(oh_tokbuf *tb, uint64_t char_offset, size_t *slot)
    void oh_tb_reader_close(oh_tokbuf *tb, size_t slot)
    int oh_tb_read(oh_tokbuf *tb, size_t slot, char **scratch, size_t *scratch_cap, size_t *n)
    int oh_tb_wait(oh_tokbuf *tb, size_t slot, double timeout)
    int oh_tb_copy_text(oh_tokbuf *tb, char **out, size_t *n)
    int oh_tb_copy_ids(oh_tokbuf *tb, int32_t **out, size_t *n)
