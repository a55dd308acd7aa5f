#include "oh_sched.h"

#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ */
/* Ready queue                                                         */
/* ------------------------------------------------------------------ */

/* A ring that idles this small gives memory back after a burst: a burst of
 * 100k ready actors should not pin a megabyte for the life of the process. */
#define RQ_MIN_CAP 64u
#define RQ_KEEP_CAP 4096u

static size_t pow2_at_least(size_t n)
{
    size_t c = RQ_MIN_CAP;
    while (c < n)
        c <<= 1;
    return c;
}

int oh_rq_init(oh_readyq *q, size_t cap)
{
    cap = pow2_at_least(cap);
    q->buf = (void **)malloc(cap * sizeof(void *));
    if (q->buf == NULL)
        return OH_NOMEM;
    q->cap = cap;
    q->head = 0;
    q->count = 0;
    return OH_OK;
}

void oh_rq_destroy(oh_readyq *q, void (*drop)(void *item))
{
    if (q->buf == NULL)
        return;
    if (drop != NULL) {
        while (q->count > 0) {
            drop(q->buf[q->head]);
            q->head = (q->head + 1) & (q->cap - 1);
            q->count--;
        }
    }
    free(q->buf);
    q->buf = NULL;
    q->cap = q->count = q->head = 0;
}

/* Copies the entries, oldest first, into a fresh buffer of `cap` slots. */
static int rq_resize(oh_readyq *q, size_t cap)
{
    void **nb = (void **)malloc(cap * sizeof(void *));
    size_t i;
    if (nb == NULL)
        return OH_NOMEM;
    for (i = 0; i < q->count; i++)
        nb[i] = q->buf[(q->head + i) & (q->cap - 1)];
    free(q->buf);
    q->buf = nb;
    q->cap = cap;
    q->head = 0;
    return OH_OK;
}

int oh_rq_push(oh_readyq *q, void *item)
{
    if (q->count == q->cap) {
        int rc = rq_resize(q, q->cap * 2);
        if (rc != OH_OK)
            return rc;
    }
    q->buf[(q->head + q->count) & (q->cap - 1)] = item;
    q->count++;
    return OH_OK;
}

int oh_rq_pop(oh_readyq *q, void **out)
{
    if (q->count == 0)
        return OH_EMPTY;
    *out = q->buf[q->head];
    q->head = (q->head + 1) & (q->cap - 1);
    q->count--;
    if (q->count == 0) {
        q->head = 0;
        if (q->cap > RQ_KEEP_CAP)
            (void)rq_resize(q, RQ_KEEP_CAP);  /* on failure keep the big one */
    }
    return OH_OK;
}

int oh_rq_remove(oh_readyq *q, void *item)
{
    size_t mask = q->cap - 1, i, j;
    for (i = 0; i < q->count; i++) {
        if (q->buf[(q->head + i) & mask] != item)
            continue;
        /* Close the gap by moving the younger entries one step forward. */
        for (j = i; j + 1 < q->count; j++)
            q->buf[(q->head + j) & mask] = q->buf[(q->head + j + 1) & mask];
        q->count--;
        if (q->count == 0)
            q->head = 0;
        return OH_OK;
    }
    return OH_EMPTY;
}

size_t oh_rq_count(const oh_readyq *q)
{
    return q->count;
}

/* ------------------------------------------------------------------ */
/* Timer heap: ordering and sifting                                    */
/* ------------------------------------------------------------------ */

#define NO_SLOT UINT32_MAX

static inline int earlier(const oh_heap_entry *a, const oh_heap_entry *b)
{
    if (a->when != b->when)
        return a->when < b->when;
    return a->seq < b->seq;
}

/* Places `e` at index i, keeping its slot's back-pointer current so that
 * cancel can find the entry without a search. */
static inline void heap_set(oh_timerheap *h, size_t i, oh_heap_entry e)
{
    h->heap[i] = e;
    h->slots[e.slot].pos = (uint32_t)i;
}

static void sift_up(oh_timerheap *h, size_t i)
{
    oh_heap_entry e = h->heap[i];
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!earlier(&e, &h->heap[parent]))
            break;
        heap_set(h, i, h->heap[parent]);
        i = parent;
    }
    heap_set(h, i, e);
}

static void sift_down(oh_timerheap *h, size_t i)
{
    oh_heap_entry e = h->heap[i];
    for (;;) {
        size_t child = 2 * i + 1;
        if (child >= h->count)
            break;
        if (child + 1 < h->count && earlier(&h->heap[child + 1], &h->heap[child]))
            child++;
        if (!earlier(&h->heap[child], &e))
            break;
        heap_set(h, i, h->heap[child]);
        i = child;
    }
    heap_set(h, i, e);
}

/* Takes the entry at index i out of the heap and frees its slot. */
static void *heap_remove_at(oh_timerheap *h, size_t i)
{
    uint32_t slot = h->heap[i].slot;
    oh_timer_slot *s = &h->slots[slot];
    void *payload = s->payload;

    h->count--;
    if (i < h->count) {
        /* Move the last entry into the hole; it may need to go either way. */
        h->heap[i] = h->heap[h->count];
        h->slots[h->heap[i].slot].pos = (uint32_t)i;
        if (i > 0 && earlier(&h->heap[i], &h->heap[(i - 1) / 2]))
            sift_up(h, i);
        else
            sift_down(h, i);
    }
    s->payload = NULL;
    s->live = 0;
    s->gen++;                       /* invalidates ids handed out for this slot */
    s->pos = h->free_head;
    h->free_head = slot;
    return payload;
}

/* ------------------------------------------------------------------ */
/* Timer heap: public operations                                       */
/* ------------------------------------------------------------------ */

int oh_th_init(oh_timerheap *h)
{
    memset(h, 0, sizeof(*h));
    h->free_head = NO_SLOT;
    return OH_OK;
}

void oh_th_destroy(oh_timerheap *h, void (*drop)(void *payload))
{
    void *p;
    if (drop != NULL) {
        while (oh_th_pop_any(h, &p) == OH_OK)
            drop(p);
    }
    free(h->heap);
    free(h->slots);
    oh_th_init(h);
}

static int reserve(oh_timerheap *h)
{
    if (h->count == h->cap) {
        size_t cap = h->cap ? h->cap * 2 : 16;
        oh_heap_entry *nh;
        if (cap > NO_SLOT)
            return OH_NOMEM;
        nh = (oh_heap_entry *)realloc(h->heap, cap * sizeof(*nh));
        if (nh == NULL)
            return OH_NOMEM;
        h->heap = nh;
        h->cap = cap;
    }
    if (h->free_head == NO_SLOT && h->nslots == h->slots_cap) {
        uint32_t cap = h->slots_cap ? h->slots_cap * 2 : 16;
        oh_timer_slot *ns;
        if (h->slots_cap >= NO_SLOT / 2)
            return OH_NOMEM;
        ns = (oh_timer_slot *)realloc(h->slots, (size_t)cap * sizeof(*ns));
        if (ns == NULL)
            return OH_NOMEM;
        h->slots = ns;
        h->slots_cap = cap;
    }
    return OH_OK;
}

int oh_th_push(oh_timerheap *h, double when, void *payload, oh_timer_id *id)
{
    uint32_t slot;
    oh_timer_slot *s;
    oh_heap_entry e;
    int rc;

    if (when != when)               /* NaN would break the heap order */
        return OH_INVALID;
    rc = reserve(h);
    if (rc != OH_OK)
        return rc;
    if (h->free_head != NO_SLOT) {
        slot = h->free_head;
        h->free_head = h->slots[slot].pos;
    } else {
        slot = h->nslots++;
        h->slots[slot].gen = 0;
    }
    s = &h->slots[slot];
    s->payload = payload;
    s->live = 1;
    e.when = when;
    e.seq = h->next_seq++;
    e.slot = slot;
    h->heap[h->count] = e;
    h->count++;
    sift_up(h, h->count - 1);
    *id = ((oh_timer_id)s->gen << 32) | slot;
    return OH_OK;
}

int oh_th_peek(const oh_timerheap *h, double *when)
{
    if (h->count == 0)
        return OH_EMPTY;
    *when = h->heap[0].when;
    return OH_OK;
}

int oh_th_pop_due(oh_timerheap *h, double now, uint64_t seq_limit, void **payload)
{
    if (h->count == 0 || h->heap[0].when > now || h->heap[0].seq >= seq_limit)
        return OH_EMPTY;
    *payload = heap_remove_at(h, 0);
    return OH_OK;
}

int oh_th_cancel(oh_timerheap *h, oh_timer_id id, void **payload)
{
    uint32_t slot = (uint32_t)(id & 0xffffffffu);
    uint32_t gen = (uint32_t)(id >> 32);
    oh_timer_slot *s;
    if (slot >= h->nslots)
        return OH_EMPTY;
    s = &h->slots[slot];
    if (!s->live || s->gen != gen)
        return OH_EMPTY;
    *payload = heap_remove_at(h, s->pos);
    return OH_OK;
}

int oh_th_pop_any(oh_timerheap *h, void **payload)
{
    if (h->count == 0)
        return OH_EMPTY;
    /* The last entry: removing it needs no sifting. */
    *payload = heap_remove_at(h, h->count - 1);
    return OH_OK;
}

size_t oh_th_count(const oh_timerheap *h)
{
    return h->count;
}

uint64_t oh_th_next_seq(const oh_timerheap *h)
{
    return h->next_seq;
}
