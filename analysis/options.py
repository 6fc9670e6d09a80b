"""What a configuration is, read from the manifest: its backend, options and store.

The manifest records only the options a configuration sets; the rest take the server's
defaults, written down here (`DEFAULTS`; a test keeps them equal to `python -m servers`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

SWEEP_PREFIXES = {"jwt-size-": "jwt-size"}
DEFAULTS: dict[str, Any] = {
    "alg": "HS256",
    "transport": "bearer",
    "extra-claims": 0,
    "refresh-store": "redis",
    "denylist-store": "redis",
    "access-ttl": 900.0,
    "refresh-ttl": 7 * 24 * 3600.0,
    "session-ttl": 1800.0,
    "sliding": False,
    "pool-size": 16,
    "pg-unlogged": False,
}
SESSION_STORES = {
    "session-file": "file",
    "session-postgres": "postgres",
    "session-redis": "redis",
    "session-memcached": "memcached",
}
STORE_NAMES = {
    "file": "local files",
    "postgres": "PostgreSQL",
    "redis": "Redis",
    "memcached": "memcached",
    "none": "none",
}
OPTION_COLUMNS = (
    "backend",
    "family",
    "alg",
    "transport",
    "extra_claims",
    "refresh_store",
    "denylist_store",
    "access_ttl_s",
    "refresh_ttl_s",
    "sliding",
    "pool_size",
    "store",
    "sweep",
)


def is_jwt(backend: str) -> bool:
    """Return whether `backend` issues JWTs (plain or with a denylist)."""
    return backend.startswith("jwt")


def config_options(name: str, config: Mapping[str, Any]) -> dict[str, Any]:
    """Return the options of one manifest configuration, defaults filled in.

    Keys are `OPTION_COLUMNS`: `family` is "session" or "jwt"; JWT-only options are None
    for sessions and session-only ones None for JWT; `store` is where the mechanism keeps
    state on the hot path ("file", "postgres", "redis", "memcached" or "none");
    `sweep` names the sweep a member belongs to (e.g. "jwt-size"), else None.
    """
    backend = str(config.get("backend", ""))
    server = {**DEFAULTS, **dict(config.get("server", {}) or {})}
    jwt = is_jwt(backend)
    sweep = next((s for prefix, s in SWEEP_PREFIXES.items() if name.startswith(prefix)), None)
    if jwt:
        store = server["denylist-store"] if backend == "jwt-denylist" else "none"
    else:
        store = SESSION_STORES.get(backend, "unknown")
    return {
        "backend": backend,
        "family": "jwt" if jwt else "session",
        "alg": str(server["alg"]) if jwt else None,
        "transport": str(server["transport"]) if jwt else "cookie",
        "extra_claims": int(server["extra-claims"]) if jwt else None,
        "refresh_store": str(server["refresh-store"]) if jwt else None,
        "denylist_store": str(server["denylist-store"]) if backend == "jwt-denylist" else None,
        "access_ttl_s": float(server["access-ttl"]) if jwt else None,
        "refresh_ttl_s": float(server["refresh-ttl"]) if jwt else None,
        "sliding": bool(server["sliding"]) if not jwt else None,
        "pool_size": int(server["pool-size"]),
        "store": store,
        "sweep": sweep,
    }


def store_name(kind: object) -> str:
    """Return the display name of a store kind ("redis" → "Redis")."""
    return STORE_NAMES.get(str(kind), str(kind))


def describe(options: Mapping[str, Any]) -> str:
    """Return a short human description, e.g. "JWT ES256, Bearer, refresh in Redis"."""
    backend = str(options.get("backend", ""))
    if options.get("family") != "jwt":
        text = f"server-side session in {store_name(options.get('store'))}"
        if options.get("sliding"):
            text += ", sliding expiry"
        return text
    parts = [f"JWT {options.get('alg')}"]
    if backend == "jwt-denylist":
        parts.append(f"denylist in {store_name(options.get('denylist_store'))}")
    parts.append("cookie" if options.get("transport") == "cookie" else "Bearer header")
    extra = options.get("extra_claims")
    if extra:
        parts.append(f"{extra} extra claims")
    refresh = options.get("refresh_store")
    parts.append(
        "refresh not tracked (stateless)"
        if refresh == "none"
        else f"refresh families in {store_name(refresh)}"
    )
    return ", ".join(parts)


def human_seconds(seconds: float | None) -> str:
    """Return "15 min", "7 d", "90 s" for a duration in seconds ("?" for None/NaN)."""
    if seconds is None or (isinstance(seconds, float) and math.isnan(seconds)):
        return "?"
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g} {unit}"
    return f"{seconds:g} s"
