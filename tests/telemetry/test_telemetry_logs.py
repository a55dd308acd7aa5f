"""Log context (run, session, step, trace ids) and redaction of credentials in log lines."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import msgspec
import pytest
from telhelpers import Spans

import openheim as oh
from openheim import telemetry
from openheim.messages import ToolCall
from openheim.models import ScriptedModel
from openheim.server._logging import JsonFormatter, TextFormatter
from openheim.telemetry import redact

SK = "sk-abcdefghijklmnopqrstuvwxyz012345"


@pytest.mark.parametrize(
    ("text", "kept"),
    [
        (f"Authorization: Bearer {SK}", "Authorization: Bearer ***"),
        (f"authorization=Basic {SK}", "authorization=Basic ***"),
        ("Proxy-Authorization: Digest abc.def", "Proxy-Authorization: Digest ***"),
        (f"{{'Authorization': 'Bearer {SK}'}}", "{'Authorization': 'Bearer ***'}"),
        (f'{{"authorization": "Bearer {SK}"}}', '{"authorization": "Bearer ***"}'),
        (f"x-api-key: {SK}", "x-api-key: ***"),
        ("api_key=hunter2hunter2&q=1", "api_key=***&q=1"),
        ('{"password": "letmein"}', '{"password": "***"}'),
        ("ANTHROPIC key sk-ant-api03-AbCdEfGhIjKlMnOpQrSt", "ANTHROPIC key ***"),
        ("aws AKIAIOSFODNN7EXAMPLE here", "aws *** here"),
        ("token ghp_abcdefghijklmnopqrstuvwxyz0123456789", "token ***"),
        ("curl -H 'Authorization: Bearer eyJhbGciOi.x.y'", "curl -H 'Authorization: Bearer ***'"),
        ("max_tokens=512 tokens used", "max_tokens=512 tokens used"),
        ("plain text with no secrets", "plain text with no secrets"),
    ],
)
def test_redact(text: str, kept: str) -> None:
    assert redact(text) == kept


def test_redacted_json_stays_json() -> None:
    payload = json.dumps(
        {"message": f'headers {{"Authorization": "Bearer {SK}", "x-api-key": "{SK}"}}'}
    )
    out = redact(payload)
    assert SK not in out
    assert (
        json.loads(out)["message"] == 'headers {"Authorization": "Bearer ***", "x-api-key": "***"}'
    )


def test_a_connectors_key_is_redacted_whatever_its_shape() -> None:
    from openheim.models.openai import OpenAIModel

    odd = "custom-provider-credential-Zq9"
    OpenAIModel("m", api_key=odd, base_url="http://127.0.0.1:9")
    assert redact(f"oops {odd} leaked") == "oops *** leaked"


@pytest.fixture
def captured() -> Iterator[tuple[logging.Logger, io.StringIO, logging.StreamHandler[io.StringIO]]]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(telemetry.LogContext())
    logger = logging.getLogger("openheim.telemetry-test")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    yield logger, stream, handler
    logger.removeHandler(handler)


def test_json_lines_are_redacted_everywhere(
    captured: tuple[logging.Logger, io.StringIO, logging.StreamHandler[io.StringIO]],
) -> None:
    logger, stream, handler = captured
    handler.setFormatter(JsonFormatter())
    try:
        raise ValueError(f"refused: Authorization: Bearer {SK}")
    except ValueError:
        logger.exception("call with api_key=%s failed", SK, extra={"run_id": f"run {SK}"})
    line = stream.getvalue().strip()
    assert SK not in line
    record = json.loads(line)
    assert record["message"] == "call with api_key=*** failed"
    assert "Authorization: Bearer ***" in record["exc"]
    assert record["run_id"] == "run ***"


def test_text_lines_are_redacted(
    captured: tuple[logging.Logger, io.StringIO, logging.StreamHandler[io.StringIO]],
) -> None:
    logger, stream, handler = captured
    handler.setFormatter(TextFormatter("%(message)s"))
    logger.warning("sending Authorization: Bearer %s", SK)
    assert stream.getvalue().strip() == "sending Authorization: Bearer ***"


async def test_records_inside_a_run_carry_its_context(
    spans: Spans,
    captured: tuple[logging.Logger, io.StringIO, logging.StreamHandler[io.StringIO]],
) -> None:
    logger, stream, handler = captured
    handler.setFormatter(JsonFormatter())

    @oh.tool
    def note(text: str) -> str:
        """Log a note."""
        logger.info("note: %s", text)
        return "noted"

    agent = oh.Agent(
        ScriptedModel([ToolCall("note", {"text": "hi"}), "ok"]), name="scribe", tools=[note]
    )
    result = await agent.run("go", session="sess-1")
    logger.info("after the run")
    inside, after = (json.loads(line) for line in stream.getvalue().splitlines())
    assert inside["message"] == "note: hi"
    assert inside["run_id"] == result.run_id
    assert inside["session"] == "sess-1"
    assert inside["agent"] == "scribe"
    tool = spans.one("execute_tool note")
    assert tool.context is not None
    assert inside["trace_id"] == f"{tool.context.trace_id:032x}"
    assert inside["span_id"] == f"{tool.context.span_id:016x}"
    for key in ("run_id", "session", "agent", "trace_id"):
        assert key not in after


async def test_log_context_without_tracing(
    captured: tuple[logging.Logger, io.StringIO, logging.StreamHandler[io.StringIO]],
) -> None:
    from openheim.telemetry import _logs

    logger, stream, handler = captured
    handler.setFormatter(JsonFormatter())
    from openheim.workflow import Workflow

    class Empty(msgspec.Struct):
        pass

    wf = Workflow("logged", state=Empty)

    @wf.step
    def only(state: Empty) -> None:
        logger.info("in the step")

    was = _logs.context_on
    telemetry.enable_log_context()
    try:
        res = await wf.run({})
    finally:
        _logs.context_on = was
    record = json.loads(stream.getvalue())
    assert record["workflow"] == "logged"
    assert record["step"] == "only"
    assert record["run_id"] == res.run_id
    assert "trace_id" not in record
