"""The actor runtime: agents and functions as actors on the native scheduler.

``async with Runtime(store=...) as rt:`` then ``rt.spawn(handler_or_object_or_agent,
id=...)`` gives an :class:`ActorRef` (``send``, ``put``, ``ask``); virtual actors
(``rt.register(kind, factory)``, ``rt.ref("kind/id")``) are passivated to the
store and activated again by their next message; failing handlers are restarted
under a :class:`RestartPolicy`, and messages that keep failing go to the
dead-letter log. :mod:`openheim.runtime.patterns` builds multi-agent patterns
on actors: delegation, handoff, router, team, map-reduce.
"""

from __future__ import annotations

from openheim.runtime._actor import ActorContext, ActorRef
from openheim.runtime._records import ChildFailed, DeadLetter, RestartPolicy
from openheim.runtime._runtime import Overflow, Runtime
from openheim.runtime.patterns import (
    Router,
    Team,
    TeamResult,
    TeamState,
    Turn,
    delegate,
    handoff,
    map_reduce,
    team,
)

__all__ = [
    "ActorContext",
    "ActorRef",
    "ChildFailed",
    "DeadLetter",
    "Overflow",
    "RestartPolicy",
    "Router",
    "Runtime",
    "Team",
    "TeamResult",
    "TeamState",
    "Turn",
    "delegate",
    "handoff",
    "map_reduce",
    "team",
]
