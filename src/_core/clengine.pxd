# C declarations of llama_api.h and lengine.h (see lengine.c).
from libc.stdint cimport int32_t, int64_t, uint32_t, uint64_t
from ctokbuf cimport oh_tokbuf

cdef extern from "llama_api.h" nogil:
    const char *OH_LLAMA_CPP_PYTHON_VERSION
    const char *OH_LLAMA_CPP_COMMIT
    enum:
        OH_LLAMA_API_N
    ctypedef struct oh_llama_api:
        pass
    ctypedef struct oh_token_data:
        int32_t id
        float logit
        float p
    const char *const oh_llama_api_names[]
    int oh_llama_resolve(void *handle, oh_llama_api *api, const char **missing)
    ctypedef struct oh_ggml_api:
        pass
    int oh_ggml_resolve(void *handle, oh_ggml_api *api, const char **missing)
    long oh_llama_layout(const char *type, const char *field)

cdef extern from "lengine.h" nogil:
    enum:
        OH_LF_NONE
        OH_LF_STOP
        OH_LF_LENGTH
        OH_LF_CANCELLED
        OH_LF_DECODE
        OH_LF_CONTEXT
        OH_LF_CLOSED
        OH_LF_NOMEM

    ctypedef struct oh_lreq:
        const int32_t *prompt
        int32_t n_prompt
        int32_t max_tokens
        float temperature
        int32_t top_k
        float min_p
        int has_top_p
        int ignore_eos
        int json_stop
        void *chain
        void *grammar
        oh_tokbuf *tb
        void *owner
        int32_t n_cached, n_generated, full_masks, partial_masks, grammar_checks
        int32_t status
        int finish

    ctypedef struct oh_le_note:
        oh_lreq *req
        unsigned events
        int done

    ctypedef struct oh_le_stats:
        uint64_t steps, max_batch_seqs, prompt_cached, prompt_evaluated, generated
        uint64_t host_ns, host_cpu_ns, decode_ns, sample_ns
        uint64_t parallel_samples
        uint64_t graph_sampled
        int32_t graph_sampling
        uint64_t kv_saved, kv_restored, kv_restored_tokens, kv_bytes, kv_entries
        uint64_t kv_spilled, kv_disk_restored, kv_disk_bytes, kv_disk_entries, kv_disk_errors
        int32_t n_active, n_waiting

    ctypedef struct oh_lengine:
        pass

    int oh_le_create(oh_lengine **out, const oh_llama_api *api, void *ctx, void *vocab,
                     void *memory, int32_t n_vocab, int32_t n_ctx, int32_t n_batch,
                     int32_t n_seq, int32_t prefill_chunk, int32_t n_sample_threads,
                     size_t kv_cache_bytes, const char *kv_dir, size_t kv_disk_bytes,
                     int64_t pool_min_work, const oh_ggml_api *gapi)
    int oh_le_submit(oh_lengine *e, oh_lreq *r)
    void oh_le_cancel(oh_lengine *e, oh_lreq *r)
    int oh_le_pump(oh_lengine *e, oh_le_note *out, size_t cap, size_t *n, double timeout)
    void oh_le_stop(oh_lengine *e)
    void oh_le_destroy(oh_lengine *e)
    void oh_le_get_stats(oh_lengine *e, oh_le_stats *out)
    void oh_le_reset_peak(oh_lengine *e)
    const char *oh_le_piece(oh_lengine *e, int32_t token, size_t *n)
    int oh_le_whole(oh_lengine *e, int32_t token)
    int32_t oh_argmax(const float *x, int32_t n)
    int32_t oh_argmax_split(const float *x, int32_t n, int parts)
    int32_t oh_top_k(const float *x, int32_t n, int32_t k, oh_token_data *out)
