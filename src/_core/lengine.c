#include "lengine.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ------------------------------------------------------------------ */
/* Types                                                               */
/* ------------------------------------------------------------------ */

#define OH_LF_GRAMMAR OH_LF_DECODE /* grammar allowed no token: reported as a decode error */
#define MASK_FIRST 64              /* refusal: candidates tried before the whole vocabulary */

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
    const float *logits;
    int sample_fail;
} slot_t;

/* A saved sequence: its tokens and llama.cpp's state of them. */
typedef struct {
    int32_t *tokens;
    int32_t n;
    uint8_t *data;
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
    pthread_t *workers;
    scratch_t *scratch;
    pthread_mutex_t pmu;
    pthread_cond_t pstart, pdone;
    uint64_t pgen;
    int pquit, premain;
    atomic_int pnext;
    slot_t **jobs;
    int njobs;
    int workers_started;

    pthread_t thread;
    int thread_started;
};

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint64_t cpu_ns(void) { /* CPU time of the calling thread */
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* ------------------------------------------------------------------ */
/* Sampling primitives                                                 */
/* ------------------------------------------------------------------ */

#define LANES 16

/* The maximum of x[0:n] ignoring NaN (-inf if none), 16 lanes wide. */
static float max_generic(const float *x, int32_t n) {
    float m[LANES];
    for (int l = 0; l < LANES; l++)
        m[l] = -INFINITY;
    int32_t i = 0;
    for (; i + LANES <= n; i += LANES)
        for (int l = 0; l < LANES; l++)
            m[l] = x[i + l] > m[l] ? x[i + l] : m[l];
    float r = -INFINITY;
    for (int l = 0; l < LANES; l++)
        r = m[l] > r ? m[l] : r;
    for (; i < n; i++)
        r = x[i] > r ? x[i] : r;
    return r;
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define OH_HAVE_AVX2_PATH 1
__attribute__((target("avx2"))) static float max_avx2(const float *x, int32_t n) {
    __m256 a = _mm256_set1_ps(-INFINITY), b = a, c = a, d = a;
    int32_t i = 0;
    for (; i + 32 <= n; i += 32) {
        a = _mm256_max_ps(_mm256_loadu_ps(x + i), a); /* NaN in x: keeps the accumulator */
        b = _mm256_max_ps(_mm256_loadu_ps(x + i + 8), b);
        c = _mm256_max_ps(_mm256_loadu_ps(x + i + 16), c);
        d = _mm256_max_ps(_mm256_loadu_ps(x + i + 24), d);
    }
    a = _mm256_max_ps(_mm256_max_ps(a, b), _mm256_max_ps(c, d));
    float lanes[8];
    _mm256_storeu_ps(lanes, a);
    float r = -INFINITY;
    for (int l = 0; l < 8; l++)
        r = lanes[l] > r ? lanes[l] : r;
    for (; i < n; i++)
        r = x[i] > r ? x[i] : r;
    return r;
}

__attribute__((target("avx2"))) static int32_t find_avx2(const float *x, int32_t n, float v) {
    __m256 vv = _mm256_set1_ps(v);
    int32_t i = 0;
    for (; i + 8 <= n; i += 8) {
        int mask = _mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(x + i), vv, _CMP_EQ_OQ));
        if (mask)
            return i + __builtin_ctz((unsigned)mask);
    }
    for (; i < n; i++)
        if (x[i] == v)
            return i;
    return -1;
}
#endif

#ifdef OH_HAVE_AVX2_PATH
/* The first i' >= i with x[i'] > floor, or n. */
__attribute__((target("avx2"))) static int32_t next_above_avx2(const float *x, int32_t i, int32_t n,
                                                               float floor) {
    __m256 f = _mm256_set1_ps(floor);
    for (; i + 8 <= n; i += 8) {
        int mask = _mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(x + i), f, _CMP_GT_OQ));
        if (mask)
            return i + __builtin_ctz((unsigned)mask);
    }
    for (; i < n; i++)
        if (x[i] > floor)
            return i;
    return n;
}
#endif

static int use_avx2(void) {
#ifdef OH_HAVE_AVX2_PATH
    static int have = -1;
    if (have < 0) {
        __builtin_cpu_init();
        have = __builtin_cpu_supports("avx2") ? 1 : 0;
    }
    return have;
#else
    return 0;
#endif
}

int32_t oh_argmax(const float *x, int32_t n) {
    /* The maximum, then its first index: what llama.cpp's greedy sampler
       picks (it keeps the first of equal logits). */
    if (n <= 0)
        return -1;
    int32_t i = -1;
#ifdef OH_HAVE_AVX2_PATH
    if (use_avx2()) {
        i = find_avx2(x, n, max_avx2(x, n));
        return i < 0 ? 0 : i; /* all NaN: llama.cpp's greedy keeps index 0 */
    }
#endif
    float m = max_generic(x, n);
    for (int32_t k = 0; k < n; k++)
        if (x[k] == m) {
            i = k;
            break;
        }
    return i < 0 ? 0 : i;
}

/* Heap order: "a is worse than b" (lower logit, or equal logit and higher id). */
static inline int worse(const oh_token_data *a, const oh_token_data *b) {
    return a->logit < b->logit || (a->logit == b->logit && a->id > b->id);
}

static void sift_down(oh_token_data *h, int32_t n, int32_t i) {
    for (;;) {
        int32_t l = 2 * i + 1, r = l + 1, w = i;
        if (l < n && worse(&h[l], &h[w]))
            w = l;
        if (r < n && worse(&h[r], &h[w]))
            w = r;
        if (w == i)
            return;
        oh_token_data t = h[i];
        h[i] = h[w];
        h[w] = t;
        i = w;
    }
}

static int cmp_best_first(const void *pa, const void *pb) {
    const oh_token_data *a = pa, *b = pb;
    if (a->logit > b->logit)
        return -1;
    if (a->logit < b->logit)
        return 1;
    return a->id < b->id ? -1 : (a->id > b->id);
}

static int32_t next_above(const float *x, int32_t i, int32_t n, float floor) {
#ifdef OH_HAVE_AVX2_PATH
    if (use_avx2())
        return next_above_avx2(x, i, n, floor);
#endif
    for (; i < n; i++)
        if (x[i] > floor)
            return i;
    return n;
}

int32_t oh_top_k(const float *x, int32_t n, int32_t k, oh_token_data *out) {
    if (k > n)
        k = n;
    if (k <= 0)
        return 0;
    /* A min-heap of the k best so far; most logits lose to its root at once. */
    for (int32_t i = 0; i < k; i++) {
        out[i].id = i;
        out[i].logit = x[i];
        out[i].p = 0.0f;
    }
    for (int32_t i = k / 2 - 1; i >= 0; i--)
        sift_down(out, k, i);
    float floor_logit = out[0].logit;
    for (int32_t i = next_above(x, k, n, floor_logit); i < n;
         i = next_above(x, i + 1, n, floor_logit)) {
        /* x[i] beats the k-th best (an equal logit with a higher id does not) */
        out[0].id = i;
        out[0].logit = x[i];
        sift_down(out, k, 0);
        floor_logit = out[0].logit;
    }
    qsort(out, (size_t)k, sizeof(oh_token_data), cmp_best_first);
    return k;
}

static int scratch_cand(scratch_t *sc, int32_t need) {
    if (sc->cand_cap >= need)
        return 1;
    oh_token_data *p = realloc(sc->cand, (size_t)need * sizeof(oh_token_data));
    if (p == NULL)
        return 0;
    sc->cand = p;
    sc->cand_cap = need;
    return 1;
}

static int scratch_full(oh_lengine *e, scratch_t *sc) {
    if (sc->full == NULL)
        sc->full = malloc((size_t)e->n_vocab * sizeof(oh_token_data));
    return sc->full != NULL;
}

/* Applies the request's chain to `arr`, accepts and returns the token; -1 if
   nothing was selected. */
static int32_t run_chain(oh_lengine *e, oh_lreq *r, oh_token_data_array *arr) {
    arr->selected = -1;
    e->api.sampler_apply(r->chain, arr);
    if (arr->selected < 0 || (size_t)arr->selected >= arr->size)
        return -1;
    int32_t tok = arr->data[arr->selected].id;
    e->api.sampler_accept(r->chain, tok);
    return tok;
}

/* Free sampling: what llama_sampler_sample(chain) would pick, on fewer candidates. */
static int32_t sample_free(oh_lengine *e, scratch_t *sc, oh_lreq *r, const float *x) {
    const int32_t nv = e->n_vocab;
    if (r->temperature <= 0.0f)
        return oh_argmax(x, nv);
    oh_token_data_array arr = {NULL, 0, -1, false};
    if (r->top_k > 0 && r->top_k < nv) {
        if (!scratch_cand(sc, r->top_k))
            return -1;
        arr.size = (size_t)oh_top_k(x, nv, r->top_k, sc->cand);
        arr.data = sc->cand;
        /* unsorted: the chain's own top-k sorts them as it would have */
        return run_chain(e, r, &arr);
    }
    if (!scratch_full(e, sc))
        return -1;
    oh_token_data *d = sc->full;
    size_t n = 0;
    if (r->top_k <= 0 && r->min_p > 0.0f && !r->has_top_p) {
        /* min-p first in the chain: its unsorted pass keeps, in id order,
           the logits >= max + log(p); so do we. */
        float max_logit = -3.402823466e+38F;
        for (int32_t i = 0; i < nv; i++)
            max_logit = x[i] > max_logit ? x[i] : max_logit;
        const float min_logit = max_logit + logf(r->min_p);
        for (int32_t i = 0; i < nv; i++)
            if (x[i] >= min_logit) {
                d[n].id = i;
                d[n].logit = x[i];
                d[n].p = 0.0f;
                n++;
            }
    }
    if (n == 0) {
        for (int32_t i = 0; i < nv; i++) {
            d[i].id = i;
            d[i].logit = x[i];
            d[i].p = 0.0f;
        }
        n = (size_t)nv;
    }
    arr.data = d;
    arr.size = n;
    return run_chain(e, r, &arr);
}

static int grammar_allows(oh_lengine *e, oh_lreq *r, int32_t tok) {
    if (tok < 0 || tok >= e->n_vocab || !e->whole[tok])
        return 0;
    oh_token_data one = {tok, 0.0f, 0.0f};
    oh_token_data_array arr = {&one, 1, -1, false};
    e->api.sampler_apply(r->grammar, &arr);
    return isfinite(one.logit);
}

/* Keeps the entries with a finite logit, in order. */
static size_t keep_finite(oh_token_data *d, size_t n) {
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (d[i].logit > -INFINITY)
            d[k++] = d[i];
    return k;
}

/* The grammar refused the freely sampled token: sample from the tokens it
   allows, exactly as masking the whole vocabulary would. */
static int32_t sample_masked(oh_lengine *e, scratch_t *sc, oh_lreq *r, const float *x) {
    const int32_t nv = e->n_vocab;
    const int greedy = r->temperature <= 0.0f;
    const int topk = !greedy && r->top_k > 0;
    if (greedy || topk) {
        /* The best M logits decide if at least 1 (greedy) or k (top-k) of
           them are allowed: no allowed token outside them could rank higher. */
        int32_t need = greedy ? 1 : r->top_k;
        int32_t m = MASK_FIRST > 2 * need ? MASK_FIRST : 2 * need;
        if (m < nv && scratch_cand(sc, m)) {
            int32_t n = oh_top_k(x, nv, m, sc->cand);
            for (int32_t i = 0; i < n; i++)
                if (!e->whole[sc->cand[i].id])
                    sc->cand[i].logit = -INFINITY;
            oh_token_data_array arr = {sc->cand, (size_t)n, -1, false};
            e->api.sampler_apply(r->grammar, &arr);
            size_t ok = keep_finite(arr.data, arr.size);
            if ((int32_t)ok >= need) {
                r->partial_masks++;
                if (greedy)
                    return arr.data[0].id; /* best first, ties: lower id */
                arr.size = ok;
                arr.sorted = false;
                return run_chain(e, r, &arr);
            }
        }
    }
    /* The whole vocabulary: whole-UTF-8 tokens only, then the grammar. */
    if (!scratch_full(e, sc))
        return -1;
    r->full_masks++;
    oh_token_data *d = sc->full;
    size_t n = 0;
    for (int32_t i = 0; i < nv; i++)
        if (e->whole[i]) {
            d[n].id = i;
            d[n].logit = x[i];
            d[n].p = 0.0f;
            n++;
        }
    oh_token_data_array arr = {d, n, -1, false};
    e->api.sampler_apply(r->grammar, &arr);
    n = keep_finite(arr.data, arr.size);
    if (n == 0)
        return -1;
    if (greedy) {
        size_t best = 0;
        for (size_t i = 1; i < n; i++)
            if (arr.data[i].logit > arr.data[best].logit)
                best = i;
        return arr.data[best].id;
    }
    arr.size = n;
    arr.sorted = false;
    return run_chain(e, r, &arr);
}

static void sample_job(oh_lengine *e, scratch_t *sc, slot_t *s) {
    oh_lreq *r = s->req;
    int32_t tok = sample_free(e, sc, r, s->logits);
    if (tok >= 0 && r->grammar != NULL) {
        r->grammar_checks++;
        if (!grammar_allows(e, r, tok))
            tok = sample_masked(e, sc, r, s->logits);
        if (tok >= 0)
            e->api.sampler_accept(r->grammar, tok);
    }
    s->sampled = tok;
    s->sample_fail = tok < 0;
}

/* ------------------------------------------------------------------ */
/* Sampling pool                                                       */
/* ------------------------------------------------------------------ */

static void run_jobs(oh_lengine *e, int w) {
    for (;;) {
        int j = atomic_fetch_add(&e->pnext, 1);
        if (j >= e->njobs)
            return;
        sample_job(e, &e->scratch[w], e->jobs[j]);
    }
}

typedef struct {
    oh_lengine *e;
    int w;
} worker_arg;

static void *worker_main(void *p) {
    worker_arg *a = p;
    oh_lengine *e = a->e;
    int w = a->w;
    free(a);
    uint64_t seen = 0;
    for (;;) {
        pthread_mutex_lock(&e->pmu);
        while (e->pgen == seen && !e->pquit)
            pthread_cond_wait(&e->pstart, &e->pmu);
        if (e->pquit) {
            pthread_mutex_unlock(&e->pmu);
            return NULL;
        }
        seen = e->pgen;
        pthread_mutex_unlock(&e->pmu);
        run_jobs(e, w);
        pthread_mutex_lock(&e->pmu);
        if (--e->premain == 0)
            pthread_cond_signal(&e->pdone);
        pthread_mutex_unlock(&e->pmu);
    }
}

static void sample_all(oh_lengine *e, slot_t **jobs, int n) {
    e->jobs = jobs;
    e->njobs = n;
    atomic_store(&e->pnext, 0);
    /* The pool pays off when there is real work per sequence (a large vocabulary). */
    int par = e->workers_started && n >= 2 && (int64_t)n * e->n_vocab >= (1 << 17);
    if (!par) {
        run_jobs(e, 0);
        return;
    }
    pthread_mutex_lock(&e->pmu);
    e->premain = e->n_threads - 1;
    e->pgen++;
    pthread_cond_broadcast(&e->pstart);
    pthread_mutex_unlock(&e->pmu);
    run_jobs(e, 0);
    pthread_mutex_lock(&e->pmu);
    while (e->premain > 0)
        pthread_cond_wait(&e->pdone, &e->pmu);
    pthread_mutex_unlock(&e->pmu);
    pthread_mutex_lock(&e->smu);
    e->st.parallel_samples++;
    pthread_mutex_unlock(&e->smu);
}

/* ------------------------------------------------------------------ */
/* Notes                                                               */
/* ------------------------------------------------------------------ */

static int note_push(oh_lengine *e, oh_lreq *r, unsigned ev, int done) {
    /* called with nmu held */
    if (e->n_notes == e->notes_cap) {
        size_t cap = e->notes_cap ? e->notes_cap * 2 : 64;
        oh_le_note *p = realloc(e->notes, cap * sizeof(oh_le_note));
        if (p == NULL)
            return OH_NOMEM;
        e->notes = p;
        e->notes_cap = cap;
    }
    e->notes[e->n_notes].req = r;
    e->notes[e->n_notes].events = ev;
    e->notes[e->n_notes].done = done;
    e->n_notes++;
    return OH_OK;
}

static void note_one(oh_lengine *e, oh_lreq *r, unsigned ev, int done) {
    pthread_mutex_lock(&e->nmu);
    while (note_push(e, r, ev, done) != OH_OK) { /* out of memory: wait for the pump to drain */
        pthread_mutex_unlock(&e->nmu);
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
        pthread_mutex_lock(&e->nmu);
    }
    pthread_cond_signal(&e->ncv);
    pthread_mutex_unlock(&e->nmu);
}

int oh_le_pump(oh_lengine *e, oh_le_note *out, size_t cap, size_t *n, double timeout) {
    *n = 0;
    pthread_mutex_lock(&e->nmu);
    if (e->n_notes == 0 && !e->closed && timeout != 0) {
        if (timeout < 0) {
            while (e->n_notes == 0 && !e->closed)
                pthread_cond_wait(&e->ncv, &e->nmu);
        } else {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            double s = (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9 + timeout;
            ts.tv_sec = (time_t)s;
            ts.tv_nsec = (long)((s - (double)ts.tv_sec) * 1e9);
            while (e->n_notes == 0 && !e->closed)
                if (pthread_cond_timedwait(&e->ncv, &e->nmu, &ts) == ETIMEDOUT)
                    break;
        }
    }
    size_t k = e->n_notes < cap ? e->n_notes : cap;
    if (k > 0) {
        memcpy(out, e->notes, k * sizeof(oh_le_note));
        memmove(e->notes, e->notes + k, (e->n_notes - k) * sizeof(oh_le_note));
        e->n_notes -= k;
    }
    *n = k;
    int closed = e->closed;
    pthread_mutex_unlock(&e->nmu);
    if (k > 0)
        return OH_OK;
    return closed ? OH_CLOSED : OH_TIMEOUT;
}

/* ------------------------------------------------------------------ */
/* Slots                                                               */
/* ------------------------------------------------------------------ */

static int slot_reserve(slot_t *s, int32_t need) {
    if (s->cap >= need)
        return 1;
    int32_t cap = s->cap ? s->cap : 256;
    while (cap < need)
        cap *= 2;
    int32_t *p = realloc(s->tokens, (size_t)cap * sizeof(int32_t));
    if (p == NULL)
        return 0;
    s->tokens = p;
    s->cap = cap;
    return 1;
}

static int32_t common_prefix(const int32_t *a, int32_t na, const int32_t *b, int32_t nb) {
    int32_t n = na < nb ? na : nb, i = 0;
    while (i < n && a[i] == b[i])
        i++;
    return i;
}

static void retire(oh_lengine *e, slot_t *s, int finish, int32_t status) {
    oh_lreq *r = s->req;
    s->req = NULL;
    s->pend = NULL;
    s->n_pend = 0;
    s->last_used = ++e->clock;
    if (finish == OH_LF_DECODE || finish == OH_LF_NOMEM) {
        /* the cache may hold a half-decoded step: forget it */
        e->api.memory_seq_rm(e->mem, s->id, 0, -1);
        s->n_tokens = 0;
    }
    if (r == NULL)
        return;
    if (r->chain)
        e->api.sampler_free(r->chain);
    if (r->grammar)
        e->api.sampler_free(r->grammar);
    r->chain = r->grammar = NULL;
    r->finish = finish;
    r->status = status;
    unsigned ev = s->events;
    s->events = 0;
    note_one(e, r, ev, 1);
}

static void retire_unstarted(oh_lengine *e, oh_lreq *r, int finish) {
    if (r->chain)
        e->api.sampler_free(r->chain);
    if (r->grammar)
        e->api.sampler_free(r->grammar);
    r->chain = r->grammar = NULL;
    r->finish = finish;
    note_one(e, r, 0, 1);
}

static void kv_drop(oh_lengine *e, int32_t i) {
    e->kv_bytes -= e->kv[i].size;
    free(e->kv[i].tokens);
    free(e->kv[i].data);
    e->kv[i] = e->kv[--e->kv_n];
}

static void kv_stat(oh_lengine *e, int saved, int restored, int64_t tokens) {
    pthread_mutex_lock(&e->smu);
    e->st.kv_saved += (uint64_t)saved;
    e->st.kv_restored += (uint64_t)restored;
    e->st.kv_restored_tokens += (uint64_t)tokens;
    e->st.kv_bytes = e->kv_bytes;
    e->st.kv_entries = (uint64_t)e->kv_n;
    pthread_mutex_unlock(&e->smu);
}

/* Keeps the slot's sequence in the session cache before its KV is dropped. */
static void kv_save(oh_lengine *e, slot_t *s) {
    if (e->kv_limit == 0 || s->n_tokens < KV_MIN)
        return;
    for (int32_t i = 0; i < e->kv_n; i++) {
        kv_entry *k = &e->kv[i];
        int32_t pre = common_prefix(k->tokens, k->n, s->tokens, s->n_tokens);
        if (pre == s->n_tokens) { /* already saved, or a longer one is */
            k->used = ++e->clock;
            return;
        }
        if (pre == k->n) { /* superseded by this longer one */
            kv_drop(e, i);
            i--;
        }
    }
    size_t size = e->api.state_seq_get_size(e->ctx, s->id);
    if (size == 0 || size > e->kv_limit)
        return;
    uint8_t *data = malloc(size);
    int32_t *toks = malloc((size_t)s->n_tokens * sizeof(int32_t));
    if (data == NULL || toks == NULL || e->api.state_seq_get_data(e->ctx, data, size, s->id) == 0) {
        free(data);
        free(toks);
        return;
    }
    while (e->kv_n > 0 && e->kv_bytes + size > e->kv_limit) {
        int32_t lru = 0;
        for (int32_t i = 1; i < e->kv_n; i++)
            if (e->kv[i].used < e->kv[lru].used)
                lru = i;
        kv_drop(e, lru);
    }
    if (e->kv_n == e->kv_cap) {
        int32_t cap = e->kv_cap ? e->kv_cap * 2 : 16;
        kv_entry *p = realloc(e->kv, (size_t)cap * sizeof(kv_entry));
        if (p == NULL) {
            free(data);
            free(toks);
            return;
        }
        e->kv = p;
        e->kv_cap = cap;
    }
    memcpy(toks, s->tokens, (size_t)s->n_tokens * sizeof(int32_t));
    kv_entry *k = &e->kv[e->kv_n++];
    k->tokens = toks;
    k->n = s->n_tokens;
    k->data = data;
    k->size = size;
    k->used = ++e->clock;
    e->kv_bytes += size;
    kv_stat(e, 1, 0, 0);
}

/* If a saved sequence shares a longer prefix with the prompt than the slot
   does, loads it into the slot. Returns the slot's prefix with the prompt. */
static int32_t kv_restore(oh_lengine *e, slot_t *s, const oh_lreq *r, int32_t keep) {
    int32_t best = -1, best_pre = keep + KV_MIN - 1;
    for (int32_t i = 0; i < e->kv_n; i++) {
        int32_t pre = common_prefix(e->kv[i].tokens, e->kv[i].n, r->prompt, r->n_prompt);
        if (pre > best_pre) {
            best = i;
            best_pre = pre;
        }
    }
    if (best < 0)
        return keep;
    if (!slot_reserve(s, e->kv[best].n + 1))
        return keep;
    e->kv[best].used = ++e->clock; /* not the one kv_save evicts */
    kv_save(e, s);                  /* what the slot held may be wanted again too */
    kv_entry *k = NULL;             /* kv_save may have moved entries */
    for (int32_t i = 0; i < e->kv_n && k == NULL; i++)
        if (e->kv[i].n >= best_pre &&
            common_prefix(e->kv[i].tokens, e->kv[i].n, r->prompt, r->n_prompt) == best_pre)
            k = &e->kv[i];
    if (k == NULL || !slot_reserve(s, k->n + 1))
        return keep;
    e->api.memory_seq_rm(e->mem, s->id, 0, -1);
    s->n_tokens = 0;
    if (e->api.state_seq_set_data(e->ctx, k->data, k->size, s->id) == 0) {
        e->api.memory_seq_rm(e->mem, s->id, 0, -1);
        return 0;
    }
    memcpy(s->tokens, k->tokens, (size_t)k->n * sizeof(int32_t));
    s->n_tokens = k->n;
    k->used = ++e->clock;
    kv_stat(e, 0, 1, best_pre);
    return best_pre;
}

static void start(oh_lengine *e, slot_t *s, oh_lreq *r) {
    int32_t keep = common_prefix(s->tokens, s->n_tokens, r->prompt, r->n_prompt);
    if (e->kv_limit > 0) {
        int32_t got = kv_restore(e, s, r, keep);
        if (got == keep && keep < s->n_tokens)
            kv_save(e, s); /* the slot's sequence is about to be cut back */
        keep = got;
    }
    if (keep > r->n_prompt - 1)
        keep = r->n_prompt - 1; /* the last prompt token is decoded again for its logits */
    if (keep < 0)
        keep = 0;
    if (keep < s->n_tokens && !e->api.memory_seq_rm(e->mem, s->id, keep, -1)) {
        e->api.memory_seq_rm(e->mem, s->id, 0, -1);
        keep = 0;
    }
    s->n_tokens = keep;
    s->req = r;
    s->pend = r->prompt + keep;
    s->n_pend = r->n_prompt - keep;
    s->prefill_done = 0;
    s->depth = s->in_str = s->escape = s->started = 0;
    s->events = 0;
    r->n_cached = keep;
    pthread_mutex_lock(&e->smu);
    e->st.prompt_cached += (uint64_t)keep;
    e->st.prompt_evaluated += (uint64_t)(r->n_prompt - keep);
    pthread_mutex_unlock(&e->smu);
    if (!slot_reserve(s, r->n_prompt + 1))
        retire(e, s, OH_LF_NOMEM, 0);
}

static void admit(oh_lengine *e) {
    while (e->w_head != NULL) {
        oh_lreq *r = e->w_head;
        if (atomic_load(&r->cancelled)) {
            e->w_head = r->next;
            if (e->w_head == NULL)
                e->w_tail = NULL;
            e->n_waiting--;
            retire_unstarted(e, r, OH_LF_CANCELLED);
            continue;
        }
        slot_t *best = NULL;
        int32_t best_pre = -1;
        for (int32_t i = 0; i < e->n_seq; i++) {
            slot_t *s = &e->slots[i];
            if (s->req != NULL)
                continue;
            int32_t pre = common_prefix(s->tokens, s->n_tokens, r->prompt, r->n_prompt);
            if (pre > best_pre || (pre == best_pre && s->last_used < best->last_used)) {
                best = s;
                best_pre = pre;
            }
        }
        if (best == NULL)
            return;
        e->w_head = r->next;
        if (e->w_head == NULL)
            e->w_tail = NULL;
        e->n_waiting--;
        r->next = NULL;
        start(e, best, r);
    }
}

/* Frees KV room for `need` more tokens: idle slots' caches first (least
   recently used), then the longest active sequence gives way. */
static void make_room(oh_lengine *e, int32_t need) {
    int64_t used = 0;
    for (int32_t i = 0; i < e->n_seq; i++)
        used += e->slots[i].n_tokens;
    while (used + need > e->n_ctx) {
        slot_t *lru = NULL;
        for (int32_t i = 0; i < e->n_seq; i++) {
            slot_t *s = &e->slots[i];
            if (s->req == NULL && s->n_tokens > 0 && (lru == NULL || s->last_used < lru->last_used))
                lru = s;
        }
        if (lru == NULL)
            break;
        kv_save(e, lru);
        e->api.memory_seq_rm(e->mem, lru->id, 0, -1);
        used -= lru->n_tokens;
        lru->n_tokens = 0;
    }
    if (used + need <= e->n_ctx)
        return;
    slot_t *victim = NULL;
    int64_t vlen = -1;
    for (int32_t i = 0; i < e->n_seq; i++) {
        slot_t *s = &e->slots[i];
        if (s->req != NULL && (int64_t)s->n_tokens + s->n_pend > vlen) {
            victim = s;
            vlen = (int64_t)s->n_tokens + s->n_pend;
        }
    }
    if (victim != NULL)
        retire(e, victim, OH_LF_CONTEXT, 0);
}

static int json_closed(slot_t *s, const unsigned char *p, size_t n) {
    for (size_t i = 0; i < n; i++) {
        unsigned char c = p[i];
        if (s->in_str) {
            if (s->escape)
                s->escape = 0;
            else if (c == '\\')
                s->escape = 1;
            else if (c == '"')
                s->in_str = 0;
        } else if (c == '"') {
            s->in_str = 1;
        } else if (c == '{' || c == '[') {
            s->depth++;
            s->started = 1;
        } else if (c == '}' || c == ']') {
            s->depth--;
            if (s->started && s->depth == 0)
                return 1;
        }
    }
    return 0;
}

/* After sampling: append the token, decide whether the request goes on. */
static void deliver(oh_lengine *e, slot_t *s) {
    oh_lreq *r = s->req;
    if (s->sample_fail) {
        retire(e, s, r->grammar ? OH_LF_GRAMMAR : OH_LF_DECODE, -100);
        return;
    }
    int32_t tok = s->sampled;
    if (e->eog[tok] && !r->ignore_eos) {
        retire(e, s, OH_LF_STOP, 0);
        return;
    }
    size_t n;
    const char *piece = oh_le_piece(e, tok, &n);
    r->n_generated++;
    unsigned ev = 0;
    int rc = oh_tb_append(r->tb, tok, piece, n, &ev);
    s->events |= ev;
    if (rc == OH_CLOSED) {
        retire(e, s, OH_LF_STOP, 0);
        return;
    }
    if (rc != OH_OK) {
        retire(e, s, OH_LF_NOMEM, 0);
        return;
    }
    if (r->json_stop && json_closed(s, (const unsigned char *)piece, n)) {
        retire(e, s, OH_LF_STOP, 0);
        return;
    }
    if (r->n_generated >= r->max_tokens) {
        retire(e, s, OH_LF_LENGTH, 0);
        return;
    }
    s->gen_tok = tok;
    s->pend = &s->gen_tok;
    s->n_pend = 1;
}

static void step(oh_lengine *e, uint64_t *decode_ns, uint64_t *decode_cpu, uint64_t *sample_ns) {
    for (int32_t i = 0; i < e->n_seq; i++) {
        slot_t *s = &e->slots[i];
        if (s->req != NULL && atomic_load(&s->req->cancelled))
            retire(e, s, OH_LF_CANCELLED, 0);
    }
    /* Plan: every generating sequence feeds one token, prompts take chunks of
       what is left of the batch. */
    int32_t n = 0;
    for (int32_t i = 0; i < e->n_seq; i++) {
        slot_t *s = &e->slots[i];
        s->take = 0;
        if (s->req != NULL && s->prefill_done && n < e->n_batch) {
            s->take = 1;
            n++;
        }
    }
    for (int32_t i = 0; i < e->n_seq && n < e->n_batch; i++) {
        slot_t *s = &e->slots[i];
        if (s->req == NULL || s->prefill_done)
            continue;
        int32_t take = s->n_pend;
        if (take > e->prefill_chunk)
            take = e->prefill_chunk;
        if (take > e->n_batch - n)
            take = e->n_batch - n;
        s->take = take;
        n += take;
    }
    if (n == 0)
        return;
    make_room(e, n);
    /* Fill the batch (a victim of make_room dropped out). */
    int32_t at = 0, nseqs = 0;
    for (int32_t i = 0; i < e->n_seq; i++) {
        slot_t *s = &e->slots[i];
        if (s->req == NULL || s->take == 0)
            continue;
        if (!slot_reserve(s, s->n_tokens + s->take + 1)) {
            retire(e, s, OH_LF_NOMEM, 0);
            continue;
        }
        for (int32_t j = 0; j < s->take; j++) {
            e->batch.token[at + j] = s->pend[j];
            e->batch.pos[at + j] = s->n_tokens + j;
            e->batch.n_seq_id[at + j] = 1;
            e->batch.seq_id[at + j][0] = s->id;
            e->batch.logits[at + j] = 0;
        }
        int wants = s->prefill_done || s->take == s->n_pend;
        s->out_idx = wants ? at + s->take - 1 : -1;
        if (wants)
            e->batch.logits[at + s->take - 1] = 1;
        at += s->take;
        nseqs++;
    }
    if (at == 0)
        return;
    e->batch.n_tokens = at;
    uint64_t c0 = cpu_ns(), t0 = now_ns();
    int32_t rc = e->api.decode(e->ctx, e->batch);
    uint64_t t1 = now_ns();
    *decode_cpu = cpu_ns() - c0;
    *decode_ns = t1 - t0;
    pthread_mutex_lock(&e->smu);
    e->st.steps++;
    if ((uint64_t)nseqs > e->st.max_batch_seqs)
        e->st.max_batch_seqs = (uint64_t)nseqs;
    pthread_mutex_unlock(&e->smu);
    if (rc != 0) {
        for (int32_t i = 0; i < e->n_seq; i++) {
            slot_t *s = &e->slots[i];
            if (s->req != NULL && s->take > 0)
                retire(e, s, OH_LF_DECODE, rc);
        }
        return;
    }
    slot_t *jobs[e->n_seq > 0 ? e->n_seq : 1];
    int nj = 0;
    for (int32_t i = 0; i < e->n_seq; i++) {
        slot_t *s = &e->slots[i];
        if (s->req == NULL || s->take == 0)
            continue;
        memcpy(s->tokens + s->n_tokens, s->pend, (size_t)s->take * sizeof(int32_t));
        s->n_tokens += s->take;
        s->pend += s->take;
        s->n_pend -= s->take;
        if (s->out_idx < 0)
            continue; /* prompt not finished: no sampling yet */
        s->prefill_done = 1;
        s->logits = e->api.get_logits_ith(e->ctx, s->out_idx);
        if (s->logits == NULL) {
            retire(e, s, OH_LF_DECODE, -1);
            continue;
        }
        jobs[nj++] = s;
    }
    uint64_t t2 = now_ns();
    sample_all(e, jobs, nj);
    *sample_ns = now_ns() - t2;
    pthread_mutex_lock(&e->smu); /* before deliver() may tell anyone a request is done */
    for (int j = 0; j < nj; j++)
        e->st.generated += jobs[j]->sample_fail ? 0u : 1u;
    pthread_mutex_unlock(&e->smu);
    for (int j = 0; j < nj; j++)
        deliver(e, jobs[j]);
    /* Text events of the requests still running: one batch of notes. */
    pthread_mutex_lock(&e->nmu);
    int any = 0;
    for (int32_t i = 0; i < e->n_seq; i++) {
        slot_t *s = &e->slots[i];
        if (s->req != NULL && s->events) {
            if (note_push(e, s->req, s->events, 0) == OH_OK) {
                s->events = 0;
                any = 1;
            }
        }
    }
    if (any)
        pthread_cond_signal(&e->ncv);
    pthread_mutex_unlock(&e->nmu);
}

static int32_t count_active(oh_lengine *e) {
    int32_t k = 0;
    for (int32_t i = 0; i < e->n_seq; i++)
        k += e->slots[i].req != NULL;
    return k;
}

static void *loop_main(void *p) {
    oh_lengine *e = p;
    for (;;) {
        pthread_mutex_lock(&e->mu);
        while (!e->stop && e->in_head == NULL && e->w_head == NULL && count_active(e) == 0)
            pthread_cond_wait(&e->cv, &e->mu);
        oh_lreq *in = e->in_head;
        e->in_head = e->in_tail = NULL;
        int stop = e->stop;
        pthread_mutex_unlock(&e->mu);
        uint64_t t0 = now_ns(), c0 = cpu_ns();
        while (in != NULL) {
            oh_lreq *nx = in->next;
            in->next = NULL;
            if (e->w_tail)
                e->w_tail->next = in;
            else
                e->w_head = in;
            e->w_tail = in;
            e->n_waiting++;
            in = nx;
        }
        if (stop)
            break;
        admit(e);
        uint64_t dec = 0, dec_cpu = 0, smp = 0;
        step(e, &dec, &dec_cpu, &smp);
        uint64_t t1 = now_ns(), c1 = cpu_ns();
        pthread_mutex_lock(&e->smu);
        if (dec > 0) {
            e->st.decode_ns += dec;
            e->st.sample_ns += smp;
            e->st.host_ns += (t1 - t0) - dec;
            e->st.host_cpu_ns += (c1 - c0) - dec_cpu;
        }
        e->st.n_active = count_active(e);
        e->st.n_waiting = e->n_waiting;
        pthread_mutex_unlock(&e->smu);
    }
    for (int32_t i = 0; i < e->n_seq; i++)
        if (e->slots[i].req != NULL)
            retire(e, &e->slots[i], OH_LF_CLOSED, 0);
    while (e->w_head != NULL) {
        oh_lreq *r = e->w_head;
        e->w_head = r->next;
        retire_unstarted(e, r, OH_LF_CLOSED);
    }
    e->w_tail = NULL;
    e->n_waiting = 0;
    pthread_mutex_lock(&e->nmu);
    e->closed = 1;
    pthread_cond_broadcast(&e->ncv);
    pthread_mutex_unlock(&e->nmu);
    return NULL;
}

/* ------------------------------------------------------------------ */
/* Piece table                                                         */
/* ------------------------------------------------------------------ */

static int utf8_whole(const unsigned char *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        unsigned char c = s[i];
        size_t need;
        if (c < 0x80) {
            i++;
            continue;
        }
        if (c >= 0xC2 && c <= 0xDF)
            need = 1;
        else if (c >= 0xE0 && c <= 0xEF)
            need = 2;
        else if (c >= 0xF0 && c <= 0xF4)
            need = 3;
        else
            return 0;
        if (i + need >= n)
            return 0;
        for (size_t k = 1; k <= need; k++)
            if ((s[i + k] & 0xC0) != 0x80)
                return 0;
        if ((c == 0xE0 && s[i + 1] < 0xA0) || (c == 0xED && s[i + 1] > 0x9F) ||
            (c == 0xF0 && s[i + 1] < 0x90) || (c == 0xF4 && s[i + 1] > 0x8F))
            return 0;
        i += need + 1;
    }
    return 1;
}

static int build_pieces(oh_lengine *e) {
    size_t cap = (size_t)e->n_vocab * 8 + 64, used = 0;
    e->pieces = malloc(cap);
    e->piece_off = malloc(((size_t)e->n_vocab + 1) * sizeof(uint32_t));
    e->whole = malloc((size_t)e->n_vocab);
    e->eog = malloc((size_t)e->n_vocab);
    if (!e->pieces || !e->piece_off || !e->whole || !e->eog)
        return OH_NOMEM;
    char buf[256];
    for (int32_t t = 0; t < e->n_vocab; t++) {
        int32_t n = e->api.token_to_piece(e->vocab, t, buf, (int32_t)sizeof buf, 0, false);
        char *src = buf, *big = NULL;
        if (n < 0) { /* longer than the buffer: -n bytes */
            big = malloc((size_t)-n);
            if (big == NULL)
                return OH_NOMEM;
            n = e->api.token_to_piece(e->vocab, t, big, -n, 0, false);
            src = big;
            if (n < 0)
                n = 0;
        }
        if (used + (size_t)n > cap) {
            while (used + (size_t)n > cap)
                cap *= 2;
            char *p = realloc(e->pieces, cap);
            if (p == NULL) {
                free(big);
                return OH_NOMEM;
            }
            e->pieces = p;
        }
        memcpy(e->pieces + used, src, (size_t)n);
        e->piece_off[t] = (uint32_t)used;
        e->whole[t] = (uint8_t)utf8_whole((const unsigned char *)src, (size_t)n);
        e->eog[t] = (uint8_t)(e->api.vocab_is_eog(e->vocab, t) ? 1 : 0);
        used += (size_t)n;
        free(big);
    }
    e->piece_off[e->n_vocab] = (uint32_t)used;
    return OH_OK;
}

const char *oh_le_piece(oh_lengine *e, int32_t token, size_t *n) {
    if (token < 0 || token >= e->n_vocab) {
        *n = 0;
        return "";
    }
    *n = e->piece_off[token + 1] - e->piece_off[token];
    return e->pieces + e->piece_off[token];
}

int oh_le_whole(oh_lengine *e, int32_t token) {
    return token >= 0 && token < e->n_vocab && e->whole[token];
}

/* ------------------------------------------------------------------ */
/* Life cycle                                                          */
/* ------------------------------------------------------------------ */

int oh_le_create(oh_lengine **out, const oh_llama_api *api, void *ctx, void *vocab, void *memory,
                 int32_t n_vocab, int32_t n_ctx, int32_t n_batch, int32_t n_seq,
                 int32_t prefill_chunk, int32_t n_sample_threads, size_t kv_cache_bytes) {
    *out = NULL;
    if (api == NULL || ctx == NULL || vocab == NULL || memory == NULL || n_vocab <= 0 ||
        n_ctx <= 0 || n_batch <= 0 || n_seq <= 0 || prefill_chunk <= 0)
        return OH_INVALID;
    oh_lengine *e = calloc(1, sizeof *e);
    if (e == NULL)
        return OH_NOMEM;
    e->api = *api;
    e->ctx = ctx;
    e->vocab = vocab;
    e->mem = memory;
    e->n_vocab = n_vocab;
    e->n_ctx = n_ctx;
    e->n_batch = n_batch;
    e->n_seq = n_seq;
    e->prefill_chunk = prefill_chunk < n_batch ? prefill_chunk : n_batch;
    e->n_threads = n_sample_threads < 1 ? 1 : n_sample_threads;
    e->kv_limit = kv_cache_bytes;
    pthread_mutex_init(&e->mu, NULL);
    pthread_cond_init(&e->cv, NULL);
    pthread_mutex_init(&e->nmu, NULL);
    pthread_cond_init(&e->ncv, NULL);
    pthread_mutex_init(&e->smu, NULL);
    pthread_mutex_init(&e->pmu, NULL);
    pthread_cond_init(&e->pstart, NULL);
    pthread_cond_init(&e->pdone, NULL);
    int rc = OH_NOMEM;
    e->slots = calloc((size_t)n_seq, sizeof(slot_t));
    e->scratch = calloc((size_t)e->n_threads, sizeof(scratch_t));
    if (e->slots == NULL || e->scratch == NULL)
        goto fail;
    for (int32_t i = 0; i < n_seq; i++)
        e->slots[i].id = i;
    rc = build_pieces(e);
    if (rc != OH_OK)
        goto fail;
    /* The slots start empty: so must the context's cache (an earlier engine
       on the same context may have left sequences in it). */
    api->memory_seq_rm(memory, -1, 0, -1);
    e->batch = api->batch_init(n_batch, 0, 1);
    if (e->batch.token == NULL || e->batch.pos == NULL || e->batch.seq_id == NULL ||
        e->batch.logits == NULL || e->batch.n_seq_id == NULL) {
        rc = OH_NOMEM;
        goto fail;
    }
    e->batch_ready = 1;
    if (e->n_threads > 1) {
        e->workers = calloc((size_t)e->n_threads, sizeof(pthread_t));
        if (e->workers == NULL) {
            rc = OH_NOMEM;
            goto fail;
        }
        int started = 1;
        for (int w = 1; w < e->n_threads; w++) {
            worker_arg *a = malloc(sizeof *a);
            if (a == NULL || (a->e = e, a->w = w, pthread_create(&e->workers[w], NULL,
                                                                  worker_main, a) != 0)) {
                free(a);
                started = 0;
                e->n_threads = w; /* the pool is the workers that did start */
                break;
            }
        }
        (void)started;
        e->workers_started = e->n_threads > 1;
    }
    if (pthread_create(&e->thread, NULL, loop_main, e) != 0) {
        rc = OH_NOMEM;
        goto fail;
    }
    e->thread_started = 1;
    *out = e;
    return OH_OK;
fail:
    oh_le_destroy(e);
    return rc;
}

int oh_le_submit(oh_lengine *e, oh_lreq *r) {
    if (r->n_prompt <= 0 || r->max_tokens <= 0 || r->tb == NULL ||
        (r->temperature > 0.0f && r->chain == NULL))
        return OH_INVALID;
    r->next = NULL;
    r->finish = OH_LF_NONE;
    pthread_mutex_lock(&e->mu);
    if (e->stop) {
        pthread_mutex_unlock(&e->mu);
        return OH_CLOSED;
    }
    if (e->in_tail)
        e->in_tail->next = r;
    else
        e->in_head = r;
    e->in_tail = r;
    pthread_cond_signal(&e->cv);
    pthread_mutex_unlock(&e->mu);
    return OH_OK;
}

void oh_le_cancel(oh_lengine *e, oh_lreq *r) {
    (void)e;
    atomic_store(&r->cancelled, 1);
}

void oh_le_stop(oh_lengine *e) {
    pthread_mutex_lock(&e->mu);
    int was = e->stop;
    e->stop = 1;
    pthread_cond_signal(&e->cv);
    pthread_mutex_unlock(&e->mu);
    if (!was && e->thread_started) {
        pthread_join(e->thread, NULL);
        e->thread_started = 0;
    }
    if (!was && e->workers_started) {
        pthread_mutex_lock(&e->pmu);
        e->pquit = 1;
        pthread_cond_broadcast(&e->pstart);
        pthread_mutex_unlock(&e->pmu);
        for (int w = 1; w < e->n_threads; w++)
            pthread_join(e->workers[w], NULL);
        e->workers_started = 0;
    }
    pthread_mutex_lock(&e->nmu);
    e->closed = 1;
    pthread_cond_broadcast(&e->ncv);
    pthread_mutex_unlock(&e->nmu);
}

void oh_le_destroy(oh_lengine *e) {
    if (e == NULL)
        return;
    oh_le_stop(e);
    if (e->batch_ready)
        e->api.batch_free(e->batch);
    if (e->slots)
        for (int32_t i = 0; i < e->n_seq; i++)
            free(e->slots[i].tokens);
    if (e->scratch)
        for (int w = 0; w < e->n_threads; w++) {
            free(e->scratch[w].full);
            free(e->scratch[w].cand);
        }
    free(e->slots);
    free(e->scratch);
    free(e->workers);
    free(e->pieces);
    free(e->piece_off);
    free(e->whole);
    free(e->eog);
    free(e->notes);
    while (e->kv_n > 0)
        kv_drop(e, e->kv_n - 1);
    free(e->kv);
    pthread_mutex_destroy(&e->mu);
    pthread_cond_destroy(&e->cv);
    pthread_mutex_destroy(&e->nmu);
    pthread_cond_destroy(&e->ncv);
    pthread_mutex_destroy(&e->smu);
    pthread_mutex_destroy(&e->pmu);
    pthread_cond_destroy(&e->pstart);
    pthread_cond_destroy(&e->pdone);
    free(e);
}

void oh_le_get_stats(oh_lengine *e, oh_le_stats *out) {
    pthread_mutex_lock(&e->smu);
    *out = e->st;
    pthread_mutex_unlock(&e->smu);
}

void oh_le_reset_peak(oh_lengine *e) {
    pthread_mutex_lock(&e->smu);
    e->st.max_batch_seqs = 0;
    pthread_mutex_unlock(&e->smu);
}
