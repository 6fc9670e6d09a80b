"""JWT algorithms and keys (SECURITY.md, "JWT verification", first, second and fourth
bullets), on every JWT configuration.

Forgeries start from the victim's real claims and, wherever possible, carry a real signature
by the server's own key: if the one thing a test changes were not checked, the token would
work as the victim. Each is refused with 401 and no effect (`forge.refuse`).
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import get_default_algorithms

from servers.errors import ConfigError
from servers.keyring import load_key
from servers.settings import Settings
from tests.security.conftest import (
    ASYMMETRIC_CONFIGS,
    JWT_CONFIGS,
    ArenaFactory,
)
from tests.security.forge import (
    DROP,
    KINDS,
    Case,
    Signer,
    assemble,
    attacker_key,
    claims,
    forge,
    header,
    hmac_signer,
    key_signer,
    refuse,
    self_signed_cert,
)

JWT = pytest.mark.parametrize("config", JWT_CONFIGS)
ROOT = Path(__file__).resolve().parents[2]


def _signer_for(private: Any, alg: str) -> Signer:
    algorithm = get_default_algorithms()[alg]
    return lambda msg: algorithm.sign(msg, private)


@JWT
async def test_forged_tokens_verify_when_nothing_is_wrong(
    config: str, open_arena: ArenaFactory
) -> None:
    """The forging helpers make tokens the server accepts, so every refusal below is caused
    by the one thing its test changed."""
    arena = await open_arena(config)
    reply = await arena.me_with(forge(arena))
    assert reply.status == 200 and reply.body["username"] == "user1", reply.body
    other = await arena.login(2)
    payload = other.claims("refresh")
    token = assemble(header(arena, "refresh"), payload, key_signer(arena))
    reply = await arena.refresh_with(token, str(payload.get("csrf", "")))
    assert reply.status == 200, reply.body


@JWT
async def test_alg_none_in_any_spelling_is_refused(config: str, open_arena: ArenaFactory) -> None:
    """`alg: none` (none, None, NONE, nOnE), with and without kid and signature."""
    arena = await open_arena(config)
    assert arena.key is not None
    cases: list[Case] = []
    for kind in KINDS:
        for alg in ("none", "None", "NONE", "nOnE"):
            for kid in (arena.key.kid, DROP):
                head, body = header(arena, kind, alg=alg, kid=kid), claims(arena, kind)
                unsigned = assemble(head, body, None)
                variants = {
                    "empty signature": unsigned,
                    "two segments": unsigned[:-1],
                    "junk signature": unsigned + "c2lnbmF0dXJl",
                    "real signature": assemble(head, body, key_signer(arena)),
                }
                for label, token in variants.items():
                    what = f"alg={alg} kid={'yes' if kid is not DROP else 'no'} {label}"
                    cases.append((kind, what, token))
    await refuse(arena, cases)


# Algorithms outside the allow-list that the server's own key can still sign with.
_SAME_KEY_ALGS = {
    "HS256": ["HS384", "HS512"],
    "RS256": ["RS384", "RS512", "PS256", "PS384", "PS512"],
    "ES256": ["ES384", "ES512", "ES256K"],
    "EdDSA": [],
}
# Names that differ from the configured one only in spelling, or are not names at all.
_MISSPELLED: dict[str, list[object]] = {
    "HS256": ["hs256", "Hs256", "HS256 ", " HS256", "HS-256"],
    "RS256": ["rs256", "RS256 ", "RSA256"],
    "ES256": ["es256", "ES256 ", "ECDSA"],
    "EdDSA": ["eddsa", "EDDSA", "Ed25519", "ED25519", "Ed448", "EdDSA "],
}


@JWT
async def test_algorithms_outside_the_allow_list_are_refused(
    config: str, open_arena: ArenaFactory
) -> None:
    """Other algorithms, even signed by the server's own key, and look-alike alg names."""
    arena = await open_arena(config)
    assert arena.key is not None
    own = arena.key.alg
    tokens: dict[str, Signer] = {}
    for alg in _SAME_KEY_ALGS[own]:
        tokens[alg] = key_signer(arena, alg)
    for alg in ("HS256", "RS256", "ES256", "EdDSA"):
        if alg != own:
            private, _ = attacker_key(alg)
            tokens[alg] = hmac_signer(private) if alg == "HS256" else _signer_for(private, alg)
    cases: list[Case] = []
    for alg, signer in tokens.items():
        for kind in KINDS:
            token = forge(arena, kind, head=header(arena, kind, alg=alg), signer=signer)
            cases.append((kind, f"alg={alg} on a {own} server", token))
    odd: list[object] = [*_MISSPELLED[own], None, "", [own], {"alg": own}, 256, DROP]
    for alg_name in odd:
        token = forge(arena, head=header(arena, alg=alg_name))
        cases.append(("access", f"alg={alg_name!r} with a real {own} signature", token))
    await refuse(arena, cases)


def _public_key_encodings(jwk: dict[str, Any], served: bytes, alg: str) -> dict[str, bytes]:
    public: Any = get_default_algorithms()[alg].from_jwk(json.dumps(jwk))
    pem = public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    encodings = {
        "PEM": pem,
        "PEM without final newline": pem.rstrip(b"\n"),
        "DER": public.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
        "JWK as served": json.dumps(jwk).encode(),
        "JWK compact": json.dumps(jwk, separators=(",", ":")).encode(),
        "JWK Set response body": served,
        "OpenSSH": public.public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
        ),
    }
    if alg == "RS256":
        encodings["PKCS#1 PEM"] = public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.PKCS1
        )
    elif alg == "ES256":
        encodings["X9.62 point"] = public.public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
    else:
        encodings["raw key"] = public.public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
    return encodings


@pytest.mark.parametrize("config", ASYMMETRIC_CONFIGS)
async def test_hmac_keyed_with_the_public_key_is_refused(
    config: str, open_arena: ArenaFactory
) -> None:
    """The classic key confusion: HS* signed with the published public key, in any encoding."""
    arena = await open_arena(config)
    assert arena.key is not None
    served = await arena.client.request("GET", "/.well-known/jwks.json")
    assert served.status == 200, served.body
    jwk = next(k for k in served.body["keys"] if k["kid"] == arena.key.kid)
    raw_body = json.dumps(served.body, separators=(",", ":")).encode()
    cases: list[Case] = []
    for encoding, secret in _public_key_encodings(jwk, raw_body, arena.key.alg).items():
        for alg in ("HS256", "HS384", "HS512"):
            signer = hmac_signer(secret, f"sha{alg[2:]}")
            for kid in (arena.key.kid, DROP):
                head = header(arena, alg=alg, kid=kid)
                what = f"{alg} keyed with the {encoding} kid={'yes' if kid is not DROP else 'no'}"
                cases.append(("access", what, forge(arena, head=head, signer=signer)))
        head = header(arena, "refresh", alg="HS256")
        token = forge(arena, "refresh", head=head, signer=hmac_signer(secret))
        cases.append(("refresh", f"HS256 keyed with the {encoding}", token))
    await refuse(arena, cases)


@JWT
async def test_header_supplied_keys_and_key_urls_are_ignored(
    config: str, open_arena: ArenaFactory
) -> None:
    """`jwk`, `jku`, `x5u`, `x5c` carrying an attacker's key: never used to verify."""
    arena = await open_arena(config)
    assert arena.key is not None
    alg = arena.key.alg
    private, jwk = attacker_key(alg)
    signer = hmac_signer(private) if alg == "HS256" else _signer_for(private, alg)
    cert_key = private if alg == "ES256" else ec.generate_private_key(ec.SECP256R1())
    cert = base64.b64encode(self_signed_cert(cert_key)).decode()
    members: dict[str, dict[str, object]] = {
        "jwk": {"jwk": jwk},
        "jku": {"jku": "http://127.0.0.1:9/.well-known/jwks.json"},
        "x5u": {"x5u": "http://127.0.0.1:9/attacker.pem"},
        "x5c": {"x5c": [cert]},
        "all four": {
            "jwk": jwk,
            "jku": "http://127.0.0.1:9/jwks.json",
            "x5u": "http://127.0.0.1:9/a.pem",
            "x5c": [cert],
        },
    }
    cases: list[Case] = []
    for label, extra in members.items():
        for kid in (arena.key.kid, "attacker", DROP):
            for kind in KINDS:
                head = header(arena, kind, kid=kid, **extra)
                token = forge(arena, kind, head=head, signer=signer)
                cases.append((kind, f"{label} kid={kid if kid is not DROP else '-'}", token))
    await refuse(arena, cases)


@JWT
async def test_kid_is_only_ever_an_exact_key_ring_lookup(
    config: str, open_arena: ArenaFactory
) -> None:
    """Paths, SQL, commands, empty and non-string kids, near misses: no key, so 401.

    Signed by the server's real key (so only the kid can be at fault) and, for the
    `/dev/null` trick, by an HMAC over the empty key.
    """
    arena = await open_arena(config)
    assert arena.key is not None
    kid = arena.key.kid
    kids: list[object] = [
        "../../dev/null",
        "/dev/null",
        "../../../../../../../etc/passwd",
        "file:///dev/null",
        "' OR '1'='1",
        "x' UNION SELECT 'secret' --",
        "$(id)",
        "`id`",
        "|id",
        "",
        " ",
        "unknown",
        kid.lower() if kid.lower() != kid else kid.upper(),
        kid + " ",
        " " + kid,
        kid + "\x00",
        kid[:-1],
        kid + kid,
        "k" * 4000,
        0,
        1,
        None,
        True,
        [kid],
        {"kid": kid},
    ]
    cases: list[Case] = []
    for value in [*kids, DROP]:
        label = f"kid={value!r:.40}" if value is not DROP else "no kid"
        for kind in KINDS:
            cases.append((kind, label, forge(arena, kind, head=header(arena, kind, kid=value))))
        empty_key = header(arena, alg="HS256", kid=value)
        cases.append(
            (
                "access",
                f"HS256 with an empty key, {label}",
                forge(arena, head=empty_key, signer=hmac_signer(b"")),
            )
        )


def test_short_hmac_secrets_are_a_config_error() -> None:
    """Under 32 bytes, as the signing secret or a previous one, Settings and the key ring refuse."""
    short = b"s" * 31
    with pytest.raises(ConfigError, match="32 bytes"):
        Settings(backend="jwt", redis_url="redis://x", jwt_secret=short).check()
    with pytest.raises(ConfigError, match="32 bytes"):
        Settings(
            backend="jwt", redis_url="redis://x", jwt_secret=b"k" * 32, jwt_previous_keys=(short,)
        ).check()
    with pytest.raises(ConfigError, match="32 bytes"):
        load_key("HS256", short)
    Settings(backend="jwt", redis_url="redis://x", jwt_secret=b"k" * 32).check()


def test_server_refuses_to_start_with_a_short_secret() -> None:
    """`python -m servers --backend jwt` with JWT_SECRET=short: non-zero exit, one clear line."""
    env = {**os.environ, "JWT_SECRET": "short", "REDIS_URL": "redis://127.0.0.1:9/0"}
    env.pop("JWT_PREVIOUS_SECRETS", None)
    done = subprocess.run(
        [sys.executable, "-m", "servers", "--backend", "jwt", "--port", "9"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "32 bytes" in lines[0], done.stderr
    assert "Traceback" not in done.stderr
