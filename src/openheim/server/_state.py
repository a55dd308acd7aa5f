"""Server state: the config, tenants' keys, agents, models and session stores, run limits.

One :class:`ServerState` per app (``request.app.state.openheim``); routes take
what they need from it, typed: :meth:`ServerState.agent` gives an ``Agent``,
:meth:`ServerState.provider_model` a ``Model``, :meth:`ServerState.history`
the tenant's session store. Runs live in :attr:`ServerState.runs`.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol, cast

from openheim.config import Config, open_history
from openheim.messages import Message, Usage
from openheim.server._runs import RunRegistry
from openheim.sessions import HistoryStore

if TYPE_CHECKING:
    from openheim.agent import Agent
    from openheim.models import Model


class SessionStore(HistoryStore, Protocol):
    """A tenant's session store: a HistoryStore that also lists and deletes sessions."""

    async def list_sessions(self) -> list[str]: ...

    async def delete(self, session: str) -> bool: ...


class EphemeralHistory:
    """A tenant's session store plus request-scoped conversations that are never saved.

    OpenAI-style requests carry the whole conversation; it is handed to the
    agent as the history of a throwaway session id.
    """

    def __init__(self, store: SessionStore) -> None:
        self.store = store
        self._scratch: dict[str, list[Message]] = {}

    def scratch(self, session: str, messages: list[Message]) -> None:
        self._scratch[session] = messages

    def drop(self, session: str) -> None:
        self._scratch.pop(session, None)

    async def load(self, session: str) -> list[Message]:
        if session in self._scratch:
            return list(self._scratch[session])
        return await self.store.load(session)

    async def append(
        self, session: str, messages: Sequence[Message], usage: Usage | None = None
    ) -> None:
        if session in self._scratch:
            return
        await self.store.append(session, messages, usage)

    async def usage(self, session: str) -> Usage:
        return await self.store.usage(session)

    async def clear(self, session: str) -> None:
        await self.store.clear(session)


class TooManyRuns(Exception):
    pass


class ServerState:
    """Everything the app shares across requests; ``reload`` swaps the config in place."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self._keys: dict[bytes, str] = {}
        self._agents: dict[tuple[str, str], Agent] = {}
        self._models: dict[str, Model] = {}
        self._histories: dict[str, EphemeralHistory] = {}
        self.runs = RunRegistry(self)
        self.active: dict[str, int] = {}
        self.accepting = True
        self._load_keys()

    def _load_keys(self) -> None:
        self._keys = {bytes.fromhex(h): t for h, t in self.config.tenant_keys().items()}

    @property
    def auth_enabled(self) -> bool:
        return bool(self.config.server.api_keys)

    def reload(self, config: Config) -> None:
        """Use a new config; running runs keep their agents, sessions stay in the store."""
        self.config = config
        self._load_keys()
        self._agents.clear()
        self._models.clear()

    def tenant_for(self, key: str) -> str | None:
        digest = hashlib.sha256(key.encode()).digest()
        found: str | None = None
        # Compare against every key so the time taken does not tell which matched.
        for known, tenant in self._keys.items():
            if hmac.compare_digest(known, digest):
                found = tenant
        return found

    def history(self, tenant: str) -> EphemeralHistory:
        h = self._histories.get(tenant)
        if h is None:
            store = cast(SessionStore, open_history(self.config.store.url, tenant))
            h = EphemeralHistory(store)
            self._histories[tenant] = h
        return h

    def provider_model(self, spec: str) -> Model:
        """The Model for ``"<provider>:<model>"`` of a configured provider (one per spec)."""
        model = self._models.get(spec)
        if model is None:
            model = cast("Model", self.config.resolve_model("(request)", spec))
            self._models[spec] = model
        return model

    def agent(self, tenant: str, name: str) -> Agent:
        key = (tenant, name)
        agent = self._agents.get(key)
        if agent is None:
            agent = cast("Agent", self.config.build_agent(name, history=self.history(tenant)))
            self._agents[key] = agent
        return agent

    # ---- limits -------------------------------------------------------------------------

    def acquire(self, tenant: str) -> None:
        limit = self.config.server.max_concurrent_runs_per_tenant
        if self.active.get(tenant, 0) >= limit:
            raise TooManyRuns
        self.active[tenant] = self.active.get(tenant, 0) + 1

    def release(self, tenant: str) -> None:
        self.active[tenant] -= 1

    # ---- shutdown -----------------------------------------------------------------------

    async def drain(self, grace: float) -> None:
        """Stop accepting work; wait up to ``grace`` seconds for runs, then cancel the rest."""
        self.accepting = False
        await self.runs.drain(grace)

    async def aclose(self) -> None:
        """Close the agents' and proxied models' connections."""
        for agent in list(self._agents.values()):
            with contextlib.suppress(Exception):
                await agent.aclose()
        for model in list(self._models.values()):
            with contextlib.suppress(Exception):
                await model.aclose()
        self._agents.clear()
        self._models.clear()
