"""The llama.cpp C API as openheim uses it.

Loading, tokenizing and building samplers go through llama-cpp-python's ctypes
layer (ctypes releases the GIL for the duration of every call). The decode
loop itself is native (``openheim._core.LlamaEngine``): it looks up the few
functions it calls with ``dlsym`` in the very libllama llama-cpp-python loaded,
and :func:`check_native_abi` compares the structs and signatures it was
compiled with against llama-cpp-python's ctypes declarations before it starts.

Checked against llama-cpp-python 0.3.36 (``LLAMA_CPP_PYTHON_VERSION``, the
``local`` extra pins ``<0.4``); another version runs only if every checked
layout and signature still matches.
"""

from __future__ import annotations

import ctypes
import logging
import os
import threading
from typing import Any

import llama_cpp as lc

from openheim.errors import ConfigError, ModelError

__all__ = ["LlamaHandle", "capture_log", "check_native_abi"]

log = logging.getLogger("openheim.llama")

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


# While a list is set here, llama.cpp's log lines are appended to it (tests
# read what llama.cpp was told, e.g. its context parameters); else dropped.
_log_sink: list[str] | None = None


@lc.llama_log_callback  # type: ignore[untyped-decorator]
def _LOG_CB(level: int, text: bytes, user_data: Any) -> None:
    """Drop llama.cpp's log lines; failures reach us as return codes."""
    sink = _log_sink
    if sink is not None:
        sink.append(text.decode("utf-8", "replace"))


class capture_log:
    """``with capture_log() as lines:`` collects llama.cpp's log lines meanwhile."""

    def __enter__(self) -> list[str]:
        global _log_sink
        self.lines: list[str] = []
        _log_sink = self.lines
        return self.lines

    def __exit__(self, *exc: object) -> None:
        global _log_sink
        _log_sink = None


_FLASH_ATTN = {"auto": -1, "off": 0, "on": 1}


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
        main_gpu: int = 0,
        offload_kqv: bool = True,
        flash_attn: str = "auto",
        n_ubatch: int | None = None,
    ) -> None:
        if not os.path.isfile(path):
            raise ConfigError(f"no GGUF model file at {path!r}: give the path of a .gguf file")
        if flash_attn not in _FLASH_ATTN:
            raise ConfigError(f"flash_attn must be one of 'auto', 'on', 'off', got {flash_attn!r}")
        if main_gpu < 0:
            raise ConfigError(f"main_gpu must be a device index ≥ 0, got {main_gpu}")
        _init_backend()
        _silence_logs()
        mparams = lc.llama_model_default_params()
        mparams.n_gpu_layers = n_gpu_layers  # -1: all layers
        mparams.main_gpu = main_gpu
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
        if n_ubatch is None:
            # On a CPU, one physical batch holding more than 32 sequences'
            # tokens decodes slower than two of 32 (measured on the demo
            # model: 64 sequences fell below 32); a GPU wants large batches.
            n_ubatch = 32 if n_gpu_layers == 0 and n_seq_max > 32 else 512
        cparams.n_ubatch = min(n_batch, n_ubatch)
        cparams.n_seq_max = n_seq_max
        cparams.n_threads = n_threads
        cparams.n_threads_batch = n_threads
        cparams.kv_unified = True  # sequences share the cache: any one may use it all
        cparams.swa_full = True  # lets a sequence's cache be cut back for prompt reuse
        cparams.no_perf = True
        cparams.offload_kqv = offload_kqv  # the KV cache and attention on the GPU too
        cparams.flash_attn_type = _FLASH_ATTN[flash_attn]
        # What llama.cpp was given (read by tests and `make bench-local`).
        self.model_params = mparams
        self.context_params = cparams
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

    # -- the native loop ---------------------------------------------------------

    def addresses(self) -> tuple[int, int, int, int]:
        """(libllama dlopen handle, llama_context *, llama_vocab *, llama_memory_t)."""
        lib = lc.llama_cpp._lib._handle

        def addr(p: Any) -> int:
            return ctypes.cast(p, ctypes.c_void_p).value or 0

        return int(lib), addr(self.ctx), addr(self.vocab), addr(self.memory)

    # -- sampling -------------------------------------------------------------------

    def make_chain(
        self,
        *,
        temperature: float,
        top_p: float | None,
        top_k: int,
        seed: int | None,
        min_p: float | None = None,
    ) -> int:
        """A llama.cpp sampler chain, as llama-cpp-python's ``Llama`` orders it:
        top-k, top-p, min-p, temperature, dist (its no-op stages left out).
        Returns the address (the native loop frees it)."""
        params = lc.llama_sampler_chain_default_params()
        params.no_perf = True
        chain = lc.llama_sampler_chain_init(params)
        if temperature <= 0:
            lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_greedy())
            return _addr(chain)
        if top_k > 0:
            lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_top_k(top_k))
        if top_p is not None and top_p < 1.0:
            lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_top_p(top_p, 1))
        if min_p is not None and min_p > 0.0:
            lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_min_p(min_p, 1))
        lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_temp(temperature))
        s = seed if seed is not None else int.from_bytes(os.urandom(4), "little")
        lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_dist(s & 0xFFFFFFFF))
        return _addr(chain)

    def make_grammar(self, gbnf: str) -> int:
        smpl = lc.llama_sampler_init_grammar(self.vocab, gbnf.encode(), b"root")
        if not smpl:
            raise ModelError("llama.cpp rejected the grammar built from the JSON schema")
        return _addr(smpl)

    @staticmethod
    def free_sampler(addr: int) -> None:
        if addr:
            lc.llama_sampler_free(ctypes.c_void_p(addr))

    def close(self) -> None:
        if getattr(self, "ctx", None):
            lc.llama_free(self.ctx)
            self.ctx = None
        if getattr(self, "model", None):
            lc.llama_model_free(self.model)
            self.model = None


def _addr(p: Any) -> int:
    return ctypes.cast(p, ctypes.c_void_p).value or 0


# What the native loop was compiled with: ctypes sizes of each function's
# result (None: void) and arguments, as llama-cpp-python 0.3.36 declares them.
_SIGNATURES: dict[str, tuple[int | None, tuple[int, ...]]] = {
    "llama_decode": (4, (8, 56)),
    "llama_get_logits_ith": (8, (8, 4)),
    "llama_sampler_apply": (None, (8, 8)),
    "llama_sampler_accept": (None, (8, 4)),
    "llama_sampler_free": (None, (8,)),
    "llama_memory_seq_rm": (1, (8, 4, 4, 4)),
    "llama_token_to_piece": (4, (8, 4, 8, 4, 4, 1)),
    "llama_vocab_is_eog": (1, (8, 4)),
    "llama_batch_init": (56, (4, 4, 4)),
    "llama_batch_free": (None, (56,)),
    "llama_state_seq_get_size": (8, (8, 4)),
    "llama_state_seq_get_data": (8, (8, 8, 8, 4)),
    "llama_state_seq_set_data": (8, (8, 8, 8, 4)),
    "llama_sampler_init": (8, (8, 8)),
    "llama_sampler_chain_init": (8, (1,)),
    "llama_sampler_chain_add": (None, (8, 8)),
    "llama_set_sampler": (1, (8, 4, 8)),
    "llama_synchronize": (None, (8,)),
}
_STRUCTS = {
    "llama_batch": "llama_batch",
    "llama_token_data": "llama_token_data",
    "llama_token_data_array": "llama_token_data_array",
    "llama_sampler_chain_params": "llama_sampler_chain_params",
    "llama_sampler_data": "llama_sampler_data",
    "llama_sampler_i": "llama_sampler_i",
    "llama_sampler": "llama_sampler",
}
_abi_checked = False


def _size(t: Any) -> int | None:
    return None if t is None else ctypes.sizeof(t)


def check_native_abi() -> None:
    """Refuse to start the native loop if llama-cpp-python's C API differs from its build.

    Compares the size and every field offset of the structs the loop shares
    with libllama, and the argument and result sizes of every function it
    calls, with llama-cpp-python's ctypes declarations.
    """
    global _abi_checked
    if _abi_checked:
        return
    from openheim._core import LLAMA_CPP_PYTHON_VERSION, llama_api_names, llama_layout

    installed = getattr(lc, "__version__", "?")
    hint = (
        f"openheim's native llama loop was checked against llama-cpp-python "
        f"{LLAMA_CPP_PYTHON_VERSION}, the installed one is {installed}: "
        f"pip install llama-cpp-python=={LLAMA_CPP_PYTHON_VERSION}"
    )
    problems: list[str] = []
    for name, ours in _STRUCTS.items():
        ct = getattr(lc, ours, None)
        if ct is None:
            problems.append(f"llama_cpp has no {ours}")
            continue
        if ctypes.sizeof(ct) != llama_layout(name):
            problems.append(
                f"sizeof({name}) is {ctypes.sizeof(ct)} in llama_cpp, {llama_layout(name)} in openheim"
            )
        fields = [f[0] for f in ct._fields_]
        for field in fields:
            theirs, mine = getattr(ct, field).offset, llama_layout(name, field)
            if theirs != mine:
                problems.append(
                    f"{name}.{field} is at offset {theirs} in llama_cpp, {mine} in openheim"
                )
    for fname in llama_api_names():
        fn = getattr(lc, fname, None)
        if fn is None or not hasattr(fn, "argtypes"):
            problems.append(f"llama_cpp does not declare {fname}")
            continue
        want = _SIGNATURES[fname]
        got = (_size(fn.restype), tuple(ctypes.sizeof(a) for a in fn.argtypes))
        if got != want:
            problems.append(f"{fname} takes/returns sizes {got} in llama_cpp, {want} in openheim")
    if problems:
        raise ModelError(f"{hint}; mismatches: " + "; ".join(problems), provider="llama")
    if installed != LLAMA_CPP_PYTHON_VERSION:
        log.warning("%s (layouts and signatures still match, continuing)", hint)
    _abi_checked = True
