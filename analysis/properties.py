"""The security and operational properties each configuration trades its numbers against.

Derived from what a configuration is (backend and server options, defaults filled in by
`analysis.options`), never from its name, so a new configuration is described correctly
without touching this module.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from analysis.options import human_seconds, store_name


class Verdict(enum.Enum):
    """How a property reads for someone who wants the safer, simpler option (the report's
    cell colour): good, partial, bad, or neutral where it is a fact rather than a merit."""

    GOOD = "good"
    PARTIAL = "partial"
    BAD = "bad"
    NEUTRAL = "neutral"


@dataclass(frozen=True, slots=True)
class Property:
    """One cell of the properties table: a verdict and the sentence that explains it."""

    verdict: Verdict
    text: str


COLUMNS = (
    ("revocation", "Immediate revocation"),
    ("reuse", "Refresh-token reuse detection"),
    ("state", "State on the server"),
    ("scale_out", "Several instances without a shared store"),
    ("credential", "Credential on the wire"),
)


def _revocation(o: Mapping[str, Any]) -> Property:
    if o["family"] == "session":
        return Property(Verdict.GOOD, "yes — logout deletes the session; the next request fails")
    refresh_ttl = human_seconds(o.get("refresh_ttl_s"))
    stateless_refresh = o.get("refresh_store") in (None, "none")
    if o["backend"] == "jwt-denylist":
        text = (
            f"yes — revoked token ids are kept in {store_name(o['denylist_store'])} and "
            "checked on every request"
        )
        if stateless_refresh:
            return Property(
                Verdict.PARTIAL,
                f"access tokens yes (denylist in {store_name(o['denylist_store'])}); "
                f"refresh tokens cannot be revoked (valid up to {refresh_ttl})",
            )
        return Property(Verdict.GOOD, text + "; logout also ends the refresh family")
    window = human_seconds(o.get("access_ttl_s"))
    text = f"no — a stolen access token stays valid until it expires (up to {window})"
    if stateless_refresh:
        text += f"; refresh tokens cannot be revoked either (valid up to {refresh_ttl})"
    else:
        text += "; logout does end the refresh family"
    return Property(Verdict.BAD, text)


def _reuse(o: Mapping[str, Any]) -> Property:
    if o["family"] == "session":
        return Property(Verdict.NEUTRAL, "n/a — the session id is rotated on login and refresh")
    store = o.get("refresh_store")
    if store in (None, "none"):
        return Property(Verdict.BAD, "no — a replayed refresh token is accepted until it expires")
    return Property(
        Verdict.GOOD,
        f"yes — refresh families in {store_name(store)}; a reused token revokes the family",
    )


def _state(o: Mapping[str, Any]) -> Property:
    if o["family"] == "session":
        text = f"one session record per login in {store_name(o['store'])}"
        if o.get("sliding"):
            text += ", rewritten on every request (sliding expiry)"
        return Property(Verdict.NEUTRAL, text)
    parts = []
    if o["backend"] == "jwt-denylist":
        parts.append(f"revoked token ids in {store_name(o['denylist_store'])}")
    if o.get("refresh_store") not in (None, "none"):
        parts.append(f"refresh-token families in {store_name(o['refresh_store'])}")
    if not parts:
        return Property(Verdict.NEUTRAL, "none — only the signing key")
    return Property(
        Verdict.NEUTRAL,
        "; ".join(parts) + " (reads need no lookup)" if o["backend"] == "jwt" else "; ".join(parts),
    )


def _scale_out(o: Mapping[str, Any]) -> Property:
    if o["family"] == "session":
        if o["store"] == "file":
            return Property(
                Verdict.BAD,
                "no — sessions live on one host's disk (sticky routing "
                "or a shared filesystem needed)",
            )
        return Property(
            Verdict.BAD, f"no — every instance needs the shared {store_name(o['store'])}"
        )
    needs = []
    if o["backend"] == "jwt-denylist":
        needs.append(store_name(o["denylist_store"]))
    if o.get("refresh_store") not in (None, "none"):
        needs.append(store_name(o["refresh_store"]))
    key = "the shared secret" if str(o.get("alg", "")).startswith("HS") else "the public key"
    if not needs:
        return Property(Verdict.GOOD, f"yes — any instance holding {key} verifies tokens")
    shared = " and ".join(dict.fromkeys(needs))
    if o["backend"] == "jwt":
        return Property(
            Verdict.PARTIAL, f"reads yes (with {key}); refresh needs the shared {shared}"
        )
    return Property(Verdict.BAD, f"no — every instance needs the shared {shared}")


def _credential(o: Mapping[str, Any]) -> Property:
    if o["family"] == "session":
        return Property(
            Verdict.NEUTRAL, "opaque session id in an HttpOnly cookie; CSRF token on POST"
        )
    extra = f", {o['extra_claims']} extra claims" if o.get("extra_claims") else ""
    if o.get("transport") == "cookie":
        return Property(
            Verdict.NEUTRAL,
            f"signed {o['alg']} JWT in an HttpOnly cookie{extra}; CSRF token on POST",
        )
    return Property(
        Verdict.NEUTRAL,
        f"signed {o['alg']} JWT in the Authorization header{extra} (readable by page scripts)",
    )


def properties(options: Mapping[str, Any]) -> dict[str, Property]:
    """Return the properties of one configuration keyed as in `COLUMNS`.

    `options` is one row of `analysis.options.config_options` (or a summary row holding
    those columns).
    """
    return {
        "revocation": _revocation(options),
        "reuse": _reuse(options),
        "state": _state(options),
        "scale_out": _scale_out(options),
        "credential": _credential(options),
    }
