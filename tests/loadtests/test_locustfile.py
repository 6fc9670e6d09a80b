"""The Locust users, run by the real `locust` CLI against real servers started as subprocesses.

Nothing here imports the locustfile: importing locust monkey-patches the whole process with
gevent, so every check runs in a child process and inspects what it wrote.
"""

from __future__ import annotations

import csv
import gzip
import http.client
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import pytest

from loadtests.stores import free_port

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
LOCUSTFILE = "loadtests/locustfile.py"
COLUMNS = [
    "t_start",
    "name",
    "method",
    "status",
    "ok",
    "latency_ms",
    "request_head_bytes",
    "credential_bytes",
    "response_bytes",
    "st_auth",
    "st_store",
    "st_pw",
    "st_issue",
    "error",
]
STATUS = {"/login": "200", "/me": "200", "/logout": "204", "/refresh": "200", "/public": "200"}
# Endpoints each scenario must hit within a few seconds at 5 tasks/s per user.
MUST_HIT = {
    "browse": {"/login", "/me"},
    "login": {"/login", "/me", "/logout"},
    "refresh": {"/login", "/refresh", "/me"},
    "mixed": {"/login", "/me"},
}
SCENARIOS = list(MUST_HIT)
# name -> (server arguments, Locust user class, header carrying the credential on GET /me)
STYLES = {
    "session-file": (["--backend", "session-file"], "CookieUser", "Cookie"),
    "jwt": (["--backend", "jwt", "--refresh-store", "none"], "BearerUser", "Authorization"),
    "jwt-cookie": (
        ["--backend", "jwt", "--transport", "cookie", "--refresh-store", "none"],
        "CookieUser",
        "Cookie",
    ),
}

# Drives one user by hand and prints every request head exactly as geventhttpclient sent it.
HEADS_SCRIPT = """
import json, sys
from locust.env import Environment
from loadtests import locustfile

user_class = getattr(locustfile, sys.argv[2])
user_class.host = sys.argv[1]
environment = Environment(user_classes=[user_class])
sent = []
def capture(name, response, **kw):
    head = response._sent_request
    sent.append([name, head, locustfile.estimated_head_bytes(response.request)])
environment.events.request.add_listener(capture)
user = user_class(environment)
user.on_start()
ok = [user.me(user.credential)]
renewed = user.refresh(user.credential)
ok += [renewed is not None, user.me(renewed), user.logout(renewed)]
json.dump({"ok": ok, "sent": sent}, sys.stdout)
"""


@dataclass(frozen=True)
class Run:
    """A finished Locust process and the records it wrote."""

    returncode: int
    output: str
    header: list[str]
    rows: list[dict[str, str]]


@contextmanager
def running_server(tmp: Path, *args: str) -> Iterator[str]:
    """Yield the URL of a server started with `args`; it is always terminated afterwards."""
    port = free_port()
    log_path = tmp / f"server-{port}.log"
    command = [str(BIN / "python"), "-m", "servers", *args]
    command += ["--host", "127.0.0.1", "--port", str(port), "--users", "20"]
    if "session-file" in args:
        command += ["--session-dir", str(tmp / f"sessions-{port}")]
    with log_path.open("wb") as log:
        proc = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        try:
            url = f"http://127.0.0.1:{port}"
            _wait_healthy(url, proc, log_path)
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _wait_healthy(url: str, proc: subprocess.Popen[bytes], log_path: Path) -> None:
    host, _, port = url.removeprefix("http://").partition(":")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"server exited: {log_path.read_text()[-2000:]}")
        connection = http.client.HTTPConnection(host, int(port), timeout=2)
        try:
            connection.request("GET", "/health")
            if connection.getresponse().status == 200:
                return
        except OSError:
            time.sleep(0.1)
        finally:
            connection.close()
    pytest.fail(f"server not healthy within 20 s: {log_path.read_text()[-2000:]}")


def _env(**authbench: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTHBENCH_")}
    env.update({"AUTHBENCH_USERS": "20", "AUTHBENCH_USER_RATE": "5"})
    env.update({f"AUTHBENCH_{k.upper()}": v for k, v in authbench.items()})
    return env


def run_locust(
    url: str, user_class: str, records: Path, load: tuple[str, ...], **authbench: str
) -> Run:
    """Run the locust CLI headless and return its exit code, output and records."""
    command = [str(BIN / "locust"), "-f", LOCUSTFILE, "--headless", *load]
    command += ["--host", url, "--only-summary", user_class]
    env = _env(records=str(records), **authbench)
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    output = done.stdout + done.stderr
    assert records.exists(), output
    with gzip.open(records, "rt", newline="") as f:
        reader = csv.reader(f)
        header = next(reader)
        rows = [dict(zip(header, row, strict=True)) for row in reader]
    return Run(done.returncode, output, header, rows)


FIXED_LOAD = ("-u", "4", "-r", "4", "--run-time", "4s")


@dataclass(frozen=True)
class SentHeads:
    """Whether each call of HEADS_SCRIPT succeeded, and (name, head, estimated size) per request."""

    ok: list[bool]
    sent: list[tuple[str, str, int]]


def sent_heads(url: str, user_class: str) -> SentHeads:
    """Return the heads one user sent for login, refresh, /me, logout (see HEADS_SCRIPT)."""
    done = subprocess.run(
        [str(BIN / "python"), "-c", HEADS_SCRIPT, url, user_class],
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    return SentHeads(result["ok"], [(n, h, e) for n, h, e in result["sent"]])


@dataclass(frozen=True)
class StyleRuns:
    """Every scenario run against one server, plus one user's sent heads."""

    style: str
    host: str
    runs: dict[str, Run]
    heads: SentHeads


@pytest.fixture(scope="module", params=list(STYLES))
def style_runs(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> StyleRuns:
    """Run the four scenarios concurrently against one server of the style (not timed)."""
    style: str = request.param
    args, user_class, _ = STYLES[style]
    tmp = tmp_path_factory.mktemp(style)
    with running_server(tmp, *args) as url, ThreadPoolExecutor(len(SCENARIOS) + 1) as pool:
        heads = pool.submit(sent_heads, url, user_class)
        runs = {
            s: pool.submit(run_locust, url, user_class, tmp / f"{s}.csv.gz", FIXED_LOAD, scenario=s)
            for s in SCENARIOS
        }
        return StyleRuns(
            style,
            url.removeprefix("http://"),
            {s: r.result() for s, r in runs.items()},
            heads.result(),
        )


def _base_get_head(path: str, host: str) -> int:
    """Bytes of a GET head carrying no credential: request line and FastHttpUser's defaults."""
    user_agent = f"python/gevent-http-client-{version('geventhttpclient')}"
    lines = [f"GET {path} HTTP/1.1", f"User-Agent: {user_agent}"]
    lines += ["Accept-Encoding: gzip, deflate, br", f"Host: {host}", ""]
    return sum(len(line) + 2 for line in lines)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_scenario_records(style_runs: StyleRuns, scenario: str) -> None:
    run = style_runs.runs[scenario]
    assert run.returncode == 0, run.output
    assert run.header == COLUMNS
    assert run.rows, run.output
    names = {row["name"] for row in run.rows}
    assert MUST_HIT[scenario] <= names <= set(STATUS)
    _, _, credential_header = STYLES[style_runs.style]
    for row in run.rows:
        assert (row["ok"], row["error"]) == ("1", ""), row
        assert row["status"] == STATUS[row["name"]], row
        assert float(row["latency_ms"]) > 0 and int(row["response_bytes"]) > 0
        assert row["st_auth"] != "", row
        if row["name"] == "/me":
            credential = int(row["credential_bytes"])
            assert credential > 0
            # The head is exactly the defaults plus one credential header: nothing else rode along.
            expected = _base_get_head("/me", style_runs.host)
            expected += len(f"{credential_header}: ") + credential + 2
            assert int(row["request_head_bytes"]) == expected, row
        elif row["name"] == "/public":
            assert int(row["request_head_bytes"]) == _base_get_head("/public", style_runs.host)
        if row["name"] in ("/login", "/public"):
            assert row["credential_bytes"] == "0"
        if row["name"] == "/login":
            assert row["st_pw"] != "" and row["st_issue"] != ""


def test_sent_heads_carry_only_the_credential(style_runs: StyleRuns) -> None:
    assert style_runs.heads.ok == [True] * 4
    bearer = STYLES[style_runs.style][1] == "BearerUser"
    for name, head, estimate in style_runs.heads.sent:
        assert len(head) == estimate, head  # the fallback estimate matches the real head
        fields = {k: v for k, _, v in (line.partition(": ") for line in head.split("\r\n")[1:])}
        cookies = {c.split("=", 1)[0] for c in fields.get("Cookie", "").split("; ") if c}
        if bearer:
            assert "Cookie" not in fields, head
            assert ("Authorization" in fields) == (name in ("/me", "/logout")), head
            continue
        assert "Authorization" not in fields, head
        expected = {"session_id"} if style_runs.style == "session-file" else {"access_token"}
        if name == "/refresh" and style_runs.style == "jwt-cookie":
            expected.add("refresh_token")  # Path=/refresh: sent there and nowhere else
        assert cookies == (expected if name != "/login" else set()), head
        assert ("X-CSRF-Token" in fields) == (name in ("/logout", "/refresh")), head


def test_wrong_content_counts_as_failure(tmp_path: Path) -> None:
    # A session server answers a login 200 with a cookie, not the tokens a BearerUser needs.
    with running_server(tmp_path, "--backend", "session-file") as url:
        run = run_locust(url, "BearerUser", tmp_path / "r.csv.gz", FIXED_LOAD, scenario="browse")
    assert run.returncode != 0
    logins = [row for row in run.rows if row["name"] == "/login"]
    assert logins
    for row in logins:
        assert (row["status"], row["ok"]) == ("200", "0"), row
        assert "without access_token" in row["error"]


def test_step_shape_finishes_by_itself(tmp_path: Path) -> None:
    with running_server(tmp_path, "--backend", "session-file") as url:
        run = run_locust(
            url, "CookieUser", tmp_path / "r.csv.gz", (), scenario="browse", steps="2:2,4:2"
        )
    assert run.returncode == 0, run.output
    assert "Shape test updating to 2 users at 2.00 spawn rate" in run.output
    assert "Shape test updating to 4 users at 4.00 spawn rate" in run.output
    assert "Shape test stopping" in run.output
    assert run.rows and all(row["ok"] == "1" for row in run.rows)
    # Browse users log in once each and never again while every /me succeeds.
    assert 1 <= sum(row["name"] == "/login" for row in run.rows) <= 4


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"scenario": "bogus"}, "AUTHBENCH_SCENARIO='bogus' is unknown"),
        ({"steps": "8:5,16"}, "AUTHBENCH_STEPS: '16' is not users:seconds"),
        ({"user_rate": "fast"}, "AUTHBENCH_USER_RATE='fast' is not a valid float"),
    ],
)
def test_invalid_environment_fails_at_import(env: dict[str, str], message: str) -> None:
    done = subprocess.run(
        [str(BIN / "python"), "-c", "import loadtests.locustfile"],
        cwd=ROOT,
        env=_env(**env),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert message in done.stderr


@pytest.mark.parametrize(("steps", "shapes"), [("", "[]"), ("2:1", "['StepLoad']")])
def test_shape_class_exists_only_with_steps(steps: str, shapes: str) -> None:
    script = (
        "from locust import LoadTestShape\nfrom loadtests import locustfile as m\n"
        "print(sorted(k for k, v in vars(m).items() if isinstance(v, type)"
        " and issubclass(v, LoadTestShape) and v is not LoadTestShape))"
    )
    done = subprocess.run(
        [str(BIN / "python"), "-c", script],
        cwd=ROOT,
        env=_env(steps=steps),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == shapes
