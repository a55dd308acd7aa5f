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
};

int oh_llama_resolve(void *handle, oh_llama_api *api, const char **missing) {
    void *found[OH_LLAMA_API_N];
    if (handle == NULL || api == NULL)
        return 6; /* OH_INVALID */
    for (int i = 0; i < OH_LLAMA_API_N; i++) {
        dlerror();
        found[i] = dlsym(handle, oh_llama_api_names[i]);
        if (found[i] == NULL) {
            if (missing)
                *missing = oh_llama_api_names[i];
            return 6;
        }
    }
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
    return -1;
}
