"""The gRPC service over a real loopback channel (started by `openheim serve --grpc-port`)."""

from __future__ import annotations

import json

import grpc
import pytest
from ixhelpers import KEYS, Served

from openheim.server import openheim_pb2 as pb
from openheim.server import openheim_pb2_grpc as pb_grpc


def stub(server: Served) -> tuple[grpc.Channel, pb_grpc.OpenheimStub]:
    channel = grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}")
    grpc.channel_ready_future(channel).result(timeout=30)
    return channel, pb_grpc.OpenheimStub(channel)


def auth(tenant: str = "acme") -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {KEYS[tenant]}")]


def test_run_agent_streams_events_and_get_session_reads_it(server: Served) -> None:
    channel, s = stub(server)
    with channel:
        req = pb.RunAgentRequest(agent="weather", input="weather Kyiv", session="g1")
        events = list(s.RunAgent(req, metadata=auth()))
        assert [e.id for e in events] == list(range(len(events)))
        kinds = [e.type for e in events]
        assert kinds[0] == "run_started"
        assert "tool_called" in kinds
        assert kinds[-1] == "done"
        assert json.loads(events[-1].data)["output"] == "tool said: sunny in Kyiv"
        session = s.GetSession(pb.GetSessionRequest(id="g1"), metadata=auth())
        assert [m.role for m in session.messages] == ["user", "assistant", "tool", "assistant"]
        assert session.messages[-1].content == "tool said: sunny in Kyiv"
        assert session.requests == 2


def test_errors_map_to_grpc_status_codes(server: Served) -> None:
    channel, s = stub(server)
    with channel:
        with pytest.raises(grpc.RpcError) as err:
            s.GetSession(pb.GetSessionRequest(id="g1"))
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        list(s.RunAgent(pb.RunAgentRequest(agent="echo", input="x", session="g2"), metadata=auth()))
        with pytest.raises(grpc.RpcError) as err:
            s.GetSession(pb.GetSessionRequest(id="g2"), metadata=auth("globex"))
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.RpcError) as err:
            list(s.RunAgent(pb.RunAgentRequest(agent="nope", input="x"), metadata=auth()))
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        failed = list(s.RunAgent(pb.RunAgentRequest(agent="broken", input="x"), metadata=auth()))
        assert failed[-1].type == "error"
        assert json.loads(failed[-1].data)["error"]["type"] == "ModelError"


def test_bad_session_ids_are_invalid_arguments(server: Served) -> None:
    channel, s = stub(server)
    with channel:
        for sid in ("a/b", "\x1b[31m", "x" * 200):
            with pytest.raises(grpc.RpcError) as err:
                list(
                    s.RunAgent(
                        pb.RunAgentRequest(agent="echo", input="x", session=sid), metadata=auth()
                    )
                )
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert sid not in (err.value.details() or "")
            with pytest.raises(grpc.RpcError) as err:
                s.GetSession(pb.GetSessionRequest(id=sid), metadata=auth())
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
