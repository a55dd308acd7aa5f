/* The session KV cache of the native llama loop: sequences saved with
 * llama.cpp's per-sequence state API when their slot is reused, restored when
 * a prompt returns that shares a longer prefix with them than with any slot.
 * Only the loop thread touches it. */
#include <stdlib.h>
#include <string.h>

#include "lengine_impl.h"

void oh_le_kv_drop(oh_lengine *e, int32_t i) {
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
void oh_le_kv_save(oh_lengine *e, slot_t *s) {
    if (e->kv_limit == 0 || s->n_tokens < KV_MIN)
        return;
    for (int32_t i = 0; i < e->kv_n; i++) {
        kv_entry *k = &e->kv[i];
        int32_t pre = oh_le_common_prefix(k->tokens, k->n, s->tokens, s->n_tokens);
        if (pre == s->n_tokens) { /* already saved, or a longer one is */
            k->used = ++e->clock;
            return;
        }
        if (pre == k->n) { /* superseded by this longer one */
            oh_le_kv_drop(e, i);
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
        oh_le_kv_drop(e, lru);
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
int32_t oh_le_kv_restore(oh_lengine *e, slot_t *s, const oh_lreq *r, int32_t keep) {
    int32_t best = -1, best_pre = keep + KV_MIN - 1;
    for (int32_t i = 0; i < e->kv_n; i++) {
        int32_t pre = oh_le_common_prefix(e->kv[i].tokens, e->kv[i].n, r->prompt, r->n_prompt);
        if (pre > best_pre) {
            best = i;
            best_pre = pre;
        }
    }
    if (best < 0)
        return keep;
    if (!oh_le_slot_reserve(s, e->kv[best].n + 1))
        return keep;
    e->kv[best].used = ++e->clock; /* not the one kv_save evicts */
    oh_le_kv_save(e, s);                  /* what the slot held may be wanted again too */
    kv_entry *k = NULL;             /* kv_save may have moved entries */
    for (int32_t i = 0; i < e->kv_n && k == NULL; i++)
        if (e->kv[i].n >= best_pre &&
            oh_le_common_prefix(e->kv[i].tokens, e->kv[i].n, r->prompt, r->n_prompt) == best_pre)
            k = &e->kv[i];
    if (k == NULL || !oh_le_slot_reserve(s, k->n + 1))
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
