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

typedef struct { /* struct llama_sampler_chain_params */
    bool no_perf;
} oh_sampler_chain_params;

typedef struct { /* struct llama_sampler_data (ggml_tensor * each) */
    void *logits;
    void *probs;
    void *sampled;
    void *candidates;
} oh_sampler_data;

typedef struct { /* struct llama_sampler_i (llama_sampler * as void *) */
    const char *(*name)(const void *smpl);
    void (*accept)(void *smpl, oh_llama_token token);
    void (*apply)(void *smpl, oh_token_data_array *cur_p);
    void (*reset)(void *smpl);
    void *(*clone)(const void *smpl);
    void (*free)(void *smpl);
    bool (*backend_init)(void *smpl, void *buft, uint32_t n_outputs_max_per_seq);
    void (*backend_accept)(void *smpl, void *gctx, void *gf, void *selected_token);
    void (*backend_apply)(void *smpl, void *gctx, void *gf, oh_sampler_data *data);
    void (*backend_set_input)(void *smpl);
    void (*backend_reset)(void *smpl);
    void (*copy_state)(const void *src, void *dst);
} oh_sampler_iface;

typedef struct { /* struct llama_sampler */
    const oh_sampler_iface *iface;
    void *ctx;
} oh_sampler;

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
    /* in-graph ("backend") sampling */
    void *(*sampler_init)(const oh_sampler_iface *iface, void *ctx);
    void *(*sampler_chain_init)(oh_sampler_chain_params params);
    void (*sampler_chain_add)(void *chain, void *smpl);
    bool (*set_sampler)(void *ctx, oh_llama_seq_id seq, void *smpl);
    void (*synchronize)(void *ctx);
} oh_llama_api;

/* The names looked up, in the order of the fields above. */
#define OH_LLAMA_API_N 18
extern const char *const oh_llama_api_names[OH_LLAMA_API_N];

/* ggml (libggml-base, a dependency of libllama): what the in-graph selection
   op needs. Declared as in ggml.h / ggml-backend.h of the same llama.cpp
   (ggml_tensor *, ggml_context *, buffer types and devices as void *).
   llama-cpp-python declares none of them, so they are not checked against
   ctypes: they are looked up separately and, if one is missing, the loop
   samples on the host as before. */
/* struct ggml_tensor (ggml.h, GGML_MAX_DIMS 4, GGML_MAX_OP_PARAMS 64,
   GGML_MAX_SRC 10, GGML_MAX_NAME 64): the in-graph op finds the logits
   under llama.cpp's padded copy of them through view_src and src[0].
   oh_ggml_layout_ok() checks it on tensors ggml itself builds. */
typedef struct oh_ggml_tensor {
    int type;
    void *buffer;
    int64_t ne[4];
    size_t nb[4];
    int op;
    int32_t op_params[16];
    int32_t flags;
    struct oh_ggml_tensor *src[10];
    struct oh_ggml_tensor *view_src;
    size_t view_offs;
    void *data;
    char name[64];
    void *extra;
    char padding[8];
} oh_ggml_tensor;

typedef struct { /* struct ggml_init_params */
    size_t mem_size;
    void *mem_buffer;
    bool no_alloc;
} oh_ggml_init_params;

typedef void (*oh_ggml_custom2_fn)(void *dst, const void *a, const void *b, int ith, int nth,
                                   void *userdata);
typedef struct {
    void *(*map_custom2)(void *gctx, void *a, void *b, oh_ggml_custom2_fn fun, int n_tasks,
                         void *userdata);
    void *(*view_1d)(void *gctx, void *a, int64_t ne0, size_t offset);
    void *(*get_data)(const void *tensor);
    int64_t (*nelements)(const void *tensor);
    void *(*buft_get_device)(void *buft);
    int (*dev_type)(void *dev); /* enum ggml_backend_dev_type: 0 is the CPU */
    void *(*init)(oh_ggml_init_params params);
    void (*free)(void *gctx);
    void *(*new_tensor_2d)(void *gctx, int type, int64_t ne0, int64_t ne1);
    void *(*pad)(void *gctx, void *a, int p0, int p1, int p2, int p3);
} oh_ggml_api;

#define OH_GGML_API_N 10
extern const char *const oh_ggml_api_names[OH_GGML_API_N];
#define OH_GGML_N_TASKS_MAX (-1)
#define OH_GGML_DEV_CPU 0

/* dlsym() the ggml functions from `handle` (libllama's: its dependencies are
   searched too). OK, or INVALID with *missing naming the first not found. */
int oh_ggml_resolve(void *handle, oh_ggml_api *api, const char **missing);
/* 1 if oh_ggml_tensor matches the tensors this ggml builds (a padded matrix
   and a row view of it, as llama.cpp's sampling graph has them). */
int oh_ggml_layout_ok(const oh_ggml_api *api);

/* dlsym() every function from `handle` (a dlopen handle). OK, or INVALID
   with *missing naming the first symbol not found. */
int oh_llama_resolve(void *handle, oh_llama_api *api, const char **missing);

/* Layout of the structs above, for the start-up check: the size of `type`
   (field == NULL) or the offset of one of its fields; -1 if unknown. */
long oh_llama_layout(const char *type, const char *field);

#endif
