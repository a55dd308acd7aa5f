#include "lengine_impl.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

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
/* Sampling pool                                                       */
/* ------------------------------------------------------------------ */

/* Claims and runs the current round's jobs until none is left unclaimed. */
static void run_jobs(oh_lengine *e, int w) {
    for (;;) {
        uint64_t v = atomic_load(&e->pwork);
        int n = atomic_load(&e->njobs);
        if ((int64_t)(uint32_t)v >= n)
            return;
        /* the round in the high bits: a claim read in an earlier round fails */
        if (!atomic_compare_exchange_weak(&e->pwork, &v, v + 1))
            continue;
        oh_le_sample_job(e, &e->scratch[w], e->jobs[(uint32_t)v]);
        if (atomic_fetch_add(&e->pfinished, 1) + 1 == n && w != 0) {
            pthread_mutex_lock(&e->pmu);
            pthread_cond_signal(&e->pdone);
            pthread_mutex_unlock(&e->pmu);
        }
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
        uint64_t c0 = cpu_ns();
        run_jobs(e, w);
        atomic_fetch_add(&e->pool_cpu_ns, cpu_ns() - c0);
    }
}

static void sample_all(oh_lengine *e, slot_t **jobs, int n) {
    /* The previous round's jobs have all finished: nobody reads these now. */
    e->jobs = jobs;
    atomic_store(&e->pfinished, 0);
    atomic_store(&e->njobs, n);
    atomic_store(&e->pwork, (uint64_t)++e->pround << 32);
    /* The pool pays off when there is real work per sequence (a large vocabulary). */
    int par = e->workers_started && n >= 2 && (int64_t)n * e->n_vocab >= e->pool_min_work;
    if (par) {
        pthread_mutex_lock(&e->pmu);
        e->pgen++;
        pthread_cond_broadcast(&e->pstart);
        pthread_mutex_unlock(&e->pmu);
    }
    run_jobs(e, 0);
    /* Every job is claimed: wait only for those a worker still runs (a
       worker woken in an earlier round may take one even when par is 0). */
    if (atomic_load(&e->pfinished) < n) {
        pthread_mutex_lock(&e->pmu);
        while (atomic_load(&e->pfinished) < n)
            pthread_cond_wait(&e->pdone, &e->pmu);
        pthread_mutex_unlock(&e->pmu);
    }
    if (par) {
        pthread_mutex_lock(&e->smu);
        e->st.parallel_samples++;
        pthread_mutex_unlock(&e->smu);
    }
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

int oh_le_slot_reserve(slot_t *s, int32_t need) {
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

int32_t oh_le_common_prefix(const int32_t *a, int32_t na, const int32_t *b, int32_t nb) {
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

static void start(oh_lengine *e, slot_t *s, oh_lreq *r) {
    int32_t keep = oh_le_common_prefix(s->tokens, s->n_tokens, r->prompt, r->n_prompt);
    if (e->kv_limit > 0 || e->kv_dir != NULL) {
        int32_t got = oh_le_kv_restore(e, s, r, keep);
        if (got == keep && keep < s->n_tokens)
            oh_le_kv_save(e, s); /* the slot's sequence is about to be cut back */
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
    if (!oh_le_slot_reserve(s, r->n_prompt + 1)) {
        retire(e, s, OH_LF_NOMEM, 0);
        return;
    }
    if (e->bsel && (r->temperature > 0.0f || r->grammar != NULL) && s->sel.row == NULL) {
        /* this request samples on the host: the op copies its row here */
        s->sel.row = malloc((size_t)e->n_vocab * sizeof(float));
        if (s->sel.row == NULL)
            retire(e, s, OH_LF_NOMEM, 0);
    }
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
            int32_t pre = oh_le_common_prefix(s->tokens, s->n_tokens, r->prompt, r->n_prompt);
            if (pre > best_pre || (pre == best_pre && s->last_used < best->last_used)) {
                best = s;
                best_pre = pre;
            }
        }
        if (best == NULL)
            return;
        if (best_pre < KV_MIN && best_pre < r->n_prompt - 1 && best->n_tokens > best_pre) {
            /* Little to reuse (often just BOS) and the slot's cache would be
               cut: an empty slot costs nothing. */
            for (int32_t i = 0; i < e->n_seq; i++)
                if (e->slots[i].req == NULL && e->slots[i].n_tokens == 0) {
                    best = &e->slots[i];
                    break;
                }
        }
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
        oh_le_kv_save(e, lru);
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
        if (!oh_le_slot_reserve(s, s->n_tokens + s->take + 1)) {
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
    if (e->bsel) {
        /* what each sequence's in-graph op does this step */
        for (int32_t i = 0; i < e->n_seq; i++) {
            slot_t *s = &e->slots[i];
            s->sel.mode = 0;
            if (s->req == NULL || s->take == 0 || s->out_idx < 0)
                continue;
            int greedy = s->req->temperature <= 0.0f;
            s->sel.mode = (greedy ? OH_SEL_ARGMAX : 0) |
                          (!greedy || s->req->grammar != NULL ? OH_SEL_COPY : 0);
            s->sel_runs = s->sel.runs;
        }
    }
    uint64_t c0 = cpu_ns(), t0 = now_ns();
    int32_t rc = e->api.decode(e->ctx, e->batch);
    if (e->bsel && rc == 0)
        e->api.synchronize(e->ctx); /* the graph's results are in (a no-op on the CPU) */
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
    int nj = 0, nhost = 0;
    uint64_t in_graph = 0;
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
        s->pre = -1;
        if (e->bsel) {
            if (s->sel.runs == s->sel_runs) { /* the op never ran for this row */
                retire(e, s, OH_LF_DECODE, -2);
                continue;
            }
            s->logits = (s->sel.mode & OH_SEL_COPY) ? s->sel.row : NULL;
            if (s->sel.mode & OH_SEL_ARGMAX)
                s->pre = s->sel.token;
        } else {
            s->logits = e->api.get_logits_ith(e->ctx, s->out_idx);
            if (s->logits == NULL) {
                retire(e, s, OH_LF_DECODE, -1);
                continue;
            }
        }
        if (s->pre >= 0 && s->req->grammar == NULL) {
            /* chosen in the graph: nothing left to sample */
            s->sampled = s->pre;
            s->sample_fail = 0;
            in_graph++;
        } else {
            jobs[nhost++] = s;
        }
    }
    nj = nhost;
    for (int32_t i = 0; i < e->n_seq; i++) { /* then the ones the graph sampled, in slot order */
        slot_t *s = &e->slots[i];
        if (s->req != NULL && s->take > 0 && s->out_idx >= 0 && s->pre >= 0 &&
            s->req->grammar == NULL)
            jobs[nj++] = s;
    }
    uint64_t t2 = now_ns();
    sample_all(e, jobs, nhost);
    *sample_ns = now_ns() - t2;
    pthread_mutex_lock(&e->smu); /* before deliver() may tell anyone a request is done */
    for (int j = 0; j < nj; j++)
        e->st.generated += jobs[j]->sample_fail ? 0u : 1u;
    e->st.graph_sampled += in_graph;
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
            e->st.host_cpu_ns += (c1 - c0) - dec_cpu + atomic_exchange(&e->pool_cpu_ns, 0);
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
/* Life cycle                                                          */
/* ------------------------------------------------------------------ */

int oh_le_create(oh_lengine **out, const oh_llama_api *api, void *ctx, void *vocab, void *memory,
                 int32_t n_vocab, int32_t n_ctx, int32_t n_batch, int32_t n_seq,
                 int32_t prefill_chunk, int32_t n_sample_threads, size_t kv_cache_bytes,
                 const char *kv_dir, size_t kv_disk_bytes, int64_t pool_min_work,
                 const oh_ggml_api *gapi) {
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
    e->pool_min_work = pool_min_work;
    e->kv_limit = kv_cache_bytes;
    e->kv_disk_limit = kv_disk_bytes;
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
    if (kv_dir != NULL && kv_dir[0] != '\0' && kv_disk_bytes > 0) {
        e->kv_dir = strdup(kv_dir);
        if (e->kv_dir == NULL)
            goto fail;
    }
    rc = oh_le_build_pieces(e);
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
    if (gapi != NULL) {
        e->gapi = *gapi;
        oh_sel_attach(e); /* else (a GPU holds the logits) the host reads the rows */
    }
    pthread_mutex_lock(&e->smu);
    e->st.graph_sampling = e->bsel;
    pthread_mutex_unlock(&e->smu);
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
    if (!was) { /* nothing will be restored any more: free the session cache, remove its files */
        while (e->kv_n > 0)
            oh_le_kv_drop(e, e->kv_n - 1);
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
    if (!was && e->slots != NULL)
        oh_sel_detach(e); /* before the context goes: no decode runs any more */
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
    if (e->slots) {
        oh_sel_detach(e); /* if create failed before the loop ran */
        for (int32_t i = 0; i < e->n_seq; i++) {
            free(e->slots[i].tokens);
            free(e->slots[i].sel.row);
        }
    }
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
        oh_le_kv_drop(e, e->kv_n - 1);
    free(e->kv);
    free(e->kv_dir);
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
