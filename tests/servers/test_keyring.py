"""Key ring: key material, RFC 7638 kids, type checks, rotation and retirement, and the JWKS."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
from collections.abc import Callable
from typing import Any

import aiohttp
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, HMACAlgorithm, OKPAlgorithm, RSAAlgorithm

from loadtests.client import AuthClient, Credential
from servers.errors import ConfigError
from servers.keyring import (
    KeyRing,
    SigningKey,
    generate_key_material,
    load_key,
    with_generated_keys,
)
from servers.settings import Settings
from tests.conftest import ServeFn

ALGS = ("HS256", "RS256", "ES256", "EdDSA")
# RFC 7638 §3.2: the required members of each key type, nothing else.
REQUIRED_MEMBERS = {
    "RSA": ("e", "kty", "n"),
    "EC": ("crv", "kty", "x", "y"),
    "OKP": ("crv", "kty", "x"),
    "oct": ("k", "kty"),
}
# The private members a published JWK must never carry (RFC 7518 §6).
PRIVATE_MEMBERS = {"d", "p", "q", "dp", "dq", "qi", "oth", "k"}


def rfc7638_thumbprint(jwk: dict[str, Any]) -> str:
    """The full base64url SHA-256 JWK thumbprint, computed here independently of the server."""
    required = {name: jwk[name] for name in REQUIRED_MEMBERS[jwk["kty"]]}
    canonical = json.dumps(required, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    digest = hashlib.sha256(canonical.encode("utf-8")).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def expected_thumbprint(alg: str, material: bytes) -> str:
    """The thumbprint of `material`'s public JWK, as PyJWT serialises it."""
    if alg == "HS256":
        return rfc7638_thumbprint(HMACAlgorithm.to_jwk(material, as_dict=True))
    private: Any = serialization.load_pem_private_key(material, password=None)
    algorithms: dict[str, Any] = {
        "RS256": RSAAlgorithm,
        "ES256": ECAlgorithm,
        "EdDSA": OKPAlgorithm,
    }
    to_jwk = algorithms[alg].to_jwk
    return rfc7638_thumbprint(to_jwk(private.public_key(), as_dict=True))


def pem(private: Any) -> bytes:
    encoded: bytes = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return encoded


def ring_of(alg: str, count: int) -> tuple[KeyRing, list[SigningKey]]:
    keys = [load_key(alg, generate_key_material(alg)) for _ in range(count)]
    return KeyRing(alg, keys), keys


def sign(key: SigningKey, claims: dict[str, Any] | None = None) -> str:
    return jwt.encode(
        claims or {"sub": "1"}, key.signing, algorithm=key.alg, headers={"kid": key.kid}
    )


def verify_with(ring: KeyRing, token: str) -> dict[str, Any] | None:
    """Verify `token` the way a server would: find its key by kid, then check the signature."""
    key = ring.lookup(jwt.get_unverified_header(token).get("kid"))
    if key is None:
        return None
    claims: dict[str, Any] = jwt.decode(token, key.verifying, algorithms=[key.alg])
    return claims


# --- key material and load_key ------------------------------------------------------------


def test_the_reference_thumbprint_matches_the_rfc_7638_example() -> None:
    rfc_key = {
        "kty": "RSA",
        "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuh"
        "DR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4Q"
        "yQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD0"
        "8qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awa"
        "pJzKnqDKgw",
        "e": "AQAB",
        "alg": "RS256",
        "kid": "2011-04-29",
    }
    assert rfc7638_thumbprint(rfc_key) == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


def test_hmac_material_is_32_fresh_random_bytes() -> None:
    a, b = generate_key_material("HS256"), generate_key_material("HS256")
    assert len(a) == len(b) == 32 and a != b


@pytest.mark.parametrize("alg", ["RS256", "ES256", "EdDSA"])
def test_asymmetric_material_is_an_unencrypted_pkcs8_pem(alg: str) -> None:
    material = generate_key_material(alg)
    assert material.startswith(b"-----BEGIN PRIVATE KEY-----")
    assert material != generate_key_material(alg)


@pytest.mark.parametrize("alg", ALGS)
def test_load_key_signs_and_verifies(alg: str) -> None:
    key = load_key(alg, generate_key_material(alg))
    assert key.alg == alg
    token = sign(key, {"sub": "42"})
    assert jwt.decode(token, key.verifying, algorithms=[alg]) == {"sub": "42"}


@pytest.mark.parametrize("alg", ALGS)
def test_kid_is_the_rfc_7638_thumbprint_of_the_public_key(alg: str) -> None:
    material = generate_key_material(alg)
    full = expected_thumbprint(alg, material)
    kid = load_key(alg, material).kid
    # The server may shorten the thumbprint to save token bytes; it must still be one.
    assert len(kid) >= 22
    assert full.startswith(kid)


@pytest.mark.parametrize("alg", ALGS)
def test_the_same_material_always_gets_the_same_kid(alg: str) -> None:
    material = generate_key_material(alg)
    assert load_key(alg, material).kid == load_key(alg, material).kid
    assert load_key(alg, material).kid != load_key(alg, generate_key_material(alg)).kid


@pytest.mark.parametrize("alg", ["RS256", "ES256", "EdDSA"])
def test_the_public_jwk_has_kid_alg_use_and_no_private_member(alg: str) -> None:
    key = load_key(alg, generate_key_material(alg))
    assert key.public_jwk is not None
    assert key.public_jwk["kid"] == key.kid
    assert (key.public_jwk["alg"], key.public_jwk["use"]) == (alg, "sig")
    assert not PRIVATE_MEMBERS & key.public_jwk.keys()


def test_an_hmac_key_has_no_public_jwk() -> None:
    assert load_key("HS256", generate_key_material("HS256")).public_jwk is None


def weak_rsa() -> rsa.RSAPrivateKey:
    # Deliberately breakable: the server must refuse it.
    return rsa.generate_private_key(65537, 1024)  # noqa: S505


@pytest.mark.parametrize(
    ("alg", "make", "message"),
    [
        ("RS256", lambda: ec.generate_private_key(ec.SECP256R1()), "RS256 needs a RSAPrivateKey"),
        ("RS256", ed25519.Ed25519PrivateKey.generate, "RS256 needs a RSAPrivateKey"),
        ("RS256", weak_rsa, "at least 2048 bits"),
        ("ES256", lambda: ec.generate_private_key(ec.SECP384R1()), "must be on P-256"),
        ("ES256", lambda: rsa.generate_private_key(65537, 2048), "ES256 needs a"),
        ("EdDSA", lambda: ec.generate_private_key(ec.SECP256R1()), "EdDSA needs a"),
    ],
    ids=[
        "ec-for-rs256",
        "ed25519-for-rs256",
        "rsa-1024",
        "p384-for-es256",
        "rsa-for-es256",
        "ec-for-eddsa",
    ],
)
def test_a_key_of_the_wrong_type_or_size_is_a_config_error(
    alg: str, make: Callable[[], Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        load_key(alg, pem(make()))


@pytest.mark.parametrize("alg", ["RS256", "ES256", "EdDSA"])
def test_unparsable_key_material_is_a_config_error(alg: str) -> None:
    with pytest.raises(ConfigError, match=f"cannot read the {alg} private key"):
        load_key(alg, b"not a pem")


def test_an_encrypted_private_key_is_a_config_error() -> None:
    encrypted = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"password"),
    )
    with pytest.raises(ConfigError, match="cannot read the ES256 private key"):
        load_key("ES256", encrypted)


def test_a_short_hmac_secret_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="at least 32 bytes"):
        load_key("HS256", b"x" * 31)


# --- KeyRing ------------------------------------------------------------------------------


def test_an_empty_ring_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        KeyRing("HS256", [])


def test_the_first_key_signs_and_every_key_verifies() -> None:
    ring, (first, second) = ring_of("ES256", 2)
    assert ring.current is first
    assert ring.lookup(first.kid) is first
    assert ring.lookup(second.kid) is second


@pytest.mark.parametrize("alg", ALGS)
def test_after_rotate_the_new_key_signs_and_old_tokens_still_verify(alg: str) -> None:
    ring, (old,) = ring_of(alg, 1)
    old_token = sign(ring.current, {"sub": "old"})
    new = load_key(alg, generate_key_material(alg))
    ring.rotate(new)
    assert ring.current is new
    assert jwt.get_unverified_header(sign(ring.current))["kid"] == new.kid
    assert verify_with(ring, old_token) == {"sub": "old"}
    assert ring.lookup(old.kid) is old


def test_rotate_refuses_a_key_of_another_algorithm() -> None:
    ring, _ = ring_of("HS256", 1)
    with pytest.raises(ConfigError, match="holds HS256 keys, not EdDSA"):
        ring.rotate(load_key("EdDSA", generate_key_material("EdDSA")))


def test_a_retired_key_no_longer_verifies() -> None:
    ring, (old,) = ring_of("HS256", 1)
    old_token = sign(old)
    ring.rotate(load_key("HS256", generate_key_material("HS256")))
    ring.retire(old.kid)
    assert ring.lookup(old.kid) is None
    assert verify_with(ring, old_token) is None


def test_the_signing_key_cannot_be_retired() -> None:
    ring, (current, _) = ring_of("HS256", 2)
    with pytest.raises(ConfigError, match="rotate first"):
        ring.retire(current.kid)
    assert ring.lookup(current.kid) is current


def test_retiring_an_unknown_kid_changes_nothing() -> None:
    ring, (current,) = ring_of("HS256", 1)
    ring.retire("no-such-kid")
    assert ring.lookup(current.kid) is current


@pytest.mark.parametrize("kid", [None, 1, 1.5, True, b"kid", ["kid"], {"kid": "x"}, ("kid",)])
def test_lookup_of_a_kid_that_is_not_a_string_is_none(kid: object) -> None:
    ring, _ = ring_of("HS256", 1)
    assert ring.lookup(kid) is None


def test_lookup_matches_kids_exactly() -> None:
    ring, (key,) = ring_of("HS256", 1)
    assert ring.lookup(key.kid.swapcase()) is None
    assert ring.lookup(key.kid[:-1]) is None
    assert ring.lookup(key.kid + " ") is None
    assert ring.lookup("") is None


@pytest.mark.parametrize("alg", ["RS256", "ES256", "EdDSA"])
def test_jwks_publishes_every_verifying_key_and_nothing_private(alg: str) -> None:
    ring, keys = ring_of(alg, 2)
    jwks = ring.jwks()
    assert jwks is not None
    published: Any = jwks["keys"]
    assert {k["kid"] for k in published} == {k.kid for k in keys}
    for jwk in published:
        assert not PRIVATE_MEMBERS & jwk.keys()
        assert rfc7638_thumbprint(jwk).startswith(jwk["kid"])


def test_jwks_drops_a_retired_key() -> None:
    ring, (current, old) = ring_of("EdDSA", 2)
    ring.retire(old.kid)
    jwks = ring.jwks()
    assert jwks is not None
    assert [k["kid"] for k in jwks["keys"]] == [current.kid]  # type: ignore[attr-defined]


def test_jwks_of_an_hmac_ring_is_none() -> None:
    ring, _ = ring_of("HS256", 2)
    assert ring.jwks() is None


def test_from_settings_loads_the_current_and_previous_keys() -> None:
    current, previous = generate_key_material("ES256"), generate_key_material("ES256")
    s = Settings(backend="jwt", alg="ES256", jwt_private_key=current, jwt_previous_keys=(previous,))
    ring = KeyRing.from_settings(s)
    assert ring.current.kid == load_key("ES256", current).kid
    assert ring.lookup(load_key("ES256", previous).kid) is not None


def test_from_settings_without_a_key_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="with_generated_keys"):
        KeyRing.from_settings(Settings(backend="jwt", alg="RS256"))


def test_from_settings_refuses_a_previous_key_of_another_type() -> None:
    s = Settings(
        backend="jwt",
        alg="ES256",
        jwt_private_key=generate_key_material("ES256"),
        jwt_previous_keys=(generate_key_material("EdDSA"),),
    )
    with pytest.raises(ConfigError, match="ES256 needs a"):
        KeyRing.from_settings(s)


# --- with_generated_keys ------------------------------------------------------------------


def test_with_generated_keys_leaves_session_settings_alone() -> None:
    s = Settings(backend="session-redis")
    assert with_generated_keys(s) is s


def test_with_generated_keys_fills_a_missing_hmac_secret_only() -> None:
    s = Settings(backend="jwt")
    filled = with_generated_keys(s)
    assert filled.jwt_secret is not None and len(filled.jwt_secret) == 32
    assert filled.jwt_private_key is None
    assert dataclasses.replace(filled, jwt_secret=None) == s


@pytest.mark.parametrize("alg", ["RS256", "ES256", "EdDSA"])
def test_with_generated_keys_fills_a_missing_private_key_only(alg: str) -> None:
    s = Settings(backend="jwt-denylist", alg=alg)
    filled = with_generated_keys(s)
    assert filled.jwt_private_key is not None and filled.jwt_secret is None
    assert KeyRing.from_settings(filled).current.alg == alg
    assert dataclasses.replace(filled, jwt_private_key=None) == s


@pytest.mark.parametrize(
    "fields",
    [
        {"alg": "HS256", "jwt_secret": b"k" * 32},
        {"alg": "EdDSA", "jwt_private_key": b"configured"},
    ],
)
def test_with_generated_keys_keeps_a_configured_key(fields: dict[str, Any]) -> None:
    s = Settings(backend="jwt", **fields)
    assert with_generated_keys(s) is s


# --- rotation through the HTTP server -----------------------------------------------------


def _key_fields(alg: str, current: bytes, previous: tuple[bytes, ...] = ()) -> dict[str, Any]:
    which = "jwt_secret" if alg == "HS256" else "jwt_private_key"
    return {"backend": "jwt", "alg": alg, which: current, "jwt_previous_keys": previous}


def _kid(token: str | None) -> str:
    assert token is not None
    kid: str = jwt.get_unverified_header(token)["kid"]
    return kid


@pytest.mark.parametrize("alg", ["HS256", "ES256"])
async def test_a_server_rotated_to_a_new_key_still_accepts_tokens_of_the_old_one(
    alg: str,
    make_settings: Callable[..., Settings],
    serve: ServeFn,
    http: aiohttp.ClientSession,
) -> None:
    a, b = generate_key_material(alg), generate_key_material(alg)
    kid_a, kid_b = load_key(alg, a).kid, load_key(alg, b).kid

    before = AuthClient(http, await serve(make_settings(**_key_fields(alg, a))))
    _, old = await before.login("user3", "secret-3")
    assert old is not None and _kid(old.access_token) == kid_a

    rotated = AuthClient(http, await serve(make_settings(**_key_fields(alg, b, (a,)))))
    me = await rotated.me(old)
    assert (me.status, me.body["username"]) == (200, "user3")
    _, new = await rotated.login("user4", "secret-4")
    assert new is not None
    assert _kid(new.access_token) == _kid(new.refresh_token) == kid_b

    retired = AuthClient(http, await serve(make_settings(**_key_fields(alg, b))))
    assert (await retired.me(old)).status == 401
    assert (await retired.me(new)).status == 200


async def test_an_old_refresh_token_refreshes_into_a_pair_signed_by_the_new_key(
    make_settings: Callable[..., Settings], serve: ServeFn, http: aiohttp.ClientSession
) -> None:
    a, b = generate_key_material("HS256"), generate_key_material("HS256")
    before = AuthClient(http, await serve(make_settings(**_key_fields("HS256", a))))
    _, old = await before.login("user5", "secret-5")
    assert old is not None

    rotated = AuthClient(http, await serve(make_settings(**_key_fields("HS256", b, (a,)))))
    reply, new = await rotated.refresh(Credential(refresh_token=old.refresh_token))
    assert reply.status == 200
    assert _kid(new.access_token) == _kid(new.refresh_token) == load_key("HS256", b).kid


async def test_the_jwks_endpoint_lists_the_previous_key_until_it_is_retired(
    make_settings: Callable[..., Settings], serve: ServeFn, http: aiohttp.ClientSession
) -> None:
    a, b = generate_key_material("EdDSA"), generate_key_material("EdDSA")
    kid_a, kid_b = load_key("EdDSA", a).kid, load_key("EdDSA", b).kid
    for previous, kids in (((a,), {kid_a, kid_b}), ((), {kid_b})):
        base = await serve(make_settings(**_key_fields("EdDSA", b, previous)))
        async with http.get(base + "/.well-known/jwks.json") as r:
            assert r.status == 200
            jwks = await r.json()
        assert {k["kid"] for k in jwks["keys"]} == kids
        assert not any(PRIVATE_MEMBERS & k.keys() for k in jwks["keys"])
