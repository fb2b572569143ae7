"""``make run``: a ready-to-try crohooks on one machine (spec 4.1).

Migrates the database (the embedded SQLite file ``crohooks.db`` unless
``CROHOOKS_DATABASE_URL`` says otherwise), makes sure the demo tenant exists, mints a
long-lived token that may manage hooks and publish events, prints it with ``curl`` lines
to copy, and serves the API with an in-process delivery worker. Hooks on loopback are
allowed, so a receiver on the same machine can be tried, unless the operator chose the
allowed networks.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import os
import shlex
import sys
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from crohooks.auth.principal import Role
from crohooks.clock import utc_now
from crohooks.errors import ConfigurationError, DuplicateKey
from crohooks.model import Tenant
from crohooks.portal.links import issue_portal_link
from crohooks.settings import Settings
from crohooks.store.connect import redacted

if TYPE_CHECKING:
    from crohooks.store.migrate import Migration

DEMO_TENANT_ID = 34
DEMO_TENANT_NAME = "Demo Courier"
DEMO_TENANT_CODE = "DEMO"
DEMO_SUBJECT = "demo-admin"
DEMO_ROLES = (Role.ADMIN, Role.DISPATCHER, Role.SYSTEM)
DEMO_TOKEN_TTL_SECONDS = 30 * 86400
LOOPBACK_NETWORKS = ("127.0.0.0/8", "::1/128")
EXAMPLE_RECEIVER = "http://127.0.0.1:9797/"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m crohooks.demo", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8003)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings, notes = demo_settings(os.environ)
        token, migration = prepare(settings)
    except (ConfigurationError, ValueError) as error:
        print(f"crohooks demo: {error}", file=sys.stderr)
        return 2
    notes = [f"{migration}.", *notes]
    base_url = _base_url(args.host, args.port)
    link = asyncio.run(
        issue_portal_link(
            settings,
            tenant_id=DEMO_TENANT_ID,
            role="Admin",
            ttl_seconds=settings.portal_link_ttl_seconds,
            base_url=base_url,
        )
    )
    print(banner(settings, token, notes, base_url=base_url, portal_link=link), flush=True)

    from crohooks.cli import serve

    try:
        serve(settings, host=args.host, port=args.port, run_worker=True, migrate_sqlite=False)
    except (ConfigurationError, ValueError) as error:
        print(f"crohooks demo: {error}", file=sys.stderr)
        return 2
    return 0


def demo_settings(environ: Mapping[str, str]) -> tuple[Settings, list[str]]:
    """The operator's settings, with development defaults where the environment is silent.

    pydantic-settings reads variable names case-insensitively, so "set" means any case.
    """
    present = {name.upper() for name in environ}
    overrides: dict[str, Any] = {}
    notes: list[str] = []
    if "CROHOOKS_ALLOWED_NETWORKS" not in present:
        overrides["allowed_networks"] = tuple(
            ipaddress.ip_network(network) for network in LOOPBACK_NETWORKS
        )
        notes.append(
            "Hook URLs may reach loopback ("
            + ", ".join(LOOPBACK_NETWORKS)
            + ") for local development; set CROHOOKS_ALLOWED_NETWORKS to choose otherwise."
        )
    if "CROHOOKS_LOG_FORMAT" not in present:
        overrides["log_format"] = "console"
    return Settings(**overrides), notes


def prepare(settings: Settings) -> tuple[str, Migration]:
    """Migrate, ensure the demo tenant, and mint the demo token."""
    from crohooks.auth.local import mint_local_token
    from crohooks.logs import configure_logging
    from crohooks.store.migrate import migrate

    configure_logging(settings)
    migration = migrate(settings.database_url)
    asyncio.run(_ensure_demo_tenant(settings))
    token = mint_local_token(
        settings,
        subject=DEMO_SUBJECT,
        roles=[role.value for role in DEMO_ROLES],
        tenants=[DEMO_TENANT_ID],
        ttl_seconds=DEMO_TOKEN_TTL_SECONDS,
    )
    return token, migration


async def _ensure_demo_tenant(settings: Settings) -> None:
    from crohooks.store.connect import open_database
    from crohooks.store.connector import DatabaseLimits
    from crohooks.store.tenants import TenantRepository

    db = open_database(settings.database_url, DatabaseLimits.of(settings))
    try:
        await TenantRepository(db).add(
            Tenant(
                id=DEMO_TENANT_ID,
                name=DEMO_TENANT_NAME,
                code=DEMO_TENANT_CODE,
                created_on=utc_now(),
            )
        )
    except DuplicateKey:
        pass
    finally:
        await db.dispose()


def _base_url(host: str, port: int) -> str:
    """Where a client on this machine reaches the server (wildcard binds mean loopback)."""
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


def banner(
    settings: Settings,
    token: str,
    notes: Sequence[str],
    *,
    base_url: str,
    portal_link: str | None = None,
) -> str:
    auth = '-H "Authorization: Bearer $CROHOOKS_TOKEN"'
    tenant = f"-H 'x-tenant-id: {DEMO_TENANT_ID}'"
    json_body = "-H 'Content-Type: application/json'"
    create_body = shlex.quote(f'{{"url": "{EXAMPLE_RECEIVER}", "events": ["Customer", "Job"]}}')
    event_body = shlex.quote('{"event": "Customer", "data": {"id": 1, "name": "Acme Freight"}}')
    roles = ", ".join(role.value for role in DEMO_ROLES)
    days = DEMO_TOKEN_TTL_SECONDS // 86400
    lines = [
        f"crohooks demo on {base_url} (database {redacted(settings.database_url)})",
        *notes,
        "",
        f'Tenant {DEMO_TENANT_ID} "{DEMO_TENANT_NAME}" is ready, with a token for it '
        f"({roles}; valid {days} days). Try it from another terminal:",
        "",
        f"export CROHOOKS_TOKEN={token}",
        "# create a hook (a receiver listening on 127.0.0.1:9797 gets the deliveries)",
        f"curl -s -X POST {auth} {tenant} {json_body} -d {create_body} {base_url}/hooks",
        "# list the tenants the token grants",
        f"curl -s {auth} {base_url}/tenants",
        "# list hooks",
        f"curl -s {auth} {tenant} {base_url}/hooks",
        "# ping hook 1 (use the id that create returned)",
        f"curl -s {auth} {tenant} {base_url}/hooks/1/ping",
        "# publish an event to every hook of the tenant that subscribes to it",
        f"curl -s -X POST {auth} {tenant} {json_body} -d {event_body} {base_url}/events",
    ]
    if portal_link is not None:
        minutes = settings.portal_link_ttl_seconds // 60
        lines += [
            "",
            f"Or open the tenant portal in a browser (one use, within {minutes} min; a new one:",
            f"crohooks portal-link --tenant {DEMO_TENANT_ID}):",
            portal_link,
        ]
    lines += ["", "Serving with an in-process delivery worker; Ctrl-C stops."]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
