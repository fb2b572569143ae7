"""The ``crohooks`` console script: serve, worker, migrate, tenant, token, and the operator
commands (hooks, deliveries, recover; ``operator_cli.py``)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from crohooks import operator_cli
from crohooks.auth.principal import Role
from crohooks.clock import utc_now
from crohooks.errors import (
    ConfigurationError,
    DatabaseError,
    DatabaseUnavailable,
    DuplicateKey,
)
from crohooks.model import Tenant
from crohooks.settings import Settings


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="crohooks", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="serve the API (and a delivery worker)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8003)
    serve.add_argument("--no-worker", action="store_true", help="run no in-process worker")

    worker = commands.add_parser("worker", help="run a delivery worker alone")
    worker.add_argument("--concurrency", type=int, default=None)

    commands.add_parser("migrate", help="create or upgrade the schema")

    tenant = commands.add_parser("tenant", help="manage tenant records")
    tenant_commands = tenant.add_subparsers(dest="tenant_command", required=True)
    add = tenant_commands.add_parser("add", help="add a tenant record")
    add.add_argument("--id", type=int, required=True)
    add.add_argument("--name", required=True)
    add.add_argument("--code", required=True)
    for optional in ("email", "address", "city", "state", "zip", "phone"):
        add.add_argument(f"--{optional}")
    add.add_argument("--truck-limit", type=int)
    add.add_argument("--inactive", action="store_true")
    operator_cli.register(commands, tenant_commands)

    token = commands.add_parser("token", help="print one local JWT")
    token.add_argument("--sub", required=True)
    roles = [role.value for role in Role]
    token.add_argument(
        "--role",
        action="append",
        required=True,
        choices=roles,
        metavar="ROLE",
        help=f"one of {', '.join(roles)}; repeat for more",
    )
    token.add_argument("--tenant", type=int, action="append", required=True)
    token.add_argument("--ttl", type=int, default=3600, help="lifetime in seconds")
    token.add_argument("--client-id")

    link = commands.add_parser("portal-link", help="print one portal link (docs/portal.md)")
    link.add_argument("--tenant", type=int, required=True)
    link.add_argument("--role", choices=("Admin", "Dispatcher"), default="Admin")
    link.add_argument("--ttl", type=int, help="lifetime in seconds (default 600)")
    link.add_argument("--base-url", help="where browsers reach crohooks")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = Settings()
        return _run(args, settings)
    except (ConfigurationError, DuplicateKey, ValueError) as error:
        print(f"crohooks: {error}", file=sys.stderr)
        return 2
    except DatabaseUnavailable as error:
        print(f"crohooks: {error.detail}", file=sys.stderr)
        return 2
    except DatabaseError as error:
        print(
            f"crohooks: database error: {error.detail}"
            " (is the schema migrated? run crohooks migrate)",
            file=sys.stderr,
        )
        return 2


def _run(args: argparse.Namespace, settings: Settings) -> int:
    from crohooks.logs import configure_logging

    configure_logging(settings)
    if "operator_command" in args:
        return operator_cli.run(args, settings)
    if args.command == "migrate":
        from crohooks.store.connect import redacted
        from crohooks.store.migrate import migrate

        migration = migrate(settings.database_url)
        print(f"{migration} ({redacted(settings.database_url)})")
        return 0
    if args.command == "token":
        from crohooks.auth.local import mint_local_token

        if settings.auth_mode != "local":
            raise ConfigurationError(
                f"CROHOOKS_AUTH_MODE is {settings.auth_mode!r}: this server would refuse a "
                "local token, so none is minted"
            )

        print(
            mint_local_token(
                settings,
                subject=args.sub,
                roles=args.role,
                tenants=args.tenant,
                ttl_seconds=args.ttl,
                client_id=args.client_id,
            )
        )
        return 0
    if args.command == "portal-link":
        from crohooks.portal.links import issue_portal_link

        if args.ttl is not None and not 1 <= args.ttl <= 86400:
            raise ValueError("--ttl must be from 1 to 86400 seconds")
        if settings.is_sqlite:
            from crohooks.store.migrate import migrate

            migrate(settings.database_url)
        print(
            asyncio.run(
                issue_portal_link(
                    settings,
                    tenant_id=args.tenant,
                    role=args.role,
                    ttl_seconds=args.ttl or settings.portal_link_ttl_seconds,
                    base_url=args.base_url,
                )
            )
        )
        return 0
    if args.command == "tenant":
        for line in asyncio.run(_add_tenant(settings, args)):
            print(line)
        return 0
    if args.command == "serve":
        serve(settings, host=args.host, port=args.port, run_worker=not args.no_worker)
        return 0
    if args.command == "worker":
        from crohooks import tracing
        from crohooks.delivery.runner import run_worker_process

        tracing.configure_from_environment()
        try:
            return run_worker_process(settings, concurrency=args.concurrency)
        finally:
            tracing.shutdown()
    raise AssertionError(args.command)


async def _add_tenant(settings: Settings, args: argparse.Namespace) -> list[str]:
    """Add the tenant; what was done, one line each (an SQLite file is migrated first)."""
    from crohooks.store.connect import open_database, redacted
    from crohooks.store.connector import DatabaseLimits
    from crohooks.store.tenants import TenantRepository

    done: list[str] = []
    where = redacted(settings.database_url)
    if settings.is_sqlite:
        from crohooks.store.migrate import migrate

        migration = migrate(settings.database_url)
        if migration.before != migration.after:
            done.append(f"{migration} ({where})")
    db = open_database(settings.database_url, DatabaseLimits.of(settings))
    try:
        tenant = await TenantRepository(db).add(
            Tenant(
                id=args.id,
                name=args.name,
                code=args.code,
                address=args.address,
                city=args.city,
                state=args.state,
                zip=args.zip,
                email=args.email,
                phone=args.phone,
                is_active=not args.inactive,
                truck_limit=args.truck_limit,
                created_on=utc_now(),
            )
        )
    finally:
        await db.dispose()
    state = "" if tenant.is_active else ", inactive"
    done.append(f'tenant {tenant.id} "{tenant.name}" (code {tenant.code}{state}) added ({where})')
    return done


def serve(
    settings: Settings, *, host: str, port: int, run_worker: bool, migrate_sqlite: bool = True
) -> None:
    """Serve the API; an SQLite database is migrated first (one process owns it), unless
    the caller has just done so."""
    import structlog
    import uvicorn

    from crohooks import tracing
    from crohooks.app import create_app

    log = structlog.get_logger("crohooks")
    if settings.is_sqlite and migrate_sqlite:
        from crohooks.store.migrate import migrate

        log.info(str(migrate(settings.database_url)), database=settings.database_dialect)
    app = create_app(settings, run_worker=run_worker)
    log.info("serving", host=host, port=port, worker=run_worker, database=settings.database_dialect)
    traced = tracing.configure_from_environment()
    try:
        uvicorn.run(
            app,
            host=host,
            port=port,
            log_config=None,
            access_log=False,
            loop="uvloop",
            http="httptools",
            timeout_graceful_shutdown=20,
            timeout_keep_alive=settings.server_keep_alive_timeout,
            limit_concurrency=settings.server_limit_concurrency,
            server_header=False,
        )
    finally:
        if traced:
            tracing.shutdown()


if __name__ == "__main__":
    raise SystemExit(main())
