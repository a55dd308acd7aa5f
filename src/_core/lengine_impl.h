/* Internals shared by the native llama loop's C files (not part of its API):
 * lengine.c (the loop, slots, notes, life cycle), lsample.c (candidate scans,
 * sampling, the piece table), lkvcache.c (the session KV cache). */
#ifndef OH_LENGINE_IMPL_H
#define OH_LENGINE_IMPL_H

#include <pthread.h>
#include "lengine.h"

#define OH_LF_GRAMMAR OH_LF_DECODE /* grammar allowed no token: reported as a decode error */
#define MASK_FIRST 64              /* refusal: candidates tried first (then 16x more, up to MASK_LAST) */
#define MASK_LAST 16384            /* ... before the whole vocabulary */

/* In-graph selection (lselect.c): a llama.cpp backend sampler per slot whose
   op runs in ggml's graph threads during llama_decode, on the sequence's
   logits row where it lies, so no row is copied out for the host to read. */
#define OH_SEL_ARGMAX 1 /* the first largest logit, as llama.cpp's CPU greedy picks */
#define OH_SEL_COPY 2   /* the row copied into `row`, for the host's sampler chain or grammar */
#define OH_SEL_PARTS 64 /* at most this many threads split a row */

typedef struct oh_select {
    struct oh_lengine *e;
    void *chain;   /* the llama_sampler chain attached to this slot's seq_id */
    int supported; /* backend_init said the op runs where the logits are */
    int mode;      /* OH_SEL_* for this step (0: nothing), set before llama_decode */
    float *row;    /* n_vocab floats, made when a request needs the host */
    atomic_int arrived;
    int32_t token;  /* the op's result (OH_SEL_ARGMAX) */
    uint64_t runs;  /* times the op completed */
    float part_v[OH_SEL_PARTS];
    int32_t part_i[OH_SEL_PARTS];
} oh_select;

typedef struct {
    int32_t id;
    int32_t *tokens; /* what this sequence's KV cache holds */
    int32_t n_tokens, cap;
    oh_lreq *req;
    const int32_t *pend; /* tokens to feed: the prompt's rest, or &gen_tok */
    int32_t n_pend;
    int32_t gen_tok;
    int prefill_done;
    uint64_t last_used;
    int depth, in_str, escape, started; /* JSON scanner */
    unsigned events;                    /* TokenBuffer events this step */
    /* this step's sampling job */
    int32_t take, out_idx, sampled;
    const float *logits; /* NULL: the row never reached the host (in-graph argmax) */
    int32_t pre;         /* the in-graph argmax, or -1 */
    uint64_t sel_runs;   /* sel.runs before this step's decode */
    int sample_fail;
    oh_select sel;
} slot_t;

/* A saved sequence: its tokens and llama.cpp's state of them, in memory
   (data) or in a file of the disk tier (path, data NULL). */
typedef struct {
    int32_t *tokens;
    int32_t n;
    uint8_t *data;
    char *path;
    size_t size;
    uint64_t used;
} kv_entry;

#define KV_MIN 32 /* shorter sequences are cheaper to decode again than to save */

typedef struct {
    oh_token_data *full; /* n_vocab entries, made on first need */
    oh_token_data *cand;
    int32_t cand_cap;
} scratch_t;

struct oh_lengine {
    oh_llama_api api;
    oh_ggml_api gapi;
    int bsel; /* in-graph selection attached to every slot */
    void *ctx, *vocab, *mem;
    int32_t n_vocab, n_ctx, n_batch, n_seq, prefill_chunk;
    oh_llama_batch batch;
    int batch_ready;

    char *pieces;
    uint32_t *piece_off; /* n_vocab + 1 */
    uint8_t *whole;
    uint8_t *eog;

    slot_t *slots;
    uint64_t clock;

    kv_entry *kv; /* the session cache (loop-private) */
    int32_t kv_n, kv_cap;
    size_t kv_bytes, kv_limit;
    char *kv_dir; /* disk tier (NULL: none) */
    size_t kv_disk_bytes, kv_disk_limit;
    uint64_t kv_file_no;

    pthread_mutex_t mu; /* inbox, stop */
    pthread_cond_t cv;
    oh_lreq *in_head, *in_tail;
    int stop;
    oh_lreq *w_head, *w_tail; /* waiting for a slot (loop-private) */
    int32_t n_waiting;

    pthread_mutex_t nmu; /* notes */
    pthread_cond_t ncv;
    oh_le_note *notes;
    size_t n_notes, notes_cap;
    int closed;

    pthread_mutex_t smu; /* stats */
    oh_le_stats st;

    /* sampling pool: workers 1..n_threads-1; the loop thread is worker 0 */
    int n_threads;
    int64_t pool_min_work;
    pthread_t *workers;
    scratch_t *scratch;
    pthread_mutex_t pmu;
    pthread_cond_t pstart, pdone;
    uint64_t pgen;
    int pquit;
    /* A step's jobs: (sampling round << 32) | the next job to claim. A
       worker that wakes late finds them all claimed, and the loop, which
       waits only for claimed jobs to finish, never waits for it. */
    _Atomic uint64_t pwork;
    atomic_int njobs, pfinished;
    uint32_t pround;
    _Atomic uint64_t pool_cpu_ns; /* CPU time the workers spent sampling, taken by the loop */
    slot_t **jobs;
    int workers_started;

    pthread_t thread;
    int thread_started;
};

/* lsample.c */
void oh_le_sample_job(oh_lengine *e, scratch_t *sc, slot_t *s);
int oh_le_build_pieces(oh_lengine *e); /* OK NOMEM */

int32_t oh_argmax_part(const float *x, int32_t n, float *vmax);

/* lselect.c */
int oh_sel_attach(oh_lengine *e); /* 1: every slot has its backend sampler; 0: none has */
void oh_sel_detach(oh_lengine *e);
int32_t oh_sel_bound(int64_t n, int k, int parts);
int32_t oh_sel_combine(const float *v, const int32_t *i, int parts);

/* lkvcache.c */
void oh_le_kv_save(oh_lengine *e, slot_t *s);
int32_t oh_le_kv_restore(oh_lengine *e, slot_t *s, const oh_lreq *r, int32_t keep);
void oh_le_kv_drop(oh_lengine *e, int32_t i);

/* lengine.c */
int oh_le_slot_reserve(slot_t *s, int32_t need);
int32_t oh_le_common_prefix(const int32_t *a, int32_t na, const int32_t *b, int32_t nb);

#endif
