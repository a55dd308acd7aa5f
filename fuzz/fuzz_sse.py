"""atheris fuzz target: the SSE parser (openheim.models._sse.SSEDecoder).

    python fuzz/fuzz_sse.py -runs=1000000

Properties on every input: ``feed`` never raises; the events do not depend on
how the bytes are cut into chunks (whole, at fuzzer-chosen points, byte by
byte); each event's fields have their documented types (``id`` without NUL,
``retry`` a non-negative int, ``event`` non-empty).
"""

from __future__ import annotations

import sys

from openheim.models._sse import SSEDecoder, SSEEvent


def _events(chunks: list[bytes]) -> list[SSEEvent]:
    dec = SSEDecoder()
    out: list[SSEEvent] = []
    for chunk in chunks:
        got = dec.feed(chunk)
        assert isinstance(got, list)
        out.extend(got)
    return out


def check(data: bytes) -> None:
    """The property check on one input (also driven by hypothesis in CI)."""
    if not data:
        assert SSEDecoder().feed(b"") == []
        return
    cuts = sorted({b % (len(data) + 1) for b in data[:8]})
    body = data[8:] if len(data) > 8 else data
    whole = _events([body])
    pieces, last = [], 0
    for cut in cuts:
        cut = min(cut, len(body))
        pieces.append(body[last:cut])
        last = max(last, cut)
    pieces.append(body[last:])
    assert _events(pieces) == whole, (pieces, whole)
    if len(body) <= 512:
        assert _events([body[i : i + 1] for i in range(len(body))]) == whole
    for ev in whole:
        assert isinstance(ev.data, str)
        assert isinstance(ev.event, str)
        assert ev.event
        assert ev.id is None or "\0" not in ev.id
        assert ev.retry is None or (isinstance(ev.retry, int) and ev.retry >= 0)


def main() -> None:
    import atheris

    atheris.instrument_func(check)
    with atheris.instrument_imports():
        import openheim.models._sse  # noqa: F401
    atheris.Setup(sys.argv, check)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
