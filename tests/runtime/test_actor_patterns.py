"""Multi-agent patterns on actors, with ScriptedModel agents."""

from __future__ import annotations

from typing import Any

import pytest

import openheim as oh
from openheim.errors import ConfigError
from openheim.messages import ToolCall
from openheim.models.base import ModelRequest
from openheim.models.scripted import ScriptedModel
from openheim.runtime import RestartPolicy, Runtime
from openheim.runtime.patterns import (
    Router,
    Team,
    TeamState,
    Turn,
    delegate,
    handoff,
    map_reduce,
    team,
)


def _agent(name: str, script: Any) -> oh.Agent:
    return oh.Agent(name=name, model=ScriptedModel(script))


async def test_delegation_an_agent_used_as_another_agents_tool() -> None:
    async with Runtime() as rt:
        expert = rt.spawn(_agent("expert", ["Paris is the capital of France."]), id="expert/1")
        tool = delegate(expert, name="ask_expert", description="Ask the geography expert.")
        lead_model = ScriptedModel(
            [ToolCall("ask_expert", {"request": "capital of France?"}), "It is Paris."]
        )
        lead = rt.spawn(oh.Agent(name="lead", model=lead_model, tools=[tool]), id="lead/1")
        result = await lead.ask("What is the capital of France?")
        assert result.output == "It is Paris."
        tool_msgs = [m for m in lead_model.requests[1].messages if m.role == "tool"]
        assert tool_msgs[0].content == "Paris is the capital of France."
        assert [m.content for m in await rt.history.load("expert/1")] == [
            "capital of France?",
            "Paris is the capital of France.",
        ]


async def test_handoff_moves_the_conversation_with_its_history() -> None:
    billing_model = ScriptedModel(["Refund issued."])
    async with Runtime() as rt:
        triage = rt.spawn(_agent("triage", ["Let me pass you to billing."]), id="triage/7")
        billing = rt.spawn(oh.Agent(name="billing", model=billing_model), id="billing/7")
        await triage.ask("I was charged twice")
        nxt = await handoff(rt, triage, billing)
        assert nxt is billing
        result = await nxt.ask("Can I get a refund?")
        assert result.output == "Refund issued."
        seen = [m.content for m in billing_model.requests[0].messages if m.role != "system"]
        assert seen == ["I was charged twice", "Let me pass you to billing.", "Can I get a refund?"]


async def test_router_by_function_and_by_model() -> None:
    async with Runtime() as rt:
        sales = rt.spawn(_agent("sales", lambda r: "sales here"), id="sales")
        support = rt.spawn(_agent("support", lambda r: "support here"), id="support")
        routes = {"sales": sales, "support": support}
        by_fn = rt.spawn(
            Router(routes, lambda m: "sales" if "buy" in m else "support"), id="router/fn"
        )
        assert (await by_fn.ask("I want to buy")).output == "sales here"
        assert (await by_fn.ask("it broke")).output == "support here"

        def pick(request: ModelRequest) -> str:
            last = request.messages[-1].content or ""
            return "support." if "broke" in last else "sales"

        chooser = rt.spawn(_agent("chooser", pick), id="chooser")
        by_model = rt.spawn(Router(routes, chooser), id="router/model")
        assert (await by_model.ask("my screen broke")).output == "support here"
        assert (await by_model.ask("price list please")).output == "sales here"
        bad = rt.spawn(Router(routes, lambda m: "legal"), id="router/bad")
        with pytest.raises(oh.errors.ActorFailed, match="not a route"):
            await bad.ask("sue them")


async def test_team_round_robin_and_manager_led_with_each_termination() -> None:
    async with Runtime() as rt:
        writer = rt.spawn(_agent("writer", lambda r: "draft"), id="writer")
        critic_calls: list[int] = []

        def critic_reply(request: ModelRequest) -> str:
            critic_calls.append(1)
            return "APPROVED" if len(critic_calls) >= 2 else "needs work"

        critic = rt.spawn(_agent("critic", critic_reply), id="critic")
        done = await team([writer, critic], "write a haiku", stop_phrase="APPROVED")
        assert done.stop_reason == "phrase"
        assert [t.speaker for t in done.turns] == ["writer", "critic", "writer", "critic"]
        assert done.turns[-1] == Turn("critic", "APPROVED")

        capped = await team([writer], "go", max_turns=3)
        assert (capped.stop_reason, len(capped.turns)) == ("max_turns", 3)

        stopped = await team([writer, critic], "go", until=lambda turns: len(turns) == 1)
        assert (stopped.stop_reason, len(stopped.turns)) == ("until", 1)

        manager = rt.spawn(_agent("manager", lambda r: "critic"), id="manager")
        led = await team([writer, critic], "review", manager=manager, max_turns=2)
        assert [t.speaker for t in led.turns] == ["critic", "critic"]
        with pytest.raises(ConfigError, match="at least one member"):
            await team([], "x")


async def test_map_reduce_fans_out_and_joins_in_order() -> None:
    async def square(msg: int, ctx: Any) -> int:
        return msg * msg

    async with Runtime() as rt:
        workers = [rt.spawn(square, id=f"sq/{i}") for i in range(3)]
        assert await map_reduce(workers, [1, 2, 3, 4, 5], sum) == 55
        assert await map_reduce(workers, [3, 1, 2], list) == [9, 1, 4]
        summarizer = rt.spawn(_agent("sum", lambda r: "short"), id="summarizer")
        joined = await map_reduce(
            [summarizer], ["a", "b"], lambda rs: "|".join(r.output for r in rs)
        )
        assert joined == "short|short"


async def test_a_team_actor_survives_a_restart_and_goes_on_from_its_last_turn(
    tmp_path: Any,
) -> None:
    url = f"sqlite:///{tmp_path}/team.db"
    task = "write a tagline"

    def broken(request: ModelRequest) -> str:
        raise RuntimeError("the process died here")

    def first_writer(request: ModelRequest) -> str:
        if sum(m.role == "user" for m in request.messages) > 1:
            return broken(request)  # the third turn never completes
        return "draft 1"

    def register(rt: Runtime, writer: Any, critic: Any) -> None:
        rt.register("writer", lambda _id: _agent("writer", writer))
        rt.register("critic", lambda _id: _agent("critic", critic))
        rt.register(
            "team",
            lambda _id: Team(["writer/1", "critic/1"], max_turns=6, stop_phrase="APPROVED"),
            state_type=TeamState,
        )

    async with Runtime(store=url, restart=RestartPolicy(retries=0, backoff=0.001)) as rt:
        register(rt, first_writer, lambda r: "needs work")
        with pytest.raises(oh.errors.ActorFailed, match="the process died here"):
            await rt.ref("team/launch").ask(task)
        saved = await rt.store.get("actor/team/launch")
        assert saved is not None  # two turns, saved as they finished
    # A new runtime on the same store (as after a process restart).
    writer2 = ScriptedModel(["draft 2"])
    critic_calls: list[int] = []

    def critic2(request: ModelRequest) -> str:
        critic_calls.append(1)
        return "APPROVED"

    async with Runtime(store=url) as rt2:
        rt2.register("writer", lambda _id: oh.Agent(name="writer", model=writer2))
        rt2.register("critic", lambda _id: _agent("critic", critic2))
        rt2.register(
            "team",
            lambda _id: Team(["writer/1", "critic/1"], max_turns=6, stop_phrase="APPROVED"),
            state_type=TeamState,
        )
        result = await rt2.ref("team/launch").ask(task)
        assert result.stop_reason == "phrase"
        assert result.turns == [
            Turn("writer/1", "draft 1"),
            Turn("critic/1", "needs work"),
            Turn("writer/1", "draft 2"),
            Turn("critic/1", "APPROVED"),
        ]
        # The writer went on with its conversation from the store, not from scratch.
        seen = [m.content for m in writer2.requests[0].messages if m.role != "system"]
        assert seen[:2] == [task, "draft 1"]
        assert seen[-1] == "critic/1: needs work"
        # Asking the finished team the same task answers from its saved state.
        again = await rt2.ref("team/launch").ask(task)
        assert again == result
        assert len(critic_calls) == 1
