"""``GET /v1/models``: the configured agents, as OpenAI models."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from openheim.server._http import json_response, state_of


async def list_models(request: Request) -> Response:
    data = [
        {"id": name, "object": "model", "created": 0, "owned_by": "openheim"}
        for name in state_of(request).config.agents
    ]
    return json_response({"object": "list", "data": data})


ROUTES = [Route("/v1/models", list_models, methods=["GET"])]
