"""The ``daarion-city`` command: serve, migrate, token, check-config, matrix-registration."""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import sys
from collections.abc import Sequence

from daarion_city.config import ALL_SERVICES, Settings

MAX_TOKEN_TTL = 10 * 365 * 24 * 3600  # ten years


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    from daarion_city.app import create_app
    from daarion_city.app.wiring import ConfigurationError
    from daarion_city.core.collector import FullCollections
    from daarion_city.core.logs import setup_logging
    from daarion_city.edge.server import CityServer, server_config

    setup_logging(settings.log_level)
    services = [s.strip() for s in args.only.split(",")] if args.only else None
    try:
        app = create_app(settings, services)
    except ConfigurationError as exc:
        print(f"daarion-city: {exc}", file=sys.stderr)
        return 2
    config = server_config(
        app,
        settings,
        host=args.host or settings.city_host,
        port=args.port or settings.city_port,
    )
    # What is imported and built by now lives as long as the process. Frozen out of the cyclic
    # collector's sight, a full collection no longer walks it: under load those came once a
    # second and paused the loop 75-106 ms each, the posts' p99 (bench/RESULTS.md).
    gc.collect()
    gc.freeze()
    # Full collections on the server's schedule, not in the middle of a join storm
    # (core/collector.py; the server runs them on its loop).
    collections = FullCollections(settings.city_gc_interval) if settings.city_gc_interval else None
    CityServer(config, app, collections=collections).run()
    return 0


def _migrate(_: argparse.Namespace, settings: Settings) -> int:
    from daarion_city.storage.database import Database
    from daarion_city.storage.migrate import migrate

    async def run() -> str:
        db = Database(settings.effective_database_url)
        try:
            return await migrate(db)
        finally:
            await db.dispose()

    revision = asyncio.run(run())
    print(f"database at revision {revision}")
    return 0


def _token(args: argparse.Namespace, settings: Settings) -> int:
    from daarion_city.identity.tokens import TokenAuthority, load_secret

    if not 1 <= args.ttl <= MAX_TOKEN_TTL:
        print(f"daarion-city: --ttl must be 1..{MAX_TOKEN_TTL} seconds", file=sys.stderr)
        return 2
    try:
        authority = TokenAuthority(load_secret(settings))
        issued = authority.mint(args.user_id, args.name, args.ttl, admin=args.admin)
    except ValueError as exc:  # a user id or a name the service would refuse or ignore
        print(f"daarion-city: {exc}", file=sys.stderr)
        return 2
    print(issued.token)
    return 0


def _admin(args: argparse.Namespace, settings: Settings) -> int:
    """``admin suspend|unsuspend``: written in the database (and the audit log as ``cli``), told
    on the bus when Redis is configured; every instance reads the suspensions again within
    seconds anyway."""
    from daarion_city.core.errors import CityError
    from daarion_city.identity.principal import Principal
    from daarion_city.identity.suspensions import Suspensions
    from daarion_city.pubsub import create_pubsub
    from daarion_city.storage.database import Database
    from daarion_city.storage.migrate import migrate

    if args.duration is not None and not 1 <= args.duration <= 10 * 366 * 24 * 3600:
        print("daarion-city: --duration must be 1 s .. 10 years", file=sys.stderr)
        return 2

    async def run() -> None:
        db = Database(settings.effective_database_url)
        bus = create_pubsub(settings.redis_url, settings.city_redis_prefix)
        try:
            await migrate(db)
            await bus.start()
            suspensions = Suspensions(db, bus, admins=settings.admins)
            operator = Principal("cli", "operator", admin=True)
            if args.action == "suspend":
                made = await suspensions.suspend(
                    operator, args.user_id, duration_s=args.duration, reason=args.reason
                )
                print(json.dumps(made))
            else:
                await suspensions.unsuspend(operator, args.user_id)
                print(json.dumps({"user_id": args.user_id, "suspended": False}))
        finally:
            await bus.stop()
            await db.dispose()

    try:
        asyncio.run(run())
    except CityError as exc:
        print(f"daarion-city: {exc.code}: {exc.detail}", file=sys.stderr)
        return 1
    return 0


def _send_webhooks(_: argparse.Namespace, settings: Settings) -> int:
    """The webhook sender on its own (``feed/webhookproc.py``): an instance starts it."""
    from daarion_city.feed.webhookproc import run_child

    if not settings.webhooks_on:
        print("daarion-city: set CITY_WEBHOOK_URL and CITY_WEBHOOK_SECRET", file=sys.stderr)
        return 2
    asyncio.run(run_child(settings))
    return 0


def _check_config(_: argparse.Namespace, settings: Settings) -> int:
    from daarion_city.app.wiring import ConfigurationError, check_settings
    from daarion_city.identity.tokens import describe_secret
    from daarion_city.secondme.providers import describe

    shown = settings.masked()
    shown["city_jwt_secret"] = describe_secret(settings)  # not null when it was generated
    print(json.dumps(shown, indent=2, ensure_ascii=False, default=str))
    print(describe(settings), file=sys.stderr)  # which Second Me provider and model answer
    try:
        check_settings(settings)
    except ConfigurationError as exc:
        print(f"daarion-city: {exc}", file=sys.stderr)
        return 2
    return 0


def _matrix_registration(_: argparse.Namespace, settings: Settings) -> int:
    from daarion_city.matrix.appservice import registration, registration_yaml

    if not settings.matrix_server_name:
        print(
            "daarion-city: set MATRIX_SERVER_NAME (the homeserver's server name)", file=sys.stderr
        )
        return 2
    reg = registration(settings)
    print(registration_yaml(reg), end="")
    generated = [
        name
        for name, setting in (
            ("MATRIX_AS_TOKEN", "matrix_as_token"),
            ("MATRIX_HS_TOKEN", "matrix_hs_token"),
        )
        if getattr(settings, setting) is None
    ]
    if generated:
        print(
            f"# generated {', '.join(generated)}: give the gateway the same values "
            f"(as_token -> MATRIX_AS_TOKEN, hs_token -> MATRIX_HS_TOKEN)",
            file=sys.stderr,
        )
    return 0


DESCRIPTION = (
    "DAARION City backend: rooms, presence, the city feed, Second Me and the Matrix bridge. "
    "Configuration comes from environment variables (see check-config)."
)
# name -> the one line shown by `daarion-city --help` (and as the command's own description)
COMMANDS = {
    "serve": "run the service (HTTP and WebSocket)",
    "migrate": "apply the database migrations",
    "token": "mint a token for a user",
    "check-config": "print and check the configuration, secrets masked",
    "matrix-registration": "print the Matrix appservice registration YAML",
    "admin": "suspend or unsuspend a user everywhere (audited)",
    "send-webhooks": "send the feed's webhooks (each instance runs this as its child process)",
}


class _OneLineCommands(argparse.HelpFormatter):
    """Each command and its description on one line: argparse measures the commands two
    columns short of where it prints them, so matrix-registration's line went below it."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=28)

    def add_argument(self, action: argparse.Action) -> None:
        super().add_argument(action)
        if isinstance(action, argparse._SubParsersAction):
            longest = max(len(name) for name in action.choices)
            self._action_max_length = max(
                self._action_max_length, self._current_indent + 2 * self._indent_increment + longest
            )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="daarion-city",
        description=DESCRIPTION,
        formatter_class=_OneLineCommands,
    )
    sub = parser.add_subparsers(dest="command", required=True, title="commands", metavar="COMMAND")

    def command(name: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=COMMANDS[name], description=COMMANDS[name])

    serve = command("serve")
    serve.add_argument("--only", help=f"comma-separated services of {','.join(ALL_SERVICES)}")
    serve.add_argument("--host", help="bind address (CITY_HOST, default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (CITY_PORT, default 7001)")
    serve.set_defaults(func=_serve)

    command("migrate").set_defaults(func=_migrate)

    token = command("token")
    token.add_argument("--user-id", required=True)
    token.add_argument("--name")
    token.add_argument("--ttl", type=int, default=24 * 3600, help="seconds (default one day)")
    token.add_argument(
        "--admin", action="store_true", help="an admin's token: every power in every room"
    )
    token.set_defaults(func=_token)

    admin = command("admin")
    admin.add_argument("action", choices=["suspend", "unsuspend"])
    admin.add_argument("--user-id", required=True)
    admin.add_argument("--duration", type=int, help="seconds (default: until lifted)")
    admin.add_argument("--reason")
    admin.set_defaults(func=_admin)

    command("check-config").set_defaults(func=_check_config)
    command("send-webhooks").set_defaults(func=_send_webhooks)
    command("matrix-registration").set_defaults(func=_matrix_registration)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = Settings()
    code: int = args.func(args, settings)
    return code


if __name__ == "__main__":
    sys.exit(main())
