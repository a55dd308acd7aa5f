/* The actor scheduler's two data structures: a ready queue and a timer heap.
 *
 * Both hold opaque pointers (the Cython wrapper stores owned PyObject
 * references and moves ownership in and out), so nothing here touches a
 * Python object. Neither takes a lock: the wrapper only calls them with the
 * GIL held, which already serialises every caller (the event loop thread and
 * any thread sending messages), and a second lock would only add cost. */
#ifndef OH_SCHED_H
#define OH_SCHED_H

#include <stddef.h>
#include <stdint.h>
#include "oh_status.h"

/* ------------------------------------------------------------------ */
/* Ready queue: FIFO ring of actors that have messages to handle       */
/* ------------------------------------------------------------------ */

typedef struct {
    void **buf;
    size_t cap;       /* a power of two, so wrapping is a mask */
    size_t head;      /* index of the oldest entry */
    size_t count;
} oh_readyq;

int oh_rq_init(oh_readyq *q, size_t cap);        /* OK NOMEM */
/* Frees the ring; entries still inside are handed to `drop` first. */
void oh_rq_destroy(oh_readyq *q, void (*drop)(void *item));
int oh_rq_push(oh_readyq *q, void *item);        /* OK NOMEM (grows as needed) */
int oh_rq_pop(oh_readyq *q, void **out);         /* OK EMPTY */
/* Removes the first entry equal to `item`, keeping the others in order.
 * OK, or EMPTY when it is not queued. O(count): used only to stop an actor. */
int oh_rq_remove(oh_readyq *q, void *item);
size_t oh_rq_count(const oh_readyq *q);

/* ------------------------------------------------------------------ */
/* Timer heap: min-heap on (deadline, insertion order), cancellable   */
/* ------------------------------------------------------------------ */

/* A timer's id: its slot in the low 32 bits, the slot's generation in the
 * high 32 bits, so a stale id (timer already fired or cancelled, slot reused
 * since) never cancels somebody else's timer. */
typedef uint64_t oh_timer_id;

typedef struct {
    double when;
    uint64_t seq;     /* insertion order: breaks ties between equal deadlines */
    uint32_t slot;
} oh_heap_entry;

typedef struct {
    void *payload;
    uint32_t gen;
    uint32_t pos;     /* index in the heap while pending; next free slot otherwise */
    int live;
} oh_timer_slot;

typedef struct {
    oh_heap_entry *heap;
    size_t count, cap;
    oh_timer_slot *slots;
    uint32_t nslots, slots_cap;
    uint32_t free_head;   /* UINT32_MAX when no slot is free */
    uint64_t next_seq;
} oh_timerheap;

int oh_th_init(oh_timerheap *h);                  /* OK */
/* Frees everything; payloads of pending timers are handed to `drop` first. */
void oh_th_destroy(oh_timerheap *h, void (*drop)(void *payload));
/* OK NOMEM INVALID (deadline is NaN); *id identifies the timer for cancel. */
int oh_th_push(oh_timerheap *h, double when, void *payload, oh_timer_id *id);
int oh_th_peek(const oh_timerheap *h, double *when);   /* OK EMPTY */
/* Pops the earliest timer if its deadline is <= now and it was pushed before
 * `seq_limit` (so timers added while firing wait for the next round).
 * OK, or EMPTY when nothing is due. */
int oh_th_pop_due(oh_timerheap *h, double now, uint64_t seq_limit, void **payload);
/* Removes a pending timer, O(log n). OK, or EMPTY if it is not pending. */
int oh_th_cancel(oh_timerheap *h, oh_timer_id id, void **payload);
/* Pops any pending timer (order unspecified): used to cancel them all. */
int oh_th_pop_any(oh_timerheap *h, void **payload);   /* OK EMPTY */
size_t oh_th_count(const oh_timerheap *h);
uint64_t oh_th_next_seq(const oh_timerheap *h);

#endif
