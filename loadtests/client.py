"""A small HTTP client speaking the authbench contract, for verification and tests."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import Any

import aiohttp
import jwt

CSRF_HEADER = "X-CSRF-Token"


@dataclass(frozen=True)
class Credential:
    """What a login or refresh handed back, whichever the transport."""

    cookies: dict[str, str] = field(default_factory=dict)
    access_token: str | None = None
    refresh_token: str | None = None
    csrf: str | None = None

    def headers(self, *, csrf: bool = True) -> dict[str, str]:
        """Return the headers that present this credential (and its CSRF token)."""
        h: dict[str, str] = {}
        if self.access_token:
            h["Authorization"] = f"Bearer {self.access_token}"
        if self.cookies:
            h["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        if csrf and self.csrf:
            h[CSRF_HEADER] = self.csrf
        return h

    @property
    def session_id(self) -> str | None:
        """The session cookie's value, for session backends."""
        return self.cookies.get("session_id")

    def claims(self, which: str = "access") -> dict[str, Any]:
        """Return the unverified claims of the access or refresh token (cookie or body)."""
        token = self.access_token if which == "access" else self.refresh_token
        token = token or self.cookies.get(f"{which}_token")
        if not token:
            return {}
        claims: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
        return claims


@dataclass(frozen=True)
class Reply:
    """A response, read whole."""

    status: int
    headers: dict[str, str]
    set_cookies: dict[str, dict[str, str]]
    body: Any

    @property
    def server_timing(self) -> dict[str, float]:
        """Return Server-Timing metrics as {name: milliseconds}."""
        out: dict[str, float] = {}
        for part in self.headers.get("Server-Timing", "").split(","):
            name, _, dur = part.strip().partition(";dur=")
            if name and dur:
                out[name] = float(dur)
        return out


class AuthClient:
    """Calls /login, /me, /logout, /refresh with explicit credentials (no cookie jar)."""

    def __init__(self, session: aiohttp.ClientSession, base_url: str) -> None:
        self._http = session
        self.base = base_url.rstrip("/")

    async def request(
        self,
        method: str,
        path: str,
        *,
        headers: dict[str, str] | None = None,
        json_body: Any = None,
        data: bytes | str | None = None,
    ) -> Reply:
        """Send one request and return its Reply."""
        h = dict(headers or {})
        if json_body is not None:
            data = json.dumps(json_body)
            h.setdefault("Content-Type", "application/json")
        async with self._http.request(method, self.base + path, headers=h, data=data) as r:
            raw = await r.read()
            cookies = {
                name: {
                    "value": m.value,
                    **{k: str(v) for k, v in m.items() if v},
                }
                for name, m in r.cookies.items()
            }
            body: Any = None
            if raw:
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = raw.decode(errors="replace")
            return Reply(r.status, dict(r.headers), cookies, body)

    async def login(self, username: str, password: str) -> tuple[Reply, Credential | None]:
        """POST /login; return the reply and, on 200, the credential it carries."""
        reply = await self.request(
            "POST", "/login", json_body={"username": username, "password": password}
        )
        return reply, (credential_from(reply) if reply.status == 200 else None)

    async def me(self, cred: Credential | None) -> Reply:
        """GET /me with the credential."""
        return await self.request("GET", "/me", headers=cred.headers() if cred else None)

    async def logout(self, cred: Credential, *, csrf: bool = True) -> Reply:
        """POST /logout with the credential."""
        return await self.request("POST", "/logout", headers=cred.headers(csrf=csrf))

    async def refresh(self, cred: Credential, *, csrf: bool = True) -> tuple[Reply, Credential]:
        """POST /refresh; return the reply and the credential to use next (old one on failure)."""
        if cred.refresh_token:
            reply = await self.request(
                "POST", "/refresh", json_body={"refresh_token": cred.refresh_token}
            )
        else:
            reply = await self.request("POST", "/refresh", headers=cred.headers(csrf=csrf))
        if reply.status != 200:
            return reply, cred
        return reply, credential_from(reply, previous=cred)


def credential_from(reply: Reply, previous: Credential | None = None) -> Credential:
    """Return the credential in a 200 login/refresh reply, carried over from `previous`."""
    body = reply.body if isinstance(reply.body, dict) else {}
    cookies = dict(previous.cookies) if previous else {}
    for name, attrs in reply.set_cookies.items():
        if attrs["value"]:
            cookies[name] = attrs["value"]
        else:
            cookies.pop(name, None)
    base = previous or Credential()
    return replace(
        base,
        cookies=cookies,
        access_token=body.get("access_token"),
        refresh_token=body.get("refresh_token"),
        csrf=body.get("csrf_token") or base.csrf,
    )
