"""Properties come from a configuration's backend and options, not from its name."""

from __future__ import annotations

from typing import Any

import pytest

from analysis.options import config_options
from analysis.properties import Verdict, properties
from loadtests.config import load as load_bench

GOOD, PARTIAL, BAD, NEUTRAL = Verdict.GOOD, Verdict.PARTIAL, Verdict.BAD, Verdict.NEUTRAL


def verdicts(backend: str, **server: Any) -> dict[str, Verdict]:
    props = properties(config_options("any-name", {"backend": backend, "server": server}))
    return {key: p.verdict for key, p in props.items()}


@pytest.mark.parametrize(
    ("backend", "server", "revocation", "reuse", "scale_out"),
    [
        ("session-redis", {}, GOOD, NEUTRAL, BAD),
        ("session-file", {}, GOOD, NEUTRAL, BAD),
        ("session-postgres", {"sliding": True}, GOOD, NEUTRAL, BAD),
        ("jwt", {}, BAD, GOOD, PARTIAL),
        ("jwt", {"refresh-store": "postgres"}, BAD, GOOD, PARTIAL),
        ("jwt", {"refresh-store": "none"}, BAD, BAD, GOOD),
        ("jwt-denylist", {}, GOOD, GOOD, BAD),
        ("jwt-denylist", {"refresh-store": "none"}, PARTIAL, BAD, BAD),
    ],
)
def test_verdicts(
    backend: str, server: dict[str, Any], revocation: Verdict, reuse: Verdict, scale_out: Verdict
) -> None:
    v = verdicts(backend, **server)
    assert (v["revocation"], v["reuse"], v["scale_out"]) == (revocation, reuse, scale_out)


def test_texts_explain_the_trade_off() -> None:
    jwt = properties(config_options("a", {"backend": "jwt", "server": {"access-ttl": 300}}))
    assert "up to 5 min" in jwt["revocation"].text
    stateless = properties(
        config_options("b", {"backend": "jwt", "server": {"refresh-store": "none"}})
    )
    assert "refresh tokens cannot be revoked either" in stateless["revocation"].text
    assert "any instance" in stateless["scale_out"].text
    assert stateless["state"].text.startswith("none")
    files = properties(config_options("c", {"backend": "session-file"}))
    assert "one host" in files["scale_out"].text
    sliding = properties(
        config_options("d", {"backend": "session-redis", "server": {"sliding": True}})
    )
    assert "every request" in sliding["state"].text
    cookie = properties(config_options("e", {"backend": "jwt", "server": {"transport": "cookie"}}))
    assert "HttpOnly cookie" in cookie["credential"].text
    rs = properties(config_options("f", {"backend": "jwt", "server": {"alg": "RS256"}}))
    assert "public key" in rs["scale_out"].text


def test_names_do_not_matter() -> None:
    same = {"backend": "jwt", "server": {"refresh-store": "none"}}
    assert properties(config_options("session-redis", same)) == properties(
        config_options("jwt-whatever", same)
    )


@pytest.mark.parametrize("name", sorted(load_bench().configs))
def test_every_bench_configuration_has_every_property(name: str) -> None:
    props = properties(config_options(name, load_bench().configs[name].as_dict()))
    assert all(p.text for p in props.values())
