"""Hand-built JWTs (validly signed but wrong in one way, or malformed in one way), and
`refuse`, the assertion a batch of them ends in.

PyJWT refuses to produce most of these (alg none, HMAC keyed with a PEM public key, odd
header members), so tokens are assembled segment by segment here.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID
from jwt.algorithms import get_default_algorithms

from tests.security.conftest import Arena, Send, assert_all_refused

Signer = Callable[[bytes], bytes]
DROP: Any = object()
"""As a claim or header value: leave the member out."""

ACCESS_TYPE = "at+jwt"
REFRESH_TYPE = "rt+jwt"
KINDS = ("access", "refresh")


def b64url(data: bytes) -> str:
    """Return base64url without padding, as JWS compact serialisation wants it."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(text: str) -> bytes:
    """Return the bytes of an unpadded base64url string."""
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def encode_segment(value: object) -> str:
    """Return a header or payload segment: raw bytes as they are, anything else as JSON."""
    raw = value if isinstance(value, bytes) else json.dumps(value, separators=(",", ":")).encode()
    return b64url(raw)


def assemble(header: object, payload: object, signer: Signer | None) -> str:
    """Return `header.payload.signature`, the signature made by `signer` (empty if None)."""
    signing_input = f"{encode_segment(header)}.{encode_segment(payload)}"
    signature = signer(signing_input.encode()) if signer else b""
    return f"{signing_input}.{b64url(signature)}"


def hmac_signer(secret: bytes, digest: str = "sha256") -> Signer:
    """Return a signer computing HMAC-`digest` with `secret` (any bytes, even a public key)."""
    return lambda msg: hmac.new(secret, msg, getattr(hashlib, digest)).digest()


def key_signer(arena: Arena, alg: str | None = None) -> Signer:
    """Return a signer using the server's own key material under `alg` (default: its own)."""
    assert arena.key is not None
    algorithm = get_default_algorithms()[alg or arena.key.alg]
    signing = arena.key.signing
    return lambda msg: algorithm.sign(msg, signing)


def header(arena: Arena, kind: str = "access", **members: Any) -> dict[str, Any]:
    """Return the JOSE header the server itself would write, with `members` changed."""
    assert arena.key is not None
    typ = ACCESS_TYPE if kind == "access" else REFRESH_TYPE
    base: dict[str, Any] = {"alg": arena.key.alg, "kid": arena.key.kid, "typ": typ}
    return _merge(base, members)


def claims(arena: Arena, kind: str = "access", **members: Any) -> dict[str, Any]:
    """Return the victim's own claims (fresh times), with `members` changed.

    Starting from the victim's real claims means a forgery the server wrongly accepted would
    act as the victim: the family, jti and CSRF token are the real ones.
    """
    now = int(time.time())
    base = {**arena.victim.claims(kind), "iat": now, "exp": now + 600}
    return _merge(base, members)


def forge(
    arena: Arena,
    kind: str = "access",
    *,
    head: dict[str, Any] | None = None,
    payload: object = None,
    signer: Any = DROP,
) -> str:
    """Return a token of `kind`: the server's header and the victim's claims unless given,
    signed with the server's own key unless another `signer` (or None: no signature) is given.
    """
    return assemble(
        header(arena, kind) if head is None else head,
        claims(arena, kind) if payload is None else payload,
        key_signer(arena) if signer is DROP else signer,
    )


def _merge(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    merged = {**base, **changes}
    return {k: v for k, v in merged.items() if v is not DROP}


def attacker_key(alg: str) -> tuple[Any, dict[str, Any]]:
    """Return a fresh attacker key for `alg` (private key or HMAC secret) and its JWK."""
    algorithm = get_default_algorithms()[alg]
    if alg.startswith("HS"):
        secret = secrets.token_bytes(32)
        return secret, json.loads(algorithm.to_jwk(secret))
    if alg == "ES256":
        private: Any = ec.generate_private_key(ec.SECP256R1())
    else:
        private = (
            rsa.generate_private_key(public_exponent=65537, key_size=2048)
            if alg == "RS256"
            else ed25519.Ed25519PrivateKey.generate()
        )
    return private, json.loads(algorithm.to_jwk(private.public_key()))


def self_signed_cert(private: ec.EllipticCurvePrivateKey) -> bytes:
    """Return the DER of a self-signed certificate for `private` (an attacker's `x5c`)."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "authbench")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(private, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.DER)


Case = tuple[str, str, str]
"""(kind, label, token): a token to present as an access or a refresh token."""


async def refuse(arena: Arena, cases: list[Case]) -> None:
    """Present each token as an access token (GET /me) or refresh token (POST /refresh); every
    one must be refused by the auth step (401 invalid_token / invalid_grant) with no effect."""
    # The victim's real CSRF token, so only the token's own checks can stop a refresh.
    csrf = str(arena.victim.claims("refresh").get("csrf", ""))
    attacks: list[tuple[str, Send]] = []
    for kind, what, token in cases:
        send = (
            partial(arena.me_with, token)
            if kind == "access"
            else partial(arena.refresh_with, token, csrf)
        )
        attacks.append((f"{kind} {what}", send))
    replies = await assert_all_refused(arena, attacks, 401)
    for (kind, what, _), reply in zip(cases, replies, strict=True):
        code = "invalid_token" if kind == "access" else "invalid_grant"
        assert reply.body["error"] == code, f"{kind} {what}: {reply.body}"
