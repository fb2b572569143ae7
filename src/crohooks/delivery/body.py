"""The body a hook URL receives (spec 3.1): the wire format of every delivery and ping."""

from __future__ import annotations

from json.encoder import encode_basestring_ascii as _json_string


def render_delivery_body(
    *,
    data_json: str,
    delivery_id: str,
    event: str,
    event_id: str,
    hook_id: int,
    tenant_id: int,
    timestamp: str,
    ordering_key: str | None = None,
    sequence: int | None = None,
) -> str:
    """The body of spec 3.1, identical to ``json.dumps(body, sort_keys=True)``; a keyed
    delivery also carries its ``ordering_key`` and ``sequence`` (spec 3.5).

    ``data_json`` is the publisher's object already rendered with ``sort_keys=True``; it is
    rendered once per event and spliced into each hook's body. The other keys are written
    in sorted order with ``json``'s own string and integer encoders, which is what
    ``json.dumps`` does for them, without building a dict per delivery.
    """
    return (
        '{"data": '
        + data_json
        + ', "delivery_id": '
        + _json_string(delivery_id)
        + ', "event": '
        + _json_string(event)
        + ', "event_id": '
        + _json_string(event_id)
        + ', "hook_id": '
        + int.__repr__(hook_id)
        + _ordering(ordering_key, sequence)
        + ', "tenant_id": '
        + int.__repr__(tenant_id)
        + ', "timestamp": '
        + _json_string(timestamp)
        + "}"
    )


def _ordering(ordering_key: str | None, sequence: int | None) -> str:
    if ordering_key is None or sequence is None:
        return ""
    return (
        ', "ordering_key": '
        + _json_string(ordering_key)
        + ', "sequence": '
        + int.__repr__(sequence)
    )
