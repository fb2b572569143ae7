"""The operator's commands: hooks, deliveries, recovery and tenant records, straight from
the database that ``CROHOOKS_DATABASE_URL`` names.

They go through the services the API uses (``HookService``, ``DeliveryLog``, the tenant
repository), so the rules are the API's: every command on tenant data takes ``--tenant``
and sees that tenant's hooks only, a hook of another tenant does not exist, a deleted hook
is not redelivered. No token is needed: whoever can reach the database is the operator.
``--json`` prints the API's own shapes (``api/models.py``) as the API renders them.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from crohooks.api.models import (
    delivery_detail_model,
    delivery_model,
    parse_cro_time,
    tenant_model,
    webhook_model,
)
from crohooks.delivery.log import DeliveryLog
from crohooks.errors import ApiError, ConfigurationError, NotFound
from crohooks.hooks.service import HookService
from crohooks.model import Delivery, DeliveryStatus
from crohooks.rendering import render_json
from crohooks.settings import Settings
from crohooks.store.connect import open_database
from crohooks.store.connector import Database, DatabaseLimits
from crohooks.store.deliveries import DeliveryRepository
from crohooks.store.hooks import HookRepository
from crohooks.store.tenants import TenantRepository

_PAGE = 1000
_MAX_ID = 2**63 - 1
_NULLABLE_TENANT_FIELDS = ("address", "city", "state", "zip", "email", "phone", "truck_limit")


@dataclass(frozen=True, slots=True)
class _Services:
    """The part of ``Services`` that needs nothing but the database, built the same way.

    Not ``Services.build``: that wants a token verifier (a JWT secret on PostgreSQL) and
    an outbound client, and importing it doubles every ``crohooks`` command's start-up.
    """

    db: Database
    hooks: HookService
    delivery_log: DeliveryLog
    tenants: TenantRepository

    @classmethod
    def build(cls, settings: Settings) -> _Services:
        db = open_database(settings.database_url, DatabaseLimits.of(settings))
        hooks = HookService.configured(HookRepository(db), settings)
        return cls(db, hooks, DeliveryLog(hooks, DeliveryRepository(db)), TenantRepository(db))


_Command = Callable[[_Services, argparse.Namespace], Awaitable[str]]
_T = TypeVar("_T")


async def _every(page_at: Callable[[int], Awaitable[tuple[list[_T], int]]]) -> list[_T]:
    """Every item of a paged listing: ``page_at(offset)`` gives a page and the total."""
    items: list[_T] = []
    while True:
        page, total = await page_at(len(items))
        items.extend(page)
        if not page or len(items) >= total:
            return items


def register(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    tenant_commands: argparse._SubParsersAction[argparse.ArgumentParser],
) -> None:
    """Add ``hooks``, ``deliveries`` and ``recover``, and ``tenant list|update``."""
    hooks = commands.add_parser("hooks", help="list and show a tenant's hooks")
    hook_commands = hooks.add_subparsers(dest="hooks_command", required=True)
    listing = _command(hook_commands, "list", "list a tenant's hooks", _hooks_list)
    _tenant_option(listing)
    listing.add_argument(
        "--deleted", action="store_true", help="list the soft-deleted hooks instead"
    )
    show = _command(hook_commands, "show", "show one hook, its secret included", _hooks_show)
    _tenant_option(show)
    show.add_argument("hook_id", metavar="HOOK_ID", type=_identifier)

    deliveries = commands.add_parser("deliveries", help="a hook's delivery log")
    delivery_commands = deliveries.add_subparsers(dest="deliveries_command", required=True)
    listing = _command(
        delivery_commands, "list", "list a hook's deliveries, newest first", _deliveries_list
    )
    _hook_options(listing)
    listing.add_argument("--status", choices=[status.value for status in DeliveryStatus])
    listing.add_argument(
        "--since", type=_time, metavar="TIME", help="created at or after TIME (UTC unless given)"
    )
    listing.add_argument(
        "--limit", type=_positive, default=100, metavar="N", help="at most this many (default 100)"
    )
    show = _command(
        delivery_commands, "show", "show a delivery, its body and attempts", _deliveries_show
    )
    _hook_options(show)
    show.add_argument("delivery_id", metavar="DELIVERY_ID", type=_delivery_id)
    redeliver = _command(
        delivery_commands, "redeliver", "queue a finished delivery again", _deliveries_redeliver
    )
    _hook_options(redeliver)
    redeliver.add_argument("delivery_id", metavar="DELIVERY_ID", type=_delivery_id)

    recover = _command(
        commands, "recover", "queue again a hook's failed deliveries of a time window", _recover
    )
    _hook_options(recover)
    recover.add_argument(
        "--since", type=_time, required=True, metavar="TIME", help="created at or after TIME"
    )
    recover.add_argument(
        "--until", type=_time, metavar="TIME", help="created before TIME (default: now)"
    )

    _command(tenant_commands, "list", "list every tenant record", _tenants_list)
    update = _command(tenant_commands, "update", "change a tenant record", _tenants_update)
    update.add_argument("--id", type=_identifier, required=True)
    update.add_argument("--name")
    update.add_argument("--code")
    for optional in ("email", "address", "city", "state", "zip", "phone"):
        update.add_argument(f"--{optional}")
    update.add_argument("--truck-limit", type=int)
    active = update.add_mutually_exclusive_group()
    active.add_argument("--active", dest="is_active", action="store_true", default=None)
    active.add_argument("--inactive", dest="is_active", action="store_false")
    update.add_argument(
        "--clear",
        action="append",
        default=[],
        choices=[name.replace("_", "-") for name in _NULLABLE_TENANT_FIELDS],
        metavar="FIELD",
        help="empty an optional field; repeat for more",
    )


def _command(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    help: str,
    run: _Command,
) -> argparse.ArgumentParser:
    parser = commands.add_parser(name, help=help, description=help)
    parser.set_defaults(operator_command=run)
    parser.add_argument("--json", action="store_true", help="print the API's JSON instead")
    return parser


def _tenant_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tenant", type=_identifier, required=True, metavar="TENANT_ID")


def _hook_options(parser: argparse.ArgumentParser) -> None:
    _tenant_option(parser)
    parser.add_argument("--hook", type=_identifier, required=True, metavar="HOOK_ID")


def _identifier(raw: str) -> int:
    if not raw.isascii() or not raw.isdigit() or not 0 < int(raw) <= _MAX_ID:
        raise argparse.ArgumentTypeError(f"{raw!r} is not a positive integer")
    return int(raw)


def _positive(raw: str) -> int:
    if not raw.isascii() or not raw.isdigit() or int(raw) < 1:
        raise argparse.ArgumentTypeError(f"{raw!r} is not a positive integer")
    return int(raw)


def _delivery_id(raw: str) -> str:
    try:
        return str(uuid.UUID(raw))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{raw!r} is not a delivery id (a UUID)") from None


def _time(raw: str) -> datetime:
    try:
        return parse_cro_time(raw)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"{raw!r} {error}") from None


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Run the command ``args`` names; a refusal of the service is one line on stderr."""
    try:
        printed = asyncio.run(_run(args.operator_command, args, settings))
    except ApiError as error:
        print(f"crohooks: {error.detail}", file=sys.stderr)
        return 1
    print(printed)
    return 0


async def _run(command: _Command, args: argparse.Namespace, settings: Settings) -> str:
    path = settings.sqlite_path
    if path is not None and not path.exists():
        # sqlite3 would create an empty file, and the command fail on a missing table.
        raise ConfigurationError(f"there is no SQLite database at {path}")
    services = _Services.build(settings)
    try:
        return await command(services, args)
    finally:
        await services.db.dispose()


async def _hooks_list(services: _Services, args: argparse.Namespace) -> str:
    hooks = await _every(
        lambda offset: services.hooks.list_page(
            args.tenant, deleted=args.deleted, limit=_PAGE, offset=offset
        )
    )
    if args.json:
        return _json([webhook_model(hook) for hook in hooks])
    return _table(
        ("ID", "URL", "EVENTS", "LAST SUCCESS", "LAST FAILURE", "DELETED"),
        [
            (
                hook.id,
                hook.url,
                ",".join(hook.events),
                _when(hook.last_http_success),
                _when(hook.last_http_fail),
                _when(hook.deleted_at),
            )
            for hook in hooks
        ],
    )


async def _hooks_show(services: _Services, args: argparse.Namespace) -> str:
    hook = await services.hooks.get(args.tenant, args.hook_id)
    if args.json:
        return _json(webhook_model(hook))
    return _fields(
        ("id", hook.id),
        ("url", hook.url),
        ("events", ", ".join(hook.events)),
        ("secret", hook.secret),
        ("created", _when(hook.created_at)),
        ("updated", _when(hook.updated_at)),
        ("last success", _when(hook.last_http_success)),
        ("last failure", _when(hook.last_http_fail)),
        ("deleted", _when(hook.deleted_at)),
    )


async def _deliveries_list(services: _Services, args: argparse.Namespace) -> str:
    """Pages of the log, newest first, until ``--limit`` or a delivery older than
    ``--since``; a delivery queued meanwhile shifts the pages, so ids are not repeated.
    One delivery more than ``--limit`` is read, to say whether there are more."""
    wanted = args.limit + 1
    found: dict[str, Delivery] = {}
    offset, exhausted = 0, False
    while len(found) < wanted and not exhausted:
        page, total = await services.delivery_log.list_page(
            args.tenant,
            args.hook,
            status=args.status,
            limit=min(_PAGE, wanted - len(found)),
            offset=offset,
        )
        offset += len(page)
        exhausted = not page or offset >= total
        for delivery in page:
            if args.since is not None and delivery.created_at < args.since:
                exhausted = True
                break
            found.setdefault(delivery.id, delivery)
    deliveries = list(found.values())[: args.limit]
    truncated = len(found) > args.limit
    if args.json:
        return _json([delivery_model(delivery) for delivery in deliveries])
    table = _table(
        ("DELIVERY", "EVENT", "STATUS", "ATTEMPTS", "HTTP", "CREATED", "NEXT ATTEMPT"),
        [
            (
                delivery.id,
                delivery.event,
                delivery.status,
                delivery.attempts,
                _text(delivery.last_http_status),
                _when(delivery.created_at),
                _when(delivery.next_attempt_at if delivery.status == "pending" else None),
            )
            for delivery in deliveries
        ],
    )
    if truncated:
        table += f"\n(the newest {args.limit}; --limit shows more)"
    return table


async def _deliveries_show(services: _Services, args: argparse.Namespace) -> str:
    delivery, attempts = await services.delivery_log.get(args.tenant, args.hook, args.delivery_id)
    if args.json:
        return _json(delivery_detail_model(delivery, attempts))
    summary = _fields(
        ("delivery", delivery.id),
        ("hook", delivery.hook_id),
        ("event", delivery.event),
        ("event id", _text(delivery.event_id)),
        ("status", delivery.status),
        ("attempts", delivery.attempts),
        ("last http status", _text(delivery.last_http_status)),
        ("last message", _text(delivery.last_message)),
        ("created", _when(delivery.created_at)),
        ("next attempt", _when(delivery.next_attempt_at if delivery.status == "pending" else None)),
        ("completed", _when(delivery.completed_at)),
    )
    attempt_table = _table(
        ("#", "STARTED", "HTTP", "MS", "MESSAGE"),
        [
            (
                attempt.number,
                _when(attempt.started_at),
                attempt.http_status,
                f"{attempt.duration_ms:.0f}",
                attempt.message,
            )
            for attempt in attempts
        ],
    )
    return f"{summary}\n\n{attempt_table}\n\nrequest body:\n{delivery.body}"


async def _deliveries_redeliver(services: _Services, args: argparse.Namespace) -> str:
    delivery = await services.delivery_log.redeliver(args.tenant, args.hook, args.delivery_id)
    if args.json:
        return _json(delivery_model(delivery))
    return f"delivery {delivery.id} of hook {delivery.hook_id} is queued again"


async def _recover(services: _Services, args: argparse.Namespace) -> str:
    count = await services.delivery_log.recover(
        args.tenant, args.hook, since=args.since, until=args.until
    )
    if args.json:
        return _json({"recovered": count})
    noun = "delivery" if count == 1 else "deliveries"
    return f"{count} failed {noun} of hook {args.hook} queued again"


async def _tenants_list(services: _Services, args: argparse.Namespace) -> str:
    tenants = await _every(lambda offset: services.tenants.list_page(limit=_PAGE, offset=offset))
    if args.json:
        return _json([tenant_model(tenant) for tenant in tenants])
    return _table(
        ("ID", "CODE", "NAME", "ACTIVE", "EMAIL", "TRUCK LIMIT", "CREATED"),
        [
            (
                tenant.id,
                tenant.code,
                tenant.name,
                "yes" if tenant.is_active else "no",
                _text(tenant.email),
                _text(tenant.truck_limit),
                _when(tenant.created_on),
            )
            for tenant in tenants
        ],
    )


async def _tenants_update(services: _Services, args: argparse.Namespace) -> str:
    changes: dict[str, Any] = {
        name: getattr(args, name)
        for name in ("name", "code", "is_active", *_NULLABLE_TENANT_FIELDS)
        if getattr(args, name) is not None
    }
    for cleared in args.clear:
        name = cleared.replace("-", "_")
        if name in changes:
            raise ValueError(f"--{cleared} and --clear {cleared} disagree")
        changes[name] = None
    tenant = await services.tenants.update(args.id, changes)
    if tenant is None:
        raise NotFound(f"tenant {args.id} does not exist")
    if args.json:
        return _json(tenant_model(tenant))
    return _fields(*((name, _text(value)) for name, value in tenant_model(tenant).items()))


def _json(content: object) -> str:
    return render_json(content).decode("ascii")


def _when(moment: datetime | None) -> str:
    return "-" if moment is None else moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _text(value: object) -> str:
    return "-" if value is None else str(value)


def _table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [list(headers), *([str(cell) for cell in row] for row in rows)]
    widths = [max(len(row[column]) for row in cells) for column in range(len(headers))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in cells
    )


def _fields(*pairs: tuple[str, object]) -> str:
    width = max(len(name) for name, _ in pairs)
    return "\n".join(f"{name + ':':<{width + 1}} {value}" for name, value in pairs)
