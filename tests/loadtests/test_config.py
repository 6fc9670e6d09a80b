"""Configurations and profiles: the shipped file is valid, bad files are refused clearly."""

from __future__ import annotations

from pathlib import Path

import pytest

from loadtests.config import SCENARIOS, BenchConfigError, load


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bench.toml"
    path.write_text(text)
    return path


GOOD = """
[configs.a]
backend = "session-redis"
server = { sliding = true, pool-size = 4 }
stores.redis = { maxmemory = "64mb" }

[configs.b]
backend = "jwt"
server = { alg = "ES256", refresh-store = "postgres" }

[profiles.p]
configs = ["a", "b"]
scenarios = ["browse"]
rate = { browse = 100 }
users = 4
duration = 2
"""


def test_shipped_file_is_valid_and_quick_covers_every_core_configuration() -> None:
    bench = load()
    assert {"smoke", "quick", "full"} <= bench.profiles.keys()
    quick = bench.check(bench.profile("quick"))
    backends = {c.backend for c in quick}
    assert backends == {
        "session-file",
        "session-postgres",
        "session-redis",
        "session-memcached",
        "jwt",
        "jwt-denylist",
    }
    algs = {str(c.server.get("alg")) for c in quick if c.backend == "jwt"}
    assert algs == {"HS256", "RS256", "ES256", "EdDSA"}
    assert bench.profile("quick").scenarios == ("browse", "login")
    full = bench.profile("full")
    assert set(full.configs) == set(bench.configs)
    assert full.repeat == 3 and full.shuffle
    assert set(full.scenarios) == set(SCENARIOS)


def test_configuration_turns_into_server_flags_and_store_kinds(tmp_path: Path) -> None:
    bench = load(write(tmp_path, GOOD))
    a, b = bench.configs["a"], bench.configs["b"]
    assert a.server_argv() == ["--backend", "session-redis", "--sliding", "--pool-size", "4"]
    assert a.store_kinds() == ["redis"]
    assert a.stores == {"redis": {"maxmemory": "64mb"}}
    assert b.store_kinds() == ["postgres"]
    settings = b.settings({"DATABASE_URL": "postgresql://x@127.0.0.1:5/db"})
    assert settings.alg == "ES256" and settings.refresh_store == "postgres"


def test_overrides_replace_profile_fields(tmp_path: Path) -> None:
    bench = load(write(tmp_path, GOOD))
    p = bench.profile("p").with_overrides(
        configs=["b"], scenarios=["login"], rate=50, users=2, duration=1, warmup=0, repeat=2
    )
    assert p.configs == ("b",) and p.scenarios == ("login",)
    assert p.rate["login"] == 50 and p.users == 2 and p.repeat == 2
    assert [c.name for c in bench.check(p)] == ["b"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[configs.a\nbackend=1", "not valid TOML"),
        ('[configs.a]\nbackend = "nope"', "invalid choice: 'nope'"),
        ('[configs.a]\nbackend = "jwt"\nserver = { colour = "red" }', "unrecognized arguments"),
        ('[configs.a]\nbackend = "jwt"\nserver = { alg = "HS512" }', "invalid choice: 'HS512'"),
        ('[configs.a]\nbackend = "jwt"\nflavour = 1', "unknown key(s) flavour"),
        ('[configs.a]\nbackend = "jwt"\nstores.mysql = { a = "b" }', "stores.mysql"),
        ("[configs.a]\nserver = {}", "needs backend"),
        (
            '[configs.a]\nbackend = "jwt"\n[profiles.p]\nconfigs = ["a"]\nscenarios = ["browse"]\n'
            "rate = 1\nduration = 1",
            "needs users",
        ),
    ],
)
def test_invalid_files_are_refused_with_the_reason(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(BenchConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load(write(tmp_path, text))


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"configs": ["zzz"]}, "unknown configuration"),
        ({"scenarios": ["surf"]}, "unknown scenario"),
        ({"users": 0}, "users must be positive"),
        ({"duration": -1}, "duration must be positive"),
        ({"rate": 0}, "rate of browse must be positive"),
    ],
)
def test_bad_profile_choices_are_refused_before_anything_starts(
    tmp_path: Path, override: dict[str, object], message: str
) -> None:
    bench = load(write(tmp_path, GOOD))
    profile = bench.profile("p").with_overrides(**override)  # type: ignore[arg-type]
    with pytest.raises(BenchConfigError, match=message):
        bench.check(profile)


def test_unknown_profile_names_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(BenchConfigError, match="known profiles: p"):
        load(write(tmp_path, GOOD)).profile("nope")


def test_a_sweep_expands_to_one_configuration_per_combination(tmp_path: Path) -> None:
    text = (
        GOOD
        + """
[sweeps.size]
backend = "jwt"
server = { refresh-store = "none" }
vary = { alg = ["HS256", "EdDSA"], extra-claims = [0, 16] }

[profiles.s]
configs = ["a", "size"]
scenarios = ["browse"]
rate = 10
users = 1
duration = 1
"""
    )
    bench = load(write(tmp_path, text))
    members = ["size-hs256-0", "size-hs256-16", "size-eddsa-0", "size-eddsa-16"]
    assert bench.profile("s").configs == ("a", *members)
    last = bench.configs["size-eddsa-16"]
    assert last.server == {"refresh-store": "none", "alg": "EdDSA", "extra-claims": 16}
    assert last.settings({}).extra_claims == 16


def test_a_sweep_without_values_is_refused(tmp_path: Path) -> None:
    with pytest.raises(BenchConfigError, match="needs vary"):
        load(write(tmp_path, '[sweeps.s]\nbackend = "jwt"\nvary = { alg = [] }'))
