"""An incremental Server-Sent Events parser: bytes in, events out.

It follows the WHATWG event-stream rules: lines end with CRLF, LF or CR;
``data:`` lines of one event are joined with newlines; ``event:`` names the
event; ``id:`` and ``retry:`` are kept; lines starting with ``:`` are comments
(keep-alives); a blank line dispatches the event. Chunks may be split
anywhere, including between the CR and LF of one line ending or inside a
multi-byte UTF-8 character: lines are cut on bytes (CR and LF never occur
inside a UTF-8 sequence) and decoded only once complete. An event the stream
does not finish with a blank line is dropped, as the standard says, so a
connection cut mid-event never yields half an event.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["SSEDecoder", "SSEEvent"]

_LINE_END = re.compile(rb"\r\n|\r|\n")


@dataclass(frozen=True, slots=True)
class SSEEvent:
    """One dispatched event: its type (``"message"`` when unnamed), data, id and retry."""

    data: str
    event: str = "message"
    id: str | None = None
    retry: int | None = None


class SSEDecoder:
    """Feed it byte chunks with :meth:`feed`; it returns the events each chunk completes."""

    __slots__ = ("_buf", "_data", "_event", "_has_data", "_id", "_retry", "_skip_lf")

    def __init__(self) -> None:
        self._buf = b""
        self._skip_lf = False  # the last chunk ended with CR: a leading LF belongs to it
        self._event = ""
        self._data: list[str] = []
        self._has_data = False
        self._id: str | None = None
        self._retry: int | None = None

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        """The events completed by ``chunk`` (possibly none)."""
        if not chunk:
            return []
        if self._skip_lf:
            self._skip_lf = False
            if chunk[:1] == b"\n":
                chunk = chunk[1:]
        buf = self._buf + chunk if self._buf else chunk
        events: list[SSEEvent] = []
        pos = 0
        for m in _LINE_END.finditer(buf):
            if m.end() == len(buf) and m.group() == b"\r":
                # A CR that ends the chunk ends a line; an LF opening the next chunk
                # is the second half of the same CRLF and must not count twice.
                self._skip_lf = True
            event = self._line(buf[pos : m.start()])
            if event is not None:
                events.append(event)
            pos = m.end()
        self._buf = buf[pos:]
        return events

    def _line(self, raw: bytes) -> SSEEvent | None:
        if not raw:
            return self._dispatch()
        line = raw.decode("utf-8", "replace")
        if line[0] == ":":
            return None  # comment / keep-alive
        field, sep, value = line.partition(":")
        if sep and value[:1] == " ":
            value = value[1:]
        if field == "data":
            self._data.append(value)
            self._has_data = True
        elif field == "event":
            self._event = value
        elif field == "id":
            if "\0" not in value:
                self._id = value
        elif field == "retry" and value.isdigit():
            self._retry = int(value)
        return None

    def _dispatch(self) -> SSEEvent | None:
        if not self._has_data:
            self._event = ""
            return None
        event = SSEEvent(
            data="\n".join(self._data),
            event=self._event or "message",
            id=self._id,
            retry=self._retry,
        )
        self._data = []
        self._has_data = False
        self._event = ""
        return event
