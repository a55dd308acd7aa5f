"""The HTTP routes, one module per area; each route takes its state from ``request.app.state``."""

from __future__ import annotations

from starlette.routing import Route

from openheim.server.routes import approvals, docs, health, models, openai, runs, sessions

__all__ = ["ROUTES"]

ROUTES: list[Route] = [
    *docs.ROUTES,
    *health.ROUTES,
    *models.ROUTES,
    *openai.ROUTES,
    *runs.ROUTES,
    *approvals.ROUTES,
    *sessions.ROUTES,
]
