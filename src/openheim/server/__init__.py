"""The HTTP server (OpenAI-compatible, agent runs, sessions) and the gRPC service.

``create_app(config)`` is the ASGI app; ``serve(config, ...)`` runs it on
uvicorn (and the gRPC service when a gRPC port is given) until SIGINT/SIGTERM,
reloading the config file on SIGHUP.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import signal
import sys
from typing import Any

from openheim.config import Config, load_config
from openheim.errors import ConfigError

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
) -> int:
    """Serve until interrupted; returns the exit code.

    A non-loopback ``host`` without ``[[server.api_keys]]`` is refused (a
    ConfigError) unless ``allow_unauthenticated``, and then warned about.
    """
    check_exposure(config, host or config.server.host, allow_unauthenticated)
    return asyncio.run(
        _serve(
            config,
            host,
            port,
            grpc_port if grpc_port is not None else config.server.grpc_port,
            config_path,
        )
    )


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


def check_exposure(config: Config, host: str, allow_unauthenticated: bool) -> None:
    """Refuse (or, when allowed, warn about) an open server on a non-loopback address."""
    if config.server.api_keys or _is_loopback(host):
        return
    if not allow_unauthenticated:
        raise ConfigError(
            f"refusing to serve on {host} without API keys: anyone who can reach it could run "
            "your agents. Add [[server.api_keys]] to the config (see the README), serve on "
            "127.0.0.1, or pass --allow-unauthenticated if the network is trusted"
        )
    print(
        f"openheim: warning: serving on {host} without API keys (--allow-unauthenticated): "
        "anyone who can reach this address can run the agents",
        file=sys.stderr,
    )


async def _serve(
    config: Config,
    host: str | None,
    port: int | None,
    grpc_port: int | None,
    config_path: str | None,
) -> int:
    import uvicorn

    from openheim.server._app import create_app as _create

    app = _create(config)
    state = app.state
    s = config.server
    uconfig = uvicorn.Config(
        app,
        host=host or s.host,
        port=port if port is not None else s.port,
        lifespan="on",
        log_level="warning",
        timeout_graceful_shutdown=int(s.shutdown_grace) or None,
    )

    class _Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            # Readiness fails from the first signal on, so balancers stop sending work.
            state.accepting = False
            super().handle_exit(sig, frame)

    server = _Server(uconfig)
    grpc_server = None
    if grpc_port is not None:
        from openheim.server._grpc import start_grpc

        grpc_server = await start_grpc(state, host or s.host, grpc_port)

    loop = asyncio.get_running_loop()
    path = config_path or (str(config.path) if config.path is not None else None)

    reloading = asyncio.Lock()
    tasks: set[asyncio.Task[None]] = set()

    async def reload() -> None:
        async with reloading:  # one reload at a time, in signal order
            try:
                await state.reload(load_config(path))
            except Exception as exc:  # keep serving the old config
                print(
                    f"openheim: config reload failed, keeping the old one: {exc}", file=sys.stderr
                )
            else:
                print(f"openheim: reloaded {path}", file=sys.stderr)

    def on_sighup() -> None:
        task = loop.create_task(reload())
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    if hasattr(signal, "SIGHUP"):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signal.SIGHUP, on_sighup)
    bound = f"http://{uconfig.host}:{uconfig.port}"
    print(f"openheim: serving {len(config.agents)} agent(s) on {bound}", file=sys.stderr)
    try:
        await server.serve()
    finally:
        if grpc_server is not None:
            await grpc_server.stop(s.shutdown_grace)
    return 0
