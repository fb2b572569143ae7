"""OpenTelemetry: one event's trace from the publisher's request to the receiver's answer.

The SDK's in-memory exporter stands in for a collector; the API, intake, the worker's
claim and its attempt run as they do in production (in-process here, the trace context
crossing from the API to the worker through the delivery's row, as it does between
processes).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from crohooks import tracing
from crohooks.store.connector import Statement
from tests.integration.test_delivery import (
    SECRET,
    delivery_statuses,
    make_hook,
    running,
    wait_until,
)
from tests.support.receiver import Receiver

Auth = Callable[..., dict[str, str]]
PUBLISHER_TRACE = "0af7651916cd43dd8448eb211c80319c"
PUBLISHER_SPAN = "b7ad6b7169203331"
TRACE_CONTEXTS = Statement.shared("trace_contexts", "SELECT trace_context FROM deliveries")


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.install(provider)
    try:
        yield exporter
    finally:
        tracing.install(None)
        provider.shutdown()


async def _publish_and_deliver(
    database_url: str, auth: Auth, receiver: Receiver, *, trace_receivers: bool
) -> list[str | None]:
    """One Job event, published with the publisher's ``traceparent``, delivered to one
    hook; the deliveries' stored trace contexts."""
    async with running(database_url, trace_receivers=trace_receivers) as env:
        hook_id = await make_hook(env, auth, receiver.url_for("/traced"), ["Job"])
        published = await env.client.post(
            "/events",
            json={"event": "Job", "data": {"id": 7}},
            headers={
                **auth(roles=["System"]),
                "traceparent": f"00-{PUBLISHER_TRACE}-{PUBLISHER_SPAN}-01",
            },
        )
        assert published.status_code == 202, published.text

        async def delivered() -> bool:
            return (await delivery_statuses(env, auth, hook_id))["succeeded"] == 1

        await wait_until(delivered)
        return [row["trace_context"] for row in await env.services.db.fetch(TRACE_CONTEXTS)]


async def test_one_trace_runs_from_the_publish_to_the_attempt(
    database_url: str, auth: Auth, spans: InMemorySpanExporter
) -> None:
    async with Receiver() as receiver:
        stored = await _publish_and_deliver(database_url, auth, receiver, trace_receivers=True)

    trace = sorted(
        (s for s in spans.get_finished_spans() if s.context.trace_id == int(PUBLISHER_TRACE, 16)),
        key=lambda s: s.start_time or 0,
    )
    by_name = {span.name: span for span in trace}
    assert [span.name for span in trace] == [
        "POST /events",
        "crohooks.intake",
        "crohooks.claim",
        "crohooks.attempt",
    ]
    request, intake = by_name["POST /events"], by_name["crohooks.intake"]
    parents = {span.name: span.parent.span_id if span.parent else None for span in trace}
    assert parents == {
        "POST /events": int(PUBLISHER_SPAN, 16),
        "crohooks.intake": request.context.span_id,
        "crohooks.claim": intake.context.span_id,
        "crohooks.attempt": intake.context.span_id,
    }
    attempt = by_name["crohooks.attempt"]
    assert attempt.attributes is not None
    assert attempt.attributes["http.response.status_code"] == 200
    assert attempt.attributes["crohooks.outcome"] == "succeeded"
    assert request.attributes is not None
    assert request.attributes["http.response.status_code"] == 202
    # The delivery row holds the intake's context; the receiver got the attempt's.
    assert stored == [f"00-{PUBLISHER_TRACE}-{intake.context.span_id:016x}-01"]
    [received] = receiver.requests
    assert received.header("traceparent") == (
        f"00-{PUBLISHER_TRACE}-{attempt.context.span_id:016x}-01"
    )
    # Ids, statuses and durations only: no secret and no body in any span.
    for span in trace:
        for value in (span.attributes or {}).values():
            assert SECRET not in str(value)
            assert '"id": 7' not in str(value)


async def test_a_receiver_gets_no_traceparent_unless_asked(
    database_url: str, auth: Auth, spans: InMemorySpanExporter
) -> None:
    async with Receiver() as receiver:
        await _publish_and_deliver(database_url, auth, receiver, trace_receivers=False)
    [received] = receiver.requests
    assert received.header("traceparent") is None
    assert {s.name for s in spans.get_finished_spans()} >= {"crohooks.attempt"}


async def test_with_tracing_off_nothing_is_traced_or_stored(database_url: str, auth: Auth) -> None:
    assert tracing.tracer() is None
    async with Receiver() as receiver:
        stored = await _publish_and_deliver(database_url, auth, receiver, trace_receivers=True)
    assert stored == [None]
    [received] = receiver.requests
    assert received.header("traceparent") is None


@pytest.mark.parametrize(
    "environ",
    [
        {},
        {"OTEL_TRACES_EXPORTER": "none"},
        {"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "console"},
    ],
)
def test_tracing_stays_off_unless_the_environment_asks(environ: dict[str, str]) -> None:
    assert tracing.configure_from_environment(environ) is False
    assert tracing.tracer() is None


def test_without_the_extra_tracing_stays_off(monkeypatch: pytest.MonkeyPatch) -> None:
    """The variables ask for traces, but OpenTelemetry is not installed: no error, off."""
    for name in ("opentelemetry", "opentelemetry.trace", "opentelemetry.sdk.trace"):
        monkeypatch.setitem(sys.modules, name, None)
    assert tracing.configure_from_environment({"OTEL_TRACES_EXPORTER": "console"}) is False
    assert tracing.tracer() is None
