"""A pure-Python twin of the native TokenBuffer, written for clarity, not speed.

It states the text rules directly on str (decode with "replace", then
``str.find`` for stops) so the tests can compare the native buffer with it
after every append. It covers the non-blocking surface: no waiting, no
discarding (it keeps all text).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from openheim.errors import ConfigError, StreamClosed, StreamFailed


class RefTokenBuffer:
    def __init__(
        self, *, stop: str | Sequence[str] = (), keep_tokens: bool = True, **_: object
    ) -> None:
        stops = (stop,) if isinstance(stop, str) else tuple(stop)
        for s in stops:
            if not isinstance(s, str) or not s:
                raise ConfigError(f"stop strings must be non-empty str, got {s!r}")
            try:
                s.encode()
            except UnicodeEncodeError:
                raise ConfigError(f"stop string {s!r} is not valid Unicode") from None
        self.stop = stops
        self._pending = b""  # a valid but incomplete UTF-8 sequence
        self._keep = keep_tokens
        self._ids: list[int] = []
        self._n_tokens = 0
        self._text = ""  # repaired text: emitted, then held back
        self._emitted = 0
        self._end: str | None = None  # "finished" | "stopped" | "failed"
        self._reason: str | None = None
        self._stop_index = -1
        self._error: BaseException | None = None

    # -- writing --------------------------------------------------------------

    def append(self, token_id: int, piece: bytes | str) -> bool:
        if self._end is not None:
            return False
        self._n_tokens += 1
        if self._keep:
            self._ids.append(token_id)
        data = piece.encode() if isinstance(piece, str) else bytes(piece)
        self._text += self._repair(data)
        self._settle(final=False)
        return self._end is None

    def append_many(self, token_ids: Iterable[int], pieces: Iterable[bytes | str]) -> bool:
        for token_id, piece in zip(token_ids, pieces, strict=True):
            if not self.append(token_id, piece):
                return False
        return self._end is None

    def finish(self, reason: str = "stop") -> bool:
        return self._end_with("finished", reason)

    def fail(self, error: BaseException | str) -> bool:
        if self._end is not None:
            return False
        self._error = StreamFailed(error) if isinstance(error, str) else error
        return self._end_with("failed", "error")

    def _end_with(self, how: str, reason: str) -> bool:
        if self._end is not None:
            return False
        self._text += self._pending.decode("utf-8", "replace")
        self._pending = b""
        self._settle(final=True)
        if self._end is None or how == "failed":
            self._end, self._reason = how, reason
        return True

    def _repair(self, data: bytes) -> str:
        """Decode all but a tail that is a proper prefix of a valid character.

        (Not codecs' incremental decoder: that one holds some already-invalid
        tails such as b"\\xed\\xa0" until more bytes come.)
        """
        buf = self._pending + data
        for k in (3, 2, 1):
            try:
                buf[-k:].decode("utf-8")
            except UnicodeDecodeError as exc:
                if len(buf) >= k and exc.start == 0 and exc.reason == "unexpected end of data":
                    self._pending = buf[-k:]
                    return buf[:-k].decode("utf-8", "replace")
        self._pending = b""
        return buf.decode("utf-8", "replace")

    def _settle(self, final: bool) -> None:
        """Emit what is safe; end at the stop string that starts leftmost."""
        text, start = self._text, self._emitted
        best: tuple[int, int, int] | None = None  # (position, length, index)
        for k, s in enumerate(self.stop):
            i = text.find(s, start)
            if i >= 0 and (best is None or (i, len(s), k) < best):
                best = (i, len(s), k)
        # The longest tail of the text that could begin (or be) a stop string.
        hold = 0
        for s in self.stop:
            for j in range(min(len(s), len(text) - start), hold, -1):
                if text.endswith(s[:j]):
                    hold = j
                    break
        if best is not None and (final or len(text) - hold >= best[0]):
            self._text = text[: best[0]]
            self._emitted = best[0]
            self._end, self._stop_index = "stopped", best[2]
            return
        self._emitted = len(text) if final else len(text) - hold

    # -- state ----------------------------------------------------------------

    @property
    def finished(self) -> bool:
        return self._end is not None

    @property
    def finish_reason(self) -> str | None:
        return "stop" if self._end == "stopped" else self._reason

    @property
    def stop_matched(self) -> str | None:
        return None if self._stop_index < 0 else self.stop[self._stop_index]

    @property
    def n_tokens(self) -> int:
        return self._n_tokens

    @property
    def n_chars(self) -> int:
        return self._emitted

    def tokens(self) -> list[int]:
        return list(self._ids)

    def getvalue(self) -> str:
        return self._text[: self._emitted]

    def reader(self, offset: int = 0) -> RefReader:
        if not 0 <= offset <= self._emitted:
            raise ConfigError(f"offset {offset} is past the end of this token stream")
        return RefReader(self, offset)


class RefReader:
    def __init__(self, buf: RefTokenBuffer, offset: int) -> None:
        self._buf = buf
        self.offset = offset

    def read_nowait(self) -> str:
        b = self._buf
        if self.offset < b._emitted:
            s = b._text[self.offset : b._emitted]
            self.offset = b._emitted
            return s
        if b._end is None:
            return ""
        if b._error is not None:
            raise b._error
        raise StreamClosed("the token stream has finished and this reader has read it all")

    def close(self) -> None:
        pass
