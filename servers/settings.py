"""The server's one frozen configuration, read once from flags and the environment."""

from __future__ import annotations

import argparse
import os
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, NoReturn

from servers.errors import ConfigError

BACKEND_NAMES = (
    "session-file",
    "session-postgres",
    "session-redis",
    "session-memcached",
    "jwt",
    "jwt-denylist",
)
ALGORITHMS = ("HS256", "RS256", "ES256", "EdDSA")
Transport = Literal["cookie", "bearer"]
StateStore = Literal["redis", "postgres", "none"]

MIN_HMAC_SECRET_BYTES = 32


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Everything the server needs; built by `from_args` or directly in tests."""

    backend: str
    """Registry name of the mechanism under test (see `BACKEND_NAMES`)."""
    host: str = "127.0.0.1"
    """Interface to listen on."""
    port: int = 8080
    """TCP port to listen on."""
    workers: int = 1
    """Processes sharing one SO_REUSEPORT socket."""

    users: int = 1000
    """Size of the user directory: user0 … user{N-1}, password `secret-{i}`."""
    pw_time_cost: int = 1
    """Argon2id time cost (iterations) of the stored password hashes."""
    pw_memory_kib: int = 1024
    """Argon2id memory cost in KiB of the stored password hashes."""
    login_max_failures: int = 5
    """Failed logins per username inside `login_window` before 429."""
    login_window: float = 60.0
    """Seconds over which failed logins are counted."""

    database_url: str | None = None
    """PostgreSQL DSN (session-postgres, Postgres refresh/denylist stores)."""
    redis_url: str | None = None
    """Redis URL (session-redis, Redis refresh/denylist stores)."""
    memcached_url: str | None = None
    """memcached URL, memcached://host:port (session-memcached)."""
    session_dir: Path | None = None
    """Directory of session files (session-file)."""
    store_timeout: float = 1.0
    """Upper bound in seconds for one store connect or command before 503."""
    pool_size: int = 16
    """Connections per store pool (Postgres, Redis, memcached), per worker."""
    pg_unlogged: bool = False
    """Keep Postgres session/denylist/refresh tables UNLOGGED (no WAL)."""

    session_ttl: float = 1800.0
    """Idle lifetime of a session in seconds (fixed from issue unless `sliding`)."""
    session_absolute_ttl: float = 8 * 3600.0
    """Hard cap on a session's age in seconds, whatever the activity."""
    sliding: bool = False
    """Renew a session's idle expiry on every authenticated request."""
    cookie_secure: bool = False
    """Add `Secure` to every cookie (set it whenever the server sits behind TLS)."""

    alg: str = "HS256"
    """JWT signing algorithm, one of `ALGORITHMS`."""
    transport: Transport = "bearer"
    """JWT credential transport: Authorization header or HttpOnly cookies + CSRF."""
    issuer: str = "authbench"
    """JWT `iss` issued and required."""
    audience: str = "authbench-api"
    """JWT `aud` issued and required."""
    access_ttl: float = 900.0
    """Access-token lifetime in seconds."""
    refresh_ttl: float = 7 * 24 * 3600.0
    """Refresh-token lifetime in seconds."""
    leeway: float = 5.0
    """Clock skew in seconds tolerated on `exp` and `iat`."""
    extra_claims: int = 0
    """Additional claims per access token, to grow it for the token-size sweep."""
    refresh_store: StateStore = "redis"
    """Where refresh-token families live; `none` is the stateless variant."""
    denylist_store: StateStore = "redis"
    """Where jwt-denylist keeps revoked `jti`s (redis or postgres)."""
    jwt_secret: bytes | None = None
    """HMAC signing secret (≥ 32 bytes); generated at start-up when absent."""
    jwt_private_key: bytes | None = None
    """PEM private key for asymmetric algorithms; generated at start-up when absent."""
    jwt_previous_keys: tuple[bytes, ...] = ()
    """Retired-from-signing keys (HMAC secrets or PEM private keys) that still verify."""

    csrf_secret: bytes = field(default_factory=lambda: secrets.token_bytes(32))
    """Key of the HMAC that binds a CSRF token to its credential (shared by all workers)."""

    @property
    def is_jwt(self) -> bool:
        """True for the token backends."""
        return self.backend.startswith("jwt")

    @property
    def uses_cookies(self) -> bool:
        """True when the credential travels in a cookie (and so needs CSRF protection)."""
        return not self.is_jwt or self.transport == "cookie"

    def check(self) -> Settings:
        """Return self after validating cross-field rules; raises ConfigError otherwise."""
        _check_choice("backend", self.backend, BACKEND_NAMES)
        _check_choice("alg", self.alg, ALGORITHMS)
        _check_positive("workers", self.workers)
        _check_positive("users", self.users)
        _check_positive("pool-size", self.pool_size)
        for name in ("session_ttl", "session_absolute_ttl", "access_ttl", "refresh_ttl"):
            _check_positive(name.replace("_", "-"), getattr(self, name))
        _check_positive("store-timeout", self.store_timeout)
        _check_positive("login-max-failures", self.login_max_failures)
        _check_positive("login-window", self.login_window)
        if self.leeway < 0:
            raise ConfigError("--leeway must be 0 or more")
        if self.extra_claims < 0:
            raise ConfigError("--extra-claims must be 0 or more")
        if self.pw_time_cost < 1 or self.pw_memory_kib < 8:
            raise ConfigError("--pw-time-cost must be ≥ 1 and --pw-memory-kib ≥ 8")
        if self.backend == "jwt-denylist" and self.denylist_store == "none":
            raise ConfigError("jwt-denylist needs --denylist-store redis or postgres")
        if self.alg == "HS256":
            for secret in (self.jwt_secret, *self.jwt_previous_keys):
                if secret is not None and len(secret) < MIN_HMAC_SECRET_BYTES:
                    raise ConfigError(
                        f"HMAC secrets must be at least {MIN_HMAC_SECRET_BYTES} bytes; "
                        f"got one of {len(secret)}"
                    )
        for need, url, var in self._required_stores():
            if not url:
                raise ConfigError(
                    f"{need} needs a store: set --{var.lower().replace('_', '-')} or {var}"
                )
        return self

    def _required_stores(self) -> list[tuple[str, str | None, str]]:
        needs: list[tuple[str, str | None, str]] = []
        b = self.backend
        if b == "session-postgres":
            needs.append((b, self.database_url, "DATABASE_URL"))
        if b == "session-redis":
            needs.append((b, self.redis_url, "REDIS_URL"))
        if b == "session-memcached":
            needs.append((b, self.memcached_url, "MEMCACHED_URL"))
        if b == "session-file":
            needs.append((b, str(self.session_dir or ""), "SESSION_DIR"))
        if self.is_jwt:
            stores = [("refresh-store", self.refresh_store)]
            if b == "jwt-denylist":
                stores.append(("denylist-store", self.denylist_store))
            for what, store in stores:
                if store == "redis":
                    needs.append((f"{b} --{what} redis", self.redis_url, "REDIS_URL"))
                elif store == "postgres":
                    needs.append((f"{b} --{what} postgres", self.database_url, "DATABASE_URL"))
        return needs

    @property
    def needs_postgres(self) -> bool:
        """True when some part of this configuration talks to PostgreSQL."""
        return any(var == "DATABASE_URL" for _, _, var in self._required_stores())

    @property
    def needs_redis(self) -> bool:
        """True when some part of this configuration talks to Redis."""
        return any(var == "REDIS_URL" for _, _, var in self._required_stores())


def _check_choice(name: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ConfigError(f"unknown {name} {value!r}; choose one of {', '.join(choices)}")


def _check_positive(name: str, value: float) -> None:
    if value <= 0:
        raise ConfigError(f"--{name} must be positive")


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line, without the usage block.

    With `raise_errors` it raises ConfigError instead of exiting, for callers that validate
    options of a server they are about to start.
    """

    raise_errors = False

    def error(self, message: str) -> NoReturn:
        if self.raise_errors:
            raise ConfigError(message)
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser(*, raise_errors: bool = False) -> argparse.ArgumentParser:
    """Return the command-line parser of `python -m servers`.

    With `raise_errors`, bad flags raise ConfigError instead of exiting the process.
    """
    p = _Parser(prog="python -m servers", description="Serve the authbench HTTP contract.")
    p.raise_errors = raise_errors
    p.add_argument("--backend", required=True, choices=BACKEND_NAMES)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--users", type=int, default=1000)
    p.add_argument("--pw-time-cost", type=int, default=1)
    p.add_argument("--pw-memory-kib", type=int, default=1024)
    p.add_argument("--login-max-failures", type=int, default=5)
    p.add_argument("--login-window", type=float, default=60.0)
    p.add_argument("--database-url")
    p.add_argument("--redis-url")
    p.add_argument("--memcached-url")
    p.add_argument("--session-dir", type=Path)
    p.add_argument("--store-timeout", type=float, default=1.0)
    p.add_argument("--pool-size", type=int, default=16)
    p.add_argument("--pg-unlogged", action="store_true")
    p.add_argument("--session-ttl", type=float, default=1800.0)
    p.add_argument("--session-absolute-ttl", type=float, default=8 * 3600.0)
    p.add_argument("--sliding", action="store_true")
    p.add_argument("--cookie-secure", action="store_true")
    p.add_argument("--alg", choices=ALGORITHMS, default="HS256")
    p.add_argument("--transport", choices=("bearer", "cookie"), default="bearer")
    p.add_argument("--issuer", default="authbench")
    p.add_argument("--audience", default="authbench-api")
    p.add_argument("--access-ttl", type=float, default=900.0)
    p.add_argument("--refresh-ttl", type=float, default=7 * 24 * 3600.0)
    p.add_argument("--extra-claims", type=int, default=0)
    p.add_argument("--refresh-store", choices=("redis", "postgres", "none"), default="redis")
    p.add_argument("--denylist-store", choices=("redis", "postgres"), default="redis")
    return p


def options_to_argv(options: Mapping[str, object]) -> list[str]:
    """Return command-line flags for `{"flag-name": value}` (True → bare flag, False → absent)."""
    argv: list[str] = []
    for name, value in options.items():
        if value is True:
            argv.append(f"--{name}")
        elif value is not False and value is not None:
            argv += [f"--{name}", str(value)]
    return argv


def from_args(
    argv: Sequence[str] | None = None,
    env: Mapping[str, str] | None = None,
    *,
    raise_errors: bool = False,
) -> Settings:
    """Return validated Settings from flags, falling back to the environment for stores/keys.

    Raises ConfigError for invalid combinations or unreadable key files; on unknown flags
    argparse exits with status 2, or raises ConfigError with `raise_errors`.
    """
    env = os.environ if env is None else env
    a = build_parser(raise_errors=raise_errors).parse_args(argv)
    session_dir = a.session_dir or (Path(env["SESSION_DIR"]) if env.get("SESSION_DIR") else None)
    private_key = _read_pem(env["JWT_PRIVATE_KEY"]) if env.get("JWT_PRIVATE_KEY") else None
    previous: list[bytes] = [
        s.encode() for s in env.get("JWT_PREVIOUS_SECRETS", "").split(",") if s
    ]
    previous += [_read_pem(p) for p in env.get("JWT_PREVIOUS_PRIVATE_KEYS", "").split(",") if p]
    return Settings(
        backend=a.backend,
        host=a.host,
        port=a.port,
        workers=a.workers,
        users=a.users,
        pw_time_cost=a.pw_time_cost,
        pw_memory_kib=a.pw_memory_kib,
        login_max_failures=a.login_max_failures,
        login_window=a.login_window,
        database_url=a.database_url or env.get("DATABASE_URL"),
        redis_url=a.redis_url or env.get("REDIS_URL"),
        memcached_url=a.memcached_url or env.get("MEMCACHED_URL"),
        session_dir=session_dir,
        store_timeout=a.store_timeout,
        pool_size=a.pool_size,
        pg_unlogged=a.pg_unlogged,
        session_ttl=a.session_ttl,
        session_absolute_ttl=a.session_absolute_ttl,
        sliding=a.sliding,
        cookie_secure=a.cookie_secure,
        alg=a.alg,
        transport=a.transport,
        issuer=a.issuer,
        audience=a.audience,
        access_ttl=a.access_ttl,
        refresh_ttl=a.refresh_ttl,
        extra_claims=a.extra_claims,
        refresh_store=a.refresh_store,
        denylist_store=a.denylist_store,
        jwt_secret=env["JWT_SECRET"].encode() if env.get("JWT_SECRET") else None,
        jwt_private_key=private_key,
        jwt_previous_keys=tuple(previous),
    ).check()


def _read_pem(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read key file {path}: {exc.strerror}") from None
