"""Helpers for the telemetry tests (a module of its own: no clash with other conftests)."""

from __future__ import annotations

from typing import Any

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter


class Spans:
    """The finished spans, with look-ups by name and parent."""

    def __init__(self, exporter: InMemorySpanExporter, provider: TracerProvider) -> None:
        self.exporter = exporter
        self.provider = provider

    def all(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def names(self) -> list[str]:
        return [s.name for s in self.all()]

    def named(self, name: str) -> list[ReadableSpan]:
        return [s for s in self.all() if s.name == name]

    def one(self, name: str) -> ReadableSpan:
        found = self.named(name)
        assert len(found) == 1, f"expected one span {name!r}, got {self.names()}"
        return found[0]

    def children(self, parent: ReadableSpan) -> list[ReadableSpan]:
        assert parent.context is not None
        return [
            s
            for s in self.all()
            if s.parent is not None and s.parent.span_id == parent.context.span_id
        ]

    @staticmethod
    def is_child(child: ReadableSpan, parent: ReadableSpan) -> bool:
        assert parent.context is not None
        assert child.context is not None
        return (
            child.parent is not None
            and child.parent.span_id == parent.context.span_id
            and child.context.trace_id == parent.context.trace_id
        )

    def tracer(self) -> Any:
        return self.provider.get_tracer("tests")
