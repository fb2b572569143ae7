"""One signed POST to a hook URL, and the log record of what happened."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from http import HTTPStatus

from crohooks.clock import utc_now
from crohooks.delivery.outbound import HttpResponse, OutboundClient
from crohooks.delivery.signing import sign_delivery
from crohooks.errors import OutboundError
from crohooks.model import AttemptRecord

NO_EXCEPTION = "No exceptions raised."
"""CRO's ping ``message`` whenever a response came; the log keeps it for a 2xx."""
NO_RESPONSE = -1
REDACTED = "[redacted]"
"""What the delivery log shows of a hook's own header (a credential) that was sent."""


def answered(status: int) -> str:
    """What the log says of an answer that was not a 2xx: ``HTTP 500 Internal Server Error``."""
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        return f"HTTP {status}"
    return f"HTTP {status} {phrase}"


@dataclass(frozen=True, slots=True)
class AttemptResult:
    record: AttemptRecord
    response: HttpResponse | None
    headers: dict[str, str]

    @property
    def succeeded(self) -> bool:
        return self.response is not None and self.response.is_success


async def send_attempt(
    client: OutboundClient,
    *,
    url: str,
    body: bytes,
    secret: str,
    previous_secrets: tuple[str, ...],
    delivery_id: str,
    event: str,
    hook_id: int,
    timeout: float,  # noqa: ASYNC109 - the outbound client enforces it
    extra_headers: Mapping[str, str] | None = None,
    receiver_headers: Mapping[str, str] | None = None,
) -> AttemptResult:
    """Sign at send time (``webhook-timestamp`` is this attempt's), POST, never raise.
    ``extra_headers`` (a ``traceparent``) go along, outside the signature; so do the
    hook's ``receiver_headers`` (its static headers and auth), which are credentials: the
    log record shows their names only."""
    started_at = utc_now()
    headers = sign_delivery(
        body,
        secret=secret,
        previous_secrets=previous_secrets,
        delivery_id=delivery_id,
        event=event,
        hook_id=hook_id,
        timestamp=int(started_at.timestamp()),
    )
    if extra_headers:
        headers = {**headers, **extra_headers}
    logged = headers
    if receiver_headers:
        logged = {**headers, **dict.fromkeys(receiver_headers, REDACTED)}
        headers = {**headers, **receiver_headers}
    clock = time.monotonic()
    response: HttpResponse | None = None
    try:
        response = await client.post(url, body, headers, timeout=timeout)
    except OutboundError as error:
        message = error.message
    else:
        message = NO_EXCEPTION if response.is_success else answered(response.status)
    duration_ms = (time.monotonic() - clock) * 1000.0
    record = AttemptRecord(
        started_at=started_at,
        duration_ms=round(duration_ms, 3),
        http_status=response.status if response is not None else NO_RESPONSE,
        message=message,
        request_headers=logged,
        response_headers=list(response.headers) if response is not None else None,
        response_body=response.body.decode("utf-8", errors="replace")
        if response is not None
        else None,
    )
    return AttemptResult(record=record, response=response, headers=headers)
