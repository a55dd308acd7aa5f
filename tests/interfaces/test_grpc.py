"""The gRPC service over a real loopback channel (started by `openheim serve --grpc-port`)."""

from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path

import grpc
import httpx
import pytest
from ixhelpers import CONFIG, KEYS, Served, start_server, stop_server, write_project

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


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate for localhost and 127.0.0.1 and its key, made here (PEM files)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "server.crt", folder / "server.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_grpc_over_tls(tmp_path: Path) -> None:
    pytest.importorskip("cryptography")
    cert, key = self_signed(tmp_path)
    config = write_project(
        tmp_path / "tls",
        CONFIG + f'\n[server.grpc]\ncert_file = "{cert}"\nkey_file = "{key.name}"\n',
    )
    (tmp_path / "tls" / key.name).write_bytes(key.read_bytes())  # relative to the config
    served = start_server(config)
    try:
        creds = grpc.ssl_channel_credentials(root_certificates=cert.read_bytes())
        with grpc.secure_channel(f"127.0.0.1:{served.grpc_port}", creds) as channel:
            grpc.channel_ready_future(channel).result(timeout=30)
            s = pb_grpc.OpenheimStub(channel)
            req = pb.RunAgentRequest(agent="echo", input="over tls")
            events = list(s.RunAgent(req, metadata=auth()))
            assert json.loads(events[-1].data)["output"] == "echo: over tls (turn 1)"
        with grpc.insecure_channel(f"127.0.0.1:{served.grpc_port}") as plain:
            with pytest.raises(grpc.RpcError) as err:
                list(pb_grpc.OpenheimStub(plain).RunAgent(req, metadata=auth(), timeout=5))
            assert err.value.code() in (
                grpc.StatusCode.UNAVAILABLE,
                grpc.StatusCode.DEADLINE_EXCEEDED,
            )
    finally:
        stop_server(served)


def test_grpc_refuses_new_runs_once_shutting_down(tmp_path: Path) -> None:
    served = start_server(write_project(tmp_path, CONFIG))
    outcome: dict[str, int] = {}

    def slow() -> None:
        with served.client() as c:
            outcome["status"] = c.post(
                "/v1/agents/slow/runs", json={"input": "sleep 3"}
            ).status_code

    t = threading.Thread(target=slow)
    t.start()
    try:
        while "openheim_active_runs 1.0" not in httpx.get(f"{served.url}/metrics").text:
            time.sleep(0.02)
        channel, s = stub(served)
        with channel:
            served.proc.send_signal(signal.SIGTERM)
            refused = None
            while t.is_alive() and refused is None:
                try:
                    list(s.RunAgent(pb.RunAgentRequest(agent="echo", input="x"), metadata=auth()))
                except grpc.RpcError as exc:
                    refused = exc
                time.sleep(0.02)
        t.join(30)
        assert outcome["status"] == 200  # the run in flight finished
        assert refused is not None
        assert refused.code() == grpc.StatusCode.UNAVAILABLE
        assert "shutting down" in (refused.details() or "")
    finally:
        t.join(30)
        stop_server(served)
