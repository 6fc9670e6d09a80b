"""JWT claims and token shapes (SECURITY.md, "JWT verification", third, fifth and sixth
bullets), on every JWT configuration: required and typed claims, the access/refresh split,
malformed tokens of every shape, and a denylist keyed on `jti`.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from tests.security.conftest import (
    DENYLIST_CONFIGS,
    JWT_CONFIGS,
    Arena,
    ArenaFactory,
    assert_refused,
    check_refusal,
    raw_request,
)
from tests.security.forge import (
    DROP,
    KINDS,
    Case,
    assemble,
    b64url,
    b64url_decode,
    claims,
    encode_segment,
    forge,
    header,
    key_signer,
    refuse,
)

JWT = pytest.mark.parametrize("config", JWT_CONFIGS)


def _with_literal(payload: dict[str, Any], name: str, literal: str) -> bytes:
    # json.dumps cannot write 1e400 or a 400-digit number as such: splice the literal in.
    marker = "__literal__"
    text = json.dumps({**payload, name: marker}, separators=(",", ":"))
    return text.replace(f'"{marker}"', literal).encode()


@JWT
async def test_every_required_claim_is_required(config: str, open_arena: ArenaFactory) -> None:
    """Missing exp, iat, sub, jti, iss, aud (or the profile claims, or typ): 401."""
    arena = await open_arena(config)
    cases: list[Case] = []
    for kind in KINDS:
        for name in ("exp", "iat", "sub", "jti", "iss", "aud", "fam", "name", "role"):
            token = forge(arena, kind, payload=claims(arena, kind, **{name: DROP}))
            cases.append((kind, f"without {name}", token))
        token = forge(arena, kind, head=header(arena, kind, typ=DROP))
        cases.append((kind, "without typ", token))
    await refuse(arena, cases)


@JWT
async def test_issuer_and_audience_must_match(config: str, open_arena: ArenaFactory) -> None:
    """Another issuer or audience, near misses and non-strings: 401."""
    arena = await open_arena(config)
    iss, aud = arena.settings.issuer, arena.settings.audience
    wrong: dict[str, list[object]] = {
        "iss": ["evil", iss.upper(), iss + " ", "", None, 1, [iss], {"iss": iss}],
        "aud": ["evil", aud + "-x", aud.upper(), "", None, 1, ["evil"], [], {"aud": aud}],
    }
    cases: list[Case] = []
    for name, values in wrong.items():
        for value in values:
            for kind in KINDS:
                token = forge(arena, kind, payload=claims(arena, kind, **{name: value}))
                cases.append((kind, f"{name}={value!r}", token))
    await refuse(arena, cases)


@JWT
async def test_time_claims_are_numbers_with_a_small_leeway(
    config: str, open_arena: ArenaFactory
) -> None:
    """Expired (past the leeway), issued in the future, and time claims that are not sane
    numbers: strings, booleans, null, containers, NaN, infinities, 400-digit integers."""
    arena = await open_arena(config)
    now, leeway = int(time.time()), int(arena.settings.leeway)
    cases: list[Case] = []
    for kind in KINDS:
        expired = claims(arena, kind, iat=now - 3600, exp=now - leeway - 30)
        cases.append((kind, "expired past the leeway", forge(arena, kind, payload=expired)))
        future = claims(arena, kind, iat=now + leeway + 60)
        cases.append((kind, "iat in the future", forge(arena, kind, payload=future)))
    literals = [
        '"9999999999"',
        f'"{now}"',
        "true",
        "false",
        "null",
        "[9999999999]",
        '{"t":9999999999}',
        "1e400",
        "-1e400",
        "1e300",
        "1" + "0" * 400,
        "-1" + "0" * 400,
        "NaN",
        "Infinity",
        "-Infinity",
    ]
    for name in ("exp", "iat"):
        for literal in literals:
            for kind in KINDS:
                payload = _with_literal(claims(arena, kind), name, literal)
                cases.append((kind, f"{name}={literal:.20}", forge(arena, kind, payload=payload)))
    await refuse(arena, cases)


@JWT
async def test_critical_and_unencoded_payload_headers_are_refused(
    config: str, open_arena: ArenaFactory
) -> None:
    """`crit` naming an extension the server does not implement, and RFC 7797 `b64: false`."""
    arena = await open_arena(config)
    ext = "urn:authbench:unknown"
    heads: dict[str, dict[str, object]] = {
        "crit unknown extension": {"crit": [ext], ext: True},
        "crit naming a registered claim": {"crit": ["exp"]},
        "crit empty": {"crit": []},
        "crit not a list": {"crit": ext},
        "b64 false": {"b64": False},
        "b64 false, critical": {"b64": False, "crit": ["b64"]},
        "b64 true, critical": {"b64": True, "crit": ["b64"]},
    }
    cases: list[Case] = []
    for label, extra in heads.items():
        for kind in KINDS:
            cases.append((kind, label, forge(arena, kind, head=header(arena, kind, **extra))))
    # The detached form of RFC 7797: empty payload segment, signature over the raw payload.
    head_segment = encode_segment(header(arena, b64=False, crit=["b64"]))
    raw_payload = json.dumps(claims(arena)).encode()
    signature = key_signer(arena)(f"{head_segment}.".encode() + raw_payload)
    cases.append(("access", "b64 false, detached payload", f"{head_segment}..{b64url(signature)}"))
    await refuse(arena, cases)


@JWT
async def test_access_and_refresh_types_are_separate(config: str, open_arena: ArenaFactory) -> None:
    """The JOSE `typ` separates the two kinds: each is refused where the other is expected."""
    arena = await open_arena(config)
    access_types: list[object] = ["rt+jwt", "JWT", "jwt", "AT+JWT", "at+jwt ", "", None, ["at+jwt"]]
    cases: list[Case] = []
    for typ in access_types:
        cases.append(("access", f"typ={typ!r}", forge(arena, head=header(arena, typ=typ))))
    refresh_types: list[object] = ["at+jwt", "JWT", "RT+JWT", "", None, ["rt+jwt"]]
    for typ in refresh_types:
        token = forge(arena, "refresh", head=header(arena, "refresh", typ=typ))
        cases.append(("refresh", f"typ={typ!r}", token))
    # The victim's real tokens, each in the other's place.
    victim = arena.victim
    access = victim.access_token or victim.cookies["access_token"]
    refresh = victim.refresh_token or victim.cookies["refresh_token"]
    cases.append(("access", "the real refresh token", refresh))
    cases.append(("refresh", "the real access token", access))
    await refuse(arena, cases)


def _malformed(token: str) -> dict[str, str]:
    h, p, s = token.split(".")
    raw_headers = {
        "header not json": b"not json",
        "header invalid utf-8": b"\xff\xfe",
        "header truncated json": b'{"alg":"HS256"',
        "header deeply nested": b"[" * 5000,
        "header huge number": b'{"alg":' + b"9" * 5000 + b"}",
    }
    return {
        "empty": "",
        "one segment": h,
        "two segments": f"{h}.{p}",
        "four segments": f"{h}.{p}.{s}.{s}",
        "five segments": f"{h}.{p}.{s}.{p}.{s}",
        "only dots": "...",
        "empty segments": "..",
        "trailing dot": f"{token}.",
        "bad base64url character": f"{h}.{p}.{s[:-2]}!!",
        "standard base64 alphabet": f"{h}.{p}+/.{s}",
        "impossible length": f"{h}.{p}.{s[: len(s) - len(s) % 4]}A",
        "padding inside": f"{h[:4]}=={h[4:]}.{p}.{s}",
        "whitespace inside": f"{h}. {p}.{s}",
        **{label: f"{b64url(raw)}.{p}.{s}" for label, raw in raw_headers.items()},
    }


@JWT
async def test_malformed_tokens_of_every_shape_are_401(
    config: str, open_arena: ArenaFactory
) -> None:
    """Wrong segment counts, bad base64url, bad JSON, wrong JSON types, huge values."""
    arena = await open_arena(config)
    real = forge(arena)
    cases: list[Case] = []
    for label, token in _malformed(real).items():
        for kind in KINDS:
            cases.append((kind, label, token))
    # Validly signed, but the JSON inside is not an object (or not JSON at all).
    bad_json: list[tuple[str, object]] = [
        ("array", []),
        ("string", "x"),
        ("number", 1),
        ("null", None),
        ("boolean", True),
    ]
    for label, value in bad_json:
        for kind in KINDS:
            signed_payload = forge(arena, kind, payload=json.dumps(value).encode())
            cases.append((kind, f"payload is a JSON {label}", signed_payload))
            signed_header = assemble(value, claims(arena, kind), key_signer(arena))
            cases.append((kind, f"header is a JSON {label}", signed_header))
    raw_payloads = {
        "not json": b"not json",
        "empty": b"",
        "invalid utf-8": b"\xff\xfe",
        "deeply nested": b"[" * 5000,
        "huge number": b'{"exp":' + b"9" * 5000 + b"}",
    }
    for label, raw in raw_payloads.items():
        for kind in KINDS:
            cases.append((kind, f"payload {label}", forge(arena, kind, payload=raw)))
    await refuse(arena, cases)


@JWT
async def test_oversized_tokens_are_refused(config: str, open_arena: ArenaFactory) -> None:
    """A token past the 16 KiB header limit is a 4xx at the HTTP layer; in a JSON body (where
    no header limit applies) it is a 401 from the token check."""
    arena = await open_arena(config)
    huge = forge(arena, payload=claims(arena, padding="x" * 17 * 1024))
    await assert_refused(
        arena, lambda: arena.me_with(huge), (400, 413, 431), "17 KiB access token", json_body=False
    )
    if arena.settings.transport == "bearer":
        big_refresh = forge(
            arena, "refresh", payload=claims(arena, "refresh", padding="x" * 17 * 1024)
        )
        await refuse(arena, [("refresh", "17 KiB token in the body", big_refresh)])


@JWT
async def test_non_ascii_and_raw_bytes_in_tokens_are_refused(
    config: str, open_arena: ArenaFactory
) -> None:
    """Tokens with UTF-8, invalid UTF-8 and NUL bytes, sent byte for byte."""
    arena = await open_arena(config)
    real = forge(arena).encode()
    tokens = {
        "utf-8 segments": "é.é.é".encode(),
        "utf-8 appended": real + "é".encode(),
        "invalid utf-8": b"\xff\xfe.\xff.\xff",
        "invalid utf-8 appended": real + b"\xff",
        "NUL appended": real + b"\x00",
    }
    cookie = arena.settings.transport == "cookie"
    for label, token in tokens.items():
        field = (
            ("Cookie", b"access_token=" + token)
            if cookie
            else ("Authorization", b"Bearer " + token)
        )

        async def send(field: tuple[str, bytes] = field) -> Any:
            return await raw_request(arena.client.base, "GET", "/me", [field])

        reply = await assert_refused(arena, send, (400, 401), label, json_body=False)
        if reply.status == 401:
            check_refusal(reply, [401], label)


@pytest.mark.parametrize("config", DENYLIST_CONFIGS)
async def test_denylist_is_keyed_on_jti_not_the_token_string(
    config: str, open_arena: ArenaFactory
) -> None:
    """After logout, aliases of the token (other base64 padding, an ECDSA high-s signature)
    are as dead as the token itself, and the denylist holds the `jti`."""
    arena = await open_arena(config)
    token = arena.victim.access_token or arena.victim.cookies["access_token"]
    aliases = _aliases(token, arena)
    accepted = [
        label for label, alias in aliases.items() if (await arena.me_with(alias)).status == 200
    ]
    assert accepted, "no alias verifies before logout, so this test would prove nothing"
    logout = await arena.client.logout(arena.victim)
    assert logout.status == 204, logout.body
    jti = arena.victim.claims()["jti"]
    assert arena.probes.denylist is not None
    assert await arena.probes.denylist.is_denied(jti), "the denylist does not hold the jti"
    assert not await arena.probes.denylist.is_denied(token), "the denylist is keyed on the token"
    for label, alias in {"the token itself": token, **aliases}.items():
        reply = await arena.me_with(alias)
        check_refusal(reply, [401], f"{label} after logout")


def _aliases(token: str, arena: Arena) -> dict[str, str]:
    h, p, s = token.split(".")
    aliases = {}
    for name, segment in (("header", h), ("payload", p), ("signature", s)):
        pad = "=" * (-len(segment) % 4)
        if pad:
            parts = [h, p, s]
            parts[["header", "payload", "signature"].index(name)] = segment + pad
            aliases[f"padded {name}"] = ".".join(parts)
    assert arena.key is not None
    if arena.key.alg == "ES256":
        # ECDSA is malleable: (r, s) and (r, n - s) both verify.
        raw = b64url_decode(s)
        r, sig_s = raw[:32], int.from_bytes(raw[32:], "big")
        order = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
        high = r + (order - sig_s).to_bytes(32, "big")
        aliases["ECDSA (r, n - s)"] = f"{h}.{p}.{b64url(high)}"
    return aliases
