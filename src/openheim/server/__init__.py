"""The HTTP server (OpenAI-compatible, agent runs, sessions) and the gRPC service.

``create_app(config)`` is the ASGI app; ``serve(config, ...)`` runs it on
uvicorn (and the gRPC service when a gRPC port is given) until SIGINT/SIGTERM,
reloading the config file on SIGHUP.
"""

from __future__ import annotations

import asyncio
from typing import Any

from openheim.config import Config

__all__ = ["create_app", "serve"]


def create_app(config: Config) -> Any:
    """The ASGI application for ``config``."""
    from openheim.server._app import create_app as _create

    return _create(config)


def serve(
    config: Config,
    *,
    host: str | None = None,
    port: int | None = None,
    grpc_port: int | None = None,
    config_path: str | None = None,
    allow_unauthenticated: bool = False,
    log_level: str = "info",
    log_format: str = "text",
) -> int:
    """Serve until interrupted; returns the exit code.

    Every agent is built (tools imported, models loaded) for every tenant
    before ``/readyz`` answers 200; if one fails, the config error is logged
    and the exit code is 2. A non-loopback ``host`` without
    ``[[server.api_keys]]`` is refused (a ConfigError) unless
    ``allow_unauthenticated``, and then warned about. Requests are logged at
    info level, as text or JSON lines (``log_format``).
    """
    from openheim.server._logging import setup
    from openheim.server._serve import check_exposure, run

    setup(log_level, log_format)
    check_exposure(config, host or config.server.host, allow_unauthenticated)
    return asyncio.run(
        run(
            config,
            host or config.server.host,
            port if port is not None else config.server.port,
            grpc_port if grpc_port is not None else config.server.grpc_port,
            config_path,
            log_level,
        )
    )
