"""The tokens of a map node's items are counted once: in a durable real-time run (each
item's record carries its tokens, the node's result must not carry them again), on
replay, and when an item's record was appended twice (a repair racing the commit)."""

from __future__ import annotations

from batchflows import Doc

import openheim as oh
from openheim.models import ScriptedModel
from openheim.workflow import Workflow
from openheim.workflow._records import ItemDone, Started
from openheim.workflow._view import RunView


def _agents_map(store: str | None = None) -> Workflow:
    agent = oh.Agent(ScriptedModel(lambda req: f"summary of {req.messages[-1].content}"))
    wf = Workflow("map-tokens", state=Doc, store=store)
    wf.map("summaries", "items", agent, output="out")
    return wf


async def test_a_durable_runs_map_tokens_are_counted_once() -> None:
    plain = _agents_map()
    once = (await plain.run({"items": ["x", "y", "z"]})).usage.tokens
    await plain.aclose()
    assert once > 0
    wf = _agents_map("memory://")
    try:
        res = await wf.run({"items": ["x", "y", "z"]}, run_id="tok-1")
        assert res.state.out == ["summary of x", "summary of y", "summary of z"]
        assert res.usage.tokens == once
        assert (await wf.status("tok-1")).usage.tokens == once  # replayed from the log
    finally:
        await wf.aclose()


def test_an_item_recorded_twice_counts_its_tokens_once() -> None:
    wf = _agents_map()
    start = Started(
        run_id="r", workflow=wf.name, state={"items": ["x", "y"]}, frontier=["summaries"]
    )
    item = ItemDone(task="0:summaries", index=0, value="a", tokens=7)
    view = RunView.replay(wf, [(1, start), (2, item), (3, item)], typed=False)
    assert view.usage.tokens == 7
    assert view.items["summaries"] == {0: "a"}
