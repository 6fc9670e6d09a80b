"""The Dockerfile, checked without a Docker engine: pinned, non-root, healthy, and runnable here.

Its instructions are parsed (continuation lines joined); the command it runs is run in this
venv with `--dry-run`, which resolves the configuration exactly as the container would.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PINNED_PYTHON = re.compile(r"^python:3\.1[1-9]\.\d+-slim(-\w+)?(@sha256:[0-9a-f]{64})?$")


def instructions() -> list[tuple[str, str]]:
    """Return (INSTRUCTION, arguments) of the Dockerfile, comments dropped, lines joined."""
    text = (ROOT / "Dockerfile").read_text()
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    out = []
    for line in joined.splitlines():
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def only(name: str) -> str:
    found = [args for word, args in instructions() if word == name]
    assert len(found) == 1, f"expected one {name}, found {found}"
    return found[0]


def image_env() -> dict[str, str]:
    """Return the variables the Dockerfile's ENV instructions set."""
    pairs = [p for word, args in instructions() if word == "ENV" for p in shlex.split(args)]
    return dict(p.split("=", 1) for p in pairs)


def test_base_image_is_a_pinned_slim_python() -> None:
    image = only("FROM")
    assert PINNED_PYTHON.match(image), image
    version = tuple(int(x) for x in image.split(":")[1].split("-")[0].split(".")[:2])
    required = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert version >= tuple(int(x) for x in required.removeprefix(">=").split("."))


def test_runs_as_a_non_root_user() -> None:
    user = only("USER")
    assert user.split(":")[0] not in ("root", "0")
    assert [w for w, _ in instructions()].index("USER") > max(
        i for i, (w, _) in enumerate(instructions()) if w == "RUN"
    ), "USER comes after the last RUN (installs as root, runs as the user)"


def test_installs_the_project_from_its_pinned_dependencies() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    loose = [d for d in project["dependencies"] if "==" not in d]
    assert not loose, f"unpinned dependencies would make the image drift: {loose}"
    runs = " ".join(args for word, args in instructions() if word == "RUN")
    assert "pyproject.toml" in runs and "pip install --requirement" in runs
    assert "pip install --no-deps --editable ." in runs


def test_health_check_asks_for_health() -> None:
    check = only("HEALTHCHECK")
    assert "/health" in check and "CMD" in check


def test_context_leaves_out_the_venv_and_results() -> None:
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".venv", "results", ".git"} <= set(ignored)


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, ["--backend", "jwt", "--alg", "HS256", "--refresh-store", "none"]),
        (
            {
                "AUTHBENCH_CONFIG": "jwt-es256",
                "AUTHBENCH_SERVER_ARGS": "--workers 2",
                "REDIS_URL": "redis://redis:6379/0",
            },
            ["--backend", "jwt", "--alg", "ES256", "--workers", "2"],
        ),
    ],
)
def test_the_default_command_resolves_the_configuration(
    env: dict[str, str], expected: list[str]
) -> None:
    cmd = json.loads(only("CMD"))
    assert cmd[:4] == ["python", "-m", "loadtests", "exec-server"]
    done = subprocess.run(
        [sys.executable, *cmd[1:], "--dry-run"],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", **image_env(), **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    argv = done.stdout.split()
    assert argv[1:3] == ["-m", "servers"]
    assert argv[3:-4] == expected
    assert argv[-4:] == ["--host", "0.0.0.0", "--port", "8080"]


def test_a_configuration_without_its_store_fails_in_one_line() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "loadtests", "exec-server", "--dry-run"],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "AUTHBENCH_CONFIG": "session-redis"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and "REDIS_URL" in done.stderr, done.stderr
