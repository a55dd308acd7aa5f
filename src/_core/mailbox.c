#include "mailbox.h"

#include <errno.h>
#include <stdlib.h>
#include <time.h>

/* ------------------------------------------------------------------ */
/* Time helpers                                                        */
/* ------------------------------------------------------------------ */

static void deadline_after(struct timespec *ts, double seconds)
{
    clock_gettime(CLOCK_MONOTONIC, ts);
    time_t whole = (time_t)seconds;
    long nanos = (long)((seconds - (double)whole) * 1e9);
    ts->tv_sec += whole;
    ts->tv_nsec += nanos;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec += 1;
        ts->tv_nsec -= 1000000000L;
    }
}

/* ------------------------------------------------------------------ */
/* Lifecycle                                                           */
/* ------------------------------------------------------------------ */

#define OH_MB_INITIAL 4

int oh_mb_init(oh_mailbox *mb, size_t cap)
{
    pthread_condattr_t attr;
    if (cap == 0)
        return OH_INVALID;
    mb->alloc = cap < OH_MB_INITIAL ? cap : OH_MB_INITIAL;
    mb->buf = (void **)calloc(mb->alloc, sizeof(void *));
    if (mb->buf == NULL)
        return OH_NOMEM;
    mb->cap = cap;
    mb->head = 0;
    mb->count = 0;
    mb->closed = 0;
    mb->wait_get = 0;
    mb->wait_put = 0;
    pthread_mutex_init(&mb->mu, NULL);
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&mb->not_empty, &attr);
    pthread_cond_init(&mb->not_full, &attr);
    pthread_condattr_destroy(&attr);
    return OH_OK;
}

void oh_mb_destroy(oh_mailbox *mb, void (*drop)(void *item))
{
    if (mb->buf == NULL)
        return;
    if (drop != NULL) {
        while (mb->count > 0) {
            drop(mb->buf[mb->head]);
            mb->head = (mb->head + 1) % mb->alloc;
            mb->count--;
        }
    }
    free(mb->buf);
    mb->buf = NULL;
    pthread_cond_destroy(&mb->not_empty);
    pthread_cond_destroy(&mb->not_full);
    pthread_mutex_destroy(&mb->mu);
}

/* ------------------------------------------------------------------ */
/* Ring operations (caller holds mu)                                   */
/* ------------------------------------------------------------------ */

/* Make room for one more item (count < cap). Doubles the ring, unwrapping it
   so the oldest item sits at index 0. */
static int ring_reserve(oh_mailbox *mb)
{
    size_t grown, i;
    void **nbuf;
    if (mb->count < mb->alloc)
        return OH_OK;
    grown = mb->alloc * 2;
    if (grown > mb->cap)
        grown = mb->cap;
    nbuf = (void **)calloc(grown, sizeof(void *));
    if (nbuf == NULL)
        return OH_NOMEM;
    for (i = 0; i < mb->count; i++)
        nbuf[i] = mb->buf[(mb->head + i) % mb->alloc];
    free(mb->buf);
    mb->buf = nbuf;
    mb->alloc = grown;
    mb->head = 0;
    return OH_OK;
}

static inline void ring_push(oh_mailbox *mb, void *item)
{
    size_t tail = mb->head + mb->count;
    if (tail >= mb->alloc)
        tail -= mb->alloc;
    mb->buf[tail] = item;
    mb->count++;
    if (mb->wait_get > 0)
        pthread_cond_signal(&mb->not_empty);
}

static inline void *ring_pop(oh_mailbox *mb)
{
    void *item = mb->buf[mb->head];
    mb->buf[mb->head] = NULL;
    mb->head++;
    if (mb->head == mb->alloc)
        mb->head = 0;
    mb->count--;
    if (mb->wait_put > 0)
        pthread_cond_signal(&mb->not_full);
    return item;
}

/* ------------------------------------------------------------------ */
/* Non-blocking                                                        */
/* ------------------------------------------------------------------ */

int oh_mb_try_put(oh_mailbox *mb, void *item)
{
    int rc = OH_OK;
    pthread_mutex_lock(&mb->mu);
    if (mb->closed)
        rc = OH_CLOSED;
    else if (mb->count == mb->cap)
        rc = OH_FULL;
    else if ((rc = ring_reserve(mb)) == OH_OK)
        ring_push(mb, item);
    pthread_mutex_unlock(&mb->mu);
    return rc;
}

int oh_mb_try_get(oh_mailbox *mb, void **out)
{
    int rc = OH_OK;
    pthread_mutex_lock(&mb->mu);
    if (mb->count > 0)
        *out = ring_pop(mb);
    else
        rc = mb->closed ? OH_CLOSED : OH_EMPTY;
    pthread_mutex_unlock(&mb->mu);
    return rc;
}

int oh_mb_try_get_many(oh_mailbox *mb, void **out, size_t n, size_t *got)
{
    size_t i = 0;
    int rc = OH_OK;
    pthread_mutex_lock(&mb->mu);
    if (mb->count == 0) {
        rc = mb->closed ? OH_CLOSED : OH_EMPTY;
    } else {
        while (i < n && mb->count > 0)
            out[i++] = ring_pop(mb);
        /* ring_pop signals one putter per item; with several blocked
           putters and a bulk take, wake them all so none sleeps on room. */
        if (i > 1 && mb->wait_put > 1)
            pthread_cond_broadcast(&mb->not_full);
    }
    pthread_mutex_unlock(&mb->mu);
    *got = i;
    return rc;
}

/* ------------------------------------------------------------------ */
/* Blocking (called without the GIL)                                   */
/* ------------------------------------------------------------------ */

int oh_mb_put_wait(oh_mailbox *mb, void *item, double timeout)
{
    struct timespec deadline;
    int rc = OH_OK;
    if (timeout >= 0)
        deadline_after(&deadline, timeout);
    pthread_mutex_lock(&mb->mu);
    while (!mb->closed && mb->count == mb->cap) {
        int err;
        mb->wait_put++;
        if (timeout < 0)
            err = pthread_cond_wait(&mb->not_full, &mb->mu);
        else
            err = pthread_cond_timedwait(&mb->not_full, &mb->mu, &deadline);
        mb->wait_put--;
        if (err == ETIMEDOUT && !mb->closed && mb->count == mb->cap) {
            rc = OH_TIMEOUT;
            break;
        }
    }
    if (rc == OH_OK) {
        if (mb->closed)
            rc = OH_CLOSED;
        else if ((rc = ring_reserve(mb)) == OH_OK)
            ring_push(mb, item);
    }
    pthread_mutex_unlock(&mb->mu);
    return rc;
}

int oh_mb_get_wait(oh_mailbox *mb, void **out, double timeout)
{
    struct timespec deadline;
    int rc = OH_OK;
    if (timeout >= 0)
        deadline_after(&deadline, timeout);
    pthread_mutex_lock(&mb->mu);
    while (!mb->closed && mb->count == 0) {
        int err;
        mb->wait_get++;
        if (timeout < 0)
            err = pthread_cond_wait(&mb->not_empty, &mb->mu);
        else
            err = pthread_cond_timedwait(&mb->not_empty, &mb->mu, &deadline);
        mb->wait_get--;
        if (err == ETIMEDOUT && !mb->closed && mb->count == 0) {
            rc = OH_TIMEOUT;
            break;
        }
    }
    if (rc == OH_OK) {
        if (mb->count > 0)
            *out = ring_pop(mb);
        else
            rc = OH_CLOSED;
    }
    pthread_mutex_unlock(&mb->mu);
    return rc;
}

void oh_mb_close(oh_mailbox *mb)
{
    pthread_mutex_lock(&mb->mu);
    mb->closed = 1;
    pthread_cond_broadcast(&mb->not_empty);
    pthread_cond_broadcast(&mb->not_full);
    pthread_mutex_unlock(&mb->mu);
}

size_t oh_mb_count(oh_mailbox *mb)
{
    size_t n;
    pthread_mutex_lock(&mb->mu);
    n = mb->count;
    pthread_mutex_unlock(&mb->mu);
    return n;
}

int oh_mb_is_closed(oh_mailbox *mb)
{
    int c;
    pthread_mutex_lock(&mb->mu);
    c = mb->closed;
    pthread_mutex_unlock(&mb->mu);
    return c;
}

void oh_mb_waiters(oh_mailbox *mb, int *getters, int *putters)
{
    pthread_mutex_lock(&mb->mu);
    *getters = mb->wait_get;
    *putters = mb->wait_put;
    pthread_mutex_unlock(&mb->mu);
}
