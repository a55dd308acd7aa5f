"""Multi-agent patterns on actors: delegation, handoff, router, team, map-reduce.

Each pattern talks to its agents through :class:`ActorRef`, so an agent is an
actor (its conversation in the runtime's store, one message at a time) and
the same code works for virtual actors that are passivated between turns.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import msgspec

from openheim.errors import ConfigError
from openheim.runtime._actor import ActorContext, ActorRef
from openheim.runtime._runtime import Runtime

__all__ = [
    "Router",
    "Team",
    "TeamResult",
    "TeamState",
    "Turn",
    "delegate",
    "handoff",
    "map_reduce",
    "team",
]


def _text(result: Any) -> str:
    """The text of an agent's answer (a RunResult's output) or of any other reply."""
    output = getattr(result, "output", result)
    return output if isinstance(output, str) else str(output)


def delegate(ref: ActorRef, *, name: str, description: str) -> Any:
    """A tool that asks the agent actor ``ref`` (delegation: an agent as another's tool).

    The tool takes one argument, ``request``, and returns the agent's answer.
    """
    from openheim.tools import Tool

    async def ask_agent(request: str) -> str:
        return _text(await ref.ask(request))

    ask_agent.__doc__ = f"{description}\n\nArgs:\n    request: what to ask for, in full sentences."
    return Tool(ask_agent, name=name, description=description)


async def handoff(runtime: Runtime, source: ActorRef, target: ActorRef) -> ActorRef:
    """Move the conversation of agent actor ``source`` to ``target`` (its history goes
    with it, appended to ``target``'s session); returns ``target`` to continue with."""
    history = runtime.history
    messages = await history.load(source.id)
    if messages:
        await history.append(target.id, messages)
    return target


Chooser = Callable[[Any], "str | Awaitable[str]"]


class Router:
    """An actor that forwards each message to one of ``routes`` and replies with its answer.

    ``choose(msg)`` returns a route name (a function, sync or async), or
    ``choose`` is an agent actor (:class:`ActorRef`) asked which route fits:
    its answer must name one. ``rt.spawn(Router({...}, choose), id="router")``.
    """

    def __init__(self, routes: dict[str, ActorRef], choose: Chooser | ActorRef) -> None:
        if not routes:
            raise ConfigError("a Router needs at least one route")
        self.routes = dict(routes)
        self.choose = choose

    async def route(self, msg: Any) -> str:
        if isinstance(self.choose, ActorRef):
            names = ", ".join(self.routes)
            answer = _text(
                await self.choose.ask(f"Pick one of: {names}. Answer with the name only.\n\n{msg}")
            )
            picked = answer.strip().strip(".").strip()
        else:
            picked = self.choose(msg)  # type: ignore[assignment]
            if inspect.isawaitable(picked):
                picked = await picked
        if picked not in self.routes:
            raise ConfigError(
                f"the router chose {picked!r}, which is not a route; routes: {sorted(self.routes)}"
            )
        return picked

    async def receive(self, msg: Any, ctx: ActorContext) -> Any:
        return await self.routes[await self.route(msg)].ask(msg)


class Turn(msgspec.Struct, frozen=True):
    """One turn of a team chat: who spoke and what they said."""

    speaker: str
    text: str


class TeamResult(msgspec.Struct, frozen=True):
    """A finished team chat: its turns and why it stopped (``max_turns``, ``phrase``, ``until``)."""

    turns: list[Turn]
    stop_reason: str


class TeamState(msgspec.Struct, kw_only=True):
    """A team chat's progress, the ``ctx.state`` of a :class:`Team` actor (saved every turn)."""

    task: str
    turns: list[Turn] = msgspec.field(default_factory=list)
    prompt: str = ""
    next_member: int = 0
    stop_reason: str | None = None


def _check_team(members: Sequence[Any], max_turns: int) -> None:
    if not members:
        raise ConfigError("a team needs at least one member")
    if max_turns < 1:
        raise ConfigError(f"max_turns is >= 1, got {max_turns!r}")


async def _chat(
    members: Sequence[ActorRef],
    state: TeamState,
    *,
    max_turns: int,
    stop_phrase: str | None,
    until: Callable[[list[Turn]], bool] | None,
    manager: ActorRef | None,
    on_turn: Callable[[], Awaitable[None]] | None = None,
) -> TeamResult:
    """Go on with the chat in ``state`` (updated in place) until it stops."""
    by_id = {m.id: m for m in members}
    turns = state.turns
    if not state.prompt:
        state.prompt = state.task
    while state.stop_reason is None:
        if len(turns) >= max_turns:
            state.stop_reason = "max_turns"
            break
        if manager is not None:
            pick = _text(
                await manager.ask(
                    f"Task: {state.task}\nSo far: {[(t.speaker, t.text) for t in turns]}\n"
                    f"Who speaks next? One of: {', '.join(by_id)}. Answer with the id only."
                )
            ).strip()
            if pick not in by_id:
                raise ConfigError(f"the manager picked {pick!r}, not a member: {sorted(by_id)}")
            speaker = by_id[pick]
        else:
            speaker = members[state.next_member % len(members)]
            state.next_member = (state.next_member + 1) % len(members)
        text = _text(await speaker.ask(state.prompt))
        turns.append(Turn(speaker.id, text))
        state.prompt = f"{speaker.id}: {text}"
        if stop_phrase is not None and stop_phrase in text:
            state.stop_reason = "phrase"
        elif until is not None and until(turns):
            state.stop_reason = "until"
        elif len(turns) >= max_turns:
            state.stop_reason = "max_turns"
        if on_turn is not None:
            await on_turn()
    return TeamResult(list(turns), state.stop_reason)


async def team(
    members: Sequence[ActorRef],
    task: str,
    *,
    max_turns: int = 10,
    stop_phrase: str | None = None,
    until: Callable[[list[Turn]], bool] | None = None,
    manager: ActorRef | None = None,
) -> TeamResult:
    """A group chat of agent actors on ``task``: round-robin, or led by ``manager`` (an
    agent actor asked, before each turn, which member speaks next: it answers a member id).

    Each speaker gets the previous turn (``speaker: text``) and keeps its own
    conversation in its session. The chat stops after ``max_turns``, when a
    turn contains ``stop_phrase``, or when ``until(turns)`` is true. This runs
    in the caller; for a chat that survives a restart, use a :class:`Team` actor.
    """
    _check_team(members, max_turns)
    return await _chat(
        members,
        TeamState(task=task),
        max_turns=max_turns,
        stop_phrase=stop_phrase,
        until=until,
        manager=manager,
    )


class Team:
    """A team chat as an actor whose progress is durable: it survives a restart.

    ``rt.register("team", lambda id: Team(["writer/1", "critic/1"], max_turns=6),
    state_type=TeamState)``, then ``await rt.ref("team/launch").ask("the task")``
    returns the :class:`TeamResult`. Members are actor ids (or refs), resolved in
    the runtime handling the message, so they may be virtual agent actors. The
    chat's state (turns so far, whose turn is next) is saved to the store after
    every turn; asking the same team id again after a crash or a restart goes
    on from the last saved turn (a turn cut off mid-way is asked again), and
    asking a finished team the same task returns its result. A different task
    for a finished team starts a new chat.
    """

    def __init__(
        self,
        members: Sequence[ActorRef | str],
        *,
        max_turns: int = 10,
        stop_phrase: str | None = None,
        until: Callable[[list[Turn]], bool] | None = None,
        manager: ActorRef | str | None = None,
    ) -> None:
        _check_team(members, max_turns)
        self.members = [m if isinstance(m, str) else m.id for m in members]
        self.manager = manager if manager is None or isinstance(manager, str) else manager.id
        self.max_turns = max_turns
        self.stop_phrase = stop_phrase
        self.until = until

    async def receive(self, msg: Any, ctx: ActorContext) -> TeamResult:
        state = ctx.state
        if isinstance(state, dict):  # a snapshot read back without state_type
            state = msgspec.convert(state, TeamState)
        if state is None or (state.stop_reason is not None and msg != state.task):
            if not isinstance(msg, str):
                raise ConfigError(f"a Team actor takes the task as a string, got {msg!r}")
            state = TeamState(task=msg)
        ctx.state = state
        rt = ctx.runtime
        return await _chat(
            [rt.ref(m) for m in self.members],
            state,
            max_turns=self.max_turns,
            stop_phrase=self.stop_phrase,
            until=self.until,
            manager=None if self.manager is None else rt.ref(self.manager),
            on_turn=ctx.save,
        )


async def map_reduce(
    workers: Sequence[ActorRef],
    items: Sequence[Any],
    reducer: Callable[[list[Any]], Any],
    *,
    timeout: float | None = None,
) -> Any:
    """Fan ``items`` out to ``workers`` (round-robin, all at once), then join the answers,
    in the order of ``items``, with ``reducer``."""
    if not workers:
        raise ConfigError("map_reduce needs at least one worker")
    asks = [
        w.ask(item, timeout=timeout)
        for w, item in zip(itertools.cycle(workers), items, strict=False)
    ]
    return reducer(list(await asyncio.gather(*asks)))
