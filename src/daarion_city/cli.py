"""``daarion-city``: serve | migrate | token | check-config."""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import sys
from collections.abc import Sequence

from daarion_city.config import ALL_SERVICES, Settings


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    from daarion_city.app import ConfigurationError, create_app
    from daarion_city.logs import setup_logging
    from daarion_city.server import CityServer, server_config

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
    CityServer(config, app).run()
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
    from daarion_city.auth import TokenAuthority, load_secret

    issued = TokenAuthority(load_secret(settings)).mint(args.user_id, args.name, args.ttl)
    print(issued.token)
    return 0


def _check_config(_: argparse.Namespace, settings: Settings) -> int:
    from daarion_city.app import ConfigurationError, check_settings

    print(json.dumps(settings.masked(), indent=2, ensure_ascii=False, default=str))
    from daarion_city.secondme.providers import describe

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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="daarion-city", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the service")
    serve.add_argument("--only", help=f"comma-separated services of {','.join(ALL_SERVICES)}")
    serve.add_argument("--host", help="bind address (CITY_HOST, default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (CITY_PORT, default 7001)")
    serve.set_defaults(func=_serve)

    sub.add_parser("migrate", help="apply the database migrations").set_defaults(func=_migrate)

    token = sub.add_parser("token", help="mint a token for a user")
    token.add_argument("--user-id", required=True)
    token.add_argument("--name")
    token.add_argument("--ttl", type=int, default=24 * 3600, help="seconds (default one day)")
    token.set_defaults(func=_token)

    sub.add_parser(
        "check-config", help="print the effective configuration, secrets masked"
    ).set_defaults(func=_check_config)
    sub.add_parser(
        "matrix-registration", help="print the application-service registration YAML"
    ).set_defaults(func=_matrix_registration)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = Settings()
    code: int = args.func(args, settings)
    return code


if __name__ == "__main__":
    sys.exit(main())
