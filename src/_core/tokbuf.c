#include "tokbuf.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ------------------------------------------------------------------ */
/* Stop strings: Aho-Corasick automaton over bytes                     */
/* ------------------------------------------------------------------ */

/* The trie is sparse (first child / next sibling) except at the root, whose
   transitions are a full table: most text bytes start no stop string, and
   from the root they cost one lookup. */
typedef struct {
    int32_t child, sibling;
    int32_t fail;     /* longest proper suffix that is also in the trie */
    int32_t out_link; /* nearest node on the fail chain that ends a stop, or -1 */
    int32_t stop;     /* index of the stop string ending here, or -1 */
    int32_t depth;
    int32_t depth_chars; /* code points in the prefix this node spells */
    unsigned char byte;
} ac_node;

struct oh_tb_ac {
    int32_t root[256];
    int32_t n;
    ac_node nodes[];
};

static inline int32_t ac_child(const oh_tb_ac *ac, int32_t s, unsigned char b)
{
    int32_t c;
    if (s == 0)
        return ac->root[b];
    for (c = ac->nodes[s].child; c >= 0; c = ac->nodes[c].sibling)
        if (ac->nodes[c].byte == b)
            return c;
    return -1;
}

static inline int32_t ac_step(const oh_tb_ac *ac, int32_t s, unsigned char b)
{
    while (s != 0) {
        int32_t c;
        for (c = ac->nodes[s].child; c >= 0; c = ac->nodes[c].sibling)
            if (ac->nodes[c].byte == b)
                return c;
        s = ac->nodes[s].fail;
    }
    return ac->root[b];
}

static oh_tb_ac *ac_build(const char *const *stops, const size_t *lens, size_t k)
{
    size_t total = 1, i, j;
    oh_tb_ac *ac;
    int32_t *queue;
    size_t qh = 0, qt = 0;
    for (i = 0; i < k; i++) {
        total += lens[i];
        if (total > (size_t)INT32_MAX / 2)
            return NULL;
    }
    ac = (oh_tb_ac *)calloc(1, sizeof(oh_tb_ac) + total * sizeof(ac_node));
    queue = (int32_t *)malloc(total * sizeof(int32_t));
    if (ac == NULL || queue == NULL) {
        free(ac);
        free(queue);
        return NULL;
    }
    ac->nodes[0] = (ac_node){-1, -1, 0, -1, -1, 0, 0, 0};
    ac->n = 1;
    for (i = 0; i < k; i++) {
        int32_t s = 0, chars = 0;
        for (j = 0; j < lens[i]; j++) {
            unsigned char b = (unsigned char)stops[i][j];
            int32_t c = ac_child(ac, s, b);
            chars += (b & 0xC0) != 0x80;
            if (c <= 0) {
                c = ac->n++;
                ac->nodes[c] = (ac_node){-1, -1, 0, -1, -1, (int32_t)(j + 1), chars, b};
                if (s == 0) {
                    ac->root[b] = c;
                } else {
                    ac->nodes[c].sibling = ac->nodes[s].child;
                    ac->nodes[s].child = c;
                }
            }
            s = c;
        }
        if (ac->nodes[s].stop < 0) /* duplicates: the first one given wins */
            ac->nodes[s].stop = (int32_t)i;
    }
    /* Breadth first, so every fail link points at a node already done. */
    for (i = 0; i < 256; i++)
        if (ac->root[i] != 0)
            queue[qt++] = ac->root[i];
    while (qh < qt) {
        int32_t u = queue[qh++], c;
        for (c = ac->nodes[u].child; c >= 0; c = ac->nodes[c].sibling) {
            int32_t f = ac_step(ac, ac->nodes[u].fail, ac->nodes[c].byte);
            ac->nodes[c].fail = f;
            ac->nodes[c].out_link = ac->nodes[f].stop >= 0 ? f : ac->nodes[f].out_link;
            queue[qt++] = c;
        }
    }
    free(queue);
    return ac;
}

/* ------------------------------------------------------------------ */
/* Buffer helpers (caller holds mu)                                    */
/* ------------------------------------------------------------------ */

static inline unsigned char *at(oh_tokbuf *tb, uint64_t abs)
{
    return tb->buf + (size_t)(abs - tb->buf_abs);
}

/* Code points in valid UTF-8: bytes that are not continuations (10xxxxxx). */
static inline uint64_t count_chars(const unsigned char *p, size_t n)
{
    uint64_t c = 0;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w, cont;
        memcpy(&w, p + i, 8);
        cont = (w & ~(w << 1)) & UINT64_C(0x8080808080808080); /* bit 7 set, bit 6 clear */
        c += 8 - (((cont >> 7) * UINT64_C(0x0101010101010101)) >> 56);
    }
    for (; i < n; i++)
        c += (p[i] & 0xC0) != 0x80;
    return c;
}

static inline void emit_to(oh_tokbuf *tb, uint64_t to)
{
    if (to > tb->emitted) {
        tb->emitted_chars += count_chars(at(tb, tb->emitted), (size_t)(to - tb->emitted));
        tb->emitted = to;
    }
}

/* Makes room when reserve() finds too little. Slides the live bytes down
   over discarded ones when that frees at least as much as it copies, else
   grows by doubling, so each byte is copied O(1) times amortized. */
static int reserve_slow(oh_tokbuf *tb, size_t extra)
{
    size_t used = (size_t)(tb->tail - tb->buf_abs);
    size_t dead = (size_t)(tb->base - tb->buf_abs);
    size_t live = used - dead;
    size_t cap;
    unsigned char *nb;
    if (dead >= live && live + extra <= tb->cap) {
        memmove(tb->buf, tb->buf + dead, live);
        tb->buf_abs = tb->base;
        return OH_OK;
    }
    cap = tb->cap < 256 ? 256 : tb->cap * 2;
    while (cap < live + extra)
        cap *= 2;
    nb = (unsigned char *)malloc(cap);
    if (nb == NULL)
        return OH_NOMEM;
    if (live > 0)
        memcpy(nb, tb->buf + dead, live);
    free(tb->buf);
    tb->buf = nb;
    tb->cap = cap;
    tb->buf_abs = tb->base;
    return OH_OK;
}

/* Room for `extra` more bytes after tail. */
static inline int reserve(oh_tokbuf *tb, size_t extra)
{
    if ((size_t)(tb->tail - tb->buf_abs) + extra <= tb->cap)
        return OH_OK;
    return reserve_slow(tb, extra);
}

/* Discards emitted text no reader needs: everything read by all readers
   beyond the retention window, and anything beyond max_bytes. */
static void trim_slow(oh_tokbuf *tb)
{
    uint64_t retained = tb->emitted - tb->base, target, stop;
    size_t i;
    target = tb->emitted - tb->retain_bytes;
    for (i = 0; i < tb->rcap; i++) {
        /* A reader already behind base lagged past max_bytes: it holds nothing. */
        if (tb->rused[i] && tb->rpos[i] >= tb->base && tb->rpos[i] < target)
            target = tb->rpos[i];
    }
    if (retained > tb->max_bytes && target < tb->emitted - tb->max_bytes)
        target = tb->emitted - tb->max_bytes;
    /* Cut at a character boundary so char offsets stay meaningful. */
    while (target < tb->emitted && (*at(tb, target) & 0xC0) == 0x80)
        target++;
    if (target <= tb->base)
        return;
    stop = target;
    tb->base_chars += count_chars(at(tb, tb->base), (size_t)(stop - tb->base));
    tb->base = stop;
}

static inline void trim(oh_tokbuf *tb)
{
    if (tb->emitted - tb->base > tb->retain_bytes)
        trim_slow(tb);
}

/* ------------------------------------------------------------------ */
/* UTF-8 repair                                                         */
/* ------------------------------------------------------------------ */

static inline size_t put_fffd(unsigned char *out)
{
    out[0] = 0xEF;
    out[1] = 0xBF;
    out[2] = 0xBD;
    return 3;
}

/* For a lead byte: how many continuation bytes follow (0: not a lead byte)
   and the allowed range of the first of them (Table 3-7 of the Unicode
   standard; the ranges exclude overlongs, surrogates and > U+10FFFF). */
static inline int u8_lead(unsigned char c, unsigned char *lo, unsigned char *hi)
{
    *lo = 0x80, *hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF)
        return 1;
    if (c >= 0xE0 && c <= 0xEF) {
        if (c == 0xE0)
            *lo = 0xA0;
        else if (c == 0xED)
            *hi = 0x9F;
        return 2;
    }
    if (c >= 0xF0 && c <= 0xF4) {
        if (c == 0xF0)
            *lo = 0x90;
        else if (c == 0xF4)
            *hi = 0x8F;
        return 3;
    }
    return 0; /* 80..C1, F5..FF never start a character */
}

/* Writes the repaired form of s[0..n) to out (room for 3n + 3 bytes),
   returns its length and adds the code points written to *chars. A byte
   outside the allowed range ends the pending sequence with one U+FFFD and
   is then looked at again on its own, which is what "replace" does.
   State lives in locals: `out` is a char pointer that may alias *tb, so
   the compiler would otherwise reload every field after each store. */
static size_t u8_repair(oh_tokbuf *tb, const unsigned char *s, size_t n, unsigned char *out,
                        uint64_t *chars)
{
    size_t i = 0, o = 0, i0;
    uint64_t nc = 0;
    int have = tb->u8_have, need = tb->u8_need;
    unsigned char lo = tb->u8_lo, hi = tb->u8_hi;
    unsigned char seq[4];
    memcpy(seq, tb->u8, sizeof(seq));
    while (i < n) {
        unsigned char c = s[i];
        if (have > 0) {
            /* Continuing a sequence begun in an earlier piece. */
            if (c < lo || c > hi) {
                o += put_fffd(out + o); /* c is not consumed */
                nc++;
                have = 0;
                continue;
            }
            i++;
            seq[have++] = c;
            lo = 0x80, hi = 0xBF;
            if (--need == 0) {
                memcpy(out + o, seq, (size_t)have);
                o += (size_t)have;
                nc++;
                have = 0;
            }
            continue;
        }
        if (c < 0x80) {
            /* ASCII runs, 8 bytes at a time. */
            uint64_t w;
            i0 = i;
            while (i + 8 <= n) {
                memcpy(&w, s + i, 8);
                if (w & UINT64_C(0x8080808080808080))
                    break;
                memcpy(out + o, &w, 8);
                i += 8;
                o += 8;
            }
            while (i < n && s[i] < 0x80)
                out[o++] = s[i++];
            nc += i - i0;
            continue;
        }
        need = u8_lead(c, &lo, &hi);
        if (need == 0) {
            o += put_fffd(out + o);
            nc++;
            i++;
            continue;
        }
        if (i + (size_t)need < n) {
            /* The whole sequence is in this piece: check it in one go. */
            size_t k = 1;
            if (s[i + 1] >= lo && s[i + 1] <= hi)
                for (k = 2; k <= (size_t)need && (s[i + k] & 0xC0) == 0x80; k++)
                    ;
            if (k > (size_t)need) {
                switch (k) { /* fixed sizes: a move each, not a call */
                case 2:
                    memcpy(out + o, s + i, 2);
                    break;
                case 3:
                    memcpy(out + o, s + i, 3);
                    break;
                default:
                    memcpy(out + o, s + i, 4);
                }
                o += k;
            } else {
                o += put_fffd(out + o); /* s[i + k] is looked at again */
            }
            nc++;
            i += k;
            continue;
        }
        /* The sequence runs past this piece: keep its valid prefix. */
        seq[0] = c;
        have = 1;
        i++;
    }
    tb->u8_have = have;
    tb->u8_need = need;
    tb->u8_lo = lo;
    tb->u8_hi = hi;
    memcpy(tb->u8, seq, sizeof(seq));
    *chars = nc;
    return o;
}

/* ------------------------------------------------------------------ */
/* Stop matching over newly repaired bytes                              */
/* ------------------------------------------------------------------ */

static void end_at_stop(oh_tokbuf *tb)
{
    emit_to(tb, tb->cand_start);
    tb->tail = tb->cand_start;
    tb->u8_have = 0;
    tb->end = OH_TB_STOPPED;
    tb->stop_index = tb->cand_stop;
}

/* Runs the automaton over [from, tail). Returns 1 if a stop string won and
   the stream ended, else emits all but the held-back suffix and returns 0. */
static int scan(oh_tokbuf *tb, uint64_t from)
{
    const oh_tb_ac *ac = tb->ac;
    const unsigned char *p = at(tb, from), *endp = p + (size_t)(tb->tail - from);
    int32_t s = tb->ac_state;
    for (; p < endp; p++) {
        const ac_node *nd;
        int32_t m;
        uint64_t here;
        if (s == 0 && !tb->have_cand) {
            /* Most bytes start no stop string: skip them with one lookup each. */
            while (p < endp && (s = ac->root[*p]) == 0)
                p++;
            if (p == endp)
                break;
        } else {
            s = ac_step(ac, s, *p);
        }
        nd = &ac->nodes[s];
        here = from + (uint64_t)(p - at(tb, from)) + 1; /* end of the text so far */
        /* The longest match ending here starts leftmost among those. */
        m = nd->stop >= 0 ? s : nd->out_link;
        if (m >= 0) {
            uint64_t start = here - (uint64_t)ac->nodes[m].depth;
            if (!tb->have_cand || start < tb->cand_start) {
                tb->have_cand = 1;
                tb->cand_start = start;
                tb->cand_stop = ac->nodes[m].stop;
            }
        }
        /* Decided once no partial match starting before it is alive. */
        if (tb->have_cand && (uint64_t)nd->depth <= here - tb->cand_start) {
            end_at_stop(tb);
            return 1;
        }
    }
    tb->ac_state = s;
    /* The held-back tail spells the prefix of node s, so its length in code
       points is known without counting. */
    tb->emitted = tb->tail - (uint64_t)ac->nodes[s].depth;
    tb->emitted_chars = tb->tail_chars - (uint64_t)ac->nodes[s].depth_chars;
    return 0;
}

/* Repairs and scans one piece. Caller holds mu and checked end == OPEN. */
static int feed(oh_tokbuf *tb, const unsigned char *piece, size_t n, int *stopped)
{
    uint64_t from = tb->tail, chars = 0;
    int rc;
    *stopped = 0;
    if (n == 0)
        return OH_OK;
    if (n > (SIZE_MAX - 8) / 3)
        return OH_NOMEM;
    rc = reserve(tb, 3 * n + 3);
    if (rc != OH_OK)
        return rc;
    tb->tail += u8_repair(tb, piece, n, at(tb, tb->tail), &chars);
    tb->tail_chars += chars;
    if (tb->tail == from)
        return OH_OK;
    if (tb->ac != NULL) {
        *stopped = scan(tb, from);
    } else {
        tb->emitted = tb->tail;
        tb->emitted_chars = tb->tail_chars;
    }
    return OH_OK;
}

static int push_id(oh_tokbuf *tb, int32_t id)
{
    if (tb->keep_ids) {
        if (tb->n_ids == tb->ids_cap) {
            size_t cap = tb->ids_cap < 64 ? 64 : tb->ids_cap * 2;
            int32_t *ni = (int32_t *)realloc(tb->ids, cap * sizeof(int32_t));
            if (ni == NULL)
                return OH_NOMEM;
            tb->ids = ni;
            tb->ids_cap = cap;
        }
        tb->ids[tb->n_ids++] = id;
    }
    tb->n_tokens++;
    return OH_OK;
}

static void after_change(oh_tokbuf *tb, uint64_t emitted_before, int ended, unsigned *events)
{
    unsigned ev = 0;
    if (tb->emitted > emitted_before) {
        ev |= OH_TB_EV_TEXT;
        trim(tb);
    }
    if (ended)
        ev |= OH_TB_EV_END;
    if (ev && tb->nwait > 0)
        pthread_cond_broadcast(&tb->changed);
    *events |= ev;
}

/* ------------------------------------------------------------------ */
/* Lifecycle                                                           */
/* ------------------------------------------------------------------ */

int oh_tb_init(oh_tokbuf *tb, const char *const *stops, const size_t *stop_lens,
               size_t n_stops, size_t max_bytes, size_t retain_bytes, int keep_ids)
{
    pthread_condattr_t attr;
    size_t i;
    memset(tb, 0, sizeof(*tb));
    if (max_bytes == 0 || retain_bytes > max_bytes)
        return OH_INVALID;
    for (i = 0; i < n_stops; i++)
        if (stop_lens[i] == 0)
            return OH_INVALID;
    if (n_stops > 0) {
        tb->ac = ac_build(stops, stop_lens, n_stops);
        if (tb->ac == NULL)
            return OH_NOMEM;
    }
    tb->max_bytes = max_bytes;
    tb->retain_bytes = retain_bytes;
    tb->keep_ids = keep_ids;
    tb->stop_index = -1;
    tb->end = OH_TB_OPEN;
    pthread_mutex_init(&tb->mu, NULL);
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&tb->changed, &attr);
    pthread_condattr_destroy(&attr);
    return OH_OK;
}

void oh_tb_destroy(oh_tokbuf *tb)
{
    free(tb->ac);
    free(tb->buf);
    free(tb->ids);
    free(tb->rpos);
    free(tb->rused);
    tb->ac = NULL;
    tb->buf = NULL;
    tb->ids = NULL;
    tb->rpos = NULL;
    tb->rused = NULL;
    pthread_cond_destroy(&tb->changed);
    pthread_mutex_destroy(&tb->mu);
}

/* ------------------------------------------------------------------ */
/* Writing                                                              */
/* ------------------------------------------------------------------ */

int oh_tb_append(oh_tokbuf *tb, int32_t id, const char *piece, size_t n, unsigned *events)
{
    int rc, stopped = 0;
    uint64_t before;
    pthread_mutex_lock(&tb->mu);
    if (tb->end != OH_TB_OPEN) {
        pthread_mutex_unlock(&tb->mu);
        return OH_CLOSED;
    }
    before = tb->emitted;
    rc = push_id(tb, id);
    if (rc == OH_OK)
        rc = feed(tb, (const unsigned char *)piece, n, &stopped);
    after_change(tb, before, stopped, events);
    pthread_mutex_unlock(&tb->mu);
    if (rc != OH_OK)
        return rc;
    return stopped ? OH_CLOSED : OH_OK;
}

int oh_tb_append_many(oh_tokbuf *tb, const int32_t *ids, const char *const *pieces,
                      const size_t *lens, size_t n, size_t *taken, unsigned *events)
{
    int rc = OH_OK, stopped = 0;
    size_t i = 0;
    uint64_t before;
    pthread_mutex_lock(&tb->mu);
    before = tb->emitted;
    if (tb->end != OH_TB_OPEN) {
        rc = OH_CLOSED;
    } else {
        while (i < n && !stopped) {
            rc = push_id(tb, ids[i]);
            if (rc != OH_OK)
                break;
            i++;
            rc = feed(tb, (const unsigned char *)pieces[i - 1], lens[i - 1], &stopped);
            if (rc != OH_OK)
                break;
        }
        if (rc == OH_OK && stopped)
            rc = OH_CLOSED;
        after_change(tb, before, stopped, events);
    }
    pthread_mutex_unlock(&tb->mu);
    *taken = i;
    return rc;
}

int oh_tb_finish(oh_tokbuf *tb, int failed, unsigned *events)
{
    uint64_t before;
    int stopped = 0;
    pthread_mutex_lock(&tb->mu);
    if (tb->end != OH_TB_OPEN) {
        pthread_mutex_unlock(&tb->mu);
        return OH_CLOSED;
    }
    before = tb->emitted;
    if (tb->u8_have > 0 && reserve(tb, 3) == OH_OK) {
        /* The truncated sequence is one U+FFFD, which may itself complete a stop. */
        uint64_t from = tb->tail;
        tb->tail += put_fffd(at(tb, tb->tail));
        tb->tail_chars++;
        tb->u8_have = 0;
        if (tb->ac != NULL)
            stopped = scan(tb, from);
    }
    tb->u8_have = 0;
    if (!stopped) {
        if (tb->have_cand)
            end_at_stop(tb); /* nothing can start earlier any more */
        else
            emit_to(tb, tb->tail);
    }
    if (failed)
        tb->end = OH_TB_FAILED;
    else if (tb->end == OH_TB_OPEN)
        tb->end = OH_TB_FINISHED;
    after_change(tb, before, 1, events);
    pthread_mutex_unlock(&tb->mu);
    return OH_OK;
}

void oh_tb_get_info(oh_tokbuf *tb, oh_tb_info *out)
{
    pthread_mutex_lock(&tb->mu);
    out->n_tokens = tb->n_tokens;
    out->base_bytes = tb->base;
    out->base_chars = tb->base_chars;
    out->emitted_bytes = tb->emitted;
    out->emitted_chars = tb->emitted_chars;
    out->held_bytes = tb->tail - tb->emitted;
    out->n_readers = tb->nreaders;
    out->end = tb->end;
    out->stop_index = tb->stop_index;
    pthread_mutex_unlock(&tb->mu);
}

/* ------------------------------------------------------------------ */
/* Readers                                                              */
/* ------------------------------------------------------------------ */

int oh_tb_reader_open(oh_tokbuf *tb, uint64_t char_offset, size_t *slot)
{
    int rc = OH_OK;
    uint64_t pos;
    size_t i;
    pthread_mutex_lock(&tb->mu);
    if (char_offset < tb->base_chars) {
        rc = OH_TRUNCATED;
        goto out;
    }
    if (char_offset > tb->emitted_chars) {
        rc = OH_INVALID;
        goto out;
    }
    if (char_offset == tb->emitted_chars) {
        pos = tb->emitted;
    } else {
        uint64_t left = char_offset - tb->base_chars;
        const unsigned char *p = at(tb, tb->base);
        pos = tb->base;
        /* Stop on the lead byte of character number `left`. */
        for (;; p++, pos++) {
            if ((*p & 0xC0) != 0x80) {
                if (left == 0)
                    break;
                left--;
            }
        }
    }
    for (i = 0; i < tb->rcap && tb->rused[i]; i++)
        ;
    if (i == tb->rcap) {
        size_t cap = tb->rcap < 4 ? 4 : tb->rcap * 2;
        uint64_t *np = (uint64_t *)realloc(tb->rpos, cap * sizeof(uint64_t));
        unsigned char *nu;
        if (np == NULL) {
            rc = OH_NOMEM;
            goto out;
        }
        tb->rpos = np;
        nu = (unsigned char *)realloc(tb->rused, cap);
        if (nu == NULL) {
            rc = OH_NOMEM;
            goto out;
        }
        memset(nu + tb->rcap, 0, cap - tb->rcap);
        tb->rused = nu;
        tb->rcap = cap;
    }
    tb->rused[i] = 1;
    tb->rpos[i] = pos;
    tb->nreaders++;
    *slot = i;
out:
    pthread_mutex_unlock(&tb->mu);
    return rc;
}

void oh_tb_reader_close(oh_tokbuf *tb, size_t slot)
{
    pthread_mutex_lock(&tb->mu);
    if (slot < tb->rcap && tb->rused[slot]) {
        tb->rused[slot] = 0;
        tb->nreaders--;
        trim(tb);
        if (tb->nwait > 0)
            pthread_cond_broadcast(&tb->changed);
    }
    pthread_mutex_unlock(&tb->mu);
}

int oh_tb_read(oh_tokbuf *tb, size_t slot, char **scratch, size_t *scratch_cap, size_t *n)
{
    int rc = OH_OK;
    uint64_t pos;
    size_t len;
    *n = 0;
    pthread_mutex_lock(&tb->mu);
    pos = tb->rpos[slot];
    if (pos < tb->base) {
        rc = OH_TRUNCATED;
    } else if (pos == tb->emitted) {
        rc = tb->end == OH_TB_OPEN ? OH_EMPTY : OH_CLOSED;
    } else {
        len = (size_t)(tb->emitted - pos);
        if (len > *scratch_cap) {
            char *ns = (char *)realloc(*scratch, len);
            if (ns == NULL) {
                rc = OH_NOMEM;
                goto out;
            }
            *scratch = ns;
            *scratch_cap = len;
        }
        memcpy(*scratch, at(tb, pos), len);
        tb->rpos[slot] = tb->emitted;
        *n = len;
        trim(tb);
    }
out:
    pthread_mutex_unlock(&tb->mu);
    return rc;
}

static void deadline_after(struct timespec *ts, double seconds)
{
    time_t whole = (time_t)seconds;
    long nanos = (long)((seconds - (double)whole) * 1e9);
    clock_gettime(CLOCK_MONOTONIC, ts);
    ts->tv_sec += whole;
    ts->tv_nsec += nanos;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec += 1;
        ts->tv_nsec -= 1000000000L;
    }
}

static inline int reader_idle(oh_tokbuf *tb, size_t slot)
{
    return tb->end == OH_TB_OPEN && slot < tb->rcap && tb->rused[slot] &&
           tb->rpos[slot] == tb->emitted && tb->rpos[slot] >= tb->base;
}

int oh_tb_wait(oh_tokbuf *tb, size_t slot, double timeout)
{
    struct timespec deadline;
    int rc = OH_OK;
    if (timeout >= 0)
        deadline_after(&deadline, timeout);
    pthread_mutex_lock(&tb->mu);
    while (reader_idle(tb, slot)) {
        int err;
        tb->nwait++;
        if (timeout < 0)
            err = pthread_cond_wait(&tb->changed, &tb->mu);
        else
            err = pthread_cond_timedwait(&tb->changed, &tb->mu, &deadline);
        tb->nwait--;
        if (err == ETIMEDOUT && reader_idle(tb, slot)) {
            rc = OH_TIMEOUT;
            break;
        }
    }
    pthread_mutex_unlock(&tb->mu);
    return rc;
}

/* ------------------------------------------------------------------ */
/* Copies                                                               */
/* ------------------------------------------------------------------ */

int oh_tb_copy_text(oh_tokbuf *tb, char **out, size_t *n)
{
    int rc = OH_OK;
    size_t len;
    *out = NULL;
    pthread_mutex_lock(&tb->mu);
    len = (size_t)(tb->emitted - tb->base);
    if (len > 0) {
        *out = (char *)malloc(len);
        if (*out == NULL)
            rc = OH_NOMEM;
        else
            memcpy(*out, at(tb, tb->base), len);
    }
    pthread_mutex_unlock(&tb->mu);
    *n = rc == OH_OK ? len : 0;
    return rc;
}

int oh_tb_copy_ids(oh_tokbuf *tb, int32_t **out, size_t *n)
{
    int rc = OH_OK;
    size_t len;
    *out = NULL;
    pthread_mutex_lock(&tb->mu);
    len = tb->n_ids;
    if (len > 0) {
        *out = (int32_t *)malloc(len * sizeof(int32_t));
        if (*out == NULL)
            rc = OH_NOMEM;
        else
            memcpy(*out, tb->ids, len * sizeof(int32_t));
    }
    pthread_mutex_unlock(&tb->mu);
    *n = rc == OH_OK ? len : 0;
    return rc;
}
