"""gRPC SubmitWorkflow, GetRun, StreamRunEvents and Approve on a real ``openheim serve`` over
TLS on loopback: the config's [workflows.triage] (a branch, a map and an approval) on SQLite,
tenant-scoped like the HTTP routes, which see the same runs."""

from __future__ import annotations

import json
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from ixhelpers import CONFIG, KEYS, Served, start_server, stop_server, write_project
from test_grpc import self_signed
from wfflows import TABLE
from wfopsflows import TABLE as SLOW

from openheim.server import openheim_pb2 as pb
from openheim.server import openheim_pb2_grpc as pb_grpc

HERE = Path(__file__).parent
TEXT = "The app crashes. It loses data"


class Tls:
    def __init__(self, served: Served, cert: bytes) -> None:
        self.served = served
        self.cert = cert

    def channel(self) -> grpc.Channel:
        creds = grpc.ssl_channel_credentials(root_certificates=self.cert)
        channel = grpc.secure_channel(f"127.0.0.1:{self.served.grpc_port}", creds)
        grpc.channel_ready_future(channel).result(timeout=30)
        return channel


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tls]:
    pytest.importorskip("cryptography")
    folder = tmp_path_factory.mktemp("wfgrpc")
    cert, key = self_signed(folder)
    store = f"sqlite:///{folder / 'wf.db'}"
    config = (
        CONFIG.replace('url = "memory://"', f'url = "{store}"')
        + TABLE
        + SLOW
        + f'\n[server.grpc]\ncert_file = "{cert}"\nkey_file = "{key}"\n'
    )
    path = write_project(folder, config)
    shutil.copy(HERE / "wfflows.py", folder / "wfflows.py")
    shutil.copy(HERE / "wfopsflows.py", folder / "wfopsflows.py")
    served = start_server(path)
    yield Tls(served, cert.read_bytes())
    stop_server(served)


def auth(tenant: str = "acme") -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {KEYS[tenant]}")]


def test_submit_wait_approve_and_follow_a_run(tls: Tls) -> None:
    with tls.channel() as channel:
        s = pb_grpc.OpenheimStub(channel)
        req = pb.SubmitWorkflowRequest(
            workflow="triage", input=json.dumps({"text": TEXT}), wait=True
        )
        run = s.SubmitWorkflow(req, metadata=auth())
        assert run.status == "waiting"
        state = json.loads(run.state)
        assert state["kind"] == "bug"
        assert state["notes"] == ["checked: The app crashes", "checked: It loses data"]
        (pending,) = run.pending
        assert pending.node == "review"
        assert pending.run_id == run.run_id
        assert json.loads(pending.payload) == {"notes": state["notes"]}
        assert json.loads(pending.data)["id"] == pending.id
        assert json.loads(run.data)["status"] == "waiting"

        # The checkpoints so far, then the status: the stream ends while the run waits.
        events = list(
            s.StreamRunEvents(
                pb.StreamRunEventsRequest(workflow="triage", run_id=run.run_id), metadata=auth()
            )
        )
        ids = [e.id for e in events[:-1]]
        assert ids == sorted(ids)
        assert ids[0] == 1
        assert {e.type for e in events[:-1]} == {"checkpoint"}
        assert events[-1].type == "waiting"
        kinds = [json.loads(e.data)["kind"] for e in events[:-1]]
        assert kinds[0] == "start"
        assert kinds[-1] == "approval"

        # Another tenant sees nothing of it.
        with pytest.raises(grpc.RpcError) as err:
            s.GetRun(
                pb.GetRunRequest(workflow="triage", run_id=run.run_id), metadata=auth("globex")
            )
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.RpcError) as err:
            s.Approve(
                pb.ApproveRequest(workflow="triage", approval_id=pending.id, approved=True),
                metadata=auth("globex"),
            )
        assert err.value.code() == grpc.StatusCode.NOT_FOUND

        decided = s.Approve(
            pb.ApproveRequest(
                workflow="triage",
                approval_id=pending.id,
                approved=True,
                by="ann",
                reason="ok",
                edits=json.dumps({"kind": "urgent bug"}),
            ),
            metadata=auth(),
        )
        assert decided.run_id == run.run_id
        # Following from the last checkpoint seen: only what came after, then "done".
        after = s.StreamRunEvents(
            pb.StreamRunEventsRequest(workflow="triage", run_id=run.run_id, after=ids[-1]),
            metadata=auth(),
        )
        rest = list(after)
        assert rest[-1].type == "done"
        assert all(e.id > ids[-1] for e in rest[:-1])
        assert any(json.loads(e.data).get("node") == "close" for e in rest[:-1])
        done = s.GetRun(pb.GetRunRequest(workflow="triage", run_id=run.run_id), metadata=auth())
        assert done.status == "done"
        final = json.loads(done.state)
        assert final["reply"] == "fixed"
        assert final["kind"] == "urgent bug"
        assert final["decision"]["by"] == "ann"

        # Deciding it again: FAILED_PRECONDITION, naming who decided.
        with pytest.raises(grpc.RpcError) as err:
            s.Approve(
                pb.ApproveRequest(workflow="triage", approval_id=pending.id, approved=False),
                metadata=auth(),
            )
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "already approved by ann" in (err.value.details() or "")


def test_submit_in_the_background(tls: Tls) -> None:
    with tls.channel() as channel:
        s = pb_grpc.OpenheimStub(channel)
        started = s.SubmitWorkflow(
            pb.SubmitWorkflowRequest(
                workflow="triage", input=json.dumps({"text": "how?"}), run_id="grpc-bg-1"
            ),
            metadata=auth(),
        )
        assert started.run_id == "grpc-bg-1"
        assert started.status in ("running", "done")
        events = list(
            s.StreamRunEvents(
                pb.StreamRunEventsRequest(workflow="triage", run_id="grpc-bg-1"), metadata=auth()
            )
        )
        assert events[-1].type == "done"
        assert json.loads(events[-1].data)["state"]["reply"] == "answered"
        with pytest.raises(grpc.RpcError) as err:
            s.SubmitWorkflow(
                pb.SubmitWorkflowRequest(workflow="triage", run_id="grpc-bg-1"), metadata=auth()
            )
        assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS
    # The HTTP routes answer for the same run.
    with tls.served.client() as c:
        assert c.get("/v1/workflows/triage/runs/grpc-bg-1").json()["status"] == "done"


@pytest.mark.parametrize(
    ("call", "code", "words"),
    [
        (
            lambda s, m: s.GetRun(pb.GetRunRequest(workflow="nope", run_id="x"), metadata=m),
            grpc.StatusCode.NOT_FOUND,
            "no workflow 'nope'",
        ),
        (
            lambda s, m: s.GetRun(pb.GetRunRequest(workflow="triage", run_id="none"), metadata=m),
            grpc.StatusCode.NOT_FOUND,
            "no run 'none'",
        ),
        (
            lambda s, m: s.SubmitWorkflow(
                pb.SubmitWorkflowRequest(workflow="triage", input="[1]"), metadata=m
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "input must be a JSON object",
        ),
        (
            lambda s, m: s.SubmitWorkflow(
                pb.SubmitWorkflowRequest(workflow="triage", input="{"), metadata=m
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "input is not valid JSON",
        ),
        (
            lambda s, m: s.SubmitWorkflow(
                pb.SubmitWorkflowRequest(workflow="triage", input='{"nope": 1}'), metadata=m
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "unknown fields ['nope']",
        ),
        (
            lambda s, m: s.Approve(
                pb.ApproveRequest(workflow="triage", approval_id="zz"), metadata=m
            ),
            grpc.StatusCode.NOT_FOUND,
            "no approval 'zz'",
        ),
        (
            lambda s, m: list(
                s.StreamRunEvents(
                    pb.StreamRunEventsRequest(workflow="triage", run_id="none"), metadata=m
                )
            ),
            grpc.StatusCode.NOT_FOUND,
            "no run 'none'",
        ),
        (
            lambda s, m: s.GetRun(pb.GetRunRequest(workflow="triage", run_id="x")),
            grpc.StatusCode.UNAUTHENTICATED,
            "API key",
        ),
    ],
)
def test_errors_map_to_status_codes(tls: Tls, call: object, code: object, words: str) -> None:
    with tls.channel() as channel:
        with pytest.raises(grpc.RpcError) as err:
            call(pb_grpc.OpenheimStub(channel), auth())  # type: ignore[operator]
        assert err.value.code() == code
        assert words in (err.value.details() or "")


def test_plaintext_is_refused_on_the_tls_port(tls: Tls) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{tls.served.grpc_port}") as plain:
        with pytest.raises(grpc.RpcError) as err:
            pb_grpc.OpenheimStub(plain).GetRun(
                pb.GetRunRequest(workflow="triage", run_id="x"), metadata=auth(), timeout=5
            )
        assert err.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


def test_a_run_driven_elsewhere_is_aborted_and_shutdown_refuses_new_runs(tls: Tls) -> None:
    """A second server on the same store continues a run after Approve: the first server's
    Approve is ABORTED meanwhile (the lease; nothing decided twice). Once SIGTERM came, the
    second server's SubmitWorkflow is UNAVAILABLE while its runs drain, and they finish."""
    other = start_server(tls.served.config)
    try:
        creds = grpc.ssl_channel_credentials(root_certificates=tls.cert)
        with (
            tls.channel() as mine,
            grpc.secure_channel(f"127.0.0.1:{other.grpc_port}", creds) as theirs,
        ):
            s, o = pb_grpc.OpenheimStub(mine), pb_grpc.OpenheimStub(theirs)
            run = s.SubmitWorkflow(
                pb.SubmitWorkflowRequest(
                    workflow="slow", input=json.dumps({"gate": True, "after": 3}), wait=True
                ),
                metadata=auth(),
            )
            assert run.status == "waiting"
            (pending,) = run.pending
            decided = o.Approve(
                pb.ApproveRequest(workflow="slow", approval_id=pending.id, approved=True, by="o"),
                metadata=auth(),
            )
            assert decided.run_id == run.run_id
            with pytest.raises(grpc.RpcError) as err:
                s.Approve(
                    pb.ApproveRequest(workflow="slow", approval_id=pending.id, approved=False),
                    metadata=auth(),
                )
            assert err.value.code() == grpc.StatusCode.ABORTED
            assert "driven by another process" in (err.value.details() or "")

            other.proc.send_signal(signal.SIGTERM)
            refused = None
            for _ in range(300):
                try:
                    o.SubmitWorkflow(pb.SubmitWorkflowRequest(workflow="slow"), metadata=auth())
                except grpc.RpcError as exc:
                    refused = exc
                    break
                time.sleep(0.01)
            assert refused is not None
            assert refused.code() == grpc.StatusCode.UNAVAILABLE
            assert "shutting down" in (refused.details() or "")
        assert other.proc.wait(60) in (0, -signal.SIGTERM)
        with tls.channel() as channel:
            s = pb_grpc.OpenheimStub(channel)
            got = s.GetRun(pb.GetRunRequest(workflow="slow", run_id=run.run_id), metadata=auth())
            assert got.status == "done"  # drained: it finished before the server left
            assert json.loads(got.state)["decision"]["by"] == "o"
    finally:
        stop_server(other)
