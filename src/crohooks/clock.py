"""Time inside crohooks is timezone-aware UTC; the naive CRO format exists only at the wire."""

from __future__ import annotations

from datetime import UTC, datetime


def utc_now() -> datetime:
    return datetime.now(UTC)


def to_cro(moment: datetime | None) -> str | None:
    """CRO's timestamp format: naive UTC ISO 8601 with microseconds."""
    if moment is None:
        return None
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds")
