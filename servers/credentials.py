"""Reading what a request carries, strictly: credentials, CSRF tokens, JSON bodies."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from servers.errors import (
    AmbiguousCredential,
    CsrfFailed,
    MalformedRequest,
    PayloadTooLarge,
    UnsupportedMediaType,
)

CSRF_HEADER = "X-CSRF-Token"
MAX_BODY_BYTES = 1024 * 1024


@dataclass(frozen=True, slots=True)
class CookieSpec:
    """A cookie to set (or, with `max_age=0` and an empty value, to clear)."""

    name: str
    value: str
    path: str = "/"
    max_age: int | None = None


@dataclass(frozen=True, slots=True)
class Grant:
    """What a login, refresh or logout hands the client besides the user."""

    body: dict[str, object] = field(default_factory=dict)
    cookies: tuple[CookieSpec, ...] = ()
    headers: dict[str, str] = field(default_factory=dict)


def read_cookie(request: web.Request, name: str) -> str | None:
    """Return the one value of cookie `name`, or None; raises AmbiguousCredential if repeated.

    Parsed by hand because `request.cookies` silently keeps one of several values.
    """
    headers = request.headers.getall("Cookie", ())
    found: str | None = None
    prefix = name + "="
    for header in headers:
        for part in header.split(";"):
            part = part.strip()
            if part.startswith(prefix):
                if found is not None:
                    raise AmbiguousCredential()
                found = part[len(prefix) :]
    return found


def read_bearer(request: web.Request) -> str | None:
    """Return the token of `Authorization: Bearer …`, or None; raises AmbiguousCredential."""
    values = request.headers.getall("Authorization", ())
    if not values:
        return None
    if len(values) > 1:
        raise AmbiguousCredential()
    scheme, _, token = values[0].partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


def csrf_token(secret: bytes, bound_to: str) -> str:
    """Return the CSRF token for a credential: an HMAC of its id, so no state is needed."""
    mac = hmac.new(secret, bound_to.encode(), hashlib.sha256).digest()[:24]
    return base64.urlsafe_b64encode(mac).decode()


def require_csrf(request: web.Request, expected: str) -> None:
    """Return if `X-CSRF-Token` equals `expected`; raises CsrfFailed otherwise."""
    values = request.headers.getall(CSRF_HEADER, ())
    # aiohttp keeps undecodable header bytes as surrogates, which encode() refuses; a CSRF
    # token is ASCII, so any other value is simply wrong (and an empty expectation never holds).
    if (
        not expected
        or len(values) != 1
        or not values[0].isascii()
        or not hmac.compare_digest(values[0].encode(), expected.encode())
    ):
        raise CsrfFailed()


async def read_json(request: web.Request) -> dict[str, Any]:
    """Return the body as a JSON object.

    Raises UnsupportedMediaType (415) unless Content-Type is application/json,
    PayloadTooLarge (413) over the limit, MalformedRequest (400) for anything else.
    """
    if request.content_type != "application/json":
        raise UnsupportedMediaType()
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise PayloadTooLarge()
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise PayloadTooLarge() from None
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        # ValueError covers bad JSON, bad UTF-8 and numbers past int's digit limit.
        raise MalformedRequest("the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise MalformedRequest("the body must be a JSON object")
    return body
