"""Liveness, readiness, Prometheus metrics and the OpenAPI document (no key needed)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from openheim.server._http import json_response, metrics_of, state_of
from openheim.server._openapi import openapi_document
from openheim.server._schemas import Status

PUBLIC = frozenset({"/", "/docs", "/healthz", "/readyz", "/metrics", "/openapi.json"})


async def healthz(request: Request) -> Response:
    return json_response(Status("ok"))


async def readyz(request: Request) -> Response:
    state = state_of(request)
    if not state.accepting:
        return json_response(Status("shutting down"), 503)
    if state.loading:
        return json_response(Status("loading"), 503)
    return json_response(Status("ready"))


async def metrics(request: Request) -> Response:
    body, content_type = metrics_of(request).render()
    return Response(body, media_type=content_type)


async def openapi(request: Request) -> Response:
    state = state_of(request)
    return json_response(
        openapi_document(
            tuple(state.config.agents),
            tuple(state.proxied_models()),
            tuple(state.config.workflow_names()),
        )
    )


ROUTES = [
    Route("/healthz", healthz, methods=["GET"]),
    Route("/readyz", readyz, methods=["GET"]),
    Route("/metrics", metrics, methods=["GET"]),
    Route("/openapi.json", openapi, methods=["GET"]),
]
