"""agent.stream: the events, their order, and what they add up to."""

from __future__ import annotations

import json

import openheim as oh
from openheim.models import ScriptedModel


@oh.tool
def add(a: int, b: int) -> int:
    """Add."""
    return a + b


async def test_event_order_and_content() -> None:
    model = ScriptedModel(
        [
            oh.Message.assistant(
                "Let me add those.", [oh.ToolCall("add", {"a": 20, "b": 22}, "c1")]
            ),
            "The answer is forty two.",
        ]
    )
    agent = oh.Agent(model, tools=[add])
    events = [ev async for ev in agent.stream("20+22?")]
    kinds = [type(ev).__name__ for ev in events]

    # Turn 1: text, then the call with its argument fragments, usage, the call and its result.
    first_usage = kinds.index("UsageEvent")
    assert set(kinds[:first_usage]) == {"TextDelta", "ToolCallStarted", "ToolCallArgsDelta"}
    assert kinds.index("ToolCallStarted") > max(
        i for i, k in enumerate(kinds[:first_usage]) if k == "TextDelta"
    )
    assert kinds[first_usage + 1 : first_usage + 3] == ["ToolCalled", "ToolResult"]
    # Turn 2: text, usage, done.
    assert kinds[-1] == "Done"
    assert kinds[-2] == "UsageEvent"
    assert kinds.count("Done") == 1

    text_turn_1 = "".join(ev.text for ev in events[:first_usage] if isinstance(ev, oh.TextDelta))
    assert text_turn_1 == "Let me add those."
    started = next(ev for ev in events if isinstance(ev, oh.ToolCallStarted))
    assert (started.id, started.name) == ("c1", "add")
    fragments = [ev.delta for ev in events if isinstance(ev, oh.ToolCallArgsDelta)]
    assert len(fragments) > 1
    assert all(ev.id == "c1" for ev in events if isinstance(ev, oh.ToolCallArgsDelta))
    assert json.loads("".join(fragments)) == {"a": 20, "b": 22}
    called = next(ev for ev in events if isinstance(ev, oh.ToolCalled))
    assert called == oh.ToolCalled("c1", "add", {"a": 20, "b": 22})
    result_ev = next(ev for ev in events if isinstance(ev, oh.ToolResult))
    assert result_ev == oh.ToolResult("c1", "add", "42", False)

    done = events[-1]
    assert isinstance(done, oh.Done)
    final_text = "".join(ev.text for ev in events[first_usage:] if isinstance(ev, oh.TextDelta))
    assert final_text == done.result.output == "The answer is forty two."
    assert len([ev for ev in events[first_usage:] if isinstance(ev, oh.TextDelta)]) > 1
    usages = [ev for ev in events if isinstance(ev, oh.UsageEvent)]
    assert usages[-1].total == done.result.usage
    assert usages[0].usage + usages[1].usage == usages[1].total


async def test_stream_and_run_give_the_same_messages() -> None:
    def script() -> ScriptedModel:
        return ScriptedModel([oh.ToolCall("add", {"a": 1, "b": 2}, "k"), "3"])

    ran = await oh.Agent(script(), tools=[add]).run("1+2")
    events = [ev async for ev in oh.Agent(script(), tools=[add]).stream("1+2")]
    streamed = events[-1]
    assert isinstance(streamed, oh.Done)
    assert streamed.result.new_messages == ran.new_messages
    assert streamed.result.output == ran.output


async def test_breaking_out_of_a_stream_stores_nothing() -> None:
    model = ScriptedModel([oh.ToolCall("add", {"a": 1, "b": 2}), "3"])
    agent = oh.Agent(model, tools=[add])
    stream = agent.stream("1+2", session="s")
    async for ev in stream:
        if isinstance(ev, oh.ToolResult):
            break
    await stream.aclose()
    assert await agent.history.load("s") == []


async def test_events_are_exported_and_structs() -> None:
    import msgspec

    for cls in (
        oh.ToolCallStarted,
        oh.ToolCallArgsDelta,
        oh.ToolCalled,
        oh.ToolResult,
        oh.UsageEvent,
        oh.ApprovalRequired,
        oh.Done,
        oh.TextDelta,
    ):
        assert issubclass(cls, msgspec.Struct)
