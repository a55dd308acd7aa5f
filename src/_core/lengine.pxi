# The native step loop of a llama.cpp model (C side: lengine.c, llama_api.c).
# Python submits requests, cancels them and reads their TokenBuffers; the loop
# thread decodes, samples and appends without the GIL. A pump thread (see
# openheim/models/_llama/engine.py) calls LlamaEngine.pump() to wake asyncio
# readers and to learn which requests are done.
from libc.stdint cimport int32_t, int64_t, uintptr_t
from libc.stdlib cimport malloc, free
from clengine cimport *
from os.path import isdir as _isdir

LLAMA_CPP_PYTHON_VERSION = OH_LLAMA_CPP_PYTHON_VERSION.decode()
LLAMA_CPP_COMMIT = OH_LLAMA_CPP_COMMIT.decode()

cdef dict _FINISH_NAMES = {
    OH_LF_NONE: "",
    OH_LF_STOP: "stop",
    OH_LF_LENGTH: "length",
    OH_LF_CANCELLED: "cancelled",
    OH_LF_DECODE: "error",
    OH_LF_CONTEXT: "context",
    OH_LF_CLOSED: "closed",
    OH_LF_NOMEM: "nomem",
}


def llama_api_names():
    """The llama.cpp functions the native loop looks up in libllama."""
    return tuple(oh_llama_api_names[i].decode() for i in range(OH_LLAMA_API_N))


def llama_layout(str type_name, field=None):
    """Size of a llama.cpp struct as compiled into the core (or a field's offset); -1 if unknown."""
    cdef bytes t = type_name.encode()
    cdef bytes f
    if field is None:
        return oh_llama_layout(t, NULL)
    f = (<str>field).encode()
    return oh_llama_layout(t, f)


def argmax(const float[::1] logits):
    """Index of the first largest value: llama.cpp's greedy choice."""
    if logits.shape[0] == 0:
        raise _errors.ConfigError("argmax needs at least one logit")
    cdef int32_t r
    with nogil:
        r = oh_argmax(&logits[0], <int32_t>logits.shape[0])
    return r


def argmax_split(const float[::1] logits, int parts):
    """argmax as the in-graph op computes it: the row cut into ``parts`` chunks
    (one per graph thread, at most 64), each chunk's first maximum, then the
    first of the largest. Always equal to :func:`argmax` (tests check it)."""
    if logits.shape[0] == 0:
        raise _errors.ConfigError("argmax needs at least one logit")
    cdef int32_t r
    with nogil:
        r = oh_argmax_split(&logits[0], <int32_t>logits.shape[0], parts)
    return r


def top_k(const float[::1] logits, int k):
    """The k largest logits as (token, logit) pairs, best first (ties: lower token)."""
    cdef Py_ssize_t n = logits.shape[0]
    if k <= 0 or n == 0:
        return []
    if k > n:
        k = <int>n
    cdef oh_token_data *out = <oh_token_data *>malloc(k * sizeof(oh_token_data))
    if out == NULL:
        raise MemoryError()
    cdef int32_t got
    try:
        with nogil:
            got = oh_top_k(&logits[0], <int32_t>n, k, out)
        return [(out[i].id, out[i].logit) for i in range(got)]
    finally:
        free(out)


cdef class LlamaRequest:
    """One generation submitted to a LlamaEngine (created by LlamaEngine.submit)."""

    cdef oh_lreq r
    cdef int32_t *_prompt
    cdef readonly object buffer
    cdef readonly object owner
    cdef object _engine
    cdef bint _done

    def __dealloc__(self):
        free(self._prompt)

    def cancel(self):
        """Ask the loop to retire this request before its next step (any thread)."""
        oh_le_cancel(NULL, &self.r)

    @property
    def done(self):
        return self._done

    @property
    def finish(self):
        """"" while running; then "stop", "length", "cancelled", "error", "context", "closed" or "nomem"."""
        return _FINISH_NAMES.get(self.r.finish, "error") if self._done else ""

    @property
    def status(self):
        """llama_decode's status when finish is "error"."""
        return self.r.status

    @property
    def n_cached(self):
        return self.r.n_cached

    @property
    def n_generated(self):
        return self.r.n_generated

    @property
    def full_masks(self):
        """Refusals resolved by masking the whole vocabulary."""
        return self.r.full_masks

    @property
    def partial_masks(self):
        """Refusals resolved among the best 64 (or 1,024, or 16,384) candidates."""
        return self.r.partial_masks

    @property
    def grammar_checks(self):
        return self.r.grammar_checks


cdef class LlamaEngine:
    """The decode loop of one llama context, on its own native thread.

    ``lib`` is the dlopen handle of the libllama llama-cpp-python loaded
    (``llama_cpp.llama_cpp._lib._handle``); ``ctx``, ``vocab`` and ``memory``
    are addresses of that context's objects. ``sample_threads`` counts the
    loop's own thread; a step samples on them when it has two sequences or
    more and sequences x ``n_vocab`` >= ``pool_min_work``. ``kv_cache_bytes``
    bounds the session cache (saved sequence states restored when their
    session returns; 0: none).
    ``backend_sampling``: attach llama.cpp backend samplers whose op picks
    greedy tokens (the first largest logit, as llama.cpp's CPU greedy) inside
    llama_decode, in ggml's graph threads, and copies the rows of the other
    requests there, so no logits row is copied out for the host to scan; only
    where the logits are in host memory (the CPU backend), else the host reads
    rows as before (``stats()["backend_sampling"]`` says which).
    ``kv_dir`` (an existing directory) adds a disk tier of up to
    ``kv_disk_bytes``: states the memory cache evicts are written there, one
    file each (removed when dropped and when the engine is freed), and read
    back when their session returns.
    """

    cdef oh_lengine *e
    cdef oh_llama_api api
    cdef oh_ggml_api gapi
    cdef dict _live
    cdef readonly int n_vocab
    cdef readonly int n_seq

    def __cinit__(self, uintptr_t lib, uintptr_t ctx, uintptr_t vocab, uintptr_t memory,
                  int n_vocab, int n_ctx, int n_batch, int n_seq, int prefill_chunk=256,
                  int sample_threads=1, size_t kv_cache_bytes=0, kv_dir=None,
                  size_t kv_disk_bytes=0, int64_t pool_min_work=131072,
                  bint backend_sampling=True):
        cdef const char *missing = NULL
        cdef const char *cdir = NULL
        cdef bytes bdir
        cdef int rc
        cdef const oh_ggml_api *gp = NULL
        self._live = {}
        if oh_llama_resolve(<void *>lib, &self.api, &missing) != OH_OK:
            name = missing.decode() if missing != NULL else "?"
            raise _errors.ConfigError(
                f"libllama has no {name}: this llama-cpp-python build does not match the "
                f"llama.cpp API openheim was checked against (llama-cpp-python "
                f"{LLAMA_CPP_PYTHON_VERSION}); install llama-cpp-python=={LLAMA_CPP_PYTHON_VERSION}")
        if ctx == 0 or vocab == 0 or memory == 0:
            raise _errors.ConfigError("LlamaEngine needs the addresses of a llama context, vocab and memory")
        if kv_dir is not None:
            bdir = _fsencode(kv_dir)
            if not _isdir(bdir):
                raise _errors.ConfigError(
                    f"kv_dir {kv_dir!r} is not a directory: create it or pass None (no disk tier)")
            if kv_disk_bytes > 0:
                cdir = bdir
        if backend_sampling and oh_ggml_resolve(<void *>lib, &self.gapi, NULL) == OH_OK:
            gp = &self.gapi
        with nogil:
            rc = oh_le_create(&self.e, &self.api, <void *>ctx, <void *>vocab, <void *>memory,
                              n_vocab, n_ctx, n_batch, n_seq, prefill_chunk, sample_threads,
                              kv_cache_bytes, cdir, kv_disk_bytes, pool_min_work, gp)
        if rc != OH_OK:
            _raise_status(rc, f"cannot start the llama decode loop (n_vocab={n_vocab}, "
                              f"n_ctx={n_ctx}, n_batch={n_batch}, n_seq={n_seq})")
        self.n_vocab = n_vocab
        self.n_seq = n_seq

    def __dealloc__(self):
        if self.e != NULL:
            with nogil:
                oh_le_destroy(self.e)
            self.e = NULL

    def submit(self, owner, tokens, TokenBuffer buffer not None, *, int max_tokens,
               float temperature=0.0, int top_k=0, float min_p=0.0, bint has_top_p=False,
               bint ignore_eos=False, bint json_stop=False, uintptr_t chain=0,
               uintptr_t grammar=0):
        """Queue a generation; the loop appends its tokens to ``buffer``.

        ``chain`` (needed when temperature > 0) and ``grammar`` are
        llama_sampler addresses; once this returns, the engine owns and frees
        them. Their shape must match the flags: a chain that starts with
        top_k(top_k) when top_k > 0, with min_p(min_p) after any top_p when
        min_p > 0 (``has_top_p`` if a top_p < 1 precedes it).
        """
        cdef LlamaRequest req
        cdef Py_ssize_t n = len(tokens), i
        cdef int rc
        if self.e == NULL:
            raise _errors.ModelError("the llama engine is closed")
        if n == 0:
            raise _errors.ConfigError("a generation needs at least one prompt token")
        if max_tokens <= 0:
            raise _errors.ConfigError(f"max_tokens must be positive, got {max_tokens}")
        if temperature > 0 and chain == 0:
            raise _errors.ConfigError("sampling at temperature > 0 needs a sampler chain")
        req = LlamaRequest.__new__(LlamaRequest)
        req._prompt = <int32_t *>malloc(n * sizeof(int32_t))
        if req._prompt == NULL:
            raise MemoryError()
        for i in range(n):
            v = tokens[i]
            if v < 0 or v >= self.n_vocab:
                raise _errors.ConfigError(
                    f"prompt token {v} at position {i} is outside the vocabulary (0..{self.n_vocab - 1})")
            req._prompt[i] = <int32_t>v
        req.r.prompt = req._prompt
        req.r.n_prompt = <int32_t>n
        req.r.max_tokens = max_tokens
        req.r.temperature = temperature
        req.r.top_k = top_k
        req.r.min_p = min_p
        req.r.has_top_p = has_top_p
        req.r.ignore_eos = ignore_eos
        req.r.json_stop = json_stop
        req.r.chain = <void *>chain
        req.r.grammar = <void *>grammar
        req.r.tb = &buffer.tb
        req.r.owner = <void *>req
        req.buffer = buffer
        req.owner = owner
        req._engine = self
        self._live[id(req)] = req
        rc = oh_le_submit(self.e, &req.r)
        if rc != OH_OK:
            del self._live[id(req)]
            req.r.chain = NULL
            req.r.grammar = NULL
            if rc == OH_CLOSED:
                raise _errors.ModelError("the model was closed", provider="llama")
            _raise_status(rc, "cannot submit the generation")
        return req

    def pump(self, timeout=None):
        """Wait for progress; wake readers of the TokenBuffers written since.

        Returns the requests that finished (their TokenBuffer not yet ended:
        the caller ends it), [] on timeout, or None once the engine stopped
        and every request was returned.
        """
        cdef oh_le_note notes[64]
        cdef size_t n = 0, i
        cdef int rc
        cdef double t = -1.0 if timeout is None else <double>timeout
        cdef LlamaRequest req
        if self.e == NULL:
            return None
        with nogil:
            rc = oh_le_pump(self.e, notes, 64, &n, t)
        if rc == OH_CLOSED:
            return None
        done = []
        for i in range(n):
            req = <LlamaRequest>notes[i].req.owner
            if notes[i].events:
                (<TokenBuffer>req.buffer)._notify(notes[i].events)
            if notes[i].done:
                req._done = True
                self._live.pop(id(req), None)
                done.append(req)
        return done

    def stop(self):
        """Stop the loop thread (running and queued requests finish as "closed")."""
        if self.e != NULL:
            with nogil:
                oh_le_stop(self.e)

    def stats(self):
        """Counters of the loop: steps, timings (ns, summed), cache use, sequences."""
        cdef oh_le_stats s
        if self.e == NULL:
            raise _errors.ModelError("the llama engine is closed")
        oh_le_get_stats(self.e, &s)
        return {
            "steps": s.steps,
            "max_batch_seqs": s.max_batch_seqs,
            "prompt_cached": s.prompt_cached,
            "prompt_evaluated": s.prompt_evaluated,
            "generated": s.generated,
            "host_ns": s.host_ns,
            "host_cpu_ns": s.host_cpu_ns,
            "decode_ns": s.decode_ns,
            "sample_ns": s.sample_ns,
            "parallel_samples": s.parallel_samples,
            "graph_sampled": s.graph_sampled,
            "backend_sampling": bool(s.graph_sampling),
            "kv_saved": s.kv_saved,
            "kv_restored": s.kv_restored,
            "kv_restored_tokens": s.kv_restored_tokens,
            "kv_bytes": s.kv_bytes,
            "kv_entries": s.kv_entries,
            "kv_spilled": s.kv_spilled,
            "kv_disk_restored": s.kv_disk_restored,
            "kv_disk_bytes": s.kv_disk_bytes,
            "kv_disk_entries": s.kv_disk_entries,
            "kv_disk_errors": s.kv_disk_errors,
            "n_active": s.n_active,
            "n_waiting": s.n_waiting,
        }

    def reset_peak(self):
        """Start max_batch_seqs over from 0."""
        if self.e != NULL:
            oh_le_reset_peak(self.e)

    def piece(self, int token):
        """The bytes the loop appends for ``token``."""
        cdef size_t n
        cdef const char *p
        if self.e == NULL:
            raise _errors.ModelError("the llama engine is closed")
        p = oh_le_piece(self.e, token, &n)
        return p[:n]

    def whole_utf8(self, int token):
        """True if the token's bytes are whole UTF-8 characters."""
        if self.e == NULL:
            raise _errors.ModelError("the llama engine is closed")
        return bool(oh_le_whole(self.e, token))
