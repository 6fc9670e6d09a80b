"""Configurations and profiles as data: read `configs.toml`, validate everything up front."""

from __future__ import annotations

import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from servers.errors import ConfigError
from servers.settings import Settings, from_args, options_to_argv

DEFAULT_FILE = Path(__file__).with_name("configs.toml")
SCENARIOS = ("browse", "login", "refresh", "mixed")
STORE_KINDS = ("postgres", "redis", "memcached")
# Placeholder store locations, only to validate flags before any store exists.
_FAKE_ENV = {
    "DATABASE_URL": "postgresql://check@127.0.0.1:1/check",
    "REDIS_URL": "redis://127.0.0.1:1/0",
    "MEMCACHED_URL": "memcached://127.0.0.1:1",
    "SESSION_DIR": "/nonexistent-authbench-check",
}


class BenchConfigError(ConfigError):
    """Raised for an invalid configuration file, unknown name or bad option."""


@dataclass(frozen=True)
class Configuration:
    """One thing to measure: a backend, its server flags and its store knobs."""

    name: str
    backend: str
    server: Mapping[str, object] = field(default_factory=dict)
    stores: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    argv: tuple[str, ...] = ()
    """Extra raw server flags (from the command line of `serve` / `ui`)."""

    def server_argv(self) -> list[str]:
        """Return the `python -m servers` flags of this configuration (without host/port)."""
        return ["--backend", self.backend, *options_to_argv(self.server), *self.argv]

    def settings(self, env: Mapping[str, str]) -> Settings:
        """Return the Settings the server will run with, given store locations in `env`.

        Raises BenchConfigError if a flag is unknown or a value invalid.
        """
        try:
            return from_args(self.server_argv(), env, raise_errors=True)
        except ConfigError as exc:
            raise BenchConfigError(f"configuration {self.name!r}: {exc}") from None

    def store_kinds(self) -> list[str]:
        """Return the store kinds this configuration's server talks to."""
        s = self.settings(_FAKE_ENV)
        kinds = []
        if s.needs_postgres:
            kinds.append("postgres")
        if s.needs_redis:
            kinds.append("redis")
        if s.backend == "session-memcached":
            kinds.append("memcached")
        return kinds

    def as_dict(self) -> dict[str, Any]:
        """Return the configuration as plain data, for the manifest."""
        return {
            "backend": self.backend,
            "server": dict(self.server),
            "stores": {k: dict(v) for k, v in self.stores.items()},
        }


@dataclass(frozen=True)
class Profile:
    """Which configurations and scenarios to run, and the load they all get."""

    name: str
    configs: tuple[str, ...]
    scenarios: tuple[str, ...]
    rate: Mapping[str, float]
    """Offered requests per second, per scenario."""
    users: int
    warmup: float
    duration: float
    repeat: int = 1
    shuffle: bool = False
    description: str = ""

    def with_overrides(
        self,
        *,
        configs: Sequence[str] | None = None,
        scenarios: Sequence[str] | None = None,
        rate: float | None = None,
        users: int | None = None,
        duration: float | None = None,
        warmup: float | None = None,
        repeat: int | None = None,
    ) -> Profile:
        """Return a copy with command-line overrides applied (a single rate for every scenario)."""
        p = self
        if configs:
            p = replace(p, configs=tuple(configs))
        if scenarios:
            p = replace(p, scenarios=tuple(scenarios))
        if rate is not None:
            p = replace(p, rate=dict.fromkeys(SCENARIOS, rate))
        if users is not None:
            p = replace(p, users=users)
        if duration is not None:
            p = replace(p, duration=duration)
        if warmup is not None:
            p = replace(p, warmup=warmup)
        if repeat is not None:
            p = replace(p, repeat=repeat)
        return p


@dataclass(frozen=True)
class BenchFile:
    """Everything in one configuration file."""

    configs: Mapping[str, Configuration]
    profiles: Mapping[str, Profile]

    def profile(self, name: str) -> Profile:
        """Return the named profile; raises BenchConfigError naming the known ones."""
        if name not in self.profiles:
            known = ", ".join(self.profiles)
            raise BenchConfigError(f"unknown profile {name!r}; known profiles: {known}")
        return self.profiles[name]

    def check(self, profile: Profile) -> list[Configuration]:
        """Return the profile's configurations after validating all of it.

        Raises BenchConfigError for an unknown configuration or scenario, a missing rate or
        a non-positive number.
        """
        unknown = [c for c in profile.configs if c not in self.configs]
        if unknown:
            raise BenchConfigError(
                f"unknown configuration(s) {', '.join(unknown)}; known: {', '.join(self.configs)}"
            )
        bad = [s for s in profile.scenarios if s not in SCENARIOS]
        if bad:
            raise BenchConfigError(
                f"unknown scenario(s) {', '.join(bad)}; choose from {', '.join(SCENARIOS)}"
            )
        missing = [s for s in profile.scenarios if s not in profile.rate]
        if missing:
            raise BenchConfigError(f"profile {profile.name!r} has no rate for {', '.join(missing)}")
        for what, value in (
            ("users", profile.users),
            ("duration", profile.duration),
            ("repeat", profile.repeat),
            *((f"rate of {s}", profile.rate[s]) for s in profile.scenarios),
        ):
            if value <= 0:
                raise BenchConfigError(f"profile {profile.name!r}: {what} must be positive")
        if profile.warmup < 0:
            raise BenchConfigError(f"profile {profile.name!r}: warmup must be 0 or more")
        chosen = [self.configs[c] for c in profile.configs]
        for config in chosen:
            config.settings(_FAKE_ENV)
        return chosen


def load(path: Path = DEFAULT_FILE) -> BenchFile:
    """Return the parsed and validated file; raises BenchConfigError with the reason."""
    try:
        raw = tomllib.loads(path.read_text())
    except OSError as exc:
        raise BenchConfigError(f"cannot read {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise BenchConfigError(f"{path} is not valid TOML: {exc}") from None
    configs = {name: _configuration(name, body) for name, body in _table(raw, "configs").items()}
    sweeps: dict[str, list[str]] = {}
    for name, body in _table(raw, "sweeps").items():
        for config in _sweep(name, body):
            if config.name in configs:
                raise BenchConfigError(f"sweep {name!r} makes {config.name!r}, which exists")
            configs[config.name] = config
            sweeps.setdefault(name, []).append(config.name)
    profiles = {
        name: _profile(name, body, list(configs), sweeps)
        for name, body in _table(raw, "profiles").items()
    }
    bench = BenchFile(configs, profiles)
    for config in configs.values():
        config.settings(_FAKE_ENV)
    return bench


def _table(raw: Mapping[str, Any], key: str) -> dict[str, Any]:
    value = raw.get(key, {})
    if not isinstance(value, dict) or not all(isinstance(v, dict) for v in value.values()):
        raise BenchConfigError(f"[{key}] must be a table of tables")
    return value


def _configuration(name: str, body: Mapping[str, Any]) -> Configuration:
    unknown = set(body) - {"backend", "server", "stores"}
    if unknown:
        raise BenchConfigError(f"configuration {name!r}: unknown key(s) {', '.join(unknown)}")
    if not isinstance(body.get("backend"), str):
        raise BenchConfigError(f'configuration {name!r} needs backend = "…"')
    server = body.get("server", {})
    stores = body.get("stores", {})
    if not isinstance(server, dict) or not isinstance(stores, dict):
        raise BenchConfigError(f"configuration {name!r}: server and stores must be tables")
    for kind, knobs in stores.items():
        if kind not in STORE_KINDS or not isinstance(knobs, dict):
            raise BenchConfigError(
                f"configuration {name!r}: stores.{kind} must be a table of "
                f"{'/'.join(STORE_KINDS)} settings"
            )
    stores = {k: {str(kk): str(vv) for kk, vv in v.items()} for k, v in stores.items()}
    config = Configuration(name, body["backend"], server, stores)
    return config


def _sweep(name: str, body: Mapping[str, Any]) -> list[Configuration]:
    """Return one configuration per combination of the sweep's `vary` values.

    Members are named `<sweep>-<value>-<value>…` in the order of `vary`, lower-cased.
    """
    vary = body.get("vary")
    if (
        not isinstance(vary, dict)
        or not vary
        or not all(isinstance(v, list) and v for v in vary.values())
    ):
        raise BenchConfigError(f"sweep {name!r} needs vary = {{ flag = [values…], … }}")
    base = _configuration(name, {k: v for k, v in body.items() if k != "vary"})
    combos: list[dict[str, object]] = [{}]
    for flag, values in vary.items():
        combos = [{**c, flag: v} for c in combos for v in values]
    return [
        replace(
            base,
            name="-".join([name, *(str(v).lower() for v in combo.values())]),
            server={**base.server, **combo},
        )
        for combo in combos
    ]


def _profile(
    name: str,
    body: Mapping[str, Any],
    all_configs: list[str],
    sweeps: Mapping[str, list[str]] | None = None,
) -> Profile:
    known = {"description", "configs", "scenarios", "rate", "users", "warmup", "duration"}
    unknown = set(body) - known - {"repeat", "shuffle"}
    if unknown:
        raise BenchConfigError(f"profile {name!r}: unknown key(s) {', '.join(unknown)}")
    configs = body.get("configs")
    if configs == "all":
        configs = all_configs
    elif isinstance(configs, list):
        # A sweep's name stands for all of its members.
        configs = [m for c in configs for m in (sweeps or {}).get(c, [c])]
    rate = body.get("rate")
    if isinstance(rate, int | float):
        rate = dict.fromkeys(SCENARIOS, rate)
    try:
        return Profile(
            name=name,
            configs=tuple(_strings(configs, f"profile {name!r}: configs")),
            scenarios=tuple(_strings(body.get("scenarios"), f"profile {name!r}: scenarios")),
            rate={str(k): float(v) for k, v in dict(rate or {}).items()},
            users=int(body["users"]),
            warmup=float(body.get("warmup", 0)),
            duration=float(body["duration"]),
            repeat=int(body.get("repeat", 1)),
            shuffle=bool(body.get("shuffle", False)),
            description=str(body.get("description", "")),
        )
    except KeyError as exc:
        raise BenchConfigError(f"profile {name!r} needs {exc.args[0]}") from None
    except (TypeError, ValueError) as exc:
        raise BenchConfigError(f"profile {name!r}: {exc}") from None


def _strings(value: object, what: str) -> list[str]:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise BenchConfigError(f"{what} must be a non-empty list of names")
    return value
