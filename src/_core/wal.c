#include "wal.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "crc32c.h"

#ifndef O_CLOEXEC
#define O_CLOEXEC 0
#endif

#define READ_CHUNK (64u * 1024u)

static inline uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) |
           ((uint32_t)p[3] << 24);
}

static inline void put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static void file_header(uint8_t out[OH_LOG_FILE_HEADER])
{
    memset(out, 0, OH_LOG_FILE_HEADER);
    memcpy(out, OH_LOG_MAGIC, 4);
    out[4] = (uint8_t)OH_LOG_VERSION;
    out[5] = (uint8_t)(OH_LOG_VERSION >> 8);
    put32(out + 12, oh_crc32c(0, out, 12));
}

static int io_fail(oh_io_error *e, const char *op)
{
    if (e != NULL) {
        e->err = errno;
        e->op = op;
    }
    return OH_IO;
}

static void deadline_after(struct timespec *ts, double seconds)
{
    clock_gettime(CLOCK_MONOTONIC, ts);
    time_t whole = (time_t)seconds;
    ts->tv_sec += whole;
    ts->tv_nsec += (long)((seconds - (double)whole) * 1e9);
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec += 1;
        ts->tv_nsec -= 1000000000L;
    }
}

/* ------------------------------------------------------------------ */
/* Reader                                                              */
/* ------------------------------------------------------------------ */

static int pread_full(int fd, uint8_t *p, size_t n, uint64_t off, size_t *got)
{
    *got = 0;
    while (*got < n) {
        ssize_t r = pread(fd, p + *got, n - *got, (off_t)(off + *got));
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        if (r == 0)
            break; /* the file shrank under us */
        *got += (size_t)r;
    }
    return 0;
}

static void finish(oh_log_reader *r, oh_log_tail tail)
{
    r->done = 1;
    r->tail = tail;
    r->tail_at = r->valid;
}

/* Check the file header of r->fd; sets r->pos, r->valid and maybe r->done. */
static int check_file_header(oh_log_reader *r, oh_io_error *e)
{
    uint8_t h[OH_LOG_FILE_HEADER];
    static const uint8_t zeros[OH_LOG_FILE_HEADER] = {0};
    size_t got, m;
    r->pos = r->valid = 0;
    if (r->size == 0) { /* brand new (or created and never written) */
        finish(r, OH_LOG_CLEAN);
        return OH_OK;
    }
    m = r->size < OH_LOG_FILE_HEADER ? (size_t)r->size : OH_LOG_FILE_HEADER;
    if (pread_full(r->fd, h, m, 0, &got) != 0)
        return io_fail(e, "read the log header");
    if (got < OH_LOG_FILE_HEADER) {
        /* Creation cut short: a prefix of the magic, or nothing at all. */
        r->size = got;
        if (memcmp(h, OH_LOG_MAGIC, got < 4 ? got : 4) == 0) {
            finish(r, OH_LOG_TORN_FILE_HEADER);
            return OH_OK;
        }
        r->tail = OH_LOG_BAD_MAGIC;
        return OH_CORRUPT;
    }
    if (r->size == OH_LOG_FILE_HEADER && memcmp(h, zeros, sizeof(h)) == 0) {
        /* Size reached the disk but the header bytes did not. */
        finish(r, OH_LOG_TORN_FILE_HEADER);
        return OH_OK;
    }
    if (memcmp(h, OH_LOG_MAGIC, 4) != 0) {
        r->tail = OH_LOG_BAD_MAGIC;
        return OH_CORRUPT;
    }
    if (oh_crc32c(0, h, 12) != get32(h + 12)) {
        r->tail = OH_LOG_BAD_HEADER_CRC;
        return OH_CORRUPT;
    }
    r->version = (uint16_t)(h[4] | (h[5] << 8));
    if (r->version == 0 || r->version > OH_LOG_VERSION) {
        r->tail = OH_LOG_BAD_VERSION;
        return OH_INCOMPATIBLE;
    }
    r->pos = r->valid = OH_LOG_FILE_HEADER;
    return OH_OK;
}

/* Set up a reader on an open fd (not taken unless own_fd). */
static int reader_init(oh_log_reader *r, int fd, int own_fd, oh_io_error *e)
{
    struct stat st;
    memset(r, 0, sizeof(*r));
    r->fd = fd;
    r->own_fd = own_fd;
    if (fstat(fd, &st) != 0)
        return io_fail(e, "stat the log");
    r->size = (uint64_t)st.st_size;
    return check_file_header(r, e);
}

int oh_logr_open(oh_log_reader *r, const char *path, oh_io_error *e)
{
    int rc, fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        memset(r, 0, sizeof(*r));
        r->fd = -1;
        return io_fail(e, "open the log");
    }
    rc = reader_init(r, fd, 1, e);
    if (rc != OH_OK) {
        oh_log_tail why = r->tail;
        oh_logr_release(r);
        r->tail = why;
    }
    return rc;
}

int oh_logr_next(oh_log_reader *r, const uint8_t **rec, size_t *len)
{
    const uint8_t *p;
    uint64_t at, left;
    size_t avail;
    uint32_t n;
    if (r->done)
        return OH_CLOSED;
    at = r->pos + r->start;
    left = r->size > at ? r->size - at : 0;
    avail = r->end - r->start;
    if (left == 0) {
        finish(r, OH_LOG_CLEAN);
        return OH_CLOSED;
    }
    if (left < OH_LOG_RECORD_HEADER) {
        finish(r, OH_LOG_TORN_HEADER);
        return OH_CLOSED;
    }
    if (avail < OH_LOG_RECORD_HEADER) {
        r->need = OH_LOG_RECORD_HEADER;
        return OH_EMPTY;
    }
    p = r->buf + r->start;
    n = get32(p);
    if (n > OH_LOG_MAX_RECORD) {
        finish(r, OH_LOG_BAD_LENGTH);
        r->tail_len = n;
        return OH_CLOSED;
    }
    if ((uint64_t)n + OH_LOG_RECORD_HEADER > left) {
        finish(r, OH_LOG_TORN_RECORD);
        r->tail_len = n;
        return OH_CLOSED;
    }
    if (avail < (size_t)n + OH_LOG_RECORD_HEADER) {
        r->need = (size_t)n + OH_LOG_RECORD_HEADER;
        return OH_EMPTY;
    }
    if (oh_crc32c(oh_crc32c(0, p, 4), p + OH_LOG_RECORD_HEADER, n) != get32(p + 4)) {
        finish(r, OH_LOG_BAD_CRC);
        r->tail_len = n;
        return OH_CLOSED;
    }
    *rec = p + OH_LOG_RECORD_HEADER;
    *len = n;
    r->start += (size_t)n + OH_LOG_RECORD_HEADER;
    r->valid = r->pos + r->start;
    r->count++;
    return OH_OK;
}

int oh_logr_fill(oh_log_reader *r, oh_io_error *e)
{
    size_t want, got, have;
    uint64_t left;
    if (r->start > 0) { /* keep the partial record at the front */
        memmove(r->buf, r->buf + r->start, r->end - r->start);
        r->pos += r->start;
        r->end -= r->start;
        r->start = 0;
    }
    have = r->end;
    left = r->size - r->pos; /* bytes of the file from buf[0] on */
    want = r->need > READ_CHUNK ? r->need : READ_CHUNK;
    if ((uint64_t)want > left)
        want = (size_t)left;
    if (want > r->cap) {
        uint8_t *nb = (uint8_t *)realloc(r->buf, want);
        if (nb == NULL)
            return OH_NOMEM;
        r->buf = nb;
        r->cap = want;
    }
    if (want <= have)
        return OH_OK;
    if (pread_full(r->fd, r->buf + have, want - have, r->pos + have, &got) != 0)
        return io_fail(e, "read the log");
    r->end = have + got;
    if (have + got < want)
        r->size = r->pos + have + got; /* truncated while we read: end there */
    return OH_OK;
}

void oh_logr_release(oh_log_reader *r)
{
    if (r->own_fd && r->fd >= 0)
        close(r->fd);
    r->fd = -1;
    free(r->buf);
    r->buf = NULL;
    r->cap = r->start = r->end = 0;
}

/* ------------------------------------------------------------------ */
/* Writer                                                              */
/* ------------------------------------------------------------------ */

struct oh_log_writer {
    int fd;
    oh_log_options opt;
    pthread_t thread;
    int thread_running;
    pthread_mutex_t mu;
    pthread_cond_t work;    /* flusher: records arrived, or closing */
    pthread_cond_t durable_cv;
    pthread_cond_t room_cv;
    uint8_t *pending;       /* appenders copy framed records here */
    size_t plen, pcap;
    uint8_t *spare;         /* the flusher writes from here */
    size_t scap;
    uint64_t next_seq;
    uint64_t durable;       /* records with seq < durable are on disk */
    uint64_t offset;        /* where the next batch goes */
    uint64_t flushes;
    int flusher_idle;
    int closing;
    int closed;
    int hold;
    int err;                /* sticky failure: errno, op */
    const char *err_op;
    int *notify;
    size_t n_notify, cap_notify;
};

static void poke_notify(oh_log_writer *w) /* mu held */
{
    uint64_t one = 1;
    for (size_t i = 0; i < w->n_notify; i++) {
        ssize_t rc = write(w->notify[i], &one, sizeof(one));
        (void)rc; /* full pipe or counter: the reader wakes anyway */
    }
}

static void *flusher_main(void *arg)
{
    oh_log_writer *w = (oh_log_writer *)arg;
    pthread_mutex_lock(&w->mu);
    for (;;) {
        while (!w->closing && (w->plen == 0 || w->hold)) {
            w->flusher_idle = 1;
            pthread_cond_wait(&w->work, &w->mu);
            w->flusher_idle = 0;
        }
        if (w->plen == 0)
            break; /* closing, and everything is out */
        if (w->opt.group_window > 0 && !w->closing) {
            struct timespec until;
            deadline_after(&until, w->opt.group_window);
            while (!w->closing &&
                   pthread_cond_timedwait(&w->work, &w->mu, &until) != ETIMEDOUT) {
            }
        }
        /* Take the batch; appenders fill the other buffer meanwhile. */
        uint8_t *batch = w->pending;
        size_t blen = w->plen, bcap = w->pcap;
        uint64_t upto = w->next_seq;
        uint64_t at = w->offset;
        w->pending = w->spare;
        w->pcap = w->scap;
        w->plen = 0;
        w->spare = batch;
        w->scap = bcap;
        pthread_cond_broadcast(&w->room_cv);
        pthread_mutex_unlock(&w->mu);

        const char *op = NULL;
        int err = 0;
        if (oh_pwrite_all(w->fd, batch, blen, at) != 0)
            op = "write to the log";
        else if (w->opt.sync && oh_fdatasync(w->fd) != 0)
            op = "fsync the log";
        if (op != NULL)
            err = errno;

        pthread_mutex_lock(&w->mu);
        if (op != NULL) {
            /* After a failed fsync the kernel may have dropped the pages:
             * nothing later can be trusted, so the log stops here. */
            w->err = err;
            w->err_op = op;
            pthread_cond_broadcast(&w->durable_cv);
            pthread_cond_broadcast(&w->room_cv);
            break;
        }
        w->offset = at + blen;
        w->durable = upto;
        w->flushes++;
        pthread_cond_broadcast(&w->durable_cv);
        poke_notify(w);
    }
    w->thread_running = 0;
    poke_notify(w);
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

static int writer_fail(oh_log_writer *w, int rc)
{
    if (w->fd >= 0)
        close(w->fd);
    w->fd = -1;
    return rc;
}

/* Open the file, lock it, scan it; on success w->fd is open and positioned. */
static int writer_prepare(oh_log_writer *w, const char *path, oh_log_open_info *info,
                          oh_io_error *e)
{
    oh_log_reader r;
    const uint8_t *rec;
    size_t len;
    int rc;

    w->fd = open(path, O_RDWR | O_CLOEXEC);
    if (w->fd < 0 && errno == ENOENT) {
        w->fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
        info->created = w->fd >= 0;
        if (w->fd < 0 && errno == EEXIST) /* created by someone just now */
            w->fd = open(path, O_RDWR | O_CLOEXEC);
    }
    if (w->fd < 0)
        return io_fail(e, "open or create the log");
    if (flock(w->fd, LOCK_EX | LOCK_NB) != 0)
        return writer_fail(w, io_fail(e, "lock the log (another LogWriter has it open)"));

    rc = reader_init(&r, w->fd, 0, e);
    while (rc == OH_OK) {
        rc = oh_logr_next(&r, &rec, &len);
        if (rc == OH_EMPTY)
            rc = oh_logr_fill(&r, e);
        else if (rc == OH_CLOSED)
            break;
        else
            rc = OH_OK;
    }
    info->tail = r.tail;
    info->tail_at = r.tail_at;
    info->tail_len = r.tail_len;
    info->version = r.version;
    info->records = r.count;
    info->kept = r.valid;
    info->dropped = r.size > r.valid ? r.size - r.valid : 0;
    oh_logr_release(&r);
    if (rc != OH_CLOSED)
        return writer_fail(w, rc);

    if (info->dropped > 0) {
        if (!w->opt.repair)
            return writer_fail(w, OH_CORRUPT);
        if (ftruncate(w->fd, (off_t)info->kept) != 0)
            return writer_fail(w, io_fail(e, "truncate the torn tail of the log"));
    }
    int wrote_header = 0;
    if (info->kept == 0) {
        uint8_t h[OH_LOG_FILE_HEADER];
        file_header(h);
        if (oh_pwrite_all(w->fd, h, sizeof(h), 0) != 0)
            return writer_fail(w, io_fail(e, "write the log header"));
        info->kept = OH_LOG_FILE_HEADER;
        wrote_header = 1;
    }
    if ((info->dropped > 0 || wrote_header) && oh_fsync(w->fd) != 0)
        return writer_fail(w, io_fail(e, "fsync the log"));
    if (info->created && (rc = oh_fsync_parent_dir(path, e)) != OH_OK)
        return writer_fail(w, rc);
    w->offset = info->kept;
    w->next_seq = w->durable = info->records;
    return OH_OK;
}

int oh_logw_open(oh_log_writer **out, const char *path, const oh_log_options *opt,
                 oh_log_open_info *info, oh_io_error *e)
{
    pthread_condattr_t attr;
    oh_log_writer *w;
    int rc;
    memset(info, 0, sizeof(*info));
    *out = NULL;
    w = (oh_log_writer *)calloc(1, sizeof(*w));
    if (w == NULL)
        return OH_NOMEM;
    w->opt = *opt;
    w->fd = -1;
    rc = writer_prepare(w, path, info, e);
    if (rc != OH_OK) {
        free(w);
        return rc;
    }
    pthread_mutex_init(&w->mu, NULL);
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&w->work, &attr);
    pthread_cond_init(&w->durable_cv, &attr);
    pthread_cond_init(&w->room_cv, &attr);
    pthread_condattr_destroy(&attr);
    w->thread_running = 1;
    rc = pthread_create(&w->thread, NULL, flusher_main, w);
    if (rc != 0) {
        w->thread_running = 0;
        w->closed = 1; /* lets oh_logw_free skip the join */
        errno = rc;
        io_fail(e, "start the log's flusher thread");
        close(w->fd);
        oh_logw_free(w);
        return OH_IO;
    }
    *out = w;
    return OH_OK;
}

int oh_logw_append(oh_log_writer *w, const void *data, size_t n, uint64_t *seq)
{
    uint8_t hdr[OH_LOG_RECORD_HEADER];
    size_t need = n + OH_LOG_RECORD_HEADER;
    int rc = OH_OK;
    if (n > OH_LOG_MAX_RECORD)
        return OH_INVALID;
    put32(hdr, (uint32_t)n);
    put32(hdr + 4, oh_crc32c(oh_crc32c(0, hdr, 4), data, n)); /* outside the lock */

    pthread_mutex_lock(&w->mu);
    if (w->err != 0)
        rc = OH_IO;
    else if (w->closing)
        rc = OH_CLOSED;
    else if (w->plen > 0 && w->plen + need > w->opt.max_buffer)
        rc = OH_FULL; /* an empty buffer always takes one record, however large */
    else if (w->plen + need > w->pcap) {
        size_t cap = w->pcap ? w->pcap : 64 * 1024;
        uint8_t *nb;
        while (cap < w->plen + need)
            cap *= 2;
        nb = (uint8_t *)realloc(w->pending, cap);
        if (nb == NULL)
            rc = OH_NOMEM;
        else {
            w->pending = nb;
            w->pcap = cap;
        }
    }
    if (rc == OH_OK) {
        memcpy(w->pending + w->plen, hdr, OH_LOG_RECORD_HEADER);
        memcpy(w->pending + w->plen + OH_LOG_RECORD_HEADER, data, n);
        w->plen += need;
        *seq = w->next_seq++;
        if (w->flusher_idle)
            pthread_cond_signal(&w->work);
    }
    pthread_mutex_unlock(&w->mu);
    return rc;
}

/* Wait on `cv` until `ready(w)` or failure/timeout (mu held). */
static int wait_until(oh_log_writer *w, pthread_cond_t *cv, double timeout,
                      int (*ready)(oh_log_writer *, uint64_t), uint64_t arg)
{
    struct timespec until;
    if (timeout >= 0)
        deadline_after(&until, timeout);
    while (!ready(w, arg)) {
        if (w->err != 0)
            return OH_IO;
        if (timeout < 0)
            pthread_cond_wait(cv, &w->mu);
        else if (pthread_cond_timedwait(cv, &w->mu, &until) == ETIMEDOUT)
            return ready(w, arg) ? OH_OK : (w->err ? OH_IO : OH_TIMEOUT);
    }
    return OH_OK;
}

static int is_durable(oh_log_writer *w, uint64_t seq)
{
    return w->durable > seq;
}

static int has_room(oh_log_writer *w, uint64_t unused)
{
    (void)unused;
    return w->closing || w->plen == 0 || w->plen < w->opt.max_buffer;
}

int oh_logw_wait_durable(oh_log_writer *w, uint64_t seq, double timeout)
{
    int rc;
    pthread_mutex_lock(&w->mu);
    rc = wait_until(w, &w->durable_cv, timeout, is_durable, seq);
    pthread_mutex_unlock(&w->mu);
    return rc;
}

int oh_logw_wait_room(oh_log_writer *w, double timeout)
{
    int rc;
    pthread_mutex_lock(&w->mu);
    rc = wait_until(w, &w->room_cv, timeout, has_room, 0);
    if (rc == OH_OK && w->closing)
        rc = OH_CLOSED;
    pthread_mutex_unlock(&w->mu);
    return rc;
}

int oh_logw_close(oh_log_writer *w, oh_io_error *e)
{
    int rc = OH_OK, join;
    pthread_mutex_lock(&w->mu);
    join = !w->closing && !w->closed;
    w->closing = 1;
    pthread_cond_signal(&w->work);
    pthread_cond_broadcast(&w->room_cv);
    pthread_mutex_unlock(&w->mu);
    if (join) {
        pthread_join(w->thread, NULL);
        pthread_mutex_lock(&w->mu);
        /* sync=False wrote without fsync; closing still makes it durable. */
        if (w->err == 0 && !w->opt.sync && oh_fsync(w->fd) != 0) {
            w->err = errno;
            w->err_op = "fsync the log on close";
        }
        close(w->fd);
        w->fd = -1;
        w->closed = 1;
        pthread_cond_broadcast(&w->durable_cv);
        pthread_mutex_unlock(&w->mu);
    } else {
        /* Another thread is closing: wait until it is done. */
        pthread_mutex_lock(&w->mu);
        while (!w->closed)
            pthread_cond_wait(&w->durable_cv, &w->mu);
        pthread_mutex_unlock(&w->mu);
    }
    pthread_mutex_lock(&w->mu);
    if (w->err != 0) {
        if (e != NULL) {
            e->err = w->err;
            e->op = w->err_op;
        }
        rc = OH_IO;
    }
    pthread_mutex_unlock(&w->mu);
    return rc;
}

void oh_logw_free(oh_log_writer *w)
{
    if (w == NULL)
        return;
    if (!w->closed)
        oh_logw_close(w, NULL);
    for (size_t i = 0; i < w->n_notify; i++)
        close(w->notify[i]);
    free(w->notify);
    free(w->pending);
    free(w->spare);
    pthread_cond_destroy(&w->work);
    pthread_cond_destroy(&w->durable_cv);
    pthread_cond_destroy(&w->room_cv);
    pthread_mutex_destroy(&w->mu);
    free(w);
}

#define LOCKED_READ(w, expr)                \
    do {                                    \
        pthread_mutex_lock(&(w)->mu);       \
        uint64_t v_ = (uint64_t)(expr);     \
        pthread_mutex_unlock(&(w)->mu);     \
        return v_;                          \
    } while (0)

uint64_t oh_logw_next_seq(oh_log_writer *w) { LOCKED_READ(w, w->next_seq); }
uint64_t oh_logw_durable(oh_log_writer *w) { LOCKED_READ(w, w->durable); }
uint64_t oh_logw_flushes(oh_log_writer *w) { LOCKED_READ(w, w->flushes); }

int oh_logw_is_closed(oh_log_writer *w)
{
    int v;
    pthread_mutex_lock(&w->mu);
    v = w->closing;
    pthread_mutex_unlock(&w->mu);
    return v;
}

int oh_logw_error(oh_log_writer *w, oh_io_error *e)
{
    int rc = OH_OK;
    pthread_mutex_lock(&w->mu);
    if (w->err != 0) {
        e->err = w->err;
        e->op = w->err_op;
        rc = OH_IO;
    }
    pthread_mutex_unlock(&w->mu);
    return rc;
}

int oh_logw_add_notify(oh_log_writer *w, int fd)
{
    int rc = OH_OK;
    pthread_mutex_lock(&w->mu);
    if (w->n_notify == w->cap_notify) {
        size_t cap = w->cap_notify ? 2 * w->cap_notify : 4;
        int *nn = (int *)realloc(w->notify, cap * sizeof(int));
        if (nn == NULL)
            rc = OH_NOMEM;
        else {
            w->notify = nn;
            w->cap_notify = cap;
        }
    }
    if (rc == OH_OK)
        w->notify[w->n_notify++] = fd;
    pthread_mutex_unlock(&w->mu);
    return rc;
}

void oh_logw_remove_notify(oh_log_writer *w, int fd)
{
    pthread_mutex_lock(&w->mu);
    for (size_t i = 0; i < w->n_notify; i++) {
        if (w->notify[i] == fd) {
            w->notify[i] = w->notify[--w->n_notify];
            close(fd);
            break;
        }
    }
    pthread_mutex_unlock(&w->mu);
}

void oh_logw_hold(oh_log_writer *w, int on)
{
    pthread_mutex_lock(&w->mu);
    w->hold = on;
    if (!on)
        pthread_cond_signal(&w->work);
    pthread_mutex_unlock(&w->mu);
}
