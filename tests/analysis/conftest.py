"""Fabricated result folders shared by the analysis tests (written once per session)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.analysis.runs import Behaviour, make_run

CONFIGS = [
    "session-redis",
    "session-file",
    "jwt-hs256",
    "jwt-hs256-stateless",
    "jwt-denylist-hs256",
    "jwt-size-hs256-0",
    "jwt-size-hs256-16",
    "jwt-size-es256-0",
    "jwt-size-es256-16",
]
UNVERIFIED = "jwt-denylist-hs256"
UNVERIFIED_DETAIL = "logout: token still accepted after logout"
GENERATOR_BOUND = "session-file"
BEHIND = "jwt-size-hs256-16"


def behaviour(config: str, scenario: str, repeat: int) -> Behaviour:
    """A plausible shape: sessions carry 54-byte cookies, JWTs grow with claims."""
    if config == UNVERIFIED:
        return Behaviour(status="unverified", detail=UNVERIFIED_DETAIL)
    credential = 54
    if config.startswith("jwt"):
        credential = 380 + (700 if config.endswith("-16") else 0) + (40 if "es256" in config else 0)
    return Behaviour(
        latency_ms=2.0 if config.startswith("session") else 3.0,
        credential_bytes=credential,
        server_us=250.0 + credential / 4,
        store_us=40.0 if config.startswith("session") else None,
        store_ms=0.2 if config.startswith("session") else None,
        locust_cpu_percent=95.0 if config == GENERATOR_BOUND else 30.0,
        achieved_share=0.5 if config == BEHIND else 1.0,
    )


@pytest.fixture(scope="session")
def latency_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Nine configurations (one unverified), browse and login, two repeats."""
    root = tmp_path_factory.mktemp("results")
    return make_run(
        root,
        CONFIGS,
        name="20260101-000000-test",
        scenarios=("browse", "login"),
        repeat=2,
        behaviour=behaviour,
    )


@pytest.fixture(scope="session")
def max_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A max-mode run of two configurations (steps.csv present), windows not recorded."""
    root = tmp_path_factory.mktemp("results-max")
    return make_run(
        root,
        ["session-file", "jwt-hs256"],
        name="20260101-000100-max",
        mode="max",
        duration=2.0,
        behaviour=behaviour,
        record_window=False,
    )
