"""Command line: ``python -m broker serve|user|clinic|apikey|keys ...``."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import getpass
import logging
import os
import ssl
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import uvloop
from aiohttp import web

from broker import logs
from broker.app import build_services, create_app, open_store
from broker.config import Settings, SettingsError, describe
from broker.domain import Role, utcnow
from broker.errors import BrokerError
from broker.webhooks import Outbox

log = logging.getLogger(__name__)

_SERVE_ONLY = {
    "host",
    "port",
    "demo",
    "tls_cert",
    "tls_key",
    "public_url",
    "cors_origins",
    "log_format",
    "log_level",
    "trust_proxy",
    "max_body_bytes",
}


# The boolean settings are switches: the flag alone turns them on.
_SWITCHES = frozenset(f.name for f in dataclasses.fields(Settings) if f.type in (bool, "bool"))


def _add_setting_flags(parser: argparse.ArgumentParser, serve: bool) -> None:
    for flag, env, default, text in describe():
        name = flag[2:].replace("-", "_")
        if not serve and name in _SERVE_ONLY:
            continue
        help_text = f"{text} [env {env}" + (f", default {default}]" if default else "]")
        if name in _SWITCHES:
            parser.add_argument(
                flag, dest=name, action="store_const", const="true", default=None, help=help_text
            )
        else:
            parser.add_argument(flag, dest=name, default=None, help=help_text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m broker", description="CityCall broker")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the broker")
    _add_setting_flags(serve, serve=True)

    clinic = sub.add_parser("clinic", help="manage clinics")
    clinic_sub = clinic.add_subparsers(dest="action", required=True)
    clinic_add = clinic_sub.add_parser("add", help="create a clinic and print its id")
    clinic_add.add_argument("--name", required=True)
    clinic_add.add_argument("--time-zone", default="UTC")
    _add_setting_flags(clinic_add, serve=False)

    user = sub.add_parser("user", help="manage users")
    user_sub = user.add_subparsers(dest="action", required=True)
    user_add = user_sub.add_parser(
        "add", help="create a user (password from $BROKER_NEW_PASSWORD or a prompt)"
    )
    user_add.add_argument("--email", required=True)
    user_add.add_argument("--name", required=True, help="display name")
    user_add.add_argument("--role", required=True, choices=[r.value for r in Role])
    user_add.add_argument("--clinic", help="clinic id (staff only)")
    user_add.add_argument("--time-zone", default="UTC")
    _add_setting_flags(user_add, serve=False)

    apikey = sub.add_parser("apikey", help="manage clinic API keys")
    apikey_sub = apikey.add_subparsers(dest="action", required=True)
    apikey_create = apikey_sub.add_parser("create", help="create a key; prints the secret once")
    apikey_create.add_argument("--clinic", required=True, help="clinic id")
    apikey_create.add_argument("--name", required=True, help="what the key is for")
    _add_setting_flags(apikey_create, serve=False)

    keys = sub.add_parser("keys", help="manage token signing keys")
    keys_sub = keys.add_subparsers(dest="action", required=True)
    rotate = keys_sub.add_parser("rotate", help="make a new signing key (used from next start)")
    _add_setting_flags(rotate, serve=False)
    return parser


def _settings(args: argparse.Namespace) -> Settings:
    names = {flag[2:].replace("-", "_") for flag, *_ in describe()}
    overrides: dict[str, Any] = {k: v for k, v in vars(args).items() if k in names}
    return Settings.load(overrides, os.environ)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = _settings(args)
    except SettingsError as exc:
        print(f"error: bad setting: {exc}", file=sys.stderr)
        return 2
    logs.configure(settings.log_format, settings.log_level)
    try:
        if args.command == "serve":
            serve(settings)
            return 0
        return asyncio.run(_admin(args, settings))
    except BrokerError as exc:
        print(f"error: {exc.message} ({exc.code})", file=sys.stderr)
        return 1


def serve(settings: Settings) -> None:
    app = create_app(settings)
    if settings.demo:
        app.on_startup.append(_seed_demo)
    ssl_context = None
    if settings.tls_cert and settings.tls_key:
        ssl_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ssl_context.load_cert_chain(settings.tls_cert, settings.tls_key)
    print(
        f"CityCall broker on {settings.base_url} "
        f"(store: {'redis' if settings.redis_url else 'sqlite in ' + str(settings.data_dir)})",
        flush=True,
    )
    web.run_app(
        app,
        loop=uvloop.new_event_loop(),  # libuv's loop: about a third less CPU per relayed message
        host=settings.host,
        port=settings.port,
        ssl_context=ssl_context,
        print=None,
        access_log=None,
        shutdown_timeout=5,
    )


async def _seed_demo(app: web.Application) -> None:
    from broker.api.context import SERVICES
    from broker.demo import seed

    svc = app[SERVICES]
    logins = await seed(svc.store, svc.accounts, svc.scheduling)
    print(f"Demo logins (password for all: {logins[0].password}):", flush=True)
    for login in logins:
        print(f"  {login.role:<10} {login.email:<32} {login.display_name}", flush=True)


async def _admin(args: argparse.Namespace, settings: Settings) -> int:
    store = await open_store(settings)
    try:
        svc = await build_services(settings, store, Outbox(store))
        action: Callable[[], Awaitable[str]]
        if args.command == "clinic":

            async def action() -> str:
                return (await svc.accounts.create_clinic(args.name, args.time_zone)).id
        elif args.command == "user":
            from broker.accounts import NewUser

            password = os.environ.get("BROKER_NEW_PASSWORD") or getpass.getpass("Password: ")

            async def action() -> str:
                user = await svc.accounts.create_user(
                    NewUser(
                        args.email,
                        password,
                        args.name,
                        Role(args.role),
                        clinic_id=args.clinic,
                        time_zone=args.time_zone,
                    )
                )
                return user.id
        elif args.command == "apikey":

            async def action() -> str:
                issued = await svc.api_keys.create(args.clinic, args.name, "cli")
                return f"{issued.key.id}\n{issued.token}"
        else:
            from broker.tokens import rotate

            async def action() -> str:
                return rotate(settings.data_dir / "keys", utcnow()).kid

        print(await action())
        return 0
    finally:
        await store.close()
