/* The part of llama.cpp's C API the native step loop calls.
 *
 * openheim does not link against libllama: llama-cpp-python already loaded
 * it, and oh_llama_resolve() looks these functions up with dlsym() in that
 * very library (the handle of llama-cpp-python's ctypes CDLL). The structs
 * below mirror llama.h of the llama.cpp vendored by llama-cpp-python 0.3.36;
 * openheim/models/_llama/bindings.py checks them against llama-cpp-python's
 * ctypes definitions at start-up (oh_llama_layout) and refuses to run on a
 * mismatch. */
#ifndef OH_LLAMA_API_H
#define OH_LLAMA_API_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The versions these declarations were checked against. */
#define OH_LLAMA_CPP_PYTHON_VERSION "0.3.36"
#define OH_LLAMA_CPP_COMMIT "0c1e57098bba43ac29e6e3b677cdceebdd22334f"

typedef int32_t oh_llama_token;
typedef int32_t oh_llama_pos;
typedef int32_t oh_llama_seq_id;

typedef struct { /* struct llama_batch */
    int32_t n_tokens;
    oh_llama_token *token;
    float *embd;
    oh_llama_pos *pos;
    int32_t *n_seq_id;
    oh_llama_seq_id **seq_id;
    int8_t *logits;
} oh_llama_batch;

typedef struct { /* struct llama_token_data */
    oh_llama_token id;
    float logit;
    float p;
} oh_token_data;

typedef struct { /* struct llama_token_data_array */
    oh_token_data *data;
    size_t size;
    int64_t selected;
    bool sorted;
} oh_token_data_array;

/* Opaque llama.cpp objects: llama_context, llama_vocab, llama_memory_t,
   llama_sampler are all passed as void *. */
typedef struct {
    int32_t (*decode)(void *ctx, oh_llama_batch batch);
    float *(*get_logits_ith)(void *ctx, int32_t i);
    void (*sampler_apply)(void *smpl, oh_token_data_array *cur_p);
    void (*sampler_accept)(void *smpl, oh_llama_token token);
    void (*sampler_free)(void *smpl);
    bool (*memory_seq_rm)(void *mem, oh_llama_seq_id seq, oh_llama_pos p0, oh_llama_pos p1);
    int32_t (*token_to_piece)(const void *vocab, oh_llama_token token, char *buf, int32_t length,
                              int32_t lstrip, bool special);
    bool (*vocab_is_eog)(const void *vocab, oh_llama_token token);
    oh_llama_batch (*batch_init)(int32_t n_tokens, int32_t embd, int32_t n_seq_max);
    void (*batch_free)(oh_llama_batch batch);
    size_t (*state_seq_get_size)(void *ctx, oh_llama_seq_id seq);
    size_t (*state_seq_get_data)(void *ctx, uint8_t *dst, size_t size, oh_llama_seq_id seq);
    size_t (*state_seq_set_data)(void *ctx, const uint8_t *src, size_t size, oh_llama_seq_id dest);
} oh_llama_api;

/* The names looked up, in the order of the fields above. */
#define OH_LLAMA_API_N 13
extern const char *const oh_llama_api_names[OH_LLAMA_API_N];

/* dlsym() every function from `handle` (a dlopen handle). OK, or INVALID
   with *missing naming the first symbol not found. */
int oh_llama_resolve(void *handle, oh_llama_api *api, const char **missing);

/* Layout of the structs above, for the start-up check: the size of `type`
   (field == NULL) or the offset of one of its fields; -1 if unknown. */
long oh_llama_layout(const char *type, const char *field);

#endif
