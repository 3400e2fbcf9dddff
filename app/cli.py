"""The `imagegate` console script: serve, migrate, and admin commands.

With --json an admin command prints exactly one JSON object on stdout (errors too, as
{"error", "code"}, exit status 1), so scripts can rely on it; without it an error is one
line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, NoReturn

from alembic.util.exc import CommandError
from pydantic import ValidationError
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession

from app.admin import service as admin
from app.credits import ledger
from app.credits.audit import audit_ledger
from app.db.engine import create_engine, create_sessionmaker
from app.db.migrate import upgrade
from app.db.statuses import LimitPeriod
from app.errors import GatewayError
from app.housekeeping.orphans import find_orphans, remove_orphans
from app.observability.logging import configure_logging
from app.providers.catalog import Catalog
from app.settings import Settings
from app.storage.factory import create_image_store
from app.tenants import service as tenants
from app.tenants.policy import MAX_CREDIT_LIMIT, UNSET, KeyChanges
from app.tenants.webhook_secret import webhook_secret

MAX_WORKERS = 64
Command = Callable[[AsyncSession, argparse.Namespace], Awaitable[tuple[dict[str, Any], int]]]


class CliError(Exception):
    """An error the CLI reports as {"error", "code"} (or one line) with exit status 1."""

    def __init__(self, message: str, code: str = "invalid_request") -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of printing usage and exiting 2, so that bad
    arguments are reported like every other error (a JSON object under --json)."""

    def error(self, message: str) -> NoReturn:
        raise CliError(f"{message} (see {self.prog} --help)")


def main(argv: list[str] | None = None) -> None:
    raw = sys.argv[1:] if argv is None else argv
    parser = _parser()
    try:
        args = parser.parse_args(raw)
    except CliError as exc:
        _emit_error("--json" in raw, exc.message, exc.code)
        sys.exit(1)
    if not hasattr(args, "run"):
        parser.print_help()
        sys.exit(2)
    sys.exit(_guarded(args))


def _guarded(args: argparse.Namespace) -> int:
    """Run the command; every failure it can meet becomes one error message and exit 1."""
    json_output = bool(getattr(args, "json", False))
    try:
        code: int = args.run(args)
    except CliError as exc:
        _emit_error(json_output, exc.message, exc.code)
    except GatewayError as exc:
        _emit_error(json_output, exc.message, exc.code, **exc.extra)
    except ValidationError as exc:
        # Settings errors name the variable, never its value (hide_input_in_errors).
        first = exc.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(part) for part in first["loc"])
        _emit_error(json_output, f"invalid setting {where}: {first['msg']}", "invalid_settings")
    except (SQLAlchemyError, CommandError, OSError, TimeoutError) as exc:
        # Unreachable or refusing database (or data directory). The exception text may
        # carry the database URL's password, so only its type is shown.
        _emit_error(
            json_output,
            f"the database is unavailable ({type(exc).__name__}); nothing was changed",
            "dependency_unavailable",
        )
    else:
        return code
    return 1


def _emit_error(json_output: bool, message: str, code: str, **extra: Any) -> None:
    if json_output:
        print(json.dumps({"error": message, "code": code, **extra}))
    else:
        print(f"imagegate: error: {message}", file=sys.stderr)


def _bounded_int(name: str, minimum: int, maximum: int) -> Callable[[str], int]:
    """An argparse type: an integer within [minimum, maximum], else a message naming it."""

    def parse(text: str) -> int:
        message = f"{name} must be an integer from {minimum} to {maximum}"
        try:
            value = int(text.strip()) if text.strip().isascii() else None
        except ValueError:  # also Python's limit on the digits of an int
            value = None
        if value is None or not minimum <= value <= maximum:
            raise argparse.ArgumentTypeError(f"{message}, got {text[:40]!r}")
        return value

    return parse


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="imagegate", description=__doc__)
    commands = parser.add_subparsers(title="commands", parser_class=_Parser)

    serve = commands.add_parser("serve", help="run the HTTP gateway")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument(
        "--emulate", action="store_true", help="serve built-in provider emulators (no real models)"
    )
    serve.add_argument(
        "--workers",
        type=_bounded_int("--workers", 1, MAX_WORKERS),
        default=1,
        help="worker processes on the one port (default 1); more than 1 needs IMAGEGATE_REDIS_URL",
    )
    serve.set_defaults(run=_serve)

    migrate = commands.add_parser("migrate", help="apply database migrations")
    migrate.add_argument("--json", action="store_true")
    migrate.set_defaults(run=_migrate)

    tenant_cmds = commands.add_parser("tenants", help="manage tenants").add_subparsers()
    create = tenant_cmds.add_parser("create", help="create a tenant")
    create.add_argument("name")
    _admin(create, _tenants_create)
    limits = tenant_cmds.add_parser("limits", help="set a tenant's rate limits (per minute)")
    limits.add_argument("name")
    rate = _bounded_int("a rate limit", 1, tenants.MAX_RATE_LIMIT)
    limits.add_argument("--per-minute", type=rate, help="tenant-wide; omit for the default")
    limits.add_argument("--key-per-minute", type=rate, help="per key; omit for the default")
    _admin(limits, _tenants_limits)
    secret = tenant_cmds.add_parser(
        "webhook-secret",
        help="the tenant's webhook signing secret (created if it has none)",
    )
    secret.add_argument("name")
    secret.add_argument(
        "--rotate", action="store_true", help="replace it now (receivers must switch)"
    )
    _admin(secret, _tenants_webhook_secret)

    key_cmds = commands.add_parser("keys", help="manage API keys").add_subparsers()
    key_create = key_cmds.add_parser("create", help="create a key (shown once)")
    key_create.add_argument("--tenant", required=True)
    key_create.add_argument("--label")
    _policy_flags(key_create, clearable=False)
    _admin(key_create, _keys_create)
    key_update = key_cmds.add_parser("update", help="change a key's label or policies")
    key_update.add_argument("prefix")
    key_update.add_argument("--label")
    _policy_flags(key_update, clearable=True)
    _admin(key_update, _keys_update)
    key_show = key_cmds.add_parser("show", help="a key's policies and spend this period")
    key_show.add_argument("prefix")
    _admin(key_show, _keys_show)
    key_list = key_cmds.add_parser("list", help="a tenant's keys, newest first")
    key_list.add_argument("--tenant", required=True)
    _admin(key_list, _keys_list)
    key_rotate = key_cmds.add_parser(
        "rotate", help="a new key with the same policies and spend; the old one is revoked"
    )
    key_rotate.add_argument("prefix")
    key_rotate.add_argument(
        "--grace-seconds",
        type=_bounded_int("--grace-seconds", 0, tenants.MAX_GRACE_SECONDS),
        default=0,
        help="keep the old key working this long (default 0: revoke it now)",
    )
    _admin(key_rotate, _keys_rotate)
    key_revoke = key_cmds.add_parser("revoke", help="revoke a key by its prefix")
    key_revoke.add_argument("prefix")
    _admin(key_revoke, _keys_revoke)

    credit_cmds = commands.add_parser("credits", help="credits ledger").add_subparsers()
    grant = credit_cmds.add_parser("grant", help="grant credits to a tenant")
    grant.add_argument("--tenant", required=True)
    # The same bound as the admin API's grants, checked before any database work.
    grant.add_argument("amount", type=_bounded_int("amount", 1, ledger.MAX_GRANT))
    _admin(grant, _credits_grant)
    balance = credit_cmds.add_parser("balance", help="show a tenant's balance")
    balance.add_argument("--tenant", required=True)
    _admin(balance, _credits_balance)
    audit = credit_cmds.add_parser(
        "audit", help="check the ledger invariant for every account and every key's spend"
    )
    _admin(audit, _credits_audit)

    storage_cmds = commands.add_parser("storage", help="stored images").add_subparsers()
    orphans = storage_cmds.add_parser(
        "orphans", help="find stored objects without an image record (exit 1 if any)"
    )
    orphans.add_argument("--delete", action="store_true", help="remove them")
    orphans.add_argument("--json", action="store_true", help="print one JSON object")
    orphans.set_defaults(run=_storage_orphans)
    return parser


def _policy_flags(parser: argparse.ArgumentParser, *, clearable: bool) -> None:
    """--credit-limit, --limit-period, --models, --expires-at; on update, `none` (and
    `all` for --models) clears one."""
    limit = _bounded_int("--credit-limit", 0, MAX_CREDIT_LIMIT)
    parser.add_argument(
        "--credit-limit",
        type=_or_none(limit) if clearable else limit,
        default=UNSET,
        help="credits per period" + ("; none: no limit" if clearable else ""),
    )
    parser.add_argument("--limit-period", choices=tuple(LimitPeriod), default=UNSET)
    parser.add_argument(
        "--models",
        type=_model_ids,
        default=UNSET,
        help="comma-separated model ids the key may use"
        + ("; all: every model" if clearable else ""),
    )
    parser.add_argument(
        "--expires-at",
        type=_or_none(_instant) if clearable else _instant,
        default=UNSET,
        help="ISO 8601 with a time zone" + ("; none: never" if clearable else ""),
    )


def _or_none(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    def parse_or_none(text: str) -> Any:
        return None if text.strip().lower() == "none" else parse(text)

    return parse_or_none


def _model_ids(text: str) -> list[str] | None:
    if text.strip().lower() == "all":
        return None
    ids = [part.strip() for part in text.split(",") if part.strip()]
    if not ids:
        raise argparse.ArgumentTypeError("--models must be model ids separated by commas")
    return ids


def _instant(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        value = None
    if value is None or value.tzinfo is None:
        raise argparse.ArgumentTypeError(
            f"--expires-at must be ISO 8601 with a time zone (e.g. 2026-12-31T00:00:00Z), "
            f"got {text[:40]!r}"
        )
    return value


def _changes(args: argparse.Namespace) -> KeyChanges:
    names = ("label", "credit_limit", "limit_period", "models", "expires_at")
    given = {name: getattr(args, name) for name in names if getattr(args, name, UNSET) is not UNSET}
    if given.get("label", UNSET) is None:  # --label not given on update
        given.pop("label")
    return KeyChanges(**given)


def _known_models() -> frozenset[str]:
    return frozenset(model.id for model in Catalog.load(Settings().catalog))


def _admin(parser: argparse.ArgumentParser, command: Command) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(run=lambda args: _run_admin(command, args))


def _run_admin(command: Command, args: argparse.Namespace) -> int:
    settings = Settings()
    if settings.is_embedded_database:
        upgrade(settings.resolved_database_url)
    result, code = asyncio.run(_in_transaction(settings, command, args))
    _emit(args, result, error=code != 0)
    return code


async def _in_transaction(
    settings: Settings, command: Command, args: argparse.Namespace
) -> tuple[dict[str, Any], int]:
    engine = create_engine(
        settings.resolved_database_url,
        pool_size=1,
        connect_timeout=settings.database_connect_timeout_seconds,
    )
    try:
        async with create_sessionmaker(engine)() as session, session.begin():
            return await command(session, args)
    finally:
        await engine.dispose()


def _emit(args: argparse.Namespace, result: dict[str, Any], *, error: bool) -> None:
    if args.json:
        print(json.dumps(result))
        return
    stream = sys.stderr if error else sys.stdout
    for key, value in result.items():
        print(f"{key}: {value}", file=stream)


async def _tenants_create(
    session: AsyncSession, args: argparse.Namespace
) -> tuple[dict[str, Any], int]:
    tenant = await tenants.create_tenant(session, args.name)
    return {"tenant": tenant.name, "id": tenant.id, "created_at": tenant.created_at.isoformat()}, 0


async def _tenants_limits(
    session: AsyncSession, args: argparse.Namespace
) -> tuple[dict[str, Any], int]:
    tenant = await tenants.get_tenant(session, args.name)
    await tenants.set_rate_limits(
        session, tenant, per_minute=args.per_minute, key_per_minute=args.key_per_minute
    )
    return {
        "tenant": tenant.name,
        "rate_limit_per_minute": tenant.rate_limit_per_minute,
        "key_rate_limit_per_minute": tenant.key_rate_limit_per_minute,
    }, 0


async def _tenants_webhook_secret(
    session: AsyncSession, args: argparse.Namespace
) -> tuple[dict[str, Any], int]:
    secret, _ = await webhook_secret(session, args.name, rotate=args.rotate)
    return {"secret": secret}, 0


async def _keys_create(
    session: AsyncSession, args: argparse.Namespace
) -> tuple[dict[str, Any], int]:
    tenant = await tenants.get_tenant(session, args.tenant)
    changes = _changes(args)
    created = await tenants.create_key(
        session,
        tenant,
        args.label,
        policy=changes,
        known_models=_known_models() if changes else frozenset(),
    )
    return await _created_key(session, created), 0


async def _created_key(session: AsyncSession, created: tenants.CreatedKey) -> dict[str, Any]:
    (detail,) = await admin.key_details(session, [created.key])
    return {"key": created.plaintext, **detail, "note": "the key is shown once; store it now"}


async def _keys_update(
    session: AsyncSession, args: argparse.Namespace
) -> tuple[dict[str, Any], int]:
    changes = _changes(args)
    if not changes:
        raise CliError(
            "nothing to change: give --label, --credit-limit, --limit-period, "
            "--models or --expires-at"
        )
    key = await tenants.update_key(session, args.prefix, changes, _known_models())
    (detail,) = await admin.key_details(session, [key])
    return detail, 0


async def _keys_show(session: AsyncSession, args: argparse.Namespace) -> tuple[dict[str, Any], int]:
    (detail,) = await admin.key_details(session, [await tenants.get_key(session, args.prefix)])
    return detail, 0


async def _keys_list(session: AsyncSession, args: argparse.Namespace) -> tuple[dict[str, Any], int]:
    tenant = await tenants.get_tenant(session, args.tenant)
    keys = await admin.list_keys(session, tenant.id)
    return {"tenant": tenant.name, "keys": await admin.key_details(session, keys)}, 0


async def _keys_rotate(
    session: AsyncSession, args: argparse.Namespace
) -> tuple[dict[str, Any], int]:
    created = await tenants.rotate_key(session, args.prefix, args.grace_seconds)
    return await _created_key(session, created), 0


async def _keys_revoke(
    session: AsyncSession, args: argparse.Namespace
) -> tuple[dict[str, Any], int]:
    key = await tenants.revoke_key(session, args.prefix)
    assert key.revoked_at is not None
    return {"prefix": key.prefix, "revoked_at": key.revoked_at.isoformat()}, 0


async def _credits_grant(
    session: AsyncSession, args: argparse.Namespace
) -> tuple[dict[str, Any], int]:
    tenant = await tenants.get_tenant(session, args.tenant)
    balance = await ledger.grant(session, tenant.id, args.amount, note="granted by CLI")
    return {"tenant": tenant.name, "granted": args.amount, "balance": balance}, 0


async def _credits_balance(
    session: AsyncSession, args: argparse.Namespace
) -> tuple[dict[str, Any], int]:
    tenant = await tenants.get_tenant(session, args.tenant)
    return {"tenant": tenant.name, "balance": await ledger.get_balance(session, tenant.id)}, 0


async def _credits_audit(
    session: AsyncSession, _args: argparse.Namespace
) -> tuple[dict[str, Any], int]:
    report = await audit_ledger(session)
    return {
        "ok": report.ok,
        "accounts": report.accounts,
        "holds": report.holds,
        "key_spend_rows": report.spend_rows,
        "problems": [
            {"tenant": p.tenant, "tenant_id": p.tenant_id, "problem": p.problem}
            for p in report.problems
        ],
    }, (0 if report.ok else 1)


def _storage_orphans(args: argparse.Namespace) -> int:
    settings = Settings()
    if settings.is_embedded_database:
        upgrade(settings.resolved_database_url)

    async def scan() -> dict[str, Any]:
        engine = create_engine(
            settings.resolved_database_url,
            pool_size=1,
            connect_timeout=settings.database_connect_timeout_seconds,
        )
        store = create_image_store(settings)
        try:
            report = await find_orphans(store, create_sessionmaker(engine))
            removed = await remove_orphans(store, report) if args.delete else 0
        finally:
            await store.aclose()
            await engine.dispose()
        return {"scanned": report.scanned, "orphans": list(report.orphans), "removed": removed}

    result = asyncio.run(scan())
    leftover = bool(result["orphans"]) and not args.delete
    _emit(args, result, error=leftover)
    return 1 if leftover else 0


def _migrate(args: argparse.Namespace) -> int:
    settings = Settings()
    upgrade(settings.resolved_database_url)
    result = {"migrated": True, "database": settings.resolved_database_url.split("://", 1)[0]}
    _emit(args, result, error=False)
    return 0


def _serve(args: argparse.Namespace) -> int:
    import os

    import uvicorn
    from uvicorn.supervisors import Multiprocess

    from app.main import create_app
    from app.server_limits import GatewayConfig
    from app.storage.signing import load_or_create_secret

    if args.emulate:
        os.environ["IMAGEGATE_EMULATE"] = "true"  # worker processes read it too
    settings = Settings()
    configure_logging(settings.log_level)
    if args.workers > 1 and settings.redis_url is None:
        # Each process would count rate limits and concurrency caps on its own: N
        # workers would let N times the limits through.
        raise CliError(
            "--workers above 1 needs IMAGEGATE_REDIS_URL: rate limits and concurrency caps "
            "must be shared between the worker processes",
            "invalid_settings",
        )
    # Once, before any worker starts: the embedded database's migrations and the URL
    # signing secret every worker must share (each would otherwise create its own).
    if settings.is_embedded_database:
        upgrade(settings.resolved_database_url)
    load_or_create_secret(settings)
    options: dict[str, Any] = {"host": args.host, "port": args.port, "log_config": None}
    if args.workers == 1:
        # The event loop waits for the GIL whenever a worker thread (WebP encoding, file
        # writes) holds it; Python's default 5 ms hand-over interval showed up directly in
        # /healthz latency under transcode load. 1 ms keeps the loop responsive.
        sys.setswitchinterval(0.001)
        config = GatewayConfig(create_app(settings, serving=True), settings=settings, **options)
        server = uvicorn.Server(config)
        server.run()
        return 0 if server.started else 3  # uvicorn.run's exit status for a failed startup
    # Each worker builds its app from the environment (app.main.serve_app) and shares
    # the socket bound here; uvicorn's supervisor restarts a worker that dies.
    config = GatewayConfig(
        "app.main:serve_app", settings=settings, factory=True, workers=args.workers, **options
    )
    Multiprocess(config, sockets=[config.bind_socket()]).run()
    return 0


if __name__ == "__main__":
    main()
