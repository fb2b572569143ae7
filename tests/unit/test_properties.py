"""Properties of the arithmetic and parsing between the wire and the store.

Signing and the SSRF policy have their own properties (test_signing, test_ssrf); these
cover paging, the request models and their documented schema, timestamps, the splice
that renders delivery bodies, and the JSON depth limit.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, TypeVar

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from pydantic import BaseModel

from crohooks.api.models import (
    CreateWebhookModel,
    PublishBatchModel,
    PublishEventModel,
    RecoverModel,
    UpdateWebhookModel,
    parse_cro_time,
)
from crohooks.api.openapi import SECRET_SCHEMA
from crohooks.api.request import MAX_JSON_DEPTH, Page, _check_depth, page_of, validate
from crohooks.clock import to_cro
from crohooks.delivery.body import render_delivery_body
from crohooks.errors import BadRequest
from crohooks.hooks.rules import check_secret, generate_secret

T = TypeVar("T")
limits = st.integers(min_value=1, max_value=1000)
indexes = st.integers(min_value=1, max_value=10000)
totals = st.integers(min_value=0, max_value=10**7)

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4)
    ),
    max_leaves=25,
)


def _outcome(call: Callable[..., T], *args: Any) -> T | BadRequest:
    try:
        return call(*args)
    except BadRequest as error:
        return error


# -- paging --------------------------------------------------------------------------------


@given(limit=limits, index=indexes, total=totals)
def test_a_page_holds_what_its_offset_says(limit: int, index: int, total: int) -> None:
    page = Page(limit=limit, index=index)
    envelope = page.envelope([], total)

    assert page.offset == (index - 1) * limit
    assert envelope["total_pages"] == math.ceil(total / limit)
    assert envelope["current_limit"] == limit
    assert envelope["current_page"] == index
    on_this_page = max(0, min(limit, total - page.offset))
    assert (on_this_page > 0) == (index <= envelope["total_pages"])
    if index == envelope["total_pages"]:
        assert 0 < on_this_page <= limit
        assert page.offset + on_this_page == total


@given(limit=limits, total=st.integers(min_value=0, max_value=10**4))
def test_the_pages_partition_the_results(limit: int, total: int) -> None:
    pages = Page(limit=limit, index=1).envelope([], total)["total_pages"]
    covered = [
        (page.offset, min(page.offset + limit, total))
        for page in (Page(limit=limit, index=index) for index in range(1, pages + 1))
    ]
    position = 0
    for start, end in covered:
        assert start == position < end
        position = end
    assert position == total


numbers_ish = st.one_of(
    st.integers(min_value=-5, max_value=20000).map(str),
    st.integers(min_value=0, max_value=2000).map(lambda n: f" {n} "),
    st.text(max_size=6),
    st.sampled_from(["", "1.0", "1e3", "+5", "٣", "0x10", "00010"]),
)


@given(limit=numbers_ish | st.none(), index=numbers_ish | st.none())
def test_paging_parameters_are_in_range_or_a_400(limit: str | None, index: str | None) -> None:
    params = {
        name: value
        for name, value in (("page_limit", limit), ("page_index", index))
        if value is not None
    }
    page = _outcome(page_of, params)
    if isinstance(page, BadRequest):
        assert page.field in {"QueryParameters.page_limit", "QueryParameters.page_index"}
        return
    assert 1 <= page.limit <= 1000
    assert 1 <= page.index <= 10000
    assert page.limit == (100 if limit is None else int(limit.strip()))
    assert page.index == (1 if index is None else int(index.strip()))


# -- request models ------------------------------------------------------------------------

offsets = st.integers(min_value=-(23 * 60 + 59), max_value=23 * 60 + 59).map(
    lambda minutes: timezone(timedelta(minutes=minutes))
)
edge_datetimes = st.builds(
    datetime.replace,
    st.sampled_from([datetime.min, datetime.max]),
    tzinfo=st.none() | offsets,
)
timestamps = st.one_of(
    st.datetimes(timezones=st.none() | offsets).map(datetime.isoformat),
    edge_datetimes.map(datetime.isoformat),
    st.text(max_size=40),
)
FIELD_VALUES: dict[type[BaseModel], dict[str, st.SearchStrategy[Any]]] = {
    CreateWebhookModel: {
        "events": st.lists(st.sampled_from(["Job", "Truck", "Ping", "job", 1])),
        "url": st.text() | st.sampled_from(["https://a.example/", "http://a..b/", "http://[::1"]),
        "secret": st.text() | st.just(generate_secret()),
    },
    UpdateWebhookModel: {
        "url": st.text() | st.just("https://a.example/\ud800"),
        "events": st.none() | st.lists(st.sampled_from(["Job", "Customer"])),
        "secret": st.none() | st.text(),
    },
    PublishEventModel: {
        "event": st.sampled_from(["Job", "Ping", "Customer"]),
        "data": st.dictionaries(st.text(), json_values, max_size=3),
        "idempotency_key": st.text(max_size=300),
    },
    RecoverModel: {"since": timestamps, "until": st.none() | timestamps},
}


def bodies(model: type[BaseModel]) -> st.SearchStrategy[dict[str, Any]]:
    fields = FIELD_VALUES[model]
    known = st.fixed_dictionaries({}, optional=fields)
    anything = st.dictionaries(st.sampled_from([*fields, "extra"]), json_values, max_size=4)
    return known | anything


@pytest.mark.parametrize("model", list(FIELD_VALUES), ids=lambda model: model.__name__)
@given(data=st.data())
def test_request_models_accept_or_answer_400(model: type[BaseModel], data: st.DataObject) -> None:
    """Never an exception that would become a 500, and nothing accepted a store refuses."""
    parsed = _outcome(validate, model, data.draw(bodies(model)))
    if isinstance(parsed, BadRequest):
        assert (parsed.field or "").startswith(f"{model.__name__}")
        return
    for name in ("url", "idempotency_key"):
        value = getattr(parsed, name, None)
        if value is not None:
            value.encode("utf-8")
            assert "\x00" not in value
    if isinstance(parsed, RecoverModel):
        parse_cro_time(parsed.since)


@given(
    events=st.lists(st.dictionaries(st.sampled_from(["event", "data"]), json_values), max_size=4)
)
def test_batches_accept_or_answer_400(events: list[dict[str, Any]]) -> None:
    parsed = _outcome(validate, PublishBatchModel, {"events": events})
    if isinstance(parsed, BadRequest):
        assert parsed.field == "PublishBatchModel.events"
    else:
        assert len(parsed.events) == len(events)


@given(moment=st.datetimes(timezones=offsets))
def test_cro_timestamps_round_trip(moment: datetime) -> None:
    try:
        utc = moment.astimezone(UTC)
    except OverflowError:
        assume(False)
    rendered = to_cro(moment)
    assert rendered is not None
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}", rendered)
    assert parse_cro_time(rendered) == utc


@given(text=timestamps)
def test_parse_cro_time_raises_only_value_errors(text: str) -> None:
    try:
        parsed = parse_cro_time(text)
    except ValueError:
        return
    assert parsed.tzinfo is UTC


# -- documented schema against the rules ---------------------------------------------------

SECRET_PATTERN = str(SECRET_SCHEMA["pattern"])
base64_alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="
secret_candidates = st.one_of(
    st.from_regex(SECRET_PATTERN),
    st.text(alphabet=base64_alphabet, min_size=8, max_size=280),
    st.text(alphabet=base64_alphabet + " \t\n", min_size=8, max_size=30),
    st.text(max_size=20),
)


@given(secret=secret_candidates)
def test_the_documented_secret_pattern_is_the_rule(secret: str) -> None:
    """Documented means accepted; accepted means documented, but for excess padding."""
    documented = re.search(SECRET_PATTERN, secret) is not None
    try:
        stripped = check_secret(secret)
    except ValueError:
        assert not documented
        return
    excess_padding = stripped.endswith("=") and len(stripped.rstrip("=")) % 4 == 0
    assert documented or excess_padding


@pytest.mark.parametrize("secret", ["AAAAAAAAAAAA==", "AAAAAAAAAAAA=", "VGhlIGxhenkgYnJv======="])
def test_secrets_with_excess_padding_are_refused(secret: str) -> None:
    with pytest.raises(ValueError, match="base64"):
        check_secret(secret)


# -- rendering -----------------------------------------------------------------------------


@given(
    data=st.dictionaries(st.text(), json_values, max_size=5),
    hook_id=st.integers(min_value=1, max_value=10**18),
    tenant_id=st.integers(min_value=0, max_value=2**63 - 1),
    event=st.sampled_from(["Ping", "Customer", "CustomerLocation", "Job", "Truck"]),
    ids=st.tuples(st.uuids(), st.uuids()),
)
def test_the_spliced_delivery_body_is_the_one_json_rendering(
    data: dict[str, Any], hook_id: int, tenant_id: int, event: str, ids: tuple[Any, Any]
) -> None:
    fields: dict[str, Any] = {
        "delivery_id": str(ids[0]),
        "event": event,
        "event_id": str(ids[1]),
        "hook_id": hook_id,
        "tenant_id": tenant_id,
        "timestamp": "2022-08-20T01:45:52.000000",
    }
    spliced = render_delivery_body(data_json=json.dumps(data, sort_keys=True), **fields)
    assert spliced == json.dumps({"data": data, **fields}, sort_keys=True)
    assert json.loads(spliced)["data"] == json.loads(json.dumps(data))


def _depth(value: object) -> int:
    if isinstance(value, dict):
        return 1 + max((_depth(item) for item in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(item) for item in value), default=0)
    return 0


@given(
    core=st.dictionaries(st.text(max_size=3), json_values, max_size=3),
    wrappers=st.lists(st.booleans(), max_size=MAX_JSON_DEPTH + 20),
)
def test_the_depth_limit_counts_every_level(core: dict[str, Any], wrappers: list[bool]) -> None:
    body: Any = core
    for as_list in wrappers:
        body = [body] if as_list else {"k": body}
    body = {"wrapped": body}
    raw = json.dumps(body).encode()
    if _depth(body) > MAX_JSON_DEPTH:
        with pytest.raises(BadRequest):
            _check_depth(raw, body, "PublishEventModel")
    else:
        _check_depth(raw, body, "PublishEventModel")
