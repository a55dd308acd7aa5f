"""Continuous batching: one llama context decoding many requests at once.

The decode loop is native (``openheim._core.LlamaEngine``, C in
``src/_core/lengine.c``) and runs on its own thread without the GIL. Each
request gets a sequence slot (a ``seq_id`` in the shared, unified KV cache);
every step the loop forms ONE batch from all active sequences (the last
sampled token of each generating sequence, plus chunks of pending prompts
within the batch budget, so a long prompt never stalls the others), calls
``llama_decode``, samples every sequence (greedy by argmax, top-k / min-p
candidates pruned before llama.cpp's own sampler chain, several sequences at
once on native threads), detokenizes, and appends to each request's native
TokenBuffer. On the CPU backend the greedy argmax runs inside ``llama_decode``
itself: a llama.cpp backend sampler of openheim's (``src/_core/lselect.c``)
adds an op to the decode graph that picks the first largest logit of each row
in ggml's graph threads, so no logits row is copied out for the host to scan
(host work per step: a few microseconds); the rows of requests sampled on
the host are copied out by the same op, in parallel. New requests join between steps; finished or cancelled ones leave
at once.

Python only submits, cancels and reads: :class:`Engine` builds the sampler
chain and grammar with llama.cpp's constructors, hands them to the loop, and a
small pump thread wakes asyncio readers of the TokenBuffers and ends each
stream when its request is done.

Prompt caching: a slot keeps its KV cache after its request ends; the next
request goes to the idle slot sharing the longest prefix with its prompt and
evaluates only the rest (a session's next turn re-reads nothing it already
read). When a slot is reused for another prompt, or the context needs the room,
the sequence it held (32 tokens or more) is saved with llama.cpp's per-sequence
state API into a bounded session cache keyed by its tokens, and restored into a
slot when a prompt returns that shares a longer prefix with it than with any
slot: a session keeps its KV cache even after its slot served others. With a
``kv_dir``, states the memory cache evicts go to files there (up to
``kv_disk_bytes``) and are read back when their session returns.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from openheim._core import LlamaEngine, LlamaRequest, TokenBuffer
from openheim.errors import ContextLengthError, ModelError, OpenheimError
from openheim.models._llama.bindings import LlamaHandle, check_native_abi

if TYPE_CHECKING:
    from openheim._core import LlamaEngineStats

__all__ = ["Engine", "GenRequest"]

log = logging.getLogger("openheim.llama")

_ERRORS = {
    "context": "the shared context of {n_ctx} tokens is full; load the model with a larger "
    "n_ctx or fewer parallel sequences",
    "nomem": "out of memory in the llama decode loop",
    "closed": "the model was closed",
}


class GenRequest:
    """One generation: prompt tokens in, text out into ``buffer`` (a TokenBuffer)."""

    def __init__(
        self,
        tokens: list[int],
        *,
        buffer: TokenBuffer,
        max_tokens: int,
        temperature: float = 0.0,
        top_p: float | None = None,
        top_k: int = 40,
        min_p: float | None = None,
        seed: int | None = None,
        gbnf: str | None = None,
        ignore_eos: bool = False,
        on_done: Callable[[GenRequest], None] | None = None,
    ) -> None:
        self.tokens = tokens
        self.buffer = buffer
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.top_p = top_p
        self.top_k = top_k
        self.min_p = min_p
        self.seed = seed
        self.gbnf = gbnf
        self.ignore_eos = ignore_eos  # benchmarks: always generate max_tokens
        self.on_done = on_done
        self.cancelled = False
        self._native: LlamaRequest | None = None
        # Filled in when the request is done.
        self.n_cached = 0
        self.n_generated = 0
        self.finish_reason = ""
        self.error: OpenheimError | None = None
        self.full_masks = 0
        self.partial_masks = 0
        self.grammar_checks = 0

    def cancel(self) -> None:
        self.cancelled = True
        if self._native is not None:
            self._native.cancel()


class Engine:
    """The native decode loop of one loaded model, and its pump thread."""

    def __init__(
        self,
        handle: LlamaHandle,
        *,
        prefill_chunk: int = 256,
        sample_threads: int | None = None,
        kv_cache_bytes: int = 0,
        kv_dir: str | None = None,
        kv_disk_bytes: int = 0,
        pool_min_work: int = 1 << 17,
        backend_sampling: bool = True,
    ) -> None:
        """``pool_min_work``: a step samples on the ``sample_threads`` when it
        has two sequences or more and sequences x vocabulary reaches it (tests
        lower it to run the pool on a tiny vocabulary). ``backend_sampling``:
        greedy tokens are picked inside ``llama_decode`` by a llama.cpp backend
        sampler of openheim's (the first largest logit, in ggml's graph
        threads), so no logits row is copied to the host for them (CPU
        backend only; see ``LlamaEngine``)."""
        check_native_abi()
        self.h = handle
        lib, ctx, vocab, memory = handle.addresses()
        threads = sample_threads or 1
        self.sample_threads = threads
        self.native = LlamaEngine(
            lib,
            ctx,
            vocab,
            memory,
            handle.n_vocab,
            handle.n_ctx,
            handle.n_batch,
            handle.n_seq_max,
            prefill_chunk=max(1, min(prefill_chunk, handle.n_batch)),
            sample_threads=threads,
            kv_cache_bytes=max(0, kv_cache_bytes),
            kv_dir=kv_dir,
            kv_disk_bytes=max(0, kv_disk_bytes),
            pool_min_work=pool_min_work,
            backend_sampling=backend_sampling,
        )
        self._closed = False
        self._pump = threading.Thread(
            target=self._pump_loop, name="openheim-llama-pump", daemon=True
        )
        self._pump.start()

    # -- counters (read by tests and benchmarks) ---------------------------------------

    def stats(self) -> LlamaEngineStats:
        return self.native.stats()

    @property
    def steps(self) -> int:
        return self.stats()["steps"]

    @property
    def max_batch_seqs(self) -> int:
        """Most sequences seen in one decode step (since :meth:`reset_peak`)."""
        return self.stats()["max_batch_seqs"]

    def reset_peak(self) -> None:
        self.native.reset_peak()

    @property
    def prompt_cached(self) -> int:
        """Prompt tokens served from a slot's KV cache."""
        return self.stats()["prompt_cached"]

    @property
    def prompt_evaluated(self) -> int:
        """Prompt tokens that had to be decoded."""
        return self.stats()["prompt_evaluated"]

    @property
    def n_active(self) -> int:
        """Requests holding a sequence slot right now."""
        return self.stats()["n_active"]

    # -- called from any thread ----------------------------------------------------

    def submit(self, req: GenRequest) -> None:
        h = self.h
        if len(req.tokens) >= h.n_ctx:
            raise ContextLengthError(
                f"the prompt is {len(req.tokens)} tokens but the context holds {h.n_ctx}; "
                "shorten the conversation or load the model with a larger n_ctx",
                provider="llama",
            )
        if self._closed:
            raise ModelError("the model was closed", provider="llama")
        greedy = req.temperature <= 0
        chain = grammar = 0
        try:
            if not greedy:
                chain = h.make_chain(
                    temperature=req.temperature,
                    top_p=req.top_p,
                    top_k=req.top_k,
                    seed=req.seed,
                    min_p=req.min_p,
                )
            if req.gbnf:
                grammar = h.make_grammar(req.gbnf)
            req._native = self.native.submit(
                req,
                req.tokens,
                req.buffer,
                max_tokens=req.max_tokens,
                temperature=max(req.temperature, 0.0),
                top_k=0 if greedy else max(req.top_k, 0),
                min_p=0.0 if greedy else (req.min_p or 0.0),
                has_top_p=req.top_p is not None and req.top_p < 1.0,
                ignore_eos=req.ignore_eos,
                json_stop=bool(req.gbnf),
                chain=chain,
                grammar=grammar,
            )
        except BaseException:
            h.free_sampler(chain)
            h.free_sampler(grammar)
            raise
        if req.cancelled:
            req._native.cancel()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.native.stop()  # running and queued requests finish as "closed"
        self._pump.join()

    # -- the pump thread -----------------------------------------------------------------

    def _pump_loop(self) -> None:
        while True:
            done = self.native.pump()
            if done is None:
                return
            for nreq in done:
                try:
                    self._finish(nreq)
                except Exception:  # pragma: no cover - a callback failed; keep pumping
                    log.exception("finishing a llama request failed")

    def _finish(self, nreq: LlamaRequest) -> None:
        req: Any = nreq.owner
        assert isinstance(req, GenRequest)
        req.n_cached = nreq.n_cached
        req.n_generated = nreq.n_generated
        req.full_masks = nreq.full_masks
        req.partial_masks = nreq.partial_masks
        req.grammar_checks = nreq.grammar_checks
        reason = nreq.finish
        error: OpenheimError | None = None
        if reason == "error":
            msg = (
                "the grammar allowed no token"
                if nreq.status == -100
                else f"llama_decode failed with status {nreq.status}"
            )
            error = ModelError(msg, provider="llama")
        elif reason == "context":
            error = ContextLengthError(
                _ERRORS["context"].format(n_ctx=self.h.n_ctx), provider="llama"
            )
        elif reason in _ERRORS:
            error = ModelError(_ERRORS[reason], provider="llama")
        req.finish_reason = "error" if error is not None else reason
        req.error = error
        try:
            if error is not None:
                req.buffer.fail(error)
            else:
                req.buffer.finish(reason)
        finally:
            if req.on_done is not None:
                req.on_done(req)
