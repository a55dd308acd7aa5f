/* In-graph selection for the native llama loop: a llama.cpp backend sampler
 * ("openheim-select") attached to every slot's seq_id. llama.cpp builds its op
 * into the decode graph, after the logits, so it runs in ggml's own threads
 * inside llama_decode, on each sampled row where the graph left it; llama.cpp
 * then copies no logits row out (every sequence of the batch has a backend
 * sampler), and the loop reads one token per sequence instead of 4 x n_vocab
 * bytes.
 *
 * The op splits the row between the graph's threads. Greedy requests get the
 * first largest logit (OH_SEL_ARGMAX: the index llama.cpp's CPU greedy sampler
 * picks, not ggml_argmax's last one); requests that sample on the host
 * (temperature > 0, a grammar) get the row copied into the slot's own buffer
 * (OH_SEL_COPY), which the graph threads do in parallel. The mode is set per
 * slot before each llama_decode, so the graph never changes with it.
 *
 * Only where the logits live in host memory (the CPU backend): elsewhere
 * backend_init says no, the samplers are detached and the loop reads rows as
 * before. */
#include <string.h>

#include "lengine_impl.h"

int32_t oh_sel_bound(int64_t n, int k, int parts) {
    /* chunk k of `parts` spans [bound(k), bound(k + 1)), in 16-float steps */
    int64_t b = n * k / parts;
    b -= b % 16;
    return (int32_t)(k >= parts ? n : b);
}

int32_t oh_sel_combine(const float *v, const int32_t *i, int parts) {
    /* the first index of the largest value over the chunks, in order; as
       oh_argmax: all NaN gives 0 */
    int32_t best = -1;
    float bv = 0.0f;
    for (int k = 0; k < parts; k++) {
        if (i[k] < 0)
            continue; /* that chunk held only NaN */
        if (best < 0 || v[k] > bv) {
            best = i[k];
            bv = v[k];
        }
    }
    return best < 0 ? 0 : best;
}

static void select_op(void *dst, const void *a, const void *b, int ith, int nth, void *ud) {
    (void)a;
    oh_select *s = ud;
    const oh_ggml_api *g = &s->e->gapi;
    const int mode = s->mode;
    const int parts = nth < OH_SEL_PARTS ? nth : OH_SEL_PARTS;
    if (mode != 0 && ith < parts) {
        const float *x = g->get_data(b);
        const int64_t n = g->nelements(b);
        const int32_t lo = oh_sel_bound(n, ith, parts), hi = oh_sel_bound(n, ith + 1, parts);
        if (mode & OH_SEL_ARGMAX) {
            float v;
            int32_t i = oh_argmax_part(x + lo, hi - lo, &v);
            s->part_v[ith] = v;
            s->part_i[ith] = i < 0 ? -1 : lo + i;
        }
        if ((mode & OH_SEL_COPY) && s->row != NULL && hi > lo)
            memcpy(s->row + lo, x + lo, (size_t)(hi - lo) * sizeof(float));
    }
    /* The last thread through puts the parts together (the graph's barrier
       after this node keeps the next run apart). */
    if (atomic_fetch_add_explicit(&s->arrived, 1, memory_order_acq_rel) + 1 == nth) {
        atomic_store_explicit(&s->arrived, 0, memory_order_relaxed);
        int32_t tok = (mode & OH_SEL_ARGMAX) ? oh_sel_combine(s->part_v, s->part_i, parts) : -1;
        s->token = tok;
        s->runs++;
        void *out = g->get_data(dst);
        if (out != NULL)
            memcpy(out, &tok, sizeof tok); /* what llama_get_sampled_token_ith returns */
    }
}

static const char *select_name(const void *smpl) {
    (void)smpl;
    return "openheim-select";
}

static void select_apply(void *smpl, oh_token_data_array *cur_p) {
    /* on the host (never used by the loop): llama.cpp's greedy */
    (void)smpl;
    cur_p->selected = 0;
    for (size_t i = 1; i < cur_p->size; i++)
        if (cur_p->data[i].logit > cur_p->data[cur_p->selected].logit)
            cur_p->selected = (int64_t)i;
}

static bool select_backend_init(void *smpl, void *buft, uint32_t n_outputs_max_per_seq) {
    oh_select *s = ((oh_sampler *)smpl)->ctx;
    const oh_ggml_api *g = &s->e->gapi;
    void *dev = buft != NULL ? g->buft_get_device(buft) : NULL;
    /* our op is plain C on host memory; one output row per sequence and step */
    s->supported = (dev == NULL || g->dev_type(dev) == OH_GGML_DEV_CPU) && n_outputs_max_per_seq == 1;
    return s->supported;
}

/* llama.cpp hands each sampler a row of ggml_pad(logits): a copy of the whole
   logits matrix plus a zero row (so that a sampler with no output this step
   still has a row 0), made by an element-by-element CPU op that cost more
   than every other part of sampling together (6 % of a step's CPU at 8
   sequences). The same row of the logits themselves, when it exists, leaves
   the pad out of the graph: nothing else reads it. */
static void *unpadded_row(const oh_ggml_api *g, void *gctx, oh_ggml_tensor *row) {
    oh_ggml_tensor *pad = row->view_src;
    if (pad == NULL || pad->src[0] == NULL || pad->src[1] != NULL)
        return row;
    oh_ggml_tensor *x = pad->src[0];
    if (x->type != row->type || x->ne[0] != row->ne[0] || x->nb[1] != pad->nb[1] ||
        x->nb[0] != sizeof(float) || x->ne[2] != 1 || x->ne[3] != 1 || pad->ne[0] != x->ne[0] ||
        pad->ne[1] != x->ne[1] + 1 || row->view_offs % x->nb[1] != 0 ||
        (int64_t)(row->view_offs / x->nb[1]) >= x->ne[1])
        return row; /* not the shape llama.cpp makes, or the zero row itself */
    return g->view_1d(gctx, x, x->ne[0], row->view_offs);
}

static void select_backend_apply(void *smpl, void *gctx, void *gf, oh_sampler_data *data) {
    (void)gf;
    oh_select *s = ((oh_sampler *)smpl)->ctx;
    const oh_ggml_api *g = &s->e->gapi;
    void *row = unpadded_row(g, gctx, data->logits);
    /* custom2(a, b): the result is shaped like a, one float (it carries the
       token's int32 bits); b is the row, read in place */
    void *a = g->view_1d(gctx, row, 1, 0);
    data->sampled = g->map_custom2(gctx, a, row, select_op, OH_GGML_N_TASKS_MAX, s);
    /* llama.cpp would compute and copy out whatever is left in data->logits
       (as "the sampler's filtered logits"): we filter none */
    data->logits = NULL;
}

static const oh_sampler_iface select_iface = {
    .name = select_name,
    .apply = select_apply,
    .backend_init = select_backend_init,
    .backend_apply = select_backend_apply,
};

void oh_sel_detach(oh_lengine *e) {
    for (int32_t i = 0; i < e->n_seq; i++) {
        oh_select *s = &e->slots[i].sel;
        if (s->chain == NULL)
            continue;
        e->api.set_sampler(e->ctx, e->slots[i].id, NULL);
        e->api.sampler_free(s->chain); /* frees our sampler too; its state is the slot's */
        s->chain = NULL;
    }
    e->bsel = 0;
}

int oh_sel_attach(oh_lengine *e) {
    oh_sampler_chain_params params = {true};
    if (!oh_ggml_layout_ok(&e->gapi))
        return 0;
    for (int32_t i = 0; i < e->n_seq; i++) {
        oh_select *s = &e->slots[i].sel;
        s->e = e;
        s->mode = 0;
        atomic_init(&s->arrived, 0);
        void *chain = e->api.sampler_chain_init(params);
        if (chain == NULL)
            goto fail;
        void *smpl = e->api.sampler_init(&select_iface, s);
        if (smpl == NULL) {
            e->api.sampler_free(chain);
            goto fail;
        }
        e->api.sampler_chain_add(chain, smpl);
        s->chain = chain;
        s->supported = 0;
        /* llama.cpp runs backend_init now; the graph is reserved again at the next decode */
        if (!e->api.set_sampler(e->ctx, e->slots[i].id, chain) || !s->supported)
            goto fail;
    }
    e->bsel = 1;
    return 1;
fail:
    oh_sel_detach(e);
    return 0;
}
