"""The fixed user directory every backend shares, and the failed-login throttle."""

from __future__ import annotations

import functools
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import TypedDict

from argon2 import PasswordHasher
from argon2.exceptions import VerificationError

from servers.errors import InvalidCredentials, Throttled


class UserView(TypedDict):
    """The public shape of a user in every response body."""

    id: int
    username: str
    role: str


@dataclass(frozen=True, slots=True)
class User:
    """One account of the directory."""

    id: int
    username: str
    role: str
    password_hash: str

    def view(self) -> UserView:
        """Return the fields a client may see."""
        return {"id": self.id, "username": self.username, "role": self.role}


class UserDirectory:
    """`user0 … user{N-1}` with Argon2id hashes of `secret-{i}`; `user0` is the admin."""

    def __init__(self, count: int, *, time_cost: int, memory_kib: int) -> None:
        self._hasher = PasswordHasher(time_cost=time_cost, memory_cost=memory_kib, parallelism=1)
        self._by_id = _hashed_users(count, time_cost, memory_kib)
        self._by_name = {u.username: u for u in self._by_id}
        # Verified against when the username is unknown, so both failures cost the same.
        self._dummy_hash = self._by_id[0].password_hash

    def __len__(self) -> int:
        return len(self._by_id)

    def get(self, user_id: int) -> User | None:
        """Return the user with this id, or None."""
        if 0 <= user_id < len(self._by_id):
            return self._by_id[user_id]
        return None

    def verify(self, username: str, password: str) -> User:
        """Return the user whose password matches; raises InvalidCredentials otherwise.

        Runs a full hash verification even for unknown names, so timing does not tell
        which names exist. CPU-bound: call it from an executor.
        """
        user = self._by_name.get(username)
        try:
            self._hasher.verify(user.password_hash if user else self._dummy_hash, password)
        except VerificationError:
            raise InvalidCredentials() from None
        if user is None:
            raise InvalidCredentials()
        return user


@functools.cache
def _hashed_users(count: int, time_cost: int, memory_kib: int) -> tuple[User, ...]:
    # Cached per process: hashing is the slow part of start-up and tests build many apps.
    hasher = PasswordHasher(time_cost=time_cost, memory_cost=memory_kib, parallelism=1)
    return tuple(
        User(
            id=i,
            username=f"user{i}",
            role="admin" if i == 0 else "user",
            password_hash=hasher.hash(f"secret-{i}"),
        )
        for i in range(count)
    )


class LoginThrottle:
    """Counts failed logins per username in a fixed window; bounded in memory."""

    def __init__(self, *, max_failures: int, window: float, max_entries: int = 100_000) -> None:
        self._max = max_failures
        self._window = window
        self._max_entries = max_entries
        self._failures: OrderedDict[str, tuple[float, int]] = OrderedDict()

    def check(self, username: str) -> None:
        """Return if this name may try to log in; raises Throttled while it is locked out."""
        entry = self._failures.get(username)
        if entry is None:
            return
        started, count = entry
        remaining = started + self._window - time.monotonic()
        if remaining <= 0:
            del self._failures[username]
        elif count >= self._max:
            raise Throttled(retry_after=max(1, round(remaining)))

    def attempt(self, username: str) -> None:
        """Count one login attempt for this name; raises Throttled while it is locked out.

        The attempt counts as a failure until `succeeded` forgets it: checking now and counting
        only after the (slow, off-loop) hash would let a burst of concurrent guesses all pass.
        """
        self.check(username)
        self.failed(username)

    def failed(self, username: str) -> None:
        """Record one failed attempt for this name."""
        now = time.monotonic()
        started, count = self._failures.pop(username, (now, 0))
        self._failures[username] = (started, count + 1)
        if len(self._failures) > self._max_entries:
            # Unknown names count too, so an attacker spraying names cannot grow this forever.
            self._failures.popitem(last=False)

    def succeeded(self, username: str) -> None:
        """Forget the failures of a name that just logged in."""
        self._failures.pop(username, None)
