"""``POST /v1/chat/completions``: agents (and listed provider models) as OpenAI models.

The wire conversions live in ``server/_openai.py``; this module picks the mode
(agent run, model proxy) and answers.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from openheim.messages import Message, Usage
from openheim.models.base import ModelRequest, ModelSettings
from openheim.server import _openai as oa
from openheim.server._http import (
    chat_stream,
    error_response,
    failure,
    json_response,
    state_of,
    tenant_of,
    too_many,
    unavailable,
)
from openheim.server._state import ServerState, TooManyRuns
from openheim.server._wire import BadRequest, json_encode, shown

if TYPE_CHECKING:
    from openheim.agent import Agent, AgentEvent
    from openheim.models import Model


async def chat_completions(request: Request) -> Response:
    state = state_of(request)
    tenant = tenant_of(request)
    busy = unavailable(state)
    if busy is not None:
        return busy
    try:
        req = oa.parse_request(await request.body())
        if state.is_proxied(req.model):
            # "<provider>:<model>" listed in [providers.NAME].models: a plain model proxy.
            return await _proxy(state, tenant, None, req, oa.to_model_request(req))
        if req.model not in state.config.agents:
            return error_response(
                404,
                f"the model {shown(req.model)} does not exist; GET /v1/models lists them",
                param="model",
                code="model_not_found",
            )
        agent = state.chat_agent(tenant, req.model)
        if oa.proxy_mode(req):
            return await _proxy(state, tenant, agent.model, req, oa.to_model_request(req))
        messages = oa.to_messages(req.messages)
    except BadRequest as exc:
        return error_response(400, str(exc), param=exc.param)
    except Exception as exc:
        return failure(exc, "chat completion")
    if messages[-1].role != "user":
        return error_response(400, "the last message must be from the user", param="messages")
    return await _agent_chat(state, tenant, agent, req, messages)


async def _proxy(
    state: ServerState,
    tenant: str,
    model: Model | None,
    req: oa.ChatRequest,
    mreq: ModelRequest,
) -> Response:
    """``model`` answers ``mreq`` (None: the listed provider model ``req.model``)."""
    try:
        state.acquire(tenant)
    except TooManyRuns:
        return too_many(state)
    proxied = model is None
    if model is None:
        try:
            model = await state.provider_model(req.model)
        except BaseException:
            state.release(tenant)
            raise
    held: Model = model

    async def done() -> None:
        state.release(tenant)
        if proxied:
            await state.release_model(held)

    what = f"model call to {shown(req.model)}"
    cid = oa.new_id()
    if req.stream:
        include = req.stream_options is not None and req.stream_options.include_usage
        return chat_stream(oa.proxy_stream(held, mreq, cid, req.model, include), what, done)
    try:
        res = await held.request(mreq)
    except Exception as exc:
        return failure(exc, what)
    finally:
        await done()
    return json_response(oa.completion(cid, req.model, res.message, res.finish_reason, res.usage))


def _finish(last_turn: Usage | None, settings: ModelSettings) -> str:
    """``"length"`` when the answering model turn used all of ``max_tokens``."""
    limit = settings.max_tokens
    cut = limit is not None and last_turn is not None and last_turn.output_tokens >= limit
    return "length" if cut else "stop"


async def _agent_chat(
    state: ServerState, tenant: str, agent: Agent, req: oa.ChatRequest, messages: list[Message]
) -> Response:
    from openheim.agent import Done, TextDelta, UsageEvent, result_of

    try:
        state.acquire(tenant)
    except TooManyRuns:
        return too_many(state)
    # The client's conversation is the run's history: nothing is stored.
    earlier = messages[:-1]
    prompt = messages[-1].content or ""
    cid = oa.new_id()
    what = f"agent {agent.name!r}"
    # The request's sampling settings win over the agent's, as OpenAI's API promises.
    settings = oa.settings(req)
    effective = agent.model_settings.merged(settings)

    async def done() -> None:
        state.release(tenant)

    if req.stream:
        include = req.stream_options is not None and req.stream_options.include_usage

        async def events() -> AsyncIterator[bytes]:
            yield oa.chunk(cid, req.model, {"role": "assistant", "content": ""})
            last: Usage | None = None
            async for ev in agent.stream(prompt, message_history=earlier, model_settings=settings):
                if type(ev) is TextDelta:
                    yield oa.chunk(cid, req.model, {"content": ev.text})
                elif type(ev) is UsageEvent:
                    last = ev.usage
                elif type(ev) is Done:
                    out = ev.result.output
                    if not isinstance(out, str) and out is not None:
                        yield oa.chunk(cid, req.model, {"content": json_encode(out).decode()})
                    yield oa.chunk(cid, req.model, {}, _finish(last, effective))
                    if include:
                        yield oa.usage_chunk(cid, req.model, ev.result.usage)
            yield oa.DONE

        return chat_stream(events(), what, done)
    last: Usage | None = None

    async def watched() -> AsyncIterator[AgentEvent]:
        nonlocal last
        async for ev in agent.stream(prompt, message_history=earlier, model_settings=settings):
            if type(ev) is UsageEvent:
                last = ev.usage
            yield ev

    try:
        result = await result_of(watched())
    except Exception as exc:
        return failure(exc, what)
    finally:
        await done()
    out = result.output
    text = out if isinstance(out, str) or out is None else json_encode(out).decode()
    return json_response(
        oa.completion(
            cid, req.model, Message("assistant", text), _finish(last, effective), result.usage
        )
    )


ROUTES = [Route("/v1/chat/completions", chat_completions, methods=["POST"])]
