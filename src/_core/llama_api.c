#include "llama_api.h"

#include <dlfcn.h>
#include <string.h>

const char *const oh_llama_api_names[OH_LLAMA_API_N] = {
    "llama_decode",
    "llama_get_logits_ith",
    "llama_sampler_apply",
    "llama_sampler_accept",
    "llama_sampler_free",
    "llama_memory_seq_rm",
    "llama_token_to_piece",
    "llama_vocab_is_eog",
    "llama_batch_init",
    "llama_batch_free",
    "llama_state_seq_get_size",
    "llama_state_seq_get_data",
    "llama_state_seq_set_data",
    "llama_sampler_init",
    "llama_sampler_chain_init",
    "llama_sampler_chain_add",
    "llama_set_sampler",
    "llama_synchronize",
};

const char *const oh_ggml_api_names[OH_GGML_API_N] = {
    "ggml_map_custom2",
    "ggml_view_1d",
    "ggml_get_data",
    "ggml_nelements",
    "ggml_backend_buft_get_device",
    "ggml_backend_dev_type",
    "ggml_init",
    "ggml_free",
    "ggml_new_tensor_2d",
    "ggml_pad",
};

static int resolve(void *handle, const char *const *names, int n, void **found,
                   const char **missing) {
    if (handle == NULL)
        return 6; /* OH_INVALID */
    for (int i = 0; i < n; i++) {
        dlerror();
        found[i] = dlsym(handle, names[i]);
        if (found[i] == NULL) {
            if (missing)
                *missing = names[i];
            return 6;
        }
    }
    return 0;
}

int oh_ggml_resolve(void *handle, oh_ggml_api *api, const char **missing) {
    void *found[OH_GGML_API_N];
    if (api == NULL || resolve(handle, oh_ggml_api_names, OH_GGML_API_N, found, missing) != 0)
        return 6;
    memcpy(&api->map_custom2, &found[0], sizeof(void *));
    memcpy(&api->view_1d, &found[1], sizeof(void *));
    memcpy(&api->get_data, &found[2], sizeof(void *));
    memcpy(&api->nelements, &found[3], sizeof(void *));
    memcpy(&api->buft_get_device, &found[4], sizeof(void *));
    memcpy(&api->dev_type, &found[5], sizeof(void *));
    memcpy(&api->init, &found[6], sizeof(void *));
    memcpy(&api->free, &found[7], sizeof(void *));
    memcpy(&api->new_tensor_2d, &found[8], sizeof(void *));
    memcpy(&api->pad, &found[9], sizeof(void *));
    return 0;
}

int oh_ggml_layout_ok(const oh_ggml_api *g) {
    oh_ggml_init_params params = {1 << 16, NULL, false};
    void *ctx = g->init(params);
    if (ctx == NULL)
        return 0;
    oh_ggml_tensor *t = g->new_tensor_2d(ctx, 0 /* GGML_TYPE_F32 */, 5, 3);
    oh_ggml_tensor *p = t ? g->pad(ctx, t, 0, 1, 0, 0) : NULL;
    oh_ggml_tensor *v = p ? g->view_1d(ctx, p, 5, 40) : NULL;
    int ok = v != NULL && t->ne[0] == 5 && t->ne[1] == 3 && t->ne[2] == 1 && t->nb[0] == 4 &&
             t->nb[1] == 20 && t->data != NULL && t->data == g->get_data(t) &&
             g->nelements(t) == 15 && p->src[0] == t && p->ne[0] == 5 && p->ne[1] == 4 &&
             p->nb[1] == 20 && v->view_src == p && v->view_offs == 40 && v->ne[0] == 5 &&
             g->nelements(v) == 5 && v->src[0] == p;
    g->free(ctx);
    return ok;
}

int oh_llama_resolve(void *handle, oh_llama_api *api, const char **missing) {
    void *found[OH_LLAMA_API_N];
    if (api == NULL || resolve(handle, oh_llama_api_names, OH_LLAMA_API_N, found, missing) != 0)
        return 6; /* OH_INVALID */
    /* Function pointers are assigned one by one (no array punning). */
    memcpy(&api->decode, &found[0], sizeof(void *));
    memcpy(&api->get_logits_ith, &found[1], sizeof(void *));
    memcpy(&api->sampler_apply, &found[2], sizeof(void *));
    memcpy(&api->sampler_accept, &found[3], sizeof(void *));
    memcpy(&api->sampler_free, &found[4], sizeof(void *));
    memcpy(&api->memory_seq_rm, &found[5], sizeof(void *));
    memcpy(&api->token_to_piece, &found[6], sizeof(void *));
    memcpy(&api->vocab_is_eog, &found[7], sizeof(void *));
    memcpy(&api->batch_init, &found[8], sizeof(void *));
    memcpy(&api->batch_free, &found[9], sizeof(void *));
    memcpy(&api->state_seq_get_size, &found[10], sizeof(void *));
    memcpy(&api->state_seq_get_data, &found[11], sizeof(void *));
    memcpy(&api->state_seq_set_data, &found[12], sizeof(void *));
    memcpy(&api->sampler_init, &found[13], sizeof(void *));
    memcpy(&api->sampler_chain_init, &found[14], sizeof(void *));
    memcpy(&api->sampler_chain_add, &found[15], sizeof(void *));
    memcpy(&api->set_sampler, &found[16], sizeof(void *));
    memcpy(&api->synchronize, &found[17], sizeof(void *));
    return 0;
}

#define FIELD(T, f)                                                                                \
    if (strcmp(field, #f) == 0)                                                                    \
    return (long)offsetof(T, f)

long oh_llama_layout(const char *type, const char *field) {
    if (strcmp(type, "llama_batch") == 0) {
        if (field == NULL)
            return (long)sizeof(oh_llama_batch);
        FIELD(oh_llama_batch, n_tokens);
        FIELD(oh_llama_batch, token);
        FIELD(oh_llama_batch, embd);
        FIELD(oh_llama_batch, pos);
        FIELD(oh_llama_batch, n_seq_id);
        FIELD(oh_llama_batch, seq_id);
        FIELD(oh_llama_batch, logits);
        return -1;
    }
    if (strcmp(type, "llama_token_data") == 0) {
        if (field == NULL)
            return (long)sizeof(oh_token_data);
        FIELD(oh_token_data, id);
        FIELD(oh_token_data, logit);
        FIELD(oh_token_data, p);
        return -1;
    }
    if (strcmp(type, "llama_token_data_array") == 0) {
        if (field == NULL)
            return (long)sizeof(oh_token_data_array);
        FIELD(oh_token_data_array, data);
        FIELD(oh_token_data_array, size);
        FIELD(oh_token_data_array, selected);
        FIELD(oh_token_data_array, sorted);
        return -1;
    }
    if (strcmp(type, "llama_sampler_chain_params") == 0) {
        if (field == NULL)
            return (long)sizeof(oh_sampler_chain_params);
        FIELD(oh_sampler_chain_params, no_perf);
        return -1;
    }
    if (strcmp(type, "llama_sampler_data") == 0) {
        if (field == NULL)
            return (long)sizeof(oh_sampler_data);
        FIELD(oh_sampler_data, logits);
        FIELD(oh_sampler_data, probs);
        FIELD(oh_sampler_data, sampled);
        FIELD(oh_sampler_data, candidates);
        return -1;
    }
    if (strcmp(type, "llama_sampler_i") == 0) {
        if (field == NULL)
            return (long)sizeof(oh_sampler_iface);
        FIELD(oh_sampler_iface, name);
        FIELD(oh_sampler_iface, accept);
        FIELD(oh_sampler_iface, apply);
        FIELD(oh_sampler_iface, reset);
        FIELD(oh_sampler_iface, clone);
        FIELD(oh_sampler_iface, free);
        FIELD(oh_sampler_iface, backend_init);
        FIELD(oh_sampler_iface, backend_accept);
        FIELD(oh_sampler_iface, backend_apply);
        FIELD(oh_sampler_iface, backend_set_input);
        FIELD(oh_sampler_iface, backend_reset);
        FIELD(oh_sampler_iface, copy_state);
        return -1;
    }
    if (strcmp(type, "llama_sampler") == 0) {
        if (field == NULL)
            return (long)sizeof(oh_sampler);
        FIELD(oh_sampler, iface);
        FIELD(oh_sampler, ctx);
        return -1;
    }
    return -1;
}
