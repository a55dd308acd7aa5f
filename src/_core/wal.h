/* Append-only record log with grouped fsyncs (write-ahead-log style).
 *
 * File: a 16-byte header, then records back to back.
 *
 *   header  "OHWL" | u16 version | u16 flags (0) | u32 reserved (0) | u32 CRC32C of bytes 0..11
 *   record  u32 payload length | u32 CRC32C of (length bytes, payload) | payload
 *
 * A record is "sequence number" i when it is the i-th record of the file
 * (from 0). Readers stop at the first record that is cut short or fails its
 * checksum and report the rest as a dropped tail: a crash mid-write leaves
 * exactly that, and no record after such a point was ever acknowledged as
 * durable, because one fsync covers every byte written before it.
 *
 * Writers: appenders copy their framed record into a shared buffer (mutex) and
 * get its sequence number; one flusher thread per log (plain C, never the GIL)
 * swaps the buffer out, writes it with one pwrite and makes it durable with
 * one fdatasync, then publishes the new durable count, wakes blocked waiters
 * and pokes every registered notify fd (the Cython side's event-loop hooks).
 * Records that arrive while an fsync is running go out together in the next. */
#ifndef OH_WAL_H
#define OH_WAL_H

#include <stddef.h>
#include <stdint.h>
#include "fileio.h"
#include "oh_status.h"

#define OH_LOG_MAGIC "OHWL"
#define OH_LOG_VERSION 1
#define OH_LOG_FILE_HEADER 16
#define OH_LOG_RECORD_HEADER 8
#define OH_LOG_MAX_RECORD (1u << 30)

/* How a log ends, or what is wrong with its file header. */
typedef enum {
    OH_LOG_CLEAN = 0,        /* ends exactly after a whole record */
    OH_LOG_TORN_FILE_HEADER, /* shorter than its header: creation was cut short */
    OH_LOG_TORN_HEADER,      /* fewer than 8 bytes of a record header remain */
    OH_LOG_TORN_RECORD,      /* a record runs past the end of the file */
    OH_LOG_BAD_LENGTH,       /* a record length beyond OH_LOG_MAX_RECORD */
    OH_LOG_BAD_CRC,          /* a record fails its checksum */
    OH_LOG_BAD_MAGIC,        /* file header: not an openheim log */
    OH_LOG_BAD_HEADER_CRC,   /* file header: damaged */
    OH_LOG_BAD_VERSION       /* file header: intact, but a newer format */
} oh_log_tail;

/* ------------------------------------------------------------------ */
/* Reader                                                              */
/* ------------------------------------------------------------------ */

typedef struct {
    int fd;
    int own_fd;
    uint64_t size;       /* file size at open: the reader reads this much */
    uint64_t pos;        /* file offset of buf[0] */
    uint8_t *buf;
    size_t cap, start, end; /* unread buffered bytes are buf[start..end) */
    size_t need;         /* bytes wanted from buf[start] by the next fill */
    uint64_t valid;      /* offset just past the last good record */
    uint64_t count;      /* good records so far */
    int done;
    oh_log_tail tail;    /* set when done */
    uint64_t tail_at;    /* offset of the bad or cut-short record */
    uint64_t tail_len;   /* its declared payload length, if it had one */
    uint16_t version;
} oh_log_reader;

/* Open `path` and check its header. OH_OK, OH_IO (e), OH_CORRUPT or
 * OH_INCOMPATIBLE (r->tail says why; r is then already released). */
int oh_logr_open(oh_log_reader *r, const char *path, oh_io_error *e);
/* Next record, with no system call: OH_OK (*rec, *len point into the reader's
 * buffer until the next call), OH_EMPTY (call oh_logr_fill, then again) or
 * OH_CLOSED (the valid log ended; r->tail says how). */
int oh_logr_next(oh_log_reader *r, const uint8_t **rec, size_t *len);
/* Read more of the file (blocking): OH_OK, OH_NOMEM or OH_IO (e). */
int oh_logr_fill(oh_log_reader *r, oh_io_error *e);
void oh_logr_release(oh_log_reader *r);

/* ------------------------------------------------------------------ */
/* Writer                                                              */
/* ------------------------------------------------------------------ */

typedef struct oh_log_writer oh_log_writer;

typedef struct {
    int sync;            /* fdatasync every batch (else writes only) */
    int repair;          /* drop a torn or corrupt tail when opening */
    double group_window; /* seconds the flusher waits for more records */
    size_t max_buffer;   /* bytes waiting to be written before appends wait */
} oh_log_options;

typedef struct {         /* what opening found */
    uint64_t records;    /* whole records kept */
    uint64_t kept;       /* bytes kept (header included) */
    uint64_t dropped;    /* bytes of torn or corrupt tail (removed if repair) */
    oh_log_tail tail;
    uint64_t tail_at;
    uint64_t tail_len;
    uint16_t version;
    int created;
} oh_log_open_info;

/* Open or create the log at `path` (locked against other writers), drop a
 * torn tail, start the flusher. OH_OK, OH_IO (e), OH_NOMEM, OH_CORRUPT
 * (damaged header, or a bad tail with repair off) or OH_INCOMPATIBLE. */
int oh_logw_open(oh_log_writer **out, const char *path, const oh_log_options *opt,
                 oh_log_open_info *info, oh_io_error *e);
/* Frame and buffer one record; *seq gets its sequence number. Never blocks on
 * I/O. OH_OK, OH_FULL (buffer over max_buffer: oh_logw_wait_room),
 * OH_CLOSED, OH_IO (the log failed earlier), OH_INVALID (too large), OH_NOMEM. */
int oh_logw_append(oh_log_writer *w, const void *data, size_t n, uint64_t *seq);
/* Block until record `seq` (< next_seq) is durable. timeout < 0: forever.
 * OH_OK, OH_TIMEOUT, OH_IO. */
int oh_logw_wait_durable(oh_log_writer *w, uint64_t seq, double timeout);
/* Block until the buffer has room again. OH_OK, OH_TIMEOUT, OH_CLOSED, OH_IO. */
int oh_logw_wait_room(oh_log_writer *w, double timeout);
/* Flush what is buffered, stop the flusher, fsync and close the file. Blocks;
 * idempotent. OH_OK or OH_IO (e: the first failure the log met). */
int oh_logw_close(oh_log_writer *w, oh_io_error *e);
/* Close if needed, then free. */
void oh_logw_free(oh_log_writer *w);

uint64_t oh_logw_next_seq(oh_log_writer *w);
uint64_t oh_logw_durable(oh_log_writer *w);  /* records durable: seq < this */
uint64_t oh_logw_flushes(oh_log_writer *w);  /* write(+fsync) batches so far */
int oh_logw_is_closed(oh_log_writer *w);
/* OH_OK, or OH_IO with the sticky failure that stopped the log. */
int oh_logw_error(oh_log_writer *w, oh_io_error *e);
/* The writer takes `fd` and writes 8 bytes (an eventfd increment) to it after
 * each batch; oh_logw_remove_notify closes it. OH_OK or OH_NOMEM. */
int oh_logw_add_notify(oh_log_writer *w, int fd);
void oh_logw_remove_notify(oh_log_writer *w, int fd);
/* Tests: while held, the flusher leaves records buffered (close overrides). */
void oh_logw_hold(oh_log_writer *w, int on);

#endif
