"""Server state: the config, tenants' keys, agents, models and session stores, run limits.

One :class:`ServerState` per app (``request.app.state.openheim``); routes take
what they need from it, typed: :meth:`ServerState.agent` gives an ``Agent``,
:meth:`ServerState.provider_model` a ``Model``, :meth:`ServerState.history`
the tenant's session store. Runs live in :attr:`ServerState.runs`.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import functools
import hashlib
import hmac
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, cast

from openheim.config import Config, open_history
from openheim.server._runs import RunRegistry
from openheim.server._workflows import ServedWorkflows, build_served
from openheim.stores import Store
from openheim.stores.history import StoreHistory

if TYPE_CHECKING:
    from openheim.agent import Agent
    from openheim.models import Model
    from openheim.stores.checkpoint import Checkpointer


log = logging.getLogger("openheim.server")

Announce = Callable[[str], None]


class TooManyRuns(Exception):
    pass


class ServerState:
    """Everything the app shares across requests; ``reload`` swaps the config in place."""

    def __init__(self, config: Config, *, max_models: int = 16) -> None:
        self.config = config
        self.max_models = max_models
        self._keys: dict[bytes, str] = {}
        self._agents: dict[tuple[str, str], Agent] = {}
        # Proxied provider models, least recently used first; in-flight uses by id(model).
        self._models: OrderedDict[str, Model] = OrderedDict()
        self._uses: dict[int, int] = {}
        self._retired: dict[int, Model] = {}
        self._closing: set[asyncio.Task[None]] = set()
        self._idle = asyncio.Event()  # set while no run or request is in flight
        self._histories: dict[str, StoreHistory] = {}
        self._checkpointers: dict[str, Checkpointer] = {}
        self.runs = RunRegistry(self)
        self.workflows = ServedWorkflows()  # create_app serves the config's [workflows.NAME]
        self.active: dict[str, int] = {}
        self.accepting = True
        self.loading = False  # True while load() builds the agents (not ready yet)
        self._load_keys()

    def _load_keys(self) -> None:
        self._keys = {bytes.fromhex(h): t for h, t in self.config.tenant_keys().items()}

    @property
    def auth_enabled(self) -> bool:
        return bool(self.config.server.api_keys)

    # ---- building agents ------------------------------------------------------------

    def tenants(self, config: Config | None = None) -> list[str]:
        """The tenants of ``config``'s API keys (``default`` when there are none)."""
        keys = (config or self.config).server.api_keys
        return sorted({k.tenant for k in keys}) or ["default"]

    def _make_agent(
        self,
        config: Config,
        name: str,
        history: StoreHistory,
        checkpointer: Checkpointer,
        announce: Announce | None = None,
    ) -> Agent:
        """Agent ``name`` of ``config`` for one tenant (may block: imports, model loading).

        Every step is checkpointed in the tenant's store: its runs survive a restart.
        """
        agent = config.build_agent(
            name, history=history, checkpointer=checkpointer, announce=announce
        )
        return cast("Agent", agent)

    async def _build_all(
        self, config: Config, histories: dict[str, StoreHistory], announce: Announce
    ) -> dict[tuple[str, str], Agent]:
        """Every agent of ``config`` for every tenant, built in a worker thread (the event
        loop keeps answering ``/healthz`` and ``/readyz`` meanwhile). On a failure the
        agents built so far are closed and the error is raised."""
        loop = asyncio.get_running_loop()
        tenants = self.tenants(config)
        built: dict[tuple[str, str], Agent] = {}
        try:
            for name, agent_config in config.agents.items():
                started = time.perf_counter()
                await loop.run_in_executor(None, config.check_agent, name)
                first: Agent | None = None
                for tenant in tenants:
                    history = histories.get(tenant)
                    if history is None:
                        history = histories[tenant] = open_history(config.store.url, tenant)
                    ckpt = self._checkpointer_of(tenant, history)
                    if first is not None:
                        # The other tenants' agents share the first one's model (loaded
                        # once), tools and MCP servers; only their stores differ.
                        twin = copy.copy(first)
                        twin.history = history
                        twin.checkpointer = ckpt
                        built[(tenant, name)] = twin
                        continue
                    build = functools.partial(
                        self._make_agent, config, name, history, ckpt, announce
                    )
                    first = built[(tenant, name)] = await loop.run_in_executor(None, build)
                took = time.perf_counter() - started
                tools = len(agent_config.tools) + len(agent_config.mcp)
                announce(
                    f"agent {name!r}: model {agent_config.model}, {tools} tool source(s), "
                    f"built for {len(tenants)} tenant(s) in {took:.2f} s"
                )
        except BaseException:
            await _close_all(list(built.values()), [], [])
            raise
        return built

    async def load(self, announce: Announce) -> None:
        """Build every agent for every tenant and load every model, then resume the runs
        a killed server left; ready when it returns.

        While it runs, :attr:`loading` is True (``/readyz`` answers 503).
        """
        self.loading = True
        built = await self._build_all(self.config, self._histories, announce)
        # An agent something built lazily meanwhile may be in use: keep it, drop the twin.
        twins = [agent for key, agent in built.items() if key in self._agents]
        for key, agent in built.items():
            self._agents.setdefault(key, agent)
        await _close_all(twins, [], [])
        # Interrupted runs resume on the agents just built (under their leases).
        await self.runs.start_background()
        self.loading = False

    async def reload(self, config: Config, announce: Announce | None = None) -> None:
        """Build everything ``config`` defines, switch to it, then close what it replaced.

        Modules imported from the config's folder (tools, models) are imported
        again from disk, so edited code is used. If an agent fails to build, the
        error is raised and the old config stays in use. Runs and requests in
        flight finish on the old agents (for up to ``shutdown_grace`` seconds);
        then the old agents (their models' connections, their MCP servers), the
        cached proxied models and, when ``[store].url`` changed, the old session
        stores are closed. Sessions stay in the store.
        """
        keys = {bytes.fromhex(h): t for h, t in config.tenant_keys().items()}
        config.reload_modules()  # tool and model modules beside the config: afresh from disk
        same_store = config.store.url == self.config.store.url
        histories = self._histories if same_store else {}
        workflows = build_served(config)  # [workflows.NAME] afresh (their modules too)
        try:
            agents = await self._build_all(config, histories, announce or log.info)
        except BaseException:
            if not same_store:
                await _close_all([], [], [h.store for h in histories.values()])
            for wf in workflows.values():
                await wf.aclose()
            raise
        self.workflows.replace(workflows)  # runs in flight finish on their old definition
        old_agents = list(self._agents.values())
        old_models = list(self._models.values())
        old_stores = [] if same_store else [h.store for h in self._histories.values()]
        self.config = config
        self._keys = keys
        self._histories = histories
        self._agents = agents
        self._models = OrderedDict()
        in_flight = self.runs.in_flight()
        for model in [m for m in old_models if id(m) in self._uses]:
            self._retired[id(model)] = model  # closed by its last release_model
        old_models = [m for m in old_models if id(m) not in self._uses]
        task = asyncio.get_running_loop().create_task(
            self._close_when_idle(in_flight, old_agents, old_models, old_stores)
        )
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def _close_when_idle(
        self,
        runs: list[asyncio.Task[None]],
        agents: list[Agent],
        models: list[Model],
        stores: list[Store],
    ) -> None:
        grace = self.config.server.shutdown_grace
        deadline = time.monotonic() + grace
        if runs:
            await asyncio.wait(runs, timeout=grace)
        # Chat requests hold the old agents too: wait for the in-flight count to drop.
        if any(self.active.values()):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), max(0.0, deadline - time.monotonic()))
        await _close_all(agents, models, stores)

    def tenant_for(self, key: str) -> str | None:
        digest = hashlib.sha256(key.encode()).digest()
        found: str | None = None
        # Compare against every key so the time taken does not tell which matched.
        for known, tenant in self._keys.items():
            if hmac.compare_digest(known, digest):
                found = tenant
        return found

    def history(self, tenant: str) -> StoreHistory:
        """The tenant's sessions (its namespace of the configured store)."""
        h = self._histories.get(tenant)
        if h is None:
            h = self._histories[tenant] = open_history(self.config.store.url, tenant)
        return h

    def store(self, tenant: str) -> Store:
        """The tenant's namespace of the configured store: sessions, checkpoints, run events."""
        return self.history(tenant).store

    def checkpointer(self, tenant: str) -> Checkpointer:
        """The one Checkpointer of the tenant's agents (their runs survive a restart)."""
        return self._checkpointer_of(tenant, self.history(tenant))

    def _checkpointer_of(self, tenant: str, history: StoreHistory) -> Checkpointer:
        from openheim.stores.checkpoint import Checkpointer

        store = history.store
        ckpt = self._checkpointers.get(tenant)
        if ckpt is None or ckpt.store is not store:
            ckpt = self._checkpointers[tenant] = Checkpointer(store)
        return ckpt

    # ---- proxied provider models -----------------------------------------------------

    def proxied_models(self) -> list[str]:
        """``"<provider>:<model>"`` for every model listed in ``[providers.NAME].models``."""
        return [
            f"{name}:{model}"
            for name, provider in self.config.providers.items()
            for model in provider.models
            if f"{name}:{model}" not in self.config.agents
        ]

    def is_proxied(self, spec: str) -> bool:
        """Whether clients may ask for ``spec`` as a model (it is listed in the config)."""
        if spec in self.config.agents:
            return False
        provider, _, model = spec.partition(":")
        p = self.config.providers.get(provider)
        return p is not None and model in p.models

    def cached_models(self) -> list[str]:
        """The proxied models held open, least recently used first."""
        return list(self._models)

    async def provider_model(self, spec: str) -> Model:
        """The Model for a listed ``"<provider>:<model>"``, held until :meth:`release_model`.

        At most ``max_models`` stay cached; the least recently used one is
        evicted and closed (once its in-flight requests are done).
        """
        model = self._models.pop(spec, None)
        if model is None:
            model = cast("Model", self.config.resolve_model("(request)", spec))
        self._models[spec] = model
        self._uses[id(model)] = self._uses.get(id(model), 0) + 1
        while len(self._models) > self.max_models:
            _, old = self._models.popitem(last=False)
            await self._retire(old)
        return model

    async def release_model(self, model: Model) -> None:
        left = self._uses[id(model)] - 1
        if left:
            self._uses[id(model)] = left
            return
        del self._uses[id(model)]
        if self._retired.pop(id(model), None) is not None:
            await _close(model)

    async def _retire(self, model: Model) -> None:
        if id(model) in self._uses:
            self._retired[id(model)] = model  # closed by the last release_model
        else:
            await _close(model)

    def agent(self, tenant: str, name: str) -> Agent:
        key = (tenant, name)
        agent = self._agents.get(key)
        if agent is None:
            # Every step checkpointed in the tenant's store: runs survive a restart.
            agent = cast(
                "Agent",
                self.config.build_agent(
                    name, history=self.history(tenant), checkpointer=self.checkpointer(tenant)
                ),
            )
            self._agents[key] = agent
        return agent

    def chat_agent(self, tenant: str, name: str) -> Agent:
        """Agent ``name`` for OpenAI-style requests: not checkpointed (the conversation is
        the client's and the answer goes only to the open connection)."""
        agent = copy.copy(self.agent(tenant, name))
        agent.checkpointer = None
        return agent

    # ---- limits -------------------------------------------------------------------------

    def acquire(self, tenant: str, *, force: bool = False) -> None:
        """Take one of the tenant's run slots (``force``: even past the limit, for
        recovered runs). TooManyRuns when they are all taken."""
        limit = self.config.server.max_concurrent_runs_per_tenant
        if not force and self.active.get(tenant, 0) >= limit:
            raise TooManyRuns
        self.active[tenant] = self.active.get(tenant, 0) + 1
        self._idle.clear()

    def release(self, tenant: str) -> None:
        self.active[tenant] -= 1
        if not any(self.active.values()):
            self._idle.set()

    # ---- shutdown -----------------------------------------------------------------------

    async def drain(self, grace: float) -> None:
        """Stop accepting work; wait up to ``grace`` seconds for runs, then cancel the rest."""
        self.accepting = False
        await asyncio.gather(self.runs.drain(grace), self.workflows.drain(grace))

    async def aclose(self) -> None:
        """Close the agents (models, MCP servers), proxied models and session stores."""
        self._idle.set()  # replaced agents are closed now, not after their grace
        await asyncio.gather(*self._closing, return_exceptions=True)
        agents, self._agents = list(self._agents.values()), {}
        models = [*self._models.values(), *self._retired.values()]
        self._models, self._retired = OrderedDict(), {}
        stores = [h.store for h in self._histories.values()]
        self._histories, self._checkpointers = {}, {}
        await _close_all(agents, models, stores)
        await self.workflows.aclose()


async def _close_all(agents: list[Agent], models: list[Model], stores: list[Store]) -> None:
    for agent in agents:
        try:
            await agent.aclose()
        except Exception:
            log.warning("closing agent %r failed", agent.name, exc_info=True)
    for model in models:
        await _close(model)
    for store in stores:
        try:
            await store.aclose()
        except Exception:
            log.warning("closing a session store failed", exc_info=True)


async def _close(model: Model) -> None:
    try:
        await model.aclose()
    except Exception:
        log.warning("closing model %r failed", model.name, exc_info=True)
