"""``GET /v1/models``: the configured agents, as OpenAI models."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from openheim.server._http import json_response, state_of
from openheim.server._schemas import ModelCard, ModelList


async def list_models(request: Request) -> Response:
    state = state_of(request)
    names = [*state.config.agents, *state.proxied_models()]
    return json_response(ModelList([ModelCard(name) for name in names]))


ROUTES = [Route("/v1/models", list_models, methods=["GET"])]
