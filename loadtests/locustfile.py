"""Locust users for the authbench HTTP contract: one abstract user, one subclass per transport.

Run e.g. ``AUTHBENCH_SCENARIO=browse locust -f loadtests/locustfile.py --host URL CookieUser``.
Everything is configured from the environment, read once at import (see `LoadSettings`):

- ``AUTHBENCH_SCENARIO``: ``browse`` | ``login`` | ``refresh`` | ``mixed`` (default ``browse``).
- ``AUTHBENCH_USERS``: size of the server's user directory, ``user0 … user{N-1}`` (default 1000).
- ``AUTHBENCH_USER_OFFSET``: first directory index of this process (default 0).
- ``AUTHBENCH_USER_STRIDE``: directory indexes per worker of a distributed run (default 0):
  worker *i* starts at ``offset + i × stride``, so workers log in as different users.
- ``AUTHBENCH_USER_RATE``: tasks per second per simulated user (default 1); ``0`` = no wait.
- ``AUTHBENCH_STEPS``: ``users:seconds,…`` defines a step-load shape (max mode); unset = none.
- ``AUTHBENCH_RECORDS``: path of the per-request ``.csv.gz`` written at exit; unset = none.
  A worker of a distributed run writes ``requests-w<i>.csv.gz`` beside it instead, or, when
  its own environment has ``AUTHBENCH_RECORDS_DIR``, under that folder at
  ``AUTHBENCH_RECORDS_NAME`` (the path relative to the results root).

Distributed runs (``--master`` / ``--worker``): the master reads the environment; every
``AUTHBENCH_*`` value above except the steps is also a Locust option, which Locust sends to
each worker with the spawn message, so a worker started once, anywhere, with no
``AUTHBENCH_*`` environment runs the master's scenario, rate and records path.

The server package is never imported, and this file stays whole: it runs inside Locust's
gevent process, on machines that may hold nothing of authbench but this file.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import itertools
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from geventhttpclient.client import HTTPClient
from locust import FastHttpUser, LoadTestShape, TaskSet, constant, events, poisson
from locust.contrib.fasthttp import FAILURE_EXCEPTIONS, FastResponse, ResponseContextManager
from locust.env import Environment
from locust.runners import MasterRunner, WorkerRunner

from loadtests.results import RECORD_COLUMNS

CSRF_HEADER = "X-CSRF-Token"
# The cookies that prove who the user is; the server sets no others.
CREDENTIAL_COOKIES = frozenset({"session_id", "access_token"})
MAX_ERROR_CHARS = 160


class ConfigError(ValueError):
    """Raised at import when an AUTHBENCH_* environment variable is invalid."""


def _number(env: Mapping[str, str], name: str, default: str, kind: Callable[[str], Any]) -> Any:
    raw = env.get(name, default)
    try:
        value = kind(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a valid {kind.__name__}") from None
    if value < 0:
        raise ConfigError(f"{name}={raw!r} must not be negative")
    return value


def parse_steps(text: str) -> tuple[tuple[int, float], ...]:
    """Return ``((users, seconds), …)`` from ``"8:5,16:5"``; raises ConfigError if malformed."""
    steps = []
    for part in text.split(","):
        users, sep, seconds = part.strip().partition(":")
        try:
            step = (int(users), float(seconds))
        except ValueError:
            step = (0, 0.0)
        if not sep or step[0] < 1 or step[1] <= 0:
            raise ConfigError(f"AUTHBENCH_STEPS: {part!r} is not users:seconds (both positive)")
        steps.append(step)
    return tuple(steps)


@dataclass(frozen=True, kw_only=True)
class LoadSettings:
    """The load configuration, read once from the environment."""

    scenario: str = "browse"
    """Name of the task mix, a key of SCENARIOS."""
    users: int = 1000
    """Size of the user directory; simulated user i logs in as ``user{(offset + i) % users}``."""
    offset: int = 0
    """First directory index used by this process (a worker adds its index × `stride`)."""
    stride: int = 0
    """Directory indexes set aside for each worker of a distributed run."""
    rate: float = 1.0
    """Tasks per second per simulated user; 0 means back-to-back tasks (capacity runs)."""
    steps: tuple[tuple[int, float], ...] = ()
    """Step load as (users, seconds) pairs; empty means no shape (Locust's -u/-r/--run-time)."""
    records: Path | None = None
    """Where to write the per-request records; None records nothing."""
    records_name: str = ""
    """`records` relative to the results root, for workers that keep records elsewhere."""

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> LoadSettings:
        """Return the settings in `env`; raises ConfigError for an invalid value."""
        scenario = env.get("AUTHBENCH_SCENARIO", "browse")
        if scenario not in SCENARIOS:
            known = ", ".join(SCENARIOS)
            raise ConfigError(f"AUTHBENCH_SCENARIO={scenario!r} is unknown; use one of: {known}")
        users = _number(env, "AUTHBENCH_USERS", "1000", int)
        if users < 1:
            raise ConfigError("AUTHBENCH_USERS must be at least 1")
        records = env.get("AUTHBENCH_RECORDS")
        steps = env.get("AUTHBENCH_STEPS", "").strip()
        return cls(
            scenario=scenario,
            users=users,
            offset=_number(env, "AUTHBENCH_USER_OFFSET", "0", int),
            stride=_number(env, "AUTHBENCH_USER_STRIDE", "0", int),
            rate=_number(env, "AUTHBENCH_USER_RATE", "1", float),
            steps=parse_steps(steps) if steps else (),
            records=Path(records) if records else None,
            records_name=env.get("AUTHBENCH_RECORDS_NAME", ""),
        )

    def for_worker(self, index: int, records_dir: str | None) -> LoadSettings:
        """Return these settings as worker `index` of a distributed run uses them.

        Its users start at `offset + index × stride`; its records go beside `records` as
        ``requests-w<index>.csv.gz``, or under `records_dir` at `records_name` when given.
        """
        records = self.records
        if records is not None:
            if records_dir and self.records_name:
                records = Path(records_dir) / self.records_name
            stem = records.name.removesuffix(".gz").removesuffix(".csv")
            records = records.with_name(f"{stem}-w{index}.csv.gz")
        return replace(self, offset=self.offset + index * self.stride, records=records)


@dataclass(frozen=True, slots=True)
class Credential:
    """What a login or refresh handed the client, in the form it is presented again."""

    cookies: tuple[tuple[str, str, str], ...] = ()
    """(name, value, path) of each credential cookie."""
    access_token: str = ""
    refresh_token: str = ""
    csrf: str = ""


@dataclass(frozen=True, slots=True)
class Presented:
    """The headers (and JSON body) that present a credential, and the credential's size."""

    headers: dict[str, str] = field(default_factory=dict)
    body: dict[str, str] | None = None
    credential_bytes: int = 0

    @property
    def context(self) -> dict[str, int]:
        """Return the request context the records listener reads the credential size from."""
        return {"credential_bytes": self.credential_bytes}


_NOTHING = Presented()
_user_numbers = itertools.count()


# --- tasks: plain functions of the user, weighted per scenario ---


def read_me(user: AuthUser) -> None:
    """GET /me with the standing credential; log in again first if it has none (or died)."""
    if user.credential is None:
        user.credential = user.login()
    elif not user.me(user.credential):
        user.credential = None


def login_me_logout(user: AuthUser) -> None:
    """A whole short visit with a fresh credential; the standing one is left alone."""
    credential = user.login()
    if credential is not None and user.me(credential):
        user.logout(credential)


def refresh_me(user: AuthUser) -> None:
    """Rotate the standing credential, then use the new one once."""
    if user.credential is None:
        user.credential = user.login()
        return
    user.credential = user.refresh(user.credential)
    if user.credential is not None and not user.me(user.credential):
        user.credential = None


def read_public(user: AuthUser) -> None:
    """GET /public."""
    user.public()


@dataclass(frozen=True)
class Scenario:
    """A weighted task mix, and whether each user logs in once at start."""

    tasks: dict[Callable[[AuthUser], None], int]
    standing_login: bool = True

    def task_list(self) -> list[TaskSet | Callable[..., Any]]:
        """Return the tasks repeated by weight, the form Locust picks from at random."""
        return [task for task, weight in self.tasks.items() for _ in range(weight)]


SCENARIOS: dict[str, Scenario] = {
    "browse": Scenario({read_me: 1}),
    "login": Scenario({login_me_logout: 1}, standing_login=False),
    "refresh": Scenario({refresh_me: 1}),
    "mixed": Scenario({read_me: 90, login_me_logout: 4, refresh_me: 4, read_public: 2}),
}

SETTINGS = LoadSettings.from_env(os.environ)


def _fail(response: ResponseContextManager, reason: str) -> None:
    """Count `response` as a failure with `reason`, whatever its status."""
    response.failure(reason)  # type: ignore[no-untyped-call]


def _json(response: ResponseContextManager, status: int) -> dict[str, Any] | None:
    """Return the JSON object of a response with `status`, or mark it failed and return None."""
    if response.status_code != status:
        _fail(response, f"expected {status}, got {response.status_code}")
        return None
    try:
        body = json.loads(response.content or b"")
    except FAILURE_EXCEPTIONS as exc:
        # The body broke off mid-read; raised out of the `with`, the request would go unreported.
        _fail(response, f"body unreadable: {exc!r}")
        return None
    except ValueError:
        body = None
    if not isinstance(body, dict):
        _fail(response, "body is not a JSON object")
        return None
    return body


class AuthUser(FastHttpUser):
    """Logs in as one directory user and runs the scenario's tasks with its credential.

    Cookies are never handled by Locust's jar: each subclass presents exactly its credential.
    """

    abstract = True
    tasks = SCENARIOS[SETTINGS.scenario].task_list()
    wait_time = poisson(SETTINGS.rate) if SETTINGS.rate > 0 else constant(0)
    credential_name = ""
    """What a successful login must hand back, for failure messages."""

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        # A jar would send whatever the server set; the benchmark sends the credential only.
        self.client.client.cookiejar = None
        k = (SETTINGS.offset + next(_user_numbers)) % SETTINGS.users
        self.username, self.password = f"user{k}", f"secret-{k}"
        self.credential: Credential | None = None

    def on_start(self) -> None:
        """Log in once, unless the scenario's tasks log in themselves."""
        if SCENARIOS[SETTINGS.scenario].standing_login:
            self.credential = self.login()

    # --- the contract, one helper per endpoint; each returns None when it failed ---

    def login(self) -> Credential | None:
        """POST /login; return the new credential, or None (request counted as failed)."""
        payload = {"username": self.username, "password": self.password}
        with self.client.post(
            "/login", json=payload, name="/login", catch_response=True, context=_NOTHING.context
        ) as response:
            body = _json(response, 200)
            if body is None:
                return None
            credential = self.credential_from(response, body, Credential())
            if credential is None:
                _fail(response, f"login 200 without {self.credential_name}")
            elif not self._is_me(body.get("user")):
                _fail(response, "login 200 for another user")
            else:
                return credential
        return None

    def me(self, credential: Credential) -> bool:
        """GET /me; return whether it answered 200 with this user's profile."""
        sent = self.present(credential, "/me", post=False)
        with self.client.get(
            "/me", name="/me", headers=sent.headers, catch_response=True, context=sent.context
        ) as response:
            body = _json(response, 200)
            if body is None:
                return False
            if not self._is_me(body):
                _fail(response, f"/me answered for {body.get('username')!r}")
                return False
        return True

    def logout(self, credential: Credential) -> bool:
        """POST /logout; return whether it answered 204."""
        sent = self.present(credential, "/logout", post=True)
        with self.client.post(
            "/logout",
            name="/logout",
            headers=sent.headers,
            catch_response=True,
            context=sent.context,
        ) as response:
            if response.status_code != 204:
                _fail(response, f"expected 204, got {response.status_code}")
                return False
        return True

    def refresh(self, credential: Credential) -> Credential | None:
        """POST /refresh; return the rotated credential, or None (request counted as failed)."""
        sent = self.present(credential, "/refresh", post=True)
        with self.client.post(
            "/refresh",
            json=sent.body,
            name="/refresh",
            headers=sent.headers,
            catch_response=True,
            context=sent.context,
        ) as response:
            body = _json(response, 200)
            if body is None:
                return None
            renewed = self.credential_from(response, body, credential)
            if renewed is None or renewed == credential:
                _fail(response, f"refresh 200 without a new {self.credential_name}")
            elif not self._is_me(body.get("user")):
                _fail(response, "refresh 200 for another user")
            else:
                return renewed
        return None

    def public(self) -> None:
        """GET /public, the unauthenticated baseline."""
        with self.client.get(
            "/public", name="/public", catch_response=True, context=_NOTHING.context
        ) as response:
            body = _json(response, 200)
            if body is not None and body.get("status") != "ok":
                _fail(response, "/public without status ok")

    def _is_me(self, user: object) -> bool:
        return isinstance(user, dict) and user.get("username") == self.username

    # --- what differs between transports ---

    def credential_from(
        self, response: FastResponse, body: dict[str, Any], previous: Credential
    ) -> Credential | None:
        """Return the credential a 200 login/refresh carries (over `previous`), or None."""
        raise NotImplementedError

    def present(self, credential: Credential, path: str, *, post: bool) -> Presented:
        """Return what a request to `path` sends to present `credential`."""
        raise NotImplementedError


class CookieUser(AuthUser):
    """Credential in cookies (sessions, JWT cookie transport); CSRF header on every POST."""

    credential_name = "credential cookie and csrf_token"

    def credential_from(
        self, response: FastResponse, body: dict[str, Any], previous: Credential
    ) -> Credential | None:
        """Return `previous` updated by the Set-Cookie headers, or None if it holds none."""
        cookies = {name: (value, path) for name, value, path in previous.cookies}
        for header in response.headers.getlist("set-cookie") if response.headers else ():
            name, value, path = _parse_set_cookie(header)
            if value:
                cookies[name] = (value, path)
            else:
                cookies.pop(name, None)  # Max-Age=0 with an empty value clears it
        csrf = body.get("csrf_token")
        if not isinstance(csrf, str) or not csrf or not cookies.keys() & CREDENTIAL_COOKIES:
            return None
        return replace(
            previous, cookies=tuple((n, v, p) for n, (v, p) in cookies.items()), csrf=csrf
        )

    def present(self, credential: Credential, path: str, *, post: bool) -> Presented:
        """Return the Cookie header a browser would send to `path`, plus CSRF on POST."""
        # Cookie path-matching as a browser does it: refresh_token (Path=/refresh) only there.
        cookie = "; ".join(f"{n}={v}" for n, v, p in credential.cookies if path.startswith(p))
        headers = {"Cookie": cookie} if cookie else {}
        if post:
            headers[CSRF_HEADER] = credential.csrf
        return Presented(headers=headers, credential_bytes=len(cookie))


class BearerUser(AuthUser):
    """JWT in ``Authorization: Bearer``; refresh token in the JSON body; never a cookie."""

    credential_name = "access_token and refresh_token"

    def credential_from(
        self, response: FastResponse, body: dict[str, Any], previous: Credential
    ) -> Credential | None:
        """Return the token pair in the body, or None if either token is missing."""
        access, refresh = body.get("access_token"), body.get("refresh_token")
        if not isinstance(access, str) or not access or not isinstance(refresh, str):
            return None
        return Credential(access_token=access, refresh_token=refresh)

    def present(self, credential: Credential, path: str, *, post: bool) -> Presented:
        """Return the Authorization header, or for /refresh the JSON body with the refresh token."""
        if path == "/refresh":
            token = credential.refresh_token
            # The refresh token travels in the body: it is the credential this request presents.
            return Presented(body={"refresh_token": token}, credential_bytes=len(token))
        value = f"Bearer {credential.access_token}"
        return Presented(headers={"Authorization": value}, credential_bytes=len(value))


def _parse_set_cookie(header: str) -> tuple[str, str, str]:
    """Return (name, value, path) of one Set-Cookie header; path defaults to ``/``."""
    pair, *attributes = header.split(";")
    name, _, value = pair.partition("=")
    path = "/"
    for attribute in attributes:
        key, _, val = attribute.strip().partition("=")
        if key.lower() == "path" and val:
            path = val
    return name.strip(), value.strip().strip('"'), path


if SETTINGS.steps:
    # Defined only when asked for: Locust always runs a shape class it finds in the module.

    class StepLoad(LoadTestShape):
        """Each step's user count at once (spawn rate = users), then stop."""

        def tick(self) -> tuple[int, float] | None:
            """Return (users, spawn rate) of the current step, or None after the last."""
            elapsed: float = self.get_run_time()  # type: ignore[no-untyped-call]
            for users, seconds in SETTINGS.steps:
                if elapsed < seconds:
                    return users, float(users)
                elapsed -= seconds
            return None


# --- per-request records ---

_USER_AGENT = "User-Agent"
_DEFAULT_USER_AGENT = str(HTTPClient.DEFAULT_HEADERS[_USER_AGENT])
_NO_TIMING = ("", "", "", "")


def _server_timing(value: object) -> tuple[str, str, str, str]:
    """Return the auth, store, pw and issue durations (ms, as the server wrote them) or ""."""
    if not isinstance(value, str):
        return _NO_TIMING
    found: dict[str, str] = {}
    for part in value.split(","):
        metric, _, dur = part.partition(";dur=")
        found[metric.strip()] = dur
    get = found.get
    return get("auth", ""), get("store", ""), get("pw", ""), get("issue", "")


def _response_head_bytes(response: FastResponse) -> int:
    """Return the size of the status line and header fields as received (CRLFs included)."""
    raw = response._response
    # "HTTP/1.1 200 " + reason + CRLF; the version is always 8 characters.
    size = 15 + len(raw.status_message or "") if raw is not None else 0
    for name, value in response.headers.items() if response.headers else ():
        size += len(name) + len(value) + 4  # ": " and CRLF
    return size + 2


def estimated_head_bytes(request: Any) -> int:
    """Return the size of the head geventhttpclient builds for `request` (a FastRequest).

    Used only when no head was sent (connection errors); it mirrors
    ``HTTPClient._build_request``: request line, Host, the merged headers (User-Agent default,
    Locust's Accept-Encoding, ours), Content-Length for a body or an empty POST, final CRLF.
    """
    headers = request.headers
    size = len(request.method) + len(request.url_split.quoted_uri) + 12  # 2 spaces, HTTP/1.1, CRLF
    size += 8 + len(request.host)  # "Host: " … CRLF
    for name, value in headers.items():
        size += len(name) + len(str(value)) + 4
    if _USER_AGENT not in headers:
        size += len(_USER_AGENT) + len(_DEFAULT_USER_AGENT) + 4
    payload = request.payload
    if payload and "content-length" not in headers:
        length = len(payload.encode() if isinstance(payload, str) else payload)
        size += 18 + len(str(length))  # "Content-Length: " … CRLF
    elif not payload and request.method in ("POST", "PUT", "PATCH"):
        size += 19
    return size + 2


class RequestRecords:
    """One row per request, kept in memory and written as gzip CSV when Locust exits."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.rows: list[tuple[object, ...]] = []

    def on_request(
        self,
        request_type: str,
        name: str,
        response_time: float,
        response_length: int,
        response: FastResponse,
        context: dict[str, Any],
        exception: BaseException | None,
        start_time: float,
        **_kw: Any,
    ) -> None:
        """Append the request's row (a listener of ``events.request``)."""
        headers = response.headers
        sent = getattr(response, "_sent_request", None)
        if headers is None:
            received, timing = response_length, _NO_TIMING
        else:
            received = response_length + _response_head_bytes(response)
            timing = _server_timing(headers.get("server-timing"))
        self.rows.append(
            (
                start_time,
                name,
                request_type,
                response.status_code or 0,
                0 if exception else 1,
                response_time,
                len(sent) if sent else estimated_head_bytes(response.request),
                context.get("credential_bytes", 0),
                received,
                *timing,
                str(exception)[:MAX_ERROR_CHARS].replace("\n", " ") if exception else "",
            )
        )

    def write(self, **_kw: Any) -> None:
        """Write all rows to the path (a listener of ``events.quit``), atomically."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_name(self.path.name + ".partial")
        # Level 6: most of level 9's size at a fraction of its time, paid while Locust exits.
        with gzip.open(partial, "wt", compresslevel=6, encoding="utf-8", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(RECORD_COLUMNS)
            writer.writerows(self.rows)
        os.replace(partial, self.path)


_records: RequestRecords | None = None


def _record_to(environment: Environment, path: Path) -> None:
    """Record every request of this process, to be written to `path` when Locust exits."""
    global _records
    if _records is not None:
        _records.path = path
        return
    _records = RequestRecords(path)
    environment.events.request.add_listener(_records.on_request)  # type: ignore[no-untyped-call]
    # `quit` fires after the runner stopped every user, just before the process exits,
    # so no request can complete after the file is written (`quitting` fires before).
    environment.events.quit.add_listener(_records.write)  # type: ignore[no-untyped-call]


def _record_requests(environment: Environment, **_kw: Any) -> None:
    # A master sends no requests (its file would clobber a worker's); a worker learns where
    # to write only when the master's first spawn message arrives (`_start_worker_test`).
    if SETTINGS.records is None or isinstance(environment.runner, MasterRunner | WorkerRunner):
        return
    _record_to(environment, SETTINGS.records)


# --- distributed runs: the master's load settings travel to each worker with Locust ---

# What a master forwards; the step shape is not among them because it runs on the master.
FORWARDED = (
    "AUTHBENCH_SCENARIO",
    "AUTHBENCH_USERS",
    "AUTHBENCH_USER_OFFSET",
    "AUTHBENCH_USER_STRIDE",
    "AUTHBENCH_USER_RATE",
    "AUTHBENCH_RECORDS",
    "AUTHBENCH_RECORDS_NAME",
)


def _add_options(parser: Any, **_kw: Any) -> None:
    # Options that a locustfile adds are sent by the master to every worker with each spawn
    # message: Locust's own protocol, so workers need no shared environment or files.
    for name in FORWARDED:
        parser.add_argument(
            "--" + name.lower().replace("_", "-"),
            default=os.environ.get(name, ""),
            include_in_web_ui=False,
            help=argparse.SUPPRESS,
        )


def _use_scenario(settings: LoadSettings) -> None:
    """Give the concrete users the tasks and pacing of `settings` (set at import otherwise)."""
    tasks = SCENARIOS[settings.scenario].task_list()
    wait_time = poisson(settings.rate) if settings.rate > 0 else constant(0)
    for user_class in (CookieUser, BearerUser):
        user_class.tasks = tasks
        setattr(user_class, "wait_time", wait_time)  # noqa: B010 (a method, assigned)


def _start_worker_test(environment: Environment, **_kw: Any) -> None:
    """On a worker, adopt the master's forwarded settings before the first user spawns."""
    global SETTINGS
    runner = environment.runner
    if not isinstance(runner, WorkerRunner) or environment.parsed_options is None:
        return
    options = vars(environment.parsed_options)
    forwarded = {n: str(options[n.lower()]) for n in FORWARDED if options.get(n.lower())}
    SETTINGS = LoadSettings.from_env(forwarded).for_worker(
        runner.worker_index, os.environ.get("AUTHBENCH_RECORDS_DIR")
    )
    _use_scenario(SETTINGS)
    if SETTINGS.records is not None:
        _record_to(environment, SETTINGS.records)


events.init.add_listener(_record_requests)  # type: ignore[no-untyped-call]
events.init_command_line_parser.add_listener(_add_options)  # type: ignore[no-untyped-call]
events.test_start.add_listener(_start_worker_test)  # type: ignore[no-untyped-call]
