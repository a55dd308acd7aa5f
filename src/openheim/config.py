"""``openheim.toml``: providers, agents, the store and the server, in one file.

:func:`load_config` reads and validates the file; every error names the file,
the line and the key (``openheim.toml:12: agents.support.model: unknown
provider 'opena'``). :meth:`Config.build_agent` makes an :class:`Agent` from an
``[agents.NAME]`` table. :func:`open_history` opens a tenant's sessions in
the configured store (``[store].url``, by default ``.openheim/state.db``
beside the config file).

An agent's ``model`` is a model string (``"openai:gpt-4o-mini"``), a
configured provider and a model name (``"local:qwen"`` for
``[providers.local]``), or ``"module:attribute"`` naming a Model instance or
a function returning one (handy for tests with a ``ScriptedModel``).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import os
import re
import sys
import sysconfig
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from openheim.errors import ConfigError
from openheim.stores import DEFAULT_STORE_URL

if TYPE_CHECKING:
    from openheim.stores.history import StoreHistory

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - 3.10
    import tomli as tomllib  # type: ignore[import-not-found,unused-ignore]

__all__ = [
    "AgentConfig",
    "ApiKey",
    "Config",
    "GrpcConfig",
    "MCPConfig",
    "ProviderConfig",
    "ServerConfig",
    "StoreConfig",
    "default_config_path",
    "load_config",
    "open_history",
]

DEFAULT_STORE = DEFAULT_STORE_URL
_BUILTIN_PROVIDERS = ("openai", "anthropic", "llama")
# LlamaModel's constructor options, accepted in model_settings of llama: models.
LLAMA_OPTIONS: dict[str, type] = {
    "n_gpu_layers": int,
    "n_ctx": int,
    "n_threads": int,
    "n_parallel": int,
    "n_batch": int,
    "prefill_chunk": int,
    "context_window": int,
    "chat_template": str,
    # GPU offload and the session KV cache (see LlamaModel).
    "main_gpu": int,
    "offload_kqv": bool,
    "flash_attn": str,
    "n_ubatch": int,
    "kv_cache_mb": int,
    "kv_cache_dir": str,
    "kv_disk_mb": int,
}


class ProviderConfig(msgspec.Struct, forbid_unknown_fields=True):
    type: str = "openai"
    base_url: str | None = None
    api_key_env: str | None = None
    timeout: float | None = None
    # The models HTTP clients may ask for as "<provider>:<model>" (none unless listed).
    models: list[str] = msgspec.field(default_factory=list)


class MCPConfig(msgspec.Struct, forbid_unknown_fields=True):
    command: list[str] | None = None
    url: str | None = None
    tool_prefix: str = ""
    requires_approval: bool | list[str] = False
    env: dict[str, str] | None = None


class AgentConfig(msgspec.Struct, forbid_unknown_fields=True):
    model: str
    instructions: str | None = None
    tools: list[str] = msgspec.field(default_factory=list)
    mcp: list[MCPConfig] = msgspec.field(default_factory=list)
    model_settings: dict[str, Any] = msgspec.field(default_factory=dict)
    max_iterations: int = 20
    run_timeout: float | None = None
    description: str = ""


class StoreConfig(msgspec.Struct, forbid_unknown_fields=True):
    # Without [store].url in a config file: .openheim/state.db beside the file (load_config).
    url: str = DEFAULT_STORE


class ApiKey(msgspec.Struct, forbid_unknown_fields=True):
    tenant: str
    key_env: str | None = None
    key_sha256: str | None = None


class GrpcConfig(msgspec.Struct, forbid_unknown_fields=True):
    # PEM files (paths relative to the config file) to serve gRPC over TLS.
    cert_file: str | None = None
    key_file: str | None = None


class ServerConfig(msgspec.Struct, forbid_unknown_fields=True):
    host: str = "127.0.0.1"
    port: int = 8000
    grpc_port: int | None = None
    max_body_bytes: int = 1_048_576
    max_concurrent_runs_per_tenant: int = 16
    shutdown_grace: float = 30.0
    run_retention: float = 300.0
    api_keys: list[ApiKey] = msgspec.field(default_factory=list)
    grpc: GrpcConfig = msgspec.field(default_factory=GrpcConfig)
    # Durable runs: events kept per run in the store (the oldest dropped), finished runs
    # kept, and how long a dead server's runs wait before another server resumes them.
    max_run_events: int = 10_000
    max_runs: int = 1_000
    run_lease_ttl: float = 15.0


class _File(msgspec.Struct, forbid_unknown_fields=True):
    providers: dict[str, ProviderConfig] = msgspec.field(default_factory=dict)
    agents: dict[str, AgentConfig] = msgspec.field(default_factory=dict)
    store: StoreConfig = msgspec.field(default_factory=StoreConfig)
    server: ServerConfig = msgspec.field(default_factory=ServerConfig)
    # [workflows.NAME] tables, as written: openheim.workflow.from_config reads them.
    workflows: dict[str, dict[str, Any]] = msgspec.field(default_factory=dict)


# ---- locating keys in the TOML text ---------------------------------------------------

_TABLE = re.compile(r"^\s*\[\[?\s*([^\]]+?)\s*\]\]?\s*(?:#.*)?$")
_KEY = re.compile(r"^\s*([A-Za-z0-9_\-\"'.]+)\s*=")


def _norm(part: str) -> str:
    return ".".join(p.strip().strip("\"'") for p in part.split("."))


def _line_of(text: str, path: Sequence[str | int]) -> int:
    """The 1-based line where ``path`` is defined (best effort: the nearest enclosing table).

    ``[[array.of.tables]]`` headers count their occurrences, so ``server.api_keys[1]``
    finds the second ``[[server.api_keys]]``; an index into an inline array stops at its key.
    """
    keys = list(path)
    best = 1
    best_depth = -1
    table: list[str | int] = []
    seen: dict[str, int] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        m = _TABLE.match(line)
        if m:
            name = _norm(m.group(1))
            table = list(name.split("."))
            if line.lstrip().startswith("[["):
                seen[name] = seen.get(name, -1) + 1
                table.append(seen[name])
            depth = _prefix_len(table, keys)
            if depth == len(table) and depth > best_depth:
                best, best_depth = lineno, depth
            continue
        k = _KEY.match(line)
        if k:
            full = table + list(_norm(k.group(1)).split("."))
            depth = _prefix_len(full, keys)
            if depth == len(full) and depth > best_depth:
                best, best_depth = lineno, depth
    return best


def _prefix_len(candidate: Sequence[str | int], keys: Sequence[str | int]) -> int:
    n = 0
    for a, b in zip(candidate, keys, strict=False):
        if a != b:
            break
        n += 1
    return n


def _path_from_msgspec(message: str) -> list[str | int]:
    m = re.search(r"at `\$(.*?)`", message)
    if not m:
        return []
    out: list[str | int] = []
    for part in re.findall(r"\.([A-Za-z0-9_\-]+)|\[(\d+)\]|\[\"?([^\]\"]+)\"?\]", m.group(1)):
        if part[0]:
            out.append(part[0])
        elif part[1]:
            out.append(int(part[1]))
        else:
            out.append(part[2])
    return out


def _dotted(path: Sequence[str | int]) -> str:
    text = ""
    for p in path:
        text += f"[{p}]" if isinstance(p, int) else (f".{p}" if text else p)
    return text


# ---- the loaded configuration ----------------------------------------------------------


class Config:
    """A validated ``openheim.toml`` (``path`` is None for the empty default)."""

    def __init__(self, data: _File, path: Path | None, text: str = "") -> None:
        self.providers = data.providers
        self.agents = data.agents
        self.store = data.store
        self.server = data.server
        self.workflow_tables = data.workflows
        self.path = path
        # Where tools modules named in the file live (searched after installed modules).
        self.folder = path.resolve().parent if path is not None else None
        self._text = text

    @property
    def store_url(self) -> str:
        """The store URL: ``[store].url``, else ``.openheim/state.db`` beside the file."""
        return self.store.url

    def error(self, path: Sequence[str | int], message: str) -> ConfigError:
        """A ConfigError naming the file, the line of ``path`` and the key."""
        where = str(self.path) if self.path is not None else "<config>"
        line = _line_of(self._text, path) if self._text else 1
        return ConfigError(f"{where}:{line}: {_dotted(path)}: {message}")

    def agent_names(self) -> list[str]:
        return list(self.agents)

    def workflow_names(self) -> list[str]:
        return list(self.workflow_tables)

    def build_workflow(self, name: str) -> Any:
        """The :class:`~openheim.workflow.Workflow` of ``[workflows.NAME]`` (validated).

        Its runs live in the configured store (``[store].url``) unless the
        table names its own; ``module:function`` references import like
        tools do (beside the file, never shadowing an installed module).
        """
        if name not in self.workflow_tables:
            known = ", ".join(self.workflow_tables) or "none"
            where = str(self.path) if self.path else "the configuration"
            raise ConfigError(f"no workflow {name!r} in {where} (workflows: {known})")
        from openheim.errors import WorkflowDefinitionError
        from openheim.workflow import from_config

        try:
            return from_config(
                name,
                self.workflow_tables[name],
                store=self.store_url,
                importer=self.import_object,
            )
        except WorkflowDefinitionError as exc:
            path, message = _workflow_error_path(name, str(exc))
            raise self.error(path, message) from None

    def build_workflows(self) -> dict[str, Any]:
        """Every ``[workflows.NAME]`` of the file, built (name -> Workflow)."""
        return {name: self.build_workflow(name) for name in self.workflow_tables}

    def tenant_keys(self) -> dict[str, str]:
        """sha256 hex digest of each API key -> tenant (keys from the environment)."""
        out: dict[str, str] = {}
        for i, entry in enumerate(self.server.api_keys):
            if entry.key_env is not None:
                raw = os.environ.get(entry.key_env)
                if not raw:
                    raise self.error(
                        ["server", "api_keys", i, "key_env"],
                        f"environment variable {entry.key_env} is not set; export the "
                        f"API key of tenant {entry.tenant!r} there",
                    )
                out[hashlib.sha256(raw.encode()).hexdigest()] = entry.tenant
            elif entry.key_sha256 is not None:
                out[entry.key_sha256.lower()] = entry.tenant
        return out

    def import_object(self, ref: str) -> Any:
        """The object a ``module:attribute`` reference of this file names."""
        return _import_object(ref, self.folder)

    def reload_modules(self) -> list[str]:
        """Forget the modules imported from the config file's folder (tools, models).

        The next :meth:`build_agent` imports them again from disk, so edited
        tool code is picked up (``openheim serve`` calls this on SIGHUP).
        Returns the names of the modules dropped.
        """
        if self.folder is None:
            return []
        return forget_modules(self.folder)

    def local_model_path(self, name: str) -> str | None:
        """The GGUF path of agent ``name`` when it runs a ``llama:`` model, else None."""
        provider, _, rest = self.agents[name].model.partition(":")
        if provider != "llama" or provider in self.providers:
            return None
        path = Path(rest).expanduser()
        # Relative paths are the config file's (the working directory's if only there).
        folder = self.folder
        if folder is not None and not path.is_absolute():
            path = folder / path if (folder / path).exists() or not path.exists() else path
        return str(path)

    def check_agent(self, name: str) -> None:
        """Check agent ``name`` without building it: its tools import, its model file exists."""
        if name not in self.agents:
            self.build_agent(name)  # raises the "no agent" error
        cfg = self.agents[name]
        for i, ref in enumerate(cfg.tools):
            try:
                self.import_object(ref)
            except ConfigError as exc:
                raise self.error(["agents", name, "tools", i], str(exc)) from None
        local = self.local_model_path(name)
        if local is not None and not Path(local).is_file():
            raise self.error(
                ["agents", name, "model"],
                f"no GGUF file at {local}; give the path of a .gguf model file",
            )
        provider = cfg.model.partition(":")[0]
        if provider not in self.providers and provider not in _BUILTIN_PROVIDERS:
            self.resolve_model(name, cfg.model)

    def resolve_model(self, name: str, spec: str, local: dict[str, Any] | None = None) -> Any:
        """The Model for agent ``name``'s ``model`` string (``local``: LlamaModel's options)."""
        where = ["agents", name, "model"]
        provider, sep, rest = spec.partition(":")
        if not sep or not rest:
            raise self.error(
                where, f"model {spec!r} must be 'provider:model' or 'module:attribute'"
            )
        if provider in self.providers:
            p = self.providers[provider]
            options: dict[str, Any] = {}
            if p.base_url is not None:
                options["base_url"] = p.base_url
            if p.api_key_env is not None:
                options["api_key_env"] = p.api_key_env
            if p.timeout is not None:
                options["timeout"] = p.timeout
            from openheim.models import infer_model

            return infer_model(f"{p.type}:{rest}", **options)
        if provider in _BUILTIN_PROVIDERS:
            from openheim.models import infer_model

            if provider == "llama" and name in self.agents:
                path = self.local_model_path(name)
                return infer_model(f"llama:{path}", **(local or {}))
            return infer_model(spec)
        try:
            obj = self.import_object(spec)
        except ConfigError as exc:
            raise self.error(
                where,
                f"unknown provider {provider!r} (configured: "
                f"{', '.join([*self.providers, *_BUILTIN_PROVIDERS])}); {exc}",
            ) from None
        from openheim.models import Model

        if callable(obj) and not isinstance(obj, Model):
            obj = obj()
        if not isinstance(obj, Model):
            raise self.error(where, f"{spec!r} is a {type(obj).__name__}, not a Model")
        return obj

    def build_agent(
        self,
        name: str,
        history: Any = None,
        *,
        checkpointer: Any = None,
        announce: Callable[[str], None] | None = None,
    ) -> Any:
        """An :class:`~openheim.agent.Agent` from ``[agents.NAME]``.

        ``checkpointer`` (default, or True: one on the history's store, when
        ``history`` keeps its sessions in a store) records every step of every
        run, so runs started from the CLI, the REPL or the server survive a
        crash; each run holds its lease meanwhile, so that ``openheim serve``
        resumes it only once its process is gone. Pass False for none. ``announce`` is told when a local model starts loading and how
        long it took.
        """
        from openheim.agent import Agent

        if checkpointer is None or checkpointer is True:
            from openheim.stores import Store

            store = getattr(history, "store", None)
            if isinstance(store, Store):
                from openheim.stores.checkpoint import Checkpointer

                # Each run holds its lease while it runs: `openheim serve` on the same store
                # resumes it only once this process is gone ([server] run_lease_ttl).
                checkpointer = Checkpointer(store, lease_ttl=self.server.run_lease_ttl)
        elif checkpointer is False:
            checkpointer = None

        if name not in self.agents:
            known = ", ".join(self.agents) or "none"
            where = str(self.path) if self.path else "the configuration"
            raise ConfigError(f"no agent {name!r} in {where} (agents: {known})")
        cfg = self.agents[name]
        tools: list[Any] = []
        for i, ref in enumerate(cfg.tools):
            try:
                tools.append(self.import_object(ref))
            except ConfigError as exc:
                raise self.error(["agents", name, "tools", i], str(exc)) from None
        local = {k: v for k, v in cfg.model_settings.items() if k in LLAMA_OPTIONS}
        sampling = {k: v for k, v in cfg.model_settings.items() if k not in LLAMA_OPTIONS}
        gguf = self.local_model_path(name)
        started = time.perf_counter()
        if gguf is not None and announce is not None:
            announce(f"loading {os.path.basename(gguf)} (llama.cpp)...")
        try:
            model = self.resolve_model(name, cfg.model, local)
            if gguf is not None and announce is not None:
                took = time.perf_counter() - started
                announce(f"loaded {os.path.basename(gguf)} in {took:.1f} s")
        except ConfigError as exc:
            if str(exc).startswith(f"{self.path}:"):
                raise
            raise self.error(["agents", name, "model"], str(exc)) from None
        for i, server in enumerate(cfg.mcp):
            tools.append(self._mcp(name, i, server))
        try:
            return Agent(
                model,
                name=name,
                instructions=cfg.instructions,
                tools=tools,
                model_settings=sampling or None,
                max_iterations=cfg.max_iterations,
                run_timeout=cfg.run_timeout,
                history=history,
                checkpointer=checkpointer,
            )
        except ConfigError as exc:
            raise self.error(["agents", name], str(exc)) from None

    def _mcp(self, name: str, i: int, server: MCPConfig) -> Any:
        from openheim.tools import MCPServerHTTP, MCPServerStdio

        if (server.command is None) == (server.url is None):
            raise self.error(
                ["agents", name, "mcp", i], "give either command = [...] or url = '...'"
            )
        if server.command is not None:
            if not server.command:
                raise self.error(["agents", name, "mcp", i, "command"], "command is empty")
            return MCPServerStdio(
                server.command[0],
                server.command[1:],
                env=server.env,
                tool_prefix=server.tool_prefix,
                requires_approval=server.requires_approval,
            )
        assert server.url is not None
        return MCPServerHTTP(
            server.url, tool_prefix=server.tool_prefix, requires_approval=server.requires_approval
        )


def _import_object(ref: str, folder: Path | None = None, *, fresh: bool = False) -> Any:
    """Import ``module:attribute``; ``folder`` is the config file's (searched last).

    A module in ``folder`` whose name an installed module already takes is
    refused (the installed one would be imported instead). ``fresh=True``
    forgets the modules imported from ``folder`` first, so edited code loads.
    """
    module_name, sep, attr = ref.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(f"{ref!r} must be 'module:attribute'")
    if folder is not None:
        _add_to_path(folder)
        if fresh:
            forget_modules(folder)
        _refuse_shadowed(module_name.partition(".")[0], folder)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        where = f"the config file's folder {folder}" if folder is not None else "PYTHONPATH"
        raise ConfigError(
            f"cannot import module {module_name!r} ({exc}); is it in {where}?"
        ) from None
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ConfigError(f"module {module_name!r} has no attribute {attr!r}") from None
    return obj


def _add_to_path(folder: Path) -> None:
    # Appended, not prepended: a json.py or sqlite3.py beside the config must not
    # replace the installed module of that name for the whole process.
    entry = str(folder)
    if entry not in sys.path:
        sys.path.append(entry)


def _refuse_shadowed(top: str, folder: Path) -> None:
    local = folder / f"{top}.py"
    if not local.is_file():
        local = folder / top / "__init__.py"
        if not local.is_file():
            return
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        return
    if spec is None:
        return
    origin = spec.origin
    places = [origin] if origin is not None and origin not in ("built-in", "frozen") else []
    places += list(spec.submodule_search_locations or [])
    if any(Path(place).resolve().is_relative_to(folder) for place in places):
        return
    if places and not any(_is_installed(Path(place)) for place in places):
        return  # found first elsewhere on PYTHONPATH (not an installed module): allowed
    raise ConfigError(
        f"{local} has the name of the installed module {top!r} ({origin or 'built-in'}), "
        f"which is imported instead; rename it (e.g. to {top}_tools.py) and its references"
    )


def _is_installed(place: Path) -> bool:
    """Whether ``place`` is in the standard library or a site-packages folder."""
    paths = sysconfig.get_paths()
    roots = {paths[k] for k in ("stdlib", "platstdlib", "purelib", "platlib") if k in paths}
    resolved = place.resolve()
    return any(resolved.is_relative_to(Path(root).resolve()) for root in roots)


def forget_modules(folder: Path) -> list[str]:
    """Drop from ``sys.modules`` every module loaded from ``folder`` (and their bytecode)."""
    importlib.invalidate_caches()
    dropped: list[str] = []
    for name, module in list(sys.modules.items()):
        file = getattr(module, "__file__", None)
        if not file:
            continue
        try:
            first = Path(file).resolve().relative_to(folder).parts[0]
        except (OSError, ValueError, IndexError):
            continue
        # Imported through the folder's sys.path entry: its top-level name is a file or
        # package right there (a venv or checkout below the folder is not the folder's).
        top = name.partition(".")[0]
        if first in (top, f"{top}.py"):
            del sys.modules[name]
            dropped.append(name)
            # The bytecode cache trusts mtime+size; an edit in the same second could reuse it.
            with contextlib.suppress(OSError, NotImplementedError, ValueError):
                os.unlink(importlib.util.cache_from_source(file))
    return dropped


_WF_WHERE = re.compile(r"^\[workflows\.(?P<name>[^\]]+)\](?P<keys>(?: [A-Za-z_][\w\[\]]*)*)")


def _workflow_error_path(name: str, message: str) -> tuple[list[str | int], str]:
    """The key path and the text of a from_config error (``[workflows.x] nodes[1] step: ...``)."""
    path: list[str | int] = ["workflows", name]
    m = _WF_WHERE.match(message)
    if m is None or m.group("name") != name:
        return path, message
    for token in m.group("keys").split():
        key, _, rest = token.partition("[")
        path.append(key)
        path.extend(int(i) for i in re.findall(r"(\d+)\]", "[" + rest) if rest)
    text = message[m.end() :]
    text = re.sub(r"^ \([^)]*\)", "", text).lstrip(": ").strip()
    return path, text or message


def default_store_url(config_path: Path | None) -> str:
    """``.openheim/state.db`` beside the config file, or the user-wide default without one."""
    if config_path is None:
        return DEFAULT_STORE
    return f"sqlite://{config_path.resolve().parent}/.openheim/state.db"


def default_config_path() -> Path | None:
    """./openheim.toml, then ~/.openheim/openheim.toml (None when neither exists)."""
    for candidate in (Path("openheim.toml"), Path.home() / ".openheim" / "openheim.toml"):
        if candidate.is_file():
            return candidate
    return None


def load_config(path: str | os.PathLike[str] | None = None) -> Config:
    """Read and validate a config file (the default locations when ``path`` is None)."""
    if path is None:
        found = default_config_path()
        if found is None:
            return Config(_File(), None)
        path = found
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read the config file: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        line = exc.object[: exc.start].count(b"\n") + 1
        raise ConfigError(
            f"{p}:{line}: the config file is not UTF-8 text (byte {exc.object[exc.start]:#04x} "
            f"at offset {exc.start}); save it as UTF-8"
        ) from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        line = getattr(exc, "lineno", None) or _toml_line(str(exc))
        raise ConfigError(f"{p}:{line}: invalid TOML: {exc}") from None
    shell = Config(_File(), p, text)
    for i, entry in enumerate(raw.get("server", {}).get("api_keys", []) or []):
        if isinstance(entry, dict) and "key" in entry:
            raise shell.error(
                ["server", "api_keys", i, "key"],
                "raw API keys are not allowed in the config file; put the key in an "
                "environment variable named by key_env, or give its key_sha256",
            )
    data = _File(
        providers={
            k: _convert(shell, v, ProviderConfig, ["providers", k])
            for k, v in _table(shell, raw, "providers").items()
        },
        agents={
            k: _convert(shell, v, AgentConfig, ["agents", k])
            for k, v in _table(shell, raw, "agents").items()
        },
        store=_convert(shell, raw.get("store", {}), StoreConfig, ["store"]),
        server=_convert(shell, raw.get("server", {}), ServerConfig, ["server"]),
        workflows=_workflow_tables(shell, raw),
    )
    store = raw.get("store", {})
    if isinstance(store, dict) and "url" not in store:
        data.store = StoreConfig(url=default_store_url(p))  # two projects never share one
    unknown = set(raw) - {"providers", "agents", "store", "server", "workflows"}
    if unknown:
        key = sorted(unknown)[0]
        raise shell.error(
            [key],
            f"unknown key {key!r}; the tables are providers, agents, store, server and workflows",
        )
    # Tools modules next to the config file import without PYTHONPATH tweaks.
    _add_to_path(p.resolve().parent)
    config = Config(data, p, text)
    _validate(config)
    return config


def _table(shell: Config, raw: dict[str, Any], key: str) -> dict[str, Any]:
    value = raw.get(key, {})
    if not isinstance(value, dict):
        raise shell.error([key], f"{key} must be a table ([{key}.NAME])")
    return value


def _workflow_tables(shell: Config, raw: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The ``[workflows.NAME]`` tables, their shape checked (built by Config.build_workflow)."""
    tables = _table(shell, raw, "workflows")
    if not tables:
        return {}
    from openheim.workflow._declare import TABLE_KEYS

    for name, table in tables.items():
        if not isinstance(table, dict):
            raise shell.error(["workflows", name], "a workflow is a table ([workflows.NAME])")
        for key in table:
            if key not in TABLE_KEYS:
                raise shell.error(
                    ["workflows", name, key],
                    f"unknown key {key!r}; the keys are {', '.join(sorted(TABLE_KEYS))}",
                )
        if "workflow" not in table and "state" not in table:
            raise shell.error(
                ["workflows", name],
                "give either workflow = 'module:wf' or state = 'module:StateClass' with nodes",
            )
    return tables


def _convert(shell: Config, value: Any, kind: type[Any], prefix: list[str | int]) -> Any:
    try:
        return msgspec.convert(value, kind)
    except msgspec.ValidationError as exc:
        message = str(exc)
        where = [*prefix, *_path_from_msgspec(message)]
        m = re.match(r"Object contains unknown field `([^`]+)`", message)
        if m:
            where.append(m.group(1))
            message = f"unknown key {m.group(1)!r}"
        else:
            message = re.sub(r"\s*-\s*at `\$.*?`", "", message)
        raise shell.error(where, message) from None


def _toml_line(message: str) -> int:
    m = re.search(r"line (\d+)", message)
    return int(m.group(1)) if m else 1


def _validate(config: Config) -> None:
    for pname, pconf in config.providers.items():
        if pconf.type not in ("openai", "anthropic"):
            raise config.error(
                ["providers", pname, "type"],
                f"unknown provider type {pconf.type!r}; use 'openai' or 'anthropic'",
            )
    for name, agent in config.agents.items():
        provider, sep, rest = agent.model.partition(":")
        if not sep or not rest:
            raise config.error(
                ["agents", name, "model"],
                f"model {agent.model!r} must be 'provider:model' or 'module:attribute'",
            )
        known = provider in config.providers or provider in _BUILTIN_PROVIDERS
        if not known and _find_spec_safe(provider) is None:
            raise config.error(
                ["agents", name, "model"],
                f"unknown provider {provider!r} (configured: "
                f"{', '.join([*config.providers, *_BUILTIN_PROVIDERS])})",
            )
        _validate_settings(config, name, agent, local=provider == "llama")
    seen: set[str] = set()
    for i, entry in enumerate(config.server.api_keys):
        if (entry.key_env is None) == (entry.key_sha256 is None):
            raise config.error(
                ["server", "api_keys", i], "give exactly one of key_env and key_sha256"
            )
        if entry.key_sha256 is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", entry.key_sha256):
            raise config.error(
                ["server", "api_keys", i, "key_sha256"],
                "key_sha256 must be 64 hex digits (sha256 of the key)",
            )
        ident = entry.key_env or entry.key_sha256 or ""
        if ident in seen:
            raise config.error(["server", "api_keys", i], "duplicate API key entry")
        seen.add(ident)
    s = config.server
    for key, value in (
        ("max_body_bytes", s.max_body_bytes),
        ("max_concurrent_runs_per_tenant", s.max_concurrent_runs_per_tenant),
        ("port", s.port + 1),
        ("max_run_events", s.max_run_events),
        ("max_runs", s.max_runs),
    ):
        if value < 1:
            raise config.error(["server", key], f"must be positive, got {value}")
    for key, seconds in (("run_retention", s.run_retention), ("run_lease_ttl", s.run_lease_ttl)):
        if not seconds > 0:
            raise config.error(
                ["server", key], f"must be a positive number of seconds, got {seconds}"
            )


def _validate_settings(config: Config, name: str, agent: AgentConfig, *, local: bool) -> None:
    from openheim.models.base import ModelSettings

    sampling = ModelSettings.__struct_fields__
    for key, value in agent.model_settings.items():
        where: list[str | int] = ["agents", name, "model_settings", key]
        kind = LLAMA_OPTIONS.get(key)
        if kind is not None:
            if not local:
                raise config.error(
                    where,
                    f"{key} is a setting of local llama: models; agent {name!r} runs "
                    f"{agent.model!r}",
                )
            if type(value) is not kind:
                raise config.error(where, f"{key} must be {kind.__name__}, got {value!r}")
            continue
        if key not in sampling:
            extra = f"; llama: models also take {', '.join(LLAMA_OPTIONS)}"
            raise config.error(
                where,
                f"unknown model setting {key!r}; the settings are {', '.join(sampling)}" + extra,
            )
        try:
            msgspec.convert({key: value}, ModelSettings)
        except msgspec.ValidationError as exc:
            message = re.sub(r"\s*-\s*at `\$.*?`", "", str(exc))
            raise config.error(where, message) from None


def _find_spec_safe(name: str) -> Any:
    try:
        return importlib.util.find_spec(name.split(".")[0])
    except (ImportError, ValueError):
        return None


# ---- sessions ---------------------------------------------------------------------------


def open_history(store_url: str | None, namespace: str = "default") -> StoreHistory:
    """The session history of tenant ``namespace`` in the store at ``store_url``.

    ``None`` means the default store (:data:`openheim.stores.DEFAULT_STORE_URL`);
    a loaded :class:`Config` has resolved its own already (``config.store.url``).
    """
    from openheim.stores import open_history as open_store_history

    return open_store_history(store_url or DEFAULT_STORE, namespace=namespace)
