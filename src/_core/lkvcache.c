/* The session KV cache of the native llama loop: sequences saved with
 * llama.cpp's per-sequence state API when their slot is reused, restored when
 * a prompt returns that shares a longer prefix with them than with any slot.
 *
 * Two tiers: host memory (kv_limit bytes), then, if the engine has a kv_dir,
 * files (kv_disk_limit bytes). The memory tier evicts its least recently
 * used entry to the disk tier, which drops its own least recently used file.
 * An entry's tokens always stay in memory (the index); only its state moves.
 * Only the loop thread touches the cache. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lengine_impl.h"

void oh_le_kv_drop(oh_lengine *e, int32_t i) {
    kv_entry *k = &e->kv[i];
    if (k->path != NULL) {
        unlink(k->path);
        e->kv_disk_bytes -= k->size;
        free(k->path);
    } else {
        e->kv_bytes -= k->size;
    }
    free(k->tokens);
    free(k->data);
    e->kv[i] = e->kv[--e->kv_n];
}

static void kv_stat(oh_lengine *e, int saved, int restored, int64_t tokens) {
    uint64_t mem = 0, disk = 0;
    for (int32_t i = 0; i < e->kv_n; i++) {
        mem += e->kv[i].path == NULL;
        disk += e->kv[i].path != NULL;
    }
    pthread_mutex_lock(&e->smu);
    e->st.kv_saved += (uint64_t)saved;
    e->st.kv_restored += (uint64_t)restored;
    e->st.kv_restored_tokens += (uint64_t)tokens;
    e->st.kv_bytes = e->kv_bytes;
    e->st.kv_entries = mem;
    e->st.kv_disk_bytes = e->kv_disk_bytes;
    e->st.kv_disk_entries = disk;
    pthread_mutex_unlock(&e->smu);
}

static void kv_count(oh_lengine *e, uint64_t *field) {
    pthread_mutex_lock(&e->smu);
    (*field)++;
    pthread_mutex_unlock(&e->smu);
}

/* The least recently used entry of a tier (on_disk 0: memory), or -1. */
static int32_t kv_lru(oh_lengine *e, int on_disk) {
    int32_t lru = -1;
    for (int32_t i = 0; i < e->kv_n; i++)
        if ((e->kv[i].path != NULL) == on_disk && (lru < 0 || e->kv[i].used < e->kv[lru].used))
            lru = i;
    return lru;
}

static int write_all(const char *path, const uint8_t *data, size_t size) {
    FILE *f = fopen(path, "wb");
    if (f == NULL)
        return 0;
    int ok = fwrite(data, 1, size, f) == size;
    if (fclose(f) != 0)
        ok = 0;
    if (!ok)
        unlink(path);
    return ok;
}

static uint8_t *read_all(const char *path, size_t size) {
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return NULL;
    uint8_t *data = malloc(size > 0 ? size : 1);
    if (data != NULL && fread(data, 1, size, f) != size) {
        free(data);
        data = NULL;
    }
    fclose(f);
    return data;
}

/* Moves the memory entry i to the disk tier, or drops it if there is none
   (or the write fails). Entries may move: indexes are not kept. */
static void kv_spill(oh_lengine *e, int32_t i) {
    kv_entry *k = &e->kv[i];
    if (e->kv_dir == NULL || k->size > e->kv_disk_limit) {
        oh_le_kv_drop(e, i);
        return;
    }
    uint64_t used = k->used;
    k->used = UINT64_MAX; /* not its own victim below */
    int32_t lru;
    while (e->kv_disk_bytes + e->kv[i].size > e->kv_disk_limit && (lru = kv_lru(e, 1)) >= 0) {
        oh_le_kv_drop(e, lru);
        if (i == e->kv_n) /* entry i was the last one, moved into lru's place */
            i = lru;
    }
    k = &e->kv[i];
    k->used = used;
    size_t len = strlen(e->kv_dir) + 64;
    char *path = malloc(len);
    if (path != NULL)
        snprintf(path, len, "%s/openheim-kv-%ld-%lx-%llu.bin", e->kv_dir, (long)getpid(),
                 (unsigned long)(uintptr_t)e, (unsigned long long)++e->kv_file_no);
    if (path == NULL || !write_all(path, k->data, k->size)) {
        free(path);
        kv_count(e, &e->st.kv_disk_errors);
        oh_le_kv_drop(e, i);
        return;
    }
    free(k->data);
    k->data = NULL;
    k->path = path;
    e->kv_bytes -= k->size;
    e->kv_disk_bytes += k->size;
    kv_count(e, &e->st.kv_spilled);
}

/* Keeps the slot's sequence in the session cache before its KV is dropped. */
void oh_le_kv_save(oh_lengine *e, slot_t *s) {
    if ((e->kv_limit == 0 && e->kv_dir == NULL) || s->n_tokens < KV_MIN)
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
    if (size == 0 || (size > e->kv_limit && (e->kv_dir == NULL || size > e->kv_disk_limit)))
        return;
    if (e->kv_n == e->kv_cap) {
        int32_t cap = e->kv_cap ? e->kv_cap * 2 : 16;
        kv_entry *p = realloc(e->kv, (size_t)cap * sizeof(kv_entry));
        if (p == NULL)
            return;
        e->kv = p;
        e->kv_cap = cap;
    }
    uint8_t *data = malloc(size);
    int32_t *toks = malloc((size_t)s->n_tokens * sizeof(int32_t));
    if (data == NULL || toks == NULL || e->api.state_seq_get_data(e->ctx, data, size, s->id) == 0) {
        free(data);
        free(toks);
        return;
    }
    /* Room in memory: the least recently used entries move to disk. */
    int32_t lru;
    while (size <= e->kv_limit && e->kv_bytes + size > e->kv_limit && (lru = kv_lru(e, 0)) >= 0)
        kv_spill(e, lru);
    memcpy(toks, s->tokens, (size_t)s->n_tokens * sizeof(int32_t));
    kv_entry *k = &e->kv[e->kv_n++];
    k->tokens = toks;
    k->n = s->n_tokens;
    k->data = data;
    k->path = NULL;
    k->size = size;
    k->used = ++e->clock;
    e->kv_bytes += size;
    if (size > e->kv_limit) /* too large for memory: straight to disk */
        kv_spill(e, e->kv_n - 1);
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
    e->kv[best].used = UINT64_MAX; /* not the one kv_save evicts */
    oh_le_kv_save(e, s);           /* what the slot held may be wanted again too */
    kv_entry *k = NULL;            /* kv_save may have moved entries */
    for (int32_t i = 0; i < e->kv_n; i++) {
        if (e->kv[i].used == UINT64_MAX)
            e->kv[i].used = ++e->clock;
        if (k == NULL && e->kv[i].n >= best_pre &&
            oh_le_common_prefix(e->kv[i].tokens, e->kv[i].n, r->prompt, r->n_prompt) == best_pre)
            k = &e->kv[i];
    }
    if (k == NULL || !oh_le_slot_reserve(s, k->n + 1))
        return keep;
    k->used = ++e->clock;
    const uint8_t *data = k->data;
    uint8_t *loaded = NULL;
    if (data == NULL) { /* on disk */
        loaded = read_all(k->path, k->size);
        if (loaded == NULL) {
            kv_count(e, &e->st.kv_disk_errors);
            oh_le_kv_drop(e, (int32_t)(k - e->kv));
            kv_stat(e, 0, 0, 0);
            return keep;
        }
        data = loaded;
    }
    e->api.memory_seq_rm(e->mem, s->id, 0, -1);
    s->n_tokens = 0;
    size_t got = e->api.state_seq_set_data(e->ctx, data, k->size, s->id);
    free(loaded);
    if (got == 0) {
        e->api.memory_seq_rm(e->mem, s->id, 0, -1);
        return 0;
    }
    memcpy(s->tokens, k->tokens, (size_t)k->n * sizeof(int32_t));
    s->n_tokens = k->n;
    if (loaded != NULL)
        kv_count(e, &e->st.kv_disk_restored);
    kv_stat(e, 0, 1, best_pre);
    return best_pre;
}
