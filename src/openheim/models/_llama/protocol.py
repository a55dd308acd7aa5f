"""The reply format a local model is constrained to, and its streaming parser.

With tools (or an output schema) a local model's whole reply is one JSON object,
enforced by constrained decoding so it always parses and validates:

- ``{"tool": "<name>", "arguments": {...}}``: a tool call;
- ``{"answer": ...}``: the final answer (a string, or the output schema's value).

:func:`reply_schema` builds the JSON schema of that union; :class:`ReplyParser`
turns the reply text, as it streams, into text deltas (the answer) and tool-call
deltas (name first, then argument fragments), the same events the remote
connectors produce.
"""

from __future__ import annotations

import json
import re
from typing import Any

from openheim.models.base import TextDelta, ToolCallDelta, ToolDefinition

__all__ = ["ReplyParser", "parse_reply", "reply_schema"]

_TOOL_HEAD = re.compile(r'\s*\{\s*"tool"\s*:\s*"((?:[^"\\]|\\.)*)"\s*,\s*"arguments"\s*:\s*')
_ANSWER_HEAD = re.compile(r'\s*\{\s*"answer"\s*:\s*')


_SMALL_RANGE = 256


def _prepare(schema: Any) -> Any:
    """Drop titles; spell small integer ranges as enums.

    The grammar converter enforces types, required keys, enums, string
    lengths and nesting, but not numeric bounds; a bounded integer range of at
    most 256 values becomes an enum, which it does enforce. Wider numeric
    bounds are left to the tool's own argument validation.
    """
    if isinstance(schema, list):
        return [_prepare(v) for v in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _prepare(v) for k, v in schema.items() if k != "title"}
    lo, hi = out.get("minimum"), out.get("maximum")
    if (
        out.get("type") == "integer"
        and isinstance(lo, int)
        and isinstance(hi, int)
        and 0 <= hi - lo < _SMALL_RANGE
    ):
        return {"enum": list(range(lo, hi + 1))}
    return out


def reply_schema(
    tools: list[ToolDefinition], output_schema: dict[str, Any] | None, *, allow_answer: bool = True
) -> dict[str, Any]:
    """The JSON schema of every reply the model may give this turn."""
    options: list[dict[str, Any]] = []
    defs: dict[str, Any] = {}
    for tool in tools:
        params: dict[str, Any] = dict(tool.parameters) if tool.parameters else {"type": "object"}
        defs.update(params.pop("$defs", None) or {})
        options.append(
            {
                "type": "object",
                "properties": {"tool": {"const": tool.name}, "arguments": params},
                "required": ["tool", "arguments"],
                "additionalProperties": False,
            }
        )
    if allow_answer:
        answer: dict[str, Any] = {"type": "string"}
        if output_schema is not None:
            answer = dict(output_schema)
            defs.update(answer.pop("$defs", None) or {})
        options.append(
            {
                "type": "object",
                "properties": {"answer": answer},
                "required": ["answer"],
                "additionalProperties": False,
            }
        )
    schema: dict[str, Any] = options[0] if len(options) == 1 else {"anyOf": options}
    if defs:
        schema = {**schema, "$defs": defs}
    result: dict[str, Any] = _prepare(schema)
    return result


def parse_reply(text: str) -> tuple[str, Any]:
    """``("tool", (name, arguments))`` or ``("answer", value)`` from a whole reply.

    Raises ValueError when the text is not one of the two shapes.
    """
    doc = json.loads(text)
    if isinstance(doc, dict) and "tool" in doc and isinstance(doc.get("arguments"), dict):
        return "tool", (str(doc["tool"]), doc["arguments"])
    if isinstance(doc, dict) and "answer" in doc:
        return "answer", doc["answer"]
    raise ValueError(f"reply is neither a tool call nor an answer: {text[:200]!r}")


class ReplyParser:
    """Incremental parser of a constrained reply.

    ``feed(chunk)`` returns the events the new text completes: for a tool
    call, one :class:`ToolCallDelta` with the name, then argument fragments;
    for a string answer, :class:`TextDelta` pieces of the decoded string; for
    a structured answer, the raw JSON of the value as text.
    """

    def __init__(self, call_id: str) -> None:
        self._buf = ""
        self._mode = ""  # "", "tool", "answer-str", "answer-json", "done"
        self._pos = 0  # next unprocessed index in _buf
        self._depth = 0
        self._in_str = False
        self._escape = False
        self._call_id = call_id

    def feed(self, chunk: str) -> list[TextDelta | ToolCallDelta]:
        self._buf += chunk
        events: list[TextDelta | ToolCallDelta] = []
        if not self._mode:
            m = _TOOL_HEAD.match(self._buf)
            if m:
                self._mode = "tool"
                self._pos = m.end()
                events.append(ToolCallDelta(0, id=self._call_id, name=json.loads(f'"{m[1]}"')))
            else:
                m = _ANSWER_HEAD.match(self._buf)
                if m and len(self._buf) > m.end():
                    self._pos = m.end()
                    if self._buf[self._pos] == '"':
                        self._mode = "answer-str"
                        self._pos += 1
                    else:
                        self._mode = "answer-json"
        if self._mode == "tool":
            piece = self._scan_json_value()
            if piece:
                events.append(ToolCallDelta(0, arguments_delta=piece))
        elif self._mode == "answer-json":
            piece = self._scan_json_value()
            if piece:
                events.append(TextDelta(piece))
        elif self._mode == "answer-str":
            piece = self._scan_string()
            if piece:
                events.append(TextDelta(piece))
        return events

    def _scan_json_value(self) -> str:
        """Emit characters of the JSON value starting at _pos, up to its end."""
        buf, i, start = self._buf, self._pos, self._pos
        while i < len(buf):
            c = buf[i]
            if self._in_str:
                if self._escape:
                    self._escape = False
                elif c == "\\":
                    self._escape = True
                elif c == '"':
                    self._in_str = False
            elif c == '"':
                self._in_str = True
            elif c in "{[":
                self._depth += 1
            elif c in "}]":
                self._depth -= 1
                if self._depth == 0:
                    i += 1
                    self._mode = "done"
                    break
            elif self._depth == 0 and c in ",}":
                self._mode = "done"
                break
            i += 1
        self._pos = i
        return buf[start:i]

    def _scan_string(self) -> str:
        """Decode the JSON string starting at _pos; hold back a partial escape."""
        buf, i = self._buf, self._pos
        out: list[str] = []
        while i < len(buf):
            c = buf[i]
            if c == '"':
                self._mode = "done"
                i += 1
                break
            if c == "\\":
                if i + 1 >= len(buf):
                    break
                nxt = buf[i + 1]
                if nxt == "u":
                    if i + 6 > len(buf):
                        break
                    code = int(buf[i + 2 : i + 6], 16)
                    if 0xD800 <= code < 0xDC00:  # surrogate pair: need the low half too
                        if i + 12 > len(buf):
                            break
                        out.append(json.loads(f'"{buf[i : i + 12]}"'))
                        i += 12
                        continue
                    out.append(chr(code))
                    i += 6
                    continue
                out.append(json.loads(f'"\\{nxt}"'))
                i += 2
                continue
            out.append(c)
            i += 1
        self._pos = i
        return "".join(out)
