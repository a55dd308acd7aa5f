/* Token buffer: the text of one LLM output stream, written by a decoder and
 * read by any number of readers at their own positions.
 *
 * A decoder appends (token id, raw piece bytes). Bytes pass two stages before
 * readers see them:
 *   1. UTF-8 repair. A valid but incomplete trailing sequence waits for its
 *      next bytes. Bytes that cannot form valid UTF-8 become U+FFFD exactly
 *      as bytes.decode("utf-8", "replace") does (one U+FFFD per maximal
 *      invalid subpart, Unicode 15 section 3.9), so emitted text is always
 *      valid UTF-8 and the concatenated output equals that decode of the
 *      concatenated pieces.
 *   2. Stop strings, matched on the repaired bytes by an Aho-Corasick
 *      automaton. The longest suffix that could still begin a stop string is
 *      held back. The stop that wins is the one starting leftmost in the text
 *      (ties: the shortest, then the first given); a match that completes
 *      while a longer one that started earlier is still possible waits for
 *      that one to be decided. Text before the winning match is emitted, the
 *      match and everything after it is dropped and the stream ends.
 *
 * Emitted text is kept in one buffer from `base` (bytes before it were
 * discarded) to `emitted`. Every reader's position is tracked here so text
 * that all readers have read can be discarded beyond the retention window;
 * `max_bytes` caps the retained text even if a reader lags (that reader then
 * gets OH_TRUNCATED).
 *
 * No Python objects are touched; every function may run without the GIL.
 * Positions are absolute byte offsets since the start of the stream. */
#ifndef OH_TOKBUF_H
#define OH_TOKBUF_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include "oh_status.h"

/* How the stream ended. */
enum { OH_TB_OPEN = 0, OH_TB_FINISHED = 1, OH_TB_STOPPED = 2, OH_TB_FAILED = 3 };

/* Bits of the `events` out-parameter: what waiters should be told about. */
enum { OH_TB_EV_TEXT = 1, OH_TB_EV_END = 2 };

typedef struct oh_tb_ac oh_tb_ac; /* compiled stop strings (tokbuf.c) */

typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t changed; /* new text, end of stream, a reader closed */
    int nwait;              /* threads blocked in oh_tb_wait */

    /* Text: buf[0] is at absolute offset buf_abs. [base, emitted) is what
       readers may see; [emitted, tail) is held back (stop-string prefix). */
    unsigned char *buf;
    size_t cap;
    uint64_t buf_abs, base, emitted, tail;
    uint64_t base_chars, emitted_chars, tail_chars; /* code points before each */
    size_t max_bytes, retain_bytes;

    /* UTF-8 repair: a valid prefix of a multi-byte sequence. */
    unsigned char u8[4];
    int u8_have, u8_need;
    unsigned char u8_lo, u8_hi; /* allowed range of the next byte */

    /* Stop strings (ac == NULL: none). */
    oh_tb_ac *ac;
    int32_t ac_state;
    int have_cand;       /* a match was found, waiting for earlier-starting ones */
    int32_t cand_stop;
    uint64_t cand_start;

    /* Token ids. */
    int32_t *ids;
    size_t n_ids, ids_cap;
    uint64_t n_tokens;
    int keep_ids;

    /* Readers: the absolute byte position of each open slot. */
    uint64_t *rpos;
    unsigned char *rused;
    size_t rcap, nreaders;

    int end;            /* OH_TB_* */
    int32_t stop_index; /* which stop string matched, or -1 */
} oh_tokbuf;

typedef struct {
    uint64_t n_tokens;
    uint64_t base_bytes, base_chars;       /* oldest retained position */
    uint64_t emitted_bytes, emitted_chars; /* end of emitted text */
    uint64_t held_bytes;                   /* repaired but held back */
    size_t n_readers;
    int end;
    int32_t stop_index;
} oh_tb_info;

/* Stop strings are byte strings (UTF-8 of the user's str); none may be empty.
   retain_bytes <= max_bytes. OK INVALID NOMEM */
int oh_tb_init(oh_tokbuf *tb, const char *const *stops, const size_t *stop_lens,
               size_t n_stops, size_t max_bytes, size_t retain_bytes, int keep_ids);
void oh_tb_destroy(oh_tokbuf *tb);

/* Appends one token. OK: still open. CLOSED: the stream had ended, or this
   piece completed a stop string (then `events` has OH_TB_EV_END). NOMEM.
   Blocked waiters are signalled here; asyncio waiters are the caller's job,
   told by `events`. */
int oh_tb_append(oh_tokbuf *tb, int32_t id, const char *piece, size_t n, unsigned *events);
/* Appends up to `n` tokens under one lock; *taken says how many were
   accepted (the rest came after the end). Same codes as oh_tb_append. */
int oh_tb_append_many(oh_tokbuf *tb, const int32_t *ids, const char *const *pieces,
                      const size_t *lens, size_t n, size_t *taken, unsigned *events);
/* Ends the stream: an incomplete UTF-8 tail becomes U+FFFD, held-back text
   is emitted (or cut at a stop string that wins now). OK, or CLOSED if it
   had already ended. `failed` records OH_TB_FAILED instead of FINISHED. */
int oh_tb_finish(oh_tokbuf *tb, int failed, unsigned *events);
void oh_tb_get_info(oh_tokbuf *tb, oh_tb_info *out);

/* Opens a reader at `char_offset` code points into the emitted text.
   OK; TRUNCATED if that text was discarded; INVALID if past the end. */
int oh_tb_reader_open(oh_tokbuf *tb, uint64_t char_offset, size_t *slot);
void oh_tb_reader_close(oh_tokbuf *tb, size_t slot);
/* Copies everything the reader has not read into *scratch (grown with
   realloc) and advances it. OK (*n > 0), EMPTY (open, nothing new), CLOSED
   (ended and all read), TRUNCATED (its position was discarded), NOMEM. */
int oh_tb_read(oh_tokbuf *tb, size_t slot, char **scratch, size_t *scratch_cap, size_t *n);
/* Blocks until the reader has something to do (text, end, discard, slot
   closed). timeout in seconds, < 0 waits forever. OK TIMEOUT */
int oh_tb_wait(oh_tokbuf *tb, size_t slot, double timeout);

/* malloc'd copies (caller frees; *out is NULL when *n == 0). OK NOMEM */
int oh_tb_copy_text(oh_tokbuf *tb, char **out, size_t *n);
int oh_tb_copy_ids(oh_tokbuf *tb, int32_t **out, size_t *n);

#endif
