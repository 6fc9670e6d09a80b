"""docker-compose.yml, checked without a Docker engine: what the runner needs is there and agrees.

Compose is not run here: the file is parsed, its `${VAR:-default}`s replaced by their defaults
as Compose would with an empty environment, and each part held against the code it drives.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from loadtests.__main__ import build_parser
from loadtests.config import load
from loadtests.locust_process import DEFAULT_MASTER_PORT
from loadtests.stores import ENV_VARS
from servers.settings import from_args

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
STORES = {"postgres": 5432, "redis": 6379, "memcached": 11211}
RUNNERS = ("bench", "locust-master")
# Versioned tag: at least major.minor, optionally a variant (-bookworm); never latest.
PINNED = re.compile(r"^[a-z0-9./-]+:\d+\.\d+(\.\d+)?(-[a-z0-9.]+)?$")
DEFAULT = re.compile(r"\$\{(\w+)(?::?-([^}]*))?\}")


def with_defaults(value: Any) -> Any:
    """Return `value` with every ${VAR:-default} replaced by its default ("" without one)."""
    if isinstance(value, str):
        return DEFAULT.sub(lambda m: m.group(2) or "", value)
    if isinstance(value, list):
        return [with_defaults(v) for v in value]
    if isinstance(value, dict):
        return {k: with_defaults(v) for k, v in value.items()}
    return value


@pytest.fixture(scope="module")
def raw() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def services(raw: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return with_defaults(raw["services"])  # type: ignore[no-any-return]


def environment(service: Mapping[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def command_args(service: Mapping[str, Any], prefix: list[str]) -> list[str]:
    cmd = service["command"]
    assert isinstance(cmd, list), "commands are exec form (lists): no shell to split them"
    assert cmd[: len(prefix)] == prefix, cmd
    return [str(c) for c in cmd[len(prefix) :]]


class RecordingEnv(dict[str, str]):
    """An empty environment that remembers every name looked up in it."""

    def __init__(self) -> None:
        super().__init__()
        self.names: set[str] = set()

    def get(self, key: str, default: Any = None) -> Any:
        self.names.add(key)
        return super().get(key, default)

    def __getitem__(self, key: str) -> str:
        self.names.add(key)
        return super().__getitem__(key)

    def __contains__(self, key: object) -> bool:
        self.names.add(str(key))
        return super().__contains__(key)


def server_env_names() -> set[str]:
    """Return the environment variables the server's settings read (found by reading them)."""
    env = RecordingEnv()
    from_args(["--backend", "jwt", "--refresh-store", "none"], env)
    return env.names


def test_the_file_parses_with_the_services_the_runner_needs(raw: dict[str, Any]) -> None:
    assert set(raw["services"]) >= {*STORES, "server", "bench", "locust-master", "locust-worker"}
    assert all(k.startswith("x-") for k in raw if k not in ("name", "services", "volumes"))


def test_every_image_is_pinned(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        if "build" in service:
            # Built here from the Dockerfile, whose own base image is pinned (test_dockerfile).
            assert service["image"] == "authbench:local", name
            continue
        image = service["image"]
        assert PINNED.match(image), f"{name}: {image} is not pinned to a version"
        assert "latest" not in image


def test_stores_are_the_official_images(services: dict[str, dict[str, Any]]) -> None:
    for kind in STORES:
        assert services[kind]["image"].split(":")[0] == kind  # Docker Official Images


def test_every_service_the_runner_needs_has_a_health_check(
    services: dict[str, dict[str, Any]],
) -> None:
    for name in (*STORES, "server"):
        check = services[name].get("healthcheck", {})
        assert not check.get("disable"), name
        test = check.get("test")
        assert isinstance(test, list) and test[0] in ("CMD", "CMD-SHELL") and len(test) > 1, name
    assert "/health" in " ".join(services["server"]["healthcheck"]["test"])
    # Whoever uses the stores or the server waits until they are healthy, not merely started.
    for name in ("bench", "server"):
        needs = services[name]["depends_on"]
        assert {k: v["condition"] for k, v in needs.items()} == dict.fromkeys(
            STORES, "service_healthy"
        ), name
    assert services["locust-master"]["depends_on"]["server"]["condition"] == "service_healthy"


def test_environment_names_match_the_server_settings(services: dict[str, dict[str, Any]]) -> None:
    read = server_env_names()
    assert set(ENV_VARS.values()) | {"SESSION_DIR"} <= read  # the lookup really saw them
    env = environment(services["server"])
    unknown = {k for k in env if not k.startswith("AUTHBENCH_")} - read
    assert not unknown, f"the server reads no such variable: {unknown}"
    for name in ("server", *RUNNERS):
        assert set(ENV_VARS.values()) <= environment(services[name]).keys(), name


def store_urls(services: dict[str, dict[str, Any]]) -> Iterator[tuple[str, str, str]]:
    for name in ("server", *RUNNERS):
        for kind, var in ENV_VARS.items():
            yield name, kind, environment(services[name])[var]


def test_store_urls_point_at_the_store_services(services: dict[str, dict[str, Any]]) -> None:
    pg = environment(services["postgres"])
    for name, kind, url in store_urls(services):
        parts = urlsplit(url)
        assert parts.hostname == kind and parts.port == STORES[kind], (name, url)
        if kind == "postgres":
            assert parts.scheme in ("postgresql", "postgres")
            assert (parts.username, parts.password) == (
                pg["POSTGRES_USER"],
                pg["POSTGRES_PASSWORD"],
            )
            assert parts.path == "/" + pg["POSTGRES_DB"]
        else:
            assert parts.scheme == kind
    for kind, port in STORES.items():
        published = [str(p) for p in services[kind].get("ports", [])]
        assert published and all(p.endswith(f":{port}") for p in published), kind


def test_runner_commands_are_valid_runner_command_lines(
    services: dict[str, dict[str, Any]],
) -> None:
    bench = load()
    parser = build_parser()
    for name in RUNNERS:
        args = parser.parse_args(command_args(services[name], ["python", "-m", "loadtests"]))
        assert args.command == "run" and args.profile in bench.profiles, name
    master = parser.parse_args(
        command_args(services["locust-master"], ["python", "-m", "loadtests"])
    )
    assert master.server_url == "http://server:8080"
    assert master.locust_master_host == "0.0.0.0"
    assert master.locust_master_port == DEFAULT_MASTER_PORT
    # The master measures the configuration the server runs: one variable sets both.
    server = environment(services["server"])
    assert master.configs == [server["AUTHBENCH_CONFIG"]]
    assert server["AUTHBENCH_CONFIG"] in bench.configs
    serve = parser.parse_args(command_args(services["server"], ["python", "-m", "loadtests"]))
    assert serve.command == "exec-server" and serve.port == 8080 and serve.host == "0.0.0.0"


def test_workers_reach_the_master_and_scale(
    raw: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    worker = services["locust-worker"]
    args = command_args(worker, ["locust", "-f", "/app/loadtests/locustfile.py"])
    assert "--worker" in args
    assert args[args.index("--master-host") + 1] == "locust-master"
    assert int(args[args.index("--master-port") + 1]) == DEFAULT_MASTER_PORT
    # --scale needs no fixed name and no fixed host port.
    assert "container_name" not in worker and "ports" not in worker
    # A worker ends with each cell (Locust's quit); it must come back for the next one.
    assert worker["restart"] in ("always", "unless-stopped")
    # One variable sets how many workers run and how many the master waits for.
    replicas = raw["services"]["locust-worker"]["deploy"]["replicas"]
    master_cmd = raw["services"]["locust-master"]["command"]
    assert replicas == master_cmd[master_cmd.index("--locust-workers") + 1]


def test_runners_and_workers_share_the_results_folder_at_one_path(
    services: dict[str, dict[str, Any]],
) -> None:
    # Workers write records at the path the master gives: the same mount in every container.
    for name in (*RUNNERS, "locust-worker"):
        assert "./results:/app/results" in services[name]["volumes"], name
        assert services[name]["user"] == "10001:10001"  # overridden with the host's by make up


def test_make_up_and_down_wrap_compose() -> None:
    makefile = (ROOT / "Makefile").read_text()
    up = makefile[makefile.index("\nup:") :].split("\n\n")[0]
    assert "docker compose" in makefile and "run --rm bench" in up
    down = makefile[makefile.index("\ndown:") :].split("\n\n")[0]
    assert "down --volumes" in down
