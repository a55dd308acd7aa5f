"""The llama.cpp C API as openheim uses it, through llama-cpp-python's ctypes layer.

llama-cpp-python loads ``libllama`` and declares its functions with ctypes,
which releases the GIL for the duration of every call, so a decode step runs
while the event loop keeps serving. This module is the one place that touches
those functions: the rest of the connector talks to :class:`LlamaHandle`.

Checked against llama-cpp-python 0.3.x (the ``local`` extra pins ``<0.4``).
"""

from __future__ import annotations

import ctypes
import os
import threading
from typing import Any

import llama_cpp as lc
import numpy as np

from openheim.errors import ConfigError, ModelError

__all__ = ["TOKEN_DATA", "LlamaHandle"]

# One llama_token_data as numpy sees it (id, logit, p), for whole-vocabulary masks.
TOKEN_DATA = np.dtype([("id", "<i4"), ("logit", "<f4"), ("p", "<f4")])

_backend_lock = threading.Lock()
_backend_ready = False


def _init_backend() -> None:
    global _backend_ready
    with _backend_lock:
        if not _backend_ready:
            lc.llama_backend_init()
            _backend_ready = True


def _amx_build() -> bool:
    """True if this llama.cpp build multiplies on Intel AMX tiles.

    Its AMX kernels crash on some virtual machines (seen with q4_K weights), so
    weights stay in plain CPU buffers there unless OPENHEIM_LLAMA_AMX=1. The
    Makefile builds llama-cpp-python without AMX, which keeps weight repacking.
    """
    if os.environ.get("OPENHEIM_LLAMA_AMX") == "1":
        return False
    return b"AMX_INT8 = 1" in lc.llama_print_system_info()


def _silence_logs() -> None:
    # llama.cpp logs every tensor at load; keep stderr for real errors.
    if os.environ.get("OPENHEIM_LLAMA_VERBOSE") == "1":
        return
    lc.llama_log_set(_LOG_CB, ctypes.c_void_p(0))


@lc.llama_log_callback  # type: ignore[untyped-decorator]
def _LOG_CB(level: int, text: bytes, user_data: Any) -> None:
    """Drop llama.cpp's log lines; failures reach us as return codes."""


class LlamaHandle:
    """A loaded model and its one shared context (many sequences)."""

    def __init__(
        self,
        path: str,
        *,
        n_ctx: int,
        n_batch: int,
        n_seq_max: int,
        n_threads: int,
        n_gpu_layers: int,
    ) -> None:
        if not os.path.isfile(path):
            raise ConfigError(f"no GGUF model file at {path!r}: give the path of a .gguf file")
        _init_backend()
        _silence_logs()
        mparams = lc.llama_model_default_params()
        mparams.n_gpu_layers = n_gpu_layers
        if _amx_build():
            mparams.use_extra_bufts = False
        self.model = lc.llama_model_load_from_file(path.encode(), mparams)
        if not self.model:
            raise ConfigError(
                f"llama.cpp could not load {path!r}: is it a valid GGUF file for this llama.cpp build?"
            )
        cparams = lc.llama_context_default_params()
        cparams.n_ctx = n_ctx
        cparams.n_batch = n_batch
        cparams.n_ubatch = min(n_batch, 512)
        cparams.n_seq_max = n_seq_max
        cparams.n_threads = n_threads
        cparams.n_threads_batch = n_threads
        cparams.kv_unified = True  # sequences share the cache: any one may use it all
        cparams.swa_full = True  # lets a sequence's cache be cut back for prompt reuse
        cparams.no_perf = True
        self.ctx = lc.llama_init_from_model(self.model, cparams)
        if not self.ctx:
            lc.llama_model_free(self.model)
            raise ModelError(f"llama.cpp could not create a context for {path!r} (n_ctx={n_ctx})")
        self.vocab = lc.llama_model_get_vocab(self.model)
        self.memory = lc.llama_get_memory(self.ctx)
        self.n_vocab = lc.llama_vocab_n_tokens(self.vocab)
        self.n_ctx = lc.llama_n_ctx(self.ctx)
        self.n_batch = n_batch
        self.n_seq_max = n_seq_max
        self.batch = lc.llama_batch_init(n_batch, 0, 1)
        self._piece_cache: dict[int, bytes] = {}
        self._piece_buf = ctypes.create_string_buffer(256)

    # -- metadata and text --------------------------------------------------------

    def meta(self, key: str) -> str | None:
        size = 1 << 16
        buf = ctypes.create_string_buffer(size)
        n = lc.llama_model_meta_val_str(self.model, key.encode(), buf, size)
        if n < 0:
            return None
        if n >= size:
            buf = ctypes.create_string_buffer(n + 1)
            lc.llama_model_meta_val_str(self.model, key.encode(), buf, n + 1)
        return buf.value.decode("utf-8", "replace")

    def tokenize(self, text: str, *, add_special: bool = True) -> list[int]:
        data = text.encode("utf-8")
        cap = len(data) + 16
        arr = (lc.llama_token * cap)()
        n = lc.llama_tokenize(self.vocab, data, len(data), arr, cap, add_special, True)
        if n < 0:
            cap = -n
            arr = (lc.llama_token * cap)()
            n = lc.llama_tokenize(self.vocab, data, len(data), arr, cap, add_special, True)
        return list(arr[:n])

    def piece(self, token: int) -> bytes:
        cached = self._piece_cache.get(token)
        if cached is not None:
            return cached
        n = lc.llama_token_to_piece(self.vocab, token, self._piece_buf, 256, 0, False)
        out = self._piece_buf.raw[:n] if n > 0 else b""
        self._piece_cache[token] = out
        return out

    def complete_utf8(self) -> Any:
        """Bool per token: its bytes are whole UTF-8 characters on their own.

        Constrained replies use only these, so a reply is valid UTF-8 and every
        length the schema counts is a length in characters. Computed once per
        model, on first use.
        """
        mask = getattr(self, "_complete_utf8", None)
        if mask is None:
            from openheim._core import whole_utf8_mask

            fn = ctypes.cast(lc.llama_token_to_piece, ctypes.c_void_p).value or 0
            vocab = ctypes.cast(self.vocab, ctypes.c_void_p).value or 0
            raw = whole_utf8_mask(fn, vocab, self.n_vocab)
            mask = np.frombuffer(raw, dtype=np.uint8).astype(bool)
            self._complete_utf8 = mask
        return mask

    def token_text(self, token: int) -> str:
        buf = ctypes.create_string_buffer(256)
        n = lc.llama_token_to_piece(self.vocab, token, buf, 256, 0, True)
        return buf.raw[: max(n, 0)].decode("utf-8", "replace")

    def is_eog(self, token: int) -> bool:
        return bool(lc.llama_vocab_is_eog(self.vocab, token))

    @property
    def bos(self) -> int:
        return int(lc.llama_vocab_bos(self.vocab))

    @property
    def eos(self) -> int:
        return int(lc.llama_vocab_eos(self.vocab))

    # -- cache ------------------------------------------------------------------------

    def seq_rm(self, seq: int, p0: int, p1: int = -1) -> bool:
        return bool(lc.llama_memory_seq_rm(self.memory, seq, p0, p1))

    # -- batches ------------------------------------------------------------------

    def batch_addresses(self) -> tuple[int, int, int, int, int]:
        b = self.batch
        return (
            ctypes.cast(b.token, ctypes.c_void_p).value or 0,
            ctypes.cast(b.pos, ctypes.c_void_p).value or 0,
            ctypes.cast(b.n_seq_id, ctypes.c_void_p).value or 0,
            ctypes.cast(b.seq_id, ctypes.c_void_p).value or 0,
            ctypes.cast(b.logits, ctypes.c_void_p).value or 0,
        )

    def decode(self, n_tokens: int) -> int:
        self.batch.n_tokens = n_tokens
        return int(lc.llama_decode(self.ctx, self.batch))

    def logits(self, idx: int) -> Any:
        ptr = lc.llama_get_logits_ith(self.ctx, idx)
        return np.ctypeslib.as_array(ptr, shape=(self.n_vocab,))

    # -- sampling -------------------------------------------------------------------

    def make_chain(
        self, *, temperature: float, top_p: float | None, top_k: int, seed: int | None
    ) -> Any:
        chain = lc.llama_sampler_chain_init(lc.llama_sampler_chain_default_params())
        if temperature <= 0:
            lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_greedy())
            return chain
        if top_k > 0:
            lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_top_k(top_k))
        if top_p is not None and top_p < 1.0:
            lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_top_p(top_p, 1))
        lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_temp(temperature))
        s = seed if seed is not None else int.from_bytes(os.urandom(4), "little")
        lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_dist(s & 0xFFFFFFFF))
        return chain

    def make_grammar(self, gbnf: str) -> Any:
        smpl = lc.llama_sampler_init_grammar(self.vocab, gbnf.encode(), b"root")
        if not smpl:
            raise ModelError("llama.cpp rejected the grammar built from the JSON schema")
        return smpl

    def sample(self, chain: Any, idx: int) -> int:
        return int(lc.llama_sampler_sample(chain, self.ctx, idx))

    def apply(self, smpl: Any, arr: Any) -> None:
        lc.llama_sampler_apply(smpl, ctypes.byref(arr))

    def accept(self, smpl: Any, token: int) -> None:
        lc.llama_sampler_accept(smpl, token)

    def free_sampler(self, smpl: Any) -> None:
        if smpl:
            lc.llama_sampler_free(smpl)

    def close(self) -> None:
        if getattr(self, "batch", None) is not None:
            lc.llama_batch_free(self.batch)
            self.batch = None
        if getattr(self, "ctx", None):
            lc.llama_free(self.ctx)
            self.ctx = None
        if getattr(self, "model", None):
            lc.llama_model_free(self.model)
            self.model = None


def token_data_array(data: Any) -> Any:
    """A llama_token_data_array over a numpy TOKEN_DATA buffer (no copy)."""
    arr = lc.llama_token_data_array()
    arr.data = data.ctypes.data_as(lc.llama_token_data_p)
    arr.size = len(data)
    arr.selected = -1
    arr.sorted = False
    return arr
