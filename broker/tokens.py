"""Signed tokens: the Ed25519 key ring, JWKS, and issuing and verifying JWTs.

Each node keeps its private keys in ``<data-dir>/keys`` (mode 0600) and publishes the public
halves to the store, so ``/.well-known/jwks.json`` on any node lists every key any node signs
with, and any node verifies any node's tokens. A new key is made when the newest is older than
``key_rotation_days``; the older key keeps verifying until every token it signed has expired.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import os
import secrets
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from broker.config import Settings
from broker.domain import Role, SigningKey, utcnow
from broker.errors import InvalidToken
from broker.store.base import Store

log = logging.getLogger(__name__)

ALGORITHM = "EdDSA"
ACCESS_AUDIENCE = "citycall-api"
LEEWAY_SECONDS = 5
# How long a superseded key keeps verifying: longer than any token it may have signed.
RETIRE_GRACE = timedelta(days=2)
# An unknown kid reloads the published keys (another node may have just made one), at most
# this often, so a flood of forged kids costs at most a few store reads a second.
_CACHE_REFRESH_SECONDS = 0.2


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def public_jwk(key: Ed25519PublicKey) -> dict[str, str]:
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return {"kty": "OKP", "crv": "Ed25519", "x": b64url(raw)}


def thumbprint(jwk: dict[str, str]) -> str:
    """RFC 7638 JWK thumbprint (SHA-256), used as the ``kid``."""
    canonical = json.dumps(
        {k: jwk[k] for k in ("crv", "kty", "x")}, separators=(",", ":"), sort_keys=True
    )
    return b64url(hashlib.sha256(canonical.encode()).digest())


@dataclass(frozen=True, slots=True)
class LocalKey:
    kid: str
    private: Ed25519PrivateKey
    created_at: datetime


def _write_private(path: Path, key: Ed25519PrivateKey) -> None:
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)


def _read_private(path: Path) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path}: not an Ed25519 private key")
    return key


def _local_key(key: Ed25519PrivateKey, created_at: datetime) -> LocalKey:
    return LocalKey(thumbprint(public_jwk(key.public_key())), key, created_at)


def load_local_keys(settings: Settings, now: datetime) -> list[LocalKey]:
    """Keys of this node, oldest first; makes the first (or a rotated) key as needed."""
    if settings.signing_key is not None:
        path = settings.signing_key
        created = datetime.fromtimestamp(path.stat().st_mtime, tz=now.tzinfo)
        return [_local_key(_read_private(path), created)]
    key_dir = settings.data_dir / "keys"
    key_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(key_dir, 0o700)
    keys = []
    for path in sorted(key_dir.glob("ed25519-*.pem")):
        stamp = int(path.stem.split("-")[1])
        created = datetime.fromtimestamp(stamp / 1000, tz=now.tzinfo)
        keys.append(_local_key(_read_private(path), created))
    keys.sort(key=lambda k: k.created_at)
    if not keys or now - keys[-1].created_at > timedelta(days=settings.key_rotation_days):
        keys.append(rotate(key_dir, now))
    return keys


def rotate(key_dir: Path, now: datetime) -> LocalKey:
    """Make a new signing key in ``key_dir``; it becomes the one new tokens are signed with."""
    key_dir.mkdir(parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    stamp = int(now.timestamp() * 1000)
    _write_private(key_dir / f"ed25519-{stamp}.pem", key)
    local = _local_key(key, datetime.fromtimestamp(stamp / 1000, tz=now.tzinfo))
    log.info("generated signing key", extra={"kid": local.kid})
    return local


@dataclass(frozen=True, slots=True)
class AccessClaims:
    user_id: str
    role: Role
    clinic_id: str | None
    token_id: str
    expires_at: int


class KeyRing:
    """Signs with this node's newest key; verifies with any published, unretired key."""

    def __init__(self, store: Store, local: list[LocalKey]) -> None:
        if not local:
            raise ValueError("a key ring needs at least one key")
        self._store = store
        self._local = local
        self._public: dict[str, tuple[Ed25519PublicKey, datetime | None]] = {}
        self._refreshed = 0.0

    @property
    def active(self) -> LocalKey:
        return self._local[-1]

    async def publish(self, now: datetime) -> None:
        """Publish this node's public keys; superseded ones get a retirement time."""
        for older, newer in zip(self._local, self._local[1:], strict=False):
            retire = newer.created_at + RETIRE_GRACE
            await self._store.put_signing_key(_record(older, retire))
        await self._store.put_signing_key(_record(self.active, None))
        await self.refresh()

    async def refresh(self) -> None:
        keys = await self._store.list_signing_keys()
        loaded: dict[str, tuple[Ed25519PublicKey, datetime | None]] = {}
        for rec in keys:
            jwk = json.loads(rec.public_jwk)
            raw = base64.urlsafe_b64decode(jwk["x"] + "=" * (-len(jwk["x"]) % 4))
            loaded[rec.kid] = (Ed25519PublicKey.from_public_bytes(raw), rec.retire_at)
        self._public = loaded
        self._refreshed = time.monotonic()

    async def jwks(self, now: datetime) -> dict[str, Any]:
        keys = await self._store.list_signing_keys()
        out = []
        for rec in keys:
            if rec.retire_at is not None and rec.retire_at <= now:
                continue
            jwk = json.loads(rec.public_jwk)
            out.append({**jwk, "kid": rec.kid, "alg": ALGORITHM, "use": "sig"})
        return {"keys": out}

    async def verification_key(self, kid: str, now: datetime) -> Ed25519PublicKey:
        entry = self._public.get(kid)
        if entry is None and time.monotonic() - self._refreshed > _CACHE_REFRESH_SECONDS:
            await self.refresh()
            entry = self._public.get(kid)
        if entry is None:
            raise InvalidToken("token signed with an unknown key")
        key, retire_at = entry
        if retire_at is not None and retire_at <= now:
            raise InvalidToken("token signed with a retired key")
        return key

    def sign(self, claims: dict[str, Any]) -> str:
        return jwt.encode(
            claims, self.active.private, algorithm=ALGORITHM, headers={"kid": self.active.kid}
        )


def _record(key: LocalKey, retire_at: datetime | None) -> SigningKey:
    jwk = public_jwk(key.private.public_key())
    return SigningKey(
        kid=key.kid,
        public_jwk=json.dumps(jwk, sort_keys=True),
        created_at=key.created_at,
        retire_at=retire_at,
    )


class Tokens:
    """Issues and verifies the broker's JWTs. ``typ`` claims keep token kinds apart."""

    def __init__(self, keys: KeyRing, issuer: str, access_ttl: int) -> None:
        self._keys = keys
        self._issuer = issuer
        self._access_ttl = access_ttl

    @property
    def access_ttl(self) -> int:
        return self._access_ttl

    def issue(
        self,
        subject: str,
        audience: str,
        typ: str,
        ttl: int,
        extra: dict[str, Any],
        now: datetime | None = None,
    ) -> tuple[str, int]:
        issued = int((now or utcnow()).timestamp())
        claims = {
            **extra,
            "iss": self._issuer,
            "aud": audience,
            "sub": subject,
            "typ": typ,
            "iat": issued,
            "nbf": issued,
            "exp": issued + ttl,
            "jti": secrets.token_urlsafe(12),
        }
        return self._keys.sign(claims), issued + ttl

    def issue_access(
        self, user_id: str, role: Role, clinic_id: str | None, now: datetime | None = None
    ) -> tuple[str, int]:
        extra: dict[str, Any] = {"role": role.value}
        if clinic_id is not None:
            extra["clinic"] = clinic_id
        return self.issue(user_id, ACCESS_AUDIENCE, "access", self._access_ttl, extra, now)

    async def verify(
        self, token: str, audience: str, typ: str, now: datetime | None = None
    ) -> dict[str, Any]:
        """Verify signature, algorithm, ``kid``, ``exp``/``nbf``/``iss``/``aud`` and ``typ``."""
        moment = now or utcnow()
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise InvalidToken("malformed token") from None
        if header.get("alg") != ALGORITHM:
            raise InvalidToken("token algorithm not accepted")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise InvalidToken("token has no key id")
        key = await self._keys.verification_key(kid, moment)
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[ALGORITHM],
                audience=audience,
                issuer=self._issuer,
                leeway=LEEWAY_SECONDS,
                options={"require": ["exp", "nbf", "iat", "iss", "aud", "sub", "jti"]},
            )
        except jwt.ExpiredSignatureError:
            raise InvalidToken("token expired", code="token_expired") from None
        except jwt.PyJWTError:
            raise InvalidToken("token rejected") from None
        if claims.get("typ") != typ:
            raise InvalidToken("wrong kind of token")
        return claims

    async def verify_access(self, token: str, now: datetime | None = None) -> AccessClaims:
        claims = await self.verify(token, ACCESS_AUDIENCE, "access", now)
        try:
            role = Role(claims["role"])
        except (KeyError, ValueError):
            raise InvalidToken("token has no valid role") from None
        clinic = claims.get("clinic")
        return AccessClaims(
            user_id=str(claims["sub"]),
            role=role,
            clinic_id=clinic if isinstance(clinic, str) else None,
            token_id=str(claims["jti"]),
            expires_at=int(claims["exp"]),
        )


def unverified_type(token: str) -> str | None:
    """The ``typ`` claim of a token, *not verified*: only to pick the one verification to run
    (``Tokens.verify`` still checks everything, ``typ`` included). None if unreadable. Reads
    the payload itself: a few microseconds, where ``jwt.decode`` unverified takes about 30."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (ValueError, binascii.Error):  # bad base64, UTF-8 or JSON
        return None
    typ = claims.get("typ") if isinstance(claims, dict) else None
    return typ if isinstance(typ, str) else None


def opaque_secret() -> str:
    """A 256-bit random secret for refresh tokens, API keys and device codes."""
    return secrets.token_urlsafe(32)


def secret_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()
