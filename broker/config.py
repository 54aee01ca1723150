"""The one frozen Settings object, built at start-up from CLI flags and ``BROKER_*`` variables.

Nothing else in the code base reads the environment: ``Settings.load`` is called once by the
CLI with the parsed flags and ``os.environ``, and the result is passed down.
"""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Union, get_args, get_origin, get_type_hints

ENV_PREFIX = "BROKER_"


class SettingsError(ValueError):
    """A setting has a value the broker cannot start with."""


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the broker can be configured with. Field docs feed ``--help`` and the README."""

    host: str = field(default="127.0.0.1", metadata={"help": "address to listen on"})
    port: int = field(default=8080, metadata={"help": "TCP port to listen on"})
    data_dir: Path = field(
        default=Path("data"),
        metadata={"help": "directory for the SQLite store and the signing keys"},
    )
    redis_url: str | None = field(
        default=None,
        metadata={"help": "redis:// URL; when set, state lives in Redis and many nodes share it"},
    )
    demo: bool = field(default=False, metadata={"help": "seed demo accounts and print logins"})
    tls_cert: Path | None = field(default=None, metadata={"help": "PEM certificate for https"})
    tls_key: Path | None = field(default=None, metadata={"help": "PEM private key for https"})
    public_url: str | None = field(
        default=None,
        metadata={"help": "URL clients use to reach this broker (default: from host and port)"},
    )
    issuer: str = field(default="citycall", metadata={"help": "JWT `iss` of issued tokens"})
    signing_key: Path | None = field(
        default=None,
        metadata={"help": "PEM Ed25519 private key for tokens (default: generated in data dir)"},
    )
    key_rotation_days: int = field(
        default=30, metadata={"help": "generate a new signing key at start-up when older"}
    )
    access_token_ttl: int = field(
        default=900, metadata={"help": "lifetime of access tokens in seconds"}
    )
    refresh_token_ttl: int = field(
        default=30 * 86400, metadata={"help": "lifetime of refresh tokens in seconds"}
    )
    device_code_ttl: int = field(
        default=600, metadata={"help": "lifetime of a TV pairing (device) code in seconds"}
    )
    device_poll_interval: int = field(
        default=5, metadata={"help": "minimum seconds between TV pairing polls"}
    )
    max_body_bytes: int = field(
        default=256 * 1024, metadata={"help": "largest accepted request body in bytes"}
    )
    cors_origins: tuple[str, ...] = field(
        default=(), metadata={"help": "comma-separated origins allowed by CORS (empty: none)"}
    )
    log_format: str = field(default="text", metadata={"help": "log format: text or json"})
    log_level: str = field(default="INFO", metadata={"help": "log level name"})
    join_before_minutes: int = field(
        default=10, metadata={"help": "minutes before start that the join window opens"}
    )
    join_grace_minutes: int = field(
        default=30, metadata={"help": "minutes after end that the join window stays open"}
    )
    reminder_minutes: int = field(
        default=15, metadata={"help": "minutes before start of the starting-soon event"}
    )
    stun_urls: tuple[str, ...] = field(
        default=(), metadata={"help": "comma-separated stun: URLs handed to clients"}
    )
    turn_urls: tuple[str, ...] = field(
        default=(), metadata={"help": "comma-separated turn: URLs of a coturn with a shared secret"}
    )
    turn_secret: str | None = field(
        default=None, metadata={"help": "coturn static-auth-secret for TURN REST credentials"}
    )
    turn_ttl: int = field(default=3600, metadata={"help": "TURN credential lifetime in seconds"})
    signaling_grace: int = field(
        default=30, metadata={"help": "seconds a dropped peer keeps its place in a call"}
    )
    heartbeat: int = field(
        default=20, metadata={"help": "seconds between WebSocket pings to find dead peers"}
    )
    trust_proxy: bool = field(
        default=False,
        metadata={"help": "take the client address from X-Forwarded-For (behind a proxy)"},
    )
    webhook_private_targets: bool = field(
        default=False,
        metadata={
            "help": "let webhooks go to loopback and private addresses (default: public only)"
        },
    )

    def __post_init__(self) -> None:
        problems = list(_problems(self))
        if problems:
            raise SettingsError("; ".join(problems))

    @property
    def base_url(self) -> str:
        if self.public_url:
            return self.public_url.rstrip("/")
        scheme = "https" if self.tls_cert else "http"
        return f"{scheme}://{self.host}:{self.port}"

    @classmethod
    def load(
        cls, overrides: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None
    ) -> Settings:
        """Build settings: defaults < ``BROKER_*`` environment < explicit overrides (CLI flags)."""
        values: dict[str, Any] = {}
        hints = get_type_hints(cls)
        for f in fields(cls):
            env_name = ENV_PREFIX + f.name.upper()
            if environ is not None and env_name in environ:
                values[f.name] = _convert(f.name, hints[f.name], environ[env_name])
        for name, value in (overrides or {}).items():
            if value is None:
                continue
            if name not in hints:
                raise SettingsError(f"unknown setting {name!r}")
            values[name] = _convert(name, hints[name], value) if isinstance(value, str) else value
        return cls(**values)

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)


def describe() -> list[tuple[str, str, str, str]]:
    """(flag, env var, default, help) for every setting: the README table and ``--help``."""
    rows = []
    for f in fields(Settings):
        default = f.default if f.default is not dataclasses.MISSING else None
        shown = ",".join(default) if isinstance(default, tuple) else str(default)
        if default is None or default == ():
            shown = ""
        rows.append(
            (
                "--" + f.name.replace("_", "-"),
                ENV_PREFIX + f.name.upper(),
                shown,
                str(f.metadata.get("help", "")),
            )
        )
    return rows


def _convert(name: str, hint: Any, raw: str) -> Any:
    # Unwrap ``X | None`` only; ``tuple[str, ...]`` keeps its own type (its args are items).
    optional = get_origin(hint) in (Union, types.UnionType) and type(None) in get_args(hint)
    kind = next(a for a in get_args(hint) if a is not type(None)) if optional else hint
    text = raw.strip()
    if optional and text == "":
        return None
    try:
        if kind is bool:
            lowered = text.lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off", ""):
                return False
            raise ValueError(raw)
        if kind is int:
            return int(text)
        if kind is Path:
            return Path(text)
        if kind is tuple or get_origin(kind) is tuple:
            return tuple(part.strip() for part in text.split(",") if part.strip())
        return text
    except ValueError:
        raise SettingsError(
            f"{name}: {raw!r} is not a valid {getattr(kind, '__name__', kind)}"
        ) from None


def _problems(s: Settings) -> list[str]:
    out = []
    if not 0 <= s.port <= 65535:
        out.append(f"port must be 0..65535, got {s.port}")
    if (s.tls_cert is None) != (s.tls_key is None):
        out.append("tls_cert and tls_key must be given together")
    for name in ("tls_cert", "tls_key", "signing_key"):
        value = getattr(s, name)
        if value is not None and not Path(value).is_file():
            out.append(f"{name}: no such file {value}")
    if s.redis_url is not None and not s.redis_url.startswith(("redis://", "rediss://", "unix://")):
        out.append(f"redis_url must start with redis://, rediss:// or unix://, got {s.redis_url!r}")
    if s.log_format not in ("text", "json"):
        out.append(f"log_format must be text or json, got {s.log_format!r}")
    if s.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        out.append(f"log_level must be a level name, got {s.log_level!r}")
    for name in ("access_token_ttl", "refresh_token_ttl", "device_code_ttl"):
        if getattr(s, name) < 30:
            out.append(f"{name} must be at least 30 seconds")
    if not 0 <= s.join_before_minutes <= 24 * 60:
        out.append("join_before_minutes must be 0..1440")
    if not 0 <= s.join_grace_minutes <= 24 * 60:
        out.append("join_grace_minutes must be 0..1440")
    if s.turn_urls and not s.turn_secret:
        out.append("turn_urls need turn_secret")
    if not 60 <= s.turn_ttl <= 86400:
        out.append("turn_ttl must be 60..86400 seconds")
    for url in s.stun_urls:
        if not url.startswith(("stun:", "stuns:")):
            out.append(f"stun url {url!r} must start with stun: or stuns:")
    for url in s.turn_urls:
        if not url.startswith(("turn:", "turns:")):
            out.append(f"turn url {url!r} must start with turn: or turns:")
    if not 1 <= s.signaling_grace <= 600:
        out.append("signaling_grace must be 1..600 seconds")
    if not 2 <= s.heartbeat <= 300:
        out.append("heartbeat must be 2..300 seconds")
    if s.device_poll_interval < 1:
        out.append("device_poll_interval must be at least 1 second")
    if s.key_rotation_days < 1:
        out.append("key_rotation_days must be at least 1")
    if s.max_body_bytes < 1024:
        out.append("max_body_bytes must be at least 1024")
    for origin in s.cors_origins:
        if origin != "*" and not origin.startswith(("http://", "https://")):
            out.append(f"cors origin {origin!r} must be * or start with http:// or https://")
    return out
