"""What each mechanism keeps on the server, as small protocols; one module per store technology."""

from __future__ import annotations

import json
from dataclasses import dataclass
from types import TracebackType
from typing import Literal, Protocol

from servers.errors import StoreUnavailable


@dataclass(frozen=True, slots=True)
class SessionRecord:
    """The server side of one session: whose it is and when it ends (epoch seconds)."""

    user_id: int
    created: float
    """When the user logged in; the absolute timeout counts from here."""
    expires: float
    """When the session ends unless renewed (idle timeout, capped by the absolute one)."""

    def encode(self) -> bytes:
        """Return the compact JSON form stored by the key-value and file stores."""
        return b'{"u":%d,"c":%.3f,"e":%.3f}' % (self.user_id, self.created, self.expires)

    @classmethod
    def decode(cls, data: bytes) -> SessionRecord | None:
        """Return the record encoded in `data`, or None if it is not one (treated as absent)."""
        try:
            raw = json.loads(data)
            return cls(user_id=int(raw["u"]), created=float(raw["c"]), expires=float(raw["e"]))
        except (ValueError, TypeError, KeyError):
            return None


class SessionStore(Protocol):
    """Where session records live, keyed by an already-validated session id."""

    kind: str
    """Store technology, for /health."""

    async def put(self, sid: str, record: SessionRecord) -> None:
        """Create or overwrite the record; it must vanish by `record.expires`."""

    async def get(self, sid: str) -> SessionRecord | None:
        """Return the record, or None if absent or expired."""

    async def touch(self, sid: str, record: SessionRecord) -> None:
        """Overwrite the record only if it still exists (sliding expiry must not resurrect)."""

    async def take(self, sid: str) -> SessionRecord | None:
        """Remove and return the record; of concurrent callers at most one gets it."""

    async def ping(self) -> None:
        """Return if the store answers; raises StoreUnavailable otherwise."""


class DenyList(Protocol):
    """Revoked access-token ids, each kept until the token would have expired anyway."""

    kind: str

    async def add(self, jti: str, expires: float) -> None:
        """Deny `jti` until `expires` (epoch seconds)."""

    async def contains(self, jti: str) -> bool:
        """Return True if `jti` is denied."""

    async def ping(self) -> None:
        """Return if the store answers; raises StoreUnavailable otherwise."""


class RefreshFamilies(Protocol):
    """One record per login: the single refresh-token id of that family still allowed."""

    kind: str

    async def start(self, family: str, jti: str, expires: float) -> None:
        """Open a family whose current refresh token is `jti`."""

    async def rotate(self, family: str, old_jti: str, new_jti: str, expires: float) -> bool:
        """Swap `old_jti` for `new_jti` atomically and return True.

        Returns False when `old_jti` is not the current one (a replay or a lost race) or the
        family is gone; a replay of a known family revokes the whole family.
        """

    async def revoke(self, family: str) -> None:
        """End the family: none of its refresh tokens works again."""

    async def ping(self) -> None:
        """Return if the store answers; raises StoreUnavailable otherwise."""


def one_line(exc: BaseException) -> str:
    """Return the exception's message on one line, or its class name when it has none."""
    return " ".join(str(exc).split()) or type(exc).__name__


class StoreGuard:
    """`with guard:` turns a store library's connection errors into StoreUnavailable.

    A plain class rather than a generator context manager: it sits on the hot path.
    """

    __slots__ = ("_errors", "_what")

    def __init__(self, what: str, errors: tuple[type[BaseException], ...]) -> None:
        self._what = what
        self._errors = errors

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> Literal[False]:
        if exc_type is not None and issubclass(exc_type, self._errors):
            raise StoreUnavailable(f"{self._what} is unreachable ({exc_type.__name__})") from None
        return False
