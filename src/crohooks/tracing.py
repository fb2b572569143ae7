"""OpenTelemetry traces, when the ``otel`` extra is installed and the ``OTEL_*`` variables
ask for them; otherwise nothing, at the cost of one ``is None`` test per span site.

One event's trace runs across processes: the API request (continuing a ``traceparent`` the
publisher sent), the intake under it, and for each delivery a claim span and an attempt
span in the worker, parented by the intake's context, which is stored with the delivery
(``deliveries.trace_context``, a W3C ``traceparent``). Spans carry ids, statuses and
durations, never secrets or bodies.

Turned on by the standard variables only: ``OTEL_TRACES_EXPORTER`` (``otlp``, ``console``;
``none`` or unset: off unless an ``OTEL_EXPORTER_OTLP_*ENDPOINT`` is set) and
``OTEL_SDK_DISABLED=true`` to force it off; the exporters read their own ``OTEL_*``
settings (endpoint, headers, protocol: HTTP/protobuf). A process that already installed a
tracer provider (``opentelemetry-instrument``, a test) is used as it is.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from opentelemetry.trace import Span, Tracer, TracerProvider

SERVICE_NAME = "crohooks"
_tracer: Tracer | None = None


def tracer() -> Tracer | None:
    """The process's tracer, or ``None`` when tracing is off."""
    return _tracer


def install(provider: TracerProvider | None) -> None:
    """Trace into ``provider`` from now on (``None``: stop tracing)."""
    global _tracer
    _tracer = provider.get_tracer("crohooks") if provider is not None else None


def configure_from_environment(environ: Mapping[str, str] = os.environ) -> bool:
    """Turn tracing on if the extra is installed and ``OTEL_*`` asks for it; whether it is."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        install(None)
        return False
    try:
        from opentelemetry import trace
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
    except ImportError:
        return False
    current = trace.get_tracer_provider()
    if isinstance(current, SdkTracerProvider):
        install(current)  # set up by the process already
        return True
    exporters = _exporter_names(environ)
    if not exporters:
        return False
    attributes = {} if environ.get("OTEL_SERVICE_NAME") else {"service.name": SERVICE_NAME}
    provider = SdkTracerProvider(resource=Resource.create(attributes))
    for name in exporters:
        if name == "console":
            provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
        elif name == "otlp":
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        else:
            raise ValueError(f"OTEL_TRACES_EXPORTER: unknown exporter {name!r}")
    trace.set_tracer_provider(provider)
    install(provider)
    return True


def _exporter_names(environ: Mapping[str, str]) -> list[str]:
    names = [n.strip() for n in environ.get("OTEL_TRACES_EXPORTER", "").split(",") if n.strip()]
    if not names and (
        environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        or environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    ):
        names = ["otlp"]
    return [name for name in names if name != "none"]


def shutdown() -> None:
    """Export what is buffered (at a process's end)."""
    if _tracer is None:
        return
    from opentelemetry import trace

    provider: Any = trace.get_tracer_provider()
    if hasattr(provider, "shutdown"):
        provider.shutdown()


def extract(headers: Mapping[str, str]) -> Any:
    """The context a ``traceparent`` header names (or an empty one)."""
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    return TraceContextTextMapPropagator().extract(dict(headers))


def traceparent(span: Span) -> str | None:
    """``span``'s W3C ``traceparent``, to store with a delivery or send to a receiver."""
    from opentelemetry.trace import format_span_id, format_trace_id

    context = span.get_span_context()
    if not context.is_valid:
        return None
    flags = int(context.trace_flags)
    return f"00-{format_trace_id(context.trace_id)}-{format_span_id(context.span_id)}-{flags:02x}"


@contextmanager
def child_of(
    stored: str | None,
    name: str,
    *,
    attributes: Mapping[str, Any],
    kind: str = "INTERNAL",
    start: datetime | None = None,
) -> Iterator[Span | None]:
    """A span under the context ``stored`` (a ``traceparent``); nothing if tracing is off."""
    found = _tracer
    if found is None:
        yield None
        return
    from opentelemetry.trace import SpanKind

    parent = extract({"traceparent": stored}) if stored else None
    start_ns = int(start.timestamp() * 1e9) if start is not None else None
    with found.start_as_current_span(
        name,
        context=parent,
        kind=SpanKind[kind],
        attributes=dict(attributes),
        start_time=start_ns,
    ) as span:
        yield span
