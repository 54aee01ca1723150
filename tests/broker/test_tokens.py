"""Signed tokens: every forgery we know of is refused; keys rotate without logging anyone out."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import stat
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
import pytest
import pytest_asyncio
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from broker.config import Settings
from broker.domain import Role, utcnow
from broker.errors import InvalidToken
from broker.store.sqlite import SqliteStore
from broker.tokens import (
    ACCESS_AUDIENCE,
    RETIRE_GRACE,
    KeyRing,
    Tokens,
    b64url,
    load_local_keys,
    opaque_secret,
    public_jwk,
    rotate,
    secret_hash,
    thumbprint,
    unverified_type,
)

ISSUER = "citycall"


@pytest_asyncio.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    s = await SqliteStore.open(tmp_path / "citycall.db")
    try:
        yield s
    finally:
        await s.close()


async def make_ring(store: SqliteStore, settings: Settings, now: datetime) -> KeyRing:
    ring = KeyRing(store, load_local_keys(settings, now))
    await ring.publish(now)
    return ring


@pytest_asyncio.fixture
async def ring(store: SqliteStore, settings: Settings) -> KeyRing:
    return await make_ring(store, settings, utcnow())


@pytest.fixture
def tokens(ring: KeyRing) -> Tokens:
    return Tokens(ring, ISSUER, 900)


def segment(obj: Any) -> str:
    return b64url(json.dumps(obj, separators=(",", ":")).encode())


def unsegment(text: str) -> Any:
    return json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))


def access_claims(**changes: Any) -> dict[str, Any]:
    now = int(utcnow().timestamp())
    claims: dict[str, Any] = {
        "iss": ISSUER,
        "aud": ACCESS_AUDIENCE,
        "sub": "usr_victim",
        "typ": "access",
        "role": "patient",
        "iat": now,
        "nbf": now,
        "exp": now + 900,
        "jti": "jti-1",
    }
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not None}


async def rejected(tokens: Tokens, token: str, match: str | None = None) -> InvalidToken:
    with pytest.raises(InvalidToken, match=match) as caught:
        await tokens.verify_access(token)
    return caught.value


# the genuine article


async def test_access_token_round_trip(tokens: Tokens, ring: KeyRing) -> None:
    token, expires_at = tokens.issue_access("usr_1", Role.CLINICIAN, "cln_1")
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "EdDSA"
    assert header["kid"] == ring.active.kid
    claims = await tokens.verify_access(token)
    assert (claims.user_id, claims.role, claims.clinic_id) == ("usr_1", Role.CLINICIAN, "cln_1")
    assert claims.expires_at == expires_at
    assert claims.token_id


async def test_hand_signed_valid_claims_verify(tokens: Tokens, ring: KeyRing) -> None:
    # The forgeries below start from these claims, so they are valid in themselves.
    claims = await tokens.verify_access(ring.sign(access_claims()))
    assert claims.user_id == "usr_victim"


# forgeries and mistakes


@pytest.mark.parametrize("alg", ["none", "None", "NONE"])
async def test_alg_none_is_refused(tokens: Tokens, ring: KeyRing, alg: str) -> None:
    header = {"alg": alg, "typ": "JWT", "kid": ring.active.kid}
    token = f"{segment(header)}.{segment(access_claims(role='admin'))}."
    await rejected(tokens, token, "algorithm")


def _public_forms(ring: KeyRing) -> dict[str, bytes]:
    public = ring.active.private.public_key()
    return {
        "raw": public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw),
        "pem": public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
        "jwk-x": public_jwk(public)["x"].encode(),
        "jwk-json": json.dumps(public_jwk(public)).encode(),
    }


@pytest.mark.parametrize("form", ["raw", "pem", "jwk-x", "jwk-json"])
@pytest.mark.parametrize("alg", ["HS256", "HS512"])
async def test_hmac_signed_with_the_public_key_is_refused(
    tokens: Tokens, ring: KeyRing, form: str, alg: str
) -> None:
    """Algorithm confusion: the attacker knows the public key and uses it as an HMAC secret."""
    secret = _public_forms(ring)[form]
    signing_input = f"{segment({'alg': alg, 'kid': ring.active.kid})}."
    signing_input += segment(access_claims(role="admin"))
    digest = hashlib.sha256 if alg == "HS256" else hashlib.sha512
    mac = hmac.new(secret, signing_input.encode(), digest).digest()
    await rejected(tokens, f"{signing_input}.{b64url(mac)}", "algorithm")


async def test_eddsa_header_with_hmac_signature_is_refused(tokens: Tokens, ring: KeyRing) -> None:
    secret = _public_forms(ring)["raw"]
    signing_input = f"{segment({'alg': 'EdDSA', 'kid': ring.active.kid})}."
    signing_input += segment(access_claims())
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    await rejected(tokens, f"{signing_input}.{b64url(mac)}")


async def test_unknown_kid_is_refused(tokens: Tokens) -> None:
    stranger = Ed25519PrivateKey.generate()
    token = jwt.encode(access_claims(), stranger, algorithm="EdDSA", headers={"kid": "nope"})
    await rejected(tokens, token, "unknown key")


async def test_strangers_key_claiming_our_kid_is_refused(tokens: Tokens, ring: KeyRing) -> None:
    stranger = Ed25519PrivateKey.generate()
    token = jwt.encode(
        access_claims(), stranger, algorithm="EdDSA", headers={"kid": ring.active.kid}
    )
    await rejected(tokens, token, "rejected")


async def test_missing_kid_is_refused(tokens: Tokens, ring: KeyRing) -> None:
    token = jwt.encode(access_claims(), ring.active.private, algorithm="EdDSA")
    assert "kid" not in jwt.get_unverified_header(token)
    await rejected(tokens, token, "no key id")


@pytest.mark.parametrize("kid", ["", 7, None, ["a"]])
async def test_malformed_kid_is_refused(tokens: Tokens, ring: KeyRing, kid: Any) -> None:
    token = jwt.encode(access_claims(), ring.active.private, algorithm="EdDSA")
    header, payload, signature = token.split(".")
    forged_header = segment({**unsegment(header), "kid": kid})
    await rejected(tokens, f"{forged_header}.{payload}.{signature}")


async def test_tampered_payload_is_refused(tokens: Tokens) -> None:
    token, _ = tokens.issue_access("usr_1", Role.PATIENT, None)
    header, payload, signature = token.split(".")
    claims = unsegment(payload)
    claims["role"] = "admin"
    claims["clinic"] = "cln_victim"
    await rejected(tokens, f"{header}.{segment(claims)}.{signature}", "rejected")


async def test_truncated_signature_is_refused(tokens: Tokens) -> None:
    token, _ = tokens.issue_access("usr_1", Role.PATIENT, None)
    await rejected(tokens, token[:-4])
    await rejected(tokens, token.rsplit(".", 1)[0] + ".")


async def test_expired_token_is_refused(tokens: Tokens) -> None:
    token, expires_at = tokens.issue_access(
        "usr_1", Role.PATIENT, None, now=utcnow() - timedelta(hours=1)
    )
    assert expires_at < utcnow().timestamp()
    error = await rejected(tokens, token, "expired")
    assert error.code == "token_expired"


async def test_unverified_type_only_reads_the_claim(tokens: Tokens) -> None:
    expired, _ = tokens.issue_access("usr_1", Role.PATIENT, None, now=utcnow() - timedelta(days=1))
    join, _ = tokens.issue("usr_1", "citycall-signaling", "join", 60, {"sid": "ses_1"})
    assert unverified_type(expired) == "access"  # expiry is not its business
    assert unverified_type(join) == "join"
    assert unverified_type(join.rsplit(".", 1)[0] + "." + "A" * 86) == "join"
    for junk in ("garbage", "a.b.c", ""):
        assert unverified_type(junk) is None


async def test_not_yet_valid_token_is_refused(tokens: Tokens, ring: KeyRing) -> None:
    later = int(utcnow().timestamp()) + 3600
    await rejected(tokens, ring.sign(access_claims(nbf=later)), "rejected")


async def test_token_from_the_future_is_refused(tokens: Tokens) -> None:
    token, _ = tokens.issue_access("usr_1", Role.PATIENT, None, now=utcnow() + timedelta(hours=1))
    await rejected(tokens, token)


async def test_wrong_issuer_is_refused(tokens: Tokens, ring: KeyRing) -> None:
    other = Tokens(ring, "someone-else", 900)
    token, _ = other.issue_access("usr_1", Role.ADMIN, "cln_1")
    await rejected(tokens, token, "rejected")


async def test_wrong_audience_is_refused(tokens: Tokens) -> None:
    token, _ = tokens.issue("usr_1", "citycall-join", "access", 900, {"role": "patient"})
    await rejected(tokens, token, "rejected")


async def test_wrong_typ_is_refused(tokens: Tokens) -> None:
    """An access-shaped token (right audience, role) of another kind, e.g. a join token."""
    token, _ = tokens.issue("usr_1", ACCESS_AUDIENCE, "join", 900, {"role": "patient"})
    await rejected(tokens, token, "wrong kind")
    # ... and the other way round: an access token is no join token.
    access, _ = tokens.issue_access("usr_1", Role.PATIENT, None)
    with pytest.raises(InvalidToken):
        await tokens.verify(access, ACCESS_AUDIENCE, "join")


@pytest.mark.parametrize("missing", ["exp", "nbf", "iat", "iss", "aud", "sub", "jti", "typ"])
async def test_required_claims(tokens: Tokens, ring: KeyRing, missing: str) -> None:
    await rejected(tokens, ring.sign(access_claims(**{missing: None})))


@pytest.mark.parametrize("role", [None, "superuser", 1])
async def test_role_must_be_known(tokens: Tokens, ring: KeyRing, role: Any) -> None:
    await rejected(tokens, ring.sign(access_claims(role=role)), "role")


@pytest.mark.parametrize(
    "token",
    [
        "",
        "garbage",
        "a.b.c",
        "...",
        "Bearer x",
        "eyJhbGciOiJFZERTQSJ9",
        segment([]) + "." + segment({}) + ".",
        segment({"alg": "EdDSA", "kid": "k"}) + ".not-json.sig",
        "\x00\x01\x02",
        "x" * 10_000,
        opaque_secret(),
    ],
)
async def test_garbage_is_refused(tokens: Tokens, token: str) -> None:
    await rejected(tokens, token)


# keys and rotation


def test_kid_is_the_rfc7638_thumbprint() -> None:
    # RFC 8037 appendix A.3: thumbprint of the example Ed25519 public key.
    jwk = {"crv": "Ed25519", "kty": "OKP", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}
    assert thumbprint(jwk) == "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"


def test_private_keys_are_private(settings: Settings) -> None:
    load_local_keys(settings, utcnow())
    key_dir = settings.data_dir / "keys"
    assert stat.S_IMODE(key_dir.stat().st_mode) == 0o700
    files = list(key_dir.glob("ed25519-*.pem"))
    assert len(files) == 1
    assert stat.S_IMODE(files[0].stat().st_mode) == 0o600


def test_keys_persist_and_rotate_when_old(settings: Settings) -> None:
    now = utcnow()
    first = load_local_keys(settings, now)
    again = load_local_keys(settings, now + timedelta(days=1))
    assert [k.kid for k in again] == [k.kid for k in first]
    later = now + timedelta(days=settings.key_rotation_days + 1)
    rotated = load_local_keys(settings, later)
    assert len(rotated) == 2
    assert rotated[0].kid == first[0].kid
    assert rotated[-1].kid != first[0].kid


def test_configured_signing_key_is_used(tmp_path: Path) -> None:
    private = Ed25519PrivateKey.generate()
    path = tmp_path / "signing.pem"
    path.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    keys = load_local_keys(Settings(data_dir=tmp_path, signing_key=path), utcnow())
    assert [k.kid for k in keys] == [thumbprint(public_jwk(private.public_key()))]
    assert not (tmp_path / "keys").exists()


async def test_rotation_keeps_old_tokens_valid_until_the_old_key_retires(
    store: SqliteStore, settings: Settings
) -> None:
    now = utcnow()
    ring_a = await make_ring(store, settings, now)
    tokens_a = Tokens(ring_a, ISSUER, 900)
    kid_a = ring_a.active.kid
    old_token, _ = tokens_a.issue_access("usr_1", Role.PATIENT, None)
    # A long-lived token, so that only the key's retirement can end it.
    long_token, _ = tokens_a.issue(
        "usr_1", ACCESS_AUDIENCE, "access", 10 * 86400, {"role": "patient"}
    )

    rotated_at = now + timedelta(seconds=1)
    key_b = rotate(settings.data_dir / "keys", rotated_at)
    ring_b = await make_ring(store, settings, rotated_at)
    tokens_b = Tokens(ring_b, ISSUER, 900)
    assert ring_b.active.kid == key_b.kid != kid_a

    # Tokens signed with A still verify; new tokens carry B.
    assert (await tokens_b.verify_access(old_token)).user_id == "usr_1"
    new_token, _ = tokens_b.issue_access("usr_2", Role.FAMILY, None)
    assert jwt.get_unverified_header(new_token)["kid"] == key_b.kid
    assert (await tokens_b.verify_access(new_token)).user_id == "usr_2"

    # Another node that still signs with A verifies B's tokens once it reloads the keys.
    await ring_a.refresh()
    assert (await tokens_a.verify_access(new_token)).user_id == "usr_2"

    jwks = await ring_b.jwks(utcnow())
    assert {k["kid"] for k in jwks["keys"]} == {kid_a, key_b.kid}
    for entry in jwks["keys"]:
        assert entry["kty"] == "OKP" and entry["crv"] == "Ed25519"
        assert entry["alg"] == "EdDSA" and entry["use"] == "sig"
        assert "d" not in entry  # never the private part

    # Past A's retirement, A stops verifying and leaves the JWKS; B carries on.
    retired = now + RETIRE_GRACE + timedelta(seconds=5)
    with pytest.raises(InvalidToken, match="retired"):
        await tokens_b.verify(long_token, ACCESS_AUDIENCE, "access", now=retired)
    assert await tokens_b.verify(long_token, ACCESS_AUDIENCE, "access")  # before: fine
    await tokens_b.verify(new_token, ACCESS_AUDIENCE, "access", now=retired)
    jwks_later = await ring_b.jwks(retired)
    assert [k["kid"] for k in jwks_later["keys"]] == [key_b.kid]


async def test_jwks_verifies_issued_tokens(tokens: Tokens, ring: KeyRing) -> None:
    token, _ = tokens.issue_access("usr_1", Role.PATIENT, None)
    jwks = await ring.jwks(utcnow())
    kid = jwt.get_unverified_header(token)["kid"]
    (entry,) = [k for k in jwks["keys"] if k["kid"] == kid]
    key = jwt.PyJWK(entry).key
    claims = jwt.decode(token, key, algorithms=["EdDSA"], audience=ACCESS_AUDIENCE)
    assert claims["sub"] == "usr_1"


def test_opaque_secrets_and_hashes() -> None:
    a, b = opaque_secret(), opaque_secret()
    assert a != b
    assert len(base64.urlsafe_b64decode(a + "=")) == 32
    assert secret_hash(a) == hashlib.sha256(a.encode()).hexdigest()
    assert a not in secret_hash(a)
