"""``openheim serve``: uvicorn (and gRPC) on the app, start-up loading, SIGHUP reloads."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import signal
import time
from typing import Any

import uvicorn

from openheim.config import Config, load_config
from openheim.errors import ConfigError, OpenheimError
from openheim.server._app import create_app

log = logging.getLogger("openheim.server")

EXIT_CONFIG = 2  # the CLI's exit code for configuration errors


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
    log.warning(
        "serving on %s without API keys (--allow-unauthenticated): anyone who can reach "
        "this address can run the agents",
        host,
    )


def _failed(exc: BaseException) -> str:
    # Config errors say what to fix; anything else also names its type.
    return str(exc) if isinstance(exc, OpenheimError) else f"{type(exc).__name__}: {exc}"


async def run(
    config: Config,
    host: str,
    port: int,
    grpc_port: int | None,
    config_path: str | None,
    log_level: str,
) -> int:
    started = time.perf_counter()
    app = create_app(config)
    state = app.state
    state.loading = True
    uconfig = uvicorn.Config(
        app,
        host=host,
        port=port,
        lifespan="on",
        log_level=log_level if log_level in ("debug", "error") else "warning",
        access_log=False,  # the app logs each request itself (tenant, run id, duration)
        timeout_graceful_shutdown=int(config.server.shutdown_grace) or None,
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

        grpc_server = await start_grpc(state, host, grpc_port)
    http = f"http://{host}:{port}"
    grpc_text = f" and gRPC on {host}:{grpc_port}" if grpc_port is not None else ""
    tenants = state.tenants()
    log.info(
        "listening on %s%s; building %d agent(s) for %d tenant(s)",
        http,
        grpc_text,
        len(config.agents),
        len(tenants),
    )
    loop = asyncio.get_running_loop()
    _on_sighup(loop, state, config_path or (str(config.path) if config.path else None))
    serving = loop.create_task(server.serve())
    code = 0
    try:
        try:
            await state.load(log.info)
        except Exception as exc:
            log.error("cannot start: %s", _failed(exc))
            code = EXIT_CONFIG if isinstance(exc, ConfigError) else 1
            server.should_exit = True
        else:
            log.info(
                "ready in %.1f s: serving %d agent(s) on %s%s",
                time.perf_counter() - started,
                len(config.agents),
                http,
                grpc_text,
            )
        await serving
        if not server.started and code == 0:
            code = 1  # uvicorn could not start (it logged why: port in use, ...)
    finally:
        if grpc_server is not None:
            await grpc_server.stop(config.server.shutdown_grace)
    return code


def _on_sighup(loop: asyncio.AbstractEventLoop, state: Any, path: str | None) -> None:
    reloading = asyncio.Lock()
    tasks: set[asyncio.Task[None]] = set()

    async def reload() -> None:
        async with reloading:  # one reload at a time, in signal order
            try:
                await state.reload(load_config(path), log.info)
            except Exception as exc:  # keep serving the old config
                log.error("config reload failed, keeping the old one: %s", _failed(exc))
            else:
                log.info("reloaded %s", path)

    def on_sighup() -> None:
        task = loop.create_task(reload())
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    if hasattr(signal, "SIGHUP"):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signal.SIGHUP, on_sighup)
