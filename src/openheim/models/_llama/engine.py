"""Continuous batching: one llama context decoding many requests at once.

A dedicated thread owns the context. Each request gets a sequence slot (a
``seq_id`` in the shared, unified KV cache). Every step the engine forms ONE
batch from all active sequences: the last sampled token of each generating
sequence, plus chunks of pending prompts within the batch budget (chunked
prefill, so a long prompt never stalls the others). New requests join between
steps, finished or cancelled ones leave at once. ``llama_decode`` and the
samplers run through ctypes, which releases the GIL, so the event loop keeps
serving while the model computes. Tokens go into each request's native
TokenBuffer, which hands text to async readers on the loop.

Prompt caching: a slot keeps its KV cache after its request ends; the next
request goes to the idle slot sharing the longest prefix with its prompt and
evaluates only the rest (a session's next turn re-reads nothing it already read).
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

from openheim._core import Mailbox, fill_batch
from openheim.errors import ContextLengthError, ModelError, OpenheimError
from openheim.models._llama.bindings import LlamaHandle
from openheim.models._llama.grammar import LazyGrammar

__all__ = ["Engine", "GenRequest"]

log = logging.getLogger("openheim.llama")


class GenRequest:
    """One generation: prompt tokens in, tokens out into ``sink``."""

    def __init__(
        self,
        tokens: list[int],
        *,
        sink: Any,
        max_tokens: int,
        temperature: float = 0.0,
        top_p: float | None = None,
        top_k: int = 40,
        seed: int | None = None,
        gbnf: str | None = None,
        ignore_eos: bool = False,
        on_done: Callable[[GenRequest], None] | None = None,
    ) -> None:
        self.tokens = tokens
        self.sink = sink
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.top_p = top_p
        self.top_k = top_k
        self.seed = seed
        self.gbnf = gbnf
        self.ignore_eos = ignore_eos  # benchmarks: always generate max_tokens
        self.on_done = on_done
        self.cancelled = False
        # Filled in by the engine.
        self.n_cached = 0
        self.n_generated = 0
        self.finish_reason = ""
        self.error: OpenheimError | None = None
        self.full_masks = 0
        self.grammar_checks = 0

    def cancel(self) -> None:
        self.cancelled = True


class _Slot:
    __slots__ = (
        "chain",
        "depth",
        "escape",
        "grammar",
        "id",
        "in_str",
        "last_used",
        "pending",
        "prefill_done",
        "req",
        "started",
        "tokens",
    )

    def __init__(self, seq_id: int) -> None:
        self.id = seq_id
        self.tokens: list[int] = []  # what this sequence's KV cache holds
        self.req: GenRequest | None = None
        self.pending: list[int] = []
        self.prefill_done = False
        self.chain: Any = None
        self.grammar: LazyGrammar | None = None
        self.last_used = 0
        # JSON scanner state: the constrained reply ends when its object closes.
        self.depth = 0
        self.in_str = False
        self.escape = False
        self.started = False


_STOP = object()


class Engine:
    """The decode thread of one loaded model."""

    def __init__(self, handle: LlamaHandle, *, prefill_chunk: int = 256) -> None:
        self.h = handle
        self.prefill_chunk = max(1, min(prefill_chunk, handle.n_batch))
        self.slots = [_Slot(i) for i in range(handle.n_seq_max)]
        self._inbox: Mailbox[Any] = Mailbox(65536)
        self._waiting: deque[GenRequest] = deque()
        self._clock = itertools.count(1)
        self._addr = handle.batch_addresses()
        self.steps = 0
        self.max_batch_seqs = 0  # most sequences seen in one decode step
        self.prompt_cached = 0  # prompt tokens served from a slot's KV cache
        self.prompt_evaluated = 0  # prompt tokens that had to be decoded
        self._thread = threading.Thread(target=self._run, name="openheim-llama", daemon=True)
        self._thread.start()

    # -- called from any thread ----------------------------------------------------

    def submit(self, req: GenRequest) -> None:
        if len(req.tokens) >= self.h.n_ctx:
            raise ContextLengthError(
                f"the prompt is {len(req.tokens)} tokens but the context holds {self.h.n_ctx}; "
                "shorten the conversation or load the model with a larger n_ctx",
                provider="llama",
            )
        self._inbox.put_blocking(req)

    def close(self) -> None:
        if self._thread.is_alive():
            self._inbox.put_blocking(_STOP)
            self._thread.join()
        self._inbox.close()

    # -- the decode thread -----------------------------------------------------------

    def _active(self) -> list[_Slot]:
        return [s for s in self.slots if s.req is not None]

    def _run(self) -> None:
        try:
            while True:
                if not self._active() and not self._waiting:
                    item = self._inbox.get_blocking()  # GIL released while idle
                    if item is _STOP:
                        break
                    self._waiting.append(item)
                stop = False
                for item in self._inbox.get_many(1024):
                    if item is _STOP:
                        stop = True
                    else:
                        self._waiting.append(item)
                self._admit()
                if self._active():
                    self._step()
                if stop:
                    break
        except BaseException as exc:  # pragma: no cover - last-resort: fail everyone loudly
            log.exception("llama decode thread crashed")
            err = ModelError(f"the llama decode thread crashed: {exc!r}", provider="llama")
            for s in self.slots:
                if s.req is not None:
                    self._finish(s, "error", err)
            while self._waiting:
                self._fail(self._waiting.popleft(), err)
        finally:
            for s in self.slots:
                if s.req is not None:
                    self._finish(s, "cancelled")
            while self._waiting:
                self._fail(
                    self._waiting.popleft(), ModelError("the model was closed", provider="llama")
                )

    def _admit(self) -> None:
        while self._waiting:
            req = self._waiting[0]
            if req.cancelled:
                self._waiting.popleft()
                self._fail(req, None, reason="cancelled")
                continue
            idle = [s for s in self.slots if s.req is None]
            if not idle:
                return
            self._waiting.popleft()
            slot = max(idle, key=lambda s: (_common_prefix(s.tokens, req.tokens), -s.last_used))
            self._start(slot, req)

    def _start(self, slot: _Slot, req: GenRequest) -> None:
        keep = min(_common_prefix(slot.tokens, req.tokens), len(req.tokens) - 1)
        if keep < len(slot.tokens) and not self.h.seq_rm(slot.id, keep, -1):
            self.h.seq_rm(slot.id, 0, -1)
            keep = 0
        del slot.tokens[keep:]
        slot.req = req
        slot.pending = req.tokens[keep:]
        slot.prefill_done = False
        slot.depth, slot.in_str, slot.escape, slot.started = 0, False, False, False
        req.n_cached = keep
        self.prompt_cached += keep
        self.prompt_evaluated += len(req.tokens) - keep
        try:
            slot.chain = self.h.make_chain(
                temperature=req.temperature, top_p=req.top_p, top_k=req.top_k, seed=req.seed
            )
            slot.grammar = LazyGrammar(self.h, req.gbnf) if req.gbnf else None
        except OpenheimError as exc:
            self._finish(slot, "error", exc)

    def _make_room(self, need: int, active: list[_Slot]) -> None:
        used = sum(len(s.tokens) for s in self.slots)
        if used + need <= self.h.n_ctx:
            return
        for s in sorted(
            (s for s in self.slots if s.req is None and s.tokens), key=lambda s: s.last_used
        ):
            self.h.seq_rm(s.id, 0, -1)
            used -= len(s.tokens)
            s.tokens.clear()
            if used + need <= self.h.n_ctx:
                return
        # Still full: the longest active sequence gives way.
        victim = max(active, key=lambda s: len(s.tokens) + len(s.pending))
        self._finish(
            victim,
            "error",
            ContextLengthError(
                f"the shared context of {self.h.n_ctx} tokens is full; load the model with a "
                "larger n_ctx or fewer parallel sequences",
                provider="llama",
            ),
        )

    def _step(self) -> None:
        h = self.h
        for s in self._active():
            if s.req is not None and s.req.cancelled:
                self._finish(s, "cancelled")
        active = self._active()
        if not active:
            return
        plan: list[tuple[_Slot, int]] = []  # slot, tokens it feeds this step
        n = 0
        for s in active:  # generating sequences: one token each
            if s.prefill_done:
                plan.append((s, 1))
                n += 1
        budget = h.n_batch - n
        for s in active:  # prompts: chunks, within what is left of the batch
            if s.prefill_done or budget <= 0:
                continue
            take = min(len(s.pending), self.prefill_chunk, budget)
            plan.append((s, take))
            n += take
            budget -= take
        self._make_room(n, active)
        plan = [p for p in plan if p[0].req is not None]
        n = 0
        for s, take in plan:
            want_logits = (not s.prefill_done and take == len(s.pending)) or s.prefill_done
            fill_batch(self._addr, n, s.pending[:take], len(s.tokens), s.id, want_logits, h.n_batch)
            n += take
        if n == 0:
            return
        rc = h.decode(n)
        self.steps += 1
        self.max_batch_seqs = max(self.max_batch_seqs, len(plan))
        if rc != 0:
            err = ModelError(f"llama_decode failed with status {rc}", provider="llama")
            for s, _ in plan:
                self._finish(s, "error", err)
            return
        idx = 0
        for s, take in plan:
            fed = s.pending[:take]
            s.tokens.extend(fed)
            del s.pending[:take]
            idx += take
            if s.pending:  # prompt not finished: no sampling yet
                continue
            s.prefill_done = True
            self._sample(s, idx - 1)

    def _sample(self, s: _Slot, idx: int) -> None:
        req = s.req
        assert req is not None
        h = self.h
        tok = h.sample(s.chain, idx)
        g = s.grammar
        if g is not None:
            if not g.allows(tok):
                tok = g.sample_masked(s.chain, idx)
            g.accept(tok)
        if h.is_eog(tok) and not req.ignore_eos:
            self._finish(s, "stop")
            return
        piece = h.piece(tok)
        req.n_generated += 1
        if not req.sink.push(tok, piece):
            self._finish(s, "stop")
            return
        if g is not None and self._json_closed(s, piece):
            self._finish(s, "stop")
            return
        if req.n_generated >= req.max_tokens:
            self._finish(s, "length")
            return
        s.pending = [tok]

    @staticmethod
    def _json_closed(s: _Slot, piece: bytes) -> bool:
        for c in piece:
            if s.in_str:
                if s.escape:
                    s.escape = False
                elif c == 0x5C:  # backslash
                    s.escape = True
                elif c == 0x22:
                    s.in_str = False
            elif c == 0x22:
                s.in_str = True
            elif c in (0x7B, 0x5B):
                s.depth += 1
                s.started = True
            elif c in (0x7D, 0x5D):
                s.depth -= 1
                if s.started and s.depth == 0:
                    return True
        return False

    def _finish(self, s: _Slot, reason: str, error: OpenheimError | None = None) -> None:
        req = s.req
        s.req = None
        s.pending = []
        s.last_used = next(self._clock)
        if s.chain is not None:
            self.h.free_sampler(s.chain)
            s.chain = None
        if s.grammar is not None:
            if req is not None:
                req.full_masks = s.grammar.full_masks
                req.grammar_checks = s.grammar.checks
            s.grammar.close()
            s.grammar = None
        if req is not None:
            self._fail(req, error, reason=reason)

    @staticmethod
    def _fail(req: GenRequest, error: OpenheimError | None, reason: str = "error") -> None:
        req.finish_reason = reason
        req.error = error
        try:
            if error is not None:
                req.sink.fail(error)
            else:
                req.sink.finish(reason)
        finally:
            if req.on_done is not None:
                req.on_done(req)


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i
