"""Event intake: durable before the 202, idempotent per tenant for a day."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

import structlog

from crohooks import tracing
from crohooks.clock import utc_now
from crohooks.errors import DuplicateKey
from crohooks.filters import EventView, FilterFailed, FilterInvalid, compile_filter
from crohooks.model import AcceptedEvent, NewEvent
from crohooks.store.intake import Intake

IDEMPOTENCY_WINDOW = timedelta(hours=24)
log = structlog.get_logger("crohooks.intake")


def judge_event(
    *, tenant_id: int, event_id: str, event: str, data: dict[str, Any]
) -> Callable[[int, str], bool]:
    """Whether each filtering hook gets this event (``store.intake.FilterJudge``).

    A filter that fails to evaluate delivers the event (fail open: a filter must never
    lose an event its hook may want) and says so in the log, without the event's data.
    """
    view = EventView(event, data)

    def wants(hook_id: int, source: str) -> bool:
        try:
            return compile_filter(source).matches(view)
        except (FilterFailed, FilterInvalid) as error:
            log.warning(
                "hook filter failed; delivering the event",
                hook_id=hook_id,
                tenant_id=tenant_id,
                event_id=event_id,
                hook_event=event,
                error=str(error),
            )
            return True

    return wants


class EventIntake:
    def __init__(self, store: Intake) -> None:
        self._store = store

    async def publish(self, tenant_id: int, items: Sequence[NewEvent]) -> list[AcceptedEvent]:
        """Store the events with their deliveries in one transaction (which wakes the
        workers as it commits).

        A publisher racing another on the same idempotency key loses the unique index
        race once; the second try finds the winner's event and returns its id.
        """
        attributes = {"crohooks.tenant_id": tenant_id, "crohooks.events": len(items)}
        with tracing.child_of(None, "crohooks.intake", attributes=attributes) as span:
            # The deliveries' attempts continue this trace, in the worker, from the row.
            trace_context = tracing.traceparent(span) if span is not None else None
            for attempt in range(2):
                try:
                    accepted = await self._store.accept(
                        tenant_id,
                        items,
                        now=utc_now(),
                        idempotency_window=IDEMPOTENCY_WINDOW,
                        trace_context=trace_context,
                    )
                    break
                except DuplicateKey:
                    if attempt:
                        raise
            if span is not None:
                span.set_attribute("crohooks.deliveries", sum(a.hook_count for a in accepted))
        return accepted
