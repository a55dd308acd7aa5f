"""Fixtures for the telemetry tests: an in-memory span exporter and the metrics switched on.

openheim's spans go to a tracer provider of the test's own (``telemetry.configure``),
never to the global one, so other tests of the suite run untraced.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from telhelpers import Spans

from openheim import telemetry
from openheim.telemetry import _metrics, _trace


@pytest.fixture
def spans(monkeypatch: pytest.MonkeyPatch) -> Iterator[Spans]:
    monkeypatch.delenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", raising=False)
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    telemetry.configure(tracer_provider=provider)
    yield Spans(exporter, provider)
    _trace._reset()
    provider.shutdown()


@pytest.fixture
def metrics() -> Iterator[_metrics.Metrics]:
    _metrics.disable_metrics()  # fresh values for this test
    m = _metrics.enable_metrics()
    yield m
    _metrics.disable_metrics()
