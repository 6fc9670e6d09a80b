"""Settings: flags, environment fallbacks, every validation rule and the derived properties."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import pytest

from servers.errors import ConfigError
from servers.settings import MIN_HMAC_SECRET_BYTES, Settings, build_parser, from_args

SECRET = "s" * MIN_HMAC_SECRET_BYTES
REDIS = "redis://127.0.0.1:6379/0"
POSTGRES = "postgresql://u@127.0.0.1:5432/db"
MEMCACHED = "memcached://127.0.0.1:11211"


def _valid(**fields: Any) -> Settings:
    """Settings that pass check() with every store URL present, overridden by `fields`."""
    base: dict[str, Any] = {
        "backend": "jwt",
        "redis_url": REDIS,
        "database_url": POSTGRES,
        "memcached_url": MEMCACHED,
        "session_dir": Path("/tmp/sessions"),
    }
    return Settings(**{**base, **fields})


# --- from_args: flags ---------------------------------------------------------------------


def test_from_args_reads_every_kind_of_flag() -> None:
    s = from_args(
        [
            "--backend", "session-redis", "--redis-url", REDIS, "--host", "0.0.0.0",
            "--port", "9001", "--workers", "3", "--users", "7", "--sliding", "--cookie-secure",
            "--session-ttl", "60", "--pool-size", "4", "--pg-unlogged", "--store-timeout", "0.5",
        ],
        env={},
    )  # fmt: skip
    assert (s.backend, s.redis_url, s.host, s.port) == ("session-redis", REDIS, "0.0.0.0", 9001)
    assert (s.workers, s.users, s.pool_size) == (3, 7, 4)
    assert s.sliding and s.cookie_secure and s.pg_unlogged
    assert (s.session_ttl, s.store_timeout) == (60.0, 0.5)


def test_from_args_reads_jwt_flags() -> None:
    s = from_args(
        [
            "--backend", "jwt-denylist", "--alg", "ES256", "--transport", "cookie",
            "--issuer", "me", "--audience", "you", "--access-ttl", "30", "--refresh-ttl", "90",
            "--extra-claims", "12", "--refresh-store", "none", "--denylist-store", "postgres",
            "--database-url", POSTGRES,
        ],
        env={},
    )  # fmt: skip
    assert (s.alg, s.transport, s.issuer, s.audience) == ("ES256", "cookie", "me", "you")
    assert (s.access_ttl, s.refresh_ttl, s.extra_claims) == (30.0, 90.0, 12)
    assert (s.refresh_store, s.denylist_store) == ("none", "postgres")


def test_from_args_defaults() -> None:
    s = from_args(["--backend", "jwt"], env={"REDIS_URL": REDIS})
    assert (s.alg, s.transport, s.refresh_store, s.denylist_store) == (
        "HS256",
        "bearer",
        "redis",
        "redis",
    )
    assert (s.users, s.workers, s.access_ttl, s.extra_claims) == (1000, 1, 900.0, 0)
    assert s.jwt_secret is None and s.jwt_private_key is None and s.jwt_previous_keys == ()


# --- from_args: environment fallbacks -----------------------------------------------------


def test_store_urls_and_session_dir_fall_back_to_the_environment(tmp_path: Path) -> None:
    env = {
        "DATABASE_URL": POSTGRES,
        "REDIS_URL": REDIS,
        "MEMCACHED_URL": MEMCACHED,
        "SESSION_DIR": str(tmp_path),
    }
    s = from_args(["--backend", "session-file"], env=env)
    assert (s.database_url, s.redis_url, s.memcached_url) == (POSTGRES, REDIS, MEMCACHED)
    assert s.session_dir == tmp_path


def test_flags_win_over_the_environment(tmp_path: Path) -> None:
    env = {"REDIS_URL": "redis://env:1/0", "SESSION_DIR": "/env/dir"}
    s = from_args(
        ["--backend", "session-file", "--redis-url", REDIS, "--session-dir", str(tmp_path)],
        env=env,
    )
    assert s.redis_url == REDIS
    assert s.session_dir == tmp_path


def test_the_process_environment_is_not_read_when_env_is_given(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("REDIS_URL", REDIS)
    with pytest.raises(ConfigError, match="REDIS_URL"):
        from_args(["--backend", "session-redis"], env={})


def test_jwt_secret_and_previous_secrets_come_from_the_environment() -> None:
    old1, old2 = "a" * 32, "b" * 40
    env = {"REDIS_URL": REDIS, "JWT_SECRET": SECRET, "JWT_PREVIOUS_SECRETS": f"{old1},,{old2},"}
    s = from_args(["--backend", "jwt"], env=env)
    assert s.jwt_secret == SECRET.encode()
    assert s.jwt_previous_keys == (old1.encode(), old2.encode())


def test_jwt_private_keys_are_read_from_the_paths_in_the_environment(tmp_path: Path) -> None:
    current, previous = tmp_path / "current.pem", tmp_path / "previous.pem"
    current.write_bytes(b"-----BEGIN PRIVATE KEY-----\ncurrent\n")
    previous.write_bytes(b"-----BEGIN PRIVATE KEY-----\nprevious\n")
    env = {
        "REDIS_URL": REDIS,
        "JWT_PRIVATE_KEY": str(current),
        "JWT_PREVIOUS_PRIVATE_KEYS": str(previous),
    }
    s = from_args(["--backend", "jwt", "--alg", "RS256"], env=env)
    assert s.jwt_private_key == current.read_bytes()
    assert s.jwt_previous_keys == (previous.read_bytes(),)


def test_an_unreadable_private_key_file_is_a_config_error(tmp_path: Path) -> None:
    missing = tmp_path / "missing.pem"
    env = {"REDIS_URL": REDIS, "JWT_PRIVATE_KEY": str(missing)}
    with pytest.raises(ConfigError, match=rf"cannot read key file {re.escape(str(missing))}"):
        from_args(["--backend", "jwt", "--alg", "EdDSA"], env=env)


def test_from_args_validates_what_it_builds() -> None:
    with pytest.raises(ConfigError, match="--workers must be positive"):
        from_args(["--backend", "jwt", "--workers", "0"], env={"REDIS_URL": REDIS})


@pytest.mark.parametrize(
    "argv",
    [
        ["--backend", "jwt", "--bogus"],
        ["--backend", "session-mongo"],
        ["--backend", "jwt", "--alg", "HS512"],
        ["--backend", "jwt", "--port", "eighty"],
        [],
    ],
    ids=["unknown-flag", "unknown-backend", "bad-alg", "bad-int", "no-backend"],
)
def test_bad_flags_exit_2_with_one_line(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        from_args(argv, env={})
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("python -m servers: error: ")


# --- check() ------------------------------------------------------------------------------


def test_a_complete_configuration_passes_and_check_returns_it() -> None:
    s = _valid()
    assert s.check() is s


def test_unknown_backend_names_the_choices() -> None:
    with pytest.raises(ConfigError, match=r"unknown backend 'session-mongo'; choose one of .*jwt"):
        _valid(backend="session-mongo").check()


def test_unknown_alg_names_the_choices() -> None:
    with pytest.raises(ConfigError, match=r"unknown alg 'HS512'; choose one of HS256, RS256"):
        _valid(alg="HS512").check()


@pytest.mark.parametrize(
    ("fields", "var"),
    [
        ({"backend": "session-postgres", "database_url": None}, "DATABASE_URL"),
        ({"backend": "session-redis", "redis_url": None}, "REDIS_URL"),
        ({"backend": "session-memcached", "memcached_url": None}, "MEMCACHED_URL"),
        ({"backend": "session-file", "session_dir": None}, "SESSION_DIR"),
        ({"backend": "jwt", "redis_url": None}, "REDIS_URL"),
        ({"backend": "jwt", "refresh_store": "postgres", "database_url": None}, "DATABASE_URL"),
        (
            {"backend": "jwt-denylist", "refresh_store": "none", "redis_url": None},
            "REDIS_URL",
        ),
        (
            {"backend": "jwt-denylist", "denylist_store": "postgres", "database_url": None},
            "DATABASE_URL",
        ),
    ],
    ids=[
        "session-postgres",
        "session-redis",
        "session-memcached",
        "session-file",
        "jwt-refresh-redis",
        "jwt-refresh-postgres",
        "denylist-redis",
        "denylist-postgres",
    ],
)
def test_a_missing_store_url_names_the_backend_and_the_variable(
    fields: dict[str, Any], var: str
) -> None:
    with pytest.raises(ConfigError, match=rf"^{fields['backend']}.* needs a store: .*{var}$"):
        _valid(**fields).check()


@pytest.mark.parametrize(
    ("fields", "what"),
    [
        ({"refresh_store": "postgres", "database_url": None}, "--refresh-store postgres"),
        ({"refresh_store": "redis", "redis_url": None}, "--refresh-store redis"),
        ({"denylist_store": "postgres", "database_url": None}, "--denylist-store postgres"),
    ],
)
def test_a_missing_state_store_says_which_store_needs_it(fields: dict[str, Any], what: str) -> None:
    with pytest.raises(ConfigError, match=f"jwt-denylist {what} needs a store"):
        _valid(backend="jwt-denylist", **fields).check()


def test_a_stateless_jwt_needs_no_store() -> None:
    s = Settings(backend="jwt", refresh_store="none").check()
    assert not s.needs_redis and not s.needs_postgres


@pytest.mark.parametrize(
    "fields",
    [
        {"backend": "session-redis", "redis_url": None},
        {"backend": "session-file", "session_dir": None},
        {"backend": "session-postgres", "database_url": None},
    ],
    ids=["redis", "session-dir", "postgres"],
)
def test_a_missing_store_message_names_a_flag_the_parser_accepts(fields: dict[str, Any]) -> None:
    with pytest.raises(ConfigError) as exc:
        _valid(**fields).check()
    flag = re.search(r"--[\w-]+", str(exc.value))
    assert flag is not None
    build_parser().parse_args(["--backend", fields["backend"], flag.group(), "x"])


def test_jwt_denylist_refuses_a_denylist_store_of_none() -> None:
    with pytest.raises(ConfigError, match="jwt-denylist needs --denylist-store redis or postgres"):
        _valid(backend="jwt-denylist", denylist_store="none").check()


def test_a_short_hmac_secret_is_refused_with_its_length() -> None:
    with pytest.raises(ConfigError, match="at least 32 bytes; got one of 31"):
        _valid(jwt_secret=b"x" * 31).check()


def test_a_short_previous_hmac_secret_is_refused() -> None:
    with pytest.raises(ConfigError, match="got one of 5"):
        _valid(jwt_secret=SECRET.encode(), jwt_previous_keys=(b"short",)).check()


def test_a_32_byte_hmac_secret_is_enough() -> None:
    _valid(jwt_secret=b"x" * 32, jwt_previous_keys=(b"y" * 32,)).check()


@pytest.mark.parametrize(
    ("field", "flag"),
    [
        ("workers", "workers"),
        ("users", "users"),
        ("pool_size", "pool-size"),
        ("session_ttl", "session-ttl"),
        ("session_absolute_ttl", "session-absolute-ttl"),
        ("access_ttl", "access-ttl"),
        ("refresh_ttl", "refresh-ttl"),
        ("store_timeout", "store-timeout"),
    ],
)
@pytest.mark.parametrize("value", [0, -1])
def test_non_positive_numbers_are_refused(field: str, flag: str, value: int) -> None:
    with pytest.raises(ConfigError, match=f"^--{flag} must be positive$"):
        _valid(**{field: value}).check()


def test_negative_extra_claims_are_refused_and_zero_is_fine() -> None:
    _valid(extra_claims=0).check()
    with pytest.raises(ConfigError, match="--extra-claims must be 0 or more"):
        _valid(extra_claims=-1).check()


@pytest.mark.parametrize("fields", [{"pw_time_cost": 0}, {"pw_memory_kib": 7}])
def test_password_hash_costs_below_argon2_minimums_are_refused(fields: dict[str, int]) -> None:
    with pytest.raises(ConfigError, match="--pw-time-cost must be ≥ 1 and --pw-memory-kib ≥ 8"):
        _valid(**fields).check()


# --- properties ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("backend", "is_jwt"),
    [
        ("session-file", False),
        ("session-postgres", False),
        ("session-redis", False),
        ("session-memcached", False),
        ("jwt", True),
        ("jwt-denylist", True),
    ],
)
def test_is_jwt(backend: str, is_jwt: bool) -> None:
    assert _valid(backend=backend).is_jwt is is_jwt


@pytest.mark.parametrize(
    ("backend", "transport", "cookies"),
    [
        ("session-redis", "bearer", True),
        ("session-file", "cookie", True),
        ("jwt", "bearer", False),
        ("jwt", "cookie", True),
        ("jwt-denylist", "bearer", False),
        ("jwt-denylist", "cookie", True),
    ],
)
def test_uses_cookies(backend: str, transport: Any, cookies: bool) -> None:
    assert _valid(backend=backend, transport=transport).uses_cookies is cookies


@pytest.mark.parametrize(
    ("fields", "postgres", "redis"),
    [
        ({"backend": "session-file"}, False, False),
        ({"backend": "session-memcached"}, False, False),
        ({"backend": "session-postgres"}, True, False),
        ({"backend": "session-redis"}, False, True),
        ({"backend": "jwt"}, False, True),
        ({"backend": "jwt", "refresh_store": "postgres"}, True, False),
        ({"backend": "jwt", "refresh_store": "none"}, False, False),
        ({"backend": "jwt-denylist", "refresh_store": "none"}, False, True),
        ({"backend": "jwt-denylist", "denylist_store": "postgres"}, True, True),
        (
            {"backend": "jwt-denylist", "refresh_store": "postgres", "denylist_store": "postgres"},
            True,
            False,
        ),
    ],
)
def test_needs_postgres_and_needs_redis(
    fields: dict[str, Any], postgres: bool, redis: bool
) -> None:
    s = _valid(**fields)
    assert (s.needs_postgres, s.needs_redis) == (postgres, redis)


def test_settings_are_frozen() -> None:
    s = _valid()
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.port = 1  # type: ignore[misc]


def test_each_settings_gets_its_own_csrf_secret() -> None:
    assert _valid().csrf_secret != _valid().csrf_secret
    assert len(_valid().csrf_secret) == 32
