"""Strict reading of what a request carries: cookies, bearer tokens, CSRF tokens, JSON bodies."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, make_mocked_request
from multidict import CIMultiDict
from pytest_aiohttp import AiohttpClient

from servers.credentials import (
    CSRF_HEADER,
    MAX_BODY_BYTES,
    csrf_token,
    read_bearer,
    read_cookie,
    read_json,
    require_csrf,
)
from servers.errors import AmbiguousCredential, AuthError, CsrfFailed

SECRET = b"k" * 32
EXPECTED_CSRF = csrf_token(SECRET, "session-1")
OTHER_CSRF = csrf_token(SECRET, "session-2")
Client = TestClient[web.Request, web.Application]


def request_with(*headers: tuple[str, str]) -> web.Request:
    """A GET request carrying exactly these header lines, repeats included."""
    return make_mocked_request("GET", "/me", headers=CIMultiDict(headers))


# --- read_cookie --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "header",
    [
        "session_id=abc",
        "theme=dark; session_id=abc; lang=en",
        "my_session_id=zzz; session_id=abc",
        "session_id_v2=zzz;session_id=abc",
        "  session_id=abc  ",
    ],
)
def test_read_cookie_finds_the_one_value(header: str) -> None:
    assert read_cookie(request_with(("Cookie", header)), "session_id") == "abc"


@pytest.mark.parametrize("headers", [(), (("Cookie", "theme=dark; session=abc"),)])
def test_read_cookie_is_none_without_the_cookie(headers: tuple[tuple[str, str], ...]) -> None:
    assert read_cookie(request_with(*headers), "session_id") is None


def test_a_cookie_repeated_in_one_header_is_ambiguous() -> None:
    request = request_with(("Cookie", "session_id=abc; session_id=def"))
    with pytest.raises(AmbiguousCredential):
        read_cookie(request, "session_id")


def test_a_cookie_repeated_across_two_headers_is_ambiguous() -> None:
    request = request_with(("Cookie", "session_id=abc"), ("Cookie", "session_id=abc"))
    with pytest.raises(AmbiguousCredential):
        read_cookie(request, "session_id")


def test_other_cookies_in_a_second_header_are_fine() -> None:
    request = request_with(("Cookie", "session_id=abc"), ("Cookie", "theme=dark"))
    assert read_cookie(request, "session_id") == "abc"


# --- read_bearer --------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER", "bEaReR"])
def test_read_bearer_scheme_is_case_insensitive(scheme: str) -> None:
    assert read_bearer(request_with(("Authorization", f"{scheme} tok.en.sig"))) == "tok.en.sig"


def test_read_bearer_keeps_the_token_exactly() -> None:
    token = "eyJhbGciOiJIUzI1NiJ9.e30.AbC-_xyz"
    assert read_bearer(request_with(("Authorization", f"Bearer {token}"))) == token


@pytest.mark.parametrize(
    "value",
    ["Basic dXNlcjpwYXNz", "Token abc", "Bearerabc", "Bearer", "Bearer ", "Bearer    ", "abc"],
)
def test_read_bearer_is_none_for_anything_but_a_bearer_token(value: str) -> None:
    assert read_bearer(request_with(("Authorization", value))) is None


def test_read_bearer_is_none_without_an_authorization_header() -> None:
    assert read_bearer(request_with()) is None


@pytest.mark.parametrize(
    "second", ["Bearer abc", "Bearer other", "Basic dXNlcjpwYXNz"], ids=["same", "other", "basic"]
)
def test_two_authorization_headers_are_ambiguous(second: str) -> None:
    request = request_with(("Authorization", "Bearer abc"), ("Authorization", second))
    with pytest.raises(AmbiguousCredential):
        read_bearer(request)


# --- CSRF ---------------------------------------------------------------------------------


def test_csrf_token_is_deterministic() -> None:
    assert csrf_token(SECRET, "session-1") == csrf_token(SECRET, "session-1")


def test_csrf_token_is_bound_to_the_credential_and_the_secret() -> None:
    token = csrf_token(SECRET, "session-1")
    assert token != csrf_token(SECRET, "session-2")
    assert token != csrf_token(b"j" * 32, "session-1")


def test_csrf_token_is_url_safe_and_carries_no_credential() -> None:
    token = csrf_token(SECRET, "session-1")
    assert len(token) == 32
    assert set(token) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    assert "session-1" not in token


def test_require_csrf_accepts_the_matching_header() -> None:
    require_csrf(request_with((CSRF_HEADER, EXPECTED_CSRF)), EXPECTED_CSRF)


@pytest.mark.parametrize(
    "headers",
    [
        (),
        ((CSRF_HEADER, ""),),
        ((CSRF_HEADER, "wrong"),),
        ((CSRF_HEADER, OTHER_CSRF),),
        ((CSRF_HEADER, EXPECTED_CSRF), (CSRF_HEADER, EXPECTED_CSRF)),
    ],
    ids=["missing", "empty", "wrong", "another-credentials", "sent-twice"],
)
def test_require_csrf_refuses_a_missing_wrong_or_repeated_header(
    headers: tuple[tuple[str, str], ...],
) -> None:
    with pytest.raises(CsrfFailed):
        require_csrf(request_with(*headers), EXPECTED_CSRF)


# --- read_json, through a real HTTP server ------------------------------------------------


async def echo_json(request: web.Request) -> web.Response:
    """Echo the body read_json returns, or the error's code with its status."""
    declared = {"X-Declared-Length": str(request.content_length)}
    try:
        body = await read_json(request)
    except AuthError as exc:
        return web.json_response({"error": exc.code}, status=exc.status, headers=declared)
    return web.json_response(body, headers=declared)


@pytest.fixture
async def json_client(aiohttp_client: AiohttpClient) -> Client:
    """The smallest app that calls read_json, with the server's body limit."""
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app.router.add_post("/", echo_json)
    return await aiohttp_client(app)


async def post(client: Client, body: bytes, content_type: str | None) -> tuple[int, object]:
    headers = {"Content-Type": content_type} if content_type else {}
    async with client.post("/", data=body, headers=headers) as r:
        return r.status, await r.json()


@pytest.mark.parametrize("content_type", ["application/json", "application/json; charset=utf-8"])
async def test_read_json_returns_the_object(json_client: Client, content_type: str) -> None:
    status, body = await post(json_client, b'{"username": "user1", "n": [1]}', content_type)
    assert (status, body) == (200, {"username": "user1", "n": [1]})


@pytest.mark.parametrize(
    "content_type",
    [None, "text/plain", "application/x-www-form-urlencoded", "application/jsonx", "text/json"],
)
async def test_read_json_refuses_other_content_types_with_415(
    json_client: Client, content_type: str | None
) -> None:
    status, body = await post(json_client, b'{"a": 1}', content_type)
    assert (status, body) == (415, {"error": "unsupported_media_type"})


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"{",
        b"[1, 2]",
        b'"text"',
        b"null",
        b"42",
        b'{"a": "\xff"}',
        b"[" * 100_000,
        b'{"n": ' + b"9" * 5000 + b"}",
    ],
    ids=["empty", "truncated", "array", "string", "null", "number", "bad-utf8", "deep", "huge-int"],
)
async def test_read_json_refuses_anything_but_a_json_object_with_400(
    json_client: Client, raw: bytes
) -> None:
    status, body = await post(json_client, raw, "application/json")
    assert (status, body) == (400, {"error": "bad_request"})


def _object_of_size(size: int) -> bytes:
    raw = b'{"a": "' + b"x" * (size - 9) + b'"}'
    assert len(raw) == size
    return raw


async def test_a_body_of_exactly_the_limit_is_read(json_client: Client) -> None:
    status, body = await post(json_client, _object_of_size(MAX_BODY_BYTES), "application/json")
    assert status == 200 and isinstance(body, dict)


async def test_a_declared_length_over_the_limit_is_413(json_client: Client) -> None:
    raw = _object_of_size(MAX_BODY_BYTES + 1)
    async with json_client.post("/", data=raw, headers={"Content-Type": "application/json"}) as r:
        assert r.headers["X-Declared-Length"] == str(MAX_BODY_BYTES + 1)
        assert (r.status, await r.json()) == (413, {"error": "payload_too_large"})


async def test_a_chunked_body_over_the_limit_is_413(json_client: Client) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        raw = _object_of_size(MAX_BODY_BYTES + 1)
        for start in range(0, len(raw), 64 * 1024):
            yield raw[start : start + 64 * 1024]

    headers = {"Content-Type": "application/json"}
    async with json_client.post("/", data=chunks(), headers=headers) as r:
        assert r.headers["X-Declared-Length"] == "None"
        assert (r.status, await r.json()) == (413, {"error": "payload_too_large"})


async def test_a_chunked_body_under_the_limit_is_read(json_client: Client) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"user'
        yield b'name": "user1"}'

    headers = {"Content-Type": "application/json"}
    async with json_client.post("/", data=chunks(), headers=headers) as r:
        assert r.headers["X-Declared-Length"] == "None"
        assert (r.status, await r.json()) == (200, {"username": "user1"})
