"""A send that lands while another send is attaching a mailbox loses nothing.

Attaching a mailbox to an actor allocates one, and an allocation can run the
garbage collector, whose callbacks and finalizers are Python code: another sender
thread may run in that window. Here a gc callback sends to the same actor at that
moment (what a thread switch would do, made deterministic).
"""

from __future__ import annotations

import asyncio
import gc
from typing import Any

from openheim._core import Scheduler

ACTORS = 50


async def _race_attach() -> tuple[list[Any], int, int]:
    handled: list[Any] = []
    sched = Scheduler()
    actors = [sched.spawn(handled.append) for _ in range(ACTORS)]
    current: list[Any] = [None]
    injected = [0]

    def send_in_the_window(phase: str, info: dict[str, int]) -> None:
        target, current[0] = current[0], None  # once per actor, never re-entered
        if phase == "start" and target is not None:
            target.send(("injected", injected[0]))
            injected[0] += 1

    threshold = gc.get_threshold()
    gc.callbacks.append(send_in_the_window)
    gc.set_threshold(1)  # a collection at every tracked allocation
    try:
        for i, a in enumerate(actors):
            a.send((i, 1))  # waits in the actor: no mailbox yet
            current[0] = a
            a.send((i, 2))  # attaches a mailbox: the collection sends in the window
            current[0] = None
    finally:
        gc.set_threshold(*threshold)
        gc.callbacks.remove(send_in_the_window)
    expected = 2 * ACTORS + injected[0]
    for _ in range(500):
        if len(handled) >= expected:
            break
        await asyncio.sleep(0.01)
    await sched.aclose()
    return handled, expected, injected[0]


def test_a_send_during_a_mailbox_attach_is_not_lost() -> None:
    handled, expected, injected = asyncio.run(_race_attach())
    assert injected > 0, "the collector never ran inside a send: the test proves nothing"
    assert len(handled) == expected, f"{expected - len(handled)} of {expected} messages lost"
    for i in range(ACTORS):  # one sender's messages still arrive in order
        mine = [m for m in handled if m[0] == i]
        assert mine == [(i, 1), (i, 2)]
