/* The native step loop of a loaded llama.cpp model (continuous batching).
 *
 * One engine per llama context. Its thread never holds the GIL: it admits
 * submitted requests between steps (each to a sequence slot, reusing the
 * slot whose KV cache shares the longest prefix with the prompt), fills one
 * batch per step (one token per generating sequence plus prompt chunks
 * within the batch budget), calls llama_decode, samples every sequence of the
 * step (in parallel on a small pool of threads when the work is large
 * enough), detokenizes through a per-model piece table, appends to each
 * request's TokenBuffer and retires finished or cancelled requests.
 *
 * Sampling is llama.cpp's own: a request brings its sampler chain (built by
 * the caller with llama.cpp's constructors) and optionally a grammar sampler;
 * the loop only shrinks the candidate array when that cannot change the
 * result (greedy: argmax; a chain starting with top-k: the k best logits;
 * min-p without top-p: the tokens above its threshold, in id order).
 * With a ggml API (oh_le_create's gapi) every slot gets a llama.cpp backend
 * sampler (lselect.c) whose op, inside llama_decode, picks greedy tokens on
 * the logits in place and copies out only the rows the host still samples.
 * Constrained requests sample freely first and ask the grammar about the one
 * chosen token; only if it refuses are the candidates masked by the grammar
 * (the best 64 logits first, then 1,024 and 16,384, the whole vocabulary if
 * those cannot decide).
 *
 * The wrapper learns about progress through notes (oh_le_pump): "this
 * request's TokenBuffer has new text/end events" and "this request is done".
 * After a done note the loop never touches the request again. */
#ifndef OH_LENGINE_H
#define OH_LENGINE_H

#include <stdatomic.h>
#include <stdint.h>
#include "llama_api.h"
#include "oh_status.h"
#include "tokbuf.h"

/* Why a request ended (oh_lreq.finish). */
enum {
    OH_LF_NONE = 0,
    OH_LF_STOP = 1,      /* end of generation, a stop string, or the JSON reply closed */
    OH_LF_LENGTH = 2,    /* max_tokens reached */
    OH_LF_CANCELLED = 3, /* oh_le_cancel */
    OH_LF_DECODE = 4,    /* llama_decode failed (status in oh_lreq.status) */
    OH_LF_CONTEXT = 5,   /* the shared context is full */
    OH_LF_CLOSED = 6,    /* the engine stopped first */
    OH_LF_NOMEM = 7
};

typedef struct oh_lreq {
    /* Set by the submitter; read-only for the loop. */
    const int32_t *prompt;
    int32_t n_prompt;
    int32_t max_tokens;
    float temperature; /* <= 0: greedy (argmax), `chain` unused */
    int32_t top_k;     /* > 0: the chain begins with top_k(top_k) */
    float min_p;       /* > 0: the chain has min_p(min_p) (after top-k/top-p) */
    int has_top_p;     /* the chain has top_p < 1 before min_p */
    int ignore_eos;
    int json_stop;     /* end when the top-level JSON value closes */
    void *chain;       /* llama_sampler *, owned: freed by the loop at retirement */
    void *grammar;     /* llama_sampler * or NULL, owned likewise */
    oh_tokbuf *tb;
    void *owner;       /* for the wrapper */
    atomic_int cancelled;

    /* Written by the loop; read by the wrapper after the done note. */
    int32_t n_cached, n_generated, full_masks, partial_masks, grammar_checks;
    int32_t status;
    int finish;

    struct oh_lreq *next; /* inbox / waiting links (loop-private) */
} oh_lreq;

typedef struct {
    oh_lreq *req;
    unsigned events; /* OH_TB_EV_* from appends */
    int done;
} oh_le_note;

typedef struct {
    uint64_t steps, max_batch_seqs, prompt_cached, prompt_evaluated, generated;
    /* summed over steps; host_cpu_ns: the loop thread's CPU time outside
       llama_decode plus the sampling threads' */
    uint64_t host_ns, host_cpu_ns, decode_ns, sample_ns;
    uint64_t parallel_samples;              /* steps sampled on the pool */
    uint64_t graph_sampled;                 /* tokens chosen inside llama_decode (in-graph argmax) */
    int32_t graph_sampling;                 /* the in-graph selection op is attached */
    uint64_t kv_saved, kv_restored, kv_restored_tokens, kv_bytes, kv_entries; /* session cache */
    uint64_t kv_spilled, kv_disk_restored, kv_disk_bytes, kv_disk_entries, kv_disk_errors;
    int32_t n_active, n_waiting;
} oh_le_stats;

typedef struct oh_lengine oh_lengine;

/* Builds the piece table (token_to_piece of every token) and starts the loop
   thread. n_sample_threads: sampling threads including the loop's own (>= 1);
   a step samples on them when it has 2 sequences or more and sequences x
   n_vocab >= pool_min_work (openheim passes 131072).
   kv_cache_bytes bounds the session cache: when a slot's sequence (of at
   least 32 tokens) is about to be dropped, its llama.cpp state is saved there
   keyed by its tokens, and restored into a slot when a prompt shares a longer
   prefix with it than with any slot (0: no session cache).
   kv_dir (NULL or "": no disk tier) is an existing directory where entries
   the memory cache evicts are written (one file each, removed when dropped
   or at oh_le_destroy), up to kv_disk_bytes, and read back when their
   session returns.
   OK INVALID NOMEM */
int oh_le_create(oh_lengine **out, const oh_llama_api *api, void *ctx, void *vocab, void *memory,
                 int32_t n_vocab, int32_t n_ctx, int32_t n_batch, int32_t n_seq,
                 int32_t prefill_chunk, int32_t n_sample_threads, size_t kv_cache_bytes,
                 const char *kv_dir, size_t kv_disk_bytes, int64_t pool_min_work,
                 const oh_ggml_api *gapi);
/* Queues a request (the loop admits it before its next step). OK, CLOSED
   after oh_le_stop (the request is untouched). */
int oh_le_submit(oh_lengine *e, oh_lreq *r);
void oh_le_cancel(oh_lengine *e, oh_lreq *r);
/* Waits up to `timeout` s (< 0: forever) for notes and moves up to `cap` of
   them to `out`. OK (*n > 0), TIMEOUT, CLOSED (stopped and every note taken). */
int oh_le_pump(oh_lengine *e, oh_le_note *out, size_t cap, size_t *n, double timeout);
/* Stops the loop thread: requests still running or waiting get a done note
   with OH_LF_CLOSED. The session cache is freed (its files removed). Idempotent. */
void oh_le_stop(oh_lengine *e);
/* oh_le_stop, then frees everything. Notes not pumped are dropped. */
void oh_le_destroy(oh_lengine *e);
void oh_le_get_stats(oh_lengine *e, oh_le_stats *out);
void oh_le_reset_peak(oh_lengine *e);
/* The bytes of a token as the loop appends them (special tokens: empty). */
const char *oh_le_piece(oh_lengine *e, int32_t token, size_t *n);
/* 1 if the token's bytes are whole UTF-8 characters (constrained replies use only these). */
int oh_le_whole(oh_lengine *e, int32_t token);

/* Sampling primitives, exposed for tests. */
int32_t oh_argmax(const float *x, int32_t n);
/* oh_argmax computed as the in-graph op does, on `parts` chunks put together. */
int32_t oh_argmax_split(const float *x, int32_t n, int parts);
/* The k best of x[0:n] (ties: lower id first), sorted best first. Returns
   how many (min(k, n)). */
int32_t oh_top_k(const float *x, int32_t n, int32_t k, oh_token_data *out);

#endif
