"""Local GGUF models on llama.cpp: ``LlamaModel`` (``"llama:/path/model.gguf"``).

One loaded model serves many concurrent agents: requests become sequences of
one shared context and decode together in a native step loop that runs
without the GIL (continuous batching, see ``_llama/engine.py``). Tool calls and structured output are constrained to a
JSON reply format by grammar, checked lazily inside the native loop (the one
sampled token first; candidates are masked only when it is refused) so they
decode at nearly the speed of free text (``_llama/grammar.py``). Text streams through the native
TokenBuffer: never half a UTF-8 character, stop strings caught across tokens.

GPU: pass ``n_gpu_layers`` (``-1`` = all) with a CUDA/Metal build of
llama-cpp-python (``LLAMA_CMAKE_ARGS="-DGGML_CUDA=on" make ...``);
``main_gpu`` picks the device, ``offload_kqv`` (default on) keeps the KV
cache and attention there too, ``flash_attn`` is ``"auto"`` (llama.cpp
decides), ``"on"`` or ``"off"``. These reach llama.cpp unchanged
(``model._handle.model_params`` / ``context_params`` show what it was given);
the native loop is the same on every device.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import uuid
from collections.abc import AsyncIterator

from openheim import telemetry
from openheim.errors import ConfigError, ModelResponseError
from openheim.messages import Message, ToolCall, Usage
from openheim.models.base import (
    FinishReason,
    ModelRequest,
    ModelResponse,
    StreamEvent,
    TextDelta,
)

__all__ = ["LlamaModel"]

_DEFAULT_MAX_TOKENS = 512


class LlamaModel:
    """A GGUF model run in-process by llama.cpp, shared by every agent that uses it.

    ``n_parallel`` sequences decode together; ``n_ctx`` tokens of KV cache are
    shared by them (any one sequence may use all of it). ``sample_threads``
    native threads sample the sequences of a step (default: the cores left
    over by ``n_threads``, at least one; every core when llama.cpp's threads
    sleep between decodes, see ``openheim.models._llama``). Up to
    ``kv_cache_mb`` MiB of host memory keep the KV state of sequences whose
    slot was reused, so a session that returns later does not re-read its
    history (0 turns this off).
    With ``kv_cache_dir`` (an existing directory), states evicted from that
    memory go to files there, up to ``kv_disk_mb`` MiB, and are read back
    when their session returns (the files are removed when the model closes).
    ``n_ubatch`` is llama.cpp's physical batch: by default 32 on a CPU with
    more than 32 parallel sequences, else ``min(n_batch, 512)``. One CPU batch
    of 64 sequences' tokens decodes slower than two of 32: llama.cpp's CPU
    flash attention works on tiles of 64 query rows, and a tile holding 64
    sequences of one unified cache can skip almost none of the cells masked
    for them (measured on the demo model, 64 sequences: 91 against 76 tok/s;
    48 against 26 under load, where 32 sequences made 34-39). A 2,000-token
    prompt prefills as fast in batches of 32 there.
    ``backend_sampling`` (default on) picks greedy tokens inside
    ``llama_decode``: a llama.cpp backend sampler of openheim's runs the
    argmax in ggml's graph threads where the logits lie, so no 4 x vocabulary
    bytes per sequence are copied out and scanned on the host (the same token
    as llama.cpp's CPU greedy sampler: the first of tied maxima). It applies
    where the logits are in host memory (CPU); on a GPU the host reads rows
    as before. Its cost: llama.cpp then keeps a larger output buffer (about
    16 x vocabulary bytes per parallel sequence, 256 MiB for 64 sequences of a
    262k vocabulary, against 64 MiB without).
    """

    def __init__(
        self,
        path: str,
        *,
        n_ctx: int = 4096,
        n_parallel: int = 8,
        n_batch: int = 512,
        n_threads: int | None = None,
        n_gpu_layers: int = 0,
        chat_template: str | None = None,
        prefill_chunk: int = 256,
        context_window: int | None = None,
        sample_threads: int | None = None,
        kv_cache_mb: int = 256,
        kv_cache_dir: str | os.PathLike[str] | None = None,
        kv_disk_mb: int = 4096,
        main_gpu: int = 0,
        offload_kqv: bool = True,
        flash_attn: str = "auto",
        n_ubatch: int | None = None,
        backend_sampling: bool = True,
    ) -> None:
        from openheim.models._llama.bindings import LlamaHandle
        from openheim.models._llama.engine import Engine
        from openheim.models._llama.template import PromptRenderer

        if n_parallel < 1 or n_ctx < 16 or n_batch < 1:
            raise ConfigError(
                f"LlamaModel needs n_parallel ≥ 1, n_ctx ≥ 16, n_batch ≥ 1 "
                f"(got {n_parallel}, {n_ctx}, {n_batch})"
            )
        self.path = os.fspath(path)
        self._handle = LlamaHandle(
            self.path,
            n_ctx=n_ctx,
            n_batch=n_batch,
            n_seq_max=n_parallel,
            n_threads=n_threads or os.cpu_count() or 1,
            n_gpu_layers=n_gpu_layers,
            main_gpu=main_gpu,
            offload_kqv=offload_kqv,
            flash_attn=flash_attn,
            n_ubatch=n_ubatch,
        )
        h = self._handle
        template = chat_template or h.meta("tokenizer.chat_template")
        bos = h.token_text(h.bos) if h.bos >= 0 else ""
        eos = h.token_text(h.eos) if h.eos >= 0 else ""
        self.renderer = PromptRenderer(template, bos=bos, eos=eos)
        if sample_threads is None:
            from openheim.models._llama import llama_threads_sleep

            cores = os.cpu_count() or 1
            if llama_threads_sleep():
                # llama.cpp's threads sleep after each decode: every core is
                # free while the step's sequences are sampled.
                sample_threads = max(1, min(8, cores))
            else:
                # Its threads keep spinning after each decode: only the cores
                # they leave free.
                threads = n_threads or cores
                sample_threads = max(1, min(8, cores - threads + 1))
        self.engine = Engine(
            h,
            prefill_chunk=prefill_chunk,
            sample_threads=sample_threads,
            kv_cache_bytes=kv_cache_mb << 20,
            kv_dir=os.fspath(kv_cache_dir) if kv_cache_dir is not None else None,
            kv_disk_bytes=kv_disk_mb << 20 if kv_cache_dir is not None else 0,
            backend_sampling=backend_sampling,
        )
        self._context_window = context_window or h.n_ctx
        self._name = f"llama:{os.path.basename(self.path)}"

    @property
    def name(self) -> str:
        return self._name

    @property
    def context_window(self) -> int | None:
        return self._context_window

    def __repr__(self) -> str:
        return f"LlamaModel({self.path!r}, n_parallel={self._handle.n_seq_max})"

    # -- prompt ------------------------------------------------------------------------

    def _prepare(self, request: ModelRequest) -> tuple[list[int], str | None]:
        from openheim.models._llama.grammar import schema_to_gbnf
        from openheim.models._llama.protocol import reply_schema

        tools = request.tools if request.tool_choice != "none" else []
        if request.tool_choice not in ("auto", "required", "none"):
            tools = [t for t in tools if t.name == request.tool_choice]
            if not tools:
                raise ConfigError(f"tool_choice names an unknown tool {request.tool_choice!r}")
        constrained = bool(tools) or request.output_schema is not None
        prompt = self.renderer.render(
            request.messages,
            tools=tools,
            output_schema=request.output_schema,
            constrained=constrained,
        )
        tokens = self._handle.tokenize(prompt, add_special=True)
        gbnf = None
        if constrained:
            allow_answer = request.tool_choice in ("auto", "none") or not tools
            gbnf = schema_to_gbnf(
                reply_schema(tools, request.output_schema, allow_answer=allow_answer)
            )
        return tokens, gbnf

    # -- the Model protocol --------------------------------------------------------------

    async def request(self, request: ModelRequest) -> ModelResponse:
        response: ModelResponse | None = None
        async for event in self.stream(request):
            if isinstance(event, ModelResponse):
                response = event
        assert response is not None
        return response

    def stream(self, request: ModelRequest) -> AsyncIterator[StreamEvent]:
        return telemetry.chat_stream(self._stream(request), self._name, request)

    async def _stream(self, request: ModelRequest) -> AsyncIterator[StreamEvent]:
        from openheim.models._llama.engine import GenRequest
        from openheim.models._llama.protocol import ReplyParser, parse_reply

        loop = asyncio.get_running_loop()
        tokens, gbnf = await loop.run_in_executor(None, self._prepare, request)
        from openheim._core import TokenBuffer

        s = request.settings
        buffer = TokenBuffer(stop=tuple(s.stop or ()))
        gen = GenRequest(
            tokens,
            buffer=buffer,
            max_tokens=s.max_tokens or _DEFAULT_MAX_TOKENS,
            temperature=0.0 if s.temperature is None else s.temperature,
            top_p=s.top_p,
            seed=s.seed,
            gbnf=gbnf,
        )
        call_id = f"call_{uuid.uuid4().hex[:16]}"
        parser = ReplyParser(call_id) if gbnf else None
        self.engine.submit(gen)
        reader = buffer.reader()
        text_parts: list[str] = []
        answer_parts: list[str] = []  # the answer text a constrained reply has streamed
        try:
            async for chunk in reader:
                text_parts.append(chunk)
                if parser is None:
                    yield TextDelta(chunk)
                else:
                    for ev in parser.feed(chunk):
                        if isinstance(ev, TextDelta):
                            answer_parts.append(ev.text)
                        yield ev
        except BaseException:
            gen.cancel()
            raise
        text = "".join(text_parts)
        usage = Usage(input_tokens=len(tokens), output_tokens=gen.n_generated, requests=1)
        finish: FinishReason = "length" if gen.finish_reason == "length" else "stop"
        if gbnf is None:
            yield ModelResponse(Message.assistant(text), usage, finish, self._name)
            return
        try:
            kind, value = parse_reply(text)
        except ValueError as exc:
            if finish == "length":
                # Cut by max_tokens: the answer so far, as the OpenAI API gives it.
                partial = Message.assistant("".join(answer_parts))
                yield ModelResponse(partial, usage, "length", self._name)
                return
            raise ModelResponseError(
                f"the constrained reply did not complete ({gen.finish_reason}): "
                f"{text[:200]!r}; raise max_tokens",
                provider="llama",
            ) from exc
        if kind == "tool":
            name, args = value
            msg = Message.assistant(None, [ToolCall(name, args, call_id)])
            yield ModelResponse(msg, usage, "tool_calls", self._name)
        else:
            content = (
                value
                if isinstance(value, str) and request.output_schema is None
                else json.dumps(value)
            )
            yield ModelResponse(Message.assistant(content), usage, finish, self._name)

    async def aclose(self) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self.close)

    def close(self) -> None:
        engine = getattr(self, "engine", None)
        if engine is not None:
            engine.close()
            self.engine = None  # type: ignore[assignment]
        handle = getattr(self, "_handle", None)
        if handle is not None:
            handle.close()

    def __del__(self) -> None:  # a forgotten model must not keep its decode thread alive
        with contextlib.suppress(Exception):
            self.close()
