"""The app factory: routes registered once, one wrapper mapping errors to JSON responses."""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial

from aiohttp import web

from servers.backends import BACKENDS, Backend
from servers.credentials import MAX_BODY_BYTES, Grant, read_json
from servers.errors import AuthError, MalformedRequest, StoreUnavailable, Throttled, Unauthenticated
from servers.settings import Settings
from servers.timing import ServerTiming
from servers.users import LoginThrottle, UserDirectory

SETTINGS: web.AppKey[Settings] = web.AppKey("settings", Settings)
USERS: web.AppKey[UserDirectory] = web.AppKey("users", UserDirectory)
BACKEND: web.AppKey[Backend] = web.AppKey("backend", Backend)
THROTTLE: web.AppKey[LoginThrottle] = web.AppKey("throttle", LoginThrottle)
MAX_FIELD_LENGTH = 256
RETRY_AFTER_SECONDS = "1"

log = logging.getLogger("authbench.server")
_dumps = partial(json.dumps, separators=(",", ":"))
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Endpoint = Callable[[web.Request, ServerTiming], Awaitable[web.Response]]


def create_app(settings: Settings) -> web.Application:
    """Return the application for `settings`; its backend opens in a cleanup context."""
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app[SETTINGS] = settings
    app[USERS] = UserDirectory(
        settings.users, time_cost=settings.pw_time_cost, memory_kib=settings.pw_memory_kib
    )
    app[THROTTLE] = LoginThrottle(
        max_failures=settings.login_max_failures, window=settings.login_window
    )
    app.cleanup_ctx.append(_backend_ctx)
    for (method, path), handler in ROUTES.items():
        app.router.add_route(method, path, endpoint(handler))
    # Registered last, so it answers only what no route above matched (404 or 405 in JSON).
    app.router.add_route("*", "/{tail:.*}", endpoint(unrouted))
    return app


async def _backend_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    async with BACKENDS[settings.backend](settings, app[USERS]) as backend:
        app[BACKEND] = backend
        yield


def _json(body: object, status: int = 200) -> web.Response:
    return web.Response(text=_dumps(body), status=status, content_type="application/json")


def _error_response(request: web.Request, exc: AuthError) -> web.Response:
    response = _json({"error": exc.code, "detail": exc.detail}, exc.status)
    if isinstance(exc, Unauthenticated):
        backend = request.app.get(BACKEND)
        response.headers["WWW-Authenticate"] = backend.challenge if backend else "Bearer"
    elif isinstance(exc, Throttled):
        response.headers["Retry-After"] = str(exc.retry_after)
    elif isinstance(exc, StoreUnavailable):
        response.headers["Retry-After"] = RETRY_AFTER_SECONDS
    return response


def endpoint(handler: Endpoint) -> Handler:
    """Return `handler` wrapped to time the request and turn every error into a JSON body.

    A wrapper rather than an aiohttp middleware: middlewares add two coroutine layers to
    every request, which the hot path measurably pays for.
    """

    @functools.wraps(handler)
    async def wrapped(request: web.Request) -> web.StreamResponse:
        timing = ServerTiming()
        try:
            response = await handler(request, timing)
        except AuthError as exc:
            response = _error_response(request, exc)
        except web.HTTPException as exc:
            code = exc.reason.lower().replace(" ", "_")
            response = _json({"error": code, "detail": exc.reason}, exc.status)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("unhandled error on %s %s", request.method, request.path)
            response = _json({"error": "internal_error", "detail": "unexpected server error"}, 500)
        response.headers["Server-Timing"] = timing.header()
        return response

    return wrapped


async def unrouted(request: web.Request, timing: ServerTiming) -> web.Response:
    """Any other request: 405 with Allow on a known path, else 404."""
    allowed = sorted(method for method, path in ROUTES if path == request.path)
    if not allowed:
        return _json({"error": "not_found", "detail": "Not Found"}, 404)
    if "GET" in allowed:
        allowed.append("HEAD")
    response = _json({"error": "method_not_allowed", "detail": "Method Not Allowed"}, 405)
    response.headers["Allow"] = ", ".join(sorted(allowed))
    return response


def _apply(response: web.Response, grant: Grant, settings: Settings) -> web.Response:
    for c in grant.cookies:
        response.set_cookie(
            c.name,
            c.value,
            path=c.path,
            max_age=c.max_age,
            httponly=True,
            samesite="Lax",
            secure=settings.cookie_secure,
        )
    response.headers.update(grant.headers)
    return response


def _field(body: dict[str, object], name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value or len(value) > MAX_FIELD_LENGTH:
        raise MalformedRequest(f"{name} must be a non-empty string of at most 256 characters")
    try:
        # JSON escapes can spell lone surrogates ("\ud800"), which no hash or store can encode.
        value.encode()
    except UnicodeEncodeError:
        raise MalformedRequest(f"{name} must be valid Unicode text") from None
    return value


async def login(request: web.Request, timing: ServerTiming) -> web.Response:
    """POST /login: verify the password, then let the backend issue a credential."""
    body = await read_json(request)
    username, password = _field(body, "username"), _field(body, "password")
    throttle = request.app[THROTTLE]
    throttle.attempt(username)
    loop = asyncio.get_running_loop()
    with timing.measure("pw"):
        user = await loop.run_in_executor(None, request.app[USERS].verify, username, password)
    throttle.succeeded(username)
    with timing.measure("issue"):
        grant = await request.app[BACKEND].login(user, timing)
    return _apply(_json({"user": user.view(), **grant.body}), grant, request.app[SETTINGS])


async def me(request: web.Request, timing: ServerTiming) -> web.Response:
    """GET /me: the hot path, one authentication and a small JSON body."""
    with timing.measure("auth"):
        user = await request.app[BACKEND].authenticate(request, timing)
    return _json(user)


async def logout(request: web.Request, timing: ServerTiming) -> web.Response:
    """POST /logout: 204 once the credential is dead."""
    with timing.measure("auth"):
        grant = await request.app[BACKEND].logout(request, timing)
    return _apply(web.Response(status=204), grant, request.app[SETTINGS])


async def refresh(request: web.Request, timing: ServerTiming) -> web.Response:
    """POST /refresh: a new credential for the old one."""
    with timing.measure("auth"):
        user, grant = await request.app[BACKEND].refresh(request, timing)
    return _apply(_json({"user": user, **grant.body}), grant, request.app[SETTINGS])


async def public(request: web.Request, timing: ServerTiming) -> web.Response:
    """GET /public: no authentication; the baseline every chart subtracts."""
    return _json({"status": "ok"})


async def health(request: web.Request, timing: ServerTiming) -> web.Response:
    """GET /health: 200 with the mechanism's properties, 503 while its store is down."""
    backend = request.app[BACKEND]
    properties = await backend.health()
    return _json({"status": "ok", "backend": backend.name, **properties})


async def jwks(request: web.Request, timing: ServerTiming) -> web.Response:
    """GET /.well-known/jwks.json: public keys of asymmetric JWT configurations, else 404."""
    keys = request.app[BACKEND].jwks()
    if keys is None:
        raise web.HTTPNotFound(reason="No Published Keys")
    return _json(keys)


ROUTES: dict[tuple[str, str], Endpoint] = {
    ("POST", "/login"): login,
    ("GET", "/me"): me,
    ("POST", "/logout"): logout,
    ("POST", "/refresh"): refresh,
    ("GET", "/public"): public,
    ("GET", "/health"): health,
    ("GET", "/.well-known/jwks.json"): jwks,
}
