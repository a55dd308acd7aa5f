/* Sampling for the native llama loop: whole-vocabulary scans, llama.cpp's
 * sampler chain on pruned candidates, grammar checks, and the piece table
 * (each token's bytes as the loop appends them). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "lengine_impl.h"

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

#ifdef OH_HAVE_AVX2_PATH
/* Blocks of 16 KiB: the row is read once from memory (a step's logits are
   n_outputs x 1 MiB rows for a 262k vocabulary, far more than the core's
   caches at 64 sequences), and only the block holding the first maximum is
   read again, from L1. */
#define ARGMAX_BLOCK 4096

__attribute__((target("avx2"))) static int32_t argmax_part_avx2(const float *x, int32_t n,
                                                                float *vmax) {
    float best = -INFINITY;
    int32_t at = -1;
    for (int32_t i = 0; i < n; i += ARGMAX_BLOCK) {
        int32_t m = n - i < ARGMAX_BLOCK ? n - i : ARGMAX_BLOCK;
        float v = max_avx2(x + i, m);
        if (v > best) { /* strictly: an equal maximum in a later block loses */
            best = v;
            at = i;
        }
    }
    *vmax = best;
    if (at < 0) /* nothing above -inf: the first -inf, if any */
        return find_avx2(x, n, -INFINITY);
    int32_t m = n - at < ARGMAX_BLOCK ? n - at : ARGMAX_BLOCK;
    return at + find_avx2(x + at, m, best);
}
#endif

int32_t oh_argmax_part(const float *x, int32_t n, float *vmax) {
    /* The maximum of x[0:n] ignoring NaN (-inf if nothing is above it) and the
       first index holding it; -1 if none does (n <= 0, or only NaN). */
    *vmax = -INFINITY;
    if (n <= 0)
        return -1;
#ifdef OH_HAVE_AVX2_PATH
    if (use_avx2())
        return argmax_part_avx2(x, n, vmax);
#endif
    float m = max_generic(x, n);
    *vmax = m;
    for (int32_t k = 0; k < n; k++)
        if (x[k] == m)
            return k;
    return -1;
}

int32_t oh_argmax(const float *x, int32_t n) {
    /* The first index of the maximum: what llama.cpp's greedy sampler picks
       (it keeps the first of equal logits); all NaN: index 0, as it does. */
    if (n <= 0)
        return -1;
    float v;
    int32_t i = oh_argmax_part(x, n, &v);
    return i < 0 ? 0 : i;
}

int32_t oh_argmax_split(const float *x, int32_t n, int parts) {
    /* oh_argmax as the in-graph op computes it, on `parts` chunks (tests) */
    if (n <= 0)
        return -1;
    if (parts < 1)
        parts = 1;
    if (parts > OH_SEL_PARTS)
        parts = OH_SEL_PARTS;
    float v[OH_SEL_PARTS];
    int32_t idx[OH_SEL_PARTS];
    for (int k = 0; k < parts; k++) {
        int32_t lo = oh_sel_bound(n, k, parts), hi = oh_sel_bound(n, k + 1, parts);
        int32_t i = oh_argmax_part(x + lo, hi - lo, &v[k]);
        idx[k] = i < 0 ? -1 : lo + i;
    }
    return oh_sel_combine(v, idx, parts);
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
           them are allowed: no allowed token outside them could rank higher.
           M grows 16-fold (64, 1024, 16384) before the whole vocabulary. */
        int32_t need = greedy ? 1 : r->top_k;
        int32_t m = MASK_FIRST > 2 * need ? MASK_FIRST : 2 * need;
        for (; m < nv && m <= MASK_LAST; m *= 16) {
            if (!scratch_cand(sc, m))
                break;
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

void oh_le_sample_job(oh_lengine *e, scratch_t *sc, slot_t *s) {
    oh_lreq *r = s->req;
    /* greedy with the in-graph argmax: its token; else the row on the host */
    int32_t tok = s->pre >= 0 && r->temperature <= 0.0f ? s->pre : sample_free(e, sc, r, s->logits);
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

int oh_le_build_pieces(oh_lengine *e) {
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
